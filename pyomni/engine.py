"""The real-time engine: ledger + routing + reservations behind one lock.

Every mutation is a command applied in one place: it is validated completely
(ids interned, quantities and coordinates checked) before anything changes,
then applied by the native core (or the plain-Python reference when
``native=False``) in one all-or-nothing step. Every mutation takes an optional
``request_id``; a retry with the same id returns the first answer and changes
nothing, and reusing an id for a different request is an error (AIP-155).

Concurrency: commands and queries are serialised by one lock. A decision takes
microseconds, so the lock is cheap; the native hot loops release the GIL.

Examples
--------
>>> import pyomni
>>> net = pyomni.demo_network(stores=50, warehouses=2, skus=100, seed=1)
>>> eng = pyomni.Engine(net)
>>> _ = eng.apply_stock_events(pyomni.demo_stock(net, seed=1))
>>> a = eng.route_order(pyomni.Order("o-1", [("SKU-000000", 1)], destination=(31.23, 121.47)))
>>> a.status.name, len(a.shipments)
('ALLOCATED', 1)
>>> eng.confirm(a.reservation_id).state.name
'CONFIRMED'
"""

from __future__ import annotations

import hashlib
import heapq
import math
import os
import pickle
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import errors
from ._core import EVENT_KINDS, MAX_SHIPMENTS, REJECT_NAMES, check_status
from .model import (
    MAX_EXCLUDED,
    MAX_LINES,
    MAX_QTY,
    Allocation,
    AllocationStatus,
    Candidate,
    Capability,
    CostBreakdown,
    Explanation,
    Fulfilment,
    Line,
    Location,
    NearbyStock,
    Order,
    PickupOption,
    Reservation,
    ReservationState,
    Shipment,
    ShortLine,
    StockLevel,
    validate_lat_lon,
    validate_point,
)
from .network import Network
from .policy import DEFAULT_POLICY, ChannelRule, RoutingPolicy

__all__ = ["Engine", "config", "set_config"]

_STRATEGIES = ("spatial", "sku_scan")
_SPLIT_REASONS = ("", "NO_SINGLE_LOCATION", "CHEAPER")
_NEED_CAP = {Fulfilment.DELIVERY: int(Capability.SHIP), Fulfilment.PICKUP: int(Capability.SHIP),
             Fulfilment.SAME_DAY: int(Capability.SAME_DAY)}
_EV_SET, _EV_ADJUST, _EV_RECEIVE, _EV_SALE, _EV_RETURN, _EV_SAFETY = range(6)
_SNAPSHOT_VERSION = 1
_SNAPSHOT_CHUNK = 64          # records / remembered requests per pickle chunk


@dataclass
class _Config:
    native: bool = True


_config = _Config()


def set_config(*, native: bool | None = None) -> None:
    """Set process-wide defaults. ``native=False`` makes new engines use the plain-Python reference.

    >>> set_config(native=True)
    """
    if native is not None:
        _config.native = bool(native)


def config() -> dict[str, Any]:
    """The current process-wide defaults."""
    return {"native": _config.native}


class _Record:
    """A reservation as the engine keeps it (mutable, internal)."""

    __slots__ = ("id", "request_id", "order", "state", "created_at", "expires_at", "shipments", "excluded",
                 "need_cap", "max_km", "policy")

    def __init__(self, rid, request_id, order, created_at, expires_at, shipments, excluded, need_cap, max_km,
                 policy):
        self.id = rid
        self.request_id = request_id
        self.order = order
        self.state = ReservationState.HELD
        self.created_at = created_at
        self.expires_at = expires_at
        self.shipments = shipments      # list of native shipment tuples (loc, km, costs, takes, cells)
        self.excluded = excluded        # location indices this order must not use again
        self.need_cap = need_cap
        self.max_km = max_km
        self.policy = policy


class _ParsedOrder:
    """An order validated and interned to native indices."""

    __slots__ = ("order", "skus", "qtys", "lat", "lon", "pickup", "need_cap", "max_km", "excluded", "max_ship")
    order: Order
    skus: list[int]
    qtys: list[int]
    lat: float
    lon: float
    pickup: int
    need_cap: int
    max_km: float
    excluded: tuple[int, ...]
    max_ship: int


