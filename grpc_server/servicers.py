"""Thin servicers: decode the request, call the engine, encode the answer.

No decision is made here; the engine validates everything and raises typed
errors, which :func:`_rpc` turns into statuses (``grpc_server.status``). A
failed call changes nothing because the engine's calls are all-or-nothing.
"""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from pyomni import AllocationStatus as pyomni_status
from pyomni import Engine, errors
from pyomni._core import read_route_orders, write_route_orders
from pyomni.v1 import (
    diagnostics_pb2,
    diagnostics_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
)
from pyomni.wire import (
    allocation_to_pb,
    events_from_pb,
    lines_from_pb,
    location_from_pb,
    order_from_pb,
    required_point,
    reservation_state_from_pb,
    reservation_to_pb,
    stock_level_to_pb,
)

from .status import STATUS_CODES, abort_with

__all__ = ["InventoryServicer", "RoutingServicer", "DiagnosticsServicer", "MAX_BATCH", "MAX_PAGE", "decoding_handlers",
           "DecodingInterceptor"]

log = logging.getLogger("pyomni.server")

#: Most orders in one RouteOrders call, and most events in one ApplyStockEvents message.
MAX_BATCH = 10_000
MAX_EVENTS = 1_000_000
_SPLIT_REASONS = ("", "NO_SINGLE_LOCATION", "CHEAPER")
#: Largest page of a paginated list.
MAX_PAGE = 1000

F = TypeVar("F", bound=Callable[..., Any])


def _rpc(method: F) -> F:
    """Run a unary handler; a pyomni error becomes its status with details."""
    @functools.wraps(method)
    def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except errors.PyomniError as exc:
            log.info("call failed", extra={"rpc": method.__name__, "reason": exc.reason, "field": exc.field})
            abort_with(context, exc)
    return handler  # type: ignore[return-value]


def _request_id(value: str) -> str | None:
    return value or None


def _page_size(value: int, default: int) -> int:
    if value < 0 or value > MAX_PAGE:
        raise errors.InvalidArgument(f"page_size must be in 0..{MAX_PAGE}", field="page_size")
    return value or default


_TOKEN_PREFIX = "pyomni.v1:"


def _encode_token(value: str) -> str:
    # opaque to callers (AIP-158): the last item of the page, behind a prefix that marks it as ours
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + value).encode()).decode()


def _decode_token(token: str) -> str | None:
    if not token:
        return None
    try:
        text = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX):
        raise errors.InvalidArgument("page_token is not one this server issued", field="page_token")
    return text[len(_TOKEN_PREFIX):]


def decoding_handlers(handlers: Mapping[str, Any]) -> dict[str, Any]:
    """Method handlers (as a generated ``add_*_to_server`` makes them) that decode the request themselves.

    grpcio's own decoding answers bytes that are no message of the request type with ``INTERNAL`` and no
    details; these answer ``INVALID_ARGUMENT`` with an ``ErrorInfo`` naming the field ``request``, like any other
    bad input (``RouteOrders`` already decodes its bytes itself). Messages of a client stream are decoded one by
    one as the handler reads them.
    """
    out: dict[str, Any] = {}
    for name, handler in handlers.items():
        decode = handler.request_deserializer
        out[name] = handler if decode is None else handler._replace(request_deserializer=None,
                                                                    **_decoding(name, handler, decode))
    return out


