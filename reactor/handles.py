"""Handles: what the reactor keeps for each scheduled callback.

A ``Handle`` is a callback with its arguments and a ``cancelled`` flag;
cancelling never removes anything from a queue, the loop just skips it.
``TimerHandle`` adds the time it is due (timers sit in the reactor's heap,
ordered by time, then by the order they were scheduled).  ``_IOHandle`` is
one reader or writer registration: cancelling it also unwatches the
descriptor, and a new registration on the same descriptor is a new handle,
so a callback never runs for a registration removed earlier in the same
iteration (python/cpython#75114).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .loop import Reactor

__all__ = ["Handle", "TimerHandle"]


class Handle:
    """A callback scheduled on a reactor; ``cancel()`` stops it from running."""

    __slots__ = ("callback", "args", "cancelled")

    def __init__(self, callback: Callable[..., Any], args: tuple) -> None:
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        """Make sure the callback will not run (again).  Idempotent.

        The handle lets go of the callback and its arguments at once, so
        what they point at (a closed connection, say) is freed even while
        the handle itself still waits in a queue or the timer heap.
        """
        self.cancelled = True
        self.callback = _nothing
        self.args = ()

    def __repr__(self) -> str:
        name = getattr(self.callback, "__qualname__", repr(self.callback))
        return f"<{type(self).__name__} {name}{' cancelled' if self.cancelled else ''}>"


def _nothing() -> None:
    pass


def _describe(handle: Handle) -> str:
    """Name a handle's callback for the trace: ``Connection._expired on <Connection #3 ...>``."""
    callback = handle.callback
    owner = getattr(callback, "__self__", None)
    if owner is None:
        return getattr(callback, "__qualname__", repr(callback))
    # A bound method: named after the object's own class, not the base
    # class that happens to define the method.
    return f"{type(owner).__name__}.{getattr(callback, '__name__', '?')} on {owner!r}"


class _Posted(Handle):
    """A callback another thread queued (``call_soon_threadsafe``); the trace says so."""

    __slots__ = ()


class _IOHandle(Handle):
    """A reader or writer registration; cancelling it unwatches the descriptor."""

    __slots__ = ("_reactor", "_fileobj", "_slot")

    def __init__(self, callback: Callable[..., Any], args: tuple, reactor: "Reactor", fileobj: Any, slot: int) -> None:
        super().__init__(callback, args)
        self._reactor = reactor
        self._fileobj = fileobj
        self._slot = slot

    def cancel(self) -> None:
        if not self.cancelled:
            super().cancel()
            self._reactor._remove(self._fileobj, self._slot, only=self)


class TimerHandle(Handle):
    """A callback due at ``when`` (in the reactor's clock); ordered by time.

    Cancelling one tells its heap, which rebuilds itself without the
    cancelled timers once they are most of it (see reactor/timers.py).
    """

    __slots__ = ("when", "seq", "in_heap", "_heap")

    def __init__(self, when: float, seq: int, callback: Callable[..., Any], args: tuple, heap: Any = None) -> None:
        super().__init__(callback, args)
        self.when = when
        self.seq = seq
        self.in_heap = heap is not None  # still in its heap (not yet taken out to run or be dropped)
        self._heap = heap

    def cancel(self) -> None:
        if not self.cancelled:
            super().cancel()
            if self.in_heap:
                self._heap.cancelled()

    def __lt__(self, other: "TimerHandle") -> bool:
        # seq breaks ties so timers due at the same moment run in the order
        # they were scheduled.
        return (self.when, self.seq) < (other.when, other.seq)
