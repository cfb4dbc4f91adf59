"""Servers on Unix sockets, and the care their socket files need.

A Unix socket's address is a file.  socketserver leaves that file behind
when the server closes, so the next start fails with EADDRINUSE; and a
careless cleanup can delete a file that another live server owns.  The
rules here (docs/servers.md, "Unix socket files"):

* **A lock beside the socket says who owns the path.**  ``server_bind()``
  opens ``PATH.lock`` and takes ``flock(LOCK_EX | LOCK_NB)`` on it before
  it looks at the socket file, and the server holds it until
  ``server_close()``.  Held by another process: ``OSError(EADDRINUSE)``,
  the socket file untouched, nothing waited for and no connection made.
  The kernel drops the lock when its holder dies, so a crash never leaves
  a path locked.
* **Only a provably stale socket file is removed.**  Holding the lock, a
  socket file found at the path was left by a dead owner, unless its owner
  does not use our lock (socat, an older version).  A ``SOCK_DGRAM``
  ``connect()`` to the file tells: the kernel refuses it (ECONNREFUSED)
  only when no socket of any type is bound to that file, says EPROTOTYPE
  for a bound stream socket (listening or not, backlog full or not) and
  accepts it for a bound datagram socket.  It never blocks and the owner
  sees nothing.  Refused: the file is removed.  Anything else: EADDRINUSE,
  and the file is left for its owner or the user to remove.  A file that
  is not a socket is never touched: ``bind()`` reports it.
* **Only the process that bound the file removes it**, in ``server_close()``,
  and only while it is still the file it created (same device and inode;
  nodejs/node#19729); the same goes for the lock file.  A forked copy that
  closes the server (leaving a ``with`` block) closes its descriptors and
  leaves both files, and the lock, to the parent.
* **``socket_mode``** (e.g. ``0o660``; None: the umask decides) is the
  file's mode before anyone can connect or send (see ``_create_at_most``).
* Abstract names (a leading NUL byte) and autobind ('') have no file: no
  lock, no check, no mode.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import stat
from typing import Any

from .datagram import UDPServer
from .errors import UsageError
from .tcp import TCPServer

__all__ = ["UnixStreamServer", "UnixDatagramServer"]

log = logging.getLogger("reactor")


class _SocketFile:
    """What both Unix servers do about their socket file (see the module docstring)."""

    server_address: Any
    socket: socket.socket

    #: Permission bits of the socket file (e.g. ``0o660``: owner and group
    #: may connect), in place before anyone can connect or send.  None: the
    #: umask decides, as for any file.  Needs a path (not an abstract name).
    socket_mode: int | None = None

    _claim: _Claim | None = None

    def server_bind(self) -> None:
        mode = _checked_mode(self.socket_mode, self.server_address)
        claim = _Claim.take(self.server_address)  # None for an address without a file
        try:
            if mode is not None:
                _create_at_most(self.socket, mode)
            super().server_bind()  # type: ignore[misc]
            if claim is not None:
                claim.bound()
                if mode is not None:
                    os.chmod(claim.path, mode)  # before listen(): nobody has connected yet
        except BaseException:
            if claim is not None:
                claim.release()
            raise
        self._claim = claim

    def server_close(self) -> None:
        try:
            super().server_close()  # type: ignore[misc]
        finally:
            claim, self._claim = self._claim, None
            if claim is not None:
                claim.release()

    def _in_child(self, keep: Any = ()) -> None:
        # A child forked to run one request has no business with the lock:
        # close its copy (the lock stays with the parent's descriptor).
        super()._in_child(keep)  # type: ignore[misc]
        if self._claim is not None:
            self._claim.drop_copy()


class UnixStreamServer(_SocketFile, TCPServer):
    """A stream server on a Unix socket; ``server_address`` is a path.

    ``server_bind()`` takes the lock ``PATH.lock`` (``OSError`` EADDRINUSE
    if another process holds it, or if a socket bound by a process that
    does not use the lock is at the path), removes a stale socket file,
    binds and applies ``socket_mode``.  ``server_close()`` removes the socket
    file and the lock file, only in the process that bound them.
    """

    address_family = getattr(socket, "AF_UNIX", None)


class UnixDatagramServer(_SocketFile, UDPServer):
    """A datagram server on a Unix socket; ``server_address`` is a path.

    Socket file, lock and ``socket_mode`` as for ``UnixStreamServer``.
    """

    address_family = getattr(socket, "AF_UNIX", None)


class _Claim:
    """This process's hold on a socket path: the lock file's descriptor, and
    which socket file it bound there, so that only it removes them."""

    def __init__(self, path: Any, lock_path: Any, fd: int) -> None:
        self.path = path
        self.lock_path = lock_path
        self.fd = fd
        self.pid = os.getpid()  # who may remove the files
        self.socket_file: tuple[int, int] | None = None  # (device, inode) once bound

    @classmethod
    def take(cls, address: Any) -> _Claim | None:
        """Lock ``address`` and clear a stale socket file from it; None if it has no file.

        Raises ``OSError`` (EADDRINUSE) if the path is held, by our lock or
        by a bound socket; the socket file is then left as it was.
        """
        if not _is_path(address):
            return None
        path = os.fspath(address)
        lock_path = path + (b".lock" if isinstance(path, bytes) else ".lock")
        claim = cls(path, lock_path, _lock(path, lock_path))
        try:
            _remove_stale_socket(path, lock_path)
        except BaseException:
            claim.release()
            raise
        return claim

    def bound(self) -> None:
        self.socket_file = _identity(self.path)

    def release(self) -> None:
        """Remove the files if this process made them, then let go of the lock."""
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        try:
            if os.getpid() == self.pid:
                # The socket file first: once the lock file is gone, a new
                # server may lock a new one and must find the path free.
                _unlink_if_same(self.path, self.socket_file)
                st = os.fstat(fd)
                _unlink_if_same(self.lock_path, (st.st_dev, st.st_ino))
        finally:
            os.close(fd)  # drops the lock, unless a forked child still holds a copy

    def drop_copy(self) -> None:
        """In a forked child: close this copy of the lock descriptor, remove nothing."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)  # never LOCK_UN: that would release the parent's lock too


