"""RateLimitedLog with a hand-driven clock, and every warning a peer can repeat going through one."""

from __future__ import annotations

import errno
import logging
import socket
import threading
from typing import Any

import pytest
from conftest import CLIENT_TIMEOUT, ReactorThread, wait_for

import reactor
from reactor.ratelimit import INTERVAL, RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limited(caplog: Any) -> Any:
    caplog.set_level(logging.WARNING, logger="test.ratelimit")
    clock = Clock()
    return RateLimitedLog(logging.getLogger("test.ratelimit"), 10.0, clock), clock, caplog


def messages(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.ratelimit"]


def test_the_first_line_is_logged_then_one_per_interval_with_the_count(limited):
    log, clock, caplog = limited
    assert log.warning("drop", "dropped a reply to %r", "a") is True
    for i in range(1234):
        clock.now += 0.005  # 6.17 s in all: within the interval
        assert log.warning("drop", "dropped a reply to %r", i) is False
    assert messages(caplog) == ["dropped a reply to 'a'"] and log.held("drop") == 1234
    clock.now = 1010.0  # exactly the interval after the first line
    assert log.warning("drop", "dropped a reply to %r", "b") is True
    assert messages(caplog)[1:] == ["dropped a reply to 'b' (1234 more in the last 10.0s)"]
    assert log.held("drop") == 0
    clock.now += 9.999
    assert log.warning("drop", "dropped a reply to %r", "c") is False
    clock.now += 60.0  # a quiet minute, then one more: it says how long the count ran
    assert log.warning("drop", "dropped a reply to %r", "d") is True
    assert messages(caplog)[2:] == ["dropped a reply to 'd' (1 more in the last 70.0s)"]
    clock.now += 10.0  # nothing held back: no count
    assert log.warning("drop", "dropped a reply to %r", "e") is True
    assert messages(caplog)[3:] == ["dropped a reply to 'e'"]


def test_kinds_are_limited_separately_and_levels_kept(limited):
    log, clock, caplog = limited
    assert log.warning("a", "first a") and log.warning("b", "first b")
    assert not log.warning("a", "second a") and not log.log(logging.ERROR, "b", "second b")
    assert log.log(logging.ERROR, "c", "an error %d", 7)
    assert messages(caplog) == ["first a", "first b", "an error 7"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING, logging.ERROR]
    clock.now += 10.0
    assert log.warning("b", "third b")
    assert messages(caplog)[-1] == "third b (1 more in the last 10.0s)"


@pytest.mark.parametrize("interval", [0, -1.0, float("nan"), "10", None])
def test_a_bad_interval_is_refused(interval):
    with pytest.raises(ValueError, match="interval must be a positive number"):
        RateLimitedLog(logging.getLogger("test.ratelimit"), interval)


def test_the_default_interval_and_the_real_clock():
    log = RateLimitedLog(logging.getLogger("test.ratelimit"))
    assert log.interval == INTERVAL == 10.0 and "every 10.0s" in repr(log)


@pytest.mark.timeout(10)
def test_threads_share_one_limit(limited):
    log, clock, caplog = limited
    logged: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(500):
            outcome = log.warning("k", "line")
            with lock:
                logged.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CLIENT_TIMEOUT)
    assert logged.count(True) == 1 and log.held("k") == 1999 and messages(caplog) == ["line"]


# ------------------------------------------- what a peer can repeat, in the servers


def reactor_warnings(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "reactor" and r.levelno == logging.WARNING]


class Echo(reactor.MessageHandler):
    def handle(self) -> None:
        self.request.sendall(self.message)


@pytest.mark.timeout(30)
def test_many_connections_breaking_the_framing_log_one_line(caplog):
    caplog.set_level(logging.WARNING, logger="reactor")
    cls = type("Short", (reactor.TCPServer,), {"max_message_size": 16})
    with cls(("127.0.0.1", 0), Echo) as server:
        r = reactor.Reactor()
        r.add_server(server)
        with ReactorThread(r):
            for i in range(60):
                with socket.create_connection(server.server_address, CLIENT_TIMEOUT) as sock:
                    sock.sendall(b"x" * 100)  # no newline within max_message_size
                    try:
                        while sock.recv(100):
                            pass
                    except ConnectionResetError:
                        pass
                wait_for(lambda: server.request_table.counters.get("too_long", 0) == i + 1)
            wait_for(lambda: len(server.request_table) == 0, what="the connections to close")
    assert server.request_table.counters["too_long"] == 60
    lines = reactor_warnings(caplog)
    assert 1 <= len(lines) <= 2, f"{len(lines)} warning lines for 60 protocol errors: {lines[:3]}"


@pytest.mark.timeout(20)
def test_repeated_accept_errors_log_one_line(caplog):
    caplog.set_level(logging.WARNING, logger="reactor")
    with reactor.TCPServer(("127.0.0.1", 0), Echo) as server, reactor.Reactor() as r:
        r.add_server(server)
        admission = server._serving.admission
        for _ in range(50):  # descriptors run out, come back for one accept, run out again ...
            assert admission.accept_failed(OSError(errno.EMFILE, "Too many open files")) is True
            admission._rested()
            admission.accepted()
        assert server.request_table.counters["accept_errors"] == 50
        r.remove_server(server)
    lines = reactor_warnings(caplog)
    assert len(lines) == 1 and "accept() failed" in lines[0], lines[:3]


@pytest.mark.timeout(20)
def test_many_truncated_datagrams_log_one_line(caplog):
    caplog.set_level(logging.WARNING, logger="reactor")
    cls = type("Small", (reactor.UDPServer,), {"max_packet_size": 64})
    with cls(("127.0.0.1", 0), Echo) as server:
        r = reactor.Reactor()
        r.add_server(server)
        with ReactorThread(r), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(CLIENT_TIMEOUT)
            for i in range(100):
                client.sendto(b"y" * 100, server.server_address)
                wait_for(lambda: server.request_table.counters.get("truncated", 0) == i + 1)
    lines = reactor_warnings(caplog)
    assert len(lines) == 1 and "max_packet_size" in lines[0], lines[:3]
