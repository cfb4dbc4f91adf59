"""reactor.loop: timers (fake clock), I/O on socketpairs over every selector, stale dispatch,
threads, fileno, lifecycle, tracing and callback errors."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import select
import selectors
import signal
import socket
import threading
import time
import weakref
from typing import Any

import pytest
from conftest import CLIENT_TIMEOUT, run_until

import reactor
from reactor import Reactor


class Boom(Exception):
    pass


def boom(*args: object) -> None:
    raise Boom("raised by a callback")


def noop(*args: object) -> None:
    pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class SignallingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Sets ``blocking`` when a select() that may block forever begins."""

    def __init__(self) -> None:
        super().__init__()
        self.blocking = threading.Event()

    def select(self, timeout: float | None = None) -> list:
        if timeout is None:
            self.blocking.set()
        return super().select(timeout)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fr(clock):
    """A reactor on the fake clock (drive it with run_once(0))."""
    with Reactor(clock=clock) as r:
        yield r


@pytest.fixture(params=[selectors.SelectSelector, selectors.PollSelector, selectors.DefaultSelector], ids=lambda c: c.__name__)
def rx(request):
    """A reactor on each selector class in turn."""
    with Reactor(request.param()) as r:
        yield r


@pytest.fixture
def socks():
    """Sockets to close when the test ends, whatever happened."""
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def new_pair(socks: list, fd: int | None = None) -> tuple[socket.socket, socket.socket]:
    """A connected (watched, peer) pair; the watched end gets descriptor ``fd`` if given (it must be free)."""
    a, b = socket.socketpair()
    if fd is not None and a.fileno() != fd:
        os.dup2(a.fileno(), fd)
        a.close()
        a = socket.socket(fileno=fd)
    a.setblocking(False)
    b.settimeout(CLIENT_TIMEOUT)
    socks += [a, b]
    return a, b


@contextlib.contextmanager
def in_thread(r: Reactor, target):
    """Run ``target()`` on a thread; yield (thread, outcome: "result" or "error").  On exit,
    a thread the code under test failed to wake is unblocked through a spare socket."""
    rescue, poke = socket.socketpair()
    r.add_reader(rescue, rescue.recv, 1)
    outcome: dict = {}

    def main() -> None:
        try:
            outcome["result"] = target()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=main, name="test loop")
    thread.start()
    try:
        yield thread, outcome
    finally:
        if thread.is_alive():
            r.stop()
            poke.send(b"!")
        thread.join(CLIENT_TIMEOUT)
        r.remove_reader(rescue)
        rescue.close()
        poke.close()


# ------------------------------------------------------------------ timers


def test_timers_run_in_deadline_order(fr, clock):
    ran: list[str] = []
    assert fr.call_later(3, ran.append, "third").when == clock.now + 3
    fr.call_at(clock.now + 1, ran.append, "first")
    fr.call_later(2, ran.append, "second")
    fr.call_later(1, ran.append, "first-too")  # same deadline, scheduled later
    assert fr.run_once(0) == 0 and ran == []
    clock.now += 1
    assert fr.run_once(0) == 2 and ran == ["first", "first-too"]
    clock.now += 5
    assert fr.run_once(0) == 2 and ran == ["first", "first-too", "second", "third"]


@pytest.mark.parametrize("count", [2, 7, 40])
def test_equal_deadlines_run_in_scheduling_order(fr, clock, count):
    ran: list = []
    fr.call_later(5, ran.append, "later")  # another deadline in the heap
    for i in range(count):
        fr.call_at(clock.now + 1, ran.append, i) if i % 2 else fr.call_later(1, ran.append, i)
    clock.now += 1
    fr.run_once(0)
    assert ran == list(range(count))


def test_cancelled_callbacks_never_run(fr, clock):
    ran: list[str] = []
    fr.call_later(1, ran.append, "kept")
    for handle in fr.call_later(1, ran.append, "timer"), fr.call_later(0.5, ran.append, "early"), fr.call_soon(ran.append, "soon"):
        handle.cancel()
        handle.cancel()  # idempotent
    clock.now += 10
    assert (fr.run_once(0), fr.run_once(0), ran) == (1, 0, ["kept"])


