"""The wire format: conversions between pyomni's model and the ``pyomni.v1`` protobuf messages.

One module used by both ends -- the server (``grpc_server``) and
:class:`pyomni.Client` -- so a value crosses the wire and comes back equal.
Conversions *from* protobuf validate: proto3 cannot say "missing", so the
defaults that mean "not set" (empty string, 0, UNSPECIFIED) are turned into
``None`` here and the model's own constructors then check everything else.
Errors travel as a ``google.rpc.Status`` with an ``ErrorInfo`` (``reason`` =
the error class's reason, ``metadata["field"]`` = the offending field) and,
for bad input, a ``BadRequest`` field violation; :func:`error_from_status`
turns one back into the same :mod:`pyomni.errors` class.

Examples
--------
>>> import pyomni
>>> order = pyomni.Order("o-1", [("SKU-1", 2)], destination=(31.23, 121.47), channel="tmall")
>>> order_from_pb(order_to_pb(order)) == order
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from . import errors
from .flash import Claim, ClaimResults, FlashSale, SaleCounters, SaleState, StoreCounters
from .fulfilment import (
    ExceptionState,
    OpeningHours,
    OrderException,
    Rejection,
    RejectReason,
    ReturnRecord,
    ShipmentState,
    StoreEvent,
    StoreRules,
    StoreShipment,
)
from .model import (
    Allocation,
    AllocationStatus,
    Candidate,
    Capability,
    CostBreakdown,
    Explanation,
    Fulfilment,
    Line,
    Location,
    LocationKind,
    NearbyStock,
    Order,
    PickupOption,
    Reservation,
    ReservationState,
    Shipment,
    ShortLine,
    StockLevel,
)
from .settlement import AttributionRule
from .v1 import inventory_pb2, routing_pb2, selling_pb2, stores_pb2, types_pb2
from .validate import shown

__all__ = [
    "ERROR_DOMAIN",
    "error_class",
    "order_to_pb", "order_from_pb",
    "location_to_pb", "location_from_pb",
    "allocation_to_pb", "allocation_from_pb",
    "reservation_to_pb", "reservation_from_pb",
    "stock_level_to_pb", "stock_level_from_pb",
    "events_to_pb", "events_from_pb",
    "nearby_from_pb", "pickup_from_pb",
    "StoreFeedBatch",
    "store_shipment_to_pb", "store_shipment_from_pb", "store_event_to_pb", "store_event_from_pb",
    "store_feed_batch_from_pb", "rejection_to_pb", "rejection_from_pb", "return_record_to_pb",
    "return_record_from_pb", "order_exception_to_pb", "order_exception_from_pb", "store_rules_to_pb",
    "store_rules_from_pb", "attribution_rule_to_pb", "attribution_rule_from_pb", "reject_reason_from_pb",
    "reject_reason_to_pb", "ARROW_CHUNK_BYTES", "arrow_stream_bytes", "table_from_chunks",
]

#: ``ErrorInfo.domain`` of every pyomni error.
ERROR_DOMAIN = "pyomni.v1"

_BY_REASON: dict[str, type[errors.PyomniError]] = {cls.reason: cls for cls in errors.ALL_ERRORS}


def error_class(reason: str) -> type[errors.PyomniError] | None:
    """The :mod:`pyomni.errors` class whose ``reason`` is ``reason``, if any.

    >>> error_class("UNKNOWN_SKU").__name__
    'UnknownSku'
    """
    return _BY_REASON.get(reason)


# -- enums: matched by name, so the proto's numbering is free -----------------------
def _enum_maps(model: Any, pb_enum: Any, prefix: str) -> tuple[dict[Any, int], dict[int, Any]]:
    to_pb = {m: pb_enum.Value(prefix + m.name) for m in model if m.name != "NONE"}
    return to_pb, {v: m for m, v in to_pb.items()}


_KIND_TO, _KIND_FROM = _enum_maps(LocationKind, types_pb2.LocationKind, "LOCATION_KIND_")
_CAP_TO, _CAP_FROM = _enum_maps(Capability, types_pb2.Capability, "CAPABILITY_")
_FULFIL_TO, _FULFIL_FROM = _enum_maps(Fulfilment, types_pb2.Fulfilment, "FULFILMENT_")
_STATUS_TO, _STATUS_FROM = _enum_maps(AllocationStatus, types_pb2.AllocationStatus, "ALLOCATION_STATUS_")
_STATE_TO, _STATE_FROM = _enum_maps(ReservationState, types_pb2.ReservationState, "RESERVATION_STATE_")
_SHIP_TO, _SHIP_FROM = _enum_maps(ShipmentState, stores_pb2.ShipmentState, "SHIPMENT_STATE_")
_REASON_TO, _REASON_FROM = _enum_maps(RejectReason, stores_pb2.RejectReason, "REJECT_REASON_")
_XSTATE_TO, _XSTATE_FROM = _enum_maps(ExceptionState, stores_pb2.ExceptionState, "EXCEPTION_STATE_")
_EVENT_NAMES = {inventory_pb2.StockEventKind.Value("STOCK_EVENT_KIND_" + k.upper()): k
                for k in ("set", "adjust", "receive", "sale", "return", "safety")}
_EVENT_VALUES = {k: v for v, k in _EVENT_NAMES.items()}


def _enum_from(table: Mapping[int, Any], value: int, field: str, *, default: Any = None) -> Any:
    if value == 0 and default is not None:
        return default
    try:
        return table[value]
    except KeyError:
        raise errors.InvalidArgument(f"{field} has no valid value (got {value})", field=field) from None


def _point(msg: Any, field: str) -> tuple[float, float]:
    lat, lon = msg.latitude, msg.longitude
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise errors.InvalidCoordinates(f"{field} must be finite, got {lat}, {lon}", field=field)
    return (lat, lon)


def optional_point(parent: Any, name: str, field: str) -> tuple[float, float] | None:
    """The ``LatLng`` field ``name`` of ``parent`` as ``(lat, lon)``, or ``None`` when it is not set."""
    if not parent.HasField(name):
        return None
    return _point(getattr(parent, name), field)


def required_point(parent: Any, name: str, field: str) -> tuple[float, float]:
    """Like :func:`optional_point`, but a missing point is an :class:`~pyomni.errors.InvalidCoordinates`."""
    point = optional_point(parent, name, field)
    if point is None:
        raise errors.InvalidCoordinates(f"{field} is required", field=field)
    return point


# -- orders ----------------------------------------------------------------------------
def order_to_pb(order: Order, out: Any = None) -> Any:
    """An :class:`~pyomni.model.Order` as a ``pyomni.v1.Order`` (filled into ``out`` if given)."""
    msg = types_pb2.Order() if out is None else out
    msg.id = order.id
    for line in order.lines:
        msg.lines.add(sku=line.sku, qty=line.qty, unit_price_cents=line.unit_price_cents)
    if order.destination is not None:
        msg.destination.latitude, msg.destination.longitude = order.destination
    if order.pickup_location is not None:
        msg.pickup_location = order.pickup_location
    msg.fulfilment = _FULFIL_TO[order.fulfilment] if order.fulfilment is not None else 0
    msg.channel = order.channel
    msg.max_splits = order.max_splits or 0
    msg.max_distance_km = order.max_distance_km or 0.0
    msg.excluded_locations.extend(order.excluded_locations)
    msg.coupon_cents = order.coupon_cents
    msg.attribution = order.attribution or ""
    msg.selling_store = order.selling_store or ""
    return msg


def order_from_pb(msg: Any, field: str = "order") -> Order:
    """A validated-shape :class:`~pyomni.model.Order` from a ``pyomni.v1.Order``.

    The engine validates the rest (known SKUs, quantities, limits) when it routes.
    """
    if not msg.id:
        raise errors.InvalidOrder(f"{field}.id is required", field=f"{field}.id")
    if not msg.lines:
        raise errors.InvalidOrder(f"{field}.lines must not be empty", field=f"{field}.lines")
    if msg.max_splits < 0:
        raise errors.InvalidOrder(f"{field}.max_splits must be >= 0", field=f"{field}.max_splits")
    if not (math.isfinite(msg.max_distance_km) and msg.max_distance_km >= 0):
        raise errors.InvalidOrder(f"{field}.max_distance_km must be a finite number >= 0",
                                  field=f"{field}.max_distance_km")
    return Order(
        msg.id,
        tuple(Line(x.sku, x.qty, x.unit_price_cents) for x in msg.lines),
        destination=optional_point(msg, "destination", f"{field}.destination"),
        pickup_location=msg.pickup_location or None,
        fulfilment=_enum_from(_FULFIL_FROM, msg.fulfilment, f"{field}.fulfilment") if msg.fulfilment else None,
        channel=msg.channel or "app",
        max_splits=msg.max_splits or None,
        max_distance_km=msg.max_distance_km or None,
        excluded_locations=tuple(msg.excluded_locations),
        coupon_cents=msg.coupon_cents,
        attribution=msg.attribution or None,
        selling_store=msg.selling_store or None,
    )


def lines_from_pb(lines: Iterable[Any]) -> list[Line]:
    """Order lines from ``pyomni.v1.OrderLine`` messages."""
    return [Line(x.sku, x.qty) for x in lines]


# -- locations --------------------------------------------------------------------------
def location_to_pb(loc: Location, out: Any = None) -> Any:
    """A :class:`~pyomni.model.Location` as a ``pyomni.v1.Location``."""
    msg = types_pb2.Location() if out is None else out
    msg.id = loc.id
    msg.kind = _KIND_TO[LocationKind(loc.kind)]
    msg.position.latitude, msg.position.longitude = loc.lat, loc.lon
    msg.province_code, msg.prefecture_code, msg.city = loc.province_code, loc.prefecture_code, loc.city
    msg.capabilities.extend(v for m, v in _CAP_TO.items() if m in Capability(loc.capabilities))
    msg.daily_capacity, msg.fixed_cost, msg.priority = loc.daily_capacity, loc.fixed_cost, loc.priority
    msg.franchise, msg.is_open = loc.franchise, loc.is_open
    return msg


def location_from_pb(msg: Any, field: str = "location") -> Location:
    """A :class:`~pyomni.model.Location` from a ``pyomni.v1.Location`` (UNSPECIFIED kind = STORE)."""
    if not msg.id:
        raise errors.InvalidArgument(f"{field}.id is required", field=f"{field}.id")
    lat, lon = required_point(msg, "position", f"{field}.position")
    caps = Capability.NONE
    for i, c in enumerate(msg.capabilities):
        caps |= _enum_from(_CAP_FROM, c, f"{field}.capabilities[{i}]")
    return Location(msg.id, _enum_from(_KIND_FROM, msg.kind, f"{field}.kind", default=LocationKind.STORE), lat, lon,
                    province_code=msg.province_code, prefecture_code=msg.prefecture_code, city=msg.city,
                    capabilities=caps, daily_capacity=msg.daily_capacity, fixed_cost=msg.fixed_cost,
                    priority=msg.priority, franchise=msg.franchise, is_open=msg.is_open)


# -- allocations and reservations -----------------------------------------------------
def _shipment_to_pb(s: Shipment, msg: Any) -> None:
    msg.location = s.location
    for line in s.lines:
        msg.lines.add(sku=line.sku, qty=line.qty)
    msg.distance_km = s.distance_km
    c = s.cost
    msg.cost.fixed, msg.cost.distance, msg.cost.low_stock = c.fixed, c.distance, c.low_stock
    msg.cost.load, msg.cost.priority, msg.cost.total = c.load, c.priority, c.total


def _shipment_from_pb(msg: Any) -> Shipment:
    c = msg.cost
    return Shipment(msg.location, tuple(Line(x.sku, x.qty) for x in msg.lines), msg.distance_km,
                    CostBreakdown(c.fixed, c.distance, c.low_stock, c.load, c.priority))


def allocation_to_pb(a: Allocation, out: Any = None) -> Any:
    """An :class:`~pyomni.model.Allocation` (with its explanation) as a ``pyomni.v1.Allocation``."""
    msg = types_pb2.Allocation() if out is None else out
    msg.order_id = a.order_id
    msg.status = _STATUS_TO[a.status]
    if a.reservation_id is not None:
        msg.reservation_id = a.reservation_id
    for s in a.shipments:
        _shipment_to_pb(s, msg.shipments.add())
    msg.total_cost = a.total_cost
    for sl in a.short_lines:
        msg.short_lines.add(sku=sl.sku, requested=sl.requested, allocatable=sl.allocatable, reason=sl.reason)
    e = a.explanation
    ex = msg.explanation
    ex.strategy, ex.considered, ex.split, ex.split_reason, ex.policy = (e.strategy, e.considered, e.split,
                                                                       e.split_reason, e.policy)
    ex.rejected.update(e.rejected)
    for c in e.runners_up:
        ex.runners_up.add(location=c.location, cost=c.cost, distance_km=c.distance_km)
    ex.optimal = e.optimal
    if e.next_best_cost is not None:
        ex.next_best_cost = e.next_best_cost
    if e.lower_bound is not None:
        ex.lower_bound = e.lower_bound
    if a.expires_at is not None:
        msg.expire_time = a.expires_at
    return msg


def allocation_from_pb(msg: Any) -> Allocation:
    """An :class:`~pyomni.model.Allocation` from a ``pyomni.v1.Allocation``."""
    ex = msg.explanation
    explanation = Explanation(ex.strategy, ex.considered, dict(ex.rejected),
                              tuple(Candidate(c.location, c.cost, c.distance_km) for c in ex.runners_up),
                              ex.split, ex.split_reason, ex.policy, ex.optimal,
                              ex.next_best_cost if ex.HasField("next_best_cost") else None,
                              ex.lower_bound if ex.HasField("lower_bound") else None)
    return Allocation(msg.order_id, _STATUS_FROM[msg.status], msg.reservation_id or None,
                      tuple(_shipment_from_pb(s) for s in msg.shipments), msg.total_cost,
                      tuple(ShortLine(s.sku, s.requested, s.allocatable, s.reason) for s in msg.short_lines),
                      explanation, msg.expire_time if msg.reservation_id else None)


def reservation_to_pb(r: Reservation, out: Any = None) -> Any:
    """A :class:`~pyomni.model.Reservation` as a ``pyomni.v1.Reservation``."""
    msg = types_pb2.Reservation() if out is None else out
    msg.id, msg.request_id, msg.order_id, msg.channel = r.id, r.request_id or "", r.order_id, r.channel
    msg.state = _STATE_TO[r.state]
    for s in r.shipments:
        _shipment_to_pb(s, msg.shipments.add())
    msg.create_time, msg.expire_time = r.created_at, r.expires_at
    msg.excluded_locations.extend(r.excluded_locations)
    return msg


def reservation_from_pb(msg: Any) -> Reservation:
    """A :class:`~pyomni.model.Reservation` from a ``pyomni.v1.Reservation``."""
    return Reservation(msg.id, msg.request_id or None, msg.order_id, msg.channel, _STATE_FROM[msg.state],
                       tuple(_shipment_from_pb(s) for s in msg.shipments), msg.create_time, msg.expire_time,
                       tuple(msg.excluded_locations))


def reservation_state_from_pb(value: int, field: str = "state") -> ReservationState | None:
    """A state filter: ``None`` for UNSPECIFIED (any state)."""
    return None if value == 0 else _enum_from(_STATE_FROM, value, field)


def reservation_state_to_pb(state: ReservationState | None) -> int:
    """The proto value of a state filter (UNSPECIFIED for ``None``)."""
    return 0 if state is None else _STATE_TO[ReservationState(state)]


# -- stock ------------------------------------------------------------------------------
def stock_level_to_pb(s: StockLevel, out: Any = None) -> Any:
    """A :class:`~pyomni.model.StockLevel` as a ``pyomni.v1.StockLevel``."""
    msg = types_pb2.StockLevel() if out is None else out
    msg.location, msg.sku, msg.on_hand, msg.reserved, msg.safety = s.location, s.sku, s.on_hand, s.reserved, s.safety
    msg.available = s.available
    return msg


def stock_level_from_pb(msg: Any) -> StockLevel:
    """A :class:`~pyomni.model.StockLevel` from a ``pyomni.v1.StockLevel``."""
    return StockLevel(msg.location, msg.sku, msg.on_hand, msg.reserved, msg.safety)


def nearby_from_pb(msg: Any) -> NearbyStock:
    """A :class:`~pyomni.model.NearbyStock` from a ``pyomni.v1.NearbyStock``."""
    return NearbyStock(msg.location, msg.distance_km, msg.available)


def pickup_from_pb(msg: Any) -> PickupOption:
    """A :class:`~pyomni.model.PickupOption` from a ``pyomni.v1.PickupOption``."""
    return PickupOption(msg.location, msg.distance_km)


_EVENT_SCHEMA = pa.schema([("location", pa.string()), ("sku", pa.string()), ("event", pa.string()),
                           ("qty", pa.int64()), ("safety", pa.int64())])


def events_from_pb(request: Any) -> pa.Table:
    """The stock events of an ``ApplyStockEventsRequest`` as an Arrow table the engine applies.

    Either ``events`` or ``arrow_ipc`` (an Arrow IPC stream), not both.
    """
    if request.arrow_ipc:
        if len(request.events):
            raise errors.InvalidArgument("send events or arrow_ipc, not both", field="arrow_ipc")
        try:
            with pa.ipc.open_stream(request.arrow_ipc) as reader:
                return reader.read_all()
        except (pa.ArrowException, OSError) as exc:     # pyarrow raises OSError for bytes that are no stream
            raise errors.InvalidArgument(f"arrow_ipc is not an Arrow IPC stream: {str(exc)[:200]}",
                                         field="arrow_ipc") from None
    if not len(request.events):
        raise errors.InvalidArgument("no events", field="events")
    kinds = []
    for i, e in enumerate(request.events):
        kinds.append(_enum_from(_EVENT_NAMES, e.kind, f"events[{i}].kind"))
    return pa.table([[e.location for e in request.events], [e.sku for e in request.events], kinds,
                     [e.qty for e in request.events],
                     [e.safety if e.has_safety else None for e in request.events]], schema=_EVENT_SCHEMA)


def events_to_pb(events: pa.Table | Sequence[Mapping[str, Any]], request: Any) -> Any:
    """Fill an ``ApplyStockEventsRequest``: an Arrow table goes as one IPC stream, records as messages."""
    if isinstance(events, (pa.Table, pa.RecordBatch)):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, events.schema) as writer:
            writer.write(events)
        request.arrow_ipc = sink.getvalue().to_pybytes()
        return request
    for e in events:
        safety = e.get("safety")
        request.events.add(location=e["location"], sku=e["sku"],
                           kind=_EVENT_VALUES.get(str(e.get("event", "set")).lower(), 0),
                           qty=int(e["qty"]), safety=int(safety or 0), has_safety=safety is not None)
    return request


# -- flash sales -----------------------------------------------------------------------------
def flash_sale_to_pb(sale: FlashSale, counters: SaleCounters | None = None, out: Any = None) -> Any:
    """A :class:`~pyomni.flash.FlashSale` (and its counters) as a ``pyomni.v1.FlashSale``."""
    msg = selling_pb2.FlashSale() if out is None else out
    msg.id, msg.start_time, msg.end_time, msg.quota = sale.id, sale.starts_at, sale.ends_at, sale.quota
    msg.skus.extend(sale.skus)
    for store, quota in sale.stores:
        msg.stores.add(store=store, quota=quota)
    msg.customer_limit, msg.pay_window_seconds, msg.no_earmark = sale.customer_limit, sale.pay_window, not sale.earmark
    msg.max_km, msg.title = sale.max_km, sale.title
    if counters is not None:
        sale_counters_to_pb(counters, msg.counters)
    return msg


def flash_sale_from_pb(msg: Any, field: str = "sale") -> FlashSale:
    """A :class:`~pyomni.flash.FlashSale` from a ``pyomni.v1.FlashSale`` (0 = the defaults)."""
    try:
        return FlashSale(msg.id, tuple(msg.skus), msg.start_time, msg.end_time, msg.quota,
                         tuple((s.store, s.quota) for s in msg.stores), msg.customer_limit or 1,
                         msg.pay_window_seconds or 900.0, not msg.no_earmark, msg.max_km, msg.title)
    except errors.PyomniError as exc:
        exc.field = f"{field}.{exc.field}" if exc.field else field
        raise


def sale_counters_to_pb(c: SaleCounters, out: Any = None) -> Any:
    """:class:`~pyomni.flash.SaleCounters` as a ``pyomni.v1.FlashSaleCounters``."""
    msg = selling_pb2.FlashSaleCounters() if out is None else out
    msg.sale_id, msg.state, msg.quota, msg.claimed = c.sale_id, int(c.state), c.quota, c.claimed
    msg.confirmed, msg.released, msg.remaining, msg.claims, msg.sequence = (c.confirmed, c.released, c.remaining,
                                                                          c.claims, c.lsn)
    for s in c.stores:
        msg.stores.add(store=s.store, quota=s.quota, claimed=s.claimed, remaining=s.remaining, available=s.available)
    return msg


def sale_counters_from_pb(msg: Any) -> SaleCounters:
    """:class:`~pyomni.flash.SaleCounters` from a ``pyomni.v1.FlashSaleCounters``."""
    return SaleCounters(msg.sale_id, SaleState(msg.state), msg.quota, msg.claimed, msg.confirmed, msg.released,
                        msg.remaining, msg.claims,
                        tuple(StoreCounters(s.store, s.quota, s.claimed, s.remaining, s.available)
                              for s in msg.stores), msg.sequence)


def claim_to_pb(c: Claim, out: Any = None) -> Any:
    """A :class:`~pyomni.flash.Claim` as a ``pyomni.v1.Claim``."""
    msg = selling_pb2.Claim() if out is None else out
    msg.id, msg.sale_id, msg.customer, msg.sku, msg.store, msg.qty = c.id, c.sale_id, c.customer, c.sku, c.store, c.qty
    msg.state, msg.create_time, msg.expire_time = _STATE_TO[c.state], c.created_at, c.expires_at
    return msg


def claim_from_pb(msg: Any) -> Claim:
    """A :class:`~pyomni.flash.Claim` from a ``pyomni.v1.Claim``."""
    return Claim(msg.id, msg.sale_id, msg.customer, msg.sku, msg.store, msg.qty, _STATE_FROM[msg.state],
                 msg.create_time, msg.expire_time)


#: per-claim outcome code (pyomni.flash) <-> ClaimOutcome, and the outcome's error class
CLAIM_OUTCOMES: dict[int, int] = {0: 1, 9: 2, 10: 3, 11: 4, 2: 5, 1: 6, 101: 6, 102: 6, 6: 7, 5: 8, 100: 9}
OUTCOME_ERRORS: dict[int, type[errors.PyomniError]] = {
    2: errors.SoldOut, 3: errors.StoreQuotaExhausted, 4: errors.CustomerLimitReached, 5: errors.InsufficientStock,
    6: errors.InvalidArgument, 7: errors.UnknownSku, 8: errors.UnknownLocation, 9: errors.RequestIdReused,
}
_OUTCOME_LUT = np.zeros(256, dtype=np.int32)
for _code, _outcome in CLAIM_OUTCOMES.items():
    _OUTCOME_LUT[_code] = _outcome


def claim_results_to_pb(r: ClaimResults, lsn: int, out: Any = None) -> Any:
    """A batch's :class:`~pyomni.flash.ClaimResults` as a ``ClaimUnitsBatchResponse`` (columns, no
    object per claim)."""
    msg = selling_pb2.ClaimUnitsBatchResponse() if out is None else out
    msg.outcomes.extend(_OUTCOME_LUT[r.status].tolist())
    msg.claim_numbers.extend(np.maximum(r.claim, 0).tolist())
    stores, index = np.unique(r.store, return_inverse=True)
    held = stores >= 0
    shift = 0 if not len(stores) or stores[0] >= 0 else 1          # -1 (refused) sorts first
    msg.store_indexes.extend(np.where(r.store >= 0, index - shift, -1).tolist())
    msg.store_ids.extend(r.loc_ids_of(stores[held]))
    msg.expire_times.extend(np.nan_to_num(r.expires_at, nan=0.0).tolist())
    msg.create_times.extend(np.nan_to_num(r.created_at, nan=0.0).tolist())
    msg.sequence = lsn
    return msg


def claim_batch_request(sale_id: str, customers: Sequence[str], sku: str | Sequence[str], *,
                        qtys: Sequence[int] | None = None, stores: Sequence[str] | None = None,
                        near: Sequence[tuple[float, float]] | Any = None,
                        request_ids: Sequence[str] | None = None) -> Any:
    """A ``ClaimUnitsBatchRequest``: one column per field, one entry per claim (``sku`` may be one for all)."""
    msg = selling_pb2.ClaimUnitsBatchRequest(sale_id=sale_id)
    msg.customers.extend(customers)
    msg.skus.extend([sku] if isinstance(sku, str) else sku)
    if qtys is not None:
        msg.qtys.extend(qtys)
    if stores is not None:
        msg.stores.extend(s or "" for s in stores)
    if near is not None:
        pts = np.asarray(near, dtype=np.float64).reshape(-1, 2)
        msg.latitudes.extend(pts[:, 0].tolist())
        msg.longitudes.extend(pts[:, 1].tolist())
    if request_ids is not None:
        msg.request_ids.extend(request_ids)
    return msg


_OUTCOME_MESSAGES = {2: "the sale is sold out", 3: "the store's share of the sale is used up",
                     4: "the customer has reached the sale's limit", 5: "the store has too few units left",
                     6: "the claim is not valid", 7: "the SKU is not in the sale",
                     8: "the store does not take part in the sale",
                     9: "the request id was used for a different claim"}


def claim_results_from_pb(request: Any, response: Any) -> list[Claim | errors.PyomniError]:
    """Each claim of a batch as a :class:`~pyomni.flash.Claim` (HELD, as answered) or its typed error."""
    out: list[Claim | errors.PyomniError] = []
    skus = list(request.skus)
    qtys = list(request.qtys)
    stores = list(response.store_ids)
    for i, outcome in enumerate(response.outcomes):
        if outcome != 1:
            cls = OUTCOME_ERRORS.get(outcome, errors.PyomniError)
            out.append(cls(_OUTCOME_MESSAGES.get(outcome, "refused"), field=f"claims[{i}]"))
            continue
        out.append(Claim(f"C{response.claim_numbers[i]:010d}", request.sale_id, request.customers[i],
                         skus[0] if len(skus) == 1 else skus[i], stores[response.store_indexes[i]],
                         qtys[i] if qtys else 1, ReservationState.HELD, response.create_times[i],
                         response.expire_times[i]))
    return out


# -- store operations ----------------------------------------------------------------------------
def store_shipment_to_pb(s: StoreShipment, now: float | None = None, out: Any = None) -> Any:
    """A :class:`~pyomni.fulfilment.StoreShipment` as a ``pyomni.v1.StoreShipment``; ``now`` (the server's
    time) fills ``seconds_left``."""
    msg = stores_pb2.StoreShipment() if out is None else out
    msg.id, msg.reservation_id, msg.order_id, msg.location = s.id, s.reservation_id, s.order_id, s.location
    msg.state, msg.pickup, msg.channel = _SHIP_TO[s.state], s.pickup, s.channel
    msg.fulfilment = _FULFIL_TO[s.fulfilment]
    for line in s.lines:
        msg.lines.add(sku=line.sku, qty=line.qty)
    msg.created_at, msg.updated_at, msg.late, msg.note = s.created_at, s.updated_at, s.late, s.note
    if s.due_at is not None:
        msg.due_at = s.due_at
        if now is not None:
            msg.seconds_left = s.due_at - now
    if s.reason is not None:
        msg.reason = _REASON_TO[s.reason]
    if s.destination is not None:
        msg.destination.latitude, msg.destination.longitude = s.destination
    return msg


def store_shipment_from_pb(msg: Any) -> StoreShipment:
    """A :class:`~pyomni.fulfilment.StoreShipment` from a ``pyomni.v1.StoreShipment`` (``seconds_left`` is
    the server's view of ``due_at`` and is not kept)."""
    return StoreShipment(msg.id, msg.reservation_id, msg.order_id, msg.location, _SHIP_FROM[msg.state], msg.pickup,
                         _FULFIL_FROM[msg.fulfilment], msg.channel, tuple(Line(x.sku, x.qty) for x in msg.lines),
                         msg.created_at, msg.updated_at, msg.due_at if msg.HasField("due_at") else None, msg.late,
                         _REASON_FROM[msg.reason] if msg.reason else None, msg.note,
                         (msg.destination.latitude, msg.destination.longitude) if msg.HasField("destination")
                         else None)


def store_event_to_pb(e: StoreEvent, now: float | None = None, out: Any = None) -> Any:
    """A :class:`~pyomni.fulfilment.StoreEvent` as a ``pyomni.v1.StoreEvent``."""
    msg = stores_pb2.StoreEvent() if out is None else out
    msg.seq, msg.location, msg.kind = e.seq, e.location, e.kind
    store_shipment_to_pb(e.shipment, now, msg.shipment)
    return msg


def store_event_from_pb(msg: Any) -> StoreEvent:
    """A :class:`~pyomni.fulfilment.StoreEvent` from a ``pyomni.v1.StoreEvent``."""
    return StoreEvent(msg.seq, msg.location, msg.kind, store_shipment_from_pb(msg.shipment))


@dataclass(frozen=True, slots=True)
class StoreFeedBatch:
    """One message of a store's order feed (``WatchStoreOrders``), as :meth:`pyomni.Client.watch_store_orders`
    yields it.

    ``events`` oldest first; resume after ``last_seq``. ``reset``: the feed started over and ``events`` are
    every open shipment of the stores (replace the list with them). ``heartbeat``: nothing happened for the
    heartbeat interval. ``server_time`` is the server's clock when it sent the batch, so
    ``event.shipment.due_at - batch.server_time`` is the time left as the server saw it.
    """

    events: tuple[StoreEvent, ...]
    last_seq: int
    reset: bool
    heartbeat: bool
    server_time: float

    def seconds_left(self, event: StoreEvent) -> float | None:
        """Seconds from the batch's server time to the event's shipment deadline (None: no deadline)."""
        due = event.shipment.due_at
        return None if due is None else due - self.server_time


def store_feed_batch_from_pb(msg: Any) -> StoreFeedBatch:
    """A :class:`StoreFeedBatch` from a ``pyomni.v1.StoreFeedBatch``."""
    return StoreFeedBatch(tuple(store_event_from_pb(e) for e in msg.events), msg.last_seq, msg.reset, msg.heartbeat,
                          msg.server_time)


def reject_reason_to_pb(reason: RejectReason) -> int:
    """The proto value of a rejection's reason."""
    return _REASON_TO[RejectReason(reason)]


def reject_reason_from_pb(value: int, field: str = "reason") -> RejectReason:
    """A rejection's reason (UNSPECIFIED is refused: a rejection needs one)."""
    if value == 0:
        raise errors.InvalidArgument("a rejection needs a reason", field=field)
    return _enum_from(_REASON_FROM, value, field)     # type: ignore[no-any-return]


def order_exception_to_pb(x: OrderException, out: Any = None) -> Any:
    """An :class:`~pyomni.fulfilment.OrderException` as a ``pyomni.v1.OrderException``."""
    msg = stores_pb2.OrderException() if out is None else out
    msg.id, msg.order_id, msg.reservation_id, msg.shipment_id = x.id, x.order_id, x.reservation_id, x.shipment_id
    for sl in x.lines:
        msg.lines.add(sku=sl.sku, requested=sl.requested, allocatable=sl.allocatable, reason=sl.reason)
    msg.reason, msg.created_at, msg.state, msg.resolution = x.reason, x.created_at, _XSTATE_TO[x.state], x.resolution
    if x.resolved_at is not None:
        msg.resolved_at = x.resolved_at
    return msg


def order_exception_from_pb(msg: Any) -> OrderException:
    """An :class:`~pyomni.fulfilment.OrderException` from a ``pyomni.v1.OrderException``."""
    return OrderException(msg.id, msg.order_id, msg.reservation_id, msg.shipment_id,
                          tuple(ShortLine(s.sku, s.requested, s.allocatable, s.reason) for s in msg.lines),
                          msg.reason, msg.created_at, _XSTATE_FROM[msg.state], msg.resolution,
                          msg.resolved_at if msg.HasField("resolved_at") else None)


def rejection_to_pb(r: Rejection, now: float | None = None, out: Any = None) -> Any:
    """A :class:`~pyomni.fulfilment.Rejection` as a ``pyomni.v1.Rejection``."""
    msg = stores_pb2.Rejection() if out is None else out
    store_shipment_to_pb(r.shipment, now, msg.shipment)
    for s in r.new_shipments:
        store_shipment_to_pb(s, now, msg.new_shipments.add())
    if r.exception is not None:
        order_exception_to_pb(r.exception, msg.exception)
    for location, sku, units in r.discrepancies:
        msg.discrepancies.add(location=location, sku=sku, units=units)
    return msg


def rejection_from_pb(msg: Any) -> Rejection:
    """A :class:`~pyomni.fulfilment.Rejection` from a ``pyomni.v1.Rejection``."""
    return Rejection(store_shipment_from_pb(msg.shipment), tuple(store_shipment_from_pb(s) for s in msg.new_shipments),
                     order_exception_from_pb(msg.exception) if msg.HasField("exception") else None,
                     tuple((d.location, d.sku, d.units) for d in msg.discrepancies))


def return_record_to_pb(r: ReturnRecord, out: Any = None) -> Any:
    """A :class:`~pyomni.fulfilment.ReturnRecord` as a ``pyomni.v1.ReturnRecord``."""
    msg = stores_pb2.ReturnRecord() if out is None else out
    msg.id, msg.shipment_id, msg.order_id, msg.sku, msg.qty = r.id, r.shipment_id, r.order_id, r.sku, r.qty
    msg.location, msg.returned_at, msg.restocked = r.location, r.at, r.restocked
    return msg


def return_record_from_pb(msg: Any) -> ReturnRecord:
    """A :class:`~pyomni.fulfilment.ReturnRecord` from a ``pyomni.v1.ReturnRecord``."""
    return ReturnRecord(msg.id, msg.shipment_id, msg.order_id, msg.sku, msg.qty, msg.location, msg.returned_at,
                        msg.restocked)


_DEFAULT_RULES = StoreRules()


def store_rules_to_pb(r: StoreRules, out: Any = None) -> Any:
    """:class:`~pyomni.fulfilment.StoreRules` as a ``pyomni.v1.StoreRules`` (every field written)."""
    msg = stores_pb2.StoreRules() if out is None else out
    h = r.hours
    msg.hours.open_minute, msg.hours.close_minute, msg.hours.utc_offset_minutes = (h.open_minute, h.close_minute,
                                                                                   h.utc_offset_minutes)
    msg.hours.closed_weekdays.extend(h.closed_weekdays)
    msg.answer_seconds, msg.pick_seconds = r.answer_s, r.pick_s
    msg.same_day_answer_seconds, msg.same_day_pick_seconds = r.same_day_answer_s, r.same_day_pick_s
    msg.collect_days, msg.return_days = r.collect_days, r.return_days
    return msg


def store_rules_from_pb(msg: Any, field: str = "rules") -> StoreRules:
    """:class:`~pyomni.fulfilment.StoreRules` from a ``pyomni.v1.StoreRules``: absent hours and zero limits are
    the defaults (a limit of 0 is not one); hours, when given, are taken as they are."""
    d = _DEFAULT_RULES
    try:
        hours = d.hours
        if msg.HasField("hours"):
            h = msg.hours
            try:
                hours = OpeningHours(h.open_minute, h.close_minute, h.utc_offset_minutes, tuple(h.closed_weekdays))
            except errors.PyomniError as exc:
                exc.field = f"hours.{exc.field}" if exc.field else "hours"
                raise
        return StoreRules(hours, msg.answer_seconds or d.answer_s, msg.pick_seconds or d.pick_s,
                          msg.same_day_answer_seconds or d.same_day_answer_s,
                          msg.same_day_pick_seconds or d.same_day_pick_s, msg.collect_days or d.collect_days,
                          msg.return_days if msg.HasField("return_days") else d.return_days)
    except errors.PyomniError as exc:
        exc.field = f"{field}.{exc.field}" if exc.field else field
        raise


_FRANCHISE = ("franchise_coupon_hq_bp", "franchise_coupon_selling_bp", "franchise_coupon_fulfilling_bp",
              "franchise_coupon_home_bp")
_RULE_NUMBERS = ("selling_bp", "fulfilling_bp", "home_bp", "hq_bp", "fee_cents", "coupon_hq_bp", "coupon_selling_bp",
                 "coupon_fulfilling_bp", "coupon_home_bp")


def attribution_rule_to_pb(rule: AttributionRule, out: Any = None) -> Any:
    """An :class:`~pyomni.settlement.AttributionRule` as a ``pyomni.v1.AttributionRule``."""
    msg = stores_pb2.AttributionRule() if out is None else out
    msg.name, msg.version, msg.home, msg.key = rule.name, rule.version, rule.home, rule.key
    for name in _RULE_NUMBERS:
        setattr(msg, name, getattr(rule, name))
    for name in _FRANCHISE:
        value = getattr(rule, name)
        if value is not None:
            setattr(msg, name, value)
    for code, store in rule.regional_stores:
        msg.regional_stores.add(province_code=code, store=store)
    return msg


def attribution_rule_from_pb(msg: Any, field: str = "rule") -> AttributionRule:
    """An :class:`~pyomni.settlement.AttributionRule` from a ``pyomni.v1.AttributionRule`` (version 0 = 1,
    home "" = "nearest"; ``key`` is ignored)."""
    kwargs: dict[str, Any] = {name: getattr(msg, name) for name in _RULE_NUMBERS}
    for name in _FRANCHISE:
        if msg.HasField(name):
            kwargs[name] = getattr(msg, name)
    try:
        return AttributionRule(msg.name, msg.version or 1, home=msg.home or "nearest",
                               regional_stores=tuple((r.province_code, r.store) for r in msg.regional_stores),
                               **kwargs)
    except errors.PyomniError as exc:
        exc.field = f"{field}.{exc.field}" if exc.field else field
        raise


#: Bytes of one ArrowChunk message (a table travels as several).
ARROW_CHUNK_BYTES = 4 << 20


def arrow_stream_bytes(table: pa.Table) -> bytes:
    """A table as one Arrow IPC stream (what ``ArrowChunk`` messages carry, cut into pieces)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=65_536)
    return bytes(sink.getvalue().to_pybytes())


def table_from_chunks(chunks: Iterable[Any]) -> pa.Table:
    """The table of a stream of ``ArrowChunk`` messages (their bytes, concatenated, are one Arrow IPC stream)."""
    data = b"".join(bytes(c.data) for c in chunks)
    try:
        with pa.ipc.open_stream(data) as reader:
            return reader.read_all()
    except (pa.ArrowException, OSError) as exc:
        raise errors.InvalidArgument(f"the chunks are not an Arrow IPC stream: {str(exc)[:200]}",
                                     field="data") from None


# -- routing in columns ----------------------------------------------------------------------
def route_columns_request(orders: Sequence[Order], *, request_ids: Sequence[str] | None = None, policy: str = "",
                          ttl: float = 0.0) -> Any:
    """A ``RouteOrderColumnsRequest`` of delivery orders (columns: no message per order)."""
    msg = routing_pb2.RouteOrderColumnsRequest(policy=policy or "", ttl_seconds=ttl or 0.0)
    msg.order_ids.extend(o.id for o in orders)
    msg.line_counts.extend(len(o.lines) for o in orders)
    msg.skus.extend(line.sku for o in orders for line in o.lines)
    msg.qtys.extend(line.qty for o in orders for line in o.lines)
    for o in orders:
        if o.destination is None:
            raise errors.InvalidOrder(f"order {shown(o.id)}: the columnar call takes delivery orders",
                                      field="destination")
    msg.latitudes.extend(o.destination[0] for o in orders)       # type: ignore[index]
    msg.longitudes.extend(o.destination[1] for o in orders)      # type: ignore[index]
    channels = {o.channel for o in orders}
    if channels != {"app"}:
        msg.channels.extend([o.channel for o in orders] if len(channels) > 1 else list(channels))
    if request_ids is not None:
        msg.request_ids.extend(r or "" for r in request_ids)
    return msg


def route_results_from_pb(request: Any, response: Any) -> list[Allocation | errors.PyomniError]:
    """Each order of a ``RouteOrderColumnsResponse`` as an :class:`~pyomni.Allocation` or its typed error."""
    n = len(response.statuses)
    failed = {r: (reason, message, field) for r, reason, message, field in
              zip(response.error_rows, response.error_reasons, response.error_messages, response.error_fields)}
    shorts: dict[int, list[ShortLine]] = {}
    for r, sku, req, alloc, why in zip(response.short_rows, response.short_skus, response.short_requested,
                                       response.short_allocatable, response.short_reasons):
        shorts.setdefault(r, []).append(ShortLine(sku, req, alloc, why))
    counts = list(request.line_counts)
    skus = list(request.skus)
    locs = list(response.location_ids)
    ship_loc, km, costs, qtys = (list(response.shipment_locations), list(response.shipment_km),
                                 list(response.shipment_costs), list(response.shipment_qtys))
    out: list[Allocation | errors.PyomniError] = []
    line = ship = take = 0
    for i in range(n):
        nl = counts[i]
        order_skus = skus[line:line + nl]
        line += nl
        if i in failed:
            reason, message, field = failed[i]
            out.append((error_class(reason) or errors.PyomniError)(message, field=field or None))
            continue
        shipments = []
        for _ in range(response.shipment_counts[i]):
            lines = tuple(Line(s, q) for s, q in zip(order_skus, qtys[take:take + nl]) if q)
            shipments.append(Shipment(locs[ship_loc[ship]], lines, km[ship],
                                      CostBreakdown(*costs[5 * ship:5 * ship + 5])))
            ship += 1
            take += nl
        number = response.reservation_numbers[i]
        out.append(Allocation(request.order_ids[i], _STATUS_FROM[response.statuses[i]],
                              f"R{number:010d}" if number else None, tuple(shipments), response.total_costs[i],
                              tuple(shorts.get(i, ())), Explanation("columns", len(shipments), {}, (),
                                                                   len(shipments) > 1, "", ""),
                              response.expire_times[i] or None))
    return out
