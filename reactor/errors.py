"""The exceptions reactor raises, arranged so the type names who is to blame.

    ReactorError            anything this library raises on purpose
    ├── UsageError          the caller used the API wrongly (fix the calling code)
    │   └── TransitionError a record was asked to make a move its state forbids
    ├── ProtocolError       the peer sent something we cannot accept
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


class ClosedError(ReactorError):
    """The object was closed by this process and cannot be used any more."""


class BrokenError(ReactorError):
    """The network failed under us; the original ``OSError`` is ``__cause__``."""
