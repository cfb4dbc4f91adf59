"""The dashboard's page, without a browser: self-contained, with every diagram and its hooks.

The page must fetch nothing from anywhere but the dashboard itself; its
diagrams are the docs' diagrams plus hooks for the script (and the docs'
files do not change); the package ships page.html; the screenshot in
docs/images follows the page (tests/test_dashboard_browser.py runs the
page in a real browser).
"""

from __future__ import annotations

import pathlib
import re
import tomllib
import xml.etree.ElementTree as ET

import pytest
from dashboard_support import load_script

from reactor.dashboard import diagrams
from reactor.dashboard.page import diagram_svg, page_digest, render_page
from reactor.errors import UsageError
from reactor.states import FINAL_STATES, INITIAL_STATE, TRANSITIONS, Kind

ROOT = pathlib.Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"
KINDS = [pytest.param(kind, id=kind.value) for kind in Kind]



def states_of(kind: Kind) -> set[str]:
    moves = TRANSITIONS[kind]
    return {s.name for s, _ in moves} | {s.name for s in moves.values()} | {INITIAL_STATE[kind].name}


@pytest.mark.timeout(30)
def test_the_page_fetches_nothing_from_elsewhere() -> None:
    page = render_page().decode("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # The only absolute URL is the SVG namespace, which is a name, not a fetch.
    urls = set(re.findall(r"[a-z]+://[^\s\"'<>)]+", page))
    assert urls == {"http://www.w3.org/2000/svg"}, urls
    assert not re.search(r"<(link|img|iframe|object|embed)\b|\bsrc=|@import|@font-face", page)
    # url(...) only for the diagrams' own arrow heads, in the page.
    assert set(re.findall(r"url\(([^)]*)\)", page)) == {f"#arrow-{kind.value}" for kind in Kind}
    # What the script does fetch: the dashboard's own routes, by relative address.
    fetched = set(re.findall(r"(?:EventSource|fetch)\(\"([^\"]+)\"", page))
    assert fetched == {"events", "table.json"}


@pytest.mark.timeout(30)
def test_the_page_holds_an_interactive_diagram_per_kind() -> None:
    page = render_page().decode("utf-8")
    for kind in Kind:
        assert f'<template id="diagram-{kind.value}">\n{diagram_svg(kind)}</template>' in page
    assert render_page() is render_page()  # built once
    assert len(page_digest()) == 64


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_an_interactive_diagram_has_a_box_and_a_count_per_state(kind: Kind) -> None:
    root = ET.fromstring(diagram_svg(kind))
    boxes = {g.get("data-state"): g for g in root.iter(f"{SVG}g") if g.get("data-state")}
    assert set(boxes) == states_of(kind)
    for name, box in boxes.items():
        counts = [t for t in box.iter(f"{SVG}text") if t.get("data-count") == name]
        assert len(counts) == 1 and counts[0].text == "0"
        assert [g for g in box.iter(f"{SVG}g") if g.get("data-dots") == name]
        assert ("final" in box.get("class", "").split()) == (name in {s.name for s in FINAL_STATES})
        float(box.get("data-x", "")), float(box.get("data-y", ""))  # where a record's dot goes
    edges = {(p.get("data-from"), p.get("data-to")) for p in root.iter(f"{SVG}path") if p.get("class") == "edge"}
    assert ("NEW", INITIAL_STATE[kind].name) in edges
    # Every move of the table has its arrow: from its state, or from "any live state".
    for (state, _), new in TRANSITIONS[kind].items():
        assert (state.name, new.name) in edges or ("ANY", new.name) in edges, (state, new)
    assert [g for g in root.iter(f"{SVG}g") if g.get("class") == "movers"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_the_docs_diagram_has_no_hooks(kind: Kind) -> None:
    plain = diagrams.render(kind)
    assert plain.encode() == (ROOT / "docs" / "images" / f"states-{kind.value}.svg").read_bytes()
    assert "data-" not in plain and 'class="' not in plain
    assert diagram_svg(kind.value) == diagram_svg(kind) != plain


@pytest.mark.timeout(30)
def test_an_unknown_kind_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no state diagram for record kind 'nope'"):
        diagram_svg("nope")


@pytest.mark.timeout(30)
def test_the_package_ships_the_page() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "reactor.dashboard" in config["packages"]
    shipped = config["package-data"]["reactor.dashboard"]
    for part in ("page.html", "page.css", "page.js"):
        assert any(pathlib.PurePath(part).match(pattern) for pattern in shipped), part


@pytest.mark.timeout(30)
def test_the_screenshot_follows_the_page() -> None:
    problems = load_script().stale()
    assert not problems, f"{'; '.join(problems)}: run `python scripts/dashboard_screenshot.py`"


@pytest.mark.timeout(30)
def test_the_screenshot_check_sees_a_changed_page(tmp_path: pathlib.Path) -> None:
    script = load_script()
    png = tmp_path / "dashboard.png"
    assert script.stale(png) == [f"missing: {png}"]
    png.write_bytes((ROOT / "docs" / "images" / "dashboard.png").read_bytes())
    script.record_of(png).write_text(script.describe("reactor.add_dashboard"))
    assert script.stale(png) == []
    script.record_of(png).write_text(script.describe("reactor.add_dashboard").replace(page_digest(), "0" * 64))
    assert script.stale(png) == [f"stale: {png} shows another version of the page (its digest differs)"]
    png.write_bytes(b"not a picture")
    script.record_of(png).write_text(script.describe("reactor.add_dashboard"))
    assert script.stale(png) == [f"{png} is not a 1280x900 PNG"]


@pytest.mark.timeout(30)
def test_the_docs_show_the_screenshot() -> None:
    for doc, path in [("docs/dashboard.md", "images/dashboard.png"), ("README.md", "docs/images/dashboard.png")]:
        assert f"]({path})" in (ROOT / doc).read_text(), f"{doc} does not show {path}"
    assert "](dashboard.md)" in (ROOT / "docs" / "README.md").read_text()