def _decoding(name: str, handler: Any, decode: Callable[[bytes], Any]) -> dict[str, Any]:
    def one(data: bytes, context: grpc.ServicerContext) -> Any:
        try:
            return decode(data)
        except Exception:           # noqa: BLE001 -- DecodeError, or a message of another type
            abort_with(context, errors.InvalidArgument(f"the request is not a {name} request message",
                                                       field="request"))

    def each(datas: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
        for data in datas:
            yield one(data, context)

    if handler.unary_unary is not None:
        call = handler.unary_unary
        return {"unary_unary": lambda data, context: call(one(data, context), context)}
    if handler.unary_stream is not None:
        call_s = handler.unary_stream
        return {"unary_stream": lambda data, context: call_s(one(data, context), context)}
    if handler.stream_unary is not None:
        call_su = handler.stream_unary
        return {"stream_unary": lambda datas, context: call_su(each(datas, context), context)}
    call_ss = handler.stream_stream
    return {"stream_stream": lambda datas, context: call_ss(each(datas, context), context)}


class DecodingInterceptor(grpc.ServerInterceptor):
    """Every method's request decoded by :func:`decoding_handlers` (INVALID_ARGUMENT with an ErrorInfo for bytes
    that are no request message) rather than by grpcio.

    It goes outside the interceptors that read the request (the token check reads a store's scope from it)
    and inside the metrics, so those count the refusal. Each method's handler is wrapped once and cached.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        cached = self._wrapped.get(details.method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[details.method] = (handler, decoding_handlers({details.method: handler})
                                                      [details.method])
        return cached[1]


def stream_batches(handle: Callable[[Any], Any], request_iterator: Iterator[Any],
                   context: grpc.ServicerContext) -> Iterator[Any]:
    """A bidirectional stream of batches: each message answered in order; a bad message ends the call
    with its status (the messages before it stay answered and applied)."""
    for i, request in enumerate(request_iterator):
        try:
            yield handle(request)
        except errors.PyomniError as exc:
            abort_with(context, type(exc)(f"message {i}: {exc}", field=exc.field))


class InventoryServicer(inventory_pb2_grpc.InventoryServiceServicer):
    """``pyomni.v1.InventoryService`` over an :class:`~pyomni.Engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @_rpc
    def UpsertLocations(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.locations:
            raise errors.InvalidArgument("no locations", field="locations")
        locations = [location_from_pb(x, f"locations[{i}]") for i, x in enumerate(request.locations)]
        added, updated = self._engine.upsert_locations(locations, request_id=_request_id(request.request_id))
        return inventory_pb2.UpsertLocationsResponse(added=added, updated=updated)

    def _apply(self, request: Any) -> int:
        if len(request.events) > MAX_EVENTS:
            raise errors.InvalidArgument(f"at most {MAX_EVENTS:,} events per message", field="events")
        return self._engine.apply_stock_events(events_from_pb(request), request_id=_request_id(request.request_id))

    @_rpc
    def ApplyStockEvents(self, request: Any, context: grpc.ServicerContext) -> Any:
        return inventory_pb2.ApplyStockEventsResponse(applied=self._apply(request), batches=1)

    def StreamStockEvents(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        applied = batches = 0
        for request in request_iterator:
            try:
                applied += self._apply(request)
            except errors.PyomniError as exc:
                # the batches before this one stay applied: say how many, so the sender can resume
                exc = type(exc)(f"batch {batches} failed after {batches} batches ({applied} events) were "
                                f"applied: {exc}", field=f"batches[{batches}].{exc.field or ''}".rstrip("."))
                abort_with(context, exc)
            batches += 1
        return inventory_pb2.ApplyStockEventsResponse(applied=applied, batches=batches)

    @_rpc
    def GetStock(self, request: Any, context: grpc.ServicerContext) -> Any:
        return stock_level_to_pb(self._engine.stock(request.location, request.sku))

    @_rpc
    def GetAvailability(self, request: Any, context: grpc.ServicerContext) -> Any:
        eng = self._engine
        response = inventory_pb2.GetAvailabilityResponse(
            sku=request.sku, available=eng.available(request.sku, channel=request.channel or None))
        if request.per_location:
            size = _page_size(request.page_size, 100)
            token = _decode_token(request.page_token)
            table = eng.availability(request.sku).sort_by("location")
            start = 0
            if token is not None:   # the token is the last location returned: resume after it
                ids = table.column("location").to_pylist()
                start = next((i for i, x in enumerate(ids) if x > token), len(ids))
            page = table.slice(start, size).to_pylist()
            for row in page:
                response.locations.add(location=row["location"], sku=request.sku, on_hand=row["on_hand"],
                                       reserved=row["reserved"], safety=row["safety"], available=row["available"])
            if start + size < table.num_rows:
                response.next_page_token = _encode_token(page[-1]["location"])
        return response

    @_rpc
    def FindNearbyStock(self, request: Any, context: grpc.ServicerContext) -> Any:
        found = self._engine.available_near(request.sku, required_point(request, "near", "near"),
                                            radius_km=request.radius_km or 30.0, limit=request.limit or 20)
        response = inventory_pb2.FindNearbyStockResponse()
        for x in found:
            response.results.add(location=x.location, distance_km=x.distance_km, available=x.available)
        return response

    @_rpc
    def FindPickupLocations(self, request: Any, context: grpc.ServicerContext) -> Any:
        found = self._engine.find_pickup_locations(lines_from_pb(request.lines),
                                                   required_point(request, "near", "near"),
                                                   radius_km=request.radius_km or 30.0, limit=request.limit or 5)
        response = inventory_pb2.FindPickupLocationsResponse()
        for x in found:
            response.results.add(location=x.location, distance_km=x.distance_km)
        return response


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    """``pyomni.v1.RoutingService`` over an :class:`~pyomni.Engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @staticmethod
    def _route_args(request: Any) -> tuple[Any, str | None, str | None, float | None]:
        """A RouteOrderRequest as ``route_order``'s arguments: (order, policy, request id, ttl)."""
        if not request.HasField("order"):
            raise errors.InvalidOrder("order is required", field="order")
        ttl = request.ttl_seconds
        if ttl < 0 or ttl != ttl:
            raise errors.InvalidArgument("ttl_seconds must be >= 0", field="ttl_seconds")
        return order_from_pb(request.order), request.policy or None, _request_id(request.request_id), ttl or None

    def _route(self, request: Any) -> Any:
        order, policy, request_id, ttl = self._route_args(request)
        return allocation_to_pb(self._engine.route_order(order, policy=policy, request_id=request_id, ttl=ttl,
                                                         explain=request.explain))

    @staticmethod
    def _error_result(exc: errors.PyomniError, out: Any) -> None:
        """One answer of a batch or stream that failed: the error as fields (the call goes on)."""
        out.ClearField("allocation")
        out.error_code = STATUS_CODES[type(exc)].value[0]
        out.error_reason, out.error_message, out.error_field = exc.reason, str(exc), exc.field or ""

    @_rpc
    def RouteOrder(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._route(request)

    @_rpc
    def QuoteOrder(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.HasField("order"):
            raise errors.InvalidOrder("order is required", field="order")
        return allocation_to_pb(self._engine.quote(order_from_pb(request.order), policy=request.policy or None))

    def _batch(self, request: Any) -> Any:
        # one engine call for the whole batch: one lock acquisition and one journal commit (one fsync)
        if len(request.requests) > MAX_BATCH:
            raise errors.InvalidArgument(f"at most {MAX_BATCH:,} orders per call, got {len(request.requests):,}",
                                         field="requests")
        parsed: list[Any] = []
        for r in request.requests:
            try:
                parsed.append(self._route_args(r))
            except errors.PyomniError as exc:
                parsed.append(exc)
        good = [p for p in parsed if not isinstance(p, errors.PyomniError)]
        answers = iter(self._engine.route_orders([p[0] for p in good], policies=[p[1] for p in good],
                                                 request_ids=[p[2] for p in good], ttls=[p[3] for p in good]))
        response = routing_pb2.RouteOrdersResponse()
        results = response.results
        for p in parsed:
            out = results.add()
            answer = p if isinstance(p, errors.PyomniError) else next(answers)
            if isinstance(answer, errors.PyomniError):
                self._error_result(answer, out)
            else:
                allocation_to_pb(answer, out.allocation)
        return response

    def route_orders_bytes(self, data: bytes) -> bytes:
        """``RouteOrders`` from and to the wire bytes (the handler registered for it: see ``create_server``).

        A batch of plain delivery orders (one policy and ttl, a destination, no pickup or per-order limits)
        is read natively into columns, decided in one native pass and written natively from the columns
        (``pyomni._core.protowire``): no protobuf object per order. Anything else goes the general way.
        The answers are the ones ``route_orders`` gives; their explanations are the recorded kind (how
        many shipments, why split, the policy), not the router's candidate list.
        """
        cols = read_route_orders(data)
        if cols is None:
            try:
                request = routing_pb2.RouteOrdersRequest.FromString(data)
            except DecodeError:
                raise errors.InvalidArgument("the request is not a RouteOrdersRequest", field="requests") from None
            return bytes(self._batch(request).SerializeToString())
        ids, rids, counts, skus, qtys, lat, lon, chans, policy, ttl = cols
        if len(ids) > MAX_BATCH:
            raise errors.InvalidArgument(f"at most {MAX_BATCH:,} orders per call, got {len(ids):,}", field="requests")
        if not ttl >= 0:
            raise errors.InvalidArgument("ttl_seconds must be >= 0", field="ttl_seconds")
        eng = self._engine
        res = eng.route_columns(ids, counts, skus, qtys, lat, lon, channels=chans, request_ids=rids,
                                policy=policy or None, ttl=ttl or None)
        written: dict[int, bytes] = {}
        for i, exc in res.errors.items():
            out = routing_pb2.RouteOrderResult()
            self._error_result(exc, out)
            written[i] = out.SerializeToString()
        allocated = int(pyomni_status.ALLOCATED)
        for i in set(res.answered) | set(np.flatnonzero(res.status != allocated).tolist()) - set(res.errors):
            answer = res.get(i)
            assert not isinstance(answer, errors.PyomniError)
            out = routing_pb2.RouteOrderResult()
            allocation_to_pb(answer, out.allocation)
            written[i] = out.SerializeToString()
        loc_ids = eng.network.ids
        return write_route_orders(ids, res.status, res.reservation, res.total, res.expires_at, res.n_ship,
                                  [loc_ids[x] for x in res.ship_loc.tolist()], res.ship_km, res.ship_cost,
                                  res.take.astype(np.int64), counts, skus, res.split, list(_SPLIT_REASONS),
                                  eng.policy(policy or None).key, written)

    def RouteOrdersBytes(self, data: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            return self.route_orders_bytes(data)
        except errors.PyomniError as exc:
            log.info("call failed", extra={"rpc": "RouteOrders", "reason": exc.reason, "field": exc.field})
            abort_with(context, exc)
            raise       # abort_with raises; this keeps type checkers content

    def RouteOrderStreamBytes(self, request_iterator: Iterator[bytes], context: grpc.ServicerContext
                              ) -> Iterator[bytes]:
        return stream_batches(self.route_orders_bytes, request_iterator, context)

    @_rpc
    def RouteOrders(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._batch(request)

    def RouteOrderStream(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        # one message per batch: per-message stream overhead in grpcio is about that of a unary call,
        # so a stream of single orders is no faster than unary calls (measured); batches amortise it
        return stream_batches(self._batch, request_iterator, context)

    def _columns(self, request: Any) -> Any:
        n = len(request.order_ids)
        if n > MAX_BATCH:
            raise errors.InvalidArgument(f"at most {MAX_BATCH:,} orders per call, got {n:,}", field="order_ids")
        ttl = request.ttl_seconds
        if ttl < 0 or ttl != ttl:
            raise errors.InvalidArgument("ttl_seconds must be >= 0", field="ttl_seconds")
        channels = list(request.channels)
        res = self._engine.route_columns(
            list(request.order_ids), np.asarray(request.line_counts, dtype=np.int64), list(request.skus),
            np.asarray(request.qtys, dtype=np.int64), np.asarray(request.latitudes, dtype=np.float64),
            np.asarray(request.longitudes, dtype=np.float64),
            channels=(channels[0] if len(channels) == 1 else channels) if channels else "app",
            request_ids=list(request.request_ids) if len(request.request_ids) else None,
            policy=request.policy or None, ttl=ttl or None)
        return route_results_to_pb(res, self._engine, routing_pb2.RouteOrderColumnsResponse())

    @_rpc
    def RouteOrderColumns(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._columns(request)

    def RouteOrderColumnsStream(self, request_iterator: Iterator[Any],
                                context: grpc.ServicerContext) -> Iterator[Any]:
        return stream_batches(self._columns, request_iterator, context)

    @_rpc
    def ConfirmReservation(self, request: Any, context: grpc.ServicerContext) -> Any:
        return reservation_to_pb(self._engine.confirm(request.reservation_id,
                                                      request_id=_request_id(request.request_id)))

    @_rpc
    def ReleaseReservation(self, request: Any, context: grpc.ServicerContext) -> Any:
        return reservation_to_pb(self._engine.release(request.reservation_id,
                                                      request_id=_request_id(request.request_id)))

    @_rpc
    def RerouteReservation(self, request: Any, context: grpc.ServicerContext) -> Any:
        a = self._engine.reroute(request.reservation_id, request.rejected_by, policy=request.policy or None,
                                 request_id=_request_id(request.request_id))
        return allocation_to_pb(a)

    @_rpc
    def GetReservation(self, request: Any, context: grpc.ServicerContext) -> Any:
        return reservation_to_pb(self._engine.reservation(request.reservation_id))

    @_rpc
    def ListReservations(self, request: Any, context: grpc.ServicerContext) -> Any:
        size = _page_size(request.page_size, 100)
        state = reservation_state_from_pb(request.state)
        # ask for one more than a page: whether it exists says if there is a next page
        found = self._engine.reservations(state, after=_decode_token(request.page_token), limit=size + 1)
        response = routing_pb2.ListReservationsResponse()
        for r in found[:size]:
            reservation_to_pb(r, response.reservations.add())
        if len(found) > size:
            response.next_page_token = _encode_token(found[size - 1].id)
        return response


def route_results_to_pb(res: Any, engine: Engine, msg: Any) -> Any:
    """``RouteResults`` as a ``RouteOrderColumnsResponse``: columns in, columns out (rows answered with
    objects -- retries, the general path -- are spliced in where they stand)."""
    n = len(res)
    loc_ids = engine.network.ids
    msg.statuses.extend(res.status.tolist())
    msg.reservation_numbers.extend(res.reservation.tolist())
    msg.expire_times.extend(res.expires_at.tolist())
    msg.total_costs.extend(res.total.tolist())
    if not res.answered:
        ship_loc, ship_km, ship_cost, take, n_ship = res.ship_loc, res.ship_km, res.ship_cost, res.take, res.n_ship
    else:       # splice the object rows' shipments into the columns, in row order
        index = {x: i for i, x in enumerate(loc_ids)}
        locs, kms, costs, takes, counts = [], [], [], [], []
        ship = tk = 0
        line_skus = None
        for i in range(n):
            a = res.answered.get(i)
            if a is None:
                k = int(res.n_ship[i])
                nl = int(res.line_counts[i])
                locs.extend(res.ship_loc[ship:ship + k].tolist())
                kms.extend(res.ship_km[ship:ship + k].tolist())
                costs.extend(res.ship_cost[5 * ship:5 * (ship + k)].tolist())
                takes.extend(res.take[tk:tk + k * nl].tolist())
                ship += k
                tk += k * nl
                counts.append(k)
                continue
            line_skus = res.line_skus(i)
            for sh in a.shipments:
                locs.append(index[sh.location])
                kms.append(sh.distance_km)
                c = sh.cost
                costs.extend((c.fixed, c.distance, c.low_stock, c.load, c.priority))
                got = {x.sku: x.qty for x in sh.lines}
                takes.extend(got.get(s, 0) for s in line_skus)
            counts.append(len(a.shipments))
        ship_loc, ship_km, ship_cost, take, n_ship = (np.asarray(locs, dtype=np.int32), np.asarray(kms),
                                                      np.asarray(costs), np.asarray(takes, dtype=np.int64),
                                                      np.asarray(counts, dtype=np.int32))
    msg.shipment_counts.extend(n_ship.tolist())
    used, where = np.unique(ship_loc, return_inverse=True)
    msg.location_ids.extend(loc_ids[x] for x in used.tolist())
    msg.shipment_locations.extend(where.tolist())
    msg.shipment_km.extend(ship_km.tolist())
    msg.shipment_costs.extend(ship_cost.tolist())
    msg.shipment_qtys.extend(take.tolist())
    for i, exc in sorted(res.errors.items()):
        msg.error_rows.append(i)
        msg.error_codes.append(STATUS_CODES[type(exc)].value[0])
        msg.error_reasons.append(exc.reason)
        msg.error_messages.append(str(exc))
        msg.error_fields.append(exc.field or "")
    for i in np.flatnonzero(res.status == 3).tolist():        # UNFULFILLABLE: its short lines
        a = res.get(i)
        for sl in a.short_lines:
            msg.short_rows.append(i)
            msg.short_skus.append(sl.sku)
            msg.short_requested.append(sl.requested)
            msg.short_allocatable.append(sl.allocatable)
            msg.short_reasons.append(sl.reason)
    msg.sequence = engine.lsn
    return msg


class DiagnosticsServicer(diagnostics_pb2_grpc.DiagnosticsServiceServicer):
    """``pyomni.v1.DiagnosticsService``: the empty call benchmarks compare against."""

    def Echo(self, request: Any, context: grpc.ServicerContext) -> Any:
        size = request.response_bytes
        if size < 0 or size > 4 * 1024 * 1024:
            abort_with(context, errors.InvalidArgument("response_bytes must be in 0..4 MiB", field="response_bytes"))
        return diagnostics_pb2.EchoResponse(payload=bytes(size) if size else request.payload)
