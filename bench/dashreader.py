"""A dashboard's event reader for the bench: ``python -m bench.dashreader HOST PORT``.

Connects to a dashboard (reactor.add_dashboard), asks for ``GET /events``
and reads the stream as a browser would, as fast as it comes, until
SIGTERM or the end of the stream.  It prints ``{"streaming": true}`` once
the first event (the snapshot) has arrived, and at the end ``{"events":
N, "bytes": B}``: how many events it read, so the harness can say the
dashboard was streaming all along.  Standard library only.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
from typing import Any


class Stop(BaseException):
    """Raised by the SIGTERM handler: the reader's work is done."""


def _stop(signum: int, frame: Any) -> None:
    raise Stop


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python -m bench.dashreader HOST PORT", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    events = received = 0
    announced = False
    try:
        with socket.create_connection((args[0], int(args[1])), timeout=10) as sock:
            sock.sendall(f"GET /events HTTP/1.1\r\nHost: {args[0]}\r\n\r\n".encode())
            sock.settimeout(None)
            pending = b""  # the part of an event (or of the response head) not complete yet
            while chunk := sock.recv(65536):
                received += len(chunk)
                *blocks, pending = (pending + chunk).split(b"\n\n")
                events += sum(1 for block in blocks if b"event: " in block)  # (comments are not events)
                if events and not announced:
                    print(json.dumps({"streaming": True}), flush=True)
                    announced = True
    except Stop:
        pass
    print(json.dumps({"events": events, "bytes": received}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
