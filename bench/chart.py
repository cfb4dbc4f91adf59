"""The chart: requests/s per scenario and system, as a standalone SVG.

Pure standard library, deterministic (the same results give the same
bytes), readable on a white page.  One panel per scenario, two columns of
panels; each panel has its own linear scale from 0 to its fastest system,
since the scenarios' figures differ by more than a factor of ten.  A system
that cannot serve a scenario is listed with "n/a".
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from .report import summarise
from .scenarios import BY_NAME

COLOURS = {
    "reactor-line": "#1f5fa8",
    "reactor-chunk": "#3d85c6",
    "reactor-pool": "#6fa8dc",
    "reactor-fork": "#9fc5e8",
    "reactor-dgram": "#0b3d73",
    "stdlib-sync": "#b45f06",
    "stdlib-threading": "#e69138",
    "stdlib-forking": "#f6b26b",
    "asyncio-proto": "#38761d",
    "asyncio-streams": "#6aa84f",
    "bare": "#555555",
}

WIDTH, COLUMNS, GAP = 1000, 2, 24
LABEL, VALUE = 120, 70  # label column and room for the value after the bar
BAR, STEP, TITLE = 13, 17, 34


def svg(data: dict[str, Any]) -> str:
    stats = summarise(data["runs"])
    na = data.get("na", {})
    panel_w = (WIDTH - GAP * (COLUMNS + 1)) / COLUMNS
    bar_w = panel_w - LABEL - VALUE
    panels = []
    for name in data["scenarios"]:
        scenario = BY_NAME[name]
        rows = []
        if data.get("skipped", {}).get(name):
            rows.append(("skipped", None, data["skipped"][name][:70]))
        for system in scenario.systems if not rows else ():
            s = stats.get((name, system))
            if na.get(name, {}).get(system):
                rows.append((system, None, "n/a"))
            elif s and s.get("rps"):
                rows.append((system, s["rps"], f"{s['rps']:,.0f}"))
            elif s:
                rows.append((system, None, "failed"))
        panels.append((name, rows))
    heights = [TITLE + STEP * len(rows) + 8 for _, rows in panels]
    row_heights = [max(heights[i : i + COLUMNS]) for i in range(0, len(heights), COLUMNS)]
    total_h = 40 + sum(row_heights) + GAP * len(row_heights)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total_h}" viewBox="0 0 {WIDTH} {total_h}" '
        'font-family="Helvetica, Arial, sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{total_h}" fill="#ffffff"/>',
        f'<text x="{GAP}" y="26" font-size="15" font-weight="bold" fill="#222">'
        "Requests (TLS handshakes) per second, per scenario (median of the runs; longer is better; each panel its own scale)</text>",
    ]
    y = 40.0
    for r, row_h in enumerate(row_heights):
        for c in range(COLUMNS):
            i = r * COLUMNS + c
            if i >= len(panels):
                break
            name, rows = panels[i]
            x = GAP + c * (panel_w + GAP)
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{panel_w:.1f}" height="{row_h:.1f}" fill="#f7f7f7" stroke="#dddddd"/>')
            out.append(f'<text x="{x + 8:.1f}" y="{y + 18:.1f}" font-size="12" font-weight="bold" fill="#222">{escape(name)}</text>')
            out.append(f'<text x="{x + 8:.1f}" y="{y + 30:.1f}" font-size="9" fill="#666">{escape(BY_NAME[name].short())}</text>')
            top = max((v for _, v, _ in rows if v), default=1.0)
            for j, (system, value, text) in enumerate(rows):
                by = y + TITLE + j * STEP
                out.append(f'<text x="{x + LABEL - 6:.1f}" y="{by + BAR - 3:.1f}" text-anchor="end" fill="#222">{escape(system)}</text>')
                length = 0.0 if value is None else max(1.0, bar_w * value / top)
                if length:
                    colour = COLOURS.get(system, "#888888")
                    out.append(f'<rect x="{x + LABEL:.1f}" y="{by:.1f}" width="{length:.1f}" height="{BAR}" fill="{colour}"/>')
                colour = "#222" if value is not None else "#999"
                out.append(f'<text x="{x + LABEL + length + 4:.1f}" y="{by + BAR - 3:.1f}" fill="{colour}">{escape(text)}</text>')
        y += row_h + GAP
    out.append("</svg>")
    return "\n".join(out) + "\n"
