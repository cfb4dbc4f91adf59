"""Admission in-process: an EMFILE back-off sheds one waiting client and rests; the state machine refuses what it does not know."""

from __future__ import annotations

import errno
import socket

import pytest
from conftest import CLIENT_TIMEOUT, run_until

import reactor
import reactor.admission
from reactor.admission import Admit


class Upper(reactor.MessageHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline().upper())


@pytest.mark.timeout(20)
def test_out_of_descriptors_sheds_one_client_rests_and_resumes(caplog):
    with reactor.TCPServer(("127.0.0.1", 0), Upper) as server, reactor.Reactor() as r:
        r.add_server(server)
        admission = server._serving.admission
        with socket.create_connection(server.server_address, CLIENT_TIMEOUT) as waiting:
            # As if accept() had just failed for lack of descriptors, with
            # this client in the backlog: it is accepted on the reserve
            # descriptor and closed, so it hears "no" instead of hanging.
            assert admission.accept_failed(OSError(errno.EMFILE, "Too many open files")) is True
            assert waiting.recv(10) == b""
        assert admission.state is reactor.admission.Admit.RESTING
        counters = server.request_table.counters
        assert counters["accept_errors"] == 1 and counters["shed"] == 1
        assert any("accept() failed" in r.getMessage() for r in caplog.records)
        assert admission.accept_failed(OSError(errno.ECONNABORTED, "aborted")) is False  # not a resource error
        run_until(r, lambda: admission.state is reactor.admission.Admit.OPEN)  # the back-off ends by itself
        with socket.create_connection(server.server_address, CLIENT_TIMEOUT) as client:
            client.sendall(b"back\n")
            client.setblocking(False)
            got = bytearray()

            def answered():
                try:
                    got.extend(client.recv(100))
                except BlockingIOError:
                    pass
                return got.endswith(b"\n")

            run_until(r, answered)
        assert bytes(got) == b"BACK\n"
        r.remove_server(server)


@pytest.mark.timeout(20)
def test_back_off_doubles_up_to_a_cap():
    with reactor.TCPServer(("127.0.0.1", 0), Upper) as server, reactor.Reactor() as r:
        r.add_server(server)
        admission = server._serving.admission
        delays = []
        for _ in range(9):
            admission.accept_failed(OSError(errno.ENFILE, "File table overflow"))
            delays.append(admission._delay)
            admission._rested()
        assert delays[:3] == [0.01, 0.02, 0.04] and delays[-1] == 1.0
        admission.accepted()  # a successful accept forgets the back-off
        assert admission._delay == 0.0
        r.remove_server(server)


def test_every_state_but_open_has_the_socket_unwatched_and_an_unknown_move_raises():
    with reactor.TCPServer(("127.0.0.1", 0), Upper) as server, reactor.Reactor() as r:
        r.add_server(server)
        admission = server._serving.admission
        watched = lambda: server.fileno() in r.selector.get_map()  # noqa: E731
        assert admission.state is Admit.OPEN and watched()
        for event, state in [("filled", Admit.FULL), ("emptied", Admit.OPEN), ("saturated", Admit.BUSY),
                             ("room", Admit.OPEN), ("failed", Admit.RESTING), ("rested", Admit.OPEN)]:
            admission._move(event)
            assert admission.state is state and watched() == (state is Admit.OPEN)
        with pytest.raises(reactor.TransitionError, match="emptied"):
            admission._move("emptied")  # OPEN was never FULL
        assert admission.state is Admit.OPEN and watched()
        r.remove_server(server)
        assert admission.state is Admit.CLOSED and not watched()


def test_the_transitions_are_the_documented_ones():
    documented = {
        (Admit.OPEN, "filled"): Admit.FULL, (Admit.FULL, "emptied"): Admit.OPEN,
        (Admit.OPEN, "saturated"): Admit.BUSY, (Admit.BUSY, "room"): Admit.OPEN,
        (Admit.OPEN, "failed"): Admit.RESTING, (Admit.RESTING, "rested"): Admit.OPEN,
        **{(state, "close"): Admit.CLOSED for state in Admit},
    }
    assert reactor.admission.TRANSITIONS == documented
