"""DatagramRequestHandler: one datagram in, one datagram out.

``self.request`` is ``(data, server_socket)``.  ``setup()`` makes
``self.packet`` (the bytes) readable through ``self.rfile`` and collects
what the handler writes to ``self.wfile``; ``finish()`` sends that back to
the client as one datagram, an empty one if nothing was written (as the
stdlib does).  A Unix datagram client that did not bind an address cannot
be answered; for it nothing is sent.  It never blocks waiting for the peer, which is
why a datagram server is "framed by nature": the reactor has already read
the whole message before the handler runs.
"""

from __future__ import annotations

import io

from .base import BaseRequestHandler

__all__ = ["DatagramRequestHandler"]


class DatagramRequestHandler(BaseRequestHandler):
    """Provides ``self.rfile`` (the datagram) and ``self.wfile`` (the reply)."""

    def setup(self) -> None:
        """Set ``self.packet`` and ``self.socket`` from the request, ``self.rfile``
        (reads the packet) and ``self.wfile`` (collects the reply).  An override
        must call ``super().setup()``."""
        self.packet, self.socket = self.request
        self.rfile = io.BytesIO(self.packet)
        self.wfile = io.BytesIO()

    def finish(self) -> None:
        """Send what was written to ``wfile`` back to the client, as one datagram
        (empty if nothing was written; nothing to an unbound Unix client)."""
        if self.client_address in (None, "", b""):
            return  # an unbound Unix datagram client: there is no address to answer
        self.socket.sendto(self.wfile.getvalue(), self.client_address)
