"""Step 2 of the tutorial: a bare ``selectors`` loop that serves everyone.

What it shows: step 1's echo, line by line, without a single blocking
call.  Every socket is nonblocking and registered with one selector; the
loop asks the selector which sockets are ready and does only what cannot
block: ``accept()`` on a readable listener, one ``recv()`` on a readable
connection, one ``send()`` on a writable one.  Each connection keeps an
input buffer (a line may arrive in pieces) and an output buffer (the
kernel may take only part of a reply), and the loop watches a socket for
writing only while its output buffer is not empty; otherwise
``select()`` would report it writable, and wake, all the time.  Each
wake-up is printed, so you can watch the loop turn.

Run it and poke it from two terminals at once (both are answered):

    .venv/bin/python examples/tutorial/step2_selectors.py --port 8002
    nc 127.0.0.1 8002

    .venv/bin/python examples/tutorial/step2_selectors.py --self-test

Shortcuts taken on purpose: no limit on the buffers' size; a socket error
just closes the connection; the self-test calls ``run_once()`` itself,
between its clients' moves, so that its trace is the same on every run
(step 3 reuses this file's self-test and ``main()``).
"""

from __future__ import annotations

import argparse
import select
import selectors
import signal
import socket
import sys

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


def what(mask: int) -> str:
    """``read``, ``write`` or ``read+write``: what a selector event says is ready."""
    return "+".join(name for name, bit in (("read", READ), ("write", WRITE)) if mask & bit)


class Conn:
    """One client: its socket and its two buffers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""  # received, not yet a whole line
        self.outbuf = b""  # to send, not yet taken by the kernel


class EchoLoop:
    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.conns: dict[int, Conn] = {}  # fd -> connection
        self.selector = selectors.DefaultSelector()
        listener.setblocking(False)
        self.selector.register(listener, READ)

    def run_once(self, timeout: float | None = None) -> None:
        """One turn of the event loop: wait, then handle what is ready."""
        events = self.selector.select(timeout)  # sleeps until something is ready
        if events:
            print("woke:", ", ".join(f"fd {key.fd} {what(mask)}" for key, mask in events))
        for key, mask in events:
            if key.fileobj is self.listener:
                self.accept()
                continue
            conn = self.conns[key.fd]
            if mask & READ:
                self.read(conn)
            if mask & WRITE and key.fd in self.conns:  # read() may have closed it
                self.write(conn)

    def accept(self) -> None:
        sock, peer = self.listener.accept()  # ready: returns at once
        sock.setblocking(False)
        self.conns[sock.fileno()] = Conn(sock)
        self.selector.register(sock, READ)
        print(f"  accepted {peer} as fd {sock.fileno()}")

    def read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except OSError as exc:
            return self.close(conn, f"error {exc}")
        if not data:
            return self.close(conn, "the peer closed")
        conn.inbuf += data
        lines, sep, conn.inbuf = conn.inbuf.rpartition(b"\n")  # keeps any unfinished line
        if not sep:
            print(f"  read {data!r}: no whole line yet, {len(conn.inbuf)} byte(s) kept")
            return
        conn.outbuf += lines + sep
        print(f"  read {data!r}: queued {len(conn.outbuf)} byte(s); watch for write")
        self.selector.modify(conn.sock, READ | WRITE)

    def write(self, conn: Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbuf)  # takes what fits in the kernel's buffer
        except OSError as exc:
            return self.close(conn, f"error {exc}")
        conn.outbuf = conn.outbuf[sent:]
        print(f"  sent {sent} byte(s), {len(conn.outbuf)} left", end="")
        if not conn.outbuf:
            self.selector.modify(conn.sock, READ)  # nothing to send: stop asking
            print("; stop watching for write", end="")
        print()

    def close(self, conn: Conn, why: str) -> None:
        fd = conn.sock.fileno()
        self.selector.unregister(conn.sock)  # unregister BEFORE close
        del self.conns[fd]
        conn.sock.close()
        print(f"  closed fd {fd}: {why}")

    def close_all(self) -> None:
        for conn in list(self.conns.values()):
            self.close(conn, "the server stops")
        self.selector.close()


def self_test(loop: EchoLoop) -> bool:
    def turn_until(done) -> None:  # turn the loop until done(): at most 20 turns
        for _ in range(20):
            if done():
                return
            loop.run_once(timeout=0.5)
        raise RuntimeError("the loop did not get there in 20 turns")

    def replied(sock: socket.socket) -> bool:  # has the client something to read?
        return bool(select.select([sock], [], [], 0)[0])

    address = loop.listener.getsockname()
    with socket.create_connection(address, timeout=5) as a, socket.create_connection(address, timeout=5) as b:
        print("client A and client B connect; A sends b'hel' (half a line)")
        a.sendall(b"hel")
        turn_until(lambda: len(loop.conns) == 2 and any(c.inbuf for c in loop.conns.values()))
        print("client B sends b'hi\\n'")
        b.sendall(b"hi\n")
        turn_until(lambda: replied(b))
        got_b = b.recv(100)
        print(f"client B: got {got_b!r}, while A's line is unfinished")
        print("client A sends b'lo\\n'")
        a.sendall(b"lo\n")
        turn_until(lambda: replied(a))
        got_a = a.recv(100)
        print(f"client A: got {got_a!r}; A and B hang up")
    turn_until(lambda: not loop.conns)
    return got_a == b"hello\n" and got_b == b"hi\n"


def main(argv: list[str] | None = None, loop_class: type = EchoLoop) -> int:
    """Serve with ``loop_class`` (step 3 passes its own) until Ctrl-C, or run the self-test."""
    parser = argparse.ArgumentParser(description=sys.modules[loop_class.__module__].__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--self-test", action="store_true", help="serve two scripted clients, then exit")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    with socket.create_server(("127.0.0.1", 0 if args.self_test else args.port)) as listener:
        loop = loop_class(listener)
        print(f"listening on fd {listener.fileno()}")
        try:
            if args.self_test:
                ok = self_test(loop)
                print("self-test:", "ok" if ok else "FAILED")
                return 0 if ok else 1
            host, port = listener.getsockname()
            print(f"echo on {host} port {port}; try: nc {host} {port}   (Ctrl-C to stop)")
            while True:  # the event loop
                loop.run_once()
        except KeyboardInterrupt:
            print()
        finally:
            loop.close_all()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it as Ctrl-C does
    sys.exit(main())
