"""How ``python -m reactor serve`` stops: the first signal gracefully, the second at once.

A graceful stop lets running requests finish, and a stuck one can make it
last for ever; a process that ignores Ctrl-C is worse.  So the command's
SIGINT and SIGTERM handler is an object with a little state of its own:

    no signal yet --first--> stopping (reactor.stop(); the grace period starts)
    stopping --second, or the grace period ends while the loop is busy--> at once
                  (KeyboardInterrupt in the main thread, wherever it is)

What comes after (closing every server, removing socket files) is
``close_servers()``, called by the command (``reactor.cli``) and by each
worker process (``reactor.workers``); the ``Stopper`` decides how long it may wait.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

from .loop import Reactor
from .table import State, describe_peer

__all__ = ["Stopper", "close_servers"]

log = logging.getLogger("reactor")


class Stopper:
    """The command's SIGINT and SIGTERM handler: the first signal stops gracefully, the second at once.

    The first signal calls ``reactor.stop()`` (a flag and one byte on the
    wakeup socketpair: safe in a handler) and starts the grace period:
    running requests have until ``deadline`` to finish (``drain_timeout``
    seconds; None: no limit).  While the loop is still running, SIGALRM
    marks the deadline if a server runs its handlers inline: an inline
    handler blocked on a silent client *is* the loop, so when the alarm
    comes it is interrupted (KeyboardInterrupt).  A pool's or a child's
    requests are ended by ``server_close()`` once the loop has returned.

    The second signal raises KeyboardInterrupt wherever the main thread is.
    A blocking ``recv()`` is interrupted too: the signal ends the system
    call with EINTR, Python runs this handler, and because the handler
    raises, the call is not retried (PEP 475).  The previous handlers come
    back at that moment, so a third signal has its usual effect.
    """

    #: Seconds after the grace period that the alarm interrupts a busy loop
    #: (0: at once; a worker, whose loop ends itself at the deadline, waits a little longer).
    alarm_margin = 0.0

    def __init__(self, reactor: Reactor, servers: list[Any], drain_timeout: float | None) -> None:
        self.reactor = reactor
        self.servers = servers
        self.drain_timeout = drain_timeout
        self.deadline: float | None = None  # time.monotonic() when the grace period ends
        self.stopping = False  # a first signal came
        self.second: int | None = None  # the signal that ended it at once
        self._looping = False  # reactor.run() is running: the alarm may interrupt it
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def restore(self) -> None:
        """Disarm the alarm and put the handlers back as they were."""
        signal.setitimer(signal.ITIMER_REAL, 0)
        while self._previous:
            signum, handler = self._previous.popitem()
            signal.signal(signum, handler)

    def run(self) -> None:
        """``reactor.run()``; the grace period's alarm is armed only meanwhile."""
        self._looping = True
        try:
            self.reactor.run()
        finally:
            self._looping = False
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.stopping:
            self.second = signum
            log.warning("%s again: stopping at once%s", name, self._on_the_loop("; cutting short "))
            self.restore()
            raise KeyboardInterrupt
        self.stopping = True
        grace = "no time limit" if self.drain_timeout is None else f"{self.drain_timeout:g} s"
        log.info("%s: stopping; running requests have %s to finish (a second signal ends them at once)", name, grace)
        if self.drain_timeout is not None:
            self.deadline = time.monotonic() + self.drain_timeout
            if self._looping and any(server.dispatch.inline for server in self.servers):
                # Only an inline handler can hold the loop (and no child is forked to inherit this).
                self._previous.setdefault(signal.SIGALRM, signal.signal(signal.SIGALRM, self._on_alarm))
                signal.setitimer(signal.ITIMER_REAL, max(self.drain_timeout + self.alarm_margin, 0.001))  # 0 disarms
        self.begin()

    def begin(self) -> None:
        """What the first signal does, in the handler: ``reactor.stop()`` (signal-safe).

        A worker process (reactor/worker.py) first serves what it has
        already accepted instead; the loop then ends by itself.
        """
        self.reactor.stop()

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if not self._looping:
            return  # the loop returned in time: each server_close() has the rest of the grace period
        log.warning("drain timeout (%g s) passed with the loop still busy; interrupting it%s",
                    self.drain_timeout, self._on_the_loop(": "))  # fmt: skip
        raise KeyboardInterrupt

    def _on_the_loop(self, prefix: str) -> str:
        """The requests an inline handler is running on the loop, for a log line ('' if none)."""
        if not self._looping:
            return ""
        running = [f"{server.request_table.name} #{record.id} from {describe_peer(record.peer)}"
                   for server in self.servers if server.dispatch.inline
                   for record in server.request_table.snapshot() if record.state is State.PROCESSING]  # fmt: skip
        return prefix + "; ".join(running) if running else ""

    def exit_status(self) -> int:
        """128 + the second signal's number; 0 after the grace period ran out; 130 otherwise."""
        if self.second is not None:
            return 128 + self.second
        return 0 if self.stopping else 130


def close_servers(servers: list[Any], reactor: Reactor | None = None, *, deadline: float | None = None,
                  hurry: bool = False) -> None:  # fmt: skip
    """``server_close()`` every server, in order, whatever one raises; then close ``reactor``.

    ``deadline``: a ``time.monotonic()`` time by which running requests
    must end; each server's ``drain_timeout`` becomes the time left (None:
    each keeps its own).  With ``hurry``, and for every server still to
    close once a ``server_close()`` raised KeyboardInterrupt or
    SystemExit, ``drain_timeout`` is 0: what still runs is ended at once.
    The first exception is re-raised when everything is closed; any later
    one is logged.
    """
    error: BaseException | None = None
    for server in servers:
        try:
            if hurry or (error is not None and not isinstance(error, Exception)):
                server.drain_timeout = 0
            elif deadline is not None:
                server.drain_timeout = max(0.0, deadline - time.monotonic())
            server.server_close()
        except BaseException as exc:
            if error is None:
                error = exc
            else:
                log.error("%r: server_close() failed as well", server, exc_info=exc)
    if reactor is not None:
        try:
            reactor.close()
        except BaseException as exc:
            if error is None:
                error = exc
            else:
                log.error("%r: close() failed as well", reactor, exc_info=exc)
    if error is not None:
        raise error
