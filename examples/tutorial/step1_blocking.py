"""Step 1 of the tutorial: a blocking echo server, and why it is deaf.

What it shows: the shortest echo server there is, with plain ``socket``:
``accept()`` a client, ``recv()`` and ``sendall()`` until it hangs up,
then ``accept()`` the next one.  Every call blocks, so while one client
is connected, the server is stuck in ``recv()`` on that client and a
second client gets no answer at all, however long it waits.
docs/tutorial.md walks through it.

Run it, then poke it from two terminals:

    .venv/bin/python examples/tutorial/step1_blocking.py --port 8001
    nc 127.0.0.1 8001        # terminal 2: type lines, they come back
    nc 127.0.0.1 8001        # terminal 3: type lines... nothing, until 2 quits

    .venv/bin/python examples/tutorial/step1_blocking.py --self-test

``--self-test`` serves two scripted clients, A and B, on a free port and
prints what each side does; it exits 0 only if B got no reply while A was
connected and both got their echo in the end.

Shortcuts taken on purpose: the server runs on a thread only so that the
self-test's clients can run beside it; the server itself is one plain
loop.  It echoes bytes as they come, without looking for lines.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading

CLIENT_TIMEOUT = 5.0


def serve(listener: socket.socket, clients: int | None = None) -> None:
    """Echo for one client after another; return after ``clients`` of them."""
    served = 0
    while clients is None or served < clients:
        conn, peer = listener.accept()  # blocks until a client connects
        served += 1
        print(f"server: accepted client {served} from {peer}")
        with conn:
            while data := conn.recv(1024):  # blocks until THIS client sends
                print(f"server: client {served} sent {data!r}; echoing it")
                conn.sendall(data)  # blocks until the kernel took it all
        print(f"server: client {served} hung up")


def recv_line(sock: socket.socket) -> bytes:
    """Read until a newline (or EOF); a reply may come in pieces."""
    data = b""
    while not data.endswith(b"\n") and (chunk := sock.recv(1024)):
        data += chunk
    return data


def self_test(listener: socket.socket) -> bool:
    address = listener.getsockname()
    server = threading.Thread(target=serve, args=(listener, 2), daemon=True)
    server.start()
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as a:
        a.sendall(b"one\n")
        got_a = recv_line(a)
        print(f"client A: got {got_a!r}, and stays connected")
        with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as b:
            # connect() succeeded: the kernel completed the handshake and
            # queued B in the listen backlog.  Nobody calls accept() for it.
            b.sendall(b"two\n")
            b.settimeout(0.5)
            try:
                early = b.recv(1024)
                print(f"client B: got {early!r} while A was connected?!")
            except TimeoutError:
                early = b""
                print("client B: connected and sent b'two\\n', but no reply in 0.5 s")
            b.settimeout(CLIENT_TIMEOUT)
            print("client A: hangs up")
            a.close()
            got_b = early + recv_line(b)
            print(f"client B: got {got_b!r} only after A left")
    server.join(CLIENT_TIMEOUT)
    return got_a == b"one\n" and early == b"" and got_b == b"two\n" and not server.is_alive()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--self-test", action="store_true", help="serve two scripted clients, then exit")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # lines appear as they happen
    with socket.create_server(("127.0.0.1", 0 if args.self_test else args.port)) as listener:
        if args.self_test:
            ok = self_test(listener)
            print("self-test:", "ok" if ok else "FAILED")
            return 0 if ok else 1
        host, port = listener.getsockname()
        print(f"echo on {host} port {port}; try: nc {host} {port}   (Ctrl-C to stop)")
        try:
            serve(listener)
        except KeyboardInterrupt:
            print()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it as Ctrl-C does
    sys.exit(main())
