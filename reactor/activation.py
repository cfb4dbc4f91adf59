"""Serving sockets made by someone else: systemd's socket activation, or any socket handed over.

A service manager can make the listening sockets itself and start the
server only to serve them (systemd's ``.socket`` units; for a try from the
shell, ``systemd-socket-activate -l 127.0.0.1:9000 -l /tmp/echo.sock
COMMAND``).  The protocol (``sd_listen_fds(3)``), as this module reads it:

* ``LISTEN_PID`` is the pid the sockets are meant for: another process's
  (a parent's, inherited by mistake), or none, means "not for us", and
  they are ignored;
* ``LISTEN_FDS`` is how many there are; they are descriptors 3, 4, ...
  ``LISTEN_FDNAMES`` optionally names them (colon-separated);
* the variables are removed from the environment once read, so that a
  program this process starts does not take the sockets for its own; and
  each descriptor is made close-on-exec for the same reason.

``listen_fds()`` returns the sockets (``socket.socket`` objects, family and
type read from the descriptor); ``server_class_for(sock)`` picks the
server class for a socket's family and type, and ``server_on(sock,
Handler)`` builds the server (``TCPServer.from_socket``), which never binds,
never listens and never removes a Unix socket file it did not create.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from typing import Any, MutableMapping, NamedTuple

from .datagram import UDPServer
from .errors import UsageError
from .tcp import TCPServer
from .unix import UnixDatagramServer, UnixStreamServer

__all__ = ["Passed", "listen_fds", "server_class_for", "server_on", "LISTEN_FDS_START"]

log = logging.getLogger("reactor")

#: The first descriptor passed (``SD_LISTEN_FDS_START``): 0, 1 and 2 are stdin, stdout and stderr.
LISTEN_FDS_START = 3

_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class Passed(NamedTuple):
    """One socket passed to this process: the socket and its name (``LISTEN_FDNAMES``; '' if unnamed)."""

    socket: socket.socket
    name: str


def listen_fds(*, unset_environment: bool = True, environ: MutableMapping[str, str] | None = None) -> list[Passed]:
    """The sockets passed to this process by socket activation, in descriptor order; [] if none.

    Reads ``LISTEN_PID``, ``LISTEN_FDS`` and ``LISTEN_FDNAMES`` from
    ``environ`` (default ``os.environ``) and, with ``unset_environment``,
    removes them from it (whether they were for us or not).  Variables
    meant for another pid are ignored (logged at DEBUG).  Every descriptor
    becomes close-on-exec.  Raises ``UsageError`` for nonsense: a value that
    is not a number, a descriptor that is not open or not a socket (the
    descriptors already checked are left open, as they were given).
    """
    env = os.environ if environ is None else environ
    values = {name: env.get(name) for name in _VARIABLES}
    if unset_environment:
        for name in _VARIABLES:
            env.pop(name, None)
    pid_text, count_text, names_text = values["LISTEN_PID"], values["LISTEN_FDS"], values["LISTEN_FDNAMES"]
    if count_text is None or pid_text is None:
        return []
    pid = _number("LISTEN_PID", pid_text)
    if pid != os.getpid():
        log.debug("LISTEN_FDS is for pid %s, not this process (%d): ignored", pid_text, os.getpid())
        return []
    count = _number("LISTEN_FDS", count_text)
    names = names_text.split(":") if names_text else []
    if names and len(names) != count:
        raise UsageError(f"LISTEN_FDNAMES names {len(names)} socket(s) but LISTEN_FDS says {count}")
    passed = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count):
        try:
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            raise UsageError(f"LISTEN_FDS={count}, but descriptor {fd} is not open: {exc.strerror}") from None
        if not stat.S_ISSOCK(mode):
            raise UsageError(f"LISTEN_FDS={count}, but descriptor {fd} is not a socket")
        os.set_inheritable(fd, False)  # close-on-exec: a program we start must not serve it
        passed.append(Passed(socket.socket(fileno=fd), names[fd - LISTEN_FDS_START] if names else ""))
    return passed


def server_class_for(sock: socket.socket) -> type:
    """The server class for ``sock``'s family and type: TCPServer, UDPServer,
    UnixStreamServer or UnixDatagramServer.  Raises ``UsageError`` for any other
    (a SOCK_SEQPACKET socket, a netlink one...)."""
    unix = getattr(socket, "AF_UNIX", None)
    classes = {
        (socket.AF_INET, socket.SOCK_STREAM): TCPServer,
        (socket.AF_INET6, socket.SOCK_STREAM): TCPServer,
        (socket.AF_INET, socket.SOCK_DGRAM): UDPServer,
        (socket.AF_INET6, socket.SOCK_DGRAM): UDPServer,
        (unix, socket.SOCK_STREAM): UnixStreamServer,
        (unix, socket.SOCK_DGRAM): UnixDatagramServer,
    }
    found = classes.get((sock.family, sock.type))
    if found is None:
        raise UsageError(f"no server class serves a {_name(sock.family)} {_name(sock.type)} socket "
                         "(TCP, UDP, Unix stream and Unix datagram only)")  # fmt: skip
    return found


def server_on(sock: socket.socket, RequestHandlerClass: Any, **kwargs: Any) -> Any:
    """A server on ``sock`` of the class its family and type need (``server_class_for``),
    made with ``from_socket``: it takes the socket, never binds or listens, and removes
    no socket file.  ``kwargs`` go to the constructor (``dispatch=``, ``ssl_context=``)."""
    server_class: Any = server_class_for(sock)
    return server_class.from_socket(sock, RequestHandlerClass, **kwargs)


def _name(constant: Any) -> str:
    return str(getattr(constant, "name", constant))


def _number(name: str, text: str | None) -> int:
    if text is None or not text.isdigit():
        raise UsageError(f"{name} must be a whole number, not {text!r}")
    return int(text)
