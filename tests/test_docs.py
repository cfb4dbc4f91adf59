"""The docs say what the code does: the transition tables match reactor.table.TRANSITIONS,
and the API reference names every public name."""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

from reactor.table import TRANSITIONS, Event, Kind, State

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
DOC = DOCS / "request-table.md"
HANDLERS_DOC = DOCS / "handlers.md"


def documented_matrices(path: pathlib.Path = DOC) -> list[dict[tuple[State, Event], State]]:
    """Each "state \\ event" table of the page, in page order, as a transition dict."""
    matrices = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("| state \\ event |"):
            continue
        events = [Event[name] for name in re.findall(r"`(\w+)`", line)]
        matrix = {}
        for row in lines[i + 2 :]:
            if not row.startswith("|"):
                break
            cells = [c.strip().strip("`") for c in row.strip("|").split("|")]
            state = State[cells[0]]
            for event, cell in zip(events, cells[1:]):
                if cell:
                    matrix[(state, event)] = State[cell]
        matrices.append(matrix)
    return matrices


def test_transition_tables_in_the_docs_match_the_code():
    assert documented_matrices() == [
        TRANSITIONS[Kind.STREAM],
        TRANSITIONS[Kind.CONNECTION],
        TRANSITIONS[Kind.DATAGRAM],
        TRANSITIONS[Kind.CHILD],
    ]


def test_the_framed_connection_table_in_the_handlers_page_matches_the_code():
    assert documented_matrices(HANDLERS_DOC) == [TRANSITIONS[Kind.CONNECTION]]


def test_the_listing_in_the_docs_matches_the_code():
    text = DOC.read_text()
    for kind, table in TRANSITIONS.items():
        for (state, event), new in table.items():
            assert re.search(rf"{state.name}\s+--{event.name.lower()}--> {new.name}", text), (kind, state, event)


API_DOC = DOCS / "api.md"


def api_reference_names(path: pathlib.Path = API_DOC) -> set[str]:
    """The names an API page documents: in a heading, or alone in a code span.

    A code span counts when it is the name itself, optionally qualified and
    optionally called: `Line`, `handlers.MessageRequest`, `Fork(max_children=40)`.
    A name inside a longer span (`server.dispatch = Fork()`) does not.
    """
    text = path.read_text()
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("#"):
            names.update(re.findall(r"\w+", line))
    for span in re.findall(r"`([^`\n]+)`", text):
        match = re.fullmatch(r"(?:[\w.]+\.)?(\w+)(?:\(.*\))?(?: -> .*)?", span.strip())
        if match:
            names.add(match.group(1))
    return names


def test_api_reference_name_finder_is_strict() -> None:
    found = api_reference_names()
    assert {"Line", "MessageRequest", "Fork"} <= found
    assert "NoSuchName" not in found and "TRANSITIONS_OF_NOTHING" not in found


@pytest.mark.parametrize(
    "module",
    ["reactor", "handlers", "reactor.errors", "handlers.framing", "handlers.echo", "reactor.datagram"],
)
def test_every_public_name_is_in_the_api_reference(module: str) -> None:
    names = importlib.import_module(module).__all__
    missing = sorted(set(names) - api_reference_names())
    assert missing == [], f"docs/api.md has no heading or code span for {module}: {missing}"
