"""``pyomni.Client``: the gRPC service, called like the in-process engine.

Methods mirror :class:`pyomni.Engine` and return the same model objects; a
failed call raises the same :mod:`pyomni.errors` class the engine would have
raised, rebuilt from the status's ``ErrorInfo`` (``reason``, ``field``). A
service that cannot be reached raises :class:`~pyomni.errors.Unavailable`, a
call past its deadline :class:`~pyomni.errors.DeadlineExceeded`.

Retries are gRPC's own (the channel's retry policy, see
:data:`RETRY_POLICY`), on UNAVAILABLE only, and only where a repeat is safe:
reads, and mutations that carry a request id -- the client gives every
mutation one (a UUID) unless the caller passes their own, so a retried route,
confirm or release returns the first answer instead of acting twice. Streams
are never retried.

Examples
--------
>>> import pyomni                                          # doctest: +SKIP
>>> with pyomni.Client("127.0.0.1:50051") as client:       # doctest: +SKIP
...     a = client.route_order(pyomni.Order("o-1", [("SKU-000001", 1)], destination=(31.23, 121.47)))
...     client.confirm(a.reservation_id).state.name
'CONFIRMED'
"""

from __future__ import annotations

import ipaddress
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
from grpc_status import rpc_status

from . import errors, validate
from .flash import Claim, FlashSale, SaleCounters
from .fulfilment import OrderException, Rejection, RejectReason, ReturnRecord, StoreRules, StoreShipment
from .model import (
    Allocation,
    Line,
    Location,
    NearbyStock,
    Order,
    PickupOption,
    Reservation,
    ReservationState,
    StockLevel,
)
from .settlement import AttributionRule
from .v1 import (
    diagnostics_pb2,
    diagnostics_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
    selling_pb2,
    selling_pb2_grpc,
    stores_pb2,
    stores_pb2_grpc,
    types_pb2,
)
from .wire import (
    ERROR_DOMAIN,
    StoreFeedBatch,
    allocation_from_pb,
    attribution_rule_from_pb,
    attribution_rule_to_pb,
    claim_batch_request,
    claim_from_pb,
    claim_results_from_pb,
    error_class,
    events_to_pb,
    flash_sale_from_pb,
    flash_sale_to_pb,
    location_to_pb,
    nearby_from_pb,
    order_exception_from_pb,
    order_to_pb,
    pickup_from_pb,
    reject_reason_to_pb,
    rejection_from_pb,
    reservation_from_pb,
    reservation_state_to_pb,
    return_record_from_pb,
    route_columns_request,
    route_results_from_pb,
    sale_counters_from_pb,
    stock_level_from_pb,
    store_feed_batch_from_pb,
    store_rules_from_pb,
    store_rules_to_pb,
    store_shipment_from_pb,
    table_from_chunks,
)

__all__ = ["Client", "StoreFeed", "RETRY_POLICY"]

_IDEMPOTENT = {
    "pyomni.v1.InventoryService": ["UpsertLocations", "ApplyStockEvents", "GetStock", "GetAvailability",
                                   "FindNearbyStock", "FindPickupLocations"],
    "pyomni.v1.RoutingService": ["RouteOrder", "QuoteOrder", "RouteOrders", "RouteOrderColumns", "ConfirmReservation",
                                 "ReleaseReservation", "RerouteReservation", "GetReservation", "ListReservations"],
    "pyomni.v1.DiagnosticsService": ["Echo"],
    "pyomni.v1.FlashSaleService": ["CreateFlashSale", "UpdateFlashSale", "EndFlashSale", "GetFlashSale",
                                   "ListFlashSales", "ClaimUnits", "ClaimUnitsBatch", "ConfirmClaim",
                                   "ReleaseClaim", "GetClaim"],
    "pyomni.v1.StoreService": ["AcceptShipment", "MarkPicked", "MarkPacked", "MarkShipped", "MarkReady",
                               "MarkCollected", "RejectShipment", "GetShipment", "ListShipments", "ReturnLine",
                               "ListOrderExceptions", "ResolveOrderException", "SetStoreRules", "GetStoreRules",
                               "RegisterAttributionRule", "SetChannelAttribution"],
}
#: gRPC retry policy of the idempotent methods (every unary one: the client sends request ids).
RETRY_POLICY = {"maxAttempts": 4, "initialBackoff": "0.05s", "maxBackoff": "1s", "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"]}
_SERVICE_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": s, "method": m} for s, ms in _IDEMPOTENT.items() for m in ms],
    "retryPolicy": RETRY_POLICY,
}]})

