"""The request table's state machines drawn as SVG, one diagram per record kind.

``render(kind)`` is the picture in docs/images/states-<kind>.svg (written by
scripts/make_diagrams.py, checked by tests/test_diagrams.py);
``render(kind, interactive=True)`` is the same drawing with hooks for the
dashboard's script: each state's box is a ``<g class="state"
data-state="READING">`` holding a count badge (``data-count``) and a group
for dots (``data-dots``), each arrow is tagged with ``data-from`` and
``data-to``, and a last group (``class="movers"``) is there for records
moving between boxes.  Computed from ``reactor.states.TRANSITIONS``, so it
cannot drift from the code.  Standard library only; the output is the same,
byte for byte, on every run (enum order everywhere, every number rounded).

The layout, step by step:

1. An event that leads from every live state (three or more) to the same
   state, such as ``error``, is one arrow from a dashed "any live state" box.
2. Rows: a depth-first walk from the initial state, in enum order, marks the
   edges back to a state on the current path.  Without them the graph has no
   cycles, and each live state goes in the row of its longest path from the
   initial state; final states share the last row.  A row is centred.
3. Edges between neighbouring rows are straight.  The others run in vertical
   lanes outside the boxes (forward edges on the left, back edges on the
   right, shorter edges inside), and edges meeting one side of a box are
   spread along it in the order that keeps them from crossing.  A box with
   neighbours on both sides (a row of three) meets its lane edges on its
   top or bottom instead, so that no edge runs behind another box.  A self-loop
   is a curl on a free side; parallel edges are one arrow naming each event.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from ..states import FINAL_STATES, INITIAL_STATE, TRANSITIONS, Event, Kind, State

__all__ = ["render", "ANY"]

ANY = "any live state"
BOX_W, BOX_H, COL, ROW = 128, 36, 250, 104  # box size; centre-to-centre spacing
LABEL = 12  # font size of event labels (monospace: a character is ~0.6 em wide)
INK, EDGE, MUTED = "#1f2328", "#424a53", "#59636e"
MONO = "ui-monospace, SFMono-Regular, Menlo, Consolas, DejaVu Sans Mono, monospace"
SANS = "-apple-system, Segoe UI, Helvetica, Arial, DejaVu Sans, sans-serif"
SUBTITLES = {
    Kind.STREAM: "a connection whose socket a classic handler owns",
    Kind.CONNECTION: "a framed connection: the reactor owns the socket (MessageHandler)",
    Kind.DATAGRAM: "one received datagram",
    Kind.CHILD: "a child process forked to run one request (Fork)",
}


def rank(node) -> int:
    return len(State) if node == ANY else list(State).index(node)


def num(value: float) -> str:
    return f"{round(value, 1):g}"


def text_width(text: str, size: float = LABEL) -> float:  # an estimate: there are no font metrics here
    return len(text) * size * 0.62


def graph(kind: Kind):
    """The kind's states (enum order) and its edges: {(source, target): [events]}."""
    moves = TRANSITIONS[kind]
    states = sorted({s for s, _ in moves} | set(moves.values()) | {INITIAL_STATE[kind]}, key=rank)
    live = {s for s in states if s not in FINAL_STATES}
    sources: dict[tuple[Event, State], set] = {}
    for (state, event), new in moves.items():
        sources.setdefault((event, new), set()).add(state)
    edges: dict[tuple, set[Event]] = {}
    for (state, event), new in moves.items():
        anywhere = len(live) >= 3 and sources[(event, new)] == live
        edges.setdefault((ANY if anywhere else state, new), set()).add(event)
    ordered = sorted(edges, key=lambda st: (rank(st[0]), rank(st[1])))
    return states, {key: sorted(edges[key], key=list(Event).index) for key in ordered}


def rows_of(kind: Kind, states: list, edges: dict) -> list[list]:
    """Step 2: the rows, top to bottom, each a list of nodes in enum order."""
    live = [s for s in states if s not in FINAL_STATES]
    succ = {s: sorted({t for (u, t) in edges if u == s and t in live and t != s}, key=rank) for s in live}
    back, mark, finished = set(), {}, []

    def visit(u) -> None:
        mark[u] = "open"
        for v in succ[u]:
            if mark.get(v) == "open":
                back.add((u, v))
            elif v not in mark:
                visit(v)
        mark[u] = "done"
        finished.append(u)

    for start in [INITIAL_STATE[kind], *live]:
        if start not in mark:
            visit(start)
    row: dict = {}
    for v in reversed(finished):  # a topological order once back edges are ignored
        preds = [row[u] + 1 for u in live if v in succ[u] and (u, v) not in back and u in row]
        row[v] = max(preds, default=0)
    rows = [[s for s in live if row[s] == r] for r in range(max(row.values()) + 1)]
    if any(u == ANY for u, _ in edges):
        rows[-1].append(ANY)
    return rows + [[s for s in states if s in FINAL_STATES]]