@pytest.mark.parametrize("how", ["call_soon", "call_later", "call_at"])
def test_callbacks_run_on_the_next_iteration_and_once(fr, how):
    schedule = {
        "call_soon": fr.call_soon,
        "call_later": lambda cb, *args: fr.call_later(0, cb, *args),
        "call_at": lambda cb, *args: fr.call_at(fr.time(), cb, *args),
    }[how]
    ran: list[int] = []

    def chain(n: int) -> None:  # what a callback queues waits for the following iteration
        ran.append(n)
        if n < 3:
            schedule(chain, n + 1)

    fr.call_soon(chain, 1)
    assert ran == []
    for expected, count in (([1], 1), ([1, 2], 1), ([1, 2, 3], 1), ([1, 2, 3], 0)):
        assert fr.run_once(0) == count and ran == expected


def test_next_timeout(fr, clock):
    assert fr.next_timeout() is None
    far, near = fr.call_later(5, noop), fr.call_later(2, noop)
    assert fr.next_timeout() == pytest.approx(2)
    clock.now += 0.5
    assert fr.next_timeout() == pytest.approx(1.5)
    near.cancel()
    assert fr.next_timeout() == pytest.approx(4.5)  # the cancelled timer is skipped
    fr.call_soon(noop)
    assert fr.next_timeout() == 0
    fr.run_once(0)
    assert fr.next_timeout() == pytest.approx(4.5)
    clock.now += 10
    assert fr.next_timeout() == 0  # overdue
    far.cancel()
    assert fr.next_timeout() is None


# -------------------------------------------------------------------- I/O


def test_reader_runs_when_readable_and_replacing_it_cancels_the_old_handle(rx, socks):
    a, b = new_pair(socks)
    got: list = []
    old = rx.add_reader(a, got.append, "old")
    new = rx.add_reader(a, lambda tag: got.append((tag, a.recv(16))), "new")
    assert old.cancelled and not new.cancelled
    assert rx.run_once(0) == 0 and got == []
    b.send(b"ping")
    run_until(rx, lambda: got)
    assert got == [("new", b"ping")]


def test_writer_runs_only_while_there_is_buffer_space(rx, socks):
    a, b = new_pair(socks)
    calls: list[str] = []
    rx.add_writer(a, calls.append, "writable")
    assert rx.run_once(0) == 1 and calls == ["writable"]
    sent = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            sent += a.send(b"x" * 65536)
    calls.clear()
    assert rx.run_once(0) == 0 and calls == []
    while sent:
        sent -= len(b.recv(1 << 20))
    run_until(rx, lambda: calls)


@pytest.mark.parametrize("how", ["remove", "cancel"])
@pytest.mark.parametrize("slot", ["reader", "writer"])
def test_unwatching(rx, socks, slot, how):
    a, b = new_pair(socks)
    add, remove = getattr(rx, f"add_{slot}"), getattr(rx, f"remove_{slot}")
    calls: list[str] = []
    assert remove(a) is False
    handle = add(a, calls.append, slot)
    assert (rx.remove_writer if slot == "reader" else rx.remove_reader)(a) is False
    if how == "remove":
        assert remove(a) is True
    else:
        handle.cancel()  # documented as the same as remove_<slot>()
    b.send(b"x")
    assert rx.run_once(0) == 0 and calls == []
    with pytest.raises(KeyError):  # else select() keeps returning at once and run() spins
        rx.selector.get_key(a)
    assert remove(a) is False


def test_reader_and_writer_on_one_fd(rx, socks):
    a, b = new_pair(socks)
    seen: list = []
    rx.add_reader(a, lambda: seen.append(a.recv(16)))
    rx.add_writer(a, seen.append, "write")
    assert rx.selector.get_key(a).events == selectors.EVENT_READ | selectors.EVENT_WRITE
    b.send(b"hi")
    assert rx.run_once(0) == 2 and sorted(seen, key=repr) == sorted([b"hi", "write"], key=repr)
    assert rx.remove_writer(a) is True
    b.send(b"again")
    assert rx.run_once(0) == 1 and seen[2:] == [b"again"]


# ------------------------------------------------ stale dispatch (cpython#75114)


