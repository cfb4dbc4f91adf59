"""Serving: shutdown in every situation, many servers per reactor, foreign loops."""

from __future__ import annotations

import asyncio
import select
import selectors
import socket
import threading
import time

import pytest
from conftest import (
    CLIENT_TIMEOUT,
    FAMILIES,
    FOUR_FAMILIES,
    ReactorThread,
    ServingThread,
    client_exchange,
    family_params,
    run_until,
    wait_for,
)

import reactor
from handlers.echo import DatagramEcho, StreamLineEcho


def echo_handler(name: str) -> type:
    return StreamLineEcho if FAMILIES[name][2] == socket.SOCK_STREAM else DatagramEcho


# ---------------------------------------------------------------- shutdown


@pytest.mark.timeout(10)
def test_shutdown_wakes_the_loop_at_once(places):
    server = places.make_server("tcp4", StreamLineEcho)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 30})
    thread.start()
    try:
        assert client_exchange("tcp4", server.server_address, b"up\n") == b"up\n"  # the loop is running
        started = time.monotonic()
        server.shutdown()
        latency = time.monotonic() - started
        thread.join(CLIENT_TIMEOUT)
    finally:
        server.server_close()
    assert not thread.is_alive()
    # The stdlib would take up to poll_interval (30 s) here.
    assert latency < 1.0, f"shutdown took {latency:.3f}s"


@pytest.mark.timeout(10)
def test_shutdown_before_serve_forever_returns_at_once(places):
    with places.make_server("udp4", DatagramEcho) as server:
        server.shutdown()  # nobody serves yet: must not wait
        server.serve_forever()  # returns at once: the shutdown is honoured
        # ...and only once: serving works again afterwards.
        with ServingThread(server, close=False):
            assert client_exchange("udp4", server.server_address, b"again\n") == b"again\n"


@pytest.mark.timeout(10)
def test_shutdown_from_inside_a_handler_does_not_deadlock(places):
    returned = threading.Event()

    class Stopper(reactor.StreamRequestHandler):
        def handle(self):
            self.server.shutdown()  # on the loop's own thread
            returned.set()
            self.wfile.write(b"stopping\n")

    with places.make_server("unix", Stopper) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        assert client_exchange("unix", server.server_address, b"") == b"stopping\n"
        thread.join(CLIENT_TIMEOUT)
        assert not thread.is_alive()
    assert returned.is_set()


@pytest.mark.timeout(10)
def test_shutdown_from_service_actions(places):
    class Server(reactor.TCPServer):
        ticks = 0

        def service_actions(self):
            self.ticks += 1
            if self.ticks == 3:
                self.shutdown()

    with places.make_server("tcp4", StreamLineEcho, cls=Server) as server:
        server.serve_forever(poll_interval=0.01)  # this thread is the loop: must return
    assert server.ticks == 3


@pytest.mark.timeout(10)
def test_serve_forever_can_run_again_after_shutdown(places):
    with places.make_server("unix-dgram", DatagramEcho) as server:
        for round in range(3):
            with ServingThread(server, close=False) as s:
                payload = f"round {round}\n".encode()
                assert client_exchange("unix-dgram", s.server_address, payload, places) == payload
    assert server.request_table.totals["finished"] == 3


@pytest.mark.timeout(20)
def test_many_concurrent_shutdowns(places):
    servers = [places.make_server("tcp4", StreamLineEcho) for _ in range(20)]
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.01}) for s in servers]
    for thread, server in zip(threads, servers):
        thread.start()
        server.shutdown()  # races serve_forever's start on purpose (stdlib issue #2302)
    for thread, server in zip(threads, servers):
        thread.join(CLIENT_TIMEOUT)
        assert not thread.is_alive()
        server.server_close()


@pytest.mark.timeout(10)
def test_a_server_shut_down_while_unserved_is_served_when_added_to_a_reactor(places):
    with places.make_server("tcp4", StreamLineEcho) as server, reactor.Reactor() as r:
        server.shutdown()  # nobody serves it: returns at once
        r.add_server(server)
        with ReactorThread(r, close=False):
            assert client_exchange("tcp4", server.server_address, b"served\n") == b"served\n"


def test_service_actions_wake_the_loop_only_when_overridden(places):
    class Busy(reactor.TCPServer):
        def service_actions(self):
            pass

    with places.make_server("tcp4", StreamLineEcho) as plain, places.make_server("tcp4", StreamLineEcho, cls=Busy) as busy:
        with reactor.Reactor() as r:
            r.add_server(plain)
            assert r.next_timeout() is None  # nothing to do: sleep until I/O
            r.add_server(busy, poll_interval=0.25)
            assert 0 < r.next_timeout() <= 0.25


@pytest.mark.timeout(10)
def test_overridden_service_actions_run_while_idle(places):
    class Counting(reactor.UDPServer):
        ticks = 0

        def service_actions(self):
            self.ticks += 1

    with places.make_server("udp4", DatagramEcho, cls=Counting) as server, reactor.Reactor() as r:
        r.add_server(server, poll_interval=0.01)
        run_until(r, lambda: server.ticks >= 5)  # no traffic at all


def test_usage_errors(places):
    with places.make_server("tcp4", StreamLineEcho) as server, reactor.Reactor() as r:
        r.add_server(server)
        with pytest.raises(reactor.UsageError):
            r.add_server(server)
        with pytest.raises(reactor.UsageError):
            server.serve_forever()
        with pytest.raises(reactor.UsageError):
            server.handle_request()
        with reactor.Reactor() as other, pytest.raises(reactor.UsageError):
            other.add_server(server)
        assert r.remove_server(server) is True
        assert r.remove_server(server) is False


