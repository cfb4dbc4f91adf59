"""Rate-limited log lines: a peer must not decide how much a server logs.

Some warnings are triggered by what a remote peer does: a Unix datagram
client that never reads makes every reply to it a "reply dropped"
warning; a client that opens connection after connection and breaks the
framing on each makes a "protocol error" warning per connection.  Logged
one line per event, such a peer fills the disk (18,560 lines, 2.2 MB, in
two seconds in one measurement) and buries every other line.

``RateLimitedLog`` logs the first line of each *kind* at once, then at
most one line of that kind per ``interval`` seconds.  The lines it holds
back are counted, and the next line of the kind that is logged says how
many there were: ``... (1234 more in the last 10.0s)``.  It does not count
for anyone else: the exact numbers belong in the request table's counters,
which the callers keep as before.

Invariants:

* the first line of a kind is always logged, and so is the first after
  a quiet ``interval``;
* a held-back line costs a dict lookup and an addition, under a lock (any
  thread may log), and formats nothing;
* the clock is an argument, so tests drive it by hand.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

__all__ = ["RateLimitedLog", "INTERVAL"]

#: Seconds between two lines of one kind, by default.
INTERVAL = 10.0


class RateLimitedLog:
    """At most one line per ``interval`` seconds for each kind of event.

    ``logger`` is where lines go; ``interval`` (seconds, > 0) the least
    time between two lines of one kind; ``clock`` a monotonic clock
    returning seconds.  A kind is any hashable the caller chooses, such as
    ``"replies_dropped"``; use a fixed set of them (every kind ever used is
    remembered).  Safe to call from any thread.

    Raises ``ValueError`` if ``interval`` is not a positive number.
    """

    def __init__(
        self, logger: logging.Logger, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not isinstance(interval, (int, float)) or not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        self.logger = logger
        self.interval = float(interval)
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[Any, list[Any]] = {}  # kind -> [time of its last line, lines held back since]

    def log(self, level: int, kind: Any, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` at ``level``, unless a line of ``kind`` was logged
        less than ``interval`` seconds ago; then only count it.

        Returns True if the line was logged.  A logged line that follows
        held-back ones ends with ``(N more in the last S s)``: N lines held
        back in the S seconds since the previous line of its kind.
        """
        now = self._clock()
        with self._lock:
            entry = self._kinds.get(kind)
            if entry is not None and now - entry[0] < self.interval:
                entry[1] += 1
                return False
            held, since = (entry[1], now - entry[0]) if entry is not None else (0, 0.0)
            self._kinds[kind] = [now, 0]
        if held:
            msg = f"{msg} (%d more in the last %.1fs)"
            args = (*args, held, since)
        self.logger.log(level, msg, *args)
        return True

    def warning(self, kind: Any, msg: str, *args: Any) -> bool:
        """``log(logging.WARNING, kind, msg, *args)``."""
        return self.log(logging.WARNING, kind, msg, *args)

    def held(self, kind: Any) -> int:
        """How many lines of ``kind`` were held back since its last logged line."""
        with self._lock:
            entry = self._kinds.get(kind)
            return entry[1] if entry is not None else 0

    def __repr__(self) -> str:
        return f"<RateLimitedLog {self.logger.name!r} every {self.interval}s, {len(self._kinds)} kinds>"
