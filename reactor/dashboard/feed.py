"""The event streams of a dashboard: ``GET /events`` (Server-Sent Events), fed from its source.

What a dashboard shows comes from its *source* (source.py: ``LocalSource``
for the reactor it runs on; workers.py: ``WorkersSource`` for a
supervisor's workers): a SNAPSHOT, then UPDATEs (a snapshot plus the
transitions since the last).  The shapes are documented in docs/api.md
("The dashboard").  This module only carries them.

The streams are fed by one timer, every ``interval`` seconds (0.25 by
default), which sends an update only when the source says something
changed (a transition, a counter, a total), and a ``: keep-alive``
comment after ``KEEPALIVE`` quiet seconds.  Nothing runs while nobody
watches: the timer exists only while at least one stream is open, and
the source is told to observe the transitions (``source.watch(True)``)
only then (see source.py for that cost and its bound).

A stream is the dashboard server's connection, whose request never ends:
the feed pushes events with ``connection.send``.  A reader that lets more
than the server's ``output_high_water`` pile up is dropped at once
(counted as ``slow_event_readers``), one that went away is found by a peek
at its socket on every tick, and at most ``max_streams`` are open at once
(the next one is answered 503).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

from ..errors import ClosedError
from ..states import FINAL_STATES
from .source import MAX_RECORDS, MAX_TRANSITIONS, counted, describe_server, peer_text, strategy_text

__all__ = ["Feed", "describe_server", "counted", "event", "peer_text", "strategy_text", "MAX_RECORDS", "MAX_TRANSITIONS", "KEEPALIVE"]

log = logging.getLogger("reactor")

#: Seconds without an update after which a stream gets a ``: keep-alive`` comment.
KEEPALIVE = 15.0
#: The send buffer of an event stream's socket: small, so that a stalled reader shows within seconds.
STREAM_SNDBUF = 65536

_EVENT_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
    b"Connection: keep-alive\r\nX-Accel-Buffering: no\r\n\r\n"
)


def event(name: str, data: Any) -> bytes:
    """One Server-Sent Event: ``event: NAME`` and ``data:`` one line of JSON, then an empty line."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Feed:
    """The open event streams of one dashboard, fed from its ``source``.

    ``open_stream`` takes a connection over as an event stream; the rest
    runs by itself on the loop's timer while streams are open, and
    ``close()`` ends them.  ``snapshot()`` is the source's.
    """

    def __init__(self, loop: Any, source: Any, interval: float = 0.25, max_streams: int = 32) -> None:
        self.loop = loop
        self.source = source
        self.interval = interval
        self.max_streams = max_streams
        self.streams: list[Any] = []  # the connections streaming events
        self._timer: Any = None
        self._last_sent = 0.0

    def snapshot(self) -> dict[str, Any]:
        """A SNAPSHOT now (the source's)."""
        return self.source.snapshot()

    # -------------------------------------------------------------- streams

    def has_room(self) -> bool:
        """May another event stream open (fewer than ``max_streams`` are)?"""
        self._prune()
        return len(self.streams) < self.max_streams

    def open_stream(self, connection: Any) -> None:
        """Make ``connection`` an event stream: the response head and a snapshot now, updates from now on."""
        try:
            connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
        except OSError:
            pass  # the kernel's default, then
        if not self.streams:
            self.source.watch(True)
        self.streams.append(connection)
        self._send(connection, _EVENT_HEAD + event("snapshot", self.source.snapshot()))
        if self._timer is None:
            self._last_sent = time.monotonic()
            self._timer = self.loop.call_later(self.interval, self._tick)

    def close(self) -> None:
        """End every stream and stop watching (the dashboard is closing)."""
        for connection in tuple(self.streams):
            connection.abort("the dashboard is closing")
        self.streams.clear()
        self._stop()

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.source.watch(False)

    def _send(self, connection: Any, data: bytes) -> None:
        """Queue ``data`` on a stream, or drop the stream if its reader fell too far behind."""
        if connection.queued + len(data) > connection.server.output_high_water:
            connection.server.request_table.count("slow_event_readers")
            log.info("dashboard: %r does not read its events; dropping it", connection)
            connection.abort("the event reader fell behind")
            return
        try:
            connection.send(data)
        except ClosedError:
            pass  # it closed meanwhile: pruned on the next tick

    def _prune(self) -> None:
        """Forget the streams that ended, and end those whose reader went away."""
        alive = []
        for connection in self.streams:
            if connection.record.state in FINAL_STATES:
                continue
            try:
                gone = connection.sock.recv(1, socket.MSG_PEEK) == b""
            except (BlockingIOError, InterruptedError):
                gone = False
            except OSError:
                gone = True
            if gone:
                connection.abort("the event reader went away")
                continue
            alive.append(connection)
        self.streams[:] = alive

    # ---------------------------------------------------------- the timer

    def _tick(self) -> None:
        """Every ``interval`` seconds while streams are open: send an update if anything changed."""
        self._timer = None
        self._prune()
        if not self.streams:
            self._stop()
            return
        now = time.monotonic()
        if self.source.changed():
            self._last_sent = now
            data = event("update", self.source.update())
            for connection in tuple(self.streams):
                self._send(connection, data)
        elif now - self._last_sent >= KEEPALIVE:
            self._last_sent = now
            for connection in tuple(self.streams):
                self._send(connection, b": keep-alive\n\n")
        self.source.watch(True)  # again after a full batch, and the servers added since
        self._timer = self.loop.call_later(self.interval, self._tick)

    def update(self) -> dict[str, Any]:
        """The UPDATE object (the source's): a snapshot and the transitions since the last update."""
        return self.source.update()