# ---------------------------------------------------------------- helpers


def _is_path(address: Any) -> bool:
    # Abstract names (a leading NUL) and autobind ('') have no file.
    if isinstance(address, bytes):
        address = os.fsdecode(address)
    return isinstance(address, (str, os.PathLike)) and str(address)[:1] not in ("", "\0")


def _identity(path: Any) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _in_use(path: Any, why: str) -> OSError:
    return OSError(errno.EADDRINUSE, f"{os.fsdecode(path)} is in use by another process ({why})")


def _lock(path: Any, lock_path: Any) -> int:
    """Open ``lock_path`` and take its lock without waiting; return the descriptor.

    O_CLOEXEC: a program we exec never inherits the lock.  A forked child
    does (flock locks belong to the open file description): the lock then
    lasts until the owner and every such child have closed it.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    for _ in range(8):
        fd = os.open(lock_path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # An owner removes its lock file before it lets go of the lock: if
            # the file we locked is no longer the one at the path, we locked
            # the old one; a newcomer may hold the new one.  Try again.
            st = os.fstat(fd)
            if _identity(lock_path) == (st.st_dev, st.st_ino):
                return fd
        except BlockingIOError:
            os.close(fd)
            raise _in_use(path, f"it holds the lock {os.fsdecode(lock_path)}") from None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise _in_use(path, f"its lock file {os.fsdecode(lock_path)} keeps being replaced")


def _remove_stale_socket(path: Any, lock_path: Any) -> None:
    """With the lock held: remove ``path`` if it is a socket file that nobody is bound to."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return  # not a socket: never ours to remove; bind() reports EADDRINUSE
    except FileNotFoundError:
        return
    why = _bound_elsewhere(path)
    if why:
        raise _in_use(path, f"{why}, and it does not use the lock {os.fsdecode(lock_path)}; "
                      "if you know it is stale, remove it")  # fmt: skip
    log.info("removing stale socket file %s (nothing is bound to it)", os.fsdecode(path))
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _bound_elsewhere(path: Any) -> str:
    """Why ``path`` may be in use, or '' if no socket is bound to it.

    A datagram connect() never waits, sends nothing, and is refused only
    when no socket of any type is bound to the file (a stream connect would
    be refused by a bound socket that is not listening yet, and would block
    on a full backlog).
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return ""
        except OSError as exc:
            if exc.errno == errno.EPROTOTYPE:
                return "a stream socket is bound to it"
            return f"cannot tell whether a socket is bound to it: {exc.strerror}"
    return "a datagram socket is bound to it"


def _unlink_if_same(path: Any, identity: tuple[int, int] | None) -> None:
    """Unlink ``path`` if it is still the file ``identity`` names."""
    if identity is None or _identity(path) != identity:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _checked_mode(mode: Any, address: Any) -> int | None:
    if mode is None:
        return None
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise UsageError(f"socket_mode must be None or an int from 0 to 0o7777 (like 0o660), not {mode!r}")
    if not _is_path(address):
        raise UsageError(f"socket_mode needs a socket file, and the address {address!r} has none (abstract or autobind)")
    return mode


def _create_at_most(sock: socket.socket, mode: int) -> None:
    """Make ``bind()`` create the socket file never more open than ``mode``.

    Linux creates a socket file with the socket inode's mode masked by the
    umask, so ``fchmod()`` on the socket before ``bind()`` makes the file at
    most ``mode`` from its first moment; the ``chmod()`` after ``bind()`` then
    sets it exactly (it can only open it further, up to ``mode``).  A stream
    socket cannot be reached before ``listen()`` anyway; a datagram socket
    can from ``bind()`` on, hence this.  Where ``fchmod()`` on a socket fails
    (other systems), the file has the umask's mode until the ``chmod()``.
    The umask is left alone: it is process-wide, and other threads create files.
    """
    try:
        os.fchmod(sock.fileno(), mode)
    except OSError:
        pass  # not on this system: the chmod() after bind() still sets the mode
