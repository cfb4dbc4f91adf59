"""The servers' bounds in seconds, checked where they are set.

A bound that is NaN, infinite or negative is refused with ``UsageError``
when it is set (in a class body, on an instance, or in the constructor
for a class attribute changed later): a NaN deadline would never compare
as due (and made the loop spin), an infinite one or one past epoll's limit
(about 24.8 days) made ``select()`` raise OverflowError.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import UsageError

__all__ = ["SECONDS", "check_seconds"]

#: The server attributes that are seconds, and whether 0 is a valid value
#: (0 for ``timeout``: handle_request() polls; for ``drain_timeout``: do not wait).
SECONDS = {
    "idle_timeout": False, "request_timeout": False, "write_timeout": False, "handshake_timeout": False,
    "proxy_timeout": False, "drain_timeout": True, "timeout": True,
}  # fmt: skip


def check_seconds(name: str, value: Any, zero_ok: bool = False) -> None:
    """Raise UsageError unless ``value`` is None or a finite number of seconds (> 0, or >= 0).

    NaN, infinities and negative numbers are refused where they are set: a
    NaN deadline would never compare as due (and made the loop spin), an
    infinite one or one past epoll's limit (about 24.8 days) made
    ``select()`` raise OverflowError.  None means "no limit".
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name} must be a number of seconds or None (no limit), not {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        least = ">= 0" if zero_ok else "> 0"
        raise UsageError(f"{name} must be a finite number of seconds {least}, or None for no limit; not {value!r}")
