"""How every :mod:`pyomni.errors` class travels as a gRPC status.

One table, :data:`STATUS_CODES`, names the status code of every error class;
a test asserts it covers :data:`pyomni.errors.ALL_ERRORS`, so adding an error
class without deciding its status fails CI. The status carries a
``google.rpc.ErrorInfo`` whose ``reason`` is the class's machine-readable
reason (``UNKNOWN_SKU``) and ``metadata["field"]`` the offending request
field; bad input (``INVALID_ARGUMENT``) also carries a ``google.rpc.BadRequest``
field violation, the form generic gRPC tooling shows.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from pyomni import errors
from pyomni.wire import ERROR_DOMAIN

__all__ = ["STATUS_CODES", "status_of", "abort_with"]

_C = grpc.StatusCode
#: The status code of every error class (exhaustive: see tests/test_service.py).
STATUS_CODES: dict[type[errors.PyomniError], grpc.StatusCode] = {
    errors.PyomniError: _C.UNKNOWN,
    errors.InvalidArgument: _C.INVALID_ARGUMENT,
    errors.InvalidQuantity: _C.INVALID_ARGUMENT,
    errors.InvalidCoordinates: _C.INVALID_ARGUMENT,
    errors.InvalidOrder: _C.INVALID_ARGUMENT,
    errors.DuplicateId: _C.INVALID_ARGUMENT,
    errors.NotFound: _C.NOT_FOUND,
    errors.UnknownSku: _C.NOT_FOUND,
    errors.UnknownLocation: _C.NOT_FOUND,
    errors.UnknownReservation: _C.NOT_FOUND,
    errors.UnknownPolicy: _C.NOT_FOUND,
    errors.UnknownSale: _C.NOT_FOUND,
    errors.UnknownClaim: _C.NOT_FOUND,
    errors.UnknownShipment: _C.NOT_FOUND,
    errors.UnknownOrderException: _C.NOT_FOUND,
    errors.UnknownAttributionRule: _C.NOT_FOUND,
    errors.FailedPrecondition: _C.FAILED_PRECONDITION,
    errors.InsufficientStock: _C.FAILED_PRECONDITION,
    errors.StockReserved: _C.FAILED_PRECONDITION,
    errors.QuantityOverflow: _C.FAILED_PRECONDITION,
    errors.ReservationNotHeld: _C.FAILED_PRECONDITION,
    errors.RequestIdReused: _C.FAILED_PRECONDITION,
    errors.CapabilityMissing: _C.FAILED_PRECONDITION,
    errors.ShipmentStateConflict: _C.FAILED_PRECONDITION,
    errors.ReturnNotAllowed: _C.FAILED_PRECONDITION,
    # a claim refused for quota or stock: the state says no, and retrying will not change that
    errors.SaleNotActive: _C.FAILED_PRECONDITION,
    errors.SoldOut: _C.FAILED_PRECONDITION,
    errors.StoreQuotaExhausted: _C.FAILED_PRECONDITION,
    errors.CustomerLimitReached: _C.FAILED_PRECONDITION,
    errors.OutOfMemory: _C.RESOURCE_EXHAUSTED,
    errors.InvariantViolation: _C.INTERNAL,
    errors.StorageFailed: _C.UNAVAILABLE,      # the server stops taking writes; a retry after restart is safe
    errors.JournalCorrupt: _C.DATA_LOSS,
    errors.Unavailable: _C.UNAVAILABLE,
    errors.DeadlineExceeded: _C.DEADLINE_EXCEEDED,
    errors.Unauthenticated: _C.UNAUTHENTICATED,
    errors.PermissionDenied: _C.PERMISSION_DENIED,
}


#: Most characters of an error's message and field sent back (the rest is cut with an ellipsis).
MAX_MESSAGE = 1000
MAX_FIELD = 200


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def status_of(exc: errors.PyomniError) -> status_pb2.Status:
    """The ``google.rpc.Status`` (code, message, ErrorInfo, BadRequest) an error travels as.

    >>> s = status_of(errors.UnknownSku("no SKU 'X'", field="order.lines[0].sku"))
    >>> s.code == grpc.StatusCode.NOT_FOUND.value[0], s.message
    (True, "no SKU 'X'")
    """
    code = STATUS_CODES[type(exc)]
    # the details travel in the trailers, whose size gRPC caps (8 KiB by default): a message or field
    # that echoes a caller's long input is cut, so the caller still gets its status and not
    # RESOURCE_EXHAUSTED
    message, field = _bounded(str(exc), MAX_MESSAGE), _bounded(exc.field or "", MAX_FIELD)
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN,
                                       metadata={"field": field} if field else {})
    details = [info]
    if code is _C.INVALID_ARGUMENT:
        details.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=message)]))
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=packed)


def abort_with(context: grpc.ServicerContext, exc: errors.PyomniError) -> None:
    """End the call with ``exc``'s status (raises, as ``context.abort`` does)."""
    context.abort_with_status(rpc_status.to_status(status_of(exc)))
