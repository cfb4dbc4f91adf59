"""The docs' transition tables say exactly what reactor.table.TRANSITIONS does."""

from __future__ import annotations

import pathlib
import re

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
