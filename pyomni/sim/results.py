"""What a simulation run produced: per-order outcomes, parcels, hourly series, store load and metrics.

Everything a report shows is an Arrow table here, so it can be written as
Parquet as it is; the headline numbers are a flat dict of plain floats and
ints (``None`` where a number does not exist, e.g. hours to clear a backlog
that never cleared), so they can be written as JSON as they are.

Metric definitions (cancelled orders are out of every denominator):

* ``fill_rate`` -- units shipped / units ordered; ``order_fill_rate`` -- orders
  shipped complete / orders;
* ``split_rate`` -- parcels per shipped order (1.0 = never split);
* ``mean_km`` / ``p95_km`` -- great-circle distance of shipped parcels;
* ``total_cost`` -- the engine's cost model (:mod:`pyomni.policy`: fixed +
  split + distance + low-stock + load + priority) of the shipped orders'
  final parcels, each as priced when it was routed (at the decision, or at
  its re-route); ``fulfilment_cost`` -- its policy-independent part, fixed +
  split + distance;
* ``optimiser_plan_share`` -- share of the batch rounds that applied the
  optimiser's plan (with the router placing what it left unfilled; the other
  rounds applied the real-time router's plan of the same backlog, which cost
  less); ``plan_cost_vs_greedy`` -- the applied plans'
  summed objective against the router's plans of the same backlogs, on the
  optimiser's cost basis (-0.05 = 5 % cheaper);
* ``stockout_orders`` -- orders ended STOCKOUT: short of stock in the whole
  network, refunded after a re-route no location could take
  (``refunded_orders``), or left without a plan for the scenario's
  ``backorder_hours`` (``backorder_expired_orders``, reason ``"no plan in
  ..."``);
* ``max_gap`` -- the worst round's gap: its applied plan against the bound of
  the round's whole candidate problem (:func:`pyomni.optimize.optimize_backlog`'s
  ``best_bound``: the solver's, the LP relaxation of the whole, or the
  Lagrangian bound; ``bound_scope`` in each solve record says which);
* ``hours_to_clear`` -- hours from the start until the last order reached a
  terminal state (``None`` if orders were still open at the end: with the
  backorder limit, only orders younger than it, or a horizon too short for
  the backlog);
* store load -- parcels a store picked on its busiest day against its daily
  capacity (capacity is per business day, so 1.0 = full, never more);
* store operations -- a *re-route* is a parcel its location rejected or let
  time out (its lines went elsewhere): ``reroutes_per_100_orders`` counts
  them per 100 orders, ``orders_rerouted_share`` is the share of decided
  orders with at least one; ``rejected_share`` / ``timed_out_share`` are
  shares of the parcels routed to stores that the stores answered or let
  time out (parcels cancelled before an answer, or still waiting at the
  end, are out; warehouses answer through their system, at once, and take
  everything); ``answer_p50_min`` / ``answer_p95_min`` are percentiles of the
  stores' answer times in minutes of their opening hours -- the minutes the
  answer limit counts, so a parcel routed to a store at night and accepted
  four minutes after it opened took 4; ``late_share`` -- accepted parcels
  (stores and warehouses) the engine flagged for missing their pick limit;
* settlement -- ``settlement_total_cents`` is the sum of every party's net
  in the engine's settlement (:meth:`pyomni.Engine.settlement`): there are no
  returns in the simulation and fees net to zero, so it is the price of the
  shipped orders minus their coupons, exactly.

Examples
--------
>>> OrderState.SHIPPED.name
'SHIPPED'
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .. import errors
from ..model import LocationKind
from ..settlement import CHANNEL_PREFIX, HQ
from .scenario import Scenario

if TYPE_CHECKING:
    from ..engine import Engine
    from .simulation import Run

__all__ = ["OrderState", "ParcelOutcome", "SimulationResult", "summarise", "TERMINAL_STATES",
           "SETTLEMENT_SCHEMA"]

_HOUR = 3_600.0
#: How the reason of an order that waited ``backorder_hours`` without a plan begins.
BACKORDER_PREFIX = "no plan in "


class OrderState(enum.IntEnum):
    """Where an order is. Every order ends in exactly one of the last four."""

    OPEN = 0  #: waiting for a decision, or planned and waiting to be picked
    SHIPPED = 1  #: every parcel picked and the reservation confirmed
    CANCELLED = 2  #: the customer cancelled before any parcel was picked
    STOCKOUT = 3  #: the network had no shippable stock for one of its lines
    BACKLOG = 4  #: still open when the horizon ended


#: States an order may end in.
TERMINAL_STATES = (OrderState.SHIPPED, OrderState.CANCELLED, OrderState.STOCKOUT, OrderState.BACKLOG)
_STATE_NAMES = np.array([s.name for s in OrderState], dtype=object)


class ParcelOutcome(enum.IntEnum):
    """How a parcel's location answered it."""

    WAITING = 0  #: no answer yet (at the end of the horizon: none came)
    ACCEPTED = 1  #: the location took it on (it may still be cancelled with its order)
    REJECTED = 2  #: the location said no; its lines were re-routed
    TIMED_OUT = 3  #: nobody answered within the answer limit; the engine re-routed its lines
    CANCELLED = 4  #: its order was cancelled or refunded before the location answered


