"""What-ifs on the real order stream: re-run the orders a data directory's journal recorded, under another
policy or network, beside what actually happened.

:func:`replay` rebuilds the engine's state as it was when the window opens
(the newest snapshot before it, plus the journal's records up to it, applied
as recorded), then takes two copies through the window, record by record, on
the recorded clock:

* **recorded**: each record's recorded effect, as recovery applies it -- what
  actually happened;
* **what-if**: each record's *command*, decided again by an engine with the
  what-if's changes (another routing policy for every order; more stores
  shipping from store). Orders are routed afresh; what the order system did
  next follows each order: a confirmation, release or re-route of a recorded
  reservation goes to the what-if reservation of the same order, and a
  store's action on a recorded shipment to the what-if shipment of that order
  at the same store -- or is skipped (and counted) when the what-if sent the
  order elsewhere or not at all. Stock events, new days, sales and the rest
  apply as recorded; one the what-if state refuses (a floor sale of units it
  holds for an order) is counted, not applied. The clock's own commands
  (expiries, store deadlines) are not copied: the what-if engine runs its own
  clock at the recorded times.

Under the recorded policy and network the what-if decides exactly what was
recorded (the tests hold it to that). The journal holds every order that
changed the state and every refused order that carried a request id (an
order system's retry key); an order refused without one left no record, and
no replay can see it. An order the what-if fills that the recorded side did
not has no confirmation to follow: it stays held and expires at its TTL. Both sides are summarised alike --
orders, fill, parcels, distance, cost, load per location -- as tables, metrics
and, with :func:`write_replay_report`, maps side by side.

Examples
--------
>>> import tempfile, pyomni
>>> net = pyomni.demo_network(stores=30, warehouses=2, skus=40, seed=3)
>>> with tempfile.TemporaryDirectory() as d:
...     with pyomni.Engine.open(d, net, fsync="never", clock=lambda: 1_000.0) as eng:
...         _ = eng.apply_stock_events(pyomni.demo_stock(net, seed=3))
...         for order in pyomni.demo_orders(net, 50, seed=4):
...             _ = eng.route_order(order, request_id=f"r-{order.id}")
...     same = replay(d)
...     far = replay(d, policy=pyomni.RoutingPolicy(name="far", cost_per_km=0.0))
>>> same.recorded.metrics == same.what_if.metrics, same.what_if.metrics["orders"]
(True, 50)
>>> far.what_if.metrics["mean_km"] > far.recorded.metrics["mean_km"]
True
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from . import codec, errors, snapshot, validate
from .commands import (
    ClaimBatch,
    EndReservation,
    Expire,
    Reroute,
    ReservePlan,
    ReturnLine,
    RouteBatch,
    RouteOrder,
    ShipmentAction,
    StoreDeadline,
    UpsertLocations,
)
from .engine import Engine
from .model import Capability, LocationKind, Order
from .policy import RoutingPolicy

__all__ = ["ReplayOutcome", "ReplayResult", "replay", "parse_time", "parse_policy"]

_HOUR = 3_600.0
_EPOCH = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")     # epoch seconds, as float() reads them
_DAY = 86_400.0
_KINDS = {int(k): k.name.lower() for k in LocationKind}


@dataclass(frozen=True)
class _Named:
    name: str


@dataclass(frozen=True, eq=False)
class ReplayOutcome:
    """One side of a replay: its orders, parcels, load per location and headline metrics.

    ``orders``: ``order_id, routed_h`` (hours since the window opened), ``status`` (ALLOCATED or
    UNFULFILLABLE), ``state`` (the reservation's at the end: HELD, CONFIRMED, RELEASED, EXPIRED, or null),
    ``parcels, distance_km, total_cost`` (under the side's own cost model), ``fulfilment_cost`` (its parcels'
    fixed costs, split penalties and distance at the recorded default policy's rates: the same basis on both
    sides), ``lat, lon``. ``shipments``: one row per parcel of the orders' final
    plans (``shipment`` is its reservation id and number, ``location, location_kind, units, distance_km,
    cost``, and for the maps ``from_lat, from_lon, to_lat, to_lon, picked_h`` = the hour it was routed).
    ``store_load``: per location, ``parcels`` in the window and ``utilisation`` (its busiest day's parcels
    against its daily capacity; 0 when unlimited).
    """

    policy: str                              #: the label in reports: "recorded" or the what-if's description
    scenario: _Named
    orders: pa.Table
    shipments: pa.Table
    store_load: pa.Table
    metrics: dict[str, Any]


@dataclass(frozen=True, eq=False)
class ReplayResult:
    """Both sides of one replay and what the what-if could not follow."""

    recorded: ReplayOutcome
    what_if: ReplayOutcome
    window: dict[str, Any]                   #: first and last LSN and time of the window, records in it
    skipped: dict[str, int] = field(default_factory=dict)   #: order-system commands with no what-if target
    refused: dict[str, int] = field(default_factory=dict)   #: commands the what-if state refused
    applied: dict[str, int] = field(default_factory=dict)   #: commands the what-if took, by the recorded kind
    wall_time_s: float = 0.0


def parse_time(text: str | float | None, field_name: str) -> float | None:
    """A window bound: epoch seconds, or an ISO 8601 date or time (UTC unless it says otherwise).

    >>> parse_time("1970-01-02", "from"), parse_time("86400.5", "to"), parse_time(None, "to")
    (86400.0, 86400.5, None)
    """
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return validate.number(text, field_name)
    s = validate.text(text, field_name, max_chars=64)
    if _EPOCH.fullmatch(s.strip()):
        return float(s)
    import datetime as dt
    try:
        moment = dt.datetime.fromisoformat(s)
    except ValueError:
        raise errors.InvalidArgument(f"{field_name} must be epoch seconds or an ISO 8601 time, got {validate.shown(s)}",
                                     field=field_name) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


def parse_policy(text: str) -> RoutingPolicy | str:
    """A what-if policy from the command line: a registered policy's key or name, or ``field=value,...`` over
    :class:`~pyomni.RoutingPolicy`'s fields (``name=`` included).

    >>> parse_policy("name=near,cost_per_km=0.08,max_splits=1").max_splits
    1
    >>> parse_policy("express")
    'express'
    """
    s = validate.text(text, "policy", max_chars=1_000)
    if "=" not in s:
        return s
    fields = {f.name: f for f in dataclasses.fields(RoutingPolicy) if f.init}
    values: dict[str, Any] = {}
    for part in s.split(","):
        key, _, raw = part.partition("=")
        key = key.strip()
        if key not in fields:
            raise errors.InvalidArgument(f"unknown policy field {validate.shown(key)} (fields: {', '.join(fields)})",
                                         field="policy")
        kind = type(getattr(RoutingPolicy(), key))
        try:
            values[key] = (raw.strip() if kind is str else raw.strip().lower() in ("1", "true", "yes")
                           if kind is bool else kind(raw))
        except ValueError:
            raise errors.InvalidArgument(f"policy field {key} cannot be {validate.shown(raw)}",
                                         field="policy") from None
    values.setdefault("name", "what-if")
    return RoutingPolicy(**values)


def replay(data_dir: str | os.PathLike[str], *, start: str | float | None = None, end: str | float | None = None,
           policy: RoutingPolicy | str | None = None, add_ship_stores: int = 0,
           progress: Callable[[int, int], None] | None = None) -> ReplayResult:
    """Re-run the orders ``data_dir``'s journal recorded between ``start`` and ``end`` under ``policy`` and with
    ``add_ship_stores`` more stores shipping from store, beside what was recorded.

    Parameters
    ----------
    data_dir : path
        An engine's data directory (``snapshots/`` and ``journal/``); only read.
    start, end : epoch seconds or ISO 8601 text, optional
        The window, by the engine's clock (default: everything the journal still holds after its oldest
        snapshot).
    policy : RoutingPolicy or str, optional
        The what-if routing policy for every order (a policy object, or a key or name registered in the
        recorded state). None keeps each order's recorded policy.
    add_ship_stores : int
        Stores that did not ship from store and do in the what-if: those holding the most units first.
    progress : callable, optional
        Called with (records done, records in all) every 10,000 records.

    Raises
    ------
    pyomni.errors.NotFound
        No snapshot in ``data_dir``, or no record in the window.
    pyomni.errors.InvalidArgument
        A bad window, an unknown policy, or more stores to add than there are.
    """
    started = time.perf_counter()
    root = validate.path(data_dir, "data_dir")
    lo, hi = parse_time(start, "start"), parse_time(end, "end")
    if lo is not None and hi is not None and hi < lo:
        raise errors.InvalidArgument("the window ends before it starts", field="end")
    add = validate.integer(add_ship_stores, "add_ship_stores", low=0, high=1_000_000)
    snaps = snapshot.list_snapshots(root / "snapshots")
    if not snaps:
        raise errors.NotFound(f"no snapshot in {validate.shown(str(root))}: not a data directory", field="data_dir")
    from .journal import read_records

    oldest = snapshot.read(snaps[-1])
    records = [(lsn, payload, codec.decode(payload)) for lsn, payload in read_records(root / "journal", oldest.lsn)]
    inside = [k for k, (_, _, rec) in enumerate(records)
              if (lo is None or rec[0] >= lo) and (hi is None or rec[0] <= hi)]
    if not inside:
        held = (f"{records[0][2][0]:.0f}..{records[-1][2][0]:.0f}" if records else "nothing")
        raise errors.NotFound(f"no journal record in the window (the journal holds times {held})", field="start")
    first, last = inside[0], inside[-1]
    first_lsn = records[first][0]
    # the newest snapshot before the window, then the records up to it, as recovery applies them
    base_data = next(d for d in (snapshot.read(p) for p in snaps) if d.lsn < first_lsn)
    clock = _Clock(records[first][2][0])
    recorded = Engine._from_snapshot(base_data, clock=clock, native=None)
    recorded._replay_all((lsn, payload) for lsn, payload, _ in records if base_data.lsn < lsn < first_lsn)
    with recorded._lock:
        state = recorded._capture()
    recorded._snapshot_records(state)                  # as a snapshot holds them
    what_if = Engine._from_snapshot(state, clock=clock, native=None)
    override = _what_if_policy(what_if, policy)
    if add:
        _add_ship_stores(what_if, add)
    window = records[first:last + 1]
    follower = _Follower(recorded, what_if, override)
    t0 = window[0][2][0]
    # what happened, all at once (the follower reads only what the recorded side never changes afterwards:
    # a reservation's order, a shipment's order and location)
    recorded._replay_all((lsn, payload) for lsn, payload, _ in window)
    for k, (_, _, (now, request_id, command, _)) in enumerate(window):
        clock.now = now
        follower.follow(command, request_id, now)
        if progress is not None and k % 10_000 == 0:
            progress(k, len(window))
    label = "recorded"
    changes = [*([f"policy {what_if.policy(override).name}"] if override is not None else []),
               *([f"+{add} ship-from-store"] if add else [])]
    what_label = "what-if: " + ", ".join(changes) if changes else "what-if (as recorded)"
    name = root.name or str(root)
    basis = recorded.policy()          # both sides' parcels priced alike: the recorded default policy's rates
    return ReplayResult(
        recorded=_outcome(recorded, follower.order_times, follower.order_place, t0, label, name, basis),
        what_if=_outcome(what_if, follower.order_times, follower.order_place, t0, what_label, name, basis),
        window={"first_lsn": first_lsn, "last_lsn": window[-1][0], "start": t0, "end": window[-1][2][0],
                "records": len(window), "orders": len(follower.order_times), "snapshot_lsn": base_data.lsn},
        skipped=dict(follower.skipped), refused=dict(follower.refused), applied=dict(follower.applied),
        wall_time_s=time.perf_counter() - started)


class _Clock:
    """The recorded time, for both engines."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _what_if_policy(eng: Engine, policy: RoutingPolicy | str | None) -> RoutingPolicy | str | None:
    if policy is None:
        return None
    if isinstance(policy, RoutingPolicy):
        if policy.key not in eng._policies:
            eng.register_policy(policy)
        return policy.key
    return eng.policy(policy).key        # NotFound (UnknownPolicy) for a policy the recorded state lacks


