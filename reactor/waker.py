"""The waker: how another thread, or a signal, makes a sleeping ``select()`` return.

A reactor sleeps in ``select()`` until a descriptor is ready or a timer is
due; it never polls.  So whatever must reach it from outside (another
thread's ``call_soon_threadsafe`` or ``stop()``, a worker's finished
request, a signal) writes one byte to a socketpair whose reading end the
reactor watches.  A socketpair rather than a pipe, so the same code would
work with ``select()`` on Windows (web-platform-tests/wpt#53407; asyncio
and trio do the same).

Invariants:

* ``wake()`` never blocks and never raises: a full socketpair already
  holds a byte, so the loop wakes anyway; a closed one has no loop to wake.
* While ``signals()`` is in force, a signal delivered to any thread of the
  process wakes the loop (``signal.set_wakeup_fd``), unless somebody else
  had already set a wakeup descriptor: theirs stays.
"""

from __future__ import annotations

import signal
import socket
import threading
from typing import Callable

__all__ = ["Waker"]


def _nothing() -> None:
    pass


class Waker:
    """A nonblocking socketpair: ``wake()`` from anywhere, ``drain()`` on the loop."""

    __slots__ = ("reader", "_writer")

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def wake(self) -> None:
        """Make the loop watching ``reader`` wake up.  Safe from any thread or signal handler."""
        try:
            self._writer.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the socketpair is full: the loop will wake anyway
        except OSError:
            pass  # closed: nothing to wake

    def drain(self) -> None:
        """The reader's callback: read the bytes that woke us (their number does not matter)."""
        try:
            while self.reader.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def signals(self) -> Callable[[], None]:
        """Have signals wake the loop; returns the function that undoes it.

        Python runs signal handlers in the main thread only, between two
        bytecodes; but the kernel may deliver the signal to any thread.  If
        a worker thread takes it, the main thread sleeps on in ``select()``
        and the handler, say one that calls ``stop()``, waits for the next
        I/O.  ``signal.set_wakeup_fd`` makes the C-level handler write a
        byte to our socketpair, whichever thread it runs on.  Only from the
        main thread, and only if nobody else (asyncio, the application) has
        set one; the previous state comes back when undone.
        """
        if threading.current_thread() is not threading.main_thread():
            return _nothing
        mine = self._writer.fileno()
        try:
            before = signal.set_wakeup_fd(mine, warn_on_full_buffer=False)
        except (ValueError, OSError):
            return _nothing
        if before != -1:  # someone else's: theirs stays
            signal.set_wakeup_fd(before)
            return _nothing

        def restore() -> None:
            current = signal.set_wakeup_fd(-1)
            if current != mine:  # replaced meanwhile: leave theirs
                signal.set_wakeup_fd(current)

        return restore

    def trace_label(self, fd: int) -> str:
        """What the trace calls our reading end."""
        return "wakeup"

    def sockets(self) -> tuple[socket.socket, socket.socket]:
        """Both ends (a forked child closes its copies)."""
        return self.reader, self._writer

    def close(self) -> None:
        self.reader.close()
        self._writer.close()