def _check_qty(value: Any, field: str, *, allow_zero: bool = False, allow_negative: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise errors.InvalidQuantity(f"{field} must be an integer, got {value!r}", field=field)
    q = int(value)
    lo = -MAX_QTY if allow_negative else (0 if allow_zero else 1)
    if q < lo or q > MAX_QTY or (q == 0 and not allow_zero):
        raise errors.InvalidQuantity(f"{field} = {q} is out of range [{lo}, {MAX_QTY}]"
                                     + ("" if allow_zero else " (and must not be 0)"), field=field)
    return q


class Engine:
    """Inventory ledger, routing and reservations for one network.

    Parameters
    ----------
    network : Network
        Locations and the SKU catalogue.
    policy : RoutingPolicy, optional
        The default routing policy (registered under its key).
    clock : callable, optional
        Returns the current time in seconds (``time.time``); inject one in tests.
    reservation_ttl : float
        Seconds a HELD reservation lives before it expires (default 15 minutes).
    channels : mapping of str to ChannelRule, optional
        Per-channel selling limits.
    native : bool, optional
        Use the compiled core (default, see :func:`set_config`) or the plain-Python reference.
    max_request_ids : int
        How many request ids are remembered for idempotent retries (oldest forgotten first).

    Examples
    --------
    >>> import pyomni
    >>> eng = pyomni.Engine(pyomni.demo_network(stores=10, warehouses=1, skus=5, seed=0))
    >>> eng.set_stock("SH-0001" if "SH-0001" in eng.network else eng.network.ids[0], "SKU-000001", 5).on_hand
    5
    """

    def __init__(self, network: Network, *, policy: RoutingPolicy | None = None,
                 clock: Callable[[], float] = time.time, reservation_ttl: float = 900.0,
                 channels: Mapping[str, ChannelRule] | None = None, native: bool | None = None,
                 max_request_ids: int = 1_000_000) -> None:
        if not isinstance(network, Network):
            raise errors.InvalidArgument("network must be a pyomni.Network", field="network")
        if not (isinstance(reservation_ttl, (int, float)) and math.isfinite(reservation_ttl) and reservation_ttl > 0):
            raise errors.InvalidArgument("reservation_ttl must be a positive number of seconds",
                                         field="reservation_ttl")
        self._net = network
        self._native = _config.native if native is None else bool(native)
        self._clock = clock
        self._ttl = float(reservation_ttl)
        self._lock = threading.Lock()
        self._loc_ids: tuple[str, ...] = network.ids
        self._loc_index: dict[str, int] = {x: i for i, x in enumerate(network.ids)}
        self._sku_ids: list[str] = list(network.skus)
        self._sku_index: dict[str, int] = {x: i for i, x in enumerate(self._sku_ids)}
        self._caps = np.ascontiguousarray(network.capabilities, dtype=np.uint8).copy()
        self._open = np.ascontiguousarray(network.is_open, dtype=np.uint8).copy()
        self._capacity = np.ascontiguousarray(network.daily_capacity, dtype=np.int32).copy()
        self._ledger, self._router = _make_backend(self._native, network, len(self._sku_ids), self._caps,
                                                   self._open, self._capacity)
        # the native router takes a compiled copy of the weights; the reference reads the policy itself
        self._policy_arg: Callable[[RoutingPolicy], Any] = self._native_policy if self._native else _identity
        self._policies: dict[str, RoutingPolicy] = {}
        self._default_policy = policy or DEFAULT_POLICY
        self.register_policy(self._default_policy)
        self._channels: dict[str, ChannelRule] = dict(channels or {})
        self._records: dict[str, _Record] = {}
        self._live_orders: dict[str, str] = {}          # order id -> reservation id (HELD or CONFIRMED)
        self._expiry: list[tuple[float, int, str]] = []
        self._seq = 0
        self._requests: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._max_request_ids = int(max_request_ids)

    # -- configuration -------------------------------------------------------------
    @property
    def network(self) -> Network:
        """The network the engine was built on."""
        return self._net

    @property
    def native(self) -> bool:
        """True when the compiled core is in use."""
        return self._native

    @property
    def skus(self) -> tuple[str, ...]:
        """The SKU catalogue, in index order."""
        return tuple(self._sku_ids)

    def register_policy(self, policy: RoutingPolicy) -> None:
        """Make ``policy`` selectable by its key (``"name@version"``) and by its name (latest version)."""
        if not isinstance(policy, RoutingPolicy):
            raise errors.InvalidArgument("policy must be a RoutingPolicy", field="policy")
        with self._lock:
            self._policies[policy.key] = policy
            latest = self._policies.get(policy.name)
            if latest is None or latest.version <= policy.version:
                self._policies[policy.name] = policy

    def policy(self, key: str | RoutingPolicy | None = None) -> RoutingPolicy:
        """Look up a registered policy by ``"name"`` or ``"name@version"`` (default: the engine's)."""
        if key is None:
            return self._default_policy
        if isinstance(key, RoutingPolicy):
            return key
        try:
            return self._policies[key]
        except (KeyError, TypeError):
            raise errors.UnknownPolicy(f"no routing policy {key!r}", field="policy") from None

    def set_channel_rule(self, channel: str, rule: ChannelRule | None) -> None:
        """Set (or with ``None`` remove) the selling limit of a channel."""
        if not isinstance(channel, str) or not channel:
            raise errors.InvalidArgument("channel must be a non-empty string", field="channel")
        if rule is not None and not isinstance(rule, ChannelRule):
            raise errors.InvalidArgument("rule must be a ChannelRule", field="rule")
        with self._lock:
            if rule is None:
                self._channels.pop(channel, None)
            else:
                self._channels[channel] = rule

    def register_skus(self, skus: Iterable[str]) -> int:
        """Add SKUs to the catalogue; returns how many were added.

        Raises :class:`~pyomni.errors.DuplicateId` if any is already known or repeated.
        """
        new = list(skus)
        for i, s in enumerate(new):
            if not isinstance(s, str) or not s:
                raise errors.InvalidArgument("SKU ids must be non-empty strings", field=f"skus[{i}]")
        with self._lock:
            seen: set[str] = set()
            for i, s in enumerate(new):
                if s in self._sku_index or s in seen:
                    raise errors.DuplicateId(f"SKU {s!r} is already in the catalogue", field=f"skus[{i}]")
                seen.add(s)
            check_status(self._ledger.add_skus(len(new)))
            for s in new:
                self._sku_index[s] = len(self._sku_ids)
                self._sku_ids.append(s)
        return len(new)

    def set_location_open(self, location: str, is_open: bool, *, request_id: str | None = None) -> None:
        """Open or close a location for online orders (its existing reservations stay)."""
        if not isinstance(is_open, (bool, np.bool_)):
            raise errors.InvalidArgument("is_open must be a bool", field="is_open")
        fingerprint = ("open", location, bool(is_open))
        with self._lock:
            if self._replay(request_id, fingerprint) is not _MISSING:
                return
            loc = self._loc(location, "location")
            self._open[loc] = bool(is_open)
            self._router.set_open(loc, bool(is_open))
            self._remember(request_id, fingerprint, None)

    def set_daily_capacity(self, location: str, capacity: int, *, request_id: str | None = None) -> None:
        """Change a location's daily shipment capacity (0 = unlimited)."""
        cap = _check_qty(capacity, "capacity", allow_zero=True)
        fingerprint = ("capacity", location, cap)
        with self._lock:
            if self._replay(request_id, fingerprint) is not _MISSING:
                return
            loc = self._loc(location, "location")
            self._capacity[loc] = cap
            self._router.set_capacity(loc, cap)
            self._remember(request_id, fingerprint, None)

    def new_day(self, *, request_id: str | None = None) -> None:
        """Start a new business day: shipments confirmed so far stop counting toward capacity."""
        with self._lock:
            if self._replay(request_id, ("new_day",)) is not _MISSING:
                return
            self._ledger.new_day()
            self._remember(request_id, ("new_day",), None)

    # -- ids -------------------------------------------------------------------
    def _loc(self, location: Any, field: str) -> int:
        try:
            return self._loc_index[location]
        except (KeyError, TypeError):
            raise errors.UnknownLocation(f"no location {location!r}", field=field) from None

    def _sku(self, sku: Any, field: str) -> int:
        try:
            return self._sku_index[sku]
        except (KeyError, TypeError):
            raise errors.UnknownSku(f"no SKU {sku!r}", field=field) from None

    def _now(self) -> float:
        return float(self._clock())

    # -- idempotency ---------------------------------------------------------------
    def _replay(self, request_id: str | None, fingerprint: Any) -> Any:
        """The stored answer for a retried request id, or ``_MISSING``."""
        if request_id is None:
            return _MISSING
        if not isinstance(request_id, str) or not request_id:
            raise errors.InvalidArgument("request_id must be a non-empty string", field="request_id")
        prior = self._requests.get(request_id)
        if prior is None:
            return _MISSING
        if prior[0] != fingerprint:
            raise errors.RequestIdReused(f"request id {request_id!r} was used for a different request",
                                         field="request_id")
        return prior[1]

    def _remember(self, request_id: str | None, fingerprint: Any, result: Any) -> Any:
        if request_id is not None:
            self._requests[request_id] = (fingerprint, result)
            if len(self._requests) > self._max_request_ids:
                self._requests.popitem(last=False)
        return result

    # -- stock commands ----------------------------------------------------------
    def _stock_command(self, kind: int, location: str, sku: str, qty: int, safety: int, request_id: str | None,
                       fingerprint: tuple) -> StockLevel:
        with self._lock:
            prior = self._replay(request_id, fingerprint)
            if prior is not _MISSING:
                return prior
            self._expire_locked()
            loc = self._loc(location, "location")
            s = self._sku(sku, "sku")
            check_status(self._ledger.apply_event(loc, s, kind, qty, safety),
                         f"{EVENT_KINDS[kind]} {qty} of {sku!r} at {location!r}", field="qty")
            return self._remember(request_id, fingerprint, self._stock_level(loc, s))

    def set_stock(self, location: str, sku: str, on_hand: int, *, safety: int | None = None,
                  request_id: str | None = None) -> StockLevel:
        """Set a cell's on-hand count (a stock take), and optionally its safety stock.

        Raises :class:`~pyomni.errors.StockReserved` if ``on_hand`` is below what is reserved.
        """
        q = _check_qty(on_hand, "on_hand", allow_zero=True)
        sf = -1 if safety is None else _check_qty(safety, "safety", allow_zero=True)
        return self._stock_command(_EV_SET, location, sku, q, sf, request_id, ("set", location, sku, q, sf))

    def adjust_stock(self, location: str, sku: str, delta: int, *, request_id: str | None = None) -> StockLevel:
        """Add (or with a negative ``delta`` remove) units, e.g. after a count or damage."""
        q = _check_qty(delta, "delta", allow_negative=True)
        return self._stock_command(_EV_ADJUST, location, sku, q, -1, request_id, ("adjust", location, sku, q))

    def receive(self, location: str, sku: str, qty: int, *, request_id: str | None = None) -> StockLevel:
        """Book a delivery of ``qty`` units into a location."""
        q = _check_qty(qty, "qty")
        return self._stock_command(_EV_RECEIVE, location, sku, q, -1, request_id, ("receive", location, sku, q))

    def sell(self, location: str, sku: str, qty: int, *, request_id: str | None = None) -> StockLevel:
        """A shop-floor (POS) sale: may sell into safety stock, never into reserved units.

        Raises :class:`~pyomni.errors.InsufficientStock` when fewer unreserved units are on hand.
        """
        q = _check_qty(qty, "qty")
        return self._stock_command(_EV_SALE, location, sku, q, -1, request_id, ("sale", location, sku, q))

    def return_item(self, location: str, sku: str, qty: int, *, request_id: str | None = None) -> StockLevel:
        """A customer return, accepted at any location (it goes back on hand there)."""
        q = _check_qty(qty, "qty")
        return self._stock_command(_EV_RETURN, location, sku, q, -1, request_id, ("return", location, sku, q))

    def set_safety(self, location: str, sku: str, safety: int, *, request_id: str | None = None) -> StockLevel:
        """Set the safety stock held back for walk-in customers at one cell."""
        q = _check_qty(safety, "safety", allow_zero=True)
        return self._stock_command(_EV_SAFETY, location, sku, q, -1, request_id, ("safety", location, sku, q))

    def transfer(self, source: str, destination: str, sku: str, qty: int, *,
                 request_id: str | None = None) -> tuple[StockLevel, StockLevel]:
        """Move unreserved units between locations atomically; returns both cells after the move."""
        q = _check_qty(qty, "qty")
        fingerprint = ("transfer", source, destination, sku, q)
        with self._lock:
            prior = self._replay(request_id, fingerprint)
            if prior is not _MISSING:
                return prior
            self._expire_locked()
            src = self._loc(source, "source")
            dst = self._loc(destination, "destination")
            if src == dst:
                raise errors.InvalidArgument("source and destination are the same location", field="destination")
            s = self._sku(sku, "sku")
            check_status(self._router_ledger_transfer(src, dst, s, q),
                         f"transfer {q} of {sku!r} from {source!r} to {destination!r}", field="qty")
            return self._remember(request_id, fingerprint, (self._stock_level(src, s), self._stock_level(dst, s)))

    def _router_ledger_transfer(self, src: int, dst: int, s: int, q: int) -> int:
        return self._ledger.transfer(src, dst, s, q)

    def apply_stock_events(self, source: Any, *, request_id: str | None = None) -> int:
        """Apply a batch of stock events atomically in one native pass; returns the number applied.

        ``source`` is anything :func:`pyomni.io.read_stock_events` accepts: an Arrow
        table or record batch, a pandas DataFrame, or a Parquet / Arrow IPC / CSV path.
        Columns: ``location``, ``sku``, ``event`` (set, adjust, receive, sale, return,
        safety), ``qty``, ``safety`` (optional, for ``set``). If any event is bad,
        none is applied and the error names its row (``field="events[12]"``).
        """
        from .io import read_stock_events

        table = read_stock_events(source)
        n = table.num_rows
        loc = self._encode(table.column("location"), self._loc_index, errors.UnknownLocation, "location")
        sku = self._encode(table.column("sku"), self._sku_index, errors.UnknownSku, "sku")
        kind = self._encode(table.column("event"), {k: i for i, k in enumerate(EVENT_KINDS)},
                            errors.InvalidArgument, "event").astype(np.int8)
        qty = np.ascontiguousarray(table.column("qty").to_numpy(zero_copy_only=False), dtype=np.int64)
        safety = np.ascontiguousarray(pc.fill_null(table.column("safety"), -1).to_numpy(zero_copy_only=False),
                                      dtype=np.int64)
        # a retry must carry the same events: fingerprint the content, not just the size (AIP-155)
        fingerprint: tuple[Any, ...] = ("events", n)
        if request_id is not None:
            digest = hashlib.blake2b(digest_size=16)
            for column in (loc, sku, kind, qty, safety):
                digest.update(column.tobytes())
            fingerprint = ("events", n, digest.hexdigest())
        with self._lock:
            prior = self._replay(request_id, fingerprint)
            if prior is not _MISSING:
                return prior
            self._expire_locked()
            status, row = self._ledger.apply_events(loc, sku, kind, qty, safety)
            if status:
                r = table.slice(row, 1).to_pylist()[0]
                check_status(status, f"event {row} ({r['event']} {r['qty']} of {r['sku']!r} at {r['location']!r}) "
                             "failed; no event of the batch was applied", field=f"events[{row}]")
            return self._remember(request_id, fingerprint, n)

    @staticmethod
    def _encode(column: pa.ChunkedArray, index: Mapping[str, int], error: type[errors.PyomniError],
                name: str) -> np.ndarray:
        # Dictionary-encode in Arrow (C++), map only the distinct values through the
        # Python dict, then gather: one dict lookup per distinct id, not per row.
        encoded = pc.dictionary_encode(column).combine_chunks()
        values = encoded.dictionary.to_pylist()
        codes = np.fromiter((index.get(v, -1) for v in values), dtype=np.int32, count=len(values))
        ids = encoded.indices.to_numpy(zero_copy_only=False)
        out = codes[ids] if len(codes) else np.zeros(len(ids), dtype=np.int32)
        bad = np.flatnonzero(out < 0)
        if len(bad):
            row = int(bad[0])
            raise error(f"unknown {name} {values[ids[row]]!r} in event {row}; no event was applied",
                        field=f"events[{row}].{name}")
        return np.ascontiguousarray(out, dtype=np.int32)

    # -- routing -----------------------------------------------------------------
    def _parse(self, order: Order, pol: RoutingPolicy) -> _ParsedOrder:
        """Validate and intern an order; raises typed errors and touches no state."""
        if not isinstance(order, Order):
            raise errors.InvalidOrder("order must be a pyomni.Order", field="order")
        if not isinstance(order.id, str) or not order.id:
            raise errors.InvalidOrder("order id must be a non-empty string", field="id")
        lines = order.lines
        n = len(lines)
        if n == 0:
            raise errors.InvalidOrder("order has no lines", field="lines")
        if n > MAX_LINES:
            raise errors.InvalidOrder(f"order has {n} lines; at most {MAX_LINES}", field="lines")
        p = _ParsedOrder()
        p.order = order
        skus: list[int] = []
        qtys: list[int] = []
        sku_index = self._sku_index
        for line in lines:
            # hot path: no error-field strings unless something is wrong
            s = sku_index.get(line.sku, -1) if isinstance(line.sku, str) else -1
            qty = line.qty
            if s < 0 or type(qty) is not int or qty < 1 or qty > MAX_QTY:
                i = len(skus)
                self._sku(line.sku, f"lines[{i}].sku")
                _check_qty(qty, f"lines[{i}].qty")
            skus.append(s)
            qtys.append(qty)
        if n > 1 and len(set(skus)) != n:
            raise errors.InvalidOrder("order repeats a SKU; merge its lines", field="lines")
        p.skus = skus
        p.qtys = qtys
        p.pickup = -1
        p.lat = p.lon = 0.0
        f = order.fulfilment
        assert f is not None  # Order.__post_init__ fills it in
        if f is Fulfilment.PICKUP:
            if order.pickup_location is None:
                raise errors.InvalidOrder("a pickup order needs pickup_location", field="pickup_location")
            p.pickup = self._loc(order.pickup_location, "pickup_location")
            if not self._caps[p.pickup] & Capability.PICKUP or not self._open[p.pickup]:
                raise errors.CapabilityMissing(f"{order.pickup_location!r} does not take pickup orders now",
                                               field="pickup_location")
        else:
            if order.destination is None:
                raise errors.InvalidOrder("a delivery order needs a destination", field="destination")
            if len(order.destination) != 2:
                raise errors.InvalidCoordinates("destination must be (lat, lon)", field="destination")
            p.lat, p.lon = validate_lat_lon(order.destination[0], order.destination[1])
        p.need_cap = _NEED_CAP[f]
        max_km = pol.max_distance_km if order.max_distance_km is None else order.max_distance_km
        if not isinstance(max_km, (int, float)) or isinstance(max_km, bool) or math.isnan(max_km) or max_km <= 0:
            raise errors.InvalidOrder("max_distance_km must be > 0", field="max_distance_km")
        if f is Fulfilment.SAME_DAY:
            max_km = min(max_km, pol.same_day_max_km)
        p.max_km = float(max_km)
        max_ship = pol.max_splits if order.max_splits is None else order.max_splits
        if type(max_ship) is not int or not 1 <= max_ship <= MAX_SHIPMENTS:
            raise errors.InvalidOrder(f"max_splits must be an int in 1..{MAX_SHIPMENTS}", field="max_splits")
        p.max_ship = max_ship
        if len(order.excluded_locations) > MAX_EXCLUDED:
            raise errors.InvalidOrder(f"at most {MAX_EXCLUDED} excluded locations", field="excluded_locations")
        p.excluded = tuple(self._loc(x, f"excluded_locations[{i}]")
                           for i, x in enumerate(order.excluded_locations)) if order.excluded_locations else ()
        if not isinstance(order.channel, str) or not order.channel:
            raise errors.InvalidOrder("channel must be a non-empty string", field="channel")
        return p

    def _native_policy(self, pol: RoutingPolicy) -> Any:
        native = pol._native
        if native is None:
            native = self._make_native_policy(pol)
            object.__setattr__(pol, "_native", native)
        return native

    @staticmethod
    def _make_native_policy(pol: RoutingPolicy) -> Any:
        from ._core import NativePolicy
        return NativePolicy(float(pol.cost_per_km), float(pol.circuity), float(pol.split_penalty),
                            float(pol.low_stock_weight), float(pol.load_weight), float(pol.priority_weight))

    def _decide(self, p: _ParsedOrder, pol: RoutingPolicy, hold: bool, skus: Sequence[int] | None = None,
                qtys: Sequence[int] | None = None, excluded: tuple[int, ...] | None = None,
                max_ship: int | None = None) -> tuple:
        skus = p.skus if skus is None else skus
        qtys = p.qtys if qtys is None else qtys
        # channel rules are checked before routing: a short line here is a CHANNEL_LIMIT answer
        rule = self._channels.get(p.order.channel)
        if rule is not None:
            short = []
            for s, q in zip(skus, qtys):
                limit = rule.limit(self._ledger.sku_totals(s)[2])
                if q > limit:
                    short.append((s, q, limit))
            if short:
                return ("channel", short)
        return self._router.route(self._policy_arg(pol), p.lat, p.lon, p.pickup, skus, qtys, p.need_cap,
                                  p.max_km, p.excluded if excluded is None else excluded,
                                  p.max_ship if max_ship is None else max_ship, hold)

    def _allocation(self, p: _ParsedOrder, pol: RoutingPolicy, r: tuple, status: AllocationStatus,
                    rid: str | None, expires_at: float | None, skus: Sequence[int], qtys: Sequence[int],
                    shipments: Sequence[tuple] | None = None) -> Allocation:
        sku_ids = self._sku_ids
        loc_ids = self._loc_ids
        if r[0] == "channel":
            limited = tuple(ShortLine(sku_ids[s], q, min(q, lim), "CHANNEL_LIMIT") for s, q, lim in r[1])
            expl = Explanation("none", 0, {}, (), False, "", pol.key)
            return Allocation(p.order.id, AllocationStatus.UNFULFILLABLE, None, (), 0.0, limited, expl)
        code, ships, total, covered, considered, rejected, singles, strategy, split_reason = r
        if code == 2:
            raise errors.InvariantViolation("the router could not hold the plan it chose")
        expl = Explanation(_build=lambda: (
            _STRATEGIES[strategy], considered,
            {REJECT_NAMES[i]: c for i, c in enumerate(rejected) if c},
            tuple(Candidate(loc_ids[loc], cost, km) for loc, cost, km in singles),
            len(ships) > 1, _SPLIT_REASONS[split_reason], pol.key))
        if code == 1:
            short: list[ShortLine] = []
            for s, q, c in zip(skus, qtys, covered):
                if c < q:
                    reason = "NO_STOCK" if self._ledger.sku_totals(s)[2] < q else "CONSTRAINTS"
                    short.append(ShortLine(sku_ids[s], q, c, reason))
            return Allocation(p.order.id, AllocationStatus.UNFULFILLABLE, None, (), 0.0, tuple(short), expl)
        if shipments is None and len(ships) == 1 and ships[0][3] == tuple(qtys) and skus is p.skus:
            # one location ships the whole order: its lines are the order's own Line objects
            loc, km, costs, _takes, _cells = ships[0]
            out: tuple[Shipment, ...] = (Shipment(self._loc_ids[loc], p.order.lines, km, CostBreakdown(*costs)),)
        else:
            out = self._shipments(shipments if shipments is not None else ships, skus)
        if shipments is not None:
            total = sum(sh.cost.total for sh in out)
        return Allocation(p.order.id, status, rid, out, total, (), expl, expires_at)

    def _shipments(self, ships: Iterable[tuple], skus: Sequence[int] | None = None) -> tuple[Shipment, ...]:
        sku_ids = self._sku_ids
        out = []
        for ship in ships:
            loc, km, costs, takes, _cells, line_skus = ship if len(ship) == 6 else (*ship, skus)
            out.append(Shipment(self._loc_ids[loc],
                                tuple(Line(sku_ids[s], t) for s, t in zip(line_skus, takes) if t),
                                km, CostBreakdown(*costs)))
        return tuple(out)

    def quote(self, order: Order, *, policy: str | RoutingPolicy | None = None) -> Allocation:
        """Decide where an order would be fulfilled, without holding anything.

        Returns an :class:`~pyomni.model.Allocation` with status QUOTED or UNFULFILLABLE.
        """
        pol = self.policy(policy)
        with self._lock:
            self._expire_locked()
            p = self._parse(order, pol)
            r = self._decide(p, pol, False)
            return self._allocation(p, pol, r, AllocationStatus.QUOTED, None, None, p.skus, p.qtys)

    def route_order(self, order: Order, *, policy: str | RoutingPolicy | None = None,
                    request_id: str | None = None, ttl: float | None = None) -> Allocation:
        """Choose the location(s) for an order and hold the stock atomically.

        The cheapest location that fills every line wins; the order is split
        (up to ``max_splits`` shipments) only when no single location can fill
        it or when splitting is strictly cheaper. If no plan exists, the answer
        has status UNFULFILLABLE and names the short lines; nothing is held.

        Parameters
        ----------
        order : Order
        policy : str or RoutingPolicy, optional
            ``"name"`` or ``"name@version"`` of a registered policy.
        request_id : str, optional
            Idempotency key: a retry returns the first answer and changes nothing.
        ttl : float, optional
            Seconds until the hold expires (default: the engine's ``reservation_ttl``).

        Raises
        ------
        InvalidOrder, InvalidQuantity, InvalidCoordinates, UnknownSku, UnknownLocation, DuplicateId
            Bad input; nothing changed.

        Examples
        --------
        >>> import pyomni
        >>> net = pyomni.demo_network(stores=20, warehouses=1, skus=10, seed=3)
        >>> eng = pyomni.Engine(net)
        >>> _ = eng.set_stock(net.ids[0], "SKU-000001", 4)
        >>> a = eng.route_order(pyomni.Order("o-9", [("SKU-000001", 2)], destination=(net.lat[0], net.lon[0])))
        >>> a.shipments[0].location == net.ids[0], eng.stock(net.ids[0], "SKU-000001").reserved
        (True, 2)
        """
        pol = self.policy(policy)
        if ttl is not None and not (isinstance(ttl, (int, float)) and math.isfinite(ttl) and ttl > 0):
            raise errors.InvalidArgument("ttl must be a positive number of seconds", field="ttl")
        with self._lock:
            prior = self._replay(request_id, ("route", order, pol.key, ttl))
            if prior is not _MISSING:
                return prior
            now = self._now()
            self._expire_locked(now)
            p = self._parse(order, pol)
            if order.id in self._live_orders:
                raise errors.DuplicateId(f"order {order.id!r} already has reservation "
                                         f"{self._live_orders[order.id]!r}", field="id")
            r = self._decide(p, pol, True)
            if r[0] != 0:
                result = self._allocation(p, pol, r, AllocationStatus.UNFULFILLABLE, None, None, p.skus, p.qtys)
            else:
                self._seq += 1
                rid = f"R{self._seq:010d}"
                expires = now + (self._ttl if ttl is None else float(ttl))
                ships = [(*s, tuple(p.skus)) for s in r[1]]
                self._records[rid] = _Record(rid, request_id, order, now, expires, ships, set(p.excluded),
                                             p.need_cap, p.max_km, pol)
                self._live_orders[order.id] = rid
                heapq.heappush(self._expiry, (expires, self._seq, rid))
                result = self._allocation(p, pol, r, AllocationStatus.ALLOCATED, rid, expires, p.skus, p.qtys)
            return self._remember(request_id, ("route", order, pol.key, ttl), result)

    def reserve_plan(self, order: Order, shipments: Sequence[tuple[str, Sequence[tuple[str, int]]]], *,
                     request_id: str | None = None, policy: str | RoutingPolicy | None = None) -> Allocation:
        """Hold exactly the given plan for an order: the shipments a batch optimiser chose, all or nothing.

        Where :meth:`route_order` decides and holds, this only holds: each
        shipment's units are taken from the named location. The plan is
        validated completely first -- every line of the order covered exactly,
        locations known, open, able to ship, within capacity, distance and
        ``max_splits`` -- then the units are held in one all-or-nothing step.
        The reservation is recorded exactly as :meth:`route_order` records one,
        so :meth:`confirm`, :meth:`release`, expiry and :meth:`reroute` work on
        it. Shipments are priced with the policy's cost model; the first
        shipment listed is the order's first parcel (the rest pay the split penalty).

        Parameters
        ----------
        order : Order
        shipments : sequence of (location id, sequence of (sku, qty))
            One entry per parcel; a location appears once.
        request_id : str, optional
            Idempotency key: a retry returns the first answer and changes nothing.
        policy : str or RoutingPolicy, optional
            Prices the shipments and gives the order's default ``max_splits`` and ``max_distance_km``.

        Returns
        -------
        Allocation
            ALLOCATED with the reservation id; UNFILLABLE (nothing held) only when
            the order's channel rule forbids the quantities, as :meth:`route_order` does.

        Raises
        ------
        InvalidOrder, InvalidArgument, InvalidQuantity, UnknownSku, UnknownLocation, DuplicateId
            The plan or the order is malformed, or the order already has a live reservation.
        InsufficientStock
            A location no longer has the units available.
        CapabilityMissing, FailedPrecondition
            A location is closed, cannot ship, or has no capacity left today.

        In every error case nothing changed.

        Examples
        --------
        >>> import pyomni
        >>> net = pyomni.demo_network(stores=20, warehouses=1, skus=10, seed=3)
        >>> eng = pyomni.Engine(net)
        >>> _ = eng.set_stock(net.ids[0], "SKU-000001", 4)
        >>> _ = eng.set_stock(net.ids[1], "SKU-000002", 1)
        >>> order = pyomni.Order("o-7", [("SKU-000001", 2), ("SKU-000002", 1)], destination=(31.2, 121.5))
        >>> a = eng.reserve_plan(order, [(net.ids[0], [("SKU-000001", 2)]), (net.ids[1], [("SKU-000002", 1)])])
        >>> a.status.name, len(a.shipments), eng.stock(net.ids[0], "SKU-000001").reserved
        ('ALLOCATED', 2, 2)
        """
        pol = self.policy(policy)
        plan = _normalise_plan(shipments)
        fingerprint = ("plan", order, plan, pol.key)
        with self._lock:
            prior = self._replay(request_id, fingerprint)
            if prior is not _MISSING:
                return prior
            now = self._now()
            self._expire_locked(now)
            p = self._parse(order, pol)
            if order.id in self._live_orders:
                raise errors.DuplicateId(f"order {order.id!r} already has reservation "
                                         f"{self._live_orders[order.id]!r}", field="id")
            rule = self._channels.get(order.channel)
            if rule is not None:
                short = [(s, q, rule.limit(self._ledger.sku_totals(s)[2])) for s, q in zip(p.skus, p.qtys)]
                short = [x for x in short if x[1] > x[2]]
                if short:
                    result = self._allocation(p, pol, ("channel", short), AllocationStatus.UNFULFILLABLE, None,
                                              None, p.skus, p.qtys)
                    return self._remember(request_id, fingerprint, result)
            ships = self._price_plan(p, pol, plan)
            self._change_holds(ships, 0)
            for ship in ships:
                check_status(self._ledger.add_load(ship[0], 1, 0))
            self._seq += 1
            rid = f"R{self._seq:010d}"
            expires = now + self._ttl
            self._records[rid] = _Record(rid, request_id, order, now, expires, ships, set(p.excluded), p.need_cap,
                                         p.max_km, pol)
            self._live_orders[order.id] = rid
            heapq.heappush(self._expiry, (expires, self._seq, rid))
            out = self._shipments(ships)
            expl = Explanation("none", len(ships), {}, (), len(ships) > 1, "", pol.key)
            result = Allocation(order.id, AllocationStatus.ALLOCATED, rid, out, sum(sh.cost.total for sh in out), (),
                                expl, expires)
            return self._remember(request_id, fingerprint, result)

    def _price_plan(self, p: _ParsedOrder, pol: RoutingPolicy, plan: tuple) -> list[tuple]:
        """Validate a plan against the order and the ledger; its native shipment tuples, priced. Changes nothing."""
        from ._core import py_chord_sq_to_km, py_unit_vector

        if not plan:
            raise errors.InvalidOrder("a plan needs at least one shipment", field="shipments")
        if len(plan) > p.max_ship:
            raise errors.InvalidOrder(f"{len(plan)} shipments exceed max_splits = {p.max_ship}", field="shipments")
        position = {s: i for i, s in enumerate(p.skus)}
        covered = [0] * len(p.skus)
        held, confirmed = self._ledger.loads()
        net = self._net
        if p.pickup >= 0:
            dest = py_unit_vector(float(net.lat[p.pickup]), float(net.lon[p.pickup]))
        else:
            dest = py_unit_vector(p.lat, p.lon)
        seen: set[int] = set()
        ships: list[tuple] = []
        for k, (location, lines) in enumerate(plan):
            where = f"shipments[{k}]"
            loc = self._loc(location, f"{where}.location")
            if loc in seen:
                raise errors.InvalidArgument(f"location {location!r} appears twice in the plan", field=where)
            seen.add(loc)
            if loc in p.excluded:
                raise errors.InvalidArgument(f"the order excludes {location!r}", field=f"{where}.location")
            if not self._open[loc]:
                raise errors.CapabilityMissing(f"{location!r} is closed", field=f"{where}.location")
            if loc != p.pickup and (int(self._caps[loc]) & p.need_cap) != p.need_cap:
                raise errors.CapabilityMissing(f"{location!r} cannot fulfil this kind of order",
                                               field=f"{where}.location")
            cap = int(self._capacity[loc])
            load = int(held[loc]) + int(confirmed[loc])
            if cap > 0 and load >= cap:
                raise errors.FailedPrecondition(f"{location!r} has no shipment capacity left today ({load}/{cap})",
                                                field=f"{where}.location")
            xyz = py_unit_vector(float(net.lat[loc]), float(net.lon[loc]))
            km = py_chord_sq_to_km(sum((a - b) * (a - b) for a, b in zip(xyz, dest)))
            if km > p.max_km:
                raise errors.InvalidOrder(f"{location!r} is {km:.1f} km away; the order allows {p.max_km}",
                                          field=f"{where}.location")
            takes = [0] * len(p.skus)
            cells = [-1] * len(p.skus)
            low = 0.0
            for j, (sku, qty) in enumerate(lines):
                s = self._sku(sku, f"{where}.lines[{j}].sku")
                i = position.get(s)
                if i is None:
                    raise errors.InvalidArgument(f"SKU {sku!r} is not in order {p.order.id!r}",
                                                 field=f"{where}.lines[{j}].sku")
                if takes[i]:
                    raise errors.InvalidArgument(f"SKU {sku!r} appears twice in one shipment",
                                                 field=f"{where}.lines[{j}].sku")
                c = self._ledger.cell_index(loc, s)
                cell = self._ledger.cell(loc, s)
                available = max(0, cell[0] - cell[1] - cell[2]) if cell is not None else 0
                if c < 0 or available < qty:
                    raise errors.InsufficientStock(f"{location!r} has {available} of {sku!r} available, the plan "
                                                   f"takes {qty}", field=f"{where}.lines[{j}].qty")
                takes[i] = qty
                cells[i] = c
                covered[i] += qty
                low += qty / available
            fixed = float(net.fixed_cost[loc]) + (pol.split_penalty if k else 0.0)
            costs = (fixed, pol.cost_per_km * pol.circuity * km, pol.low_stock_weight * low,
                     pol.load_weight * load / cap if cap > 0 else 0.0, pol.priority_weight * int(net.priority[loc]))
            ships.append((loc, km, costs, tuple(takes), tuple(cells), tuple(p.skus)))
        for i, (got, want) in enumerate(zip(covered, p.qtys)):
            if got != want:
                raise errors.InvalidOrder(f"the plan ships {got} of {want} units of {self._sku_ids[p.skus[i]]!r}",
                                          field="shipments")
        return ships

    # -- reservation life cycle -----------------------------------------------------
    def _record(self, reservation_id: Any) -> _Record:
        try:
            return self._records[reservation_id]
        except (KeyError, TypeError):
            raise errors.UnknownReservation(f"no reservation {reservation_id!r}", field="reservation_id") from None

    def _change_holds(self, ships: Iterable[tuple], op: int) -> None:
        cells: list[int] = []
        qtys: list[int] = []
        for ship in ships:
            for c, t in zip(ship[4], ship[3]):
                if t:
                    cells.append(c)
                    qtys.append(t)
        check_status(self._ledger.change_holds(np.array(cells, dtype=np.int64), np.array(qtys, dtype=np.int32), op),
                     "reservation holds do not match the ledger")

    def _end(self, rec: _Record, state: ReservationState) -> None:
        # release (op 1) or consume (op 2) every hold, then move the load counters
        self._change_holds(rec.shipments, 2 if state is ReservationState.CONFIRMED else 1)
        for ship in rec.shipments:
            check_status(self._ledger.add_load(ship[0], -1, 1 if state is ReservationState.CONFIRMED else 0))
        rec.state = state
        if state is not ReservationState.CONFIRMED:
            self._live_orders.pop(rec.order.id, None)

    def _transition(self, reservation_id: str, state: ReservationState, verb: str,
                    request_id: str | None) -> Reservation:
        with self._lock:
            prior = self._replay(request_id, (verb, reservation_id))
            if prior is not _MISSING:
                return prior
            self._expire_locked()
            rec = self._record(reservation_id)
            if rec.state is not ReservationState.HELD:
                raise errors.ReservationNotHeld(f"reservation {reservation_id!r} is {rec.state.name}, not HELD",
                                                field="reservation_id")
            self._end(rec, state)
            return self._remember(request_id, (verb, reservation_id), self._public(rec))

    def confirm(self, reservation_id: str, *, request_id: str | None = None) -> Reservation:
        """Confirm a HELD reservation: the units leave on-hand stock and count toward the day's load.

        Raises :class:`~pyomni.errors.ReservationNotHeld` if it is no longer HELD (e.g. expired).
        """
        return self._transition(reservation_id, ReservationState.CONFIRMED, "confirm", request_id)

    def release(self, reservation_id: str, *, request_id: str | None = None) -> Reservation:
        """Release a HELD reservation: its units become available again."""
        return self._transition(reservation_id, ReservationState.RELEASED, "release", request_id)

    def reroute(self, reservation_id: str, rejected_by: str, *, policy: str | RoutingPolicy | None = None,
                request_id: str | None = None) -> Allocation:
        """Re-route the shipment a location rejected, keeping the rest of the reservation.

        The rejecting location's hold is released and its lines are routed again,
        excluding every location that rejected this order before (and the
        reservation's other locations, which ship their own parcels). If the
        lines cannot be placed, the whole reservation is released and the answer
        is UNFULFILLABLE, naming the short lines.
        """
        fingerprint = ("reroute", reservation_id, rejected_by)
        with self._lock:
            prior = self._replay(request_id, fingerprint)
            if prior is not _MISSING:
                return prior
            now = self._now()
            self._expire_locked(now)
            rec = self._record(reservation_id)
            if rec.state is not ReservationState.HELD:
                raise errors.ReservationNotHeld(f"reservation {reservation_id!r} is {rec.state.name}, not HELD",
                                                field="reservation_id")
            loc = self._loc(rejected_by, "rejected_by")
            idx = next((i for i, s in enumerate(rec.shipments) if s[0] == loc), None)
            if idx is None:
                raise errors.InvalidArgument(f"{rejected_by!r} does not fulfil reservation {reservation_id!r}",
                                             field="rejected_by")
            pol = self.policy(policy) if policy is not None else rec.policy
            rejected = rec.shipments[idx]
            others = [s for i, s in enumerate(rec.shipments) if i != idx]
            p = self._parse(rec.order, pol)
            skus = [s for s, t in zip(rejected[5], rejected[3]) if t]
            qtys = [t for t in rejected[3] if t]
            # every location that ever rejected this order stays excluded, however many
            excluded = tuple(sorted(rec.excluded | {loc} | {s[0] for s in others}))
            self._change_holds([rejected], 1)
            check_status(self._ledger.add_load(loc, -1, 0))
            budget = max(1, p.max_ship - len(others))
            r = self._decide(p, pol, True, skus, qtys, excluded, budget)
            rec.excluded.add(loc)
            if r[0] != 0:
                rec.shipments = others
                self._end(rec, ReservationState.RELEASED)
                result = self._allocation(p, pol, r, AllocationStatus.UNFULFILLABLE, None, None, skus, qtys)
            else:
                new = [(*s, tuple(skus)) for s in r[1]]
                rec.shipments = others + new
                result = self._allocation(p, pol, r, AllocationStatus.ALLOCATED, rec.id, rec.expires_at,
                                          skus, qtys, shipments=rec.shipments)
            return self._remember(request_id, fingerprint, result)

    def expire_due(self) -> list[str]:
        """Expire every HELD reservation whose time has come; returns their ids.

        Every command also does this first, so callers rarely need to.
        """
        with self._lock:
            return self._expire_locked()

    def _expire_locked(self, now: float | None = None) -> list[str]:
        heap = self._expiry
        if not heap:
            return []
        now = self._now() if now is None else now
        expired: list[str] = []
        while heap and heap[0][0] <= now:
            _, _, rid = heapq.heappop(heap)
            rec = self._records.get(rid)
            if rec is not None and rec.state is ReservationState.HELD:
                self._end(rec, ReservationState.EXPIRED)
                expired.append(rid)
        return expired

    # -- queries -------------------------------------------------------------------
    def _public(self, rec: _Record) -> Reservation:
        return Reservation(rec.id, rec.request_id, rec.order.id, rec.order.channel, rec.state,
                           self._shipments(rec.shipments), rec.created_at, rec.expires_at,
                           tuple(self._loc_ids[i] for i in sorted(rec.excluded)))

    def reservation(self, reservation_id: str) -> Reservation:
        """One reservation by id (any state)."""
        with self._lock:
            self._expire_locked()
            return self._public(self._record(reservation_id))

    def reservations(self, state: ReservationState | None = None, *, after: str | None = None,
                     limit: int | None = None) -> list[Reservation]:
        """Reservations in id order, optionally of one state; ``after``/``limit`` page through them."""
        with self._lock:
            self._expire_locked()
            out = []
            for rid, rec in self._records.items():
                if after is not None and rid <= after:
                    continue
                if state is None or rec.state is state:
                    out.append(self._public(rec))
                    if limit is not None and len(out) >= limit:
                        break
            return out

    def _stock_level(self, loc: int, s: int) -> StockLevel:
        cell = self._ledger.cell(loc, s)
        on_hand, reserved, safety = cell if cell is not None else (0, 0, 0)
        return StockLevel(self._loc_ids[loc], self._sku_ids[s], on_hand, reserved, safety)

    def stock(self, location: str, sku: str) -> StockLevel:
        """One stock cell (all zero if the location never held the SKU)."""
        with self._lock:
            self._expire_locked()
            return self._stock_level(self._loc(location, "location"), self._sku(sku, "sku"))

    def available(self, sku: str, *, location: str | None = None, channel: str | None = None) -> int:
        """Available-to-sell of a SKU: network-wide, at one location, or for one channel.

        Examples
        --------
        >>> import pyomni
        >>> net = pyomni.demo_network(stores=5, warehouses=1, skus=3, seed=0)
        >>> eng = pyomni.Engine(net, channels={"tmall": pyomni.ChannelRule(share=0.5)})
        >>> _ = eng.set_stock(net.ids[0], "SKU-000000", 10, safety=2)
        >>> eng.available("SKU-000000"), eng.available("SKU-000000", channel="tmall")
        (8, 4)
        """
        with self._lock:
            self._expire_locked()
            s = self._sku(sku, "sku")
            if location is not None:
                return self._stock_level(self._loc(location, "location"), s).available
            total = int(self._ledger.sku_totals(s)[2])
            rule = self._channels.get(channel) if channel is not None else None
            return rule.limit(total) if rule is not None else total

    def availability(self, sku: str) -> pa.Table:
        """Every location holding a SKU: ``location, on_hand, reserved, safety, available`` (Arrow)."""
        with self._lock:
            self._expire_locked()
            loc, on_hand, reserved, safety = self._ledger.sku_cells(self._sku(sku, "sku"))
        order = np.argsort(loc, kind="stable")
        loc, on_hand, reserved, safety = loc[order], on_hand[order], reserved[order], safety[order]
        ids = np.asarray(self._loc_ids, dtype=object)
        return pa.table({
            "location": pa.array(ids[loc] if len(loc) else [], type=pa.string()),
            "on_hand": on_hand, "reserved": reserved, "safety": safety,
            "available": np.maximum(on_hand - reserved - safety, 0).astype(np.int32),
        })

    def available_near(self, sku: str, near: tuple[float, float], *, radius_km: float = 30.0,
                       limit: int = 20) -> list[NearbyStock]:
        """Store locator: open locations within ``radius_km`` with the SKU available, nearest first."""
        lat, lon = validate_point(near, "near")
        radius, k = self._radius_limit(radius_km, limit)
        with self._lock:
            self._expire_locked()
            s = self._sku(sku, "sku")
            found = self._router.nearest_filling(lat, lon, (s,), (1,), k, radius, 0)
            return [NearbyStock(self._loc_ids[loc], km, self._stock_level(loc, s).available) for loc, km in found]

    def find_pickup_locations(self, lines: Sequence[Line | tuple[str, int]], near: tuple[float, float], *,
                              radius_km: float = 30.0, limit: int = 5) -> list[PickupOption]:
        """Click-and-collect: the nearest pickup locations that can fill the whole basket from their own stock."""
        lat, lon = validate_point(near, "near")
        radius, k = self._radius_limit(radius_km, limit)
        basket = Order("basket", tuple(lines), destination=(lat, lon)).lines  # type: ignore[arg-type]
        if not basket or len(basket) > MAX_LINES:
            raise errors.InvalidOrder(f"basket must have 1..{MAX_LINES} lines", field="lines")
        qtys = tuple(_check_qty(line.qty, f"lines[{i}].qty") for i, line in enumerate(basket))
        with self._lock:
            self._expire_locked()
            skus = tuple(self._sku(line.sku, f"lines[{i}].sku") for i, line in enumerate(basket))
            if len(set(skus)) != len(skus):
                raise errors.InvalidOrder("basket repeats a SKU", field="lines")
            found = self._router.nearest_filling(lat, lon, skus, qtys, k, radius, int(Capability.PICKUP))
            return [PickupOption(self._loc_ids[loc], km) for loc, km in found]

    @staticmethod
    def _radius_limit(radius_km: float, limit: int) -> tuple[float, int]:
        if not isinstance(radius_km, (int, float)) or isinstance(radius_km, bool) or not (
                math.isfinite(radius_km) and radius_km > 0):
            raise errors.InvalidArgument("radius_km must be a positive finite number", field="radius_km")
        if type(limit) is not int or not 1 <= limit <= 1000:
            raise errors.InvalidArgument("limit must be an int in 1..1000", field="limit")
        return float(radius_km), limit

    def stock_table(self) -> pa.Table:
        """All stock cells as an Arrow table: ``location, sku, on_hand, reserved, safety``."""
        with self._lock:
            loc, sku, on_hand, reserved, safety = self._ledger.export()
        return pa.table({
            "location": pa.DictionaryArray.from_arrays(loc, pa.array(self._loc_ids, type=pa.string())),
            "sku": pa.DictionaryArray.from_arrays(sku, pa.array(self._sku_ids, type=pa.string())),
            "on_hand": on_hand, "reserved": reserved, "safety": safety,
        })

    def stats(self) -> dict[str, Any]:
        """Sizes and memory: cells, bytes per cell, units available to sell network-wide, reservations per state."""
        with self._lock:
            states = {s.name: 0 for s in ReservationState}
            for rec in self._records.values():
                states[rec.state.name] += 1
            return {
                "native": self._native,
                "locations": len(self._loc_ids),
                "skus": len(self._sku_ids),
                "cells": int(self._ledger.n_cells),
                "memory_bytes": int(self._ledger.memory_bytes()),
                "available_units": int(self._ledger.sku_available_array().sum()),
                "bytes_per_cell": float(self._ledger.cell_bytes()),
                "reservations": states,
                "request_ids": len(self._requests),
            }

    # -- state: network changes and snapshots ---------------------------------------
    # Both rebuild the native backend from the engine's own state: stock cells are
    # re-applied (on hand, then the HELD reservations' holds, then safety, so a hold
    # taken before a safety increase still fits), and the load counters restored.
    # Location indices never move (new locations are appended), so reservations,
    # the idempotency cache and the expiry heap carry over unchanged.
    def upsert_locations(self, locations: Iterable[Location], *,
                         request_id: str | None = None) -> tuple[int, int]:
        """Add locations to the network or replace existing ones (matched by id); returns ``(added, updated)``.

        A replaced location takes every attribute of the new record, including
        ``is_open`` and ``daily_capacity``; its stock, reservations and load are
        kept. Locations cannot be removed (close them instead), so every id and
        index stays valid. The whole network is revalidated first; on any error
        nothing changes. The native indexes are rebuilt, so this is an
        administrative call (about a second per million stock cells), not a hot path.

        Examples
        --------
        >>> import pyomni
        >>> net = pyomni.demo_network(stores=5, warehouses=1, skus=3, seed=0)
        >>> eng = pyomni.Engine(net)
        >>> eng.upsert_locations([pyomni.Location("NEW-1", pyomni.LocationKind.STORE, 31.2, 121.5)])
        (1, 0)
        >>> "NEW-1" in eng.network
        True
        """
        if isinstance(locations, (str, bytes, Location)) or not isinstance(locations, Iterable):
            raise errors.InvalidArgument("locations must be a sequence of Location", field="locations")
        new = list(locations)
        seen: set[str] = set()
        for i, loc in enumerate(new):
            if not isinstance(loc, Location):
                raise errors.InvalidArgument(f"locations[{i}] is not a Location", field=f"locations[{i}]")
            if loc.id in seen:
                raise errors.DuplicateId(f"location {loc.id!r} appears twice", field=f"locations[{i}].id")
            seen.add(loc.id)
        fingerprint = ("upsert_locations", tuple(new))
        with self._lock:
            prior = self._replay(request_id, fingerprint)
            if prior is not _MISSING:
                return prior
            current = list(self._net)
            by_id = {x.id: x for x in new}
            merged = [by_id.get(x.id, x) for x in current] + [x for x in new if x.id not in self._loc_index]
            try:
                network = Network.from_locations(merged, skus=self._sku_ids)
            except errors.PyomniError as exc:   # name the upserted record, not the merged network's row
                raise type(exc)(str(exc), field="locations") from None
            caps, is_open, capacity = self._caps.copy(), self._open.copy(), self._capacity.copy()
            n_old = len(current)
            changed = np.array([x.id in by_id for x in current] + [True] * (len(merged) - n_old), dtype=bool)
            caps = np.where(changed, network.capabilities, np.resize(caps, len(merged))).astype(np.uint8)
            is_open = np.where(changed, network.is_open, np.resize(is_open, len(merged))).astype(np.uint8)
            capacity = np.where(changed, network.daily_capacity, np.resize(capacity, len(merged))).astype(np.int32)
            self._install(network, self._export_locked(), caps, is_open, capacity)
            result = (len(merged) - n_old, int(changed[:n_old].sum()))
            return self._remember(request_id, fingerprint, result)

    def _export_locked(self) -> dict[str, Any]:
        loc, sku, on_hand, reserved, safety = self._ledger.export()
        held, confirmed = self._ledger.loads()
        return {"loc": loc, "sku": sku, "on_hand": on_hand, "reserved": reserved, "safety": safety,
                "held": held, "confirmed": confirmed}

    def _install(self, network: Network, cells: Mapping[str, np.ndarray], caps: np.ndarray, is_open: np.ndarray,
                 capacity: np.ndarray) -> None:
        """Replace the backend with one for ``network`` holding ``cells``, then re-take every HELD hold."""
        ledger, router = _make_backend(self._native, network, len(self._sku_ids), caps, is_open, capacity)
        n = len(cells["loc"])
        loc = np.ascontiguousarray(cells["loc"], dtype=np.int32)
        sku = np.ascontiguousarray(cells["sku"], dtype=np.int32)
        zeros = np.zeros(n, dtype=np.int64)
        status, row = ledger.apply_events(loc, sku, np.full(n, _EV_SET, dtype=np.int8),
                                          np.ascontiguousarray(cells["on_hand"], dtype=np.int64), zeros)
        check_status(status, f"restoring stock cell {row}")
        for rec in self._records.values():
            if rec.state is ReservationState.HELD:
                rec.shipments = [(s[0], s[1], s[2], s[3],
                                  tuple(ledger.cell_index(s[0], k) if t else -1 for k, t in zip(s[5], s[3])), s[5])
                                 for s in rec.shipments]
                for ship in rec.shipments:
                    cs = [c for c, t in zip(ship[4], ship[3]) if t]
                    ts = [t for t in ship[3] if t]
                    check_status(ledger.change_holds(np.array(cs, dtype=np.int64), np.array(ts, dtype=np.int32), 0),
                                 f"restoring the holds of reservation {rec.id}")
                    check_status(ledger.add_load(ship[0], 1, 0))
        status, row = ledger.apply_events(loc, sku, np.full(n, _EV_SAFETY, dtype=np.int8),
                                          np.ascontiguousarray(cells["safety"], dtype=np.int64), zeros - 1)
        check_status(status, f"restoring safety stock of cell {row}")
        for i, c in enumerate(np.asarray(cells["confirmed"], dtype=np.int64)):
            if c:
                check_status(ledger.add_load(i, 0, int(c)))
        _, _, _, reserved, _ = ledger.export()
        if int(reserved.sum()) != int(np.asarray(cells["reserved"], dtype=np.int64).sum()):
            raise errors.InvariantViolation("the HELD reservations do not account for the reserved units")
        self._net = network
        self._ledger, self._router = ledger, router
        self._loc_ids = network.ids
        self._loc_index = {x: i for i, x in enumerate(network.ids)}
        self._caps, self._open, self._capacity = caps, is_open, capacity

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write a snapshot of the whole engine into ``directory``; returns the snapshot's path.

        Stock goes to ``stock.parquet`` (Arrow), everything else -- network,
        policies, channel rules, reservations, load counters and the request ids
        remembered for idempotent retries -- to ``state.pickle``. The snapshot is
        written beside the previous one and swapped in with one rename, so a
        crash mid-write leaves the previous snapshot intact. Read it back with
        :meth:`load`. The pickle is the engine's own private format: load only
        snapshots you wrote.

        Examples
        --------
        >>> import pyomni, tempfile
        >>> eng = pyomni.Engine(pyomni.demo_network(stores=5, warehouses=1, skus=3, seed=0))
        >>> _ = eng.set_stock(eng.network.ids[0], "SKU-000001", 7)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = eng.save(d)
        ...     pyomni.Engine.load(d).stock(eng.network.ids[0], "SKU-000001").on_hand
        7
        """
        import pyarrow.parquet as pq

        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        target = root / "snapshot"
        staging = root / f".snapshot-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        with self._lock:
            self._expire_locked()
            cells = self._export_locked()
            state = {
                "version": _SNAPSHOT_VERSION, "saved_at": self._now(), "network": self._net,
                "skus": list(self._sku_ids), "caps": self._caps.copy(), "open": self._open.copy(),
                "capacity": self._capacity.copy(), "ttl": self._ttl, "max_request_ids": self._max_request_ids,
                "default_policy": self._default_policy.key,
                "policies": [_policy_fields(p) for p in self._policies.values()],
                "channels": dict(self._channels), "seq": self._seq, "expiry": list(self._expiry),
                "records": [_record_state(r) for r in self._records.values()],
                "live_orders": dict(self._live_orders), "requests": list(self._requests.items()),
                "held": cells["held"], "confirmed": cells["confirmed"],
            }
        # Serialised outside the lock: everything above is a copy (records as fresh dicts, results immutable),
        # so routing waits only for the copies. The C pickler holds the GIL for a whole dumps() call, so the
        # two large lists go in small chunks with a GIL release between them: a save of 20,000 remembered
        # requests stalls other threads for milliseconds, not for the second a single dumps() takes.
        big = {key: state.pop(key) for key in ("records", "requests")}
        pq.write_table(pa.table({k: cells[k] for k in ("loc", "sku", "on_hand", "reserved", "safety")}),
                       staging / "stock.parquet")
        with open(staging / "state.pickle", "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
            for key, items in big.items():
                pickle.dump((key, len(items)), f, protocol=pickle.HIGHEST_PROTOCOL)
                for i in range(0, len(items), _SNAPSHOT_CHUNK):
                    pickle.dump(items[i:i + _SNAPSHOT_CHUNK], f, protocol=pickle.HIGHEST_PROTOCOL)
                    time.sleep(0)           # let other threads run between chunks
        old = root / ".snapshot-old"
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, clock: Callable[[], float] = time.time,
             native: bool | None = None) -> Engine:
        """An engine restored from the snapshot :meth:`save` wrote into ``directory``.

        Reservations keep their ids, states and expiry times (those that ran
        out while the engine was down expire on the first call); retried
        request ids still return their first answers.

        Raises
        ------
        NotFound
            ``directory`` holds no snapshot.
        InvariantViolation
            The snapshot is inconsistent (its holds do not match its stock).
        """
        import pyarrow.parquet as pq

        root = Path(directory) / "snapshot"
        if not (root / "state.pickle").exists():
            raise errors.NotFound(f"no engine snapshot in {str(directory)!r}", field="directory")
        with open(root / "state.pickle", "rb") as f:
            state = pickle.load(f)
            for _ in range(2):
                key, n = pickle.load(f)
                items: list[Any] = []
                while len(items) < n:
                    items.extend(pickle.load(f))
                state[key] = items
        if state.get("version") != _SNAPSHOT_VERSION:
            raise errors.FailedPrecondition(f"snapshot version {state.get('version')!r} is not "
                                            f"{_SNAPSHOT_VERSION}", field="directory")
        stock = pq.read_table(root / "stock.parquet")
        policies = {p.key: p for p in (RoutingPolicy(**f) for f in state["policies"])}
        eng = cls(state["network"], policy=policies[state["default_policy"]], clock=clock,
                  reservation_ttl=state["ttl"], channels=state["channels"], native=native,
                  max_request_ids=state["max_request_ids"])
        for p in policies.values():
            if p.key not in eng._policies:
                eng.register_policy(p)
        extra = state["skus"][len(eng._sku_ids):]
        if extra:
            eng.register_skus(extra)
        eng._seq = state["seq"]
        eng._expiry = state["expiry"]
        eng._live_orders = state["live_orders"]
        eng._records = {r["id"]: _record_from_state(r, eng._policies) for r in state["records"]}
        eng._requests = OrderedDict(state["requests"])
        cells = {k: stock.column(k).to_numpy() for k in ("loc", "sku", "on_hand", "reserved", "safety")}
        cells["confirmed"] = state["confirmed"]
        with eng._lock:
            eng._install(eng._net, cells, state["caps"], state["open"], state["capacity"])
            if not np.array_equal(eng._ledger.loads()[0], state["held"]):
                raise errors.InvariantViolation("the snapshot's held-shipment counters do not match its reservations")
        return eng

    def check_invariants(self) -> None:
        """Verify the ledger and the reservations agree; raises :class:`~pyomni.errors.InvariantViolation`.

        Checks 0 <= reserved <= on_hand on every cell, the per-SKU totals, that
        every cell's reserved units are exactly the HELD reservations' holds, and
        that every location's held-shipment counter matches.
        """
        with self._lock:
            status, message = self._ledger.check_invariants()
            check_status(status, message)
            held: dict[int, int] = {}
            shipments = np.zeros(len(self._loc_ids), dtype=np.int64)
            for rec in self._records.values():
                if rec.state is ReservationState.HELD:
                    for ship in rec.shipments:
                        shipments[ship[0]] += 1
                        for c, t in zip(ship[4], ship[3]):
                            if t:
                                held[c] = held.get(c, 0) + t
            loc, sku, _, reserved, _ = self._ledger.export()
            for c in np.flatnonzero(reserved):
                if held.get(int(c), 0) != reserved[c]:
                    raise errors.InvariantViolation(f"cell {c} reserves {reserved[c]} but holds add to "
                                                    f"{held.get(int(c), 0)}")
            for c, t in held.items():
                if reserved[c] != t:
                    raise errors.InvariantViolation(f"cell {c}: holds {t} != reserved {reserved[c]}")
            if not np.array_equal(self._ledger.loads()[0], shipments):
                raise errors.InvariantViolation("held-shipment counters do not match the HELD reservations")


def _policy_fields(pol: RoutingPolicy) -> dict[str, Any]:
    # the constructor's fields only: the cached native copy is rebuilt on first use
    return {f.name: getattr(pol, f.name) for f in fields(pol) if f.init}


def _record_state(rec: _Record) -> dict[str, Any]:
    state = {name: getattr(rec, name) for name in _Record.__slots__}
    state["policy"] = rec.policy.key
    state["shipments"] = list(rec.shipments)        # the record's containers change in place; copy them
    state["excluded"] = set(rec.excluded)
    return state


def _record_from_state(state: Mapping[str, Any], policies: Mapping[str, RoutingPolicy]) -> _Record:
    rec = _Record(state["id"], state["request_id"], state["order"], state["created_at"], state["expires_at"],
                  state["shipments"], state["excluded"], state["need_cap"], state["max_km"], policies[state["policy"]])
    rec.state = state["state"]
    return rec


def _normalise_plan(shipments: Any) -> tuple[tuple[Any, tuple[tuple[Any, int], ...]], ...]:
    """A plan as nested tuples (hashable, for the idempotency fingerprint); shapes and quantities checked."""
    if isinstance(shipments, (str, bytes)) or not isinstance(shipments, Iterable):
        raise errors.InvalidArgument("shipments must be a sequence of (location, lines)", field="shipments")
    plan = []
    for k, ship in enumerate(shipments):
        if isinstance(ship, (str, bytes)) or not isinstance(ship, Sequence) or len(ship) != 2:
            raise errors.InvalidArgument("a shipment is (location, [(sku, qty), ...])", field=f"shipments[{k}]")
        location, lines = ship
        if isinstance(lines, (str, bytes)) or not isinstance(lines, Iterable):
            raise errors.InvalidArgument("a shipment's lines are a sequence of (sku, qty)",
                                         field=f"shipments[{k}].lines")
        out = []
        for j, line in enumerate(lines):
            if isinstance(line, Line):
                line = (line.sku, line.qty)
            if isinstance(line, (str, bytes)) or not isinstance(line, Sequence) or len(line) != 2:
                raise errors.InvalidArgument("a line is (sku, qty)", field=f"shipments[{k}].lines[{j}]")
            out.append((line[0], _check_qty(line[1], f"shipments[{k}].lines[{j}].qty")))
        if not out:
            raise errors.InvalidArgument("a shipment needs at least one line", field=f"shipments[{k}].lines")
        plan.append((location, tuple(out)))
    return tuple(plan)


def _identity(x: Any) -> Any:
    return x


class _Missing:
    __slots__ = ()


_MISSING = _Missing()


def _make_backend(native: bool, network: Network, n_skus: int, caps: np.ndarray, is_open: np.ndarray,
                  capacity: np.ndarray) -> tuple[Any, Any]:
    from ._core import py_unit_vector

    xyz = np.array([py_unit_vector(float(a), float(b)) for a, b in zip(network.lat, network.lon)],
                   dtype=np.float64).reshape(len(network), 3)
    priority = np.ascontiguousarray(network.priority, dtype=np.int32)
    fixed = np.ascontiguousarray(network.fixed_cost, dtype=np.float64)
    if native:
        from ._core import Ledger, LocationIndex, Router

        native_ledger = Ledger(len(network), n_skus)
        router = Router(native_ledger, LocationIndex(xyz), xyz, caps, is_open, capacity, priority, fixed)
        return native_ledger, router
    from .reference import ReferenceLedger, ReferenceRouter

    reference_ledger = ReferenceLedger(len(network), n_skus)
    return reference_ledger, ReferenceRouter(reference_ledger, xyz, caps, is_open, capacity, priority, fixed)