def _add_ship_stores(eng: Engine, n: int) -> None:
    net = eng.network
    candidates = [i for i in range(len(net)) if net.kind[i] == LocationKind.STORE
                  and not int(net.capabilities[i]) & int(Capability.SHIP)]
    if n > len(candidates):
        raise errors.InvalidArgument(f"only {len(candidates)} stores do not ship from store; cannot add {n}",
                                     field="add_ship_stores")
    stock = eng.stock_table()
    held: Counter[str] = Counter()
    for loc, qty in zip(stock.column("location").to_pylist(), stock.column("on_hand").to_pylist(), strict=True):
        held[loc] += qty
    chosen = sorted(candidates, key=lambda i: (-held[net.ids[i]], net.ids[i]))[:n]
    eng._execute(UpsertLocations(tuple(
        dataclasses.replace(net.location(i), capabilities=Capability(int(net.capabilities[i]) | int(Capability.SHIP)))
        for i in chosen)))


class _Follower:
    """Takes the what-if engine through the recorded commands (see the module docstring)."""

    def __init__(self, recorded: Engine, what_if: Engine, policy: RoutingPolicy | str | None) -> None:
        self.recorded, self.what_if, self.policy = recorded, what_if, policy
        self.order_times: dict[str, float] = {}          # orders routed in the window, first routed at
        self.order_place: dict[str, tuple[float, float]] = {}    # where each goes (a pickup: its store)
        self._latest = _LatestReservation(what_if)
        self.applied: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def follow(self, command: Any, request_id: str | None, now: float) -> None:
        kind = type(command)
        if kind is Expire or kind is StoreDeadline:
            command = Expire()                            # the what-if's own clock, at the recorded time
        elif kind is RouteOrder:
            self._routed(command.order, now)
            if self.policy is not None:
                command = dataclasses.replace(command, policy=self.policy)
        elif kind is ReservePlan:
            self._routed(command.order, now)
            if self.policy is not None:       # the optimiser's plan was for the recorded policy: route afresh
                command = RouteOrder(command.order, self.policy, None)
        elif kind is RouteBatch:
            lat, lon = np.frombuffer(command.lat, dtype="<f8"), np.frombuffer(command.lon, dtype="<f8")
            for oid, la, lo in zip(command.order_ids, lat.tolist(), lon.tolist(), strict=True):
                self.order_times.setdefault(oid, now)
                self.order_place.setdefault(oid, (la, lo))
            self._route_batch(command)
            return
        elif kind is ClaimBatch:
            self._claim_batch(command)
            return
        elif kind is EndReservation or kind is Reroute:
            rid = self._reservation(command.reservation_id)
            if rid is None or (kind is Reroute and not self._ships_from(rid, command.rejected_by)):
                self.skipped[kind.__name__] += 1
                return
            command = dataclasses.replace(command, reservation_id=rid)
            if kind is Reroute and self.policy is not None and command.policy is not None:
                command = dataclasses.replace(command, policy=self.policy)
        elif kind is ShipmentAction or kind is ReturnLine:
            sid = self._shipment(command.shipment_id)
            if sid is None:
                self.skipped[kind.__name__] += 1
                return
            command = dataclasses.replace(command, shipment_id=sid)
        try:
            self.what_if._execute(command, request_id, explain=False)
        except errors.PyomniError:
            self.refused[kind.__name__] += 1
        else:
            self.applied[kind.__name__] += 1

    def _route_batch(self, command: RouteBatch) -> None:
        # a batch is decided row by row through its own entry point; its columns are as the command holds them
        skus = self.what_if._sku_ids
        counts = np.frombuffer(command.line_counts, dtype="<i4")
        sku = np.frombuffer(command.sku, dtype="<i4")
        try:
            self.what_if.route_columns(
                list(command.order_ids), counts, [skus[k] for k in sku.tolist()],
                np.frombuffer(command.qty, dtype="<i4"), np.frombuffer(command.lat, dtype="<f8"),
                np.frombuffer(command.lon, dtype="<f8"), channels=list(command.channels),
                request_ids=list(command.request_ids),
                policy=self.policy if self.policy is not None else command.policy, ttl=command.ttl)
        except errors.PyomniError:
            self.refused["RouteBatch"] += 1
        else:
            self.applied["RouteBatch"] += 1

    def _claim_batch(self, command: ClaimBatch) -> None:
        try:
            spec = self.what_if._sale_of(command.sale_id).spec
            stores = [spec.stores[k][0] if k >= 0 else None
                      for k in np.frombuffer(command.store, dtype="<i4").tolist()]
            lat, lon = np.frombuffer(command.lat, dtype="<f8"), np.frombuffer(command.lon, dtype="<f8")
            self.what_if.claim_many(command.sale_id, list(command.customers),
                                    [spec.skus[k] for k in np.frombuffer(command.sku, dtype="<i4").tolist()],
                                    np.frombuffer(command.qty, dtype="<i4"), stores=stores,
                                    near=np.column_stack([lat, lon]), request_ids=list(command.request_ids))
        except errors.PyomniError:
            self.refused["ClaimBatch"] += 1
        else:
            self.applied["ClaimBatch"] += 1

    def _routed(self, order: Order, now: float) -> None:
        self.order_times.setdefault(order.id, now)
        if order.id not in self.order_place:
            if order.destination is not None:
                self.order_place[order.id] = order.destination
            else:                                      # click and collect: the customer comes to the store
                net = self.recorded.network
                j = net.index_of(str(order.pickup_location))
                self.order_place[order.id] = (float(net.lat[j]), float(net.lon[j]))

    def _reservation(self, recorded_rid: str) -> str | None:
        rec = self.recorded._records.get(recorded_rid)
        return None if rec is None else self._latest(rec.order.id)

    def _ships_from(self, rid: str, location: str) -> bool:
        return any(s.location == location for s in self.what_if.reservation(rid).shipments)

    def _shipment(self, recorded_sid: str) -> str | None:
        try:
            s = self.recorded.shipment(recorded_sid)
        except errors.PyomniError:
            return None
        rid = self._latest(s.order_id)
        if rid is None:
            return None
        mine = [x for x in self.what_if.shipments(open_only=False, order_id=s.order_id)
                if x.reservation_id == rid and x.location == s.location]
        return mine[-1].id if mine else None


