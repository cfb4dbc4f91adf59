"""Command line: ``python -m reactor demo`` and ``python -m reactor serve`` (see reactor/cli.py)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reactor",
        description="socketserver's API on a selectors reactor.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="echo servers on TCP, UDP, Unix stream and Unix datagram in one reactor",
        description="Start a framed line-echo server on each of the four socket families in ONE "
        "reactor, drive a few clients against each while one slow client holds half a line, "
        "show the request table's transitions as a timeline and a summary per family, shut down.",
    )
    demo.add_argument("--quiet", action="store_true", help="print only the exchanges and the summary")
    demo.add_argument(
        "--trace", action="store_true", help="also log every transition and loop wake-up (reactor.trace) to stderr"
    )
    from .cli import add_dashboard_options, add_serve_parser

    add_dashboard_options(demo)
    add_serve_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "serve":
        from .cli import serve

        try:
            return serve(args)
        except KeyboardInterrupt:  # a third Ctrl-C, while the second one's cleanup ran
            return 130
    if args.command == "demo":
        from .cli import UsageFailure, dashboard_address
        from .demo import run_demo

        try:
            where = dashboard_address(args)
        except UsageFailure as exc:
            print(f"python -m reactor demo: error: {exc}", file=sys.stderr)
            return 2
        return run_demo(verbose=not args.quiet, trace=args.trace, dashboard=where, remote=args.dashboard_remote)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse refuses first
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