@pytest.mark.parametrize("interfere", [False, True], ids=["control", "removes-other"])
def test_reader_removed_earlier_in_the_iteration_does_not_run(rx, socks, interfere):
    pairs = [new_pair(socks), new_pair(socks)]
    calls: list[int] = []

    def on_read(i: int) -> None:
        calls.append(i)
        pairs[i][0].recv(16)
        if interfere:
            rx.remove_reader(pairs[1 - i][0])  # whichever runs first removes the other

    for i, (a, b) in enumerate(pairs):
        rx.add_reader(a, on_read, i)
        b.send(b"x")
    rx.run_once(0)
    assert len(calls) == (1 if interfere else 2)


@pytest.mark.parametrize("change", ["remove", "replace"])
def test_writer_changed_by_the_reader_of_its_fd(rx, socks, change):
    a, b = new_pair(socks)
    calls: list[str] = []
    new_writer = (lambda: rx.remove_writer(a)) if change == "remove" else (lambda: rx.add_writer(a, calls.append, "new"))
    rx.add_reader(a, lambda: (calls.append(a.recv(16).decode()), new_writer()))
    rx.add_writer(a, calls.append, "old")
    b.send(b"read")
    rx.run_once(0)
    rx.run_once(0)
    assert calls[0] == "read" and "old" not in calls and ("new" in calls) == (change == "replace")


@pytest.mark.parametrize("remove_first", [True, False], ids=["remove-then-close", "close-without-remove"])
def test_old_callback_never_runs_for_a_reused_fd(rx, socks, remove_first):
    pairs = [new_pair(socks), new_pair(socks)]
    calls: list = []

    def on_read(i: int) -> None:
        calls.append(i)
        rx.remove_reader(pairs[i][0])
        victim = pairs[1 - i][0]
        fd = victim.fileno()
        if remove_first:
            assert rx.remove_reader(victim)
        victim.close()
        new, peer = new_pair(socks, fd=fd)  # the same descriptor number, readable at once
        peer.send(b"new")
        rx.add_reader(new, lambda: calls.append(("new", new.recv(16))))

    for i, (a, b) in enumerate(pairs):
        rx.add_reader(a, on_read, i)
        b.send(b"old")
    rx.run_once(0)
    assert calls in ([0], [1])  # neither the other's old callback nor (yet) the new one
    run_until(rx, lambda: len(calls) > 1, timeout=2.0)  # the new registration does work
    assert calls[1:] == [("new", b"new")]


# ------------------------------------------------------------------ threads


@pytest.mark.timeout(10)
def test_call_soon_threadsafe_wakes_a_blocked_run_once():
    with Reactor(SignallingSelector()) as r:
        ran_on: list[int] = []
        with in_thread(r, lambda: r.run_once(None)) as (thread, outcome):
            assert r.selector.blocking.wait(CLIENT_TIMEOUT)
            r.call_soon_threadsafe(lambda: ran_on.append(threading.get_ident()))
            thread.join(CLIENT_TIMEOUT)
            assert not thread.is_alive(), "run_once(None) still blocked after call_soon_threadsafe()"
        assert "error" not in outcome and ran_on == [thread.ident]


@pytest.mark.timeout(10)
def test_stop_before_run_makes_run_return_at_once():
    with Reactor() as r:
        r.stop()
        with in_thread(r, r.run) as (thread, outcome):
            thread.join(CLIENT_TIMEOUT)
            assert not thread.is_alive(), "run() ignored the stop() that came before it"
        assert "error" not in outcome


@pytest.mark.timeout(10)
def test_stop_from_another_thread_ends_run_and_run_can_run_again():
    with Reactor(SignallingSelector()) as r:
        for attempt in range(2):
            r.selector.blocking.clear()
            ran: list[int] = []
            r.call_soon(ran.append, attempt)
            with in_thread(r, r.run) as (thread, outcome):
                assert r.selector.blocking.wait(CLIENT_TIMEOUT)
                r.stop()
                thread.join(CLIENT_TIMEOUT)
                assert not thread.is_alive(), f"run() #{attempt + 1} did not return after stop()"
            assert "error" not in outcome and ran == [attempt]


