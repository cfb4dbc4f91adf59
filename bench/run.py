"""Run one measurement: start a server, drive it, read its memory, stop it.

One measurement, in order, every step with a deadline:

1. start ``python -m bench.servers SYSTEM KIND ADDRESS`` in a new session
   (so that its threads and children can be found, and killed if need be),
   pinned to the server CPU; wait for its ready line;
2. read its memory at rest; with idle connections, let the load generator
   open them, wait until the server holds their descriptors and its memory
   settles, read it again (the difference over the count is the memory
   per idle connection), and let the load generator go on;
3. the load generator (pinned to the client CPU) warms up and measures;
   halfway through the window the server's memory, threads and processes
   are read; at the window's start and end, the CPU time of every CPU, of
   the server's session, of the load generator and of the harness (the
   difference is what other processes used: bench/noise.py);
4. once a thread-per-connection server has wound its threads down
   (bounded), SIGTERM; the server must exit, with status 0, within 5 s.  Whatever is
   left of its session is then killed, and its temporary directory (Unix
   socket files) removed.

Memory: VmRSS for a single process; for a server of several processes
(forking servers) the sum of their PSS, since adding up RSS would count the
pages they share once per child.
"""

from __future__ import annotations

import json
import os
import pathlib
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from . import noise
from .scenarios import Scenario

ROOT = pathlib.Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 10.0


@dataclass
class Settings:
    loadgen: pathlib.Path
    runs: int = 5
    warmup: float = 0.3
    seconds: float = 1.2
    settle: float = 1.0  # at most this much longer warm-up, until every connection has had a reply
    pool: int = 64
    host: str = "127.0.0.1"
    server_cpu: int | None = 0
    client_cpu: int | None = 1
    connect_timeout: float = 10.0
    max_noise: float = noise.DEFAULT_MAX_NOISE  # % of one core others may use in a window before it is contended
    retries: int = noise.DEFAULT_RETRIES  # re-runs per cell of contended runs
    tls: Any = None  # bench.tls.Setup for the TLS scenarios (their load generator, certificate and key), or None
    cpus: tuple[int, ...] | None = None  # an unpinned scenario's CPUs (the harness pins itself: children would inherit it)


class Failed(Exception):
    """A measurement could not be made; the message says why."""


class Lines:
    """Read a pipe line by line, each read with a deadline."""

    def __init__(self, pipe: Any) -> None:
        self.fd = pipe.fileno()
        self.buffer = b""
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)

    def next(self, deadline: float, what: str) -> str:
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self.selector.select(left):
                raise Failed(f"no {what} in time")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise Failed(f"no {what}: the process closed its output")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        self.selector.close()


# -------------------------------------------------------------- /proc


