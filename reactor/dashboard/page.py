"""The dashboard's page: one self-contained HTML document, built once.

``render_page()`` returns the whole page as bytes: page.html (beside this
module: the markup) with page.css and page.js put inline, and the
interactive state diagram of every record kind put in, as ``<template
id="diagram-KIND">`` elements that the script copies once per server.  The
page fetches nothing but the dashboard's own ``events`` and ``table.json``
(relative addresses): no CDN, no web font, no external URL of any kind, so
it works offline and shows the same thing everywhere.  The dashboard's
HTTP server (``reactor.dashboard.http``) serves it as ``GET /``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources

from ..errors import UsageError
from ..states import Kind
from .diagrams import render

__all__ = ["render_page", "diagram_svg", "page_digest"]

#: Where page.html wants the diagrams.
PLACEHOLDER = "<!-- diagrams: filled in by reactor.dashboard.page -->"


def diagram_svg(kind: Kind | str) -> str:
    """The interactive state diagram of ``kind`` (a ``Kind`` or its value, such as "connection"), as SVG text.

    It is the picture in docs/images/states-KIND.svg plus the hooks the
    page's script uses (``data-state``, ``data-count``, ``data-from``/``data-to``;
    see ``reactor.dashboard.diagrams``).  Raises UsageError for an unknown kind.
    """
    if not isinstance(kind, Kind):
        try:
            kind = Kind(str(kind).lower())
        except ValueError:
            known = ", ".join(k.value for k in Kind)
            raise UsageError(f"no state diagram for record kind {kind!r} (known: {known})") from None
    return render(kind, interactive=True)


@functools.lru_cache(maxsize=1)
def render_page() -> bytes:
    """The whole page as UTF-8 bytes: HTML with its CSS, script and diagrams inline (computed once)."""
    files = importlib.resources.files(__package__)
    template = files.joinpath("page.html").read_text(encoding="utf-8")
    for part in ("page.css", "page.js"):  # the style sheet and the script, kept in files of their own
        template = template.replace(f"<!-- {part} -->\n", files.joinpath(part).read_text(encoding="utf-8"))
    if template.count(PLACEHOLDER) != 1:
        raise RuntimeError("page.html must hold the diagrams' placeholder exactly once")
    diagrams = "\n".join(f'<template id="diagram-{kind.value}">\n{diagram_svg(kind)}</template>' for kind in Kind)
    return template.replace(PLACEHOLDER, diagrams).encode("utf-8")


def page_digest() -> str:
    """The SHA-256 of ``render_page()`` in hex: what docs/images/dashboard.png.txt records.

    A screenshot cannot be compared byte for byte (fonts, timing and the
    load differ from one run to the next), so scripts/dashboard_screenshot.py
    records the digest of the page it photographed, and its ``--check``
    calls the picture stale when the page has changed since.
    """
    return hashlib.sha256(render_page()).hexdigest()
