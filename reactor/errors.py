"""The exception tree (``ReactorError`` and its children): see ``handlers.errors``.

This module is that one under the name users import: ``reactor.errors.X is
handlers.errors.X`` for every name.
"""

from handlers.errors import (
    BrokenError,
    ClosedError,
    MessageTooLong,
    ProtocolError,
    ReactorError,
    TransitionError,
    UsageError,
)

__all__ = [
    "ReactorError",
    "UsageError",
    "TransitionError",
    "ProtocolError",
    "MessageTooLong",
    "ClosedError",
    "BrokenError",
]
