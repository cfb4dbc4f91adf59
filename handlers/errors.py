"""The exceptions reactor raises, arranged so the type names who is to blame.

They live in the ``handlers`` package because handlers and framers raise
them too and must not import the loop; ``reactor.errors`` is the same module
under the name users import.

    ReactorError            anything this library raises on purpose
    ├── UsageError          the caller used the API wrongly (fix the calling code)
    │   └── TransitionError a record was asked to make a move its state forbids
    ├── ProtocolError       the peer sent something we cannot accept
    │   └── MessageTooLong  a message over its size limit
    ├── ClosedError         the object was closed by us; nothing more to do with it
    └── BrokenError         the network failed; the OSError is in __cause__

``TransitionError`` is a ``UsageError`` because an illegal transition is
always a bug in the code driving the table (ours or a subclass's), never
the peer's doing.
"""

from __future__ import annotations

__all__ = [
    "ReactorError",
    "UsageError",
    "TransitionError",
    "ProtocolError",
    "MessageTooLong",
    "ClosedError",
    "BrokenError",
]


class ReactorError(Exception):
    """Base class of every exception reactor raises on purpose."""


class UsageError(ReactorError):
    """The API was used in a way it does not allow."""


class TransitionError(UsageError):
    """A record was sent an event that its current state does not accept.

    The message names the record, its state and the event, because the
    stack of a callback rarely says how the record got there.
    """

    def __init__(self, record: object, state: object, event: object) -> None:
        self.record = record
        self.state = state
        self.event = event
        super().__init__(
            f"illegal transition for {record!r}: event {getattr(event, 'name', event)} "
            f"in state {getattr(state, 'name', state)}"
        )


class ProtocolError(ReactorError):
    """The peer misbehaved.  ``reply`` is a suggested answer to send, or None."""

    def __init__(self, message: str, reply: bytes | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class MessageTooLong(ProtocolError):
    """A message (or the part of it received so far) is over its size limit.

    ``limit`` is the limit that was exceeded and ``size`` the size seen (for
    a partial message: what was buffered when the limit was crossed).
    """

    def __init__(self, size: int, limit: int, reply: bytes | None = None) -> None:
        super().__init__(f"message of {size} bytes or more is over the limit of {limit} bytes", reply)
        self.size = size
        self.limit = limit


class ClosedError(ReactorError):
    """The object was closed by this process and cannot be used any more."""


class BrokenError(ReactorError):
    """The network failed under us; the original ``OSError`` is ``__cause__``."""
