"""The dashboard's page in a real browser: Debian's headless Chromium, reading the rendered DOM.

Chromium loads the page, the page's script subscribes to ``/events`` and
draws what arrives, and the test reads the document as the script left it
(``Browser``, from scripts/dashboard_screenshot.py: the DevTools protocol
on a pipe, standard library only). The servers, the counts on their
diagrams, their records and the transitions with their reasons must
appear, and change while clients come and go; pausing the list must hold
it still while the panels go on.

Why not ``chromium --dump-dom``: with ``--virtual-time-budget`` it never
prints (virtual time stands still while a fetch is pending, and the event
stream always is), and with ``--timeout`` it prints at the load event,
before the first message has arrived.

Against the real dashboard (``python -m reactor serve ... --dashboard``)
where ``reactor.add_dashboard`` exists; otherwise against the stand-in of
tests/dashboard_support.py, which serves the same page with a made-up feed
in the contract's shapes. Skips, saying so, without Chromium (``make tools``
installs Debian's ``chromium``).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from typing import Iterator

import pytest

import reactor
from dashboard_support import Dom, StandIn, load_script
from reactor.states import TRANSITIONS, Kind

script = load_script()
pytestmark = pytest.mark.skipif(script.find_chromium() is None,
                                reason="chromium is not installed (Debian package chromium; make tools installs it)")  # fmt: skip


def connection_moves() -> set[tuple[str, str]]:
    return {(state.name, new.name) for (state, _), new in TRANSITIONS[Kind.CONNECTION].items()}


def check_page(dom: Dom, server: str) -> None:
    """What any rendered page must show for a framed TCP server ``server`` that clients are using."""
    assert dom.status.strip() == "live", dom.status
    assert int(dom.body["data-updates"]) >= 1, "no update arrived"
    panel = dom.servers[server]
    counts = panel["counts"]
    assert set(counts) >= {"ACCEPTED", "READING", "PROCESSING", "CLOSING", "CLOSED"}, counts
    live = sum(int(n) for state, n in counts.items() if state not in ("CLOSED", "FAILED"))
    assert live == panel["live"] == len(panel["records"]), panel
    assert dom.chip(server, "opened") is not None and dom.chip(server, "opened") >= 1
    mine = [t for t in dom.transitions if t["server"] == server]
    assert mine, dom.transitions[:5]
    for t in mine:  # each row is a move the table allows, with its event and reason shown
        assert t["old"] == "" or (t["old"], t["new"]) in connection_moves(), t
        assert t["new"] in t["text"]


class Clients:
    """Framed TCP clients on threads, bounded: some come and go, some hold half a line (READING)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.come_and_go, name=f"client {i}") for i in range(3)]
        self.threads += [threading.Thread(target=self.half_line, name=f"half {i}") for i in range(2)]

    def come_and_go(self) -> None:
        for _ in range(2000):  # bounded; ends far sooner, when stopped
            if self.stopping.is_set():
                return
            with socket.create_connection(self.address, timeout=5) as sock:
                sock.sendall(b"hello\n")
                assert sock.recv(10) == b"hello\n"
                sock.shutdown(socket.SHUT_WR)
                self.stopping.wait(0.05)

    def half_line(self) -> None:
        with socket.create_connection(self.address, timeout=5) as sock:
            sock.sendall(b"half a li")
            self.stopping.wait(60)

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(10)


@contextlib.contextmanager
def served() -> Iterator[tuple[str, str]]:
    """(the page's URL, the TCP server's name on it) with clients running: the real dashboard, or the stand-in."""
    if not hasattr(reactor, "add_dashboard"):
        with StandIn(duration=40) as stand_in:
            yield stand_in.url, "tcp4 127.0.0.1:9000"
        return
    from cli_support import Command

    command = Command("handlers.echo:LineEcho", "--tcp", "127.0.0.1:0", "--dashboard", "127.0.0.1:0")
    try:
        lines = [command.proc.stdout.readline() for _ in range(2)]
        address = next(line.split()[2] for line in lines if line.startswith("serving "))
        url = next(line.split()[1] for line in lines if line.startswith("dashboard "))
        host, _, port = address.rpartition(":")
        with Clients((host, int(port))):
            yield url, f"tcp4 {address}"
        assert command.stop() == 0, command.stderr()
    finally:
        command.close()


UPDATES = "Number(document.body.dataset.updates)"


def count(server: str, state: str) -> str:
    """A JavaScript expression: the number on ``state``'s badge in ``server``'s diagram."""
    return f"Number(document.querySelector('section[data-server=\"{server}\"] [data-count={state}]').textContent)"


