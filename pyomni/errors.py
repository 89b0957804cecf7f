"""Typed errors of pyomni.

Every error carries a stable, machine-readable ``reason`` (``UNKNOWN_SKU``,
``INSUFFICIENT_STOCK``, ...). Callers and the gRPC layer switch on the class or
on ``reason``; nobody parses messages.

The hierarchy has three groups, each also inheriting the builtin a Python
caller would expect:

* :class:`InvalidArgument` (``ValueError``) -- the request itself is malformed;
* :class:`NotFound` (``LookupError``) -- it names something that does not exist;
* :class:`FailedPrecondition` (``RuntimeError``) -- it is well formed but the
  current state does not allow it (not enough stock, reservation not held, ...).

A failed call never changes state: the engine validates before it mutates, and
bulk commands roll back on the first failure.

Examples
--------
>>> from pyomni import errors
>>> try:
...     raise errors.UnknownSku("no SKU 'X-1'", field="lines[0].sku")
... except LookupError as exc:
...     print(exc.reason, exc.field)
UNKNOWN_SKU lines[0].sku
"""

from __future__ import annotations

__all__ = [
    "PyomniError",
    "InvalidArgument",
    "InvalidQuantity",
    "InvalidCoordinates",
    "InvalidOrder",
    "DuplicateId",
    "NotFound",
    "UnknownSku",
    "UnknownLocation",
    "UnknownReservation",
    "UnknownPolicy",
    "UnknownShipment",
    "UnknownOrderException",
    "UnknownAttributionRule",
    "ShipmentStateConflict",
    "ReturnNotAllowed",
    "UnknownSale",
    "UnknownClaim",
    "FailedPrecondition",
    "InsufficientStock",
    "StockReserved",
    "QuantityOverflow",
    "ReservationNotHeld",
    "RequestIdReused",
    "CapabilityMissing",
    "SaleNotActive",
    "SoldOut",
    "StoreQuotaExhausted",
    "CustomerLimitReached",
    "OutOfMemory",
    "InvariantViolation",
    "StorageFailed",
    "JournalCorrupt",
    "Unavailable",
    "DeadlineExceeded",
    "Unauthenticated",
    "PermissionDenied",
    "ALL_ERRORS",
]


class PyomniError(Exception):
    """Base class of every pyomni error.

    Parameters
    ----------
    message : str
        Human-readable explanation.
    field : str, optional
        The offending request field (``"lines[1].qty"``), when there is one.
    """

    reason = "PYOMNI_ERROR"

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self):  # keep ``field`` across pickling (process pools)
        return (_rebuild, (type(self), str(self), self.field))


def _rebuild(cls, message, field):
    return cls(message, field=field)


# -- bad input ---------------------------------------------------------------
class InvalidArgument(PyomniError, ValueError):
    """The request is malformed (missing, out of range or inconsistent fields)."""

    reason = "INVALID_ARGUMENT"


class InvalidQuantity(InvalidArgument):
    """A quantity is zero where it must be positive, negative, or too large."""

    reason = "INVALID_QUANTITY"


class InvalidCoordinates(InvalidArgument):
    """A latitude/longitude is NaN, infinite or out of range."""

    reason = "INVALID_COORDINATES"


class InvalidOrder(InvalidArgument):
    """An order is empty, repeats a SKU, or its options contradict each other."""

    reason = "INVALID_ORDER"


class DuplicateId(InvalidArgument):
    """An id that must be unique (location, SKU, order) is repeated."""

    reason = "DUPLICATE_ID"


# -- unknown names -----------------------------------------------------------
class NotFound(PyomniError, LookupError):
    """The request names something that does not exist."""

    reason = "NOT_FOUND"


class UnknownSku(NotFound):
    """The SKU is not in the engine's catalogue."""

    reason = "UNKNOWN_SKU"


class UnknownLocation(NotFound):
    """The location id is not in the network."""

    reason = "UNKNOWN_LOCATION"


class UnknownReservation(NotFound):
    """No reservation has this id."""

    reason = "UNKNOWN_RESERVATION"


class UnknownSale(NotFound):
    """No flash sale has that id."""

    reason = "UNKNOWN_SALE"


class UnknownClaim(NotFound):
    """No flash-sale claim has that id."""

    reason = "UNKNOWN_CLAIM"


class UnknownPolicy(NotFound):
    """No routing policy is registered under this name."""

    reason = "UNKNOWN_POLICY"


class UnknownShipment(NotFound):
    """No shipment has this id."""

    reason = "UNKNOWN_SHIPMENT"


class UnknownOrderException(NotFound):
    """No order exception has this id."""

    reason = "UNKNOWN_ORDER_EXCEPTION"


class UnknownAttributionRule(NotFound):
    """No attribution rule is registered under this key or name."""

    reason = "UNKNOWN_ATTRIBUTION_RULE"