def session_pids(sid: int) -> list[int]:
    """The live processes of session `sid` (the server and its children)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.split(":", 1) for line in f if ":" in line)


def memory(sid: int) -> dict[str, Any]:
    """Memory (kB), thread and process counts of session `sid`."""
    pids = session_pids(sid)
    kb = threads = 0
    metric = "rss" if len(pids) <= 1 else "pss"
    for pid in pids:
        try:
            status = _status(pid)
            threads += int(status["Threads"])
            if metric == "rss":
                kb += int(status["VmRSS"].split()[0])
            else:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    kb += sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, KeyError, ValueError):
            continue
    return {"kb": kb, "metric": metric, "threads": threads, "procs": len(pids)}


def sockets_by_process(sid: int) -> dict[int, int]:
    """pid -> how many sockets each process of session `sid` has open."""
    out = {}
    for pid in session_pids(sid):
        try:
            out[pid] = sum(1 for fd in os.listdir(f"/proc/{pid}/fd") if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))
        except OSError:
            continue  # gone meanwhile
    return out


def open_fds(sid: int) -> int:
    total = 0
    for pid in session_pids(sid):
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


def settled_memory(sid: int, deadline: float) -> dict[str, Any]:
    """Memory once two readings 100 ms apart agree within 1 % (or at the deadline)."""
    last = memory(sid)
    while time.monotonic() < deadline:
        time.sleep(0.1)  # sampling interval, not ordering: the result is checked below
        now = memory(sid)
        if abs(now["kb"] - last["kb"]) <= 0.01 * max(last["kb"], 1):
            return now
        last = now
    return last


# -------------------------------------------------------------- servers


def kill_session(sid: int) -> bool:
    """SIGKILL what is left of session `sid`; True if anything was."""
    left = bool(session_pids(sid))
    if left:
        try:
            os.killpg(sid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return left


def address_for(scenario: Scenario, settings: Settings, tmp: str) -> str:
    if scenario.kind in ("unix", "unixdgram"):
        return os.path.join(tmp, "server.sock")
    return settings.host


def target_for(scenario: Scenario, ready: Any) -> str:
    if scenario.kind in ("unix", "unixdgram"):
        return f"{scenario.kind}:{ready}"
    host, port = ready
    host = f"[{host}]" if ":" in host else host
    return f"{scenario.kind}:{host}:{port}"


def measure(scenario: Scenario, system: str, settings: Settings) -> dict[str, Any]:
    """One measurement of `system` in `scenario`: a result dict, with "error" if it failed."""
    began = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="rb-")  # short: Unix socket paths have a 107-byte limit
    result: dict[str, Any] = {"scenario": scenario.name, "system": system, "notes": []}
    server = reader = None
    stderr = open(os.path.join(tmp, "server.err"), "w+b")
    try:
        # -S: no site module.  The servers need only the standard library and this
        # checkout (the working directory), and the venv's site hooks (coverage's
        # .pth file) would add a sixth of a second to every start.
        command = [sys.executable, "-S", "-m", "bench.servers", system, scenario.kind, address_for(scenario, settings, tmp),
                   "--pool", str(settings.pool)]  # fmt: skip
        if settings.server_cpu is not None and scenario.pinned:
            command += ["--cpu", str(settings.server_cpu)]
        if scenario.tls:
            if settings.tls is None:
                raise Failed("a TLS scenario without a TLS setup (certificate, load generator)")
            command += ["--tls-cert", str(settings.tls.cert), "--tls-key", str(settings.tls.key)]
        server = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                                  start_new_session=True, preexec_fn=_unpin(scenario, settings))  # fmt: skip
        server_lines = Lines(server.stdout)
        try:
            announced = json.loads(server_lines.next(time.monotonic() + 20, "ready line from the server"))
        finally:
            server_lines.close()
        ready = announced["ready"]
        if "dashboard" in announced:  # reactor-line-dash: its events are read all along
            reader = start_reader(announced["dashboard"], scenario, settings)
        result.update(drive(scenario, settings, server.pid, target_for(scenario, ready), tmp))
        if reader is not None:
            events = stop_reader(reader)
            reader = None
            result["dashboard_events"] = events
            result["notes"].append(f"the dashboard's event reader read {events} events")
        # A thread-per-connection server has thousands of threads to wind down once the
        # load generator is gone; let it, so that SIGTERM measures a clean stop, not that.
        deadline = time.monotonic() + 10.0
        while memory(server.pid)["threads"] > result["rest_threads"] + settings.pool + 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the server's thread count, with a deadline
        server.send_signal(signal.SIGTERM)
        try:
            status = server.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            result["notes"].append(f"did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM: killed")
            server.send_signal(signal.SIGUSR1)  # faulthandler: the main thread's stack, to stderr
            time.sleep(0.5)  # give it a moment to write; it is killed below either way
        else:
            if status != 0:
                result["notes"].append(f"exited with status {status} after SIGTERM")
        deadline = time.monotonic() + 2.0
        while session_pids(server.pid) and time.monotonic() < deadline:
            time.sleep(0.02)  # a forking server's children finish on their own; poll with a deadline
        if kill_session(server.pid):
            result["notes"].append("processes left after the server exited: killed")
    except (Failed, OSError, ValueError, KeyError) as exc:  # this measurement failed; the others go on
        result["error"] = str(exc) or repr(exc)
    finally:
        if reader is not None:
            reader.kill()
            reader.wait()
            reader.stdout.close()
        if server is not None:
            kill_session(server.pid)
            if server.poll() is None:
                server.kill()
            server.wait()
            if server.stdout:
                server.stdout.close()
            if "error" in result or any("status" in n or "SIGTERM" in n for n in result["notes"]):
                stderr.seek(0)
                tail = stderr.read().decode(errors="replace").strip().splitlines()[-6:]
                if tail:
                    result["notes"].append("server stderr: " + " | ".join(tail))
        stderr.close()
        shutil.rmtree(tmp, ignore_errors=True)
        result["wall_s"] = round(time.monotonic() - began, 2)
    return result


def start_reader(where: Any, scenario: Scenario, settings: Settings) -> subprocess.Popen:
    """Start a dashboard event reader (bench/dashreader.py) on the load generator's CPU; wait until it streams."""
    command = [sys.executable, "-S", "-m", "bench.dashreader", str(where[0]), str(where[1])]
    cpu = settings.client_cpu if scenario.pinned else None
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else _unpin(scenario, settings)
    reader = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, preexec_fn=pin)  # fmt: skip
    lines = Lines(reader.stdout)
    try:
        lines.next(time.monotonic() + 10, "first event from the dashboard")
    except Failed:
        reader.kill()
        reader.wait()
        reader.stdout.close()
        raise
    finally:
        lines.close()
    return reader


def stop_reader(reader: subprocess.Popen) -> int:
    """Stop the event reader; how many events it read."""
    reader.send_signal(signal.SIGTERM)
    lines = Lines(reader.stdout)
    try:
        return int(json.loads(lines.next(time.monotonic() + 5, "the event reader's count"))["events"])
    finally:
        lines.close()
        if reader.poll() is None:
            reader.kill()
        reader.wait()
        reader.stdout.close()