@pytest.mark.timeout(120)
def test_the_page_shows_the_servers_states_and_transitions_and_they_change() -> None:
    with served() as (url, server), script.Browser() as browser:
        browser.open(url)
        browser.wait(f"{UPDATES} >= 2")
        first = Dom(browser.dom())
        check_page(first, server)
        closed = int(first.servers[server]["counts"]["CLOSED"])
        browser.wait(f"{UPDATES} >= {int(first.body['data-updates']) + 4} && {count(server, 'CLOSED')} > {closed}")
        second = Dom(browser.dom())
        check_page(second, server)
        # Time in handlers: the server's own line, and the inline share of the loop's time.
        runs = f"document.querySelector('section[data-server=\"{server}\"] [data-handlers]')?.dataset.handlers"
        assert int(browser.wait(f"Number({runs}) > 0 && {runs}")) > 0
        legend = browser.evaluate("document.getElementById('time-legend').textContent")
        assert re.search(r"inline handlers \d+%.*the reactor's own work \d+%.*waiting in select\(\) \d+%", legend), legend
    # Clients kept coming and going: more records were opened, more ended
    # in CLOSED (the final state's badge counts them since the page
    # opened), and the newest transition listed is another one.
    assert second.chip(server, "opened") > first.chip(server, "opened")
    assert int(second.servers[server]["counts"]["CLOSED"]) > int(first.servers[server]["counts"]["CLOSED"])
    assert second.transitions[0] != first.transitions[0]


TOP_ROW = "document.querySelector('#transitions tr')?.textContent"
PAUSE = "document.getElementById('pause')"


@pytest.mark.timeout(120)
def test_a_paused_list_stops_while_the_diagrams_go_on() -> None:
    with served() as (url, server), script.Browser() as browser:
        browser.open(url)
        browser.wait(f"{UPDATES} >= 2")
        browser.evaluate(f"{PAUSE}.click()")
        top, updates = browser.evaluate(TOP_ROW), browser.evaluate(UPDATES)
        browser.wait(f"{UPDATES} >= {updates + 4}")
        assert browser.evaluate(TOP_ROW) == top  # the list stood still...
        held = browser.evaluate(f"{PAUSE}.textContent")
        assert held.startswith("resume (") and int(held.split("(")[1].split()[0]) > 0, held
        paused = Dom(browser.dom())
        check_page(paused, server)  # ...while the panels went on
        browser.evaluate(f"{PAUSE}.click()")  # resume: what was held is listed
        assert browser.evaluate(TOP_ROW) != top
        assert browser.evaluate(f"{PAUSE}.textContent") == "pause"



@pytest.mark.timeout(120)
@pytest.mark.skipif(not hasattr(reactor, "add_dashboard"), reason="needs the real dashboard (reactor.add_dashboard)")
def test_a_page_refused_the_event_stream_polls_the_table_instead() -> None:
    """With every event stream taken (``max_streams``), the page's own is
    refused (503): it says so, and shows the servers from ``table.json``,
    fetched again every 2 s, so the counts still change."""
    from conftest import ReactorThread, wait_for
    from handlers.echo import LineEcho

    loop = reactor.Reactor()
    server = reactor.TCPServer(("127.0.0.1", 0), LineEcho)
    loop.add_server(server)
    dashboard = reactor.add_dashboard(loop, ("127.0.0.1", 0), max_streams=1)
    name = server.request_table.name
    try:
        with ReactorThread(loop), socket.create_connection(dashboard.server_address[:2], timeout=5) as taken:
            taken.sendall(b"GET /events HTTP/1.1\r\nHost: dashboard\r\n\r\n")
            assert taken.recv(100).startswith(b"HTTP/1.1 200")  # the one stream there may be: this test's
            with Clients(server.server_address[:2]), script.Browser() as browser:
                browser.open(dashboard.url)
                browser.wait("document.getElementById('status').textContent.startsWith('polling table.json')")
                browser.wait(f"{count(name, 'READING')} >= 2")  # the two clients holding half a line
                first = Dom(browser.dom()).chip(name, "opened")
                assert first is not None and first >= 1
                # Clients keep coming: a later poll shows more records opened.
                wait_for(lambda: Dom(browser.dom()).chip(name, "opened") > first, timeout=15,
                         what="the counts to change from one poll of table.json to the next")
    finally:
        dashboard.close()
        server.server_close()
        loop.close()
