"""The state diagrams in docs/images are what scripts/make_diagrams.py draws from the table.

The images are generated from ``reactor.states.TRANSITIONS`` and checked in,
so that GitHub shows them.  These tests fail when a checked-in image is
stale (the table changed, or the script did, and nobody re-ran it), and
check that each image is well-formed SVG naming every state and event of
its kind.
"""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from types import ModuleType

import pytest

from reactor.table import INITIAL_STATE, TRANSITIONS, Event, Kind, State

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "make_diagrams.py"
IMAGES = ROOT / "docs" / "images"
FIX = "python scripts/make_diagrams.py"
SVG_TEXT = "{http://www.w3.org/2000/svg}text"
KINDS = [pytest.param(kind, id=kind.value) for kind in Kind]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_diagrams", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script()


def image_name(kind: Kind) -> str:
    return f"states-{kind.value}.svg"


def states_of(kind: Kind) -> set[State]:
    moves = TRANSITIONS[kind]
    return {state for state, _ in moves} | set(moves.values()) | {INITIAL_STATE[kind]}


def events_of(kind: Kind) -> set[Event]:
    return {event for _, event in TRANSITIONS[kind]}


def texts(svg: bytes) -> list[str]:
    """The content of every <text> element of an SVG document (raises if it is not XML)."""
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return [(element.text or "").strip() for element in root.iter(SVG_TEXT)]


def test_the_script_draws_one_image_per_kind(script: ModuleType) -> None:
    assert sorted(script.images()) == sorted(image_name(kind) for kind in Kind)


@pytest.mark.parametrize("kind", KINDS)
def test_the_checked_in_image_is_up_to_date(script: ModuleType, kind: Kind) -> None:
    path = IMAGES / image_name(kind)
    if not path.exists():
        pytest.fail(f"docs/images/{path.name} is missing: run `{FIX}`")
    if path.read_bytes() != script.images()[path.name]:
        pytest.fail(f"docs/images/{path.name} is stale (it is not what the table draws now): run `{FIX}`")


@pytest.mark.parametrize("kind", KINDS)
def test_the_image_is_svg_and_names_every_state_and_event(kind: Kind) -> None:
    found = texts((IMAGES / image_name(kind)).read_bytes())
    # A state's box holds its name alone; an edge's label holds its events,
    # one per line (a <text> each) or joined with ", ".
    labels = {word for text in found for word in text.split(", ")}
    assert {state.name for state in states_of(kind)} <= set(found)
    assert {event.name.lower() for event in events_of(kind)} <= labels
    assert f"Kind.{kind.name}" in found  # the title


def test_the_drawing_follows_the_table(script: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    # Were the script to draw from anything but TRANSITIONS, a new move
    # would not show; and the output must not vary from one run to the next.
    before = script.render(Kind.CHILD)
    assert script.render(Kind.CHILD) == before
    monkeypatch.setitem(TRANSITIONS[Kind.CHILD], (State.PROCESSING, Event.QUEUE), State.SENDING)
    after = script.render(Kind.CHILD)
    assert after != before
    assert {"SENDING", "queue"} <= set(texts(after.encode()))


def test_check_mode_names_stale_and_missing_files(tmp_path: pathlib.Path) -> None:
    for kind in Kind:
        shutil.copy(IMAGES / image_name(kind), tmp_path)
    command = [sys.executable, str(SCRIPT), "--check", "--out", str(tmp_path)]
    fresh = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert (fresh.returncode, fresh.stderr) == (0, ""), fresh.stderr

    (tmp_path / image_name(Kind.DATAGRAM)).write_bytes(b"<svg/>")
    (tmp_path / image_name(Kind.CHILD)).unlink()
    stale = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1
    assert f"stale: {tmp_path / image_name(Kind.DATAGRAM)}" in stale.stderr
    assert f"missing: {tmp_path / image_name(Kind.CHILD)}" in stale.stderr
    assert image_name(Kind.STREAM) not in stale.stderr
    assert FIX in stale.stderr
    assert not (tmp_path / image_name(Kind.CHILD)).exists()  # --check writes nothing


@pytest.mark.parametrize(
    "doc, kinds",
    [("request-table.md", list(Kind)), ("handlers.md", [Kind.CONNECTION])],
)
def test_the_docs_show_the_images(doc: str, kinds: list[Kind]) -> None:
    text = (ROOT / "docs" / doc).read_text()
    for kind in kinds:
        assert f"](images/{image_name(kind)})" in text, f"docs/{doc} does not show {image_name(kind)}"
