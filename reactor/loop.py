"""The event loop: one selector, a timer heap (reactor/timers.py) and a wakeup socketpair (reactor/waker.py).

Everything that happens in a reactor happens in ``run_once()``, which is
the event loop body; ``run()`` calls it until ``stop()``:

    1. work out how long we may sleep (0 if callbacks are waiting, else
       until the nearest timer, else forever);
    2. ``select()`` for that long;
    3. call the reader/writer callbacks of the descriptors that are ready;
    4. move the timers that are due onto the ready queue;
    5. run the ready queue (only what was in it when this step began);
    6. tell each server its loop step is over (``service_actions()``).

Invariants:

* Nothing polls.  The loop sleeps in ``select()`` until a descriptor is
  ready, a timer is due, or another thread writes to the wakeup socketpair
  (``call_soon_threadsafe``, ``stop``).
* A callback never runs for a registration that was removed earlier in the
  same iteration, even if its descriptor number has been reused since: each
  registration is a new ``Handle`` object and removing it cancels it
  (asyncore got this wrong: python/cpython#75114).
* No globals.  Any number of reactors can live in one process, each owned
  by whoever created it.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from typing import Any, Callable

from .errors import ClosedError, UsageError
from .handles import Handle, TimerHandle, _describe, _IOHandle, _Posted
from .timers import TimerHeap
from .waker import Waker

__all__ = ["Reactor", "Handle", "TimerHandle"]  # the handles live in reactor/handles.py

log = logging.getLogger("reactor")
trace = logging.getLogger("reactor.trace")

#: The longest one select() may sleep.  epoll takes milliseconds in a C int
#: (about 24.8 days: a longer timeout raised OverflowError); a loop that
#: wakes once a day to find nothing due costs nothing.  asyncio caps it too.
MAX_SELECT_TIMEOUT = 24 * 3600.0

_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


def _not_ours(server: Any) -> str:
    """Why ``add_server`` refuses ``server``, and what to do instead."""
    cls = type(server)
    if any(base.__module__ == "socketserver" for base in cls.__mro__):
        return (f"{cls.__name__} is the standard library's socketserver class, which a reactor cannot serve: "
                "import it from reactor instead (import reactor as socketserver)")  # fmt: skip
    return f"{server!r} is not a server a reactor can serve (reactor.TCPServer, UDPServer, the Unix ones and their subclasses)"


def _fd_label(key: Any) -> str:
    """Whose descriptor woke the loop, for the trace: its owner's ``trace_label(fd, *args)``
    (the object whose method is the callback: a connection names its record, a server's
    admission its listener, a strategy its child), else ``fd N``."""
    for handle in key.data:
        if handle is not None:
            label = getattr(getattr(handle.callback, "__self__", None), "trace_label", None)
            if label is not None:
                return label(key.fd, *handle.args)
    return f"fd {key.fd}"


def _closed(fileobj: Any) -> bool:
    """True if ``fileobj`` no longer has a descriptor (it was closed)."""
    try:
        return (fileobj if isinstance(fileobj, int) else fileobj.fileno()) < 0
    except (OSError, ValueError):
        return True


class Reactor:
    """A single-threaded event loop that serves any number of servers.

    ``selector`` is a ``selectors.BaseSelector`` instance (default:
    ``selectors.DefaultSelector()``, epoll on Linux).  ``clock`` is the
    monotonic clock the timers use; tests pass a fake one.

    Methods that are safe from any thread: ``call_soon_threadsafe``,
    ``stop``, ``wakeup``.  Everything else belongs to the thread that runs
    the loop.  A reactor is a context manager; leaving the block closes it.
    """

    def __init__(
        self,
        selector: selectors.BaseSelector | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._selector = selector if selector is not None else selectors.DefaultSelector()
        keys = getattr(self._selector, "_fd_to_key", None)  # fd -> key: the stdlib selectors' own dict
        self._fd_keys = keys if isinstance(keys, dict) else self._selector.get_map()
        self._clock = clock
        self._timers = TimerHeap()
        self._ready: deque[Handle] = deque()
        self._servers: list[Any] = []
        self._stopping = False
        self._closed = False
        self._thread_id: int | None = None
        # Another thread (or a signal handler) writes one byte, select()
        # returns, the loop runs what was queued for it (reactor/waker.py).
        self._waker = Waker()
        self.add_reader(self._waker.reader, self._waker.drain)
        self._stats: Any = None  # a LoopStats while one is attached (reactor/loopstats.py): it times select()

    # ------------------------------------------------------------------ I/O

    def add_reader(self, fileobj: Any, callback: Callable[..., Any], *args: Any) -> Handle:
        """Call ``callback(*args)`` whenever ``fileobj`` is readable.

        Replaces an earlier reader for the same descriptor.  Returns the
        handle; cancelling it is the same as ``remove_reader``.
        """
        return self._add(fileobj, 0, callback, args)

    def add_writer(self, fileobj: Any, callback: Callable[..., Any], *args: Any) -> Handle:
        """Call ``callback(*args)`` whenever ``fileobj`` is writable."""
        return self._add(fileobj, 1, callback, args)

    def remove_reader(self, fileobj: Any) -> bool:
        """Stop watching ``fileobj`` for reading.  Returns whether it was watched."""
        return self._remove(fileobj, 0)

    def remove_writer(self, fileobj: Any) -> bool:
        """Stop watching ``fileobj`` for writing.  Returns whether it was watched."""
        return self._remove(fileobj, 1)

    def _add(self, fileobj: Any, slot: int, callback: Callable[..., Any], args: tuple) -> Handle:
        self._check_open()
        handle = _IOHandle(callback, args, self, fileobj, slot)
        bit = _READ if slot == 0 else _WRITE
        key = self._key(fileobj)
        if key is not None and key.fileobj is not fileobj and _closed(key.fileobj):
            # The descriptor was reused: the object registered under it was
            # closed unremoved (epoll dropped it already): register afresh.
            # (Two live objects of one descriptor, a server and its socket, share it.)
            for old in key.data:
                if old is not None:
                    old.cancelled = True
            self._selector.unregister(key.fd)
            key = None
        if key is None:
            pair = [None, None]
            pair[slot] = handle
            self._selector.register(fileobj, bit, tuple(pair))
            return handle
        pair = list(key.data)
        if pair[slot] is not None:
            pair[slot].cancelled = True
        pair[slot] = handle
        # modify() stores a new data tuple; events this iteration's select()
        # returned hold the old one, whose handles are cancelled: skipped.
        self._selector.modify(fileobj, key.events | bit, tuple(pair))
        return handle

    def _key(self, fileobj: Any) -> Any:
        """The selector's key for ``fileobj``, or None (not registered, or closed): by
        descriptor number, as ``get_key(sock)`` of an unregistered socket (every new
        connection) formats its repr, two system calls, into a KeyError nobody reads."""
        try:
            fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        except (AttributeError, OSError, ValueError):
            return None
        return self._fd_keys.get(fd) if fd >= 0 else None

    def _remove(self, fileobj: Any, slot: int, only: Handle | None = None) -> bool:
        """Unwatch one direction of ``fileobj`` (if ``only`` is given: only if
        that handle is still the registered one)."""
        if self._closed:
            return False
        key = self._key(fileobj)
        if key is None:
            return False
        pair = list(key.data)
        handle = pair[slot]
        if handle is None or (only is not None and handle is not only):
            return False
        handle.cancelled = True
        pair[slot] = None
        events = key.events & ~(_READ if slot == 0 else _WRITE)
        if events:
            self._selector.modify(key.fileobj, events, tuple(pair))
        else:
            self._selector.unregister(key.fileobj)
        return True

    # --------------------------------------------------------------- timers

    def time(self) -> float:
        """The reactor's clock (monotonic seconds)."""
        return self._clock()

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> Handle:
        """Run ``callback(*args)`` in the next loop iteration (loop thread only)."""
        self._check_open()
        handle = Handle(callback, args)
        self._ready.append(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` once, ``delay`` seconds from now."""
        return self.call_at(self._clock() + delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` once, when the clock reaches ``when``.

        Cancel the returned handle to drop it: it lets go of the callback
        and its arguments at once, and the heap is rebuilt without the
        cancelled timers whenever they are most of it.  ``when`` must not
        be NaN (UsageError): it would never come; ``inf`` means never.
        """
        self._check_open()
        return self._timers.push(when, callback, args)

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> Handle:
        """Like ``call_soon`` but callable from any thread; wakes the loop."""
        handle = _Posted(callback, args)
        self._ready.append(handle)  # deque.append is atomic
        self.wakeup()
        return handle

    def wakeup(self) -> None:
        """Make a sleeping ``select()`` return now.  Safe from any thread or signal handler."""
        self._waker.wake()

    def next_timeout(self) -> float | None:
        """Seconds until the loop has work without any I/O: 0 if callbacks
        are queued, the delay to the nearest timer, or None (nothing planned).

        A foreign loop driving this reactor through ``fileno()`` uses this to
        know when to call ``run_once(0)`` even though nothing became readable.
        """
        if self._ready:
            return 0.0
        when = self._timers.first_due()
        if when is None:
            return None
        return max(0.0, when - self._clock())

    # -------------------------------------------------------------- servers

    @property
    def servers(self) -> tuple:
        """The servers this reactor is serving, in the order they were added."""
        return tuple(self._servers)

    def add_server(self, server: Any, *, poll_interval: float = 0.5) -> None:
        """Serve ``server`` (any of reactor's server classes) on this reactor.

        The server's socket is switched to nonblocking mode while it is
        served.  If the server's class overrides ``service_actions()``, it is
        also called at least every ``poll_interval`` seconds, as the stdlib
        loop does; otherwise the reactor never wakes just for it.
        """
        self._check_open()
        if server in self._servers:
            raise UsageError(f"{server!r} is already served by this reactor")
        attach = getattr(server, "_attach", None)
        if attach is None:
            raise UsageError(_not_ours(server))
        attach(self, poll_interval)
        self._servers.append(server)

    def remove_server(self, server: Any) -> bool:
        """Stop serving ``server``; returns False if it was not being served.

        The server itself stays open (call its ``server_close()``).
        """
        if server not in self._servers:
            return False
        self._servers.remove(server)
        server._detach(self)
        return True

    # -------------------------------------------------------------- running

    def run_once(self, timeout: float | None = None) -> int:
        """Run one iteration of the event loop; return how many callbacks ran.

        ``timeout`` caps how long to wait for I/O: None waits until there is
        something to do, 0 never waits (what a foreign loop passes).
        """
        self._check_open()
        self._thread_id = threading.get_ident()

        # 1. How long may we sleep?  Not at all when run() is finishing; at
        #    most a day, whatever the timers say (see MAX_SELECT_TIMEOUT).
        wait = 0.0 if self._stopping else self.next_timeout()
        if timeout is not None and (wait is None or timeout < wait):
            wait = timeout
        if wait is not None and wait > MAX_SELECT_TIMEOUT:
            wait = MAX_SELECT_TIMEOUT

        # 2. Sleep until a descriptor is ready or the time is up.
        tracing = trace.isEnabledFor(logging.DEBUG)
        started = self._clock() if tracing else 0.0
        events = self._selector.select(wait) if self._stats is None else self._stats.select(self._selector, wait)
        if tracing and events:
            self._trace_wake(wait, self._clock() - started, events)
        ran = 0

        # 3. I/O callbacks.  A callback that raises is logged and the loop
        #    goes on (every server on it would stop otherwise); only
        #    KeyboardInterrupt and SystemExit leave run_once().
        for key, mask in events:
            reader, writer = key.data
            if mask & _READ and reader is not None and not reader.cancelled:
                try:
                    reader.callback(*reader.args)
                except Exception:
                    self._callback_failed(reader)
                ran += 1
            # A reader may have removed or replaced the writer: check again.
            if mask & _WRITE and writer is not None and not writer.cancelled:
                try:
                    writer.callback(*writer.args)
                except Exception:
                    self._callback_failed(writer)
                ran += 1

        # 4. Timers that are due join the ready queue.
        now = self._clock()
        for timer in self._timers.pop_due(now):
            self._ready.append(timer)
            if tracing:
                trace.debug("timer fired: %s (due %.3fs ago)", _describe(timer), now - timer.when)

        # 5. Callbacks queued before this point; ones they queue wait a turn.
        for _ in range(len(self._ready)):
            handle = self._ready.popleft()
            if tracing and type(handle) is _Posted and not handle.cancelled:
                # What a "wakeup read" was for: another thread posted this.
                trace.debug("posted by another thread: %s", _describe(handle))
            if not handle.cancelled:
                try:
                    handle.callback(*handle.args)
                except Exception:
                    self._callback_failed(handle)
                ran += 1

        # 6. The stdlib's per-iteration hook, for every server we serve.
        for server in tuple(self._servers):
            try:
                server.service_actions()
            except Exception:
                log.error("%r: service_actions() raised; the loop goes on", server, exc_info=True)
        return ran

    def _callback_failed(self, handle: Handle) -> None:
        """A loop callback raised: log it, with the callback named, and go on."""
        log.error("exception in the callback %s; the loop goes on", _describe(handle), exc_info=True)

    def _trace_wake(self, wait: float | None, slept: float, events: list) -> None:
        ready = []
        for key, mask in events:
            what = "+".join(n for n, bit in (("read", _READ), ("write", _WRITE)) if mask & bit)
            ready.append(f"{_fd_label(key)} {what}")
        limit = "none" if wait is None else f"{wait:.3f}s"
        # A signal handler (or another thread) that called stop() woke us: say so.
        stop = "; stop() was asked for: the loop ends after this turn" if self._stopping else ""
        trace.debug("loop woke after %.3fs (timeout %s): %s%s", slept, limit, ", ".join(ready), stop)

    def run(self) -> None:
        """Run the event loop until ``stop()`` is called.

        The iteration in which ``stop()`` takes effect runs to its end, so
        callbacks queued before ``stop()`` still run; a ``stop()`` that came
        before ``run()`` makes it do one iteration without waiting and
        return.  An exception from a callback is logged on the ``reactor``
        logger at ERROR, naming the callback, and the loop goes on;
        ``KeyboardInterrupt`` and ``SystemExit`` propagate out of ``run()``.
        """
        restore = self._waker.signals()  # a signal wakes the loop, whichever thread the kernel gave it
        try:
            while True:
                self.run_once()
                if self._stopping:
                    trace.debug("the loop stops: stop() was asked for")
                    break
        finally:
            self._stopping = False
            restore()

    def stop(self) -> None:
        """Ask ``run()`` to return after the current iteration.  Any thread.

        From another thread the request joins the back of the ready queue,
        so whatever that thread queued before (``call_soon_threadsafe``)
        runs first.  Only ``run()`` looks at it: a reactor stepped by hand
        with ``run_once()`` ignores it.
        """
        if self._thread_id is None or self.in_loop_thread():
            self._stopping = True
            self.wakeup()
        else:
            self.call_soon_threadsafe(self._set_stopping)

    def _set_stopping(self) -> None:
        self._stopping = True

    @property
    def stopping(self) -> bool:
        """True from ``stop()`` (on the loop's thread) until ``run()`` returns.

        Servers take no new connection or datagram meanwhile: the accept
        burst checks it before every ``get_request()``.
        """
        return self._stopping

    def fileno(self) -> int:
        """The selector's own descriptor, readable whenever the reactor has I/O to do.

        A foreign loop (asyncio's ``add_reader``, a GUI toolkit, a hand
        written ``select``) watches it and calls ``run_once(0)`` when it is
        readable, plus after ``next_timeout()`` seconds for timers.  Only
        selectors that are themselves descriptors have one (epoll, kqueue,
        devpoll); ``SelectSelector`` and ``PollSelector`` raise UsageError.
        """
        self._check_open()
        get = getattr(self._selector, "fileno", None)
        if get is None:
            raise UsageError(
                f"{type(self._selector).__name__} has no descriptor of its own; "
                "use selectors.DefaultSelector() (epoll/kqueue) to embed a reactor"
            )
        return get()

    @property
    def selector(self) -> selectors.BaseSelector:
        """The underlying selector (read-only: register through the reactor)."""
        return self._selector

    @property
    def closed(self) -> bool:
        return self._closed

    def in_loop_thread(self) -> bool:
        """True when called from the thread that last ran this reactor."""
        return self._thread_id == threading.get_ident()

    def close(self) -> None:
        """Detach every server and release the selector and wakeup pair.  Idempotent."""
        if self._closed:
            return
        for server in tuple(self._servers):
            self.remove_server(server)
        self._closed = True
        self._timers.clear()
        self._ready.clear()
        self._selector.close()
        self._waker.close()

    def close_in_child(self, keep: Any = ()) -> None:
        """In a process forked from the loop's: close this copy's descriptors but those in ``keep``.

        The registered sockets and bare descriptors (other registered
        objects are left to their owners), the wakeup pair and the
        selector's own.  Nothing is unregistered: an epoll set is shared
        across ``fork()``; closing drops only this process's copies.
        Leaves this copy of the reactor closed.
        """
        if self._closed:
            return
        owned = [key.fileobj for key in self._selector.get_map().values()] + [*self._waker.sockets()]
        self._closed = True
        self._selector.close()
        for obj in owned:
            fd = obj if isinstance(obj, int) else obj.fileno() if isinstance(obj, socket.socket) else -1
            if fd >= 0 and fd not in keep:
                try:  # detach(): a real close even with makefile()s open, and never a second one
                    os.close(obj.detach() if isinstance(obj, socket.socket) else fd)
                except OSError:
                    pass  # closed already

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this reactor is closed")

    def __enter__(self) -> "Reactor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._servers)} server(s)"
        return f"<Reactor {type(self._selector).__name__} {state} pid={os.getpid()}>"