def layout(kind: Kind):
    """Place the boxes and route the edges; returns everything `render` draws."""
    states, edges = graph(kind)
    rows = rows_of(kind, states, edges)
    pos, row_of = {}, {}
    for r, nodes in enumerate(rows):
        for i, node in enumerate(nodes):
            pos[node] = ((i - (len(nodes) - 1) / 2) * COL, r * ROW)
            row_of[node] = r
    left = min(x for x, _ in pos.values()) - BOX_W / 2
    right = max(x for x, _ in pos.values()) + BOX_W / 2

    def outermost(node, side) -> bool:
        xs = [pos[n][0] for n in rows[row_of[node]]]
        return pos[node][0] == (min(xs) if side == "left" else max(xs))

    # Step 3: classify edges; give each lane edge a side and a lane.
    straight, loops, laned = [], [], {"left": [], "right": []}
    for (u, v), events in edges.items():
        if u == v:
            loops.append((u, events))
        elif row_of[v] == row_of[u] + 1:
            straight.append((u, v, events))
        else:
            side = "right" if row_of[v] < row_of[u] else "left"
            if not (outermost(u, side) and outermost(v, side)):
                side = "left" if side == "right" else "right"  # a box is in the way: try the other side
            laned[side].append((u, v, events))
    lane_of, lane_x = {}, {}
    for side, group in laned.items():
        taken: list[list[tuple[int, int]]] = []
        for u, v, _ in sorted(group, key=lambda e: (abs(row_of[e[1]] - row_of[e[0]]), rank(e[0]), rank(e[1]))):
            span = sorted((row_of[u], row_of[v]))
            free = (k for k, used in enumerate(taken) if all(span[1] < a or span[0] > b for a, b in used))
            k = next(free, len(taken))  # the innermost lane whose edges span other rows
            if k == len(taken):
                taken.append([])
            taken[k].append(tuple(span))
            lane_of[(u, v)] = k
        widest = max((text_width(e.name.lower()) for _, _, es in group for e in es), default=0) + 18
        for u, v, _ in group:
            step = widest / 2 + 14 + lane_of[(u, v)] * (widest + 10)
            lane_x[(u, v)] = left - step if side == "left" else right + step

    # A lane edge leaves (or reaches) a box by its side when no box of its row is in the
    # way; a box between two others (a row of three) uses its bottom or top instead, and
    # the edge runs to its lane just outside the row, never behind a neighbour.
    exits: dict[tuple, str] = {}
    for side, group in laned.items():
        for u, v, _ in group:
            for node, other in ((u, v), (v, u)):
                below = row_of[other] > row_of[node]
                exits[(node, (u, v))] = side if outermost(node, side) else "bottom" if below else "top"

    # Ports: where edges meet each side of a box, spread so that they do not cross.
    ports: dict[tuple, list] = {}
    for u, v, _ in straight:
        ports.setdefault((u, "bottom"), []).append(((pos[v][0], rank(v)), (u, v)))
        ports.setdefault((v, "top"), []).append(((pos[u][0], rank(u)), (u, v)))
    ports.setdefault((INITIAL_STATE[kind], "top"), []).append(((pos[INITIAL_STATE[kind]][0], -1), "start"))
    for side, group in laned.items():
        for u, v, _ in group:
            k = lane_of[(u, v)]
            for node, other in ((u, v), (v, u)):
                if exits[(node, (u, v))] != side:  # by the top or bottom: ordered by where its lane is
                    ports.setdefault((node, exits[(node, (u, v))]), []).append(((lane_x[(u, v)], -1), (u, v)))
                    continue
                # Top to bottom: edges whose lane runs up from here, outer lanes lower; then
                # those whose lane runs down, outer lanes higher.  No stub crosses a lane.
                key = (0, k) if row_of[other] < row_of[node] else (1, -k)
                ports.setdefault((node, side), []).append((key, (u, v)))
    at: dict[tuple, tuple[float, float]] = {}
    for (node, side), items in ports.items():
        x, y = pos[node]
        items.sort(key=lambda item: item[0])
        for i, (_, edge) in enumerate(items):
            f = (i + 1) / (len(items) + 1)
            if side in ("top", "bottom"):
                point = (x - BOX_W / 2 + BOX_W * f, y + (BOX_H / 2 if side == "bottom" else -BOX_H / 2))
            else:
                point = (x + (BOX_W / 2 if side == "right" else -BOX_W / 2), y - BOX_H / 2 + BOX_H * f)
            at[(node, edge)] = point
    loop_side = {u: "left" if (u, "right") in ports and (u, "left") not in ports else "right" for u, _ in loops}
    return rows, pos, straight, loops, laned, lane_x, at, loop_side, exits