class _LatestReservation:
    """An order's latest reservation in an engine (HELD or CONFIRMED first; else its last one), indexed as
    the engine's append-only record list grows."""

    def __init__(self, eng: Engine) -> None:
        self.eng, self.seen = eng, 0
        self.last: dict[str, str] = {}

    def __call__(self, order_id: str) -> str | None:
        rid = self.eng._live_orders.get(order_id)
        if rid is not None:
            return rid
        records = self.eng._record_order
        for rec in records[self.seen:]:
            self.last[rec.order.id] = rec.id
        self.seen = len(records)
        return self.last.get(order_id)


def _outcome(eng: Engine, order_times: dict[str, float], places: dict[str, tuple[float, float]], t0: float,
             label: str, name: str, basis: RoutingPolicy) -> ReplayOutcome:
    net = eng.network
    latest: dict[str, Any] = {}
    for record in eng._record_order:
        if record.order.id in order_times:
            latest[record.order.id] = record
    orders_cols: dict[str, list] = {c: [] for c in ("order_id", "routed_h", "status", "state", "parcels",
                                                    "distance_km", "total_cost", "fulfilment_cost", "lat", "lon")}
    per_km = basis.cost_per_km * basis.circuity
    fixed = np.asarray(net.fixed_cost, dtype=np.float64)
    ship_cols: dict[str, list] = {c: [] for c in ("shipment", "order_id", "location", "location_kind", "units",
                                                  "distance_km", "cost", "from_lat", "from_lon", "to_lat", "to_lon",
                                                  "picked_h")}
    day_parcels: Counter[tuple[int, int]] = Counter()
    for oid, at in order_times.items():
        rec = latest.get(oid)
        hour = (at - t0) / _HOUR
        orders_cols["order_id"].append(oid)
        orders_cols["routed_h"].append(hour)
        if rec is None:
            empty: tuple[tuple[str, Any], ...] = (("status", "UNFULFILLABLE"), ("state", None), ("parcels", 0),
                                                  ("distance_km", 0.0), ("total_cost", 0.0),
                                                  ("fulfilment_cost", 0.0), ("lat", places[oid][0]),
                                                  ("lon", places[oid][1]))
            for c, v in empty:
                orders_cols[c].append(v)
            continue
        res = eng.reservation(rec.id)
        lat, lon = places[oid]
        km = cost = money = 0.0
        for n, s in enumerate(res.shipments, start=1):
            i = net.index_of(s.location)
            ship_cols["shipment"].append(f"{rec.id}-{n}")
            ship_cols["order_id"].append(oid)
            ship_cols["location"].append(s.location)
            ship_cols["location_kind"].append(_KINDS[int(net.kind[i])])
            ship_cols["units"].append(sum(line.qty for line in s.lines))
            ship_cols["distance_km"].append(s.distance_km)
            ship_cols["cost"].append(s.cost.total)
            ship_cols["from_lat"].append(float(net.lat[i]))
            ship_cols["from_lon"].append(float(net.lon[i]))
            ship_cols["to_lat"].append(lat)
            ship_cols["to_lon"].append(lon)
            ship_cols["picked_h"].append(hour)
            day_parcels[(i, int((at - t0) // _DAY))] += 1
            km += s.distance_km
            cost += s.cost.total
            money += fixed[i] + per_km * s.distance_km + (basis.split_penalty if n > 1 else 0.0)
        row: tuple[tuple[str, Any], ...] = (("status", "ALLOCATED"), ("state", res.state.name),
                                            ("parcels", len(res.shipments)), ("distance_km", km),
                                            ("total_cost", cost), ("fulfilment_cost", money), ("lat", lat),
                                            ("lon", lon))
        for c, v in row:
            orders_cols[c].append(v)
    orders = pa.table(orders_cols, schema=pa.schema([
        ("order_id", pa.string()), ("routed_h", pa.float64()), ("status", pa.string()), ("state", pa.string()),
        ("parcels", pa.int32()), ("distance_km", pa.float64()), ("total_cost", pa.float64()),
        ("fulfilment_cost", pa.float64()), ("lat", pa.float64()), ("lon", pa.float64())]))
    shipments = pa.table(ship_cols, schema=pa.schema([
        ("shipment", pa.string()), ("order_id", pa.string()), ("location", pa.string()),
        ("location_kind", pa.string()), ("units", pa.int64()), ("distance_km", pa.float64()), ("cost", pa.float64()),
        ("from_lat", pa.float64()), ("from_lon", pa.float64()), ("to_lat", pa.float64()), ("to_lon", pa.float64()),
        ("picked_h", pa.float64())]))
    store_load = _store_load(eng, day_parcels)
    return ReplayOutcome(label, _Named(name), orders, shipments, store_load, _metrics(orders, shipments, store_load))


def _store_load(eng: Engine, day_parcels: Counter[tuple[int, int]]) -> pa.Table:
    net = eng.network
    n = len(net)
    parcels = np.zeros(n, dtype=np.int64)
    busiest = np.zeros(n, dtype=np.int64)
    for (i, _), count in day_parcels.items():
        parcels[i] += count
        busiest[i] = max(busiest[i], count)
    capacity = np.asarray(eng._capacity, dtype=np.int64)            # as it is now (the what-if's changes in)
    util = np.where(capacity > 0, busiest / np.maximum(capacity, 1), 0.0)
    ships = (np.asarray(eng._caps, dtype=np.int64) & int(Capability.SHIP)) != 0
    return pa.table({"location": pa.array(list(net.ids), pa.string()),
                     "kind": pa.array([_KINDS[int(k)] for k in net.kind], pa.string()),
                     "lat": np.asarray(net.lat, dtype=np.float64), "lon": np.asarray(net.lon, dtype=np.float64),
                     "ships": pa.array(ships.tolist(), pa.bool_()), "daily_capacity": capacity,
                     "parcels": parcels, "utilisation": util})


def _metrics(orders: pa.Table, shipments: pa.Table, store_load: pa.Table) -> dict[str, Any]:
    status = np.array(orders.column("status").to_pylist(), dtype=object)
    filled = status == "ALLOCATED"
    n, n_filled = len(status), int(filled.sum())
    parcels = orders.column("parcels").to_numpy()
    km = shipments.column("distance_km").to_numpy()
    cost = float(orders.column("total_cost").to_numpy()[filled].sum()) if n_filled else 0.0
    money = float(orders.column("fulfilment_cost").to_numpy()[filled].sum()) if n_filled else 0.0
    kinds = np.array(shipments.column("location_kind").to_pylist(), dtype=object)
    states = Counter(orders.column("state").to_pylist())
    load = store_load.column("parcels").to_numpy()
    store_rows = np.array([k == "store" for k in store_load.column("kind").to_pylist()], dtype=bool)
    return {
        "orders": n,
        "filled_orders": n_filled,
        "order_fill_rate": n_filled / n if n else None,
        "parcels": int(parcels[filled].sum()),
        "split_rate": float(parcels[filled].mean()) if n_filled else None,
        "mean_km": float(km.mean()) if len(km) else None,
        "p95_km": float(np.percentile(km, 95)) if len(km) else None,
        "total_cost": cost,
        "cost_per_order": cost / n_filled if n_filled else None,
        "fulfilment_cost": money,
        "fulfilment_cost_per_order": money / n_filled if n_filled else None,
        "warehouse_parcel_share": float((kinds == "warehouse").mean()) if len(kinds) else None,
        "confirmed_orders": states.get("CONFIRMED", 0),
        "released_orders": states.get("RELEASED", 0),
        "expired_orders": states.get("EXPIRED", 0),
        "held_at_end": states.get("HELD", 0),
        "locations_used": int((load > 0).sum()),
        "stores_used": int(((load > 0) & store_rows).sum()),
    }

