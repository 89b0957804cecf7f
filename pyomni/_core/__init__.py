"""The boundary to the compiled core.

This is the only module that imports ``pyomni._core.<ext>`` extension modules
(built from ``core/*.pyx``); everything else imports from here. It also holds
``check_status``, the single place where a native status code becomes a
:mod:`pyomni.errors` exception.
"""

from __future__ import annotations

from .. import errors
from .flash import claim_batch
from .geo import EARTH_RADIUS_KM, LocationIndex, py_chord_sq_to_km, py_unit_vector
from .ledger import Ledger
from .protowire import read_route_orders, write_route_orders
from .router import MAX_LINES_ as MAX_LINES
from .router import MAX_SHIPMENTS_ as MAX_SHIPMENTS
from .router import REJECT_NAMES, NativePolicy, Router

__all__ = [
    "EARTH_RADIUS_KM",
    "LocationIndex",
    "Ledger",
    "Router",
    "NativePolicy",
    "REJECT_NAMES",
    "MAX_LINES",
    "MAX_SHIPMENTS",
    "py_unit_vector",
    "py_chord_sq_to_km",
    "STATUS_OK",
    "STATUS_ERRORS",
    "EVENT_KINDS",
    "check_status",
    "claim_batch",
    "read_route_orders",
    "write_route_orders",
]

#: Native status codes (core/status.pxd) -> exception class. Total over every
#: non-OK code and one-to-one; tests/test_errors.py checks both.
STATUS_OK = 0
STATUS_ERRORS: dict[int, type[errors.PyomniError]] = {
    1: errors.InvalidQuantity,
    2: errors.InsufficientStock,
    3: errors.StockReserved,
    4: errors.QuantityOverflow,
    5: errors.UnknownLocation,
    6: errors.UnknownSku,
    7: errors.OutOfMemory,
    8: errors.InvariantViolation,
    9: errors.SoldOut,
    10: errors.StoreQuotaExhausted,
    11: errors.CustomerLimitReached,
}

#: Stock event kinds in the order of core/ledger.pxd ``EventKind``.
EVENT_KINDS = ("set", "adjust", "receive", "sale", "return", "safety")


def check_status(status: int, message: str = "", *, field: str | None = None) -> None:
    """Raise the :mod:`pyomni.errors` class for a native status; return on OK.

    Examples
    --------
    >>> check_status(0)
    >>> check_status(2, "only 1 left")
    Traceback (most recent call last):
    ...
    pyomni.errors.InsufficientStock: only 1 left
    """
    if status == STATUS_OK:
        return
    try:
        cls = STATUS_ERRORS[status]
    except KeyError:
        raise errors.InvariantViolation(f"unknown native status {status}: {message}") from None
    raise cls(message or cls.__doc__ or cls.reason, field=field)
