"""The timer heap: every ``call_at``/``call_later`` of a reactor, ordered by when it is due.

A binary heap (``heapq``) of ``TimerHandle``s, ordered by time, then by
the order they were scheduled.  Cancelling a timer cannot take it out of
the middle of a heap cheaply, so:

* a cancelled handle lets go of its callback and arguments at once (see
  ``Handle.cancel``), so it holds nothing while it waits its turn;
* the heap counts its cancelled handles, and rebuilds itself without them
  once they are more than half of it (and at least ``PRUNE_AT_LEAST``):
  one long timer at the head can no longer keep a crowd of dead ones (and
  what they pointed at) behind it.  asyncio does the same.

The reactor's loop asks two things of it: how long until the first live
timer (``first_due``) and which timers are due now (``pop_due``).
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Callable, Iterator

from .errors import UsageError
from .handles import TimerHandle

__all__ = ["TimerHeap", "PRUNE_AT_LEAST"]

#: The fewest cancelled timers worth a rebuild of the heap.
PRUNE_AT_LEAST = 64


class TimerHeap:
    """Timers ordered by due time; cancelled ones are dropped lazily, and all
    at once when they are most of the heap.  Loop thread only."""

    __slots__ = ("_heap", "_seq", "_cancelled")

    def __init__(self) -> None:
        self._heap: list[TimerHandle] = []
        self._seq = itertools.count()  # breaks ties: timers due together run in the order scheduled
        self._cancelled = 0  # cancelled handles still in the heap

    def push(self, when: float, callback: Callable[..., Any], args: tuple) -> TimerHandle:
        """Schedule ``callback(*args)`` at ``when``; ``when`` must not be NaN (UsageError)."""
        if when != when:  # NaN compares false with everything: it would never be due and stall the heap
            raise UsageError(f"a timer's time must be a number, not {when!r}")
        timer = TimerHandle(when, next(self._seq), callback, args, self)
        heapq.heappush(self._heap, timer)
        return timer

    def cancelled(self) -> None:
        """One of our timers was cancelled (called by ``TimerHandle.cancel``)."""
        self._cancelled += 1

    def first_due(self) -> float | None:
        """When the first live timer is due, or None if there is none."""
        self._prune()
        heap = self._heap
        while heap and heap[0].cancelled:
            self._pop()
        return heap[0].when if heap else None

    def pop_due(self, now: float) -> Iterator[TimerHandle]:
        """Take out, in order, the live timers due at ``now`` or before."""
        heap = self._heap
        while heap and heap[0].when <= now:
            timer = self._pop()
            if not timer.cancelled:
                yield timer

    def clear(self) -> None:
        self._heap.clear()
        self._cancelled = 0

    def __len__(self) -> int:
        """Timers in the heap, cancelled ones not yet dropped included."""
        return len(self._heap)

    def _pop(self) -> TimerHandle:
        timer = heapq.heappop(self._heap)
        timer.in_heap = False
        if timer.cancelled:
            self._cancelled -= 1
        return timer

    def _prune(self) -> None:
        if self._cancelled < PRUNE_AT_LEAST or self._cancelled * 2 <= len(self._heap):
            return
        live = [timer for timer in self._heap if not timer.cancelled]
        heapq.heapify(live)
        self._heap = live
        self._cancelled = 0
