"""The servers' bounds (in seconds, and counts), checked where they are set.

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

__all__ = ["SECONDS", "COUNTS", "Bounded", "check_seconds", "check_count"]

#: The server attributes that are seconds, and whether 0 is a valid value
#: (0 for ``timeout``: handle_request() polls; for ``drain_timeout``: do not wait).
SECONDS = {
    "idle_timeout": False, "request_timeout": False, "write_timeout": False, "handshake_timeout": False,
    "proxy_timeout": False, "drain_timeout": True, "timeout": True,
}  # fmt: skip

#: The server attributes that are whole numbers of at least 1.
COUNTS = ("requests_per_wakeup",)


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


def check_count(name: str, value: Any) -> None:
    """Raise UsageError unless ``value`` is a whole number of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a whole number of at least 1, not {value!r}")


class Bounded:
    """What makes a server's bounds checked where they are set: in a class
    body (at once), on an instance (at assignment) and, for a class
    attribute changed after the class was made, in the constructor
    (``_check_bounds``).  Servers set no attribute per request, so the
    check costs nothing on a hot path.  (A mixin of ``BaseServer``: it
    holds no state of its own.)"""

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, zero_ok in SECONDS.items():  # a bad bound in a class body fails at once
            if name in cls.__dict__:
                check_seconds(f"{cls.__name__}.{name}", cls.__dict__[name], zero_ok)
        for name in COUNTS:
            if name in cls.__dict__:
                check_count(f"{cls.__name__}.{name}", cls.__dict__[name])

    def __setattr__(self, name: str, value: Any) -> None:
        if name in SECONDS:
            check_seconds(name, value, SECONDS[name])
        elif name in COUNTS:
            check_count(name, value)
        object.__setattr__(self, name, value)

    def _check_bounds(self) -> None:
        """Raise UsageError if a bound was set (on the class, later) to nonsense."""
        for name, zero_ok in SECONDS.items():
            check_seconds(name, getattr(self, name, None), zero_ok)  # (TLS's and PROXY's: stream servers only)
        for name in COUNTS:
            check_count(name, getattr(self, name))
