"""examples/chat.py run as a user runs it: members over TCP and Unix, a reader that never reads.

Each test starts the example with ``served()`` (a subprocess; SIGTERM at the
end, exit 0 and no socket file left are checked there) and talks to it
with plain blocking sockets, each with a timeout.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from typing import Any, Iterator

import pytest

from examples_support import check_clean, self_test, served

TIMEOUT = 10.0


class Member:
    """A chat client: a socket with a timeout, and the lines received so far."""

    def __init__(self, address: Any, rcvbuf: int | None = None) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(address)
        self.pending = b""
        self.welcome = self.expect("* welcome, ")
        self.name = self.welcome.split()[2].rstrip(";")

    def say(self, *lines: str) -> None:
        self.sock.sendall(b"".join(line.encode() + b"\n" for line in lines))

    def lines_until(self, start: str, timeout: float = TIMEOUT) -> list[str]:
        """Every line up to and including the first that starts with ``start``."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            while b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                seen.append(line.decode())
                if seen[-1].startswith(start):
                    return seen
            left = deadline - time.monotonic()
            assert left > 0, f"no line starting with {start!r} within {timeout}s; got {seen[-5:]}"
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            assert chunk, f"EOF before a line starting with {start!r}; got {seen[-5:]}"
            self.pending += chunk

    def expect(self, start: str, timeout: float = TIMEOUT) -> str:
        return self.lines_until(start, timeout)[-1]

    def nick(self, name: str) -> None:
        self.say(f"/nick {name}")
        assert self.expect("* ") == f"* you are now {name}"
        self.name = name

    def read_to_eof(self) -> bytes:
        data, self.pending = self.pending, b""
        self.sock.settimeout(TIMEOUT)
        while chunk := self.sock.recv(65536):
            data += chunk
        return data


@contextlib.contextmanager
def members() -> Iterator[Any]:
    """``join(address)`` makes a Member; all are closed at the end."""
    with contextlib.ExitStack() as stack:

        def join(address: Any, **kwargs: Any) -> Member:
            member = Member(address, **kwargs)
            stack.callback(member.sock.close)
            return member

        yield join


@pytest.mark.timeout(30)
def test_each_line_reaches_every_other_member_with_the_name(places):
    unix = places.path("chat")  # a path we give: it must be gone after SIGTERM too
    with served("chat.py", "--unix", unix) as chat, members() as join:
        assert chat.addresses["unix"] == unix
        room = []
        for i, address in enumerate([chat.addresses["tcp"], unix, chat.addresses["tcp"], unix]):
            member = join(address)
            guest = member.name
            assert re.fullmatch(r"guest-\d+", guest)
            for other in room:
                assert other.expect("* ") == f"* {guest} joined"
            member.nick(f"m{i}")
            for other in room:
                assert other.expect("* ") == f"* {guest} is now m{i}"
            room.append(member)
        # Each speaks in turn; everyone else has the line before the next one speaks.
        for speaker in room:
            text = f"hello from {speaker.name}, caf\u00e9 \u2615"  # bytes pass through as they came
            speaker.say(text)
            for other in room:
                if other is not speaker:
                    assert other.expect(f"{speaker.name}:") == f"{speaker.name}: {text}"
        for member in room:
            member.say("/who")
            before = member.lines_until("* here:")
            assert before[-1] == "* here: m0, m1, m2, m3"
            assert not any(line.startswith(f"{member.name}:") for line in before)  # never its own line back


