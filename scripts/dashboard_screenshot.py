"""Photograph the dashboard under a demo load: docs/images/dashboard.png, for the README and docs/dashboard.md.

    python scripts/dashboard_screenshot.py            # write docs/images/dashboard.png (and .png.txt)
    python scripts/dashboard_screenshot.py --check    # exit 1, saying why, if the picture is stale

It starts a reactor with a framed TCP echo server on a pool of four threads
and a UDP echo server, a dashboard on loopback, and clients on threads (quick
ones, slow ones holding half a line, one that never reads its replies), then
has Debian's headless Chromium (driven over the DevTools protocol on a
pipe: ``Browser``, which the browser tests use too) load the page and take
the picture at 1280x900 once the page has shown three seconds of updates.
Everything stays on loopback and stops by itself.

A picture cannot be checked byte for byte as the diagrams are: the load, the
timing and the fonts differ from one run to the next.  What it must follow
is the page, so docs/images/dashboard.png.txt records the SHA-256 of the
page it photographed (``reactor.dashboard.page.page_digest()``) and where
the data came from; ``--check`` (run by tests/test_dashboard_page.py) calls
the picture stale when the page has changed since, when either file is
missing or the PNG is not 1280x900, or when it was taken with the stand-in
feed while the real dashboard (``reactor.add_dashboard``) exists.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import pathlib
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Iterator

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # so that a plain `python scripts/...` finds the package

import reactor  # noqa: E402
from handlers.echo import LineEcho  # noqa: E402
from reactor.dashboard.page import page_digest  # noqa: E402

OUT = ROOT / "docs" / "images" / "dashboard.png"
SIZE = (1280, 900)
FIX = "python scripts/dashboard_screenshot.py"
#: As the machine notes say: without the background-networking flags Chromium tries to reach Google.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
]  # fmt: skip
SETTLE = 12  # updates the page shows before the picture is taken (three seconds of load)


def find_chromium() -> str | None:
    """The path of Chromium (Debian's package: /usr/bin/chromium), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``).

    No extra package: Chromium reads JSON messages, each ended by a NUL
    byte, on its descriptor 3 and writes its answers on 4.  ``open(url)``
    loads a page in a SIZE window; ``evaluate(js)`` runs an expression in
    it and returns its value; ``wait(js)`` polls one until it is true;
    ``dom()`` is the document as the page's script left it; ``screenshot()``
    a PNG.  A context manager: on exit Chromium is closed (killed, with its
    helpers, if it does not go) and its profile removed.
    """

    def __init__(self, timeout: float = 30.0) -> None:
        binary = find_chromium()
        if binary is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium)")
        self.timeout = timeout
        self.profile = tempfile.TemporaryDirectory(prefix="reactor-chromium-")
        to_chromium, self._out = os.pipe()
        self._in, from_chromium = os.pipe()

        def on_3_and_4() -> None:  # in the child: its ends of the pipes on the descriptors Chromium uses
            ends = os.dup(to_chromium), os.dup(from_chromium)  # off 3 and 4 first, whatever they hold
            for fd, end in zip((3, 4), ends):
                os.dup2(end, fd)
                os.set_inheritable(fd, True)

        command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile.name}", "--remote-debugging-pipe",
                   f"--window-size={SIZE[0]},{SIZE[1]}", "about:blank"]  # fmt: skip
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, close_fds=False, preexec_fn=on_3_and_4,
                                     start_new_session=True)  # fmt: skip
        os.close(to_chromium)
        os.close(from_chromium)
        self._buffer = b""
        self._id = 0
        self.session: str | None = None

    def call(self, method: str, params: dict[str, Any] | None = None, session: bool = True) -> dict[str, Any]:
        """Send one command (in the page's session, once there is one); return its result."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:  # events come in between: skipped
            answer = json.loads(self._receive(deadline))
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"chromium: {method}: {answer['error'].get('message')}")
                return answer.get("result", {})

    def _receive(self, deadline: float) -> bytes:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise RuntimeError(f"chromium did not answer within {self.timeout:.0f} s")
            data = os.read(self._in, 1 << 16)
            if not data:
                raise RuntimeError("chromium closed its end of the pipe")
            self._buffer += data
        message, self._buffer = self._buffer.split(b"\0", 1)
        return message

    def open(self, url: str) -> None:
        """Load ``url`` in the browser's page (its first tab)."""
        pages = [t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
        target = pages[0]["targetId"] if pages else self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": SIZE[0], "height": SIZE[1], "deviceScaleFactor": 1, "mobile": False})  # fmt: skip
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 10.0) -> Any:
        """Poll ``expression`` until it is true; return its value (RuntimeError after ``timeout``).

        An expression that throws counts as false: the page may still be loading.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                value, error = self.evaluate(expression), ""
            except RuntimeError as e:
                value, error = None, f" ({e})"
            if value:
                return value
            if time.monotonic() > deadline:
                raise RuntimeError(f"not within {timeout:.0f} s: {expression}{error}")
            time.sleep(0.05)  # a polling interval

    def dom(self) -> str:
        return self.evaluate("document.documentElement.outerHTML")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.session = None
            self.call("Browser.close")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # helpers left behind, if any
        self.proc.wait()
        os.close(self._in)
        os.close(self._out)
        self.profile.cleanup()


# ---------------------------------------------------------------- the demo load


class SlowEcho(LineEcho):
    """LineEcho taking 40 ms per short line: requests are seen PROCESSING, and waiting (READY) for a thread.

    Long lines (the client that never reads) are echoed at once, so that
    its replies pile up above high water: WRITING, and ``backpressure`` counted.
    """

    def handle(self) -> None:
        if len(self.message) < 512:
            time.sleep(0.04)
        super().handle()


class Load:
    """Client threads on loopback until ``stop()``: quick, slow, one that never reads, and datagrams."""

    def __init__(self, tcp: Any, udp: Any) -> None:
        self.tcp, self.udp = tcp, udp
        self.stopping = threading.Event()
        targets = [self.chatty] * 6 + [self.half_line] * 3 + [self.never_reads, self.datagrams]
        self.threads = [threading.Thread(target=t, name=f"demo client {i}") for i, t in enumerate(targets)]

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(10)

    def connect(self) -> socket.socket:
        return socket.create_connection(self.tcp, timeout=2)

    def chatty(self) -> None:
        """Ten lines per connection, reading each echo, a pause between; then a new connection."""
        with contextlib.suppress(OSError):
            while not self.stopping.is_set():
                with self.connect() as sock:
                    for i in range(10):
                        sock.sendall(b"hello dashboard %d\n" % i)
                        sock.recv(100)
                        if self.stopping.wait(0.05 + 0.01 * i):
                            break

    def half_line(self) -> None:
        """Half a line, then nothing: the record stays READING, its dot in the box."""
        with contextlib.suppress(OSError), self.connect() as sock:
            sock.sendall(b"half a li")
            self.stopping.wait(60)

    def never_reads(self) -> None:
        """Lines it never reads the echoes of: the server's output goes above high water (WRITING)."""
        with contextlib.suppress(OSError), self.connect() as sock:
            sock.settimeout(0.5)
            line = b"x" * 1023 + b"\n"
            for _ in range(16384):  # at most 16 MiB: more than loopback's buffers and the high-water mark
                if self.stopping.is_set():
                    break
                try:
                    sock.sendall(line)
                except TimeoutError:
                    self.stopping.wait(0.5)
            self.stopping.wait(60)

    def datagrams(self) -> None:
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1)
            for i in range(3000):
                if self.stopping.wait(0.02):
                    break
                sock.sendto(b"ping %d\n" % i, self.udp)
                with contextlib.suppress(TimeoutError):
                    sock.recv(100)