@pytest.mark.timeout(10)
def test_callbacks_queued_before_stop_still_run():
    with Reactor(SignallingSelector()) as r:
        ran: list[int] = []
        with in_thread(r, r.run) as (thread, outcome):
            assert r.selector.blocking.wait(CLIENT_TIMEOUT)
            for n in range(50):
                r.call_soon_threadsafe(ran.append, n)
            r.stop()
            thread.join(CLIENT_TIMEOUT)
            assert not thread.is_alive()
        assert "error" not in outcome and ran == list(range(50))


def test_stop_does_not_make_a_hand_stepped_reactor_spin():
    with Reactor() as r:
        r.stop()  # nobody is in run(): a foreign loop following next_timeout() must not spin
        assert r.next_timeout() is None
        r.call_later(3.0, lambda: None)
        assert 2.0 < r.next_timeout() <= 3.0


# ------------------------------------------------------- fileno, lifecycle


def test_fileno_is_readable_while_io_is_ready(socks):
    with Reactor() as r:
        fd = r.fileno()
        assert isinstance(r.selector, selectors.DefaultSelector) and isinstance(fd, int) and fd >= 0
        a, b = new_pair(socks)
        got: list[bytes] = []
        r.add_reader(a, lambda: got.append(a.recv(16)))
        assert select.select([fd], [], [], 0)[0] == []
        b.send(b"x")
        assert select.select([fd], [], [], CLIENT_TIMEOUT)[0] == [fd]
        assert r.run_once(0) == 1 and got == [b"x"]
        assert select.select([fd], [], [], 0)[0] == []


@pytest.mark.parametrize("cls", [selectors.SelectSelector, selectors.PollSelector], ids=lambda c: c.__name__)
def test_fileno_needs_a_selector_with_a_descriptor(cls):
    with Reactor(cls()) as r, pytest.raises(reactor.UsageError):
        r.fileno()


def test_two_reactors_are_independent(socks):
    with Reactor() as r1, Reactor() as r2:
        ran: list = []
        r1.call_soon(ran.append, "r1")
        r2.call_soon(ran.append, "r2")
        a, b = new_pair(socks)
        r1.add_reader(a, lambda: ran.append(a.recv(8)))
        b.send(b"io")
        assert r2.run_once(0) == 1 and ran == ["r2"]
        assert r1.run_once(CLIENT_TIMEOUT) == 2 and sorted(ran[1:], key=repr) == sorted([b"io", "r1"], key=repr)
        r1.close()
        r2.call_soon(ran.append, "r2 again")
        assert r2.run_once(0) == 1 and ran[-1] == "r2 again"


CLOSED_CALLS = {
    "add_reader": lambda r, s: r.add_reader(s, noop),
    "add_writer": lambda r, s: r.add_writer(s, noop),
    "call_soon": lambda r, s: r.call_soon(noop),
    "call_later": lambda r, s: r.call_later(1, noop),
    "call_at": lambda r, s: r.call_at(0, noop),
    "run_once": lambda r, s: r.run_once(0),
    "run": lambda r, s: r.run(),
}


@pytest.mark.parametrize("call", CLOSED_CALLS.values(), ids=CLOSED_CALLS.keys())
def test_closed_reactor_refuses_work(socks, call):
    a, _ = new_pair(socks)
    r = Reactor()
    r.add_reader(a, noop)
    r.close()
    r.close()  # idempotent
    assert r.closed and r.remove_reader(a) is False
    with pytest.raises(reactor.ClosedError):
        call(r, a)


def test_with_block_closes_the_reactor_and_its_descriptors():
    with Reactor() as r:
        fd = r.fileno()
        assert not r.closed
    assert r.closed
    with pytest.raises(OSError):  # the selector's descriptor; no_leaks checks the wakeup pair
        os.fstat(fd)


# ------------------------------------------------------------ trace, errors


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO], ids=["DEBUG", "INFO"])
def test_trace_logs_wakeups_only_at_debug(caplog, socks, level):
    caplog.set_level(level, logger="reactor.trace")
    a, b = new_pair(socks)
    with Reactor() as r:
        r.add_reader(a, a.recv, 16)
        b.send(b"x")
        assert r.run_once(CLIENT_TIMEOUT) == 1
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "reactor.trace"]
    woke = re.compile(rf"loop woke .*\bfd {a.fileno()} read\b")
    assert any(woke.search(line) for line in lines) if level == logging.DEBUG else lines == []