# -------------------------------------------------- many servers, one loop


SELECTORS = [selectors.SelectSelector, selectors.PollSelector, selectors.DefaultSelector]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("selector", SELECTORS, ids=lambda cls: cls.__name__)
def test_four_families_in_one_reactor(selector, places):
    servers = {name: places.make_server(name, echo_handler(name)) for name in FOUR_FAMILIES}
    with reactor.Reactor(selector()) as r:
        for server in servers.values():
            r.add_server(server)
        assert len(r.servers) == 4
        with ReactorThread(r):
            replies = {}
            clients = [
                threading.Thread(
                    target=lambda n=name, s=server: replies.__setitem__(
                        n, client_exchange(n, s.server_address, f"via {n}\n".encode(), places)
                    )
                )
                for name, server in servers.items()
            ]
            for c in clients:
                c.start()
            for c in clients:
                c.join(CLIENT_TIMEOUT)
    for server in servers.values():
        server.server_close()
    assert replies == {name: f"via {name}\n".encode() for name in FOUR_FAMILIES}


@pytest.mark.timeout(20)
def test_shutdown_on_a_shared_reactor_stops_only_that_server(places):
    a = places.make_server("tcp4", StreamLineEcho)
    b = places.make_server("udp4", DatagramEcho)
    with reactor.Reactor() as r, a, b:
        r.add_server(a)
        r.add_server(b)
        with ReactorThread(r, close=False):
            a.shutdown()  # from another thread: does not wait, does not stop the reactor
            wait_for(lambda: a not in r.servers, what="the reactor to drop a")
            assert r.servers == (b,)
            assert client_exchange("udp4", b.server_address, b"still here\n") == b"still here\n"
        assert a.reactor is None
        r.add_server(a)  # a shut-down server can be served again
        with ReactorThread(r):
            assert client_exchange("tcp4", a.server_address, b"back\n") == b"back\n"


@pytest.mark.timeout(20)
def test_two_reactors_in_one_process(places):
    a = places.make_server("unix", StreamLineEcho)
    b = places.make_server("unix", StreamLineEcho)
    with reactor.Reactor() as ra, reactor.Reactor() as rb, a, b:
        ra.add_server(a)
        rb.add_server(b)
        with ReactorThread(ra), ReactorThread(rb):
            assert client_exchange("unix", a.server_address, b"a\n") == b"a\n"
            assert client_exchange("unix", b.server_address, b"b\n") == b"b\n"
    assert a.request_table.totals["opened"] == 1 and b.request_table.totals["opened"] == 1


@pytest.mark.timeout(20)
def test_select_over_several_servers_fileno_and_handle_request(places):
    """The stdlib's own pattern: one select() over servers, handle_request() the ready one."""
    servers = [places.make_server(name, echo_handler(name)) for name in FOUR_FAMILIES]
    replies = {}

    def clients():
        for name, server in zip(FOUR_FAMILIES, servers):
            replies[name] = client_exchange(name, server.server_address, f"{name}\n".encode(), places)

    thread = threading.Thread(target=clients)
    thread.start()
    deadline = time.monotonic() + CLIENT_TIMEOUT
    while len(replies) < len(servers) and time.monotonic() < deadline:
        ready, _, _ = select.select(servers, [], [], 0.1)
        for server in ready:
            server.handle_request()
    thread.join(CLIENT_TIMEOUT)
    for server in servers:
        server.server_close()
    assert replies == {name: f"{name}\n".encode() for name in FOUR_FAMILIES}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", family_params(FOUR_FAMILIES))
def test_reactor_driven_by_asyncio_through_fileno(name, places):
    """A foreign loop watches reactor.fileno() and calls run_once(0) when it is readable."""
    server = places.make_server(name, echo_handler(name))

    async def main(r):
        loop = asyncio.get_running_loop()
        loop.add_reader(r.fileno(), r.run_once, 0)
        try:
            payload = f"asyncio drives {name}\n".encode()
            # The client is a plain blocking one in a worker thread; the
            # reactor runs only when asyncio sees its descriptor readable.
            reply = await asyncio.wait_for(
                loop.run_in_executor(None, client_exchange, name, server.server_address, payload, places),
                CLIENT_TIMEOUT,
            )
            return payload, reply
        finally:
            loop.remove_reader(r.fileno())

    with server, reactor.Reactor() as r:
        r.add_server(server)
        payload, reply = asyncio.run(main(r))
    assert reply == payload


@pytest.mark.timeout(10)
def test_timers_of_an_embedded_reactor_are_honoured_via_next_timeout():
    fired = []

    async def main(r):
        loop = asyncio.get_running_loop()
        r.call_later(0.02, fired.append, "timer")
        deadline = loop.time() + CLIENT_TIMEOUT
        while not fired and loop.time() < deadline:
            await asyncio.sleep(r.next_timeout() or 0)
            r.run_once(0)

    with reactor.Reactor() as r:
        asyncio.run(main(r))
    assert fired == ["timer"]


@pytest.mark.timeout(10)
def test_adding_a_stdlib_server_says_to_change_the_import():
    import socketserver

    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as stdlib_server, reactor.Reactor() as r:
        with pytest.raises(reactor.UsageError, match="standard library's socketserver.*import reactor as socketserver"):
            r.add_server(stdlib_server)
        with pytest.raises(reactor.UsageError, match="not a server a reactor can serve"):
            r.add_server(object())
        assert r.servers == ()