@pytest.mark.timeout(30)
def test_join_rename_leave_and_commands():
    with served("chat.py") as chat, members() as join:
        tcp, unix = chat.addresses["tcp"], chat.addresses["unix"]
        ada = join(tcp)
        ada.nick("ada")
        bob = join(unix)
        assert ada.expect("* ") == f"* {bob.name} joined"
        guest = bob.name
        bob.nick("bob")
        assert ada.expect("* ") == f"* {guest} is now bob"
        bob.say("/nick ADA", "/nick no way", "/dance", "", "   ")
        assert bob.expect("* ") == "* ADA is taken"
        assert bob.expect("* ") == "* a name is 1 to 20 letters, digits, _ or -"
        assert bob.expect("* ") == "* unknown command /dance; try /nick NAME, /who, /quit"
        bob.sock.shutdown(socket.SHUT_WR)  # EOF: bob leaves
        assert ada.expect("* ") == "* bob left"
        assert bob.read_to_eof() == b""  # empty lines were not broadcast, nor answered

        cy = join(tcp)
        assert ada.expect("* ") == f"* {cy.name} joined"
        cy.say("/quit", "after quit")  # the second line is never handled
        assert cy.read_to_eof() == b"* bye\n"
        assert ada.expect("* ") == f"* {cy.name} left"

        long = join(unix)
        assert ada.expect("* ") == f"* {long.name} joined"
        long.say("x" * 2000)
        assert long.read_to_eof() == b"* a line is at most 1024 bytes; bye\n"
        assert ada.expect("* ") == f"* {long.name} left"
        ada.say("/who")
        assert ada.expect("* ") == "* here: ada"


def flood(talker: Member, megabytes: int = 1) -> list[str]:
    """Send ``megabytes`` MB of chat lines and a /who; return the lines up to its answer."""
    line = "x" * 999
    talker.say(*([line] * 1000 * megabytes), "/who")
    return talker.lines_until("* here:")


@pytest.mark.timeout(40)
def test_a_member_that_never_reads_holds_up_nobody():
    with served("chat.py", "--max-behind", str(64 << 20)) as chat, members() as join:
        tcp, unix = chat.addresses["tcp"], chat.addresses["unix"]
        ada = join(tcp)
        ada.nick("ada")
        slow = join(unix)  # reads its welcome, then never again
        assert ada.expect("* ") == f"* {slow.name} joined"
        slow.say("/nick slow")
        assert ada.expect("* ").endswith("is now slow")

        who = flood(ada)[-1]
        waiting = re.fullmatch(r"\* here: ada, slow \((\d+) bytes waiting\)", who)
        assert waiting and int(waiting[1]) > 100_000, who  # the kernel's buffers are full: the room queues

        started = time.monotonic()
        bob = join(tcp)
        assert ada.expect("* ") == f"* {bob.name} joined"
        bob.nick("bob")
        ada.say("still there, bob?")
        assert bob.expect("ada:") == "ada: still there, bob?"
        bob.say("yes")
        assert ada.expect("bob:") == "bob: yes"
        assert time.monotonic() - started < TIMEOUT  # not held up by slow (held up would be forever)
        ada.say("/who")
        assert re.fullmatch(r"\* here: ada, slow \(\d+ bytes waiting\), bob", ada.expect("* here:"))


@pytest.mark.timeout(40)
def test_a_member_too_far_behind_is_dropped_after_a_notice():
    with served("chat.py") as chat, members() as join:  # --max-behind: the default, 256 KiB
        ada = join(chat.addresses["tcp"])
        ada.nick("ada")
        slow = join(chat.addresses["unix"])
        assert ada.expect("* ") == f"* {slow.name} joined"
        slow.say("/nick slow")
        assert ada.expect("* ").endswith("is now slow")

        lines = flood(ada, megabytes=2)
        assert "* slow was dropped: too far behind" in lines
        assert lines[-1] == "* here: ada"
        # slow gets what was queued for it before the drop, the notice, then EOF:
        # bounded by the room's limit plus what the kernel holds, not the 2 MB sent.
        received = slow.read_to_eof()
        assert received.endswith(b"* you are too far behind; bye\n")
        assert 256 * 1024 < len(received) < 1024 * 1024, len(received)
        ada.say("/who")
        assert ada.expect("* here:") == "* here: ada"


@pytest.mark.timeout(70)
def test_self_test_passes():
    result = self_test("chat.py")
    report = check_clean(result)
    assert result.stdout.count("  ok") == 6 and "WRONG" not in result.stdout, report