# -- state does not allow it -------------------------------------------------
class FailedPrecondition(PyomniError, RuntimeError):
    """Well formed, but the current state does not allow it."""

    reason = "FAILED_PRECONDITION"


class InsufficientStock(FailedPrecondition):
    """Not enough unreserved stock for a sale or transfer."""

    reason = "INSUFFICIENT_STOCK"


class StockReserved(FailedPrecondition):
    """The change would leave on-hand stock below what is reserved."""

    reason = "STOCK_RESERVED"


class QuantityOverflow(FailedPrecondition):
    """The change would push a stock cell above the largest quantity stored."""

    reason = "QUANTITY_OVERFLOW"


class ReservationNotHeld(FailedPrecondition):
    """The reservation is confirmed, released or expired, so this is not allowed."""

    reason = "RESERVATION_NOT_HELD"


class RequestIdReused(FailedPrecondition):
    """A request id was reused for a different request (AIP-155)."""

    reason = "REQUEST_ID_REUSED"


class SaleNotActive(FailedPrecondition):
    """The flash sale is not running at the engine's time (not started yet, or over)."""

    reason = "SALE_NOT_ACTIVE"


class SoldOut(FailedPrecondition):
    """The flash sale's global quota has fewer units left than the claim asks for."""

    reason = "SOLD_OUT"


class StoreQuotaExhausted(FailedPrecondition):
    """The pickup store's share of the flash sale is used up (or, choosing the nearest store, every
    store in reach has used its share up; no store in reach at all is ``INSUFFICIENT_STOCK``)."""

    reason = "STORE_QUOTA_EXHAUSTED"


class CustomerLimitReached(FailedPrecondition):
    """The customer already holds or bought as many units of the sale as it allows each customer."""

    reason = "CUSTOMER_LIMIT_REACHED"


class ShipmentStateConflict(FailedPrecondition):
    """The shipment's state does not allow the action (already shipped, rejected, cancelled, not paid ...)."""

    reason = "SHIPMENT_STATE"


class ReturnNotAllowed(FailedPrecondition):
    """The return is not possible: the line was not fulfilled, more units than were fulfilled, or its
    return window has passed."""

    reason = "RETURN_NOT_ALLOWED"


class CapabilityMissing(FailedPrecondition):
    """The location lacks the capability the request needs (e.g. pickup)."""

    reason = "CAPABILITY_MISSING"


class OutOfMemory(PyomniError, MemoryError):
    """The native core could not allocate memory."""

    reason = "OUT_OF_MEMORY"


class InvariantViolation(PyomniError, AssertionError):
    """An internal ledger invariant does not hold (a bug, never bad input)."""

    reason = "INVARIANT_VIOLATED"


# -- durable storage ---------------------------------------------------------
class StorageFailed(PyomniError, OSError):
    """A write or fsync of the journal or a snapshot failed (disk full, I/O error).

    Fatal for the engine: what was not acknowledged may or may not be on disk,
    so the engine refuses every further mutation until it is reopened, and a
    restart recovers exactly what the journal holds. Retrying with the same
    request id after the restart is safe.
    """

    reason = "STORAGE_FAILED"


class JournalCorrupt(PyomniError, RuntimeError):
    """The journal or a snapshot fails its checksums, or records are missing.

    Raised at start, never silently repaired: the message names the file and
    the byte offset; ``pyomni journal verify`` shows the damage and
    ``pyomni journal truncate`` cuts the journal there if the operator decides to.
    (A torn *last* record, the normal trace of a crash mid-write, is cut by
    itself and logged, not raised.)
    """

    reason = "JOURNAL_CORRUPT"


# -- the service was not reached -----------------------------------------------
class Unavailable(PyomniError, ConnectionError):
    """The pyomni service could not be reached or is shutting down (raised by :class:`pyomni.Client`).

    Retrying is safe for every call that carries a request id.
    """

    reason = "UNAVAILABLE"


class DeadlineExceeded(PyomniError, TimeoutError):
    """The call did not finish within its deadline (raised by :class:`pyomni.Client`).

    The server may still have applied it: retry with the same request id to learn the answer.
    """

    reason = "DEADLINE_EXCEEDED"


# -- the caller is not allowed -------------------------------------------------
class Unauthenticated(PyomniError, PermissionError):
    """The call carried no bearer token, or one the server does not know (gRPC ``UNAUTHENTICATED``).

    Nothing was done. Raised by :class:`pyomni.Client` when the server says so.
    """

    reason = "UNAUTHENTICATED"


class PermissionDenied(PyomniError, PermissionError):
    """The caller's role does not allow this call, or not on this store or channel (``PERMISSION_DENIED``).

    Nothing was done; ``field`` names the request field outside the caller's scope, if one is.
    """

    reason = "PERMISSION_DENIED"


#: Every concrete error class, for mapping tables that must be total.
ALL_ERRORS: tuple[type[PyomniError], ...] = tuple(
    obj for name, obj in list(globals().items())
    if isinstance(obj, type) and issubclass(obj, PyomniError)
)
