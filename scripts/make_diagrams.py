"""Draw the request table's state machines, one SVG per record kind.

    python scripts/make_diagrams.py            # write docs/images/states-<kind>.svg
    python scripts/make_diagrams.py --check    # exit 1, naming them, if any is stale

The pictures are computed from ``reactor.states.TRANSITIONS``, so they cannot
drift from the code: tests/test_diagrams.py fails when a checked-in image is
not what this script writes.  The drawing itself (the layout, step by step)
is in ``reactor.dashboard.diagrams``, which the dashboard's page uses too;
this script only writes its output to files.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # so that a plain `python scripts/...` finds the package

from reactor.dashboard.diagrams import render  # noqa: E402
from reactor.states import Kind  # noqa: E402

__all__ = ["render", "images", "main"]

OUT = ROOT / "docs" / "images"


def images() -> dict[str, bytes]:
    """Every image this script writes: file name -> content."""
    return {f"states-{kind.value}.svg": render(kind).encode("utf-8") for kind in Kind}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if an image is stale")
    parser.add_argument("--out", type=pathlib.Path, default=OUT, help="the directory (default: docs/images)")
    args = parser.parse_args(argv)
    stale = []
    for name, content in images().items():
        path = args.out / name
        if path.exists() and path.read_bytes() == content:
            continue
        stale.append(path)
        if not args.check:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            print(f"wrote {path}")
    if args.check and stale:
        for path in stale:
            print(f"{'stale' if path.exists() else 'missing'}: {path}", file=sys.stderr)
        print("run: python scripts/make_diagrams.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
