"""A small protocol server with state every connection shares: a key-value store.

What it shows: where state lives under each dispatch strategy.

* State of one connection lives on ``self.connection.data`` (a dict that
  outlives each message).  State of the whole server lives on the server
  object, made in its constructor: here ``server.store``.
* ``Inline()`` (the default): handlers run one at a time on the loop's
  thread, so the store needs no lock.
* ``ThreadPool(n)``: handlers of different connections run at the same
  time on worker threads.  ``INCR`` reads, adds and writes: without a
  lock two workers can read the same value and one increment is lost.
  The lock below makes each command whole.
* ``Fork(n)``: each message is handled in a child process, on a *copy*
  of the server: a ``SET`` changes the child's copy, which dies with it,
  and the next ``GET`` (another child) still sees the parent's store.
  Keep such state outside the process (a database, a file, a Redis), or
  serve the commands that change it inline.

The protocol, one command per line: ``SET key value``, ``GET key`` (the
value, or ``nil``), ``INCR key`` (the new number).  Poke it:

    python examples/shared_state.py --dispatch thread:4   # prints "serving tcp4 127.0.0.1:PORT"
    socat - TCP:127.0.0.1:PORT                          # SET a 1 / INCR a / GET a

``--self-test`` runs the same store under Inline, ThreadPool(4) and
Fork(2): 8 clients x 50 ``INCR`` end at exactly 400 under the first two,
and under Fork a ``SET`` is not seen by the next ``GET``.  Shortcuts on
purpose: TCP on loopback only, no persistence, no expiry.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading

import reactor


class KeyValue(reactor.MessageHandler):
    """SET / GET / INCR on ``self.server.store``, one command per line."""

    def handle(self) -> None:
        command, *args = self.message.split()
        server = self.server
        with server.lock:  # one command at a time on the store, whatever thread runs it
            if command == b"SET" and len(args) == 2:
                server.store[args[0]] = args[1]
                reply = b"OK"
            elif command == b"GET" and len(args) == 1:
                reply = server.store.get(args[0], b"nil")
            elif command == b"INCR" and len(args) == 1:
                value = int(server.store.get(args[0], b"0")) + 1
                server.store[args[0]] = str(value).encode()
                reply = server.store[args[0]]
            else:
                reply = b"ERR unknown command"
        self.wfile.write(reply + b"\n")


class KeyValueServer(reactor.TCPServer):
    """A TCP server whose handlers share ``store`` (guarded by ``lock``)."""

    allow_reuse_address = True

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.store: dict[bytes, bytes] = {}
        self.lock = threading.Lock()


def strategy(text: str) -> reactor.Strategy:
    kind, _, count = text.partition(":")
    return {"inline": reactor.Inline, "thread": reactor.ThreadPool, "fork": reactor.Fork}[kind](
        *([int(count)] if count else []))  # fmt: skip


def ask(client: socket.socket, line: bytes) -> bytes:
    client.sendall(line + b"\n")
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = client.recv(100)
        if not chunk:
            raise ConnectionError(f"closed after {reply!r}")
        reply += chunk
    return reply[:-1]


def self_test() -> int:
    def incr_from(address: object, times: int) -> None:
        with socket.create_connection(address, timeout=10) as client:
            for _ in range(times):
                ask(client, b"INCR hits")

    for text in ("inline", "thread:4", "fork:2"):
        with KeyValueServer(("127.0.0.1", 0), KeyValue, dispatch=strategy(text)) as server:
            serving = threading.Thread(target=server.serve_forever, name="serving")
            serving.start()
            try:
                with socket.create_connection(server.server_address, timeout=10) as client:
                    ask(client, b"SET greeting hello")
                    seen = ask(client, b"GET greeting")
                clients = [threading.Thread(target=incr_from, args=(server.server_address, 50)) for _ in range(8)]
                for thread in clients:
                    thread.start()
                for thread in clients:
                    thread.join(30)
                with socket.create_connection(server.server_address, timeout=10) as client:
                    hits = ask(client, b"GET hits")
            finally:
                server.shutdown()
                serving.join(10)
        print(f"{text:9} GET greeting -> {seen.decode():6} GET hits after 8 x 50 INCR -> {hits.decode()}")
        if text == "fork:2":
            assert seen == b"nil" and hits == b"nil", (seen, hits)  # each child changed its own copy
        else:
            assert seen == b"hello" and hits == b"400", (seen, hits)
    print("self-test: ok")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dispatch", default="inline", help="inline, thread:N or fork:N (default inline)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test()
    with KeyValueServer(("127.0.0.1", args.port), KeyValue, dispatch=strategy(args.dispatch)) as server:
        print(f"serving {server.request_table.name}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
