"""Servers on Unix sockets, and the care their socket files need.

A Unix socket's address is a file.  socketserver leaves that file behind
when the server closes, so the next start fails with EADDRINUSE.  Here:

* before ``bind()``, a socket file nobody is bound to any more (its owner
  died: a test connect is refused) is removed; anything else in the way, a
  live socket or a regular file, is left alone for ``bind()`` to report;
* ``server_close()`` removes the file, but only if it is still the one this
  server created (same device and inode): a file that another process put
  there since is not ours to delete (nodejs/node#19729);
* abstract names (a leading NUL byte) and autobind ('') have no file.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from typing import Any

from .datagram import UDPServer
from .tcp import TCPServer

__all__ = ["UnixStreamServer", "UnixDatagramServer"]

log = logging.getLogger("reactor")


class _SocketFile:
    """What both Unix servers do about their socket file (see the module docstring)."""

    server_address: Any
    socket_type: int

    def server_bind(self) -> None:
        _remove_stale_socket(self.server_address, self.socket_type)
        super().server_bind()  # type: ignore[misc]
        self._socket_file = _file_identity(self.server_address)

    def server_close(self) -> None:
        try:
            super().server_close()  # type: ignore[misc]
        finally:
            _remove_own_socket(self.server_address, getattr(self, "_socket_file", None))


class UnixStreamServer(_SocketFile, TCPServer):
    """A stream server on a Unix socket; ``server_address`` is a path.

    Before binding, a socket file that nobody listens on any more (left by
    a process that died) is removed; ``server_close()`` removes the file
    this server created, unless it was replaced meanwhile.
    """

    address_family = getattr(socket, "AF_UNIX", None)


class UnixDatagramServer(_SocketFile, UDPServer):
    """A datagram server on a Unix socket; ``server_address`` is a path.

    Socket file handling as for ``UnixStreamServer``.
    """

    address_family = getattr(socket, "AF_UNIX", None)


# ---------------------------------------------------------------- helpers


def _is_path(address: Any) -> bool:
    # Abstract names (a leading NUL) and autobind ('') have no file.
    if isinstance(address, bytes):
        address = os.fsdecode(address)
    return isinstance(address, (str, os.PathLike)) and str(address)[:1] not in ("", "\0")


def _file_identity(address: Any) -> tuple[int, int] | None:
    if not _is_path(address):
        return None
    try:
        st = os.lstat(address)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _remove_stale_socket(address: Any, socket_type: int) -> None:
    """Remove ``address`` if it is a socket file that nobody is bound to."""
    if not _is_path(address):
        return
    try:
        if not stat.S_ISSOCK(os.lstat(address).st_mode):
            return  # not a socket: let bind() report EADDRINUSE
    except OSError:
        return
    probe = socket.socket(socket.AF_UNIX, socket_type)
    try:
        probe.connect(address)
    except ConnectionRefusedError:
        log.info("removing stale socket file %s (nothing is bound to it)", address)
        try:
            os.unlink(address)
        except FileNotFoundError:
            pass
    except OSError:
        pass  # in use, or not ours to judge: bind() will say
    finally:
        probe.close()


def _remove_own_socket(address: Any, identity: tuple[int, int] | None) -> None:
    """Unlink the socket file we bound, unless it is not ours any more."""
    if identity is None or _file_identity(address) != identity:
        return
    try:
        os.unlink(address)
    except FileNotFoundError:
        pass
