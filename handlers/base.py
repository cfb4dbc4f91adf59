"""BaseRequestHandler: the shape every handler has.

A handler object lives for exactly one request.  Its constructor runs the
whole lifecycle, ``setup()`` then ``handle()`` then ``finish()``; ``finish``
runs even when ``handle`` raises, and the exception then goes on to the
server (which passes it to ``handle_error``).

The three attributes a handler finds, as in the stdlib:

* ``self.request``: what the server's ``get_request()`` produced (a
  connected socket for stream servers, ``(data, socket)`` for datagram ones);
* ``self.client_address``: the peer's address;
* ``self.server``: the server instance, for per-server state.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BaseRequestHandler"]


class BaseRequestHandler:
    """Base class for request handlers: override ``handle()`` (and maybe
    ``setup()``/``finish()``).  Instantiating it handles the request."""

    def __init__(self, request: Any, client_address: Any, server: Any) -> None:
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self) -> None:
        """Prepare for ``handle()``.  Does nothing by default."""

    def handle(self) -> None:
        """Serve the request.  Does nothing by default."""

    def finish(self) -> None:
        """Clean up after ``handle()``, even when it raised.  Does nothing by default."""
