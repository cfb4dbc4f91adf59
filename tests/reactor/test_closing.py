"""Stopping and closing in-process: server_close() whatever raises, no accept after a
stop, and the default connection limit against the process's descriptor limit."""

from __future__ import annotations

import os
import resource
import socket
from typing import Any

import pytest
from conftest import CLIENT_TIMEOUT, FAMILIES, ReactorThread, connect, read_all, run_until, wait_for

import reactor
import reactor.admission
from handlers.echo import LineEcho, StreamLineEcho
from reactor import ThreadPool
from reactor.dispatch import live_worker_threads

# ------------------------------------------------ server_close, whatever raises


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["tcp4", "unix"])
def test_an_interrupted_drain_still_closes_the_listener_and_ends_what_is_left(places, name):
    # Ctrl-C while server_close() waits for a stuck worker: the listener is
    # closed, the socket file removed, the worker's connection shut down so
    # it ends, and the KeyboardInterrupt still reaches the caller.
    pool = ThreadPool(1)
    server = places.make_server(name, StreamLineEcho, dispatch=pool)
    real_close, calls = pool.close, []

    def interrupted_close(wait: bool = True, timeout: float | None = None) -> None:
        calls.append(timeout)
        if len(calls) == 1:
            raise KeyboardInterrupt  # as if the signal came while joining the workers
        real_close(wait=wait, timeout=timeout)

    pool.close = interrupted_close
    with connect(server) as silent:
        with reactor.Reactor() as r, ReactorThread(r, close=False):
            r.call_soon_threadsafe(r.add_server, server)
            wait_for(lambda: pool.running == 1, what="the handler blocked on the silent client")
            r.call_soon_threadsafe(r.remove_server, server)
            wait_for(lambda: server.reactor is None, what="the server left the reactor")
        with pytest.raises(KeyboardInterrupt):
            server.server_close()
        assert calls == [None, 0]  # then the rest was ended at once
        assert server.socket.fileno() == -1
        if name == "unix":
            assert not os.path.exists(server.server_address)
        assert read_all(silent) == b""  # shut down under the blocked worker
    wait_for(lambda: live_worker_threads() == 0, what="the worker ended")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", ["tcp4", "unix"])
def test_a_strategy_that_raises_on_close_still_leaves_nothing_open(places, name):
    pool = ThreadPool(1)
    server = places.make_server(name, StreamLineEcho, dispatch=pool)

    def broken_close(wait: bool = True, timeout: float | None = None) -> None:
        raise KeyboardInterrupt

    pool.close = broken_close
    with pytest.raises(KeyboardInterrupt):
        server.server_close()
    assert server.socket.fileno() == -1
    if name == "unix":
        assert not os.path.exists(server.server_address)


# ------------------------------------------------- no accept once stopping


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", ["tcp4", "unix"])
def test_a_stop_asked_for_mid_burst_takes_no_further_connection(places, name):
    # Five clients wait in the backlog; verifying the first one asks the
    # reactor to stop (as a signal handler would): the burst must not
    # accept the other four on its way out.
    verified = []

    class StopOnFirst(FAMILIES[name][0]):
        def verify_request(self, request: Any, client_address: Any) -> bool:
            verified.append(client_address)
            self.reactor.stop()
            return False

    server = places.make_server(name, LineEcho, cls=StopOnFirst)
    clients = [connect(server) for _ in range(5)]
    try:
        with reactor.Reactor() as r:
            r.add_server(server)
            r.run()  # returns after the iteration in which stop() was asked for
            assert len(verified) == 1, verified
            assert server.request_table.totals["opened"] == 1
            r.remove_server(server)
    finally:
        for sock in clients:
            sock.close()
        server.server_close()


# ---------------------------------------- max_connections and the descriptor limit


@pytest.mark.timeout(10)
def test_descriptor_budget_leaves_a_reserve():
    from reactor.admission import descriptor_budget

    assert descriptor_budget(64) == 32
    assert descriptor_budget(1024) == 960
    assert descriptor_budget(20000) == 20000 - 1250
    assert descriptor_budget(40) == 8
    assert descriptor_budget(16) == 1  # never below one connection
    assert descriptor_budget() == descriptor_budget(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


@pytest.mark.timeout(20)
@pytest.mark.parametrize("how", ["default", "instance", "subclass"])
def test_the_default_connection_limit_is_fitted_to_the_descriptor_budget(places, monkeypatch, how):
    from reactor.admission import DEFAULT_MAX_CONNECTIONS

    monkeypatch.setattr(reactor.admission, "descriptor_budget", lambda soft=None: 2)
    cls = reactor.TCPServer
    if how == "subclass":
        cls = type("Three", (reactor.TCPServer,), {"max_connections": 3})
    server = places.make_server("tcp4", LineEcho, cls=cls)
    if how == "instance":
        server.max_connections = 3  # set on purpose: honoured even above the budget
    expected = 2 if how == "default" else 3
    assert server.max_connections == (DEFAULT_MAX_CONNECTIONS if how == "default" else 3)
    clients: list[socket.socket] = []
    with server, reactor.Reactor() as r:
        r.add_server(server)
        try:
            for _ in range(expected + 1):
                clients.append(socket.create_connection(server.server_address, CLIENT_TIMEOUT))
            run_until(r, lambda: server._serving.admission.state is reactor.admission.Admit.FULL)
            run_until(r, lambda: len(server.connections) == expected)
            r.run_once(0)
            assert len(server.connections) == expected  # the last one waits in the backlog
            clients.pop(0).close()
            run_until(r, lambda: len(server.connections) == expected and server.request_table.totals["opened"] == expected + 1)
        finally:
            for sock in clients:
                sock.close()
            r.remove_server(server)


@pytest.mark.timeout(20)
def test_waiting_for_children_works_past_descriptor_1024():
    # Once the command has raised the descriptor limit, a child's pidfd can
    # be numbered past FD_SETSIZE (1024), which select() refuses: the wait
    # in Fork.close() must not depend on the descriptor's number.
    from reactor.forking import _wait_any

    if not hasattr(os, "pidfd_open") or resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1200:
        pytest.skip("needs pidfds and room for 1100 descriptors")
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: exit as soon as the parent closes its end of the pipe
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0)
    try:
        os.close(read_end)
        _wait_any([pid], 0.01)  # still running: the wait times out
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)
        os.close(write_end)
        write_end = -1
        _wait_any([pid], CLIENT_TIMEOUT)  # returns when the child has exited
        assert os.waitpid(pid, os.WNOHANG)[0] == pid
    finally:
        if write_end != -1:
            os.close(write_end)
        for fd in fillers:
            os.close(fd)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