_OUTCOME_NAMES = np.array([o.name.lower() for o in ParcelOutcome], dtype=object)

#: The settlement per party over the whole run (:meth:`SimulationResult.settlement`), net first.
SETTLEMENT_SCHEMA = pa.schema([
    pa.field("party", pa.string()),             # a location id, "HQ" or "channel:<name>"
    pa.field("kind", pa.string()),              # store, warehouse, dark_store, hq or channel
    pa.field("city", pa.string()),              # a location's city ("" otherwise)
    pa.field("revenue_cents", pa.int64()),
    pa.field("fee_cents", pa.int64()),
    pa.field("coupon_cents", pa.int64()),
    pa.field("returns_cents", pa.int64()),
    pa.field("net_cents", pa.int64()),
    pa.field("sales", pa.int64()),              # sale facts (shipped order lines) with an entry for the party
])
_KIND_NAMES = np.array(["", "store", "warehouse", "dark_store"], dtype=object)


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """Outcome of one policy on one scenario.

    Attributes
    ----------
    scenario : Scenario
    policy : str
    metrics : dict
        Headline numbers (see the module docstring for definitions).
    orders : pyarrow.Table
        One row per order: ``order_id, arrival_h, release_h, decided_h,
        terminal_h, state, reason`` (why a STOCKOUT: no shippable stock, or the
        order exception of a re-route nothing could take), ``units,
        units_shipped, parcels`` (its final parcels), ``confirmations,
        total_cost, fulfilment_cost, gross_cents, coupon_cents, reroutes,
        first_answer_min`` (opening-time minutes until the first answer to
        one of the parcels it was planned with; null if none), ``lat, lon``.
    shipments : pyarrow.Table
        One row per parcel, planned or re-routed: ``shipment_id, replaces``
        (the parcel whose lines it took over; null if planned with the
        order), ``order_id, location, location_kind, units, gross_cents``
        (its lines' price before coupons), ``distance_km, fulfilment_cost,
        routed_h, answered_h, answer_min`` (opening-time minutes to the
        answer), ``outcome`` (a :class:`ParcelOutcome` name, lower case),
        ``reject_reason`` (the store's, or TIMEOUT), ``ended_h`` (rejected,
        timed out or cancelled), ``late, final_location`` (where its lines
        ended up: its own location, or those of the parcels that replaced
        it, joined by ``+``; null if they were cancelled), ``picked_h,
        from_lat, from_lon, to_lat, to_lon`` (times null where an event
        never happened).
    series : pyarrow.Table
        One row per hour: ``hour, arrived, shipped, cancelled, stockout,
        backlog`` (orders open at the end of the hour), ``parcels_picked,
        units_shipped``.
    store_load : pyarrow.Table
        One row per location: ``location, kind, city, lat, lon, ships,
        daily_capacity, parcels, units, utilisation`` (parcels picked on the
        store's busiest day / daily capacity: at most 1 while capacity holds)
        and ``peak_day_utilisation`` (the first 24 hours).
    solves : list of dict
        One record per optimiser call (status, objective, bound, gap, times).
    stock : dict
        Unit accounting: ``opening``, ``received``, ``shipped``, ``closing``,
        ``written_off`` (what rejections for NOT_FOUND and DAMAGED took off
        the shelves), ``closing_reserved``, ``held_for_backlog``.
    wall_time_s : float
    settlement : pyarrow.Table
        Who earned what under the scenario's attribution rule, per party
        (:data:`SETTLEMENT_SCHEMA`), largest net first.

    Examples
    --------
    >>> from pyomni.sim import preset, simulate
    >>> r = simulate(preset("small", orders=60, stores=10, hours=24))
    >>> r.series.num_rows
    24
    """

    scenario: Scenario
    policy: str
    metrics: dict[str, Any]
    orders: pa.Table
    shipments: pa.Table
    series: pa.Table
    store_load: pa.Table
    solves: list[dict[str, Any]] = field(default_factory=list)
    stock: dict[str, int] = field(default_factory=dict)
    wall_time_s: float = 0.0
    settlement: pa.Table = field(default_factory=SETTLEMENT_SCHEMA.empty_table)

    def check_invariants(self, engine: Engine | None = None) -> None:
        """Verify the run's bookkeeping; raise :class:`~pyomni.errors.InvariantViolation` if it is off.

        * every order is in exactly one terminal state;
        * no order is filled twice: a shipped order was confirmed once and
          its picked parcels carry exactly the units it ordered; no other
          order shipped anything confirmed;
        * units are conserved: opening + received = shipped + closing +
          written off, and the units still reserved are exactly those held
          for backlog orders;
        * a shipped order's final parcels were all accepted and picked;
        * the settlement pays out exactly what the shipped orders cost the
          customers: the parties' nets sum to their price minus their coupons
          (no returns in the simulation; fees net to zero);
        * with ``engine``: its own ledger invariants hold, and its settlement
          facts are the shipped orders' lines, each order's price and coupon
          exactly.

        Examples
        --------
        >>> from pyomni.sim import preset, simulate
        >>> simulate(preset("small", orders=60, stores=10, hours=24), check=False).check_invariants()
        """
        states = self.orders.column("state").to_numpy(zero_copy_only=False)
        terminal = {s.name for s in TERMINAL_STATES}
        bad = [s for s in set(states.tolist()) if s not in terminal]
        if bad:
            raise errors.InvariantViolation(f"orders ended in non-terminal states {bad}")
        if len(states) != self.scenario.orders or len(self.orders.column("order_id").unique()) != len(states):
            raise errors.InvariantViolation("every order must appear exactly once in the outcomes")
        shipped = states == OrderState.SHIPPED.name
        confirmations = self.orders.column("confirmations").to_numpy()
        if (confirmations[shipped] != 1).any() or (confirmations[~shipped] != 0).any():
            raise errors.InvariantViolation("an order was confirmed twice, or confirmed without shipping")
        units = self.orders.column("units").to_numpy()
        shipped_units = self.orders.column("units_shipped").to_numpy()
        if (shipped_units[shipped] != units[shipped]).any() or (shipped_units[~shipped] != 0).any():
            raise errors.InvariantViolation("shipped units differ from ordered units")
        st = self.stock
        if st["opening"] + st["received"] != st["shipped"] + st["closing"] + st.get("written_off", 0):
            raise errors.InvariantViolation(f"units not conserved: {st}")
        if st["shipped"] != int(shipped_units.sum()):
            raise errors.InvariantViolation(f"ledger shipped {st['shipped']} units, orders {int(shipped_units.sum())}")
        if st["closing_reserved"] != st["held_for_backlog"]:
            raise errors.InvariantViolation(f"reserved units left over: {st}")
        self._check_parcels(shipped)
        self._check_settlement(shipped, engine)
        if engine is not None:
            engine.check_invariants()

    def _check_parcels(self, shipped: np.ndarray) -> None:
        ships = self.shipments
        if not ships.num_rows:
            return
        index = {oid: i for i, oid in enumerate(self.orders.column("order_id").to_pylist())}
        order = np.array([index[x] for x in ships.column("order_id").to_pylist()], dtype=np.int64)
        final = np.array([x is not None and x == loc for x, loc in zip(ships.column("final_location").to_pylist(),
                                                                      ships.column("location").to_pylist())])
        of_shipped = shipped[order] & final
        outcome = ships.column("outcome").to_numpy(zero_copy_only=False)
        picked = ~np.isnan(ships.column("picked_h").to_numpy(zero_copy_only=False))
        if ((outcome[of_shipped] != ParcelOutcome.ACCEPTED.name.lower()) | ~picked[of_shipped]).any():
            raise errors.InvariantViolation("a shipped order has a final parcel that was not accepted and picked")
        parcels = np.bincount(order[of_shipped], minlength=len(shipped))
        if (parcels[shipped] != self.orders.column("parcels").to_numpy()[shipped]).any():
            raise errors.InvariantViolation("a shipped order's final parcels differ from its parcel count")

    def _check_settlement(self, shipped: np.ndarray, engine: Engine | None) -> None:
        owed = self.orders.column("gross_cents").to_numpy() - self.orders.column("coupon_cents").to_numpy()
        expected = int(owed[shipped].sum())
        settled = int(sum(self.settlement.column("net_cents").to_pylist()))
        if settled != expected:
            raise errors.InvariantViolation(f"the settlement pays out {settled} cents; the shipped orders cost "
                                            f"{expected} (price minus coupons)")
        if engine is None:
            return
        facts = engine.settlement_facts()
        per_order = facts.group_by("order_id").aggregate([("gross_cents", "sum"), ("coupon_cents", "sum")])
        ids = self.orders.column("order_id").to_numpy(zero_copy_only=False)
        booked = dict(zip(per_order.column("order_id").to_pylist(),
                          zip(per_order.column("gross_cents_sum").to_pylist(),
                              per_order.column("coupon_cents_sum").to_pylist(), strict=True), strict=True))
        gross = self.orders.column("gross_cents").to_numpy()
        coupon = self.orders.column("coupon_cents").to_numpy()
        want = {ids[i]: (int(gross[i]), int(coupon[i])) for i in np.flatnonzero(shipped).tolist()}
        if booked != want:
            wrong = sorted(set(booked) ^ set(want) | {k for k in set(booked) & set(want) if booked[k] != want[k]})
            raise errors.InvariantViolation(f"the engine's sale facts differ from the shipped orders, e.g. {wrong[:3]}")


