"""Time in handlers (reactor/handlertime.py): counted per server under every strategy, free when off.

Real servers of the four families, classic and framed handlers that take
PAUSE seconds each, run inline, on a thread pool and in forked children;
the loop runs on the test's thread (a fork must not copy a loop thread).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import pytest
from conftest import CLIENT_TIMEOUT, FAMILIES, FOUR_FAMILIES, family_params, run_until

import reactor
from handlers.datagram import DatagramRequestHandler
from handlers.message import MessageHandler
from handlers.stream import StreamRequestHandler
from reactor.handlertime import HandlerTime

#: Seconds each handler here takes (a sleep: it can last longer, never less).
PAUSE = 0.05
#: Requests per case.
REQUESTS = 2


class SlowFramed(MessageHandler):
    def handle(self) -> None:
        time.sleep(PAUSE)
        self.wfile.write(self.message)


class SlowStream(StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        time.sleep(PAUSE)
        self.wfile.write(line)


class SlowDatagram(DatagramRequestHandler):
    def handle(self) -> None:
        time.sleep(PAUSE)
        self.wfile.write(self.packet)


STRATEGIES = {"inline": reactor.Inline, "threads": lambda: reactor.ThreadPool(2), "fork": lambda: reactor.Fork(2)}


def ask(r: reactor.Reactor, name: str, server: Any, places: Any) -> None:
    """One request from a new client, answered while ``r`` runs here."""
    _, family, kind = FAMILIES[name]
    with socket.socket(family, kind) as client:
        client.settimeout(CLIENT_TIMEOUT)
        own = None
        if kind == socket.SOCK_STREAM:
            client.connect(server.server_address)
            client.sendall(b"ping\n")
            client.shutdown(socket.SHUT_WR)  # a forked child holds a copy of this socket: EOF by shutdown
        else:
            if family == socket.AF_UNIX:
                own = places.path("cli")
                client.bind(own)
            client.sendto(b"ping\n", server.server_address)
        client.setblocking(False)
        got = bytearray()

        def answered() -> bool:
            try:
                got.extend(client.recv(100))
            except BlockingIOError:
                pass
            return got == b"ping\n"

        try:
            run_until(r, answered)
        finally:
            if own:
                os.unlink(own)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("style", ["framed", "classic"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("name", family_params(FOUR_FAMILIES))
def test_handler_time_is_counted_under_every_strategy(places: Any, name: str, strategy: str, style: str) -> None:
    stream = FAMILIES[name][2] == socket.SOCK_STREAM
    handler = SlowFramed if style == "framed" else (SlowStream if stream else SlowDatagram)
    server = places.make_server(name, handler, dispatch=STRATEGIES[strategy]())
    try:
        with reactor.Reactor() as r:
            r.add_server(server)
            timing = HandlerTime.attach(server)
            for _ in range(REQUESTS):
                ask(r, name, server, places)
            run_until(r, lambda: timing.runs == REQUESTS)  # a child's run is counted when it is reaped
            rates = timing.rates()
            timing.detach()
            r.remove_server(server)
    finally:
        server.server_close()
    assert timing.runs == REQUESTS and rates["runs"] == REQUESTS
    assert REQUESTS * PAUSE <= timing.seconds < REQUESTS * (PAUSE + 2.0), timing
    assert rates["seconds"] == timing.seconds and rates["per_run"] >= PAUSE
    assert rates["busy"] > 0 and rates["runs_per_s"] > 0


@pytest.mark.timeout(10)
def test_without_timing_the_server_is_untouched_and_detaching_gives_it_back(places: Any) -> None:
    server = places.make_server("tcp4", SlowFramed)
    try:
        assert server.handler_time is None and "finish_request" not in vars(server)
        first = HandlerTime.attach(server)
        second = HandlerTime.attach(server)  # a second user shares it
        assert first is second is server.handler_time and first.users == 2
        assert "finish_request" in vars(server)
        first.detach()
        assert server.handler_time is first and "finish_request" in vars(server)  # one user is left
        second.detach()
        assert server.handler_time is None and "finish_request" not in vars(server)

        calls = []

        def own_finish_request(request: Any, client_address: Any) -> None:
            calls.append(request)

        server.finish_request = own_finish_request  # an instance's own is timed, then given back
        timing = HandlerTime.attach(server)
        server.finish_request("request", None)
        assert calls == ["request"] and timing.runs == 1
        timing.detach()
        assert server.finish_request is own_finish_request
    finally:
        server.server_close()


class Failing(MessageHandler):
    def handle(self) -> None:
        raise ValueError("the handler failed")


@pytest.mark.timeout(10)
def test_a_handler_that_raises_is_timed_too(places: Any) -> None:
    server = places.make_server("tcp4", Failing)
    server.handle_error = lambda request, client_address: None  # expected: keep the output quiet
    try:
        with reactor.Reactor() as r, socket.create_connection(server.server_address, CLIENT_TIMEOUT) as client:
            r.add_server(server)
            timing = HandlerTime.attach(server)
            client.sendall(b"ping\n")
            run_until(r, lambda: server.request_table.totals["failed"] == 1)
            assert timing.runs == 1 and timing.seconds > 0
            timing.detach()
            r.remove_server(server)
    finally:
        server.server_close()


@pytest.mark.timeout(20)
def test_runs_counted_on_many_threads_at_once_are_all_there(places: Any) -> None:
    server = places.make_server("tcp4", SlowFramed)
    try:
        server.finish_request = lambda request, client_address: None  # a handler that takes no time
        timing = HandlerTime.attach(server)
        each = 20_000

        def run() -> None:
            for _ in range(each):
                server.finish_request(None, None)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        timing.add(0.5)  # a child's life, added by the loop's thread
        assert timing.runs == 4 * each + 1 and timing.seconds >= 0.5
        timing.detach()
    finally:
        server.server_close()