@contextlib.contextmanager
def real_dashboard() -> Iterator[str]:
    """A reactor serving the demo load and ``reactor.add_dashboard``; yields the page's URL."""
    loop = reactor.Reactor()
    tcp = reactor.TCPServer(("127.0.0.1", 0), SlowEcho, dispatch=reactor.ThreadPool(4))
    udp = reactor.UDPServer(("127.0.0.1", 0), LineEcho)
    for server in (tcp, udp):
        loop.add_server(server)
    dashboard = reactor.add_dashboard(loop, ("127.0.0.1", 0))
    thread = threading.Thread(target=loop.run, name="reactor loop")
    thread.start()
    load = Load(tcp.server_address, udp.server_address).start()
    try:
        host, port = dashboard.server_address[:2]
        yield f"http://{host}:{port}/"
    finally:
        load.stop()
        loop.stop()
        thread.join(10)
        dashboard.close()
        loop.close()
        tcp.server_close()
        udp.server_close()


@contextlib.contextmanager
def dashboard() -> Iterator[tuple[str, str]]:
    """(the URL, where the data comes from): the real dashboard, or the tests' stand-in where there is none yet."""
    if hasattr(reactor, "add_dashboard"):
        with real_dashboard() as url:
            yield url, "reactor.add_dashboard"
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from dashboard_support import StandIn

    print("note: reactor.add_dashboard is not there: photographing the page fed by the tests' stand-in")
    with StandIn(duration=60) as stand_in:
        yield stand_in.url, "stand-in (tests/dashboard_support.py)"