def summarise(run: Run, wall_time_s: float) -> SimulationResult:
    """Turn a finished :class:`~pyomni.sim.simulation.Run` into tables and metrics."""
    w = run.world
    s = w.scenario
    net = w.network
    n = len(w.orders)
    units = w.units_ordered.astype(np.int64)

    ship_order = np.array(run.ship_order, dtype=np.int64)
    ship_loc = np.array(run.ship_location, dtype=np.int64)
    ship_units = np.array(run.ship_units, dtype=np.int64)
    ship_km = np.array(run.ship_km, dtype=np.float64)
    ship_cost = np.array(run.ship_fixed, dtype=np.float64) + np.array(run.ship_distance_cost, dtype=np.float64)
    picked_s = np.array(run.ship_picked_s, dtype=np.float64)
    live = np.array(run.ship_live, dtype=bool)
    shipped = run.state == OrderState.SHIPPED
    parcel_of_shipped = (shipped[ship_order] & live) if len(ship_order) else np.zeros(0, bool)
    picked = ~np.isnan(picked_s)

    units_shipped = np.bincount(ship_order[parcel_of_shipped], weights=ship_units[parcel_of_shipped],
                                minlength=n).astype(np.int64)
    fulfilment = np.bincount(ship_order[parcel_of_shipped], weights=ship_cost[parcel_of_shipped], minlength=n)
    orders = pa.table({
        "order_id": pa.array([o.id for o in w.orders], pa.string()),
        "arrival_h": w.arrival_s / _HOUR,
        "release_h": w.release_s / _HOUR,
        "decided_h": _hours_or_null(run.decided_s),
        "terminal_h": _hours_or_null(run.terminal_s),
        "state": pa.array(_STATE_NAMES[run.state].tolist(), pa.string()),
        "reason": pa.array(run.end_reason, pa.string()),
        "units": units,
        "units_shipped": units_shipped,
        "parcels": run.n_shipments.astype(np.int32),
        "confirmations": run.confirmations.astype(np.int32),
        "total_cost": np.where(shipped, run.cost_model_total, 0.0),
        "fulfilment_cost": fulfilment,
        "gross_cents": w.gross_cents.astype(np.int64),
        "coupon_cents": w.coupon_cents.astype(np.int64),
        "reroutes": run.reroutes.astype(np.int32),
        "first_answer_min": pa.array(run.first_answer_min, pa.float64(), mask=np.isnan(run.first_answer_min)),
        "lat": w.lat,
        "lon": w.lon,
    })
    ids = run.ship_id
    parent = np.array(run.ship_parent, dtype=np.int64)
    outcome = np.array(run.ship_outcome, dtype=np.int64)
    answer_min = np.array(run.ship_answer_min, dtype=np.float64)
    shipments = pa.table({
        "shipment_id": pa.array(ids, pa.string()),
        "replaces": pa.array([ids[p] if p >= 0 else None for p in parent.tolist()], pa.string()),
        "order_id": pa.array([w.orders[i].id for i in ship_order.tolist()], pa.string()),
        "location": pa.array([net.ids[k] for k in ship_loc.tolist()], pa.string()),
        "location_kind": pa.array(_KIND_NAMES[net.kind[ship_loc]].tolist(), pa.string()),
        "units": ship_units,
        "gross_cents": np.array([sum(int(w.unit_price_cents[sku]) * qty for sku, qty in lines)
                                 for lines in run.ship_lines], dtype=np.int64),
        "distance_km": ship_km,
        "fulfilment_cost": ship_cost,
        "routed_h": np.array(run.ship_routed_s, dtype=np.float64) / _HOUR,
        "answered_h": _hours_or_null(np.array(run.ship_answered_s, dtype=np.float64)),
        "answer_min": pa.array(answer_min, pa.float64(), mask=np.isnan(answer_min)),
        "outcome": pa.array(_OUTCOME_NAMES[outcome].tolist() if len(outcome) else [], pa.string()),
        "reject_reason": pa.array([x or None for x in run.ship_reason], pa.string()),
        "ended_h": _hours_or_null(np.array(run.ship_ended_s, dtype=np.float64)),
        "late": pa.array(run.ship_late, pa.bool_()),
        "final_location": pa.array(_final_locations(run, live, parent), pa.string()),
        "picked_h": _hours_or_null(picked_s),
        "from_lat": net.lat[ship_loc], "from_lon": net.lon[ship_loc],
        "to_lat": w.lat[ship_order], "to_lon": w.lon[ship_order],
    })
    series = _hourly_series(run, shipped, picked_s, ship_units, picked)
    store_load = _store_load(run, ship_loc[picked], ship_units[picked], picked_s[picked])
    stock = _stock_accounting(run, ship_order, ship_units, live)
    settlement = _settlement(run)
    metrics = _metrics(run, units, units_shipped, shipped, ship_km[parcel_of_shipped], store_load, wall_time_s)
    metrics.update(_store_operations(run, outcome, answer_min, net.kind[ship_loc] == LocationKind.STORE, settlement))
    return SimulationResult(s, run.policy.name, metrics, orders, shipments, series, store_load, list(run.solves),
                            stock, wall_time_s, settlement)


