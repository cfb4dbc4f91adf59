"""Loop statistics: how often a reactor wakes up, why, and where its time goes.

A ``Reactor`` sleeps in ``select()`` and wakes for one of four reasons:

* ``ready``: descriptors became ready (a client connected, sent, or can
  be written to again);
* ``wakeup``: only the wakeup socketpair was readable: another thread or a
  signal handler asked for the loop (``call_soon_threadsafe``, ``stop``);
* ``timers``: nothing was ready, but a timer was due or callbacks were
  already queued (``call_soon``), so the loop did not sleep at all;
* ``timeout``: nothing at all: the ``run_once(timeout)`` caller's limit
  passed (a foreign loop polling, or ``serve_forever``'s poll interval).

Between two ``select()`` calls the loop is *busy*: it runs callbacks,
which include every inline handler; inside ``select()`` it *waits*.  The
shares of both over the last second say how loaded the loop is.

Cost: nothing unless attached.  ``Reactor.run_once`` tests one attribute
per wake-up (``loop._stats``); attached, each wake-up costs two clock
reads and a few additions (``LoopStats.select`` wraps the loop's
``select()`` call).  A dashboard attaches it for as long as it exists.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable

__all__ = ["LoopStats", "REASONS"]

#: Why the loop woke up, in the order a wake-up is classified.
REASONS = ("ready", "wakeup", "timers", "timeout")

#: The window the per-second rates and shares are computed over.
WINDOW = 1.0


class LoopStats:
    """Counters of one reactor's wake-ups, filled in by the loop itself while attached.

    Read ``wakeups``, ``why`` (reason -> count), ``ready`` (descriptors
    ready, summed over wake-ups), ``busy`` and ``waiting`` (seconds) at any
    time; ``rates()`` gives the same over the last second.  Use
    ``LoopStats.attach(loop)`` and ``detach()``: several users of one
    reactor share one ``LoopStats``.
    """

    def __init__(self, loop: Any, clock: Callable[[], float] = time.perf_counter) -> None:
        self.loop = loop
        self.clock = clock
        self.wakeups = 0
        self.why = dict.fromkeys(REASONS, 0)
        self.ready = 0
        self.busy = 0.0
        self.waiting = 0.0
        self.users = 0
        self._wakeup_fd = loop._waker.reader.fileno()
        self._last: float | None = None  # when the last select() returned
        self._samples: deque[tuple[float, ...]] = deque([self._sample()])

    @classmethod
    def attach(cls, loop: Any) -> "LoopStats":
        """The statistics of ``loop``, counting from now (or shared, if someone already attached them)."""
        stats = loop._stats
        if stats is None:
            stats = loop._stats = cls(loop)
        stats.users += 1
        return stats

    def detach(self) -> None:
        """One user is done; the last one takes the hook out of the loop (it costs nothing again)."""
        self.users -= 1
        if self.users <= 0 and self.loop._stats is self:
            self.loop._stats = None

    def select(self, selector: Any, timeout: float | None) -> list:
        """The loop's ``select()``, timed and classified (``Reactor.run_once`` calls it)."""
        clock = self.clock
        start = clock()
        if self._last is not None:
            self.busy += start - self._last
        events = selector.select(timeout)
        end = self._last = clock()
        self.waiting += end - start
        self.wakeups += 1
        count = len(events)
        if count:
            self.ready += count
            why = "wakeup" if count == 1 and events[0][0].fd == self._wakeup_fd else "ready"
        else:
            loop = self.loop
            due = loop._timers.first_due()
            why = "timers" if loop._ready or (due is not None and due <= loop.time()) else "timeout"
        self.why[why] += 1
        return events

    def _sample(self) -> tuple[float, ...]:
        return (self.clock(), self.wakeups, self.ready, self.busy, self.waiting, *self.why.values())

    def rates(self) -> dict[str, Any]:
        """Wake-ups per second and why, and the busy and waiting shares, over about the last second.

        Shaped as the dashboard's LOOP object: ``wakeups_per_s``,
        ``why_per_s`` (reason -> per second), ``busy_share`` and
        ``wait_share`` (0..1), ``ready_per_wakeup``.
        """
        now = self._sample()
        samples = self._samples
        samples.append(now)
        while len(samples) > 2 and now[0] - samples[1][0] >= WINDOW:
            samples.popleft()  # keep one sample at least WINDOW old as the base
        base = samples[0]
        span = now[0] - base[0]
        if span <= 0:
            return _idle()
        delta = [b - a for a, b in zip(base, now)]
        wakeups = delta[1]
        return {
            "wakeups_per_s": wakeups / span,
            "why_per_s": {reason: delta[5 + i] / span for i, reason in enumerate(REASONS)},
            "busy_share": min(1.0, max(0.0, delta[3] / span)),
            "wait_share": min(1.0, max(0.0, delta[4] / span)),
            "ready_per_wakeup": delta[2] / wakeups if wakeups else 0.0,
        }

    def totals(self) -> dict[str, Any]:
        """The counts since attached: ``wakeups``, ``why``, ``ready``, ``busy`` and ``waiting`` (seconds)."""
        return {"wakeups": self.wakeups, "why": dict(self.why), "ready": self.ready, "busy": self.busy,
                "waiting": self.waiting}  # fmt: skip

    def __repr__(self) -> str:
        return f"<LoopStats wakeups={self.wakeups} why={self.why} busy={self.busy:.3f}s waiting={self.waiting:.3f}s>"


def _idle() -> dict[str, Any]:
    return {"wakeups_per_s": 0.0, "why_per_s": dict.fromkeys(REASONS, 0.0), "busy_share": 0.0,
            "wait_share": 0.0, "ready_per_wakeup": 0.0}  # fmt: skip
