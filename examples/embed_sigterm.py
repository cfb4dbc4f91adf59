"""Stopping a host loop that embeds a reactor, on SIGTERM or Ctrl-C.

What it shows: a hand-written ``select()`` loop drives a reactor through
``loop.fileno()`` and ``run_once(0)``.  ``Reactor.run()`` makes a signal
wake its own ``select()`` (``signal.set_wakeup_fd``), but a host loop
sleeps in *its* ``select()``, where a signal only sets a flag: Python
retries the interrupted call (PEP 475), so the loop would sleep on until
its timeout before it saw the flag.  The signal handler here also calls
``loop.wakeup()``, which makes the reactor's descriptor readable at once,
so the host's ``select()`` returns and the loop sees the flag.

Poke it:

    python examples/embed_sigterm.py &      # prints "serving tcp4 127.0.0.1:PORT"
    socat - TCP:127.0.0.1:PORT              # type lines: they come back
    kill %1                                 # stops at once, exit 0

Shortcuts on purpose: one TCP server, a line echo, no other work in the
host loop.  ``--self-test`` starts it in a subprocess, echoes a line,
waits until the host loop sleeps in ``select()`` with no timeout (Linux:
its /proc state), sends SIGTERM, and checks it stopped within a second,
cleanly.
"""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import time

import reactor
from handlers.echo import LineEcho


def serve() -> int:
    stopping = False
    with reactor.Reactor() as loop, reactor.TCPServer(("127.0.0.1", 0), LineEcho) as server:

        def on_signal(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True
            loop.wakeup()  # the reactor's descriptor turns readable: our select() returns now

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        loop.add_server(server)
        print(f"serving {server.request_table.name}", flush=True)
        while not stopping:
            select.select([loop.fileno()], [], [], loop.next_timeout())  # None: sleep until something
            loop.run_once(0)
        print("stopped", flush=True)
    return 0


def wait_until_asleep(pid: int, limit: float = 5.0) -> None:
    """Wait (bounded polling) until process ``pid`` sleeps in a system call (its
    /proc state is S): after the echo, the only place it can sleep is select()."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rpartition(")")[2].split()[0] == "S":
                return
        time.sleep(0.001)  # a polling interval, not an ordering assumption
    raise AssertionError(f"process {pid} never went to sleep in select()")


def self_test() -> int:
    child = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE, text=True)
    try:
        host, port = child.stdout.readline().split()[2].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as client:
            client.sendall(b"still here\n")
            assert client.recv(100) == b"still here\n"
        wait_until_asleep(child.pid)  # in select() with no timeout: nothing is planned
        began = time.monotonic()
        child.send_signal(signal.SIGTERM)
        status = child.wait(5)
        took = time.monotonic() - began
        assert status == 0 and child.stdout.read() == "stopped\n", status
        assert took < 1.0, f"took {took:.2f}s to stop"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    print("self-test: ok")
    return 0


if __name__ == "__main__":
    sys.exit(self_test() if "--self-test" in sys.argv else serve())
