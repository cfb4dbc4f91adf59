"""Compile the load generator (bench/loadgen.c) with the system's C compiler.

Two binaries, from the same sources:

* ``build/bench/loadgen``: plain, needs nothing but a C compiler and libc;
  every scenario but the TLS ones uses it;
* ``build/bench/loadgen-tls``: the same with TLS (``-DLOADGEN_TLS``, linked
  with ``-lssl -lcrypto``: Debian's ``libssl-dev``), for the TLS scenarios
  only.  When it cannot be built the TLS scenarios are skipped
  (bench/tls.py) and everything else still runs.

``build/`` is ignored by git.  A binary is rebuilt when a source is newer.
It is written to a temporary name and renamed, so two runs building at
once never see half a file.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bench" / "loadgen.c"
SOURCES = [SOURCE] + [ROOT / "bench" / name for name in ("loadgen_addr.c", "loadgen_hist.c", "loadgen_tls.c", "loadgen.h")]
BUILD = ROOT / "build" / "bench"
BINARY = BUILD / "loadgen"
TLS_BINARY = BUILD / "loadgen-tls"


class NoCompiler(RuntimeError):
    """No C compiler was found: the load generator cannot be built."""


def compiler() -> str | None:
    """The C compiler to use: $CC, else cc, gcc or clang on PATH; None if there is none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compile(binary: pathlib.Path, flags: list[str], libraries: list[str]) -> pathlib.Path:
    """Path of an up-to-date `binary`, compiling the sources with `flags` and `libraries` if needed."""
    if binary.exists() and all(binary.stat().st_mtime >= source.stat().st_mtime for source in SOURCES):
        return binary
    cc = compiler()
    if cc is None:
        raise NoCompiler("no C compiler (cc, gcc, clang or $CC) to build bench/loadgen.c")
    BUILD.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=BUILD, prefix=f".{binary.name}-")
    os.close(fd)
    sources = [str(s) for s in SOURCES if s.suffix == ".c"]
    try:
        done = subprocess.run([cc, "-O2", *flags, "-o", temporary, *sources, *libraries], capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"compiling {os.path.relpath(binary, ROOT)} failed: {done.stderr.strip() or 'no message'}")
        os.replace(temporary, binary)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return binary


def loadgen() -> pathlib.Path:
    """Path of an up-to-date plain load generator, compiling it if needed.

    Raises NoCompiler if there is no C compiler, RuntimeError (with the
    compiler's output) if compiling fails."""
    return _compile(BINARY, [], [])


def loadgen_tls() -> pathlib.Path:
    """Path of an up-to-date load generator with TLS (OpenSSL), compiling it if needed.

    Raises as loadgen() does; without OpenSSL's headers or libraries, RuntimeError."""
    return _compile(TLS_BINARY, ["-DLOADGEN_TLS"], ["-lssl", "-lcrypto"])