def hooks(node: State, x: float, y: float) -> list[str]:
    """What an interactive box holds besides its name: a count badge, a row for dots, and its end."""
    bx, by = x + BOX_W / 2 - 2, y - BOX_H / 2 + 1  # the badge sits on the box's top right corner
    return [
        f'<rect class="badge" x="{num(bx - 15)}" y="{num(by - 9)}" width="30" height="16" rx="8"/>',
        f'<text class="count" data-count="{node.name}" x="{num(bx)}" y="{num(by + 3)}" text-anchor="middle" '
        'font-size="11" font-weight="bold">0</text>',
        f'<g class="dots" data-dots="{node.name}" transform="translate({num(x)},{num(y + 11)})"></g>',
        "</g>",
    ]


def render(kind: Kind, *, interactive: bool = False) -> str:
    """The SVG document for one kind, as text.

    ``interactive=True`` adds the hooks the dashboard's script uses (see the
    module docstring); without it the document is exactly what docs/images holds.
    """
    rows, pos, straight, loops, laned, lane_x, at, loop_side, exits = layout(kind)
    body: list[str] = []
    marker = f"arrow-{kind.value}" if interactive else "arrow"  # one page holds several diagrams

    def tag(source, target) -> str:
        """An arrow's hooks: where it comes from and goes to (nothing unless interactive)."""
        if not interactive:
            return ""
        name = "ANY" if source == ANY else source.name if source is not None else "NEW"
        return f' class="edge" data-from="{name}" data-to="{target.name}"'

    xs: list[float] = [x + d for x, _ in pos.values() for d in (-BOX_W / 2, BOX_W / 2)]

    def label(x: float, y: float, lines: list[str]) -> None:
        w = max(text_width(line) for line in lines) + 8
        h = len(lines) * (LABEL + 2) + 4
        xs.extend((x - w / 2, x + w / 2))
        body.append(f'<rect x="{num(x - w / 2)}" y="{num(y - h / 2)}" width="{num(w)}" height="{num(h)}" '
                    'fill="#ffffff"/>')  # fmt: skip
        for i, line in enumerate(lines):
            ty = y - h / 2 + 2 + (i + 1) * (LABEL + 2) - 3
            body.append(f'<text x="{num(x)}" y="{num(ty)}" text-anchor="middle">{escape(line)}</text>')

    arrow = f'fill="none" stroke="{EDGE}" stroke-width="1.4" marker-end="url(#{marker})"'
    x0, y0 = at[(INITIAL_STATE[kind], "start")]
    body.append(f'<circle cx="{num(x0)}" cy="{num(y0 - 26)}" r="6" fill="{INK}"/>')
    body.append(f'<path{tag(None, INITIAL_STATE[kind])} d="M{num(x0)},{num(y0 - 20)} V{num(y0)}" {arrow}/>')
    for u, v, events in straight:
        (x1, y1), (x2, y2) = at[(u, (u, v))], at[(v, (u, v))]
        body.append(f'<path{tag(u, v)} d="M{num(x1)},{num(y1)} L{num(x2)},{num(y2)}" {arrow}/>')
        label((x1 + x2) / 2, (y1 + y2) / 2, [", ".join(e.name.lower() for e in events)])
    for side, group in laned.items():
        for u, v, events in group:
            (x1, y1), (x2, y2), lx = at[(u, (u, v))], at[(v, (u, v))], lane_x[(u, v)]
            if exits[(u, (u, v))] != side or exits[(v, (u, v))] != side:  # by a top or bottom: square corners
                stub = {"bottom": 12, "top": -12}  # out of the row, to run to the lane
                way_u, way_v = exits[(u, (u, v))], exits[(v, (u, v))]
                out = [(x1, y1)] if way_u == side else [(x1, y1), (x1, y1 + stub[way_u])]
                into = [(x2, y2)] if way_v == side else [(x2, y2 + stub[way_v]), (x2, y2)]
                points = [*out, (lx, out[-1][1]), (lx, into[0][1]), *into]
                body.append(f'<path{tag(u, v)} d="M{" L".join(f"{num(x)},{num(y)}" for x, y in points)}" {arrow}/>')
                label(lx, (out[-1][1] + into[0][1]) / 2, [e.name.lower() for e in events])
                continue
            r = 8 if lx < x1 else -8  # rounded corners, turned the right way
            dy = 8 if y2 > y1 else -8
            body.append(
                f'<path{tag(u, v)} d="M{num(x1)},{num(y1)} H{num(lx + r)} Q{num(lx)},{num(y1)} {num(lx)},{num(y1 + dy)} '
                f'V{num(y2 - dy)} Q{num(lx)},{num(y2)} {num(lx + r)},{num(y2)} H{num(x2)}" {arrow}/>'
            )
            label(lx, (y1 + y2) / 2, [e.name.lower() for e in events])
    for u, events in loops:
        x, y = pos[u]
        s = 1 if loop_side[u] == "right" else -1
        edge = x + s * BOX_W / 2
        body.append(
            f'<path{tag(u, u)} d="M{num(edge)},{num(y - 10)} C{num(edge + s * 46)},{num(y - 30)} '
            f'{num(edge + s * 46)},{num(y + 30)} {num(edge)},{num(y + 10)}" {arrow}/>'
        )
        text = ", ".join(e.name.lower() for e in events)
        label(edge + s * (40 + text_width(text) / 2 + 6), y, [text])
    for node, (x, y) in pos.items():
        box = f'x="{num(x - BOX_W / 2)}" y="{num(y - BOX_H / 2)}" width="{BOX_W}" height="{BOX_H}" rx="9"'
        if node == ANY:
            if interactive:
                body.append('<g class="any">')
            body.append(f'<rect {box} fill="#ffffff" stroke="{MUTED}" stroke-width="1.4" stroke-dasharray="5 3"/>')
            body.append(f'<text x="{num(x)}" y="{num(y + 4.5)}" text-anchor="middle" font-family="{SANS}" '
                        f'font-style="italic" fill="{MUTED}">{ANY}</text>')  # fmt: skip
            if interactive:
                body.append("</g>")
            continue
        final = node in FINAL_STATES
        if interactive:
            kind_of = "final" if final else "live"
            body.append(f'<g class="state {kind_of}" data-state="{node.name}" data-x="{num(x)}" data-y="{num(y)}">')
        fill = "#ffebe9" if node is State.FAILED else "#f6f8fa" if final else "#ffffff"
        body.append(f'<rect {box} fill="{fill}" stroke="{INK}" stroke-width="1.6"/>')
        if final:  # a double border: the record leaves the table here
            body.append(f'<rect x="{num(x - BOX_W / 2 + 4)}" y="{num(y - BOX_H / 2 + 4)}" width="{BOX_W - 8}" '
                        f'height="{BOX_H - 8}" rx="6" fill="none" stroke="{INK}" stroke-width="1"/>')  # fmt: skip
        body.append(f'<text x="{num(x)}" y="{num(y + 4.5)}" text-anchor="middle" font-size="13" '
                    f'font-weight="bold">{node.name}</text>')  # fmt: skip
        if interactive:
            body.extend(hooks(node, x, y))

    if interactive:
        body.append('<g class="movers"></g>')  # on top of everything: records on their way
    notes = ["\u25cf the initial state;  double border: a final state (the record leaves the table)"]
    if ANY in pos:
        live = sorted((s for row in rows[:-1] for s in row if s != ANY), key=rank)
        notes.append(f"{ANY}: {', '.join(s.name for s in live)}")
    title, subtitle = f"Kind.{kind.name}", SUBTITLES.get(kind, "")
    margin, top = 24, 84  # room above the first row for the title and the start dot
    span = max(xs) - min(xs) + 2 * margin
    width = max(span, *(text_width(t, 13) + 2 * margin for t in [title, subtitle, *notes]))
    lo = min(xs) - margin - (width - span) / 2  # centred, if the text is wider than the diagram
    bottom = (len(rows) - 1) * ROW + BOX_H / 2 + 28
    height = top + BOX_H / 2 + bottom + 18 * len(notes)
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{num(width)}" height="{num(height)}" '
        f'viewBox="0 0 {num(width)} {num(height)}" font-family="{MONO}" font-size="{LABEL}" fill="{INK}">',
        f"<title>{title} states: generated by scripts/make_diagrams.py from reactor.states.TRANSITIONS</title>",
        f'<defs><marker id="{marker}" viewBox="0 0 10 10" refX="9.5" refY="5" markerWidth="9" markerHeight="9" '
        f'markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{EDGE}"/></marker></defs>',
        '<rect width="100%" height="100%" fill="#ffffff"/>',  # white under GitHub's dark mode too
        f'<text x="{num(width / 2)}" y="28" text-anchor="middle" font-family="{SANS}" font-size="18" '
        f'font-weight="bold">{title}</text>',
        f'<text x="{num(width / 2)}" y="48" text-anchor="middle" font-family="{SANS}" font-size="13" '
        f'fill="{MUTED}">{escape(subtitle)}</text>',
        f'<g transform="translate({num(-lo)},{num(top + BOX_H / 2)})">',
    ]
    foot = [
        f'<text x="{num(width / 2)}" y="{num(top + BOX_H / 2 + bottom + 18 * i)}" text-anchor="middle" '
        f'font-family="{SANS}" fill="{MUTED}">{escape(note)}</text>'
        for i, note in enumerate(notes)
    ]
    return "\n".join([*head, *body, "</g>", *foot, "</svg>"]) + "\n"