_BY_CODE: dict[grpc.StatusCode, type[errors.PyomniError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.CANCELLED: errors.Unavailable,      # a server shutting down cancels calls it will not run
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.OutOfMemory,
    grpc.StatusCode.INTERNAL: errors.InvariantViolation,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
}


def _error(exc: grpc.RpcError) -> errors.PyomniError:
    """The :mod:`pyomni.errors` instance a failed call stands for."""
    from google.rpc import error_details_pb2

    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                cls = error_class(info.reason) if info.domain == ERROR_DOMAIN else None
                if cls is not None:
                    return cls(status.message, field=info.metadata.get("field") or None)
    code = exc.code()  # type: ignore[attr-defined]
    cls = _BY_CODE.get(code, errors.PyomniError)
    return cls(f"{code.name}: {exc.details()}")  # type: ignore[attr-defined]


def is_local(address: str) -> bool:
    """True for a Unix socket or a loopback ``host:port``: where plain text cannot be overheard.

    >>> [is_local(a) for a in ("127.0.0.1:50051", "[::1]:1", "localhost:1", "unix:/tmp/s", "0.0.0.0:1")]
    [True, True, True, True, False]
    """
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_credentials(ca: Any, cert: Any, key: Any) -> grpc.ChannelCredentials:
    if bool(cert) != bool(key):
        raise errors.InvalidArgument("a client certificate needs its key, and a key its certificate",
                                     field="cert" if key else "key")
    blobs: dict[str, bytes | None] = {}
    for name, path in (("ca", ca), ("cert", cert), ("key", key)):
        try:
            blobs[name] = Path(path).read_bytes() if path else None
        except OSError as exc:
            raise errors.InvalidArgument(f"cannot read {name} file {str(path)!r}: {exc.strerror}",
                                         field=name) from None
    return grpc.ssl_channel_credentials(root_certificates=blobs["ca"], private_key=blobs["key"],
                                        certificate_chain=blobs["cert"])


def _rid(request_id: str | None) -> str:
    return request_id if request_id is not None else uuid.uuid4().hex


class Client:
    """A connection to a pyomni server.

    Parameters
    ----------
    address : str
        ``host:port`` of the server.
    timeout : float
        Default deadline of each call, in seconds.
    token : str, optional
        Bearer token sent with every call (``pyomni token new`` makes one); else ``PYOMNI_TOKEN``.
    tls : bool
        Connect over TLS, verifying the server against ``ca`` (or the system's roots).
        Implied by any of ``ca``, ``cert``, ``key``.
    ca : path, optional
        PEM CA bundle the server's certificate must chain to.
    cert, key : path, optional
        PEM client certificate and key, for a server that asks for mutual TLS.
    server_name : str, optional
        The name the server's certificate must carry, when it is not the host in ``address``.
    credentials : grpc.ChannelCredentials, optional
        Ready-made channel credentials, instead of ``tls``/``ca``/``cert``/``key``.
    insecure : bool
        Allow a token over plain text to an address that is not loopback or a Unix socket.
    max_message_bytes : int
        Largest message either way (raise it with the server's for big batches).

    Raises
    ------
    pyomni.errors.InvalidArgument
        A TLS file cannot be read, only one of ``cert`` and ``key`` is given, or a token would
        travel in plain text off this machine (without ``insecure``).
    """

    def __init__(self, address: str, *, timeout: float = 5.0, token: str | None = None, tls: bool = False,
                 ca: str | os.PathLike[str] | None = None, cert: str | os.PathLike[str] | None = None,
                 key: str | os.PathLike[str] | None = None, server_name: str | None = None,
                 credentials: grpc.ChannelCredentials | None = None, insecure: bool = False,
                 max_message_bytes: int = 16 * 1024 * 1024) -> None:
        options: list[tuple[str, Any]] = [
            ("grpc.service_config", _SERVICE_CONFIG), ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if credentials is None and (tls or ca or cert or key):
            credentials = _tls_credentials(ca, cert, key)
        token = token if token is not None else os.environ.get("PYOMNI_TOKEN") or None
        if token and credentials is None and not insecure:
            if not is_local(address):
                raise errors.InvalidArgument(f"a token would travel in plain text to {address}: connect with "
                                             "tls=True (or ca=...), or pass insecure=True", field="token")
        self.address = address
        self.timeout = float(timeout)
        # the token travels as call metadata (over TLS it is as private as the connection); grpc's own
        # call credentials would refuse a plain-text loopback channel
        self._metadata: tuple[tuple[str, str], ...] | None = (("authorization", f"Bearer {token}"),) if token else None
        self._channel = (grpc.secure_channel(address, credentials, options) if credentials is not None
                         else grpc.insecure_channel(address, options))
        self._inventory = inventory_pb2_grpc.InventoryServiceStub(self._channel)
        self._routing = routing_pb2_grpc.RoutingServiceStub(self._channel)
        self._diagnostics = diagnostics_pb2_grpc.DiagnosticsServiceStub(self._channel)
        self._sales = selling_pb2_grpc.FlashSaleServiceStub(self._channel)
        self._stores = stores_pb2_grpc.StoreServiceStub(self._channel)

    # -- plumbing ------------------------------------------------------------------
    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the server accepts connections; :class:`~pyomni.errors.Unavailable` after ``timeout``."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise errors.Unavailable(f"no pyomni server at {self.address} after {timeout} s") from None

    # -- routing -------------------------------------------------------------------
    def route_order(self, order: Order, *, request_id: str | None = None, policy: str | None = None,
                    ttl: float | None = None, explain: bool = False, timeout: float | None = None) -> Allocation:
        """Route an order and hold its stock (see :meth:`pyomni.Engine.route_order`).

        ``explain=True`` asks for the router's full explanation (the engine gives it by default; over
        the wire it is sent only when asked for); otherwise the answer carries the recorded one.
        """
        req = routing_pb2.RouteOrderRequest(request_id=_rid(request_id), policy=policy or "", ttl_seconds=ttl or 0.0,
                                            explain=explain)
        order_to_pb(order, req.order)
        return allocation_from_pb(self._call(self._routing.RouteOrder, req, timeout))

    def quote(self, order: Order, *, policy: str | None = None, timeout: float | None = None) -> Allocation:
        """Where an order would ship from, holding nothing."""
        req = routing_pb2.QuoteOrderRequest(policy=policy or "")
        order_to_pb(order, req.order)
        return allocation_from_pb(self._call(self._routing.QuoteOrder, req, timeout))

    def route_orders(self, orders: Sequence[Order], *, request_ids: Sequence[str] | None = None,
                     policy: str | None = None, ttl: float | None = None,
                     timeout: float | None = None) -> list[Allocation | errors.PyomniError]:
        """Route up to 10,000 orders in one call; each answer is an Allocation or the error that order got.

        The server holds the whole batch under one journal commit and answers once it is durable.
        ``ttl`` (seconds) applies to every hold of the batch (default: the server's).
        """
        req = routing_pb2.RouteOrdersRequest()
        ids = request_ids if request_ids is not None else [uuid.uuid4().hex for _ in orders]
        if len(ids) != len(orders):
            raise errors.InvalidArgument("request_ids must match orders one to one", field="request_ids")
        for order, rid in zip(orders, ids):
            order_to_pb(order, req.requests.add(request_id=rid, policy=policy or "", ttl_seconds=ttl or 0.0).order)
        response = self._call(self._routing.RouteOrders, req, timeout)
        return [_result(r) for r in response.results]

    def route_stream(self, orders: Iterable[Order], *, policy: str | None = None, batch_size: int = 200,
                     timeout: float | None = None) -> Iterator[Allocation | errors.PyomniError]:
        """Route a stream of orders over one bidirectional call, ``batch_size`` orders per message.

        Answers come back in order, a batch at a time, while later batches are still being sent.
        """
        if not 1 <= batch_size <= 10_000:
            raise errors.InvalidArgument("batch_size must be in 1..10000", field="batch_size")

        def requests() -> Iterator[Any]:
            msg = routing_pb2.RouteOrdersRequest()
            for order in orders:
                order_to_pb(order, msg.requests.add(request_id=uuid.uuid4().hex, policy=policy or "").order)
                if len(msg.requests) == batch_size:
                    yield msg
                    msg = routing_pb2.RouteOrdersRequest()
            if len(msg.requests):
                yield msg
        try:
            for response in self._routing.RouteOrderStream(requests(), timeout=timeout, metadata=self._metadata):
                yield from (_result(r) for r in response.results)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def route_columns(self, orders: Sequence[Order], *, request_ids: Sequence[str] | None = None,
                      policy: str | None = None, ttl: float | None = None,
                      timeout: float | None = None) -> list[Allocation | errors.PyomniError]:
        """Route delivery orders through ``RouteOrderColumns``: the orders travel as columns and are
        decided in one native pass on the server (answers carry no explanation)."""
        ids = list(request_ids) if request_ids is not None else [uuid.uuid4().hex for _ in orders]
        req = route_columns_request(orders, request_ids=ids, policy=policy or "", ttl=ttl or 0.0)
        return route_results_from_pb(req, self._call(self._routing.RouteOrderColumns, req, timeout))

    def confirm(self, reservation_id: str, *, request_id: str | None = None,
                timeout: float | None = None) -> Reservation:
        """Confirm a HELD reservation: the units ship."""
        req = routing_pb2.ConfirmReservationRequest(request_id=_rid(request_id), reservation_id=reservation_id)
        return reservation_from_pb(self._call(self._routing.ConfirmReservation, req, timeout))

    def release(self, reservation_id: str, *, request_id: str | None = None,
                timeout: float | None = None) -> Reservation:
        """Release a HELD reservation: its units are available again."""
        req = routing_pb2.ReleaseReservationRequest(request_id=_rid(request_id), reservation_id=reservation_id)
        return reservation_from_pb(self._call(self._routing.ReleaseReservation, req, timeout))

    def reroute(self, reservation_id: str, rejected_by: str, *, request_id: str | None = None,
                policy: str | None = None, timeout: float | None = None) -> Allocation:
        """Re-route the shipment a location rejected (see :meth:`pyomni.Engine.reroute`)."""
        req = routing_pb2.RerouteReservationRequest(request_id=_rid(request_id), reservation_id=reservation_id,
                                                    rejected_by=rejected_by, policy=policy or "")
        return allocation_from_pb(self._call(self._routing.RerouteReservation, req, timeout))

    def reservation(self, reservation_id: str, *, timeout: float | None = None) -> Reservation:
        """One reservation by id."""
        req = routing_pb2.GetReservationRequest(reservation_id=reservation_id)
        return reservation_from_pb(self._call(self._routing.GetReservation, req, timeout))

    def reservations(self, state: ReservationState | None = None, *, page_size: int = 500,
                     timeout: float | None = None) -> Iterator[Reservation]:
        """Every reservation (of one state), oldest first, fetched a page at a time."""
        token = ""
        while True:
            req = routing_pb2.ListReservationsRequest(page_size=page_size, page_token=token)
            req.state = reservation_state_to_pb(state)  # type: ignore[assignment]
            response = self._call(self._routing.ListReservations, req, timeout)
            yield from (reservation_from_pb(r) for r in response.reservations)
            token = response.next_page_token
            if not token:
                return

    # -- inventory -----------------------------------------------------------------
    def upsert_locations(self, locations: Sequence[Location], *, request_id: str | None = None,
                         timeout: float | None = None) -> tuple[int, int]:
        """Add or replace locations; returns ``(added, updated)``."""
        req = inventory_pb2.UpsertLocationsRequest(request_id=_rid(request_id))
        for loc in locations:
            location_to_pb(loc, req.locations.add())
        response = self._call(self._inventory.UpsertLocations, req, timeout)
        return response.added, response.updated

    def apply_stock_events(self, events: pa.Table | Sequence[dict[str, Any]], *, request_id: str | None = None,
                           timeout: float | None = None) -> int:
        """Apply stock events atomically (an Arrow table travels as one IPC stream); returns how many."""
        req = events_to_pb(events, inventory_pb2.ApplyStockEventsRequest(request_id=_rid(request_id)))
        return int(self._call(self._inventory.ApplyStockEvents, req, timeout).applied)

    def stream_stock_events(self, batches: Iterable[pa.Table | Sequence[dict[str, Any]]], *,
                            timeout: float | None = None) -> tuple[int, int]:
        """Send batches of events over one client stream; each is atomic. Returns ``(applied, batches)``."""
        requests = (events_to_pb(b, inventory_pb2.ApplyStockEventsRequest(request_id=uuid.uuid4().hex))
                    for b in batches)
        response = self._call(self._inventory.StreamStockEvents, requests, timeout)
        return int(response.applied), int(response.batches)

    def stock(self, location: str, sku: str, *, timeout: float | None = None) -> StockLevel:
        """One stock cell."""
        req = inventory_pb2.GetStockRequest(location=location, sku=sku)
        return stock_level_from_pb(self._call(self._inventory.GetStock, req, timeout))

    def available(self, sku: str, *, channel: str | None = None, timeout: float | None = None) -> int:
        """Network-wide available-to-sell of a SKU (bounded by the channel's rule)."""
        req = inventory_pb2.GetAvailabilityRequest(sku=sku, channel=channel or "")
        return int(self._call(self._inventory.GetAvailability, req, timeout).available)

    def availability(self, sku: str, *, page_size: int = 1000, timeout: float | None = None) -> list[StockLevel]:
        """Every location's cell of a SKU (all pages)."""
        out: list[StockLevel] = []
        token = ""
        while True:
            req = inventory_pb2.GetAvailabilityRequest(sku=sku, per_location=True, page_size=page_size,
                                                       page_token=token)
            response = self._call(self._inventory.GetAvailability, req, timeout)
            out.extend(stock_level_from_pb(x) for x in response.locations)
            token = response.next_page_token
            if not token:
                return out

    def available_near(self, sku: str, near: tuple[float, float], *, radius_km: float = 30.0, limit: int = 20,
                       timeout: float | None = None) -> list[NearbyStock]:
        """Store locator: locations near a point with the SKU available, nearest first."""
        req = inventory_pb2.FindNearbyStockRequest(sku=sku, near=types_pb2.LatLng(latitude=near[0], longitude=near[1]),
                                                   radius_km=radius_km, limit=limit)
        return [nearby_from_pb(x) for x in self._call(self._inventory.FindNearbyStock, req, timeout).results]

    def find_pickup_locations(self, lines: Sequence[Line | tuple[str, int]], near: tuple[float, float], *,
                              radius_km: float = 30.0, limit: int = 5,
                              timeout: float | None = None) -> list[PickupOption]:
        """Click-and-collect: pickup locations near a point that can fill the whole basket."""
        req = inventory_pb2.FindPickupLocationsRequest(near=types_pb2.LatLng(latitude=near[0], longitude=near[1]),
                                                       radius_km=radius_km, limit=limit)
        for line in lines:
            sku, qty = (line.sku, line.qty) if isinstance(line, Line) else line
            req.lines.add(sku=sku, qty=qty)
        return [pickup_from_pb(x) for x in self._call(self._inventory.FindPickupLocations, req, timeout).results]

    def echo(self, payload: bytes = b"", *, response_bytes: int = 0, timeout: float | None = None) -> bytes:
        """An empty round trip (the transport's floor): ``payload`` back, or ``response_bytes`` zero bytes."""
        req = diagnostics_pb2.EchoRequest(payload=payload, response_bytes=response_bytes)
        return bytes(self._call(self._diagnostics.Echo, req, timeout).payload)


    # -- flash sales ----------------------------------------------------------------
    def create_sale(self, sale: FlashSale, *, request_id: str | None = None,
                    timeout: float | None = None) -> SaleCounters:
        """Create a flash sale (see :meth:`pyomni.Engine.create_sale`); returns its counters."""
        req = selling_pb2.CreateFlashSaleRequest(request_id=_rid(request_id))
        flash_sale_to_pb(sale, out=req.sale)
        return sale_counters_from_pb(self._call(self._sales.CreateFlashSale, req, timeout).counters)

    def update_sale(self, sale: FlashSale, *, request_id: str | None = None,
                    timeout: float | None = None) -> SaleCounters:
        """Replace a sale's definition (see :meth:`pyomni.Engine.update_sale`)."""
        req = selling_pb2.UpdateFlashSaleRequest(request_id=_rid(request_id))
        flash_sale_to_pb(sale, out=req.sale)
        return sale_counters_from_pb(self._call(self._sales.UpdateFlashSale, req, timeout).counters)

    def end_sale(self, sale_id: str, *, request_id: str | None = None, timeout: float | None = None) -> SaleCounters:
        """End a sale now."""
        req = selling_pb2.EndFlashSaleRequest(request_id=_rid(request_id), sale_id=sale_id)
        return sale_counters_from_pb(self._call(self._sales.EndFlashSale, req, timeout).counters)

    def sale(self, sale_id: str, *, timeout: float | None = None) -> tuple[FlashSale, SaleCounters]:
        """A sale's definition and its live counters."""
        msg = self._call(self._sales.GetFlashSale, selling_pb2.GetFlashSaleRequest(sale_id=sale_id), timeout)
        return flash_sale_from_pb(msg), sale_counters_from_pb(msg.counters)

    def sales(self, *, page_size: int = 100, timeout: float | None = None) -> list[FlashSale]:
        """Every sale, in creation order (all pages)."""
        out: list[FlashSale] = []
        token = ""
        while True:
            msg = self._call(self._sales.ListFlashSales,
                             selling_pb2.ListFlashSalesRequest(page_size=page_size, page_token=token), timeout)
            out.extend(flash_sale_from_pb(s) for s in msg.sales)
            token = msg.next_page_token
            if not token:
                return out

    def claim(self, sale_id: str, customer: str, sku: str, qty: int = 1, *, store: str | None = None,
              near: tuple[float, float] | None = None, request_id: str | None = None,
              timeout: float | None = None) -> Claim:
        """Claim units in a flash sale (see :meth:`pyomni.Engine.claim`); raises the refusal's typed error."""
        req = selling_pb2.ClaimUnitsRequest(request_id=_rid(request_id), sale_id=sale_id, customer=customer, sku=sku,
                                            qty=qty, store=store or "")
        if near is not None:
            req.near.latitude, req.near.longitude = near
        return claim_from_pb(self._call(self._sales.ClaimUnits, req, timeout))

    def claim_many(self, sale_id: str, customers: Sequence[str], sku: str | Sequence[str], *,
                   qtys: Sequence[int] | None = None, stores: Sequence[str] | None = None,
                   near: Sequence[tuple[float, float]] | None = None, request_ids: Sequence[str] | None = None,
                   timeout: float | None = None) -> list[Claim | errors.PyomniError]:
        """A batch of claims in one call (columns on the wire); each claim's :class:`~pyomni.flash.Claim`
        or its typed error."""
        req = claim_batch_request(sale_id, customers, sku, qtys=qtys, stores=stores, near=near,
                                  request_ids=request_ids if request_ids is not None
                                  else [uuid.uuid4().hex for _ in customers])
        return claim_results_from_pb(req, self._call(self._sales.ClaimUnitsBatch, req, timeout))

    def claim_stream(self, requests: Iterable[Any], *, timeout: float | None = None) -> Iterator[Any]:
        """Claim batches over one bidirectional call: ``ClaimUnitsBatchRequest`` messages in (see
        :func:`pyomni.wire.claim_batch_request`), ``ClaimUnitsBatchResponse`` columns out, in order."""
        try:
            yield from self._sales.ClaimUnitsStream(iter(requests), timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def confirm_claim(self, claim_id: str, *, request_id: str | None = None, timeout: float | None = None) -> Claim:
        """The claim was paid."""
        req = selling_pb2.ConfirmClaimRequest(request_id=_rid(request_id), claim_id=claim_id)
        return claim_from_pb(self._call(self._sales.ConfirmClaim, req, timeout))

    def release_claim(self, claim_id: str, *, request_id: str | None = None, timeout: float | None = None) -> Claim:
        """Cancel a HELD claim."""
        req = selling_pb2.ReleaseClaimRequest(request_id=_rid(request_id), claim_id=claim_id)
        return claim_from_pb(self._call(self._sales.ReleaseClaim, req, timeout))

    def get_claim(self, claim_id: str, *, timeout: float | None = None) -> Claim:
        """A claim as it is now."""
        return claim_from_pb(self._call(self._sales.GetClaim, selling_pb2.GetClaimRequest(claim_id=claim_id),
                                        timeout))

    def watch_sale(self, sale_id: str, *, after_sequence: int = 0, min_interval_ms: int = 100,
                   timeout: float | None = None) -> Iterator[SaleCounters]:
        """A sale's counters each time they change (at most one message per ``min_interval_ms``)."""
        req = selling_pb2.WatchFlashSaleRequest(sale_id=sale_id, after_sequence=after_sequence,
                                                min_interval_ms=min_interval_ms)
        try:
            for msg in self._sales.WatchFlashSale(req, timeout=timeout, metadata=self._metadata):
                yield sale_counters_from_pb(msg)
        except grpc.RpcError as exc:
            raise _error(exc) from None


    # -- store operations -----------------------------------------------------------
    def watch_store_orders(self, locations: Sequence[str], *, after_seq: int = 0, heartbeat: float = 5.0,
                           timeout: float | None = None) -> StoreFeed:
        """Follow stores' order feeds (see :meth:`pyomni.Engine.wait_store_events`): a :class:`StoreFeed`
        yielding a :class:`~pyomni.wire.StoreFeedBatch` whenever their shipments change, and a heartbeat batch
        after ``heartbeat`` seconds without a change, until it is cancelled (no deadline unless ``timeout``).

        Resume after a disconnect with ``after_seq`` = the last batch's ``last_seq``: nothing is missed and
        nothing repeated; ``after_seq=0`` (or one the server no longer keeps) starts with a reset batch
        holding every open shipment. A server that stops ends the feed with
        :class:`~pyomni.errors.Unavailable`.
        """
        req = stores_pb2.WatchStoreOrdersRequest(after_seq=after_seq, heartbeat_seconds=heartbeat)
        req.locations.extend([locations] if isinstance(locations, str) else locations)
        return StoreFeed(self._stores.WatchStoreOrders(req, timeout=timeout, metadata=self._metadata))

    def _step(self, method: Any, request_type: Any, shipment_id: str, request_id: str | None,
              timeout: float | None) -> StoreShipment:
        req = request_type(request_id=_rid(request_id), shipment_id=shipment_id)
        return store_shipment_from_pb(self._call(method, req, timeout))

    def accept_shipment(self, shipment_id: str, *, request_id: str | None = None,
                        timeout: float | None = None) -> StoreShipment:
        """The store takes a new shipment on (see :meth:`pyomni.Engine.accept_shipment`)."""
        return self._step(self._stores.AcceptShipment, stores_pb2.AcceptShipmentRequest, shipment_id, request_id,
                          timeout)

    def pick_shipment(self, shipment_id: str, *, request_id: str | None = None,
                      timeout: float | None = None) -> StoreShipment:
        """The shipment's units are off the shelf."""
        return self._step(self._stores.MarkPicked, stores_pb2.MarkPickedRequest, shipment_id, request_id, timeout)

    def pack_shipment(self, shipment_id: str, *, request_id: str | None = None,
                      timeout: float | None = None) -> StoreShipment:
        """The parcel is packed."""
        return self._step(self._stores.MarkPacked, stores_pb2.MarkPackedRequest, shipment_id, request_id, timeout)

    def ship_shipment(self, shipment_id: str, *, request_id: str | None = None,
                      timeout: float | None = None) -> StoreShipment:
        """Handed to the courier (the reservation must be confirmed): the lines are fulfilled."""
        return self._step(self._stores.MarkShipped, stores_pb2.MarkShippedRequest, shipment_id, request_id,
                          timeout)

    def ready_shipment(self, shipment_id: str, *, request_id: str | None = None,
                       timeout: float | None = None) -> StoreShipment:
        """Ready for the customer to collect."""
        return self._step(self._stores.MarkReady, stores_pb2.MarkReadyRequest, shipment_id, request_id, timeout)

    def collect_shipment(self, shipment_id: str, *, request_id: str | None = None,
                         timeout: float | None = None) -> StoreShipment:
        """The customer collected it (the reservation must be confirmed): the lines are fulfilled."""
        return self._step(self._stores.MarkCollected, stores_pb2.MarkCollectedRequest, shipment_id, request_id,
                          timeout)

    def reject_shipment(self, shipment_id: str, reason: RejectReason | int | str, *, note: str = "",
                        request_id: str | None = None, timeout: float | None = None) -> Rejection:
        """The store gives a shipment back (``reason`` a :class:`~pyomni.fulfilment.RejectReason`, its value
        or its name in any case); its lines are routed again (see :meth:`pyomni.Engine.reject_shipment`)."""
        why = validate.member(reason, "reason", RejectReason, by_name=True, by_value=True)
        req = stores_pb2.RejectShipmentRequest(request_id=_rid(request_id), shipment_id=shipment_id, note=note)
        req.reason = reject_reason_to_pb(why)  # type: ignore[assignment]
        return rejection_from_pb(self._call(self._stores.RejectShipment, req, timeout))

    def shipment(self, shipment_id: str, *, timeout: float | None = None) -> StoreShipment:
        """One shipment as its store sees it."""
        req = stores_pb2.GetShipmentRequest(shipment_id=shipment_id)
        return store_shipment_from_pb(self._call(self._stores.GetShipment, req, timeout))

    def list_shipments(self, location: str | None = None, *, include_closed: bool = False,
                       order_id: str | None = None, page_size: int = 500,
                       timeout: float | None = None) -> list[StoreShipment]:
        """Shipments in id order (a store's, or every store's; open ones unless ``include_closed``), all pages."""
        out: list[StoreShipment] = []
        token = ""
        while True:
            req = stores_pb2.ListShipmentsRequest(location=location or "", include_closed=include_closed,
                                                  order_id=order_id or "", page_size=page_size, page_token=token)
            response = self._call(self._stores.ListShipments, req, timeout)
            out.extend(store_shipment_from_pb(s) for s in response.shipments)
            token = response.next_page_token
            if not token:
                return out

    def return_line(self, shipment_id: str, sku: str, qty: int, *, location: str, request_id: str | None = None,
                    timeout: float | None = None) -> ReturnRecord:
        """Units of a fulfilled line handed back at ``location`` (see :meth:`pyomni.Engine.return_line`)."""
        req = stores_pb2.ReturnLineRequest(request_id=_rid(request_id), shipment_id=shipment_id, sku=sku, qty=qty,
                                           location=location)
        return return_record_from_pb(self._call(self._stores.ReturnLine, req, timeout))

    def order_exceptions(self, *, include_resolved: bool = False, page_size: int = 500,
                         timeout: float | None = None) -> list[OrderException]:
        """Order exceptions in id order (open ones unless ``include_resolved``), all pages."""
        out: list[OrderException] = []
        token = ""
        while True:
            req = stores_pb2.ListOrderExceptionsRequest(include_resolved=include_resolved, page_size=page_size,
                                                        page_token=token)
            response = self._call(self._stores.ListOrderExceptions, req, timeout)
            out.extend(order_exception_from_pb(x) for x in response.exceptions)
            token = response.next_page_token
            if not token:
                return out

    def resolve_exception(self, exception_id: str, *, retry: bool = False, note: str = "",
                          request_id: str | None = None, timeout: float | None = None) -> OrderException:
        """Close an order exception, or (``retry``) route its lines again."""
        req = stores_pb2.ResolveOrderExceptionRequest(request_id=_rid(request_id), exception_id=exception_id,
                                                      retry=retry, note=note)
        return order_exception_from_pb(self._call(self._stores.ResolveOrderException, req, timeout))

    def set_store_rules(self, location: str | None, rules: StoreRules | None, *, request_id: str | None = None,
                        timeout: float | None = None) -> StoreRules | None:
        """Set a store's time limits (``location`` None: the default); ``rules`` None removes them. Returns the
        rules now in force there (None: no time limits)."""
        req = stores_pb2.SetStoreRulesRequest(request_id=_rid(request_id), location=location or "")
        if rules is not None:
            store_rules_to_pb(rules, req.rules)
        msg = self._call(self._stores.SetStoreRules, req, timeout)
        return store_rules_from_pb(msg.rules) if msg.HasField("rules") else None

    def store_rules(self, location: str | None = None, *, timeout: float | None = None) -> StoreRules | None:
        """The time limits in force at a store (or the default); None: no time limits."""
        msg = self._call(self._stores.GetStoreRules, stores_pb2.GetStoreRulesRequest(location=location or ""),
                         timeout)
        return store_rules_from_pb(msg.rules) if msg.HasField("rules") else None

    def register_attribution_rule(self, rule: AttributionRule, *, request_id: str | None = None,
                                  timeout: float | None = None) -> AttributionRule:
        """Make an attribution rule selectable (by key, and by name for its newest version)."""
        req = stores_pb2.RegisterAttributionRuleRequest(request_id=_rid(request_id))
        attribution_rule_to_pb(rule, req.rule)
        return attribution_rule_from_pb(self._call(self._stores.RegisterAttributionRule, req, timeout))

    def set_attribution(self, channel: str | None, rule: str | None, *, request_id: str | None = None,
                        timeout: float | None = None) -> AttributionRule:
        """Credit a channel's orders (``channel`` None: the default) by a registered rule (key or name);
        ``rule`` None removes the channel's own choice. Returns the rule now in force for the channel."""
        req = stores_pb2.SetChannelAttributionRequest(request_id=_rid(request_id), channel=channel or "",
                                                      rule=rule or "")
        return attribution_rule_from_pb(self._call(self._stores.SetChannelAttribution, req, timeout).rule)

    def export_settlement(self, day: str | None = None, *, entries: bool = False,
                          timeout: float | None = None) -> pa.Table:
        """The settlement ledger (see :meth:`pyomni.Engine.settlement`): daily totals per party, or every entry;
        ``day`` an ISO date keeps one business day. Travels as Arrow IPC chunks."""
        req = stores_pb2.ExportSettlementRequest(day=str(day) if day is not None else "", entries=entries)
        try:
            chunks = list(self._stores.ExportSettlement(req, timeout=self.timeout if timeout is None else timeout,
                                                        metadata=self._metadata))
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return table_from_chunks(chunks)


class StoreFeed:
    """An open store order feed (:meth:`Client.watch_store_orders`): iterate it for
    :class:`~pyomni.wire.StoreFeedBatch` values; :meth:`cancel` (from any thread, or leaving a ``with``
    block) ends it, and the iteration then simply stops. A failed feed raises its :mod:`pyomni.errors` class.
    """

    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = False

    def __iter__(self) -> StoreFeed:
        return self

    def __next__(self) -> StoreFeedBatch:
        try:
            msg = next(self._call)
        except grpc.RpcError as exc:
            if self._cancelled:
                raise StopIteration from None
            raise _error(exc) from None
        return store_feed_batch_from_pb(msg)

    def cancel(self) -> None:
        """End the feed (the server's side ends too)."""
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> StoreFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _result(r: Any) -> Allocation | errors.PyomniError:
    if r.error_reason:
        cls = error_class(r.error_reason) or errors.PyomniError
        return cls(r.error_message, field=r.error_field or None)
    return allocation_from_pb(r.allocation)