def _final_locations(run: Run, live: np.ndarray, parent: np.ndarray) -> list[str | None]:
    """Where each parcel's lines ended up: its own location while it is live, else its replacements'."""
    ids = run.world.network.ids
    children: list[list[int]] = [[] for _ in range(len(parent))]
    for k, p in enumerate(parent.tolist()):
        if p >= 0:
            children[p].append(k)
    final: list[set[str]] = [set() for _ in range(len(parent))]
    # a replacement is always created after the parcel it replaces: walk backwards
    for k in range(len(parent) - 1, -1, -1):
        if live[k]:
            final[k] = {ids[run.ship_location[k]]}
        else:
            for c in children[k]:
                final[k] |= final[c]
    return ["+".join(sorted(x)) if x else None for x in final]


def _hours_or_null(seconds: np.ndarray) -> pa.Array:
    """Hours, null where an event never happened (NaN would make equal tables compare unequal)."""
    return pa.array(seconds / _HOUR, pa.float64(), mask=np.isnan(seconds))


def _hourly_series(run: Run, shipped: np.ndarray, picked_s: np.ndarray, ship_units: np.ndarray,
                   picked: np.ndarray) -> pa.Table:
    w = run.world
    hours = w.scenario.hours

    def per_hour(times: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        slot = np.minimum((times // _HOUR).astype(np.int64), hours - 1)
        return np.bincount(slot, weights=weights, minlength=hours)[:hours].astype(np.int64)

    ends = (np.arange(hours) + 1) * _HOUR
    arrived_by = np.searchsorted(w.arrival_s, ends, side="left")
    finished = np.sort(run.terminal_s[~np.isnan(run.terminal_s)])
    finished_by = np.searchsorted(finished, ends, side="left")
    state = run.state
    return pa.table({
        "hour": np.arange(hours, dtype=np.int32),
        "arrived": per_hour(w.arrival_s),
        "shipped": per_hour(run.terminal_s[shipped]),
        "cancelled": per_hour(run.terminal_s[state == OrderState.CANCELLED]),
        "stockout": per_hour(run.terminal_s[state == OrderState.STOCKOUT]),
        "backlog": (arrived_by - finished_by).astype(np.int64),
        "parcels_picked": per_hour(picked_s[picked]),
        "units_shipped": per_hour(picked_s[picked], ship_units[picked].astype(np.float64)),
    })


def _store_load(run: Run, loc: np.ndarray, units: np.ndarray, picked_s: np.ndarray) -> pa.Table:
    w = run.world
    net = w.network
    n = len(net)
    parcels = np.bincount(loc, minlength=n)
    peak_day = np.bincount(loc[picked_s <= 24 * _HOUR], minlength=n)
    # Capacity is per day, so load is measured per (calendar) day of picking: a store that picks its full
    # capacity on two days is at 1.0, not 2.0 (as parcels of the whole horizon / capacity made it).
    n_days = max(1, math.ceil(w.scenario.hours / 24))
    day = np.minimum((picked_s // (24 * _HOUR)).astype(np.int64), n_days - 1)
    per_day = np.bincount(loc * n_days + day, minlength=n * n_days).reshape(n, n_days)
    busiest = per_day.max(axis=1)
    capacity = net.daily_capacity.astype(np.float64)
    ships = w.pick_per_hour > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        utilisation = np.where(ships & (capacity > 0), busiest / capacity, 0.0)
        peak = np.where(ships & (capacity > 0), peak_day / capacity, 0.0)
    kinds = np.array(["", "store", "warehouse", "dark_store"], dtype=object)
    return pa.table({
        "location": pa.array(net.ids, pa.string()),
        "kind": pa.array(kinds[net.kind].tolist(), pa.string()),
        "city": pa.array(net.city, pa.string()),
        "lat": net.lat, "lon": net.lon,
        "ships": ships,
        "daily_capacity": net.daily_capacity.astype(np.int32),
        "parcels": parcels.astype(np.int64),
        "units": np.bincount(loc, weights=units, minlength=n).astype(np.int64),
        "utilisation": utilisation,
        "peak_day_utilisation": peak,
    })


def _stock_accounting(run: Run, ship_order: np.ndarray, ship_units: np.ndarray, live: np.ndarray) -> dict[str, int]:
    opening = int(run.world.stock.column("qty").to_numpy().sum())
    table = run.engine.stock_table()
    closing = int(table.column("on_hand").to_numpy().astype(np.int64).sum())
    reserved = int(table.column("reserved").to_numpy().astype(np.int64).sum())
    held = (run.state[ship_order] == OrderState.BACKLOG) & live & np.array(
        [run.reservation[i] is not None for i in ship_order.tolist()], dtype=bool)
    # ``shipped`` is what left the ledger: units of confirmed reservations, read from their final parcels.
    confirmed = (run.confirmations[ship_order] > 0) & live
    written_off = int(run.engine.discrepancies().column("units").to_numpy().astype(np.int64).sum())
    return {
        "opening": opening,
        "received": int(run.received_units),
        "shipped": int(ship_units[confirmed].sum()),
        "closing": closing,
        "written_off": written_off,
        "closing_reserved": reserved,
        "held_for_backlog": int(ship_units[held].sum()),
    }


def _settlement(run: Run) -> pa.Table:
    """The engine's settlement summed over the days, per party, largest net first (ties by party)."""
    daily = run.engine.settlement()
    sums = ["revenue_cents", "fee_cents", "coupon_cents", "returns_cents", "net_cents", "sales"]
    grouped = daily.group_by("party").aggregate([(c, "sum") for c in sums])
    party = grouped.column("party").to_pylist()
    net = run.world.network
    where = {x: i for i, x in enumerate(net.ids)}
    kind = [("hq" if p == HQ else "channel" if p.startswith(CHANNEL_PREFIX) else str(_KIND_NAMES[net.kind[where[p]]]))
            if p in where or p == HQ or p.startswith(CHANNEL_PREFIX) else "other" for p in party]
    city = [str(net.city[where[p]]) if p in where else "" for p in party]
    table = pa.table([pa.array(party, pa.string()), pa.array(kind, pa.string()), pa.array(city, pa.string())]
                     + [grouped.column(f"{c}_sum").cast(pa.int64()) for c in sums], schema=SETTLEMENT_SCHEMA)
    return table.sort_by([("net_cents", "descending"), ("party", "ascending")])


def _store_operations(run: Run, outcome: np.ndarray, answer_min: np.ndarray, store: np.ndarray,
                      settlement: pa.Table) -> dict[str, Any]:
    """The store-operation and settlement metrics (see the module docstring); ``store``: parcels at stores."""
    live_orders = run.state != OrderState.CANCELLED
    decided = live_orders & ~np.isnan(run.decided_s)
    answered = store & ((outcome == ParcelOutcome.ACCEPTED) | (outcome == ParcelOutcome.REJECTED))
    judged = int((answered | (store & (outcome == ParcelOutcome.TIMED_OUT))).sum())
    accepted = outcome == ParcelOutcome.ACCEPTED
    minutes = answer_min[answered]
    late = np.array(run.ship_late, dtype=bool)

    def share(count: int, of: int) -> float | None:
        return float(count / of) if of else None

    def pct(q: float) -> float | None:
        return float(np.percentile(minutes, q)) if len(minutes) else None

    n_live = int(live_orders.sum())
    return {
        "reroutes": int(run.reroutes[live_orders].sum()),
        "reroutes_per_100_orders": float(100.0 * run.reroutes[live_orders].sum() / n_live) if n_live else None,
        "orders_rerouted_share": share(int((run.reroutes[decided] > 0).sum()), int(decided.sum())),
        "rejected_share": share(int((store & (outcome == ParcelOutcome.REJECTED)).sum()), judged),
        "timed_out_share": share(int((store & (outcome == ParcelOutcome.TIMED_OUT)).sum()), judged),
        "answer_p50_min": pct(50),
        "answer_p95_min": pct(95),
        "late_share": share(int((late & accepted).sum()), int(accepted.sum())),
        "refunded_orders": int(sum(r is not None and r != "no shippable stock" and not r.startswith(BACKORDER_PREFIX)
                                   for r in run.end_reason)),
        "attribution_rule": run.rule.key,
        "settlement_total_cents": int(sum(settlement.column("net_cents").to_pylist())),
        "coupon_cents": int(run.world.coupon_cents[run.state == OrderState.SHIPPED].sum()),
    }


def _metrics(run: Run, units: np.ndarray, units_shipped: np.ndarray, shipped: np.ndarray, km: np.ndarray,
             store_load: pa.Table, wall_time_s: float) -> dict[str, Any]:
    w = run.world
    state = run.state
    live = state != OrderState.CANCELLED
    n_live = int(live.sum())
    n_shipped = int(shipped.sum())
    stockout = state == OrderState.STOCKOUT
    backlog = state == OrderState.BACKLOG
    lead_h = (run.terminal_s[shipped] - w.arrival_s[shipped]) / _HOUR
    store_rows = np.array([k == "store" for k in store_load.column("kind").to_pylist()], dtype=bool)
    ships = store_load.column("ships").to_numpy(zero_copy_only=False)
    parcels = store_load.column("parcels").to_numpy()
    util = store_load.column("utilisation").to_numpy()[store_rows & ships]
    store_parcels = parcels[store_rows & ships]
    warehouse_parcels = int(parcels[np.array([k == "warehouse" for k in store_load.column("kind").to_pylist()],
                                             dtype=bool)].sum())
    stockout_skus = {int(sku) for i in np.flatnonzero(stockout).tolist() for sku in w.lines_of(i)[0].tolist()}
    total_cost = float(np.where(shipped, run.cost_model_total, 0.0).sum())
    fulfilment_cost = float(
        sum(run.ship_fixed[k] + run.ship_distance_cost[k] for k in range(len(run.ship_order))
            if shipped[run.ship_order[k]] and run.ship_live[k]))       # the parcels that went, not the re-routed
    gaps = [x["applied_gap"] for x in run.solves if math.isfinite(x.get("applied_gap", math.nan))]
    # each round's applied plan against the real-time router's plan of the same backlog, on the optimiser's basis
    priced = [(a, g) for a, g in ((x.get("applied_objective", math.nan), x.get("greedy_objective", math.nan))
                                  for x in run.solves) if math.isfinite(a) and math.isfinite(g)]
    greedy_total = sum(g for _, g in priced)

    def ratio(a: float, b: float) -> float | None:
        return float(a / b) if b else None

    def pct(values: np.ndarray, q: float) -> float | None:
        return float(np.percentile(values, q)) if len(values) else None

    return {
        "policy": run.policy.name,
        "orders": len(w.orders),
        "units_ordered": int(units.sum()),
        "shipped_orders": n_shipped,
        "cancelled_orders": int((state == OrderState.CANCELLED).sum()),
        "stockout_orders": int(stockout.sum()),
        "backlog_orders": int(backlog.sum()),
        "backorder_expired_orders": int(sum(r is not None and r.startswith(BACKORDER_PREFIX)
                                            for r in run.end_reason)),
        "fill_rate": ratio(float(units_shipped.sum()), float(units[live].sum())),
        "order_fill_rate": ratio(n_shipped, n_live),
        "split_rate": ratio(float(run.n_shipments[shipped].sum()), n_shipped),
        "split_share": ratio(float((run.n_shipments[shipped] > 1).sum()), n_shipped),
        "mean_km": float(km.mean()) if len(km) else None,
        "p95_km": pct(km, 95),
        "total_cost": total_cost,
        "fulfilment_cost": fulfilment_cost,
        "cost_per_order": ratio(total_cost, n_shipped),
        "fulfilment_cost_per_order": ratio(fulfilment_cost, n_shipped),
        "hours_to_clear": None if backlog.any() else float(np.nanmax(run.terminal_s) / _HOUR),
        "horizon_hours": int(w.scenario.hours),
        "mean_lead_time_h": float(lead_h.mean()) if len(lead_h) else None,
        "p95_lead_time_h": pct(lead_h, 95),
        "stockout_units": int(units[stockout].sum()),
        "stockout_skus": len(stockout_skus),
        "warehouse_parcel_share": ratio(warehouse_parcels, float(parcels.sum())),
        "shipping_stores": int(len(util)),
        "idle_store_share": ratio(float((store_parcels == 0).sum()), len(store_parcels)),
        "store_utilisation_p10": pct(util, 10),
        "store_utilisation_p50": pct(util, 50),
        "store_utilisation_p90": pct(util, 90),
        "store_load_gini": _gini(store_parcels),
        "solves": len(run.solves),
        "solver_time_s": float(sum(x["wall_time_s"] for x in run.solves)),
        "max_gap": max(gaps) if gaps else None,
        "optimiser_plan_share": ratio(sum(str(x.get("plan", "")).startswith("optimiser") for x in run.solves),
                                      len(run.solves)),
        "plan_cost_vs_greedy": (sum(a for a, _ in priced) / greedy_total - 1.0) if greedy_total > 0 else None,
        "wall_time_s": float(wall_time_s),
    }


def _gini(values: np.ndarray) -> float | None:
    """Gini coefficient of the load across stores: 0 = every store equally busy, 1 = one store does it all."""
    if not len(values) or values.sum() == 0:
        return None
    v = np.sort(values.astype(np.float64))
    n = len(v)
    return float((2 * np.arange(1, n + 1) - n - 1) @ v / (n * v.sum()))

