"""Compile the load generator (bench/loadgen.c) with the system's C compiler.

The binary goes to ``build/bench/loadgen`` (``build/`` is ignored by git)
and is rebuilt when the source is newer.  It is written to a temporary name
and renamed, so two runs building at once never see half a file.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bench" / "loadgen.c"
BUILD = ROOT / "build" / "bench"
BINARY = BUILD / "loadgen"


class NoCompiler(RuntimeError):
    """No C compiler was found: the load generator cannot be built."""


def compiler() -> str | None:
    """The C compiler to use: $CC, else cc, gcc or clang on PATH; None if there is none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def loadgen() -> pathlib.Path:
    """Path of an up-to-date load generator binary, compiling it if needed.

    Raises NoCompiler if there is no C compiler, RuntimeError (with the
    compiler's output) if compiling fails."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    cc = compiler()
    if cc is None:
        raise NoCompiler("no C compiler (cc, gcc, clang or $CC) to build bench/loadgen.c")
    BUILD.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=BUILD, prefix=".loadgen-")
    os.close(fd)
    try:
        done = subprocess.run([cc, "-O2", "-o", temporary, str(SOURCE)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE} failed:\n{done.stderr}")
        os.replace(temporary, BINARY)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return BINARY
