"""Time in handlers: how long one server's handlers run, whatever runs them.

The loop's statistics (reactor/loopstats.py) see the loop's own thread:
its busy time includes the inline handlers, but a handler on a
``ThreadPool`` worker or in a ``Fork`` child runs elsewhere.  A
``HandlerTime`` counts, for one server, the handler runs that ended
(``runs``) and the seconds they took (``seconds``), whatever strategy
ran them:

* ``Inline``, ``ThreadPool``, ``ThreadingMixIn``: each call of the
  server's ``finish_request`` (the handler's whole run: for a framed
  handler, one message), timed with a clock read before and after;
* ``Fork``: each child's life as its parent saw it, from the fork to the
  exit the parent noticed (the child's own counts die with it).

Cost: nothing unless attached.  ``HandlerTime.attach(server)`` puts a
timing ``finish_request`` on the server *instance* (in front of the
class's, or of one the instance had); ``detach()`` by its last user takes
it away again.  Attached, a handler run costs one more Python call, two
clock reads and two additions to its thread's own counts (no lock: each
thread adds to a cell of its own, and a reader sums the cells).  A forked
child's life is added by ``Fork`` when the child ends (it tests
``server.handler_time``, which is None unless attached).  A dashboard
attaches one to every server it shows (reactor/dashboard/).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

__all__ = ["HandlerTime"]

#: The window ``rates()`` is computed over, in seconds.
WINDOW = 1.0


class HandlerTime:
    """The handler runs of one server and the seconds they took, counted while attached.

    Read ``runs`` and ``seconds`` (totals since attached) at any time, on any thread;
    ``rates()`` gives the same over about the last second.  Use
    ``HandlerTime.attach(server)`` and ``detach()``: several users of one
    server share one ``HandlerTime`` (``server.handler_time``).
    """

    def __init__(self, server: Any, clock: Callable[[], float] = time.perf_counter) -> None:
        self.server = server
        self.clock = clock
        self.users = 0
        self._cells: dict[int, list] = {}  # thread ident -> [runs, seconds] that thread counted
        self._own: Any = None  # the finish_request the instance had before us, if it had one
        self._samples: deque[tuple[float, int, float]] = deque([(clock(), 0, 0.0)])

    @property
    def runs(self) -> int:
        """Handler runs that ended since attached."""
        return sum(cell[0] for cell in list(self._cells.values()))

    @property
    def seconds(self) -> float:
        """Seconds those runs took."""
        return sum(cell[1] for cell in list(self._cells.values()))

    @classmethod
    def attach(cls, server: Any) -> "HandlerTime":
        """Time ``server``'s handlers from now on (or share the timing someone already attached)."""
        timing = server.__dict__.get("handler_time")
        if timing is None:
            timing = cls(server)
            timing._own = server.__dict__.get("finish_request")
            server.finish_request = timing._timed(server.finish_request)
            server.handler_time = timing
        timing.users += 1
        return timing

    def detach(self) -> None:
        """One user is done; the last one gives the server its own ``finish_request`` back."""
        self.users -= 1
        server = self.server
        if self.users > 0 or server.__dict__.get("handler_time") is not self:
            return
        del server.handler_time  # the class's None again
        if self._own is not None:
            server.finish_request = self._own
        else:
            server.__dict__.pop("finish_request", None)

    def _timed(self, finish_request: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        clock, cells, get_ident = self.clock, self._cells, threading.get_ident

        def timed_finish_request(request: Any, client_address: Any) -> None:
            start = clock()
            try:
                finish_request(request, client_address)
            finally:
                cell = cells.get(get_ident())  # this thread's own: no other thread writes it
                if cell is None:
                    cell = cells[get_ident()] = [0, 0.0]
                cell[0] += 1
                cell[1] += clock() - start

        return timed_finish_request

    def add(self, seconds: float) -> None:
        """Count one handler run of ``seconds`` (any thread; ``Fork`` adds a child's life)."""
        cell = self._cells.setdefault(threading.get_ident(), [0, 0.0])
        cell[0] += 1
        cell[1] += seconds

    def rates(self) -> dict[str, float]:
        """Over about the last second: ``busy`` (handlers running at once, on average: 0.5 is one
        handler half the time, 3.0 three all the time), ``runs_per_s``, and ``per_run`` (seconds
        a run took, on average; 0 with no run).  Shaped as the dashboard's HANDLERS object, with
        the totals ``runs`` and ``seconds`` since attached."""
        cells = list(self._cells.values())
        now = (self.clock(), sum(cell[0] for cell in cells), sum(cell[1] for cell in cells))
        samples = self._samples
        samples.append(now)
        while len(samples) > 2 and now[0] - samples[1][0] >= WINDOW:
            samples.popleft()  # keep one sample at least WINDOW old as the base
        base = samples[0]
        span, runs, seconds = now[0] - base[0], now[1] - base[1], now[2] - base[2]
        return {
            "busy": seconds / span if span > 0 else 0.0,
            "runs_per_s": runs / span if span > 0 else 0.0,
            "per_run": seconds / runs if runs else 0.0,
            "runs": now[1],
            "seconds": now[2],
        }

    def __repr__(self) -> str:
        name = getattr(getattr(self.server, "request_table", None), "name", "?")
        return f"<HandlerTime {name} runs={self.runs} seconds={self.seconds:.3f}>"