class _Owner:
    def __repr__(self) -> str:
        return "<the owner>"

    def tick(self) -> None:
        pass


def test_trace_names_each_timer_that_fires(caplog, clock, fr):
    caplog.set_level(logging.DEBUG, logger="reactor.trace")
    fr.call_later(1, _Owner().tick)
    fr.call_later(1, boom).cancel()
    clock.now += 2
    fr.run_once(0)
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "reactor.trace"]
    assert lines == ["timer fired: _Owner.tick on <the owner> (due 1.000s ago)"]


SOURCES = {
    "call_soon": lambda r, a, b: r.call_soon(boom),
    "timer": lambda r, a, b: r.call_later(0, boom),
    "reader": lambda r, a, b: (r.add_reader(a, boom), b.send(b"x")),
    "writer": lambda r, a, b: r.add_writer(a, boom),
}


@pytest.mark.parametrize("source", SOURCES.values(), ids=SOURCES.keys())
def test_a_callback_that_raises_is_logged_once_and_the_loop_goes_on(caplog, fr, socks, source):
    a, b = new_pair(socks)
    source(fr, a, b)
    ran: list[str] = []
    fr.call_soon(ran.append, "queued")
    fr.run_once(0)  # does not raise
    fr.remove_reader(a)
    fr.remove_writer(a)
    assert ran == ["queued"]  # the other callbacks of the same iteration ran
    errors = [rec for rec in caplog.records if rec.name == "reactor" and rec.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "boom" in errors[0].getMessage() and errors[0].exc_info[0] is Boom  # the callback named, with its traceback
    fr.call_soon(ran.append, "new")
    fr.run_once(0)
    assert ran == ["queued", "new"]  # the reactor still works


@pytest.mark.timeout(10)
@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_still_leave_run_once(fr, error):
    def stop_now() -> None:
        raise error()

    fr.call_soon(stop_now)
    with pytest.raises(error):
        fr.run_once(0)


@pytest.mark.timeout(10)
def test_a_timer_that_raises_does_not_stop_run_or_its_servers(caplog, fr):
    def divide() -> None:
        1 / 0

    fr.call_soon(divide)
    ran: list[int] = []
    fr.call_soon(ran.append, 1)
    fr.call_later(0, fr.stop)
    with in_thread(fr, fr.run) as (thread, outcome):
        thread.join(CLIENT_TIMEOUT)
        assert not thread.is_alive(), "run() did not stop"
    assert "error" not in outcome and ran == [1]
    [record] = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert record.exc_info[0] is ZeroDivisionError and "divide" in record.getMessage()


@pytest.mark.timeout(10)
def test_service_actions_that_raise_are_logged_and_other_servers_go_on(caplog, places):
    class Faulty(reactor.TCPServer):
        def service_actions(self) -> None:
            raise ValueError("faulty")

    with Reactor() as r, Faulty(("127.0.0.1", 0), reactor.BaseRequestHandler) as bad, \
            reactor.TCPServer(("127.0.0.1", 0), _Echo) as good:
        r.add_server(bad, poll_interval=0.01)
        r.add_server(good)
        with socket.create_connection(good.server_address, timeout=CLIENT_TIMEOUT) as client:
            client.sendall(b"hi\n")
            client.shutdown(socket.SHUT_WR)
            done: list[bytes] = []

            def read() -> None:
                done.append(client.recv(100))

            deadline = time.monotonic() + CLIENT_TIMEOUT
            client.setblocking(False)
            while not done and time.monotonic() < deadline:
                r.run_once(0.05)
                try:
                    read()
                except BlockingIOError:
                    pass
        assert done == [b"hi\n"]
    assert any("service_actions() raised" in rec.getMessage() for rec in caplog.records)


class _Echo(reactor.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


# ------------------------------------------------------- long and bad timeouts


class RecordingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Remembers the timeout each select() was asked for, and never waits."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def select(self, timeout: float | None = None) -> list:
        self.timeouts.append(timeout)
        return super().select(0)


@pytest.mark.parametrize("delay", [30 * 86400, 1e10, float("inf")])
def test_a_timer_months_away_does_not_overflow_select(delay):
    selector = RecordingSelector()
    with Reactor(selector) as r:
        r.call_later(delay, noop)
        r.run_once()
    # epoll takes milliseconds in a C int: 30 days raised OverflowError in serve_forever().
    assert selector.timeouts == [reactor.loop.MAX_SELECT_TIMEOUT]
    assert reactor.loop.MAX_SELECT_TIMEOUT * 1000 < 2**31 - 1


def test_a_nan_timer_is_refused(fr):
    with pytest.raises(reactor.UsageError):
        fr.call_later(float("nan"), noop)
    with pytest.raises(reactor.UsageError):
        fr.call_at(float("nan"), noop)


# ------------------------------------------------------- cancelled timers


class _Payload:
    """Something a callback's arguments point at."""


def test_a_cancelled_timer_lets_go_of_its_callback_and_arguments(fr):
    payload = _Payload()
    gone = weakref.ref(payload)
    fr.call_later(3600, noop)  # a long timer at the head: the heap is not pruned from the head
    timer = fr.call_later(7200, noop, payload)
    del payload
    timer.cancel()
    gc.collect()
    assert gone() is None, "the cancelled timer still holds its arguments"


def test_the_heap_is_rebuilt_when_most_of_it_is_cancelled(fr, clock):
    fr.call_later(3600, noop)  # stays at the head
    timers = [fr.call_later(7200 + i, noop) for i in range(1000)]
    for timer in timers[:900]:
        timer.cancel()
    fr.run_once(0)
    assert len(fr._timers) == 101  # the head and the 100 live ones
    fired: list[int] = []
    fr.call_later(1, fired.append, 1)
    clock.now += 2
    fr.run_once(0)
    assert fired == [1]  # a rebuilt heap is still a heap


@pytest.mark.timeout(20)
def test_a_signal_taken_by_another_thread_still_wakes_run():
    # The kernel may hand a process's signal to any thread; Python runs the
    # handler in the main thread only.  run() sleeps in select() with no
    # timeout here (nothing is planned), and must not sleep through it.
    assert threading.current_thread() is threading.main_thread()
    handled: list[str] = []
    selector = SignallingSelector()
    with Reactor(selector) as r:

        def on_usr1(signum: int, frame: Any) -> None:
            handled.append(threading.current_thread().name)
            r.stop()

        def signal_from_a_thread() -> None:
            assert selector.blocking.wait(CLIENT_TIMEOUT)  # the loop is going to sleep for good
            for _ in range(100):  # delivered to this thread, until the loop notices (bounded)
                signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
                if done.wait(0.05):
                    return

        done = threading.Event()
        previous = signal.signal(signal.SIGUSR1, on_usr1)
        thread = threading.Thread(target=signal_from_a_thread, name="signaller")
        thread.start()
        try:
            r.run()
        finally:
            done.set()
            thread.join(5)
            signal.signal(signal.SIGUSR1, previous)
        assert handled and set(handled) == {"MainThread"}
        assert signal.set_wakeup_fd(-1) == -1  # run() gave the wakeup fd back


class _Labelled:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_readable(self, sock: socket.socket) -> None:
        self.seen.append(len(sock.recv(100)))

    def trace_label(self, fd: int, sock: socket.socket) -> str:
        return f"my socket (fd {fd} is {sock.fileno()})"


def test_the_trace_names_whose_descriptor_woke_the_loop(caplog, socks):
    caplog.set_level(logging.DEBUG, logger="reactor.trace")
    a, b = new_pair(socks)
    c, d = new_pair(socks)
    owner = _Labelled()
    with Reactor() as r:
        r.add_reader(a, owner.on_readable, a)
        r.add_reader(c, lambda: c.recv(100))
        b.send(b"x")
        d.send(b"y")
        r.call_soon_threadsafe(noop)  # another thread's post: a wakeup, explained when it runs
        r.run_once(CLIENT_TIMEOUT)
        r.run_once(0)
    lines = " | ".join(rec.getMessage() for rec in caplog.records if rec.name == "reactor.trace")
    assert f"my socket (fd {a.fileno()} is {a.fileno()}) read" in lines  # its owner's trace_label
    assert f"fd {c.fileno()} read" in lines  # no label: the number
    assert "wakeup read" in lines and "posted by another thread: noop" in lines
