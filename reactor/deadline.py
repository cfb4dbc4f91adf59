"""A connection's one deadline, and at most one timer for it.

A framed connection is always under at most one bound: ``idle_timeout``
between messages, ``request_timeout`` while a message arrives,
``write_timeout`` while output waits, or the lingering close.  Re-arming
a timer per message would cost a heap push and a cancel each time, so a
``Deadline`` keeps the time and the bound, and at most one timer: when the
timer fires it checks whether the deadline moved (later: arm again for the
new time; away: nothing) before saying it has passed.  Moving a deadline
later is an assignment; only an earlier one re-arms.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["Deadline", "LINGER"]

#: How long a lingering close waits for the peer's EOF before closing anyway.
LINGER = 2.0


class Deadline:
    """One deadline (``when``, ``bound``) and its timer.

    A bound is the name of a ``server`` attribute in seconds (None: no
    limit) or ``"linger"`` (``LINGER``).  ``on_timer`` is what the timer
    calls (the connection's method, which asks ``due()``): the trace names
    it, so it stays the owner's.
    """

    __slots__ = ("when", "bound", "_server", "_reactor", "_on_timer", "_timer")

    def __init__(self, server: Any, reactor: Any, on_timer: Callable[[], None]) -> None:
        self.when: float | None = None
        self.bound = ""  # which bound: idle_timeout, request_timeout, write_timeout, linger
        self._server = server
        self._reactor = reactor
        self._on_timer = on_timer
        self._timer: Any = None

    def arm(self, bound: str) -> None:
        """The deadline is now ``bound``'s: that many seconds from now (none if it is None)."""
        seconds = LINGER if bound == "linger" else getattr(self._server, bound)
        if seconds is None:  # (per read, for the default idle_timeout: no second call)
            self.when, self.bound = None, ""
            return
        self.set(bound, seconds)

    def set(self, bound: str, seconds: float | None) -> None:
        """The deadline is ``bound``, ``seconds`` from now (None: no deadline)."""
        if seconds is None:
            self.when, self.bound = None, ""
            return
        when = self._reactor.time() + seconds
        self.when, self.bound = when, bound
        timer = self._timer
        if timer is None or timer.when > when:
            if timer is not None:
                timer.cancel()
            self._timer = self._reactor.call_at(when, self._on_timer)

    def clear(self) -> None:
        """No deadline (the timer, if armed, will find nothing when it fires)."""
        self.when, self.bound = None, ""

    def due(self) -> str | None:
        """Called when the timer fires: the bound that passed, or None (re-armed if it moved)."""
        self._timer = None
        when = self.when
        if when is None:
            return None
        if self._reactor.time() < when:
            self._timer = self._reactor.call_at(when, self._on_timer)  # it moved: wait more
            return None
        bound = self.bound
        self.when, self.bound = None, ""
        return bound

    def cancel(self) -> None:
        """Forget the deadline and cancel the timer (the connection is closed)."""
        self.when, self.bound = None, ""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