# ---------------------------------------------------------------- the picture and its record


def png_size(data: bytes) -> tuple[int, int] | None:
    """A PNG's width and height (from its IHDR chunk), or None if ``data`` is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def record_of(png: pathlib.Path) -> pathlib.Path:
    return png.with_name(png.name + ".txt")


def describe(source: str) -> str:
    """What the .txt beside the picture says: the page's digest and where the data came from."""
    return (f"page: {page_digest()}\ndata: {source}\n"
            f"The SHA-256 of reactor.dashboard.page.render_page() when the picture was taken; `{FIX} --check`\n"
            f"(tests/test_dashboard_page.py) calls the picture stale when the page differs. Redo it: `{FIX}`.\n")  # fmt: skip


def stale(png: pathlib.Path = OUT) -> list[str]:
    """Why the picture at ``png`` is stale (nothing: it is up to date)."""
    if not png.exists() or not record_of(png).exists():
        return [f"missing: {png if not png.exists() else record_of(png)}"]
    problems = []
    if png_size(png.read_bytes()) != SIZE:
        problems.append(f"{png} is not a {SIZE[0]}x{SIZE[1]} PNG")
    fields = dict(line.split(": ", 1) for line in record_of(png).read_text().splitlines()[:2] if ": " in line)
    if fields.get("page") != page_digest():
        problems.append(f"stale: {png} shows another version of the page (its digest differs)")
    if fields.get("data", "").startswith("stand-in") and hasattr(reactor, "add_dashboard"):
        problems.append(f"stale: {png} was taken with the stand-in feed; the real dashboard is there now")
    return problems


def take(png: pathlib.Path) -> None:
    """Take the picture under load, once the page has had a few updates, and write it with its record."""
    with dashboard() as (url, source), Browser() as browser:
        browser.open(url)
        browser.wait(f"Number(document.body.dataset.updates) >= {SETTLE}", timeout=30)
        data = browser.screenshot()
    if png_size(data) != SIZE:
        raise RuntimeError(f"chromium made no {SIZE[0]}x{SIZE[1]} PNG")
    png.write_bytes(data)
    record_of(png).write_text(describe(source))
    print(f"wrote {png} ({source})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the picture is stale")
    parser.add_argument("--out", type=pathlib.Path, default=OUT, help="the PNG (default: docs/images/dashboard.png)")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.out)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"run: {FIX}", file=sys.stderr)
        return 1 if problems else 0
    try:
        take(args.out)
    except RuntimeError as e:
        print(f"dashboard_screenshot: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
