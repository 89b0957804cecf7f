"""The discrete-time peak simulation: one engine, one policy, one clock.

Each step of ``step_minutes`` runs in a fixed order, so a run is a pure
function of its scenario and policy:

1. at the carrier cut-off a new business day starts (:meth:`pyomni.Engine.new_day`:
   confirmed shipments stop counting toward capacity); at replenishment hours
   every store receives a share of what it shipped since the last one;
2. in time order: the orders that arrive reach the policy, the stores answer
   the shipments whose answer time has come, shipments nobody answered reach
   the answer limit -- the engine times them out and re-routes them on its
   own (:meth:`pyomni.Engine.expire_due`; the run learns what it did from the
   stores' event feed, :meth:`pyomni.Engine.store_events`) -- and customers
   cancel (an order not yet picked is released and ends CANCELLED);
3. the store side catches up: whatever else came due by the step's end;
4. the policy may decide at the step's end (the batch policies' rounds);
5. every location picks, first released first, as many accepted shipments
   as its hourly capacity allows (stores only during their opening hours); an
   order whose last parcel is picked is confirmed in the engine, its parcels
   are handed to the courier, and it ends SHIPPED.

Store operations. Every parcel the engine routes is a shipment on its
location's feed (:mod:`pyomni.fulfilment`) and enters the location's pick
queue only once the location accepted it. Each store's median answer time
is drawn once (:class:`~pyomni.sim.world.World`); each shipment draws its
delay around it, in minutes of the store's opening hours (a parcel routed at
night is answered after the store opens), and whether the store accepts it,
rejects it (a reason drawn from NOT_FOUND, NO_STAFF, DAMAGED, OVER_CAPACITY)
or never answers. Warehouses answer through their warehouse system: at once,
and they take what they are sent. A rejection re-routes the lines at once
(:meth:`pyomni.Engine.reject_shipment`); silence (or an answer slower than
the limit) is timed out by the engine's answer limit, in opening hours, and
re-routed by the engine itself. When nothing can
take the lines, the order exception is resolved ("customer refunded"), the
order's hold released, and the order ends STOCKOUT with the exception's
reason. An order that no plan serves (its stock is in the network, out of
the policy's reach) waits, retried, for the scenario's ``backorder_hours``,
then ends STOCKOUT with the router's reason (:meth:`Run.expire_backorders`).
Holds stay HELD until the order's last parcel is picked; then the
reservation is confirmed and each parcel, packed at its pick, is shipped:
the engine books the sale facts its settlement is computed from, credited by
the scenario's attribution rule (:mod:`pyomni.settlement`).

Why the business day turns at the cut-off and not at midnight: an order that
arrives after the cut-off is picked the next day, so it must be booked
against the next day's capacity. With the day turning at midnight, the
evening's orders were refused by every store whose day was full of today's
picks -- though those stores pick them tomorrow -- and went to far stores and
warehouses (measured, greedy on 100 stores / 15,000 orders: 25.6 per order
for orders of 00:00-02:00, 51.2 for those of 20:00-22:00). From one cut-off
to the next a store picks during exactly its opening hours, so the engine's
daily capacity is the picking it can do for the orders it accepts that day.

The engine is the single source of truth for stock: reservations hold units
from the decision until the pick, confirmation consumes them, cancellation
releases them. Its clock is the simulation clock -- 0.0 is 00:00 of day one,
and the store rules use UTC offset 0, so a store's local time is simulation
time -- and reservations live longer than the horizon, so nothing expires
behind the simulation's back.

Examples
--------
>>> from pyomni.sim import preset, simulate
>>> result = simulate(preset("small", orders=200, stores=20, hours=30), "greedy")
>>> result.metrics["orders"], 0.0 <= result.metrics["fill_rate"] <= 1.0
(200, True)
>>> result.metrics["settlement_total_cents"] == sum(result.settlement.column("net_cents").to_pylist())
True
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import errors
from ..engine import Engine
from ..fulfilment import (
    OpeningHours,
    OrderException,
    RejectReason,
    ShipmentState,
    StoreEvent,
    StoreRules,
    StoreShipment,
)
from ..model import Allocation, CostBreakdown, LocationKind, ReservationState
from ..policy import DEFAULT_POLICY
from ..settlement import FULFILLER_TAKES_ALL, REGIONAL, SPLIT_361, AttributionRule
from .policies import Policy, make_policy
from .results import BACKORDER_PREFIX, OrderState, ParcelOutcome, SimulationResult, summarise
from .scenario import Scenario
from .world import ANSWER_SIGMA_SHIPMENT, World, build_world

__all__ = ["simulate", "compare_policies", "Run", "REJECT_REASONS", "attribution_rule", "opening_seconds"]

_HOUR = 3_600.0
_DAY = 86_400.0
# Holds must outlive any horizon (at most 60 days): the simulation, not the TTL, ends them.
_RESERVATION_TTL_S = 90 * _DAY
#: Why stores reject, and how often (weights): the shelf is empty, nobody to pick, the item is damaged, too busy.
REJECT_REASONS: tuple[tuple[RejectReason, float], ...] = (
    (RejectReason.NOT_FOUND, 0.35), (RejectReason.NO_STAFF, 0.25), (RejectReason.DAMAGED, 0.10),
    (RejectReason.OVER_CAPACITY, 0.30))
_REASON_CUMULATIVE = np.cumsum([w for _, w in REJECT_REASONS]) / sum(w for _, w in REJECT_REASONS)
_ACCEPT, _REJECT = 1, 2
_REFUND_NOTE = "customer refunded"
# the store-event kinds the run follows
_ROUTED, _REJECTED, _CANCELLED = ShipmentState.ROUTED.name, ShipmentState.REJECTED.name, ShipmentState.CANCELLED.name
_LATE = "LATE"
_FEED_LIMIT = 10_000


def attribution_rule(world: World) -> AttributionRule:
    """The attribution rule the scenario names (``regional``: each province's best-stocked store is home).

    Examples
    --------
    >>> from pyomni.sim import build_world, preset
    >>> attribution_rule(build_world(preset("small", orders=10))).key
    'split-361@1'
    >>> rule = attribution_rule(build_world(preset("small", orders=10, attribution="regional")))
    >>> rule.name, rule.home, len(rule.regional_stores) > 0
    ('regional-by-stock', 'region', True)
    """
    name = world.scenario.attribution
    if name == "fulfiller":
        return FULFILLER_TAKES_ALL
    if name == "split-361":
        return SPLIT_361
    return dataclasses.replace(REGIONAL, name="regional-by-stock", regional_stores=world.regional_stores)


def opening_seconds(hours: OpeningHours, start: float, end: float) -> float:
    """Seconds of opening time between ``start`` and ``end`` (the inverse of :meth:`OpeningHours.advance`).

    For the simulation's opening hours: the same every day, no closed weekdays.

    Examples
    --------
    >>> h = OpeningHours(480, 1380, utc_offset_minutes=0)      # 08:00-23:00
    >>> opening_seconds(h, 7 * 3600.0, 8.5 * 3600.0) / 60      # 07:00 to 08:30
    30.0
    >>> opening_seconds(h, 22.5 * 3600.0, 32.25 * 3600.0) / 60  # 22:30 to 08:15 the next day
    45.0
    """
    if end <= start:
        return 0.0
    offset = hours.utc_offset_minutes * 60.0
    total = 0.0
    for day in range(math.floor((start + offset) / _DAY), math.floor((end + offset) / _DAY) + 1):
        lo = day * _DAY - offset + hours.open_minute * 60.0
        hi = day * _DAY - offset + hours.close_minute * 60.0
        total += max(0.0, min(hi, end) - max(lo, start))
    return total


class Run:
    """The state of one simulation run; policies act on it through its methods.

    Not constructed directly: :func:`simulate` builds one per policy.
    """

    def __init__(self, world: World, policy: Policy, *, solver_workers: int | None = None) -> None:
        self.world = world
        self.policy = policy
        self.routing_policy = DEFAULT_POLICY.key
        self.solver_workers = solver_workers
        self.now = 0.0
        s = world.scenario
        self.engine = Engine(world.network, clock=lambda: self.now, reservation_ttl=_RESERVATION_TTL_S)
        self.engine.apply_stock_events(world.stock)
        n = len(world.orders)
        self.order_index = {o.id: i for i, o in enumerate(world.orders)}
        self.state = np.zeros(n, dtype=np.int8)  # OrderState.OPEN
        self.reservation: list[str | None] = [None] * n
        self.decided_s = np.full(n, math.nan)
        self.terminal_s = np.full(n, math.nan)
        self.n_shipments = np.zeros(n, dtype=np.int32)   # the order's live parcels (re-routed ones replaced)
        self.n_picked = np.zeros(n, dtype=np.int32)
        self.confirmations = np.zeros(n, dtype=np.int32)
        self.cost_model_total = np.zeros(n)              # the cost model's price of its live parcels
        self.reroutes = np.zeros(n, dtype=np.int32)      # parcels of the order rejected or timed out
        self.first_answer_min = np.full(n, math.nan)     # its first answer, minutes of opening time
        self.end_reason: list[str | None] = [None] * n
        self.parcels_of: list[list[int]] = [[] for _ in range(n)]
        self.waiting: dict[int, None] = {}  # insertion-ordered set of orders waiting for a decision
        # shipments, one entry per parcel (columns appended as parcels are planned or re-routed)
        self.ship_order: list[int] = []
        self.ship_location: list[int] = []
        self.ship_units: list[int] = []
        self.ship_km: list[float] = []
        self.ship_fixed: list[float] = []
        self.ship_distance_cost: list[float] = []
        self.ship_cost_total: list[float] = []     # the cost model's price of the parcel when it was routed
        self.ship_picked_s: list[float] = []
        self.ship_lines: list[tuple[tuple[int, int], ...]] = []
        self.ship_id: list[str] = []
        self.ship_parent: list[int] = []         # the parcel it replaced (-1: planned with the order)
        self.ship_routed_s: list[float] = []
        self.ship_due_s: list[float] = []        # the answer limit, as the engine computes it
        self.ship_answered_s: list[float] = []
        self.ship_answer_min: list[float] = []   # minutes of opening time from routing to the answer
        self.ship_ended_s: list[float] = []      # when it was rejected, timed out or cancelled
        self.ship_outcome: list[int] = []
        self.ship_reason: list[str] = []
        self.ship_late: list[bool] = []
        self.ship_live: list[bool] = []          # it carries lines of its order (not replaced, not cancelled)
        self._parcel_index: dict[str, int] = {}
        self._unshipped: dict[int, None] = {}    # live parcels not yet handed to the courier
        self._answers: list[tuple[float, int, int, int]] = []   # (time, parcel, action, reason)
        self._deadlines: list[tuple[float, int]] = []            # (answer limit, parcel) of parcels nobody answers
        self._rng = np.random.default_rng(world.answer_seed)
        self._store_seq = 0
        self._timeouts_seen = False
        self._last_timed_out: dict[str, int] = {}   # reservation id -> its parcel that timed out last
        self._queues: list[list[tuple[float, int]]] = [[] for _ in range(len(world.network))]
        self._pick_credit = np.zeros(len(world.network))
        self._shipped_since_replenish: defaultdict[tuple[int, int], int] = defaultdict(int)
        self.received_units = 0
        self.solves: list[dict[str, Any]] = []
        self.solve_count = 0
        self._loc_index = {x: i for i, x in enumerate(world.network.ids)}
        self._sku_index = {x: i for i, x in enumerate(world.network.skus)}
        self._shippable = world.pick_per_hour > 0
        self._answers_by_hand = world.network.kind == LocationKind.STORE     # the others run a warehouse system
        self.rule = attribution_rule(world)
        self.hours = self._configure_store_side(s)

    def _configure_store_side(self, s: Scenario) -> list[OpeningHours]:
        """Store rules (answer limit in opening hours) and the attribution rule; each location's hours."""
        open_h, close_h = s.store_hours
        store_hours = OpeningHours(open_h * 60, close_h * 60, utc_offset_minutes=0)
        all_day = OpeningHours(0, 1440, utc_offset_minutes=0)
        answer_s = s.answer_limit_minutes * 60.0
        self.engine.set_store_rules(None, StoreRules(store_hours, answer_s=answer_s))
        for loc in np.flatnonzero(self.world.picks_all_day).tolist():
            self.engine.set_store_rules(self.world.network.ids[loc], StoreRules(all_day, answer_s=answer_s))
        self.engine.register_attribution_rule(self.rule)
        self.engine.set_attribution(None, self.rule.key)
        self._answer_limit_s = answer_s
        return [all_day if x else store_hours for x in self.world.picks_all_day.tolist()]

    # -- what policies call ------------------------------------------------------------
    def accept(self, i: int, allocation: Allocation, now: float) -> None:
        """Order ``i`` is planned: its parcels go to their locations, which answer in their own time.

        The engine names a reservation's shipments ``"<reservation id>-<n>"``, n = 1, 2, ... in the order of
        ``allocation.shipments``.
        """
        if self.state[i] != OrderState.OPEN or self.reservation[i] is not None:
            raise errors.InvariantViolation(f"order {self.world.orders[i].id} is decided twice")
        rid = allocation.reservation_id
        if rid is None:
            raise errors.InvariantViolation(f"order {self.world.orders[i].id} is planned without a reservation")
        self.waiting.pop(i, None)
        self.reservation[i] = rid
        self.decided_s[i] = now
        self.cost_model_total[i] = allocation.total_cost
        for n, shipment in enumerate(allocation.shipments, start=1):
            loc = self._loc_index[shipment.location]
            lines = tuple((self._sku_index[line.sku], int(line.qty)) for line in shipment.lines)
            due = self.hours[loc].advance(self.now, self._answer_limit_s)      # as the engine schedules it
            self._add_parcel(i, f"{rid}-{n}", loc, lines, float(shipment.distance_km), shipment.cost, self.now, due,
                             -1)

    def wait(self, i: int) -> None:
        """Order ``i`` waits for a later decision."""
        self.waiting[i] = None

    def stock_out(self, i: int, now: float) -> None:
        """Order ``i`` cannot be served: the network has no shippable stock for one of its lines."""
        self.waiting.pop(i, None)
        self.end_reason[i] = "no shippable stock"
        self._end(i, OrderState.STOCKOUT, now)

    def covers_order(self, i: int, allocation: Allocation) -> bool:
        """True when ``allocation`` ships exactly the units order ``i`` asked for."""
        return self.covers_lines(i, ((line.sku, line.qty) for shipment in allocation.shipments
                                     for line in shipment.lines))

    def covers_lines(self, i: int, lines: Iterable[tuple[str, int]]) -> bool:
        """True when ``lines`` (sku, qty) add up to exactly the units order ``i`` asked for."""
        wanted: dict[str, int] = defaultdict(int)
        for line in self.world.orders[i].lines:
            wanted[line.sku] += line.qty
        got: dict[str, int] = defaultdict(int)
        for sku, qty in lines:
            got[sku] += qty
        return got == wanted

    def is_stock_out(self, i: int) -> bool:
        """True when some line of order ``i`` exceeds what all shipping locations have available."""
        skus, qtys = self.world.lines_of(i)
        for sku, qty in zip(skus.tolist(), qtys.tolist(), strict=True):
            table = self.engine.availability(self.world.network.skus[sku])
            locations = np.array([self._loc_index[x] for x in table.column("location").to_pylist()], dtype=np.int64)
            available = table.column("available").to_numpy()
            if not len(locations) or int(available[self._shippable[locations]].sum()) < qty:
                return True
        return False

    def backlog_table(self, orders: Sequence[int]) -> pa.Table:
        """Orders as the optimiser takes them: one row per line (order_id, sku, qty, lat, lon)."""
        w = self.world
        idx = np.asarray(orders, dtype=np.int64)
        counts = w.line_start[idx + 1] - w.line_start[idx]
        rows = np.repeat(idx, counts)
        line = np.concatenate([np.arange(w.line_start[i], w.line_start[i + 1]) for i in idx]) if len(idx) else idx
        ids = np.array([o.id for o in w.orders], dtype=object)
        skus = np.array(w.network.skus, dtype=object)
        return pa.table({
            "order_id": pa.array(ids[rows].tolist(), pa.string()),
            "sku": pa.array(skus[w.line_sku[line]].tolist(), pa.string()),
            "qty": pa.array(w.line_qty[line], pa.int32()),
            "lat": pa.array(w.lat[rows], pa.float64()),
            "lon": pa.array(w.lon[rows], pa.float64()),
        })

    # -- parcels -------------------------------------------------------------------------
    def _add_parcel(self, i: int, sid: str, loc: int, lines: tuple[tuple[int, int], ...], km: float,
                    cost: CostBreakdown, routed_at: float, due: float, parent: int) -> int:
        k = len(self.ship_order)
        self.ship_order.append(i)
        self.ship_location.append(loc)
        self.ship_units.append(sum(q for _, q in lines))
        self.ship_km.append(km)
        self.ship_fixed.append(float(cost.fixed))
        self.ship_distance_cost.append(float(cost.distance))
        self.ship_cost_total.append(float(cost.total))
        self.ship_picked_s.append(math.nan)
        self.ship_lines.append(lines)
        self.ship_id.append(sid)
        self.ship_parent.append(parent)
        self.ship_routed_s.append(routed_at)
        self.ship_due_s.append(due)
        self.ship_answered_s.append(math.nan)
        self.ship_answer_min.append(math.nan)
        self.ship_ended_s.append(math.nan)
        self.ship_outcome.append(ParcelOutcome.WAITING)
        self.ship_reason.append("")
        self.ship_late.append(False)
        self.ship_live.append(True)
        self._parcel_index[sid] = k
        self._unshipped[k] = None
        self.parcels_of[i].append(k)
        self.n_shipments[i] += 1
        self._draw_answer(k)
        return k

    def _draw_answer(self, k: int) -> None:
        """When and how the parcel's location answers (always the same three draws, so runs stay in step).

        Stores answer after a drawn delay and may reject or stay silent; warehouses and dark stores answer
        through their warehouse system: at once, and they take what the engine sends them.
        """
        s = self.world.scenario
        loc = self.ship_location[k]
        u, pick_reason = self._rng.random(2)
        z = self._rng.standard_normal()
        if not self._answers_by_hand[loc]:
            heapq.heappush(self._answers, (self.ship_routed_s[k], k, _ACCEPT, 0))
            return
        if u < s.reject_share:
            why = REJECT_REASONS[int(np.searchsorted(_REASON_CUMULATIVE, pick_reason, side="right"))][0]
            action, reason = _REJECT, int(why)
        elif u < s.reject_share + s.no_answer_share:
            heapq.heappush(self._deadlines, (self.ship_due_s[k], k))   # silence: the answer limit times it out
            return
        else:
            action, reason = _ACCEPT, 0
        delay_s = 60.0 * float(self.world.answer_median_min[loc]) * math.exp(ANSWER_SIGMA_SHIPMENT * z)
        at = self.hours[loc].advance(self.ship_routed_s[k], delay_s)
        if at >= self.ship_due_s[k]:
            heapq.heappush(self._deadlines, (self.ship_due_s[k], k))   # too slow: it times out first
            return
        heapq.heappush(self._answers, (at, k, action, reason))

    def _void(self, k: int, at: float, outcome: ParcelOutcome | None, *, replaced: bool) -> None:
        """The parcel no longer carries lines of its order (``replaced``: its lines were re-routed)."""
        if not self.ship_live[k]:
            return
        self.ship_live[k] = False
        self.ship_ended_s[k] = at
        self._unshipped.pop(k, None)
        if outcome is not None and (outcome is not ParcelOutcome.CANCELLED
                                    or self.ship_outcome[k] == ParcelOutcome.WAITING):
            self.ship_outcome[k] = outcome
        if replaced:
            i = self.ship_order[k]
            self.n_shipments[i] -= 1
            self.reroutes[i] += 1
            self.cost_model_total[i] -= self.ship_cost_total[k]

    def _add_rerouted(self, i: int, shipments: Sequence[StoreShipment], parent: int) -> None:
        """New shipments the engine routed for order ``i``'s lines become parcels (priced as the engine did)."""
        priced = {sh.location: sh for sh in self.engine.reservation(shipments[0].reservation_id).shipments}
        for s in shipments:
            loc = self._loc_index[s.location]
            sh = priced[s.location]
            due = s.due_at if s.due_at is not None else self.hours[loc].advance(s.created_at, self._answer_limit_s)
            self._add_parcel(i, s.id, loc, tuple((self._sku_index[x.sku], int(x.qty)) for x in s.lines),
                             float(sh.distance_km), sh.cost, s.created_at, due, parent)
            self.cost_model_total[i] += float(sh.cost.total)

    def _give_up(self, exc: OrderException) -> None:
        """Nothing can take an order's re-routed lines: refund the customer, release the hold, end STOCKOUT."""
        self.engine.resolve_exception(exc.id, note=_REFUND_NOTE)
        i = self.order_index.get(exc.order_id)
        if i is None or self.state[i] != OrderState.OPEN or self.reservation[i] != exc.reservation_id:
            return
        held = self.engine.reservation(exc.reservation_id)
        if held.state is not ReservationState.HELD:
            raise errors.InvariantViolation(f"order {exc.order_id} lost lines after its reservation was "
                                            f"{held.state.name}")
        self.engine.release(exc.reservation_id)
        for k in self.parcels_of[i]:
            self._void(k, self.now, ParcelOutcome.CANCELLED, replaced=False)
        self.end_reason[i] = exc.reason
        self._end(i, OrderState.STOCKOUT, self.now)

    # -- the stores ----------------------------------------------------------------------
    def next_answer_at(self) -> float:
        """When the next store answer comes (inf: none pending)."""
        return self._answers[0][0] if self._answers else math.inf

    def answer_next(self) -> None:
        """The next store answer: accept (the parcel joins the pick queue) or reject (the engine re-routes)."""
        at, k, action, reason = heapq.heappop(self._answers)
        self.now = max(self.now, at)
        i = self.ship_order[k]
        if not self.ship_live[k] or self.ship_outcome[k] != ParcelOutcome.WAITING or self.state[i] != OrderState.OPEN:
            return
        if self.now >= self.ship_due_s[k]:
            return                  # learnt of the parcel too late to answer in time: the engine times it out
        loc = self.ship_location[k]
        self.ship_answered_s[k] = self.now
        minutes = opening_seconds(self.hours[loc], self.ship_routed_s[k], self.now) / 60.0
        self.ship_answer_min[k] = minutes
        if self.ship_parent[k] < 0 and math.isnan(self.first_answer_min[i]):
            self.first_answer_min[i] = minutes
        sid = self.ship_id[k]
        if action == _ACCEPT:
            self.engine.accept_shipment(sid)
            self.ship_outcome[k] = ParcelOutcome.ACCEPTED
            heapq.heappush(self._queues[loc], (max(float(self.world.release_s[i]), self.now), k))
            return
        why = RejectReason(reason)
        rejection = self.engine.reject_shipment(sid, why)
        self.ship_reason[k] = why.name
        self._void(k, self.now, ParcelOutcome.REJECTED, replaced=True)
        if rejection.new_shipments:
            self._add_rerouted(i, rejection.new_shipments, k)
        if rejection.exception is not None:
            self._give_up(rejection.exception)

    def next_timeout_at(self) -> float:
        """When the next parcel nobody answers reaches its answer limit (inf: none pending)."""
        return self._deadlines[0][0] if self._deadlines else math.inf

    def timeout_next(self) -> None:
        """The next unanswered parcel reaches its limit: the engine times it out and re-routes it, now.

        The engine fires a deadline with the first command at or after it; running its clock here, at the
        deadline, makes the time-out and the re-route happen on time (and the run learn of them at once).
        """
        due, k = heapq.heappop(self._deadlines)
        if not self.ship_live[k] or self.ship_outcome[k] != ParcelOutcome.WAITING:
            return
        self.now = max(self.now, due)
        self.engine.expire_due()
        self._read_store_events()

    def catch_up(self, end: float) -> None:
        """The store side's own doings up to ``end``: time-outs and their re-routes, read from the feeds;
        then the answers due before ``end`` that this brought."""
        self.engine.expire_due()
        self._read_store_events()
        while self._answers and self._answers[0][0] < end:
            self.answer_next()

    def _read_store_events(self) -> None:
        ids = self.world.network.ids
        while True:
            got = self.engine.store_events(ids, self._store_seq, limit=_FEED_LIMIT)
            if got.reset:
                self._reconcile(got.events)
            else:
                for event in got.events:
                    self._on_store_event(event)
            self._store_seq = got.last_seq
            if got.reset or len(got.events) < _FEED_LIMIT:
                break
        if self._timeouts_seen:
            self._timeouts_seen = False
            for exc in self.engine.order_exceptions():
                self._give_up(exc)

    def _on_store_event(self, event: StoreEvent) -> None:
        s = event.shipment
        k = self._parcel_index.get(s.id)
        if event.kind == _ROUTED:
            if k is None:
                self._routed(s)
        elif event.kind in (_REJECTED, _CANCELLED):
            if k is not None:
                self._ended(k, s)
        elif event.kind == _LATE and k is not None:
            self.ship_late[k] = True

    def _reconcile(self, open_now: Sequence[StoreEvent]) -> None:
        """A feed reset (the first read; or events lost): the open shipments of every store, as they are now."""
        current = {e.shipment.id: e.shipment for e in open_now}
        for k in list(self._unshipped):
            if self.ship_id[k] not in current:
                self._ended(k, self.engine.shipment(self.ship_id[k]))
        for s in sorted(current.values(), key=lambda x: (x.created_at, x.id)):
            if s.id not in self._parcel_index:
                self._routed(s)

    def _routed(self, s: StoreShipment) -> None:
        """A shipment the engine routed on its own (a time-out's re-route) for a live order: a new parcel."""
        i = self.order_index.get(s.order_id)
        if i is None or self.state[i] != OrderState.OPEN or self.reservation[i] != s.reservation_id:
            return          # a hold the policy let go of (a partial plan), or an order that ended meanwhile
        self._add_rerouted(i, [s], self._last_timed_out.get(s.reservation_id, -1))

    def _ended(self, k: int, s: StoreShipment) -> None:
        """The engine ended a parcel: timed out (and re-routed), or cancelled with its reservation."""
        if not self.ship_live[k]:
            return
        if s.state is ShipmentState.REJECTED:
            timed_out = s.reason is RejectReason.TIMEOUT
            self.ship_reason[k] = s.reason.name if s.reason is not None else ""
            self._void(k, s.updated_at, ParcelOutcome.TIMED_OUT if timed_out else ParcelOutcome.REJECTED,
                       replaced=True)
            self._last_timed_out[s.reservation_id] = k
            self._timeouts_seen = True
        elif s.state is ShipmentState.CANCELLED:
            self._void(k, s.updated_at, ParcelOutcome.CANCELLED, replaced=False)

    # -- the clock -------------------------------------------------------------------
    def _end(self, i: int, state: OrderState, now: float) -> None:
        if self.state[i] != OrderState.OPEN:
            raise errors.InvariantViolation(f"order {self.world.orders[i].id} ends twice")
        self.state[i] = state
        self.terminal_s[i] = now

    def cancel(self, i: int, now: float) -> None:
        """The customer cancels order ``i``; too late once a parcel has been picked."""
        if self.state[i] != OrderState.OPEN or self.n_picked[i] > 0:
            return
        self.waiting.pop(i, None)
        rid = self.reservation[i]
        if rid is not None:
            self.engine.release(rid)
            for k in self.parcels_of[i]:
                self._void(k, now, ParcelOutcome.CANCELLED, replaced=False)
        self._end(i, OrderState.CANCELLED, now)

    def pick(self, start: float, end: float) -> None:
        """Every location picks what its capacity allows during ``[start, end)``."""
        w = self.world
        hour = (start % _DAY) / _HOUR
        open_h, close_h = w.scenario.store_hours
        stores_pick = open_h <= hour < close_h
        hours = (end - start) / _HOUR
        for loc, queue in enumerate(self._queues):
            if not queue or not (stores_pick or w.picks_all_day[loc]):
                continue
            credit = self._pick_credit[loc] + w.pick_per_hour[loc] * hours
            while queue and credit >= 1.0 and queue[0][0] < end:
                _, k = heapq.heappop(queue)
                i = self.ship_order[k]
                if self.state[i] != OrderState.OPEN or not self.ship_live[k]:
                    continue  # cancelled before the pick: costs no picking capacity
                credit -= 1.0
                self._picked(k, i, end)
            # Unused capacity does not bank: a store idle in the morning cannot pick double at night.
            self._pick_credit[loc] = min(credit, 1.0)

    def _picked(self, k: int, i: int, now: float) -> None:
        self.ship_picked_s[k] = now
        self.engine.pack_shipment(self.ship_id[k])
        loc = self.ship_location[k]
        if self.world.network.kind[loc] == LocationKind.STORE:
            for sku, qty in self.ship_lines[k]:
                self._shipped_since_replenish[loc, sku] += qty
        self.n_picked[i] += 1
        if self.n_picked[i] == self.n_shipments[i]:
            self.engine.confirm(self.reservation[i])  # type: ignore[arg-type]
            self.confirmations[i] += 1
            for parcel in self.parcels_of[i]:
                if self.ship_live[parcel]:
                    self.engine.ship_shipment(self.ship_id[parcel])    # the goods leave: the sale is booked
                    self._unshipped.pop(parcel, None)
            self._end(i, OrderState.SHIPPED, now)

    def replenish(self) -> None:
        """Stores receive ``replenish_share`` of what they shipped since the last replenishment."""
        share = self.world.scenario.replenish_share
        ids, skus = self.world.network.ids, self.world.network.skus
        rows = [(ids[loc], skus[sku], math.floor(share * qty + 0.5))
                for (loc, sku), qty in sorted(self._shipped_since_replenish.items())]
        self._shipped_since_replenish.clear()
        rows = [r for r in rows if r[2] > 0]
        if not rows:
            return
        locations, sku_ids, qtys = zip(*rows, strict=True)
        self.engine.apply_stock_events(pa.table({
            "location": pa.array(locations, pa.string()), "sku": pa.array(sku_ids, pa.string()),
            "event": pa.array(["receive"] * len(rows), pa.string()), "qty": pa.array(qtys, pa.int64()),
        }))
        self.received_units += int(sum(qtys))

    def expire_backorders(self, now: float) -> None:
        """Orders waiting longer than the scenario's ``backorder_hours`` that no plan serves end STOCKOUT.

        Each is quoted under the run's routing policy first: one the router could place now stays waiting
        for its policy (a batch policy's next round); one it cannot place is refunded, with the router's
        reason (each short line: SKU, units it could get of those asked, why).
        """
        if not self.waiting:
            return
        limit = self.world.scenario.backorder_hours * _HOUR
        arrival = self.world.arrival_s
        overdue = [i for i in self.waiting if now - float(arrival[i]) >= limit]
        for i in overdue:
            quote = self.engine.quote(self.world.orders[i], policy=self.routing_policy)
            if quote.ok:
                continue
            self.waiting.pop(i, None)
            short = "; ".join(f"{x.sku} {x.allocatable} of {x.requested} {x.reason}" for x in quote.short_lines)
            self.end_reason[i] = f"{BACKORDER_PREFIX}{self.world.scenario.backorder_hours:g} h: {short}"
            self._end(i, OrderState.STOCKOUT, now)

    def finish(self) -> None:
        """End of the horizon: orders still open end in BACKLOG (their holds stay in the ledger)."""
        self.waiting.clear()
        for i in np.flatnonzero(self.state == OrderState.OPEN).tolist():
            self.state[i] = OrderState.BACKLOG


def simulate(scenario: Scenario | World, policy: str | Policy = "greedy", *, progress: bool | Progress = False,
             solver_workers: int | None = None, check: bool = True) -> SimulationResult:
    """Simulate one peak under one policy.

    Parameters
    ----------
    scenario : Scenario or World
        What to simulate (a :class:`World` already drawn from a scenario is
        reused as is, so several policies can share it).
    policy : str or Policy
        ``"greedy"``, ``"micro_batch"``, ``"batch"``, or a policy object.
    progress : bool or rich.progress.Progress
        Show a progress bar (a task is added to the given ``Progress``).
    solver_workers : int, optional
        Worker processes for each optimiser call (``None``: the optimiser's default).
    check : bool
        Verify the invariants at the end (units conserved, no order filled
        twice, one terminal state per order); raises
        :class:`~pyomni.errors.InvariantViolation` if one fails.

    Returns
    -------
    SimulationResult

    Raises
    ------
    pyomni.errors.InvalidArgument
        Unknown policy name.

    Examples
    --------
    >>> from pyomni.sim import preset
    >>> r = simulate(preset("small", orders=100, stores=10, hours=24), "greedy")
    >>> sorted(r.orders.column("state").unique().to_pylist())[0] in {"SHIPPED", "CANCELLED", "STOCKOUT", "BACKLOG"}
    True
    """
    world = scenario if isinstance(scenario, World) else build_world(scenario)
    decider = make_policy(policy) if isinstance(policy, str) else policy
    s = world.scenario
    started = time.perf_counter()
    run = Run(world, decider, solver_workers=solver_workers)
    step = s.step_minutes * 60.0
    cancel_order = np.argsort(world.cancel_s, kind="stable")
    cancel_order = cancel_order[np.isfinite(world.cancel_s[cancel_order])]
    next_arrival = next_cancel = 0
    replenish_at = {h * int(_HOUR) for h in s.replenish_hours} if s.replenish_share > 0 else set()
    day_starts_at = (s.cutoff_hour % 24) * int(_HOUR)  # the business day runs from cut-off to cut-off

    with _progress_task(progress, f"{s.name} · {decider.name}", s.steps) as advance:
        for n in range(s.steps):
            start, end = n * step, (n + 1) * step
            run.now = start
            changed = False
            if n and round(start) % int(_DAY) == day_starts_at:
                run.engine.new_day()
                changed = True
            if round(start) % int(_DAY) in replenish_at:
                run.replenish()
                changed = True
            if changed:
                decider.on_capacity_or_stock(run, start)
            last = int(np.searchsorted(world.arrival_s, end, side="left"))
            # arrivals, store answers, time-outs and cancellations in time order (at a tie: answers, then
            # time-outs -- they were due -- then cancellations and arrivals)
            while True:
                t_answer = run.next_answer_at()
                t_timeout = run.next_timeout_at()
                t_cancel = (float(world.cancel_s[cancel_order[next_cancel]]) if next_cancel < len(cancel_order)
                            else math.inf)
                t_arrival = float(world.arrival_s[next_arrival]) if next_arrival < last else math.inf
                if min(t_answer, t_timeout, t_cancel, t_arrival) >= end:
                    break
                if t_answer <= min(t_timeout, t_cancel, t_arrival):
                    run.answer_next()
                elif t_timeout <= min(t_cancel, t_arrival):
                    run.timeout_next()
                elif t_cancel <= t_arrival:
                    i = int(cancel_order[next_cancel])
                    run.now = max(run.now, t_cancel)
                    run.cancel(i, run.now)
                    next_cancel += 1
                else:
                    run.now = max(run.now, t_arrival)
                    decider.on_arrivals(run, np.arange(next_arrival, next_arrival + 1), run.now)
                    next_arrival += 1
            run.now = end
            run.catch_up(end)
            decider.on_step_end(run, end)
            run.expire_backorders(end)
            run.pick(start, end)
            advance()
    run.finish()
    result = summarise(run, time.perf_counter() - started)
    if check:
        result.check_invariants(run.engine)
    return result


def compare_policies(scenario: Scenario, policies: Sequence[str] = ("greedy", "micro_batch", "batch"), *,
                     progress: bool = False, solver_workers: int | None = None) -> list[SimulationResult]:
    """Run several policies on the same world (same network, stock and orders).

    Examples
    --------
    >>> from pyomni.sim import preset
    >>> [r.policy for r in compare_policies(preset("small", orders=50, stores=10, hours=24), ["greedy"])]
    ['greedy']
    """
    deciders = [make_policy(p) for p in policies]
    world = build_world(scenario)
    if not progress:
        return [simulate(world, d, solver_workers=solver_workers) for d in deciders]
    with _new_progress() as bar:
        return [simulate(world, d, progress=bar, solver_workers=solver_workers) for d in deciders]


def _new_progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                    TimeElapsedColumn())


class _progress_task:  # noqa: N801 - used as a context manager, reads like one
    """A callable that advances a rich task by one step, or does nothing without a progress bar."""

    def __init__(self, progress: bool | Progress, description: str, total: int) -> None:
        self._own = progress is True
        self._bar: Progress | None = _new_progress() if progress is True else (
            progress if isinstance(progress, Progress) else None)
        self._description, self._total = description, total

    def __enter__(self):
        if self._bar is None:
            return lambda: None
        if self._own:
            self._bar.start()
        task = self._bar.add_task(self._description, total=self._total)
        bar = self._bar
        return lambda: bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None and self._own:
            self._bar.stop()
