"""A small HTTP/1.1 server for GET routes, written as a framed handler of this library.

HTTP is a line protocol with a twist: a request is a *head* (a request
line and header lines, ended by an empty line), optionally followed by a
body whose length the head gives.  A read-only server needs no bodies, so
the whole of HTTP it speaks fits in the three pieces of this module:

* ``RequestHead``: a framer (handlers/framing.py) that cuts the byte
  stream into request heads.  A head over ``MAX_HEAD`` bytes is a
  protocol error whose reply is ``431 Request Header Fields Too Large``;
  the connection sends it and closes (reactor/connection.py does that for
  any ``ProtocolError`` that carries a ``reply``).
* ``parse_head(head) -> Request``: the request line and headers, checked;
  anything malformed raises ``BadRequest`` with the status to answer.
* ``GetHandler``: a ``MessageHandler`` that answers each head by calling
  the method its ``routes`` name for the path, and refuses the rest:
  405 for a method other than GET and HEAD, 400 for a request with a body
  (it would be read as the next head), 404 for an unknown path.

Connections stay open between requests (HTTP/1.1 keep-alive) unless the
client says ``Connection: close`` or speaks HTTP/1.0 without asking for
keep-alive; after an error answer the connection is closed.  Every bound
is the server's own (``max_connections``, ``idle_timeout``,
``request_timeout``, ``output_high_water``): this is just another framed
server of the library.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from handlers.errors import MessageTooLong
from handlers.framing import Data, Framer
from handlers.message import MessageHandler

__all__ = ["RequestHead", "Request", "BadRequest", "parse_head", "response", "GetHandler", "MAX_HEAD", "REASONS"]

log = logging.getLogger("reactor")

#: The largest request head (request line and headers) accepted: 8 KiB.
MAX_HEAD = 8192

#: The reason phrases of the statuses this server sends.
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def response(status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8",
             headers: tuple[tuple[str, str], ...] = (), head_only: bool = False, close: bool = False) -> bytes:  # fmt: skip
    """The bytes of a whole response: status line, headers, then ``body`` (left out if ``head_only``).

    ``Content-Length`` is always sent, so the client knows where the
    response ends and can send its next request on the same connection.
    """
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", "Cache-Control: no-store"]  # fmt: skip
    lines += [f"{name}: {value}" for name, value in headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


def error_response(status: int, why: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A short plain-text error answer that closes the connection."""
    return response(status, f"{status} {REASONS.get(status, '')}: {why}\n".encode(), headers=headers, close=True)


class RequestHead(Framer):
    """Cuts an HTTP/1.x byte stream into request heads: everything up to and including the empty line.

    The message is the head's bytes; a client may end lines with ``\\r\\n``
    (as it must) or a bare ``\\n`` (as some hand-typed ones do).  A head
    longer than ``max_length`` raises ``MessageTooLong`` carrying the 431
    answer, as soon as that is known.
    """

    overhead = 0

    def __init__(self, max_length: int = MAX_HEAD) -> None:
        self.max_length = max_length

    def find(self, data: Data) -> tuple[bytes, int] | None:
        ends = [at + len(blank) for blank in (b"\n\r\n", b"\n\n") if (at := data.find(blank)) >= 0]
        end = min(ends) if ends else -1
        if end < 0 and len(data) >= self.max_length:
            raise MessageTooLong(len(data) + 1, self.max_length, reply=_TOO_LONG)
        if end < 0:
            return None
        if end > self.max_length:
            raise MessageTooLong(end, self.max_length, reply=_TOO_LONG)
        return bytes(data[:end]), end


_TOO_LONG = error_response(431, f"the request head is over {MAX_HEAD} bytes")


class BadRequest(Exception):
    """A request this server will not serve: ``status`` says how to answer, the message why."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


@dataclass
class Request:
    """One parsed request head.  Header names are lower case; a repeated header keeps its last value."""

    method: str
    target: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]

    @property
    def keep_alive(self) -> bool:
        """Does the client want the connection kept open after this request?"""
        wants = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in wants
        return "close" not in wants

    @property
    def has_body(self) -> bool:
        """Does a body follow the head (which this server does not read)?"""
        length = self.headers.get("content-length", "0").strip()
        return "transfer-encoding" in self.headers or length not in ("", "0")


def parse_head(head: bytes) -> Request:
    """Parse a request head (what ``RequestHead`` framed); raise ``BadRequest`` if it is malformed."""
    lines = head.decode("latin-1").split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise BadRequest(400, "empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not all(parts):
        raise BadRequest(400, f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if not set(method.encode("latin-1")) <= _TOKEN:
        raise BadRequest(400, "malformed method")
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(400, f"unsupported protocol {version[:20]!r}")
    if not target.startswith("/"):
        raise BadRequest(400, "the target must be a path")
    request = Request(method, target, version)
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or not set(name.encode("latin-1")) <= _TOKEN:
            raise BadRequest(400, f"malformed header line {line[:80]!r}")
        request.headers[name.lower()] = value.strip(" \t")
    if request.version == "HTTP/1.1" and "host" not in request.headers:
        raise BadRequest(400, "an HTTP/1.1 request needs a Host header")
    return request


class GetHandler(MessageHandler):
    """A framed handler answering GET and HEAD requests by route; subclass it and fill ``routes``.

    ``routes`` maps a path to the name of a method ``method(request) ->
    (status, content_type, body)``; ``handle`` answers with it, adding the
    headers, leaving the body out for HEAD, and keeping the connection
    open if the client wants.  A route may instead answer by itself
    (an event stream does) and return None.
    """

    framing = RequestHead()
    routes: dict[str, str] = {}

    def handle(self) -> None:
        try:
            request = parse_head(self.message)
        except BadRequest as exc:
            self._refuse(exc.status, str(exc))
            return
        if request.method not in ("GET", "HEAD"):
            self._refuse(405, f"{request.method} is not served here: this server is read-only",
                         (("Allow", "GET, HEAD"),))  # fmt: skip
            return
        if request.has_body:
            self._refuse(400, "a GET request has no body")
            return
        route = self.routes.get(request.path)
        if route is None:
            self._refuse(404, f"no such page {request.path[:80]!r}")
            return
        answer = getattr(self, route)(request)
        if answer is None:
            return  # the route answered by itself
        status, content_type, body = answer
        close = not request.keep_alive
        self.wfile.write(response(status, body, content_type, head_only=request.method == "HEAD", close=close))
        if close:
            self.connection.close()

    def _refuse(self, status: int, why: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Answer with an error and close the connection (what follows a bad request cannot be trusted)."""
        log.debug("%s: %r: %d %s", self.server.request_table.name, self.client_address, status, why)
        self.server.request_table.count(f"http_{status}")
        self.wfile.write(error_response(status, why, headers))
        self.connection.close()