def drive(scenario: Scenario, settings: Settings, sid: int, target: str, tmp: str) -> dict[str, Any]:
    """Run the load generator against the server of session `sid`; its figures and the server's memory."""
    loadgen = settings.tls.loadgen if scenario.tls else settings.loadgen
    command = [str(loadgen), target, "-c", str(scenario.conns), "-d", str(scenario.depth),
               "-w", str(settings.warmup), "--settle", str(settings.settle), "-t", str(settings.seconds),
               "--connect-timeout", str(settings.connect_timeout), "--client-dir", tmp]  # fmt: skip
    if settings.client_cpu is not None and scenario.pinned:
        command += ["--cpu", str(settings.client_cpu)]
    command.append("--linger")  # it waits for a line after its result: the CPU times are read before any teardown
    if scenario.idle:
        command += ["--idle", str(scenario.idle), "--hold"]
    if scenario.slow:
        command += ["--slow", str(scenario.slow)]
    if scenario.tls:
        command += ["--tls-ca", str(settings.tls.cert)]  # verify the server's certificate (and its IP)
    if scenario.once:
        command.append("--once")
    at_rest = memory(sid)
    out: dict[str, Any] = {"rest_threads": at_rest["threads"]}
    at_rest_fds = open_fds(sid)
    at_rest_sockets = sockets_by_process(sid)
    client = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              preexec_fn=_unpin(scenario, settings))  # fmt: skip
    lines = Lines(client.stdout)
    window_start = None
    try:
        budget = 2 * settings.connect_timeout + settings.warmup + settings.seconds + 15
        deadline = time.monotonic() + budget
        while True:
            event = json.loads(lines.next(deadline, "result from the load generator"))
            if event["event"] == "idle-open":
                # Wait for the server to hold a descriptor per idle connection, then for its memory to settle.
                wanted = at_rest_fds + 0.99 * event["open"]
                fd_deadline = time.monotonic() + settings.connect_timeout
                while open_fds(sid) < wanted and time.monotonic() < fd_deadline:
                    time.sleep(0.05)  # polling the server's descriptor table, with a deadline
                held = settled_memory(sid, time.monotonic() + 3.0)
                out["idle_open"] = event["open"]
                if event["open"]:
                    out["idle_bytes"] = max(0, held["kb"] - at_rest["kb"]) * 1024 / event["open"]
                try:
                    client.stdin.write(b"go\n")
                    client.stdin.flush()
                except BrokenPipeError as exc:
                    raise Failed("the load generator died while holding idle connections") from exc
            elif event["event"] == "measure":
                window_start = _snapshot(sid, client.pid)
                time.sleep(settings.seconds * 0.6)  # read memory inside the measured window
                loaded = memory(sid)
                out.update(rss_kb=loaded["kb"], mem=loaded["metric"], threads=loaded["threads"], procs=loaded["procs"])
                held = {pid: n - at_rest_sockets.get(pid, 0) for pid, n in sockets_by_process(sid).items() if pid != sid}
                if len(held) > 1:  # worker processes under a supervisor (the session leader): who holds the clients
                    out["spread"] = sorted(held.values())
                    out["min_share"] = min(held.values()) / max(1, sum(held.values()))
            elif event["event"] == "result":
                window_end = _snapshot(sid, client.pid)
                try:
                    client.stdin.write(b"done\n")  # let it close its connections and exit (--linger)
                    client.stdin.flush()
                except BrokenPipeError:
                    pass  # it is gone already: its exit status says how
                break
        status = client.wait(5)
        if status != 0:
            raise Failed(f"the load generator exited with status {status}: {client.stderr.read().decode().strip()}")
    except subprocess.TimeoutExpired as exc:
        raise Failed("the load generator did not exit") from exc
    finally:
        lines.close()
        if client.poll() is None:
            client.kill()
        client.wait()
        for pipe in (client.stdin, client.stdout, client.stderr):
            pipe.close()
    out.update({k: event[k] for k in ("requests", "rps", "p50_us", "p99_us", "errors", "lost", "served", "open", "conns",
                                      "connect_failed", "idle_closed", "slow_closed", "cpu")})  # fmt: skip
    out["noise"] = noise.others(window_start, window_end) if window_start and window_end else None
    if out["noise"] and out["requests"]:
        out["cpu_us"] = out["noise"]["server_s"] / out["requests"] * 1e6  # the server's processes, all of them
    return out


def _unpin(scenario: Scenario, settings: Settings) -> Any:
    """For an unpinned scenario, what gives a child every CPU back (the harness keeps to one of them)."""
    if scenario.pinned or settings.cpus is None:
        return None
    cpus = settings.cpus
    return lambda: os.sched_setaffinity(0, cpus)


def _snapshot(sid: int, loadgen_pid: int) -> noise.Snapshot | None:
    """The CPU times at one end of the window; None (no noise figure) if /proc could not be read."""
    try:
        return noise.snapshot(sid, loadgen_pid)
    except (OSError, ValueError, IndexError):
        return None
