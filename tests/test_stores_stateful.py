"""Stateful property tests of the store side (:mod:`pyomni.stores`).

* :class:`StoreLifeCycle` -- random routing, store actions, rejections, time passing, returns and exception
  handling against a plain-Python reference of the shipment life cycle written from the docstrings of
  :mod:`pyomni.fulfilment`, :mod:`pyomni.stores` and :mod:`pyomni.settlement`. The reference never routes:
  where a shipment's lines go is read from the engine's answer, and only its shape is checked. Everything
  else -- which actions are refused and with which error, which deadlines fire and what they do, every
  stock cell, the exceptions, the discrepancies, the returns and every settlement fact and cent -- is
  predicted from the reference's state alone and compared after every step.
* :class:`FeedConsumer` -- a store group's feed consumer that disconnects and resumes while a random
  workload runs: its view of the open shipments always equals the engine's, with no event applied twice
  and none skipped.
* :func:`test_a_restart_in_the_middle_changes_nothing` -- a random workload on a data directory, closed and
  reopened part way (sometimes after a snapshot): everything the store side knows survives, a feed resuming
  from before the newest snapshot starts over, and the workload goes on exactly as on a twin that never
  restarted.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from conftest import FakeClock, haversine_km
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import pyomni
from pyomni import errors, settlement
from pyomni.fulfilment import (
    TERMINAL,
    ExceptionState,
    OpeningHours,
    RejectReason,
    ShipmentState,
    StoreAction,
    StoreRules,
)
from pyomni.model import AllocationStatus, Capability, Fulfilment, Line, LocationKind, Order, ReservationState

S = ShipmentState
R = ReservationState
A = StoreAction

NET = pyomni.demo_network(stores=8, warehouses=1, skus=3, seed=1)
LOCS = list(NET.ids)
SKUS = list(NET.skus)
STORES = [x.id for x in NET if x.kind is LocationKind.STORE]
SAME_DAY_STORES = [x.id for x in NET if x.kind is LocationKind.STORE and x.capabilities & Capability.SAME_DAY]
FRANCHISE = {x.id: bool(x.franchise) for x in NET}
WHERE = {x.id: (float(x.lat), float(x.lon)) for x in NET}

CST = dt.timezone(dt.timedelta(hours=8))
START = dt.datetime(2026, 11, 11, 9, 40, tzinfo=CST).timestamp()    # a Wednesday, 20 minutes before opening
#: short limits, so that answers time out, picks run late and pickups go uncollected within a run
RULES = StoreRules(OpeningHours(600, 1320), answer_s=600, pick_s=1500, same_day_answer_s=300, same_day_pick_s=900,
                   collect_days=1, return_days=2)
#: one store with its own rules: open round the clock one hour ahead of UTC, shut on Thursdays
OWN_RULES = {STORES[1]: StoreRules(OpeningHours(0, 1440, utc_offset_minutes=60, closed_weekdays=(4,)),
                                   answer_s=900, pick_s=3600, collect_days=2, return_days=1)}
#: evening hours (18:00-24:00) on weekdays, UTC-5: two minutes to answer, no returns
QUICK_RULES = StoreRules(OpeningHours(1080, 1440, utc_offset_minutes=-300, closed_weekdays=(6, 7)), answer_s=120,
                         pick_s=600, same_day_answer_s=60, same_day_pick_s=300, collect_days=3, return_days=0)
FEE_RULE = settlement.AttributionRule("split-fee", selling_bp=3000, fulfilling_bp=6000, home_bp=1000, fee_cents=250)
CHANNEL_RULE = {"app": settlement.FULFILLER_TAKES_ALL, "tmall": FEE_RULE}
RULE_BY_KEY = {r.key: r for r in CHANNEL_RULE.values()}
TTLS = (300.0, 1800.0, 7200.0, 3 * 86_400.0, 3 * 86_400.0)
SECONDS = (30, 299, 301, 600, 900, 1500, 3600, 4 * 3600, 12 * 3600, 86_400, 2 * 86_400)
STORE_REASONS = [r for r in RejectReason if r not in (RejectReason.TIMEOUT, RejectReason.ORDER_SYSTEM)]
STEPS = [A.ACCEPT, A.PICK, A.PACK, A.SHIP, A.READY, A.COLLECT]
FULFILLED = (S.SHIPPED, S.COLLECTED)
BEFORE_READY = (S.ROUTED, S.ACCEPTED, S.PICKED)

# Engine bugs these machines found, each fixed and kept as a regression test at the end of this file: a shipment
# picked without being accepted kept its answer deadline; a failed re-route's exception named only the short lines
# (the others were dropped); deadlines restored from a snapshot lost their order among equal ones; Engine.reroute
# back to a store with an uncollected pickup made no shipment.


def set_up(eng: pyomni.Engine) -> None:
    """The store rules and attribution every engine here runs with."""
    eng.set_store_rules(None, RULES)
    for loc, rules in OWN_RULES.items():
        eng.set_store_rules(loc, rules)
    eng.register_attribution_rule(FEE_RULE)
    eng.set_attribution("tmall", FEE_RULE.key)


# -- the documented arithmetic, written again: opening time, business days, cents -------------------------
def _windows(hours: OpeningHours, at: float):        # noqa: ANN202 -- a generator of (start, end)
    """The store's opening windows, local day by local day, from the one containing or following ``at``."""
    tz = dt.timezone(dt.timedelta(minutes=hours.utc_offset_minutes))
    day = dt.datetime.fromtimestamp(at, tz).date()
    while True:
        if day.isoweekday() not in hours.closed_weekdays:
            midnight = dt.datetime.combine(day, dt.time(), tz).timestamp()
            start, end = midnight + 60 * hours.open_minute, midnight + 60 * hours.close_minute
            if end > at:
                yield max(start, at), end
        day += dt.timedelta(days=1)


def after_opening_time(hours: OpeningHours, at: float, seconds: float) -> float:
    """When ``seconds`` of opening time have passed since ``at`` (a limit starting while closed waits)."""
    left = seconds
    for start, end in _windows(hours, at):
        if left <= end - start:
            return start + left
        left -= end - start
    raise AssertionError("unreachable")


def closing_of_business_day(hours: OpeningHours, at: float, n: int) -> float:
    """Closing time of the ``n``-th opening day counting the one ``at`` falls in (or the next one)."""
    for i, (_, end) in enumerate(_windows(hours, at), start=1):
        if i == n:
            return end
    raise AssertionError("unreachable")


def local_day(hours: OpeningHours, at: float) -> dt.date:
    return dt.datetime.fromtimestamp(at, dt.timezone(dt.timedelta(minutes=hours.utc_offset_minutes))).date()


def split(total: int, weights: list[int]) -> list[int]:
    """Largest remainder, ties to the earlier weight; a negative total mirrors its magnitude."""
    whole = sum(weights)
    mag = abs(total)
    parts = [mag * w // whole for w in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(mag * weights[i] % whole), i))
    for i in order[:mag - sum(parts)]:
        parts[i] += 1
    return [-p for p in parts] if total < 0 else parts


def sale_entries(fact: dict) -> list[int]:
    """The ten entry amounts :func:`pyomni.settlement.settle` books for a sale fact, by its rule."""
    rule = RULE_BY_KEY[fact["rule"]]
    coupon_bp = rule.franchise_coupon_bp if fact["franchise"] else rule.coupon_bp
    return (split(fact["gross_cents"], list(rule.revenue_bp)) + [fact["fee_cents"], -fact["fee_cents"]]
            + split(-fact["coupon_cents"], list(coupon_bp)))


def nearest_store(point: tuple[float, float]) -> str:
    return min(STORES, key=lambda x: haversine_km(WHERE[x], point))


def make_order(oid: str, kind: str, near: int, lines: list[tuple[int, int, int]], coupon_share: float,
               channel: str, selling: int | None, stocked: list[str] | None = None) -> Order:
    """An order of distinct SKUs (index, qty, unit price) with a coupon of ``coupon_share`` of its total; a
    pickup order is collected at one of the ``stocked`` stores if any are given."""
    picked = {}
    for s, q, price in lines:
        picked.setdefault(SKUS[s], Line(SKUS[s], q, price))
    body = list(picked.values())
    coupon = int(sum(x.qty * x.unit_price_cents for x in body) * coupon_share)
    money = dict(coupon_cents=coupon, channel=channel, selling_store=None if selling is None else STORES[selling])
    if kind == "pickup":
        where = stocked or STORES
        return Order(oid, body, pickup_location=where[near % len(where)], **money)
    if kind == "same_day":
        where = WHERE[SAME_DAY_STORES[near % len(SAME_DAY_STORES)]]
        return Order(oid, body, destination=where, fulfilment=Fulfilment.SAME_DAY, **money)
    return Order(oid, body, destination=WHERE[LOCS[near % len(LOCS)]], **money)


order_lines = st.lists(st.tuples(st.integers(0, len(SKUS) - 1), st.integers(1, 3), st.sampled_from([0, 1, 999, 4999])),
                       min_size=1, max_size=2)


# -- the reference ---------------------------------------------------------------------------------------
@dataclass
class RefShip:
    id: str
    rid: str
    loc: str
    pickup: bool
    lines: tuple[tuple[str, int], ...]
    state: ShipmentState = S.ROUTED
    late: bool = False
    reason: RejectReason | None = None
    due: float | None = None
    tick: int = 0                      # when its deadline was (re)scheduled: ties of equal deadlines go in this order
    fulfilled_at: float | None = None

    def public(self) -> tuple:
        return (self.state, self.pickup, self.rid, self.loc, self.late, self.reason,
                tuple(sorted(self.lines)), self.due)


@dataclass
class RefRes:
    id: str
    order: Order
    state: ReservationState
    expires_at: float
    ships: list[str] = field(default_factory=list)
    rejected: set[str] = field(default_factory=set)      # every location that rejected (or timed out on) it
    final: list[str] = field(default_factory=list)       # where its parcels were when it was released or expired


def public(s: pyomni.fulfilment.StoreShipment) -> tuple:
    return (s.state, s.pickup, s.reservation_id, s.location, s.late, s.reason,
            tuple(sorted((x.sku, x.qty) for x in s.lines)), s.due_at)


def lines_of(s: pyomni.fulfilment.StoreShipment) -> tuple[tuple[str, int], ...]:
    return tuple((x.sku, x.qty) for x in s.lines)


def added(parts) -> Counter:
    total: Counter = Counter()
    for lines in parts:
        for sku, q in lines:
            total[sku] += q
    return total


# the documented paths: a step may be skipped forward, never back -- except that COLLECT comes only from
# READY_FOR_PICKUP (the engine's reading; the docstring's "a step may be skipped forward" would allow collecting a
# PICKED shipment, as SHIP may skip PACKED)
DELIVERY = [S.ROUTED, S.ACCEPTED, S.PICKED, S.PACKED, S.SHIPPED]
PICKUP = [S.ROUTED, S.ACCEPTED, S.PICKED, S.READY_FOR_PICKUP, S.COLLECTED]
TARGET = {A.ACCEPT: S.ACCEPTED, A.PICK: S.PICKED, A.PACK: S.PACKED, A.SHIP: S.SHIPPED,
          A.READY: S.READY_FOR_PICKUP, A.COLLECT: S.COLLECTED}


def step_allowed(ship: RefShip, action: StoreAction) -> bool:
    path = PICKUP if ship.pickup else DELIVERY
    target = TARGET[action]
    if target not in path or ship.state not in path or path.index(target) <= path.index(ship.state):
        return False
    return action is not A.COLLECT or ship.state is S.READY_FOR_PICKUP


class StoreLifeCycle(RuleBasedStateMachine):
    """The engine's store side against the reference, step by step."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(START)
        self.eng = pyomni.Engine(NET, clock=self.clock, reservation_ttl=1800.0)
        set_up(self.eng)
        self.ships: dict[str, RefShip] = {}
        self.res: dict[str, RefRes] = {}
        self.live_orders: dict[str, str] = {}                 # order id -> its HELD or CONFIRMED reservation
        self.cells: defaultdict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])   # on hand, reserved
        self.base: Counter = Counter()                        # per SKU: every unit the test put in
        self.exceptions: dict[str, list] = {}                 # id -> [reservation, shipment, lines, state]
        self.facts: list[dict] = []
        self.sale_fact: dict[tuple[str, str], int] = {}
        self.returned: Counter = Counter()                    # sale fact -> units back
        self.line_done: Counter = Counter()                   # (reservation, sku) -> units fulfilled
        self.discrepancies: list[tuple] = []
        self.returns: list[tuple] = []
        self.ticks = 0
        self.orders = 0
        self.own_rules = dict(OWN_RULES)                      # the stores with rules of their own
        self.seen: dict[str, pyomni.fulfilment.StoreShipment] = {}          # the engine's, after the last call
        self.seen_exc: dict[str, pyomni.fulfilment.OrderException] = {}

    def rules_at(self, loc: str) -> StoreRules:
        return self.own_rules.get(loc, RULES)

    # -- the engine call, with the clock first ---------------------------------------------------------
    def run(self, call, expect: type[errors.PyomniError] | None):
        """Call the engine; fire in the reference what the clock made due (every command does that first);
        check the engine refused exactly when ``expect()`` -- evaluated after the clock -- says so."""
        try:
            answer, failure = call(), None
        except errors.InvariantViolation:
            raise
        except errors.PyomniError as exc:
            answer, failure = None, exc
        self.seen = {s.id: s for s in self.eng.shipments(open_only=False, limit=100_000)}
        self.seen_exc = {x.id: x for x in self.eng.order_exceptions(None)}
        expired = self.fire(self.clock())
        wanted = expect if expect is None or isinstance(expect, type) else expect()
        if wanted is None:
            assert failure is None, f"the engine refused: {failure!r}"
        else:
            assert isinstance(failure, wanted), f"expected {wanted.__name__}, got {failure!r} / {answer!r}"
        return answer, expired

    def fire(self, now: float) -> list[str]:
        """What the clock does by ``now``: holds expire first, then each shipment deadline in order."""
        expired = sorted((r for r in self.res.values() if r.state is R.HELD and r.expires_at <= now),
                         key=lambda r: (r.expires_at, r.id))
        for r in expired:
            self.end(r, R.EXPIRED)
        due = sorted((s for s in self.ships.values()
                      if s.state not in TERMINAL and s.due is not None and s.due <= now),
                     key=lambda s: (s.due, s.tick))
        for ship in due:
            if ship.state is S.ROUTED:                               # nobody answered: re-routed
                event("clock: timed out")
                self.reject(ship, RejectReason.TIMEOUT, now, None)
            elif ship.state in (S.ACCEPTED, S.PICKED):               # not packed in time: flagged
                event("clock: late")
                ship.late, ship.due = True, None
            elif ship.state is S.READY_FOR_PICKUP:                   # not collected: back to the shelf
                event(f"clock: not collected ({self.res[ship.rid].state.name})")
                res = self.res[ship.rid]
                self.undo(ship)
                self.move(ship, S.NOT_COLLECTED, now)
                if res.state is R.HELD and not self.parcels(res):
                    self.end(res, R.RELEASED)
        return [r.id for r in expired]

    # -- reference transitions ------------------------------------------------------------------------
    def schedule(self, ship: RefShip, due: float | None) -> None:
        ship.due = due
        if due is not None:
            self.ticks += 1
            ship.tick = self.ticks

    def move(self, ship: RefShip, state: ShipmentState, now: float) -> None:
        was, ship.state = ship.state, state
        order = self.res[ship.rid].order
        rules = self.rules_at(ship.loc)
        if state in TERMINAL:
            ship.due = None
        elif state is S.ACCEPTED:
            self.schedule(ship, after_opening_time(rules.hours, now, rules.pick_limit(order.fulfilment)))
        elif state is S.PICKED:
            if was is S.ROUTED:             # picked without accepting: the limit
                self.schedule(ship, after_opening_time(rules.hours, now, rules.pick_limit(order.fulfilment)))
            else:                                                   # the accepted shipment's limit goes on
                self.schedule(ship, ship.due)
        elif state is S.READY_FOR_PICKUP:
            self.schedule(ship, closing_of_business_day(rules.hours, now, rules.collect_days))
        else:
            ship.due = None

    def parcels(self, res: RefRes) -> list[RefShip]:
        """The reservation's live shipments: open, or fulfilled."""
        return [self.ships[x] for x in res.ships if self.ships[x].state not in TERMINAL
                or self.ships[x].state in FULFILLED]

    def add_ship(self, res: RefRes, s: pyomni.fulfilment.StoreShipment, now: float) -> None:
        """A shipment the engine created for ``res`` (routed, or re-routed): checked and taken in."""
        order = res.order
        assert s.id == f"{res.id}-{len(res.ships) + 1}", (s.id, res.ships)
        # ROUTED when made; one the clock made before a command that then ended its reservation is read afterwards
        assert s.reservation_id == res.id and s.order_id == order.id and s.state in (S.ROUTED, S.CANCELLED)
        assert s.created_at == now and s.fulfilment is order.fulfilment and s.channel == order.channel
        ship = RefShip(s.id, res.id, s.location,
                       order.fulfilment is Fulfilment.PICKUP and s.location == order.pickup_location, lines_of(s))
        assert all(q > 0 for _, q in ship.lines)
        rules = self.rules_at(ship.loc)
        self.schedule(ship, after_opening_time(rules.hours, now, rules.answer_limit(order.fulfilment)))
        self.ships[ship.id] = ship
        res.ships.append(ship.id)
        for sku, q in ship.lines:
            cell = self.cells[(ship.loc, sku)]
            if res.state is R.HELD:
                cell[1] += q
            else:                                   # confirmed: off the shelf at once
                cell[0] -= q

    def undo(self, ship: RefShip) -> None:
        """A shipment leaves its reservation: held units released, confirmed ones back on the shelf."""
        held = self.res[ship.rid].state is R.HELD
        for sku, q in ship.lines:
            cell = self.cells[(ship.loc, sku)]
            if held:
                cell[1] -= q
            else:
                cell[0] += q

    def end(self, res: RefRes, state: ReservationState) -> None:
        res.final = sorted(s.loc for s in self.parcels(res))
        for ship in self.parcels(res):
            for sku, q in ship.lines:
                cell = self.cells[(ship.loc, sku)]
                cell[1] -= q
                if state is R.CONFIRMED:
                    cell[0] -= q
            if state is not R.CONFIRMED:
                self.move(ship, S.CANCELLED, self.clock())
        res.state = state
        if state is not R.CONFIRMED:
            self.live_orders.pop(res.order.id, None)

    def stock_effect(self, ship: RefShip, reason: RejectReason, now: float) -> list[tuple[str, str, int]]:
        lost = []
        for sku, q in ship.lines:
            cell = self.cells[(ship.loc, sku)]
            if reason is RejectReason.NOT_FOUND and ship.loc in STORES:     # a store has none of it
                units = cell[0] - cell[1]
                cell[0] = cell[1]
            elif reason in (RejectReason.DAMAGED, RejectReason.NOT_FOUND):  # a warehouse misses the parcel's units
                units = q
                cell[0] -= q
            else:
                continue
            if units > 0:
                lost.append((ship.loc, sku, units))
                self.discrepancies.append((now, ship.loc, sku, units, reason.name, ship.id))
        return lost

    def reroute_shape(self, res: RefRes, rejected: RefShip, new: list[pyomni.fulfilment.StoreShipment]) -> None:
        """A re-route carries exactly the rejected lines, to locations that never rejected the order and hold
        none of its other parcels, one shipment per location."""
        others = {s.loc for s in self.parcels(res)}
        locs = [s.location for s in new]
        assert len(set(locs)) == len(locs), locs
        assert not set(locs) & (res.rejected | others), (locs, res.rejected, others)
        assert added(lines_of(s) for s in new) == added([rejected.lines]), (new, rejected)

    def reject(self, ship: RefShip, reason: RejectReason, now: float,
               answer: pyomni.fulfilment.Rejection | None) -> list[tuple[str, str, int]]:
        """A rejection (a store's ``answer``, or the clock's, read from the engine's state)."""
        res = self.res[ship.rid]
        self.undo(ship)
        lost = self.stock_effect(ship, reason, now)
        ship.reason = reason
        self.move(ship, S.REJECTED, now)
        res.rejected.add(ship.loc)
        xid = f"X{len(self.exceptions) + 1:010d}"
        if answer is not None:
            new, exc = list(answer.new_shipments), answer.exception
            assert bool(new) != (exc is not None), answer            # new shipments, or exactly one exception
        else:
            exc = self.seen_exc.get(xid)
            if exc is not None and exc.shipment_id != ship.id:
                exc = None
            new = []
            if exc is None:                          # its shipments are the reservation's next ones
                want, got = added([ship.lines]), Counter()
                while got != want:
                    s = self.seen[f"{res.id}-{len(res.ships) + len(new) + 1}"]
                    new.append(s)
                    got += added([lines_of(s)])
                    assert all(got[k] <= want[k] for k in got), (new, ship)
        event(f"rejected ({reason.name}): {'exception' if exc is not None else 're-routed'}")
        if exc is not None:
            assert exc.id == xid and exc.state is ExceptionState.OPEN
            assert (exc.order_id, exc.reservation_id, exc.shipment_id) == (res.order.id, res.id, ship.id)
            assert exc.reason.startswith(reason.name)
            carried, rejected = added([((x.sku, x.requested) for x in exc.lines)]), added([ship.lines])
            assert carried == rejected, (exc, ship)
            self.exceptions[xid] = [res.id, ship.id, tuple((x.sku, x.requested) for x in exc.lines),
                                    ExceptionState.OPEN]
        else:
            self.reroute_shape(res, ship, new)
            for s in new:
                self.add_ship(res, s, now)
        return lost

    def fulfil(self, ship: RefShip, now: float) -> None:
        """SHIPPED or COLLECTED: one sale fact per line, priced by the order, credited by its channel's rule."""
        ship.fulfilled_at = now
        res = self.res[ship.rid]
        order = res.order
        rule = CHANNEL_RULE[order.channel]
        index = {x.sku: i for i, x in enumerate(order.lines)}
        weights = [x.unit_price_cents * x.qty for x in order.lines]
        coupons = split(order.coupon_cents, weights) if order.coupon_cents else [0] * len(weights)
        gross = [order.lines[index[sku]].unit_price_cents * q for sku, q in ship.lines]
        fees = split(rule.fee_cents, gross if any(gross) else [q for _, q in ship.lines])
        home = order.pickup_location if order.fulfilment is Fulfilment.PICKUP else nearest_store(order.destination)
        for (sku, q), g, fee in zip(ship.lines, gross, fees):
            i = index[sku]
            n, c = order.lines[i].qty, coupons[i]
            done = self.line_done[(res.id, sku)]
            self.line_done[(res.id, sku)] = done + q
            assert done + q <= n
            self.sale_fact[(ship.id, sku)] = len(self.facts)
            self.facts.append(dict(
                fact=len(self.facts), kind="sale", day=local_day(self.rules_at(ship.loc).hours, now), at=now,
                order_id=order.id, shipment_id=ship.id, line=i, sku=sku, qty=q, gross_cents=g,
                coupon_cents=c * (done + q) // n - c * done // n,      # the line's coupon pro rata, exactly
                fee_cents=fee, channel=order.channel, selling_store=order.selling_store or "",
                fulfilling_store=ship.loc, home_store=home, franchise=FRANCHISE[ship.loc], rule=rule.key,
                sale_fact=-1, receiving_store=""))

    # -- set-up ---------------------------------------------------------------------------------------
    @initialize(levels=st.lists(st.sampled_from([0, 0, 0, 1, 2, 4]), min_size=len(LOCS) * len(SKUS),
                                max_size=len(LOCS) * len(SKUS)))
    def stock(self, levels):
        for i, qty in enumerate(levels):
            loc, sku = LOCS[i // len(SKUS)], SKUS[i % len(SKUS)]
            if qty:
                self.eng.set_stock(loc, sku, qty)
                self.cells[(loc, sku)][0] = qty
                self.base[sku] += qty

    # -- the rules ------------------------------------------------------------------------------------
    @rule(kind=st.sampled_from(["delivery", "delivery", "pickup", "pickup", "same_day"]), near=st.integers(0, 20),
          lines=order_lines, coupon=st.sampled_from([0.0, 0.0, 0.1, 0.37]), channel=st.sampled_from(["app", "tmall"]),
          selling=st.one_of(st.none(), st.integers(0, len(STORES) - 1)), ttl=st.sampled_from(TTLS),
          again=st.booleans())
    def route(self, kind, near, lines, coupon, channel, selling, ttl, again):
        known = sorted({r.order.id for r in self.res.values()})
        if again and known:                         # an order id seen before: refused while it is live
            oid = known[near % len(known)]
        else:
            self.orders += 1
            oid = f"o-{self.orders}"
        wanted = Counter()
        for sku, q, _ in lines:
            wanted.setdefault(SKUS[sku], q)
        stocked = [x for x in STORES if all(self.cells[(x, k)][0] - self.cells[(x, k)][1] >= q
                                            for k, q in wanted.items())]
        order = make_order(oid, kind, near, lines, coupon, channel, selling, stocked)
        a, _ = self.run(lambda: self.eng.route_order(order, ttl=ttl),
                        lambda: errors.DuplicateId if oid in self.live_orders else None)
        if a is None:
            return
        now = self.clock()
        mine = sorted((s for s in self.seen.values() if s.reservation_id == a.reservation_id),
                      key=lambda s: int(s.id.rsplit("-", 1)[1]))
        if a.status is AllocationStatus.UNFULFILLABLE:
            assert a.reservation_id is None and a.short_lines
            return
        assert a.status is AllocationStatus.ALLOCATED and a.expires_at == now + ttl
        assert a.reservation_id not in self.res
        res = self.res[a.reservation_id] = RefRes(a.reservation_id, order, R.HELD, now + ttl)
        self.live_orders[oid] = res.id
        # one ROUTED shipment per parcel of the allocation, in its order, carrying the order's lines
        assert [(s.location, lines_of(s)) for s in mine] == [
            (x.location, tuple((y.sku, y.qty) for y in x.lines if y.qty)) for x in a.shipments]
        assert added(lines_of(s) for s in mine) == added([((x.sku, x.qty) for x in order.lines)])
        for s in mine:
            self.add_ship(res, s, now)

    def pick_ship(self, data, open_only: bool) -> str:
        """A known shipment (an open one unless ``open_only`` is False: then any, or now and then one that
        does not exist)."""
        pool = sorted(s.id for s in self.ships.values() if s.state not in TERMINAL or not open_only)
        if not open_only or not pool:
            pool = sorted(self.ships) + ["R9999999999-1"]
        return data.draw(st.sampled_from(pool), label="shipment")

    @rule(data=st.data(), action=st.sampled_from(STEPS), open_only=st.booleans())
    def act(self, data, action, open_only):
        self.do(self.pick_ship(data, open_only), action)

    def natural_step(self, data) -> None:
        """The natural next step of an open shipment (so that runs reach the end of the path)."""
        ship = self.ships[self.pick_ship(data, True)]
        path = PICKUP if ship.pickup else DELIVERY
        action = next(a for a in STEPS if step_allowed(ship, a) and path.index(TARGET[a]) == path.index(ship.state) + 1)
        if TARGET[action] in FULFILLED and self.res[ship.rid].state is R.HELD and data.draw(st.booleans()):
            self.end_one(ship.rid, True)                             # paid first, mostly
        else:
            self.do(ship.id, action)

    @precondition(lambda self: any(s.state not in TERMINAL for s in self.ships.values()))
    @rule(data=st.data())
    def next_step(self, data):
        self.natural_step(data)

    @precondition(lambda self: any(s.state not in TERMINAL for s in self.ships.values()))
    @rule(data=st.data())
    def another_step(self, data):
        self.natural_step(data)

    @precondition(lambda self: any(s.pickup and s.state in BEFORE_READY for s in self.ships.values()))
    @rule(data=st.data())
    def ready(self, data):
        """A pickup shipment made ready (skipping what it has not done yet): its collection deadline starts."""
        pool = sorted(s.id for s in self.ships.values() if s.pickup and s.state in BEFORE_READY)
        self.do(data.draw(st.sampled_from(pool), label="shipment"), A.READY)

    def do(self, sid: str, action: StoreAction) -> None:
        def expect():
            ship = self.ships.get(sid)
            if ship is None:
                return errors.UnknownShipment
            if ship.state in TERMINAL or not step_allowed(ship, action):
                return errors.ShipmentStateConflict
            if TARGET[action] in FULFILLED and self.res[ship.rid].state is not R.CONFIRMED:
                return errors.ShipmentStateConflict              # the goods leave only once paid
            return None

        answer, _ = self.run(lambda: self.eng.store_action(sid, action), expect)
        if answer is not None:
            ship = self.ships[sid]
            now = self.clock()
            self.move(ship, TARGET[action], now)
            if ship.state in FULFILLED:
                event(f"fulfilled: {ship.state.name}")
                self.fulfil(ship, now)
            assert public(answer) == ship.public()

    @rule(data=st.data(), reason=st.sampled_from(STORE_REASONS), open_only=st.booleans())
    def reject_shipment(self, data, reason, open_only):
        sid = self.pick_ship(data, open_only)

        def expect():
            if sid not in self.ships:
                return errors.UnknownShipment
            return errors.ShipmentStateConflict if self.ships[sid].state in TERMINAL else None

        answer, _ = self.run(lambda: self.eng.reject_shipment(sid, reason, note="test"), expect)
        if answer is not None:
            ship = self.ships[sid]
            lost = self.reject(ship, reason, self.clock(), answer)
            assert answer.shipment.id == sid and public(answer.shipment) == ship.public()
            assert answer.shipment.note == "test"
            assert list(answer.discrepancies) == lost

    @precondition(lambda self: self.res)
    @rule(data=st.data())
    def reroute(self, data):
        """The order system takes a parcel away from a store (``Engine.reroute``)."""
        pool = sorted(self.res)
        if not pool:
            return
        rid = data.draw(st.sampled_from(pool), label="reservation")
        loc = data.draw(st.sampled_from(LOCS), label="rejected_by")
        res = self.res[rid]

        def expect():
            if res.state is not R.HELD:
                return errors.ReservationNotHeld
            if loc not in {s.loc for s in self.parcels(res)}:
                return errors.InvalidArgument
            return None

        a, _ = self.run(lambda: self.eng.reroute(rid, loc), expect)
        if a is None:
            return
        now = self.clock()
        (ship,) = [s for s in self.parcels(res) if s.loc == loc]
        self.undo(ship)
        ship.reason = RejectReason.ORDER_SYSTEM
        self.move(ship, S.REJECTED, now)
        res.rejected.add(loc)
        event(f"reroute: {a.status.name}")
        if a.status is AllocationStatus.UNFULFILLABLE:          # the whole reservation goes
            self.end(res, R.RELEASED)
            return
        new = []
        while f"{rid}-{len(res.ships) + len(new) + 1}" in self.seen:
            new.append(self.seen[f"{rid}-{len(res.ships) + len(new) + 1}"])
        self.reroute_shape(res, ship, new)
        for s in new:
            self.add_ship(res, s, now)
        assert sorted(x.location for x in a.shipments) == sorted(s.loc for s in self.parcels(res))

    @rule(data=st.data(), confirm=st.booleans())
    def end_reservation(self, data, confirm):
        rid = data.draw(st.sampled_from(sorted(self.res) + ["R9999999999"]), label="reservation")
        self.end_one(rid, confirm)

    @precondition(lambda self: any(r.state is R.HELD for r in self.res.values()))
    @rule(data=st.data())
    def pay(self, data):
        """The order system confirms a held order (the common case, so that goods get to leave)."""
        self.end_one(data.draw(st.sampled_from(sorted(r.id for r in self.res.values() if r.state is R.HELD))), True)

    def end_one(self, rid: str, confirm: bool) -> None:
        def expect():
            if rid not in self.res:
                return errors.UnknownReservation
            return None if self.res[rid].state is R.HELD else errors.ReservationNotHeld

        call = self.eng.confirm if confirm else self.eng.release
        answer, _ = self.run(lambda: call(rid), expect)
        if answer is not None:
            self.end(self.res[rid], R.CONFIRMED if confirm else R.RELEASED)
            assert answer.state is self.res[rid].state

    @rule(loc=st.sampled_from(LOCS), sku=st.sampled_from(SKUS), qty=st.integers(1, 3))
    def restock(self, loc, sku, qty):
        self.run(lambda: self.eng.receive(loc, sku, qty), None)
        self.cells[(loc, sku)][0] += qty
        self.base[sku] += qty

    @rule(loc=st.sampled_from(LOCS), rules=st.sampled_from([None, RULES, *OWN_RULES.values(), QUICK_RULES]))
    def change_rules(self, loc, rules):
        """A store's rules change (None: back to the default); they apply from each shipment's next step on."""
        answer, _ = self.run(lambda: self.eng.set_store_rules(loc, rules), None)
        if rules is None:
            self.own_rules.pop(loc, None)
        else:
            self.own_rules[loc] = rules
        assert answer == self.rules_at(loc) == self.eng.store_rules(loc)

    @rule(seconds=st.one_of(st.sampled_from(SECONDS), st.integers(1, 30_000)), sweep=st.booleans())
    def time_passes(self, seconds, sweep):
        """The clock moves; the sweeper's ``expire_due`` fires what came due -- or, without it, the next
        command does, first."""
        self.clock.advance(seconds)
        if sweep:
            answer, expired = self.run(self.eng.expire_due, None)
            assert answer == expired

    @rule(seconds=st.sampled_from([4 * 3600, 8 * 3600, 13 * 3600, 86_400, 2 * 86_400]))
    def hours_pass(self, seconds):
        """A longer wait, swept: pickups go uncollected, return windows close."""
        self.time_passes(seconds, True)

    @precondition(lambda self: any(s.state in FULFILLED for s in self.ships.values()))
    @rule(data=st.data(), qty=st.integers(1, 3), loc=st.sampled_from(LOCS), any_ship=st.booleans(),
          any_sku=st.booleans())
    def return_units(self, data, qty, loc, any_ship, any_sku):
        pool = sorted(s.id for s in self.ships.values() if s.state in FULFILLED or any_ship)
        sid = data.draw(st.sampled_from(pool), label="shipment")
        ship = self.ships[sid]
        sku = data.draw(st.sampled_from(SKUS if any_sku else [k for k, _ in ship.lines]), label="sku")

        def expect():
            if ship.state not in FULFILLED or (sid, sku) not in self.sale_fact:
                return errors.ReturnNotAllowed
            fact = self.sale_fact[(sid, sku)]
            if qty > self.facts[fact]["qty"] - self.returned[fact]:
                return errors.ReturnNotAllowed
            if self.clock() > ship.fulfilled_at + self.rules_at(ship.loc).return_days * 86_400:
                return errors.ReturnNotAllowed
            return None

        record, _ = self.run(lambda: self.eng.return_line(sid, sku, qty, location=loc), expect)
        event(f"return: {'refused' if record is None else 'taken'}")
        if record is None:
            return
        now = self.clock()
        fact = self.sale_fact[(sid, sku)]
        self.returned[fact] += qty
        self.cells[(loc, sku)][0] += qty                          # restocked where it was handed back
        sale = self.facts[fact]
        self.facts.append(dict(sale, fact=len(self.facts), kind="return", day=local_day(self.rules_at(loc).hours, now),
                               at=now, qty=qty, gross_cents=0, coupon_cents=0, fee_cents=0, sale_fact=fact,
                               receiving_store=loc))
        self.returns.append((f"RT{len(self.returns) + 1:010d}", sid, sale["order_id"], sku, qty, loc, now, True))
        assert (record.id, record.shipment_id, record.order_id, record.sku, record.qty, record.location, record.at,
                record.restocked) == self.returns[-1]

    @precondition(lambda self: self.exceptions)
    @rule(data=st.data(), retry=st.booleans())
    def resolve(self, data, retry):
        xid = data.draw(st.sampled_from(sorted(self.exceptions)), label="exception")
        rid, sid, lines, state = self.exceptions[xid]
        res = self.res[rid]

        def expect():
            if state is not ExceptionState.OPEN:
                return errors.FailedPrecondition
            if retry and res.state not in (R.HELD, R.CONFIRMED):
                return errors.FailedPrecondition
            return None

        done, _ = self.run(lambda: self.eng.resolve_exception(xid, retry=retry), expect)
        if done is None:
            return
        new = []
        while f"{rid}-{len(res.ships) + len(new) + 1}" in self.seen:
            new.append(self.seen[f"{rid}-{len(res.ships) + len(new) + 1}"])
        event(f"resolve: retry={retry} -> {done.state.name}")
        if retry and done.state is ExceptionState.OPEN:          # still nowhere to go
            assert not new
            return
        assert done.state is ExceptionState.RESOLVED and done.resolved_at == self.clock()
        self.exceptions[xid][3] = ExceptionState.RESOLVED
        if retry:
            assert new, done
            others = {s.loc for s in self.parcels(res)}
            assert not {s.location for s in new} & (res.rejected | others)
            assert added(lines_of(s) for s in new) == added([lines])
            for s in new:
                self.add_ship(res, s, self.clock())
                assert s.location in done.resolution
        else:
            assert not new and done.resolution == "closed"

    # -- after every step -----------------------------------------------------------------------------
    @invariant()
    def agrees(self):
        eng = self.eng
        eng.check_invariants()
        ships = eng.shipments(open_only=False, limit=100_000)
        assert {s.id: public(s) for s in ships} == {s.id: s.public() for s in self.ships.values()}
        for loc in LOCS:                                            # each store's open list
            assert [s.id for s in eng.shipments(loc)] == sorted(
                s.id for s in self.ships.values() if s.loc == loc and s.state not in TERMINAL)
        got = {r.id: (r.state, sorted(x.location for x in r.shipments), sorted(r.excluded_locations))
               for r in eng.reservations()}
        assert got == {r.id: (r.state, sorted(s.loc for s in self.parcels(r)) if r.state in (R.HELD, R.CONFIRMED)
                              else r.final, sorted(r.rejected)) for r in self.res.values()}
        # every cell, and the loads
        table = eng.stock_table().to_pylist()
        cells = {(c["location"], c["sku"]): [c["on_hand"], c["reserved"]] for c in table}
        assert {k: v for k, v in cells.items() if any(v)} == {k: v for k, v in self.cells.items() if any(v)}
        state = eng.state()
        held, confirmed = Counter(), Counter()         # parcels per location: of held and of paid orders
        for r in self.res.values():
            for s in self.parcels(r):
                if r.state is R.HELD:
                    held[s.loc] += 1
                elif r.state is R.CONFIRMED:
                    confirmed[s.loc] += 1
        assert [int(x) for x in state.held] == [held[x] for x in LOCS]
        assert [int(x) for x in state.confirmed] == [confirmed[x] for x in LOCS]
        # stock is conserved: what was put in, less what confirmed orders took off the shelf (a rejection or an
        # uncollected pickup after confirming put it back), less the discrepancies, plus the returns
        lost, back, taken, reserved = Counter(), Counter(), Counter(), Counter()
        for d in eng.discrepancies().to_pylist():
            lost[d["sku"]] += d["units"]
        for x in eng.returns():
            back[x.sku] += x.qty
        for r in self.res.values():
            for s in self.parcels(r):
                for sku, q in s.lines:
                    if r.state is R.CONFIRMED:
                        taken[sku] += q
                    elif r.state is R.HELD:
                        reserved[sku] += q
        for sku in SKUS:
            on_hand = sum(c["on_hand"] for c in table if c["sku"] == sku)
            assert on_hand == self.base[sku] - taken[sku] - lost[sku] + back[sku], sku
            assert sum(c["reserved"] for c in table if c["sku"] == sku) == reserved[sku], sku
        assert [tuple(d.values()) for d in eng.discrepancies().to_pylist()] == self.discrepancies
        assert [(x.id, x.shipment_id, x.order_id, x.sku, x.qty, x.location, x.at, x.restocked)
                for x in eng.returns()] == self.returns
        assert {x.id: [x.reservation_id, x.shipment_id, tuple((y.sku, y.requested) for y in x.lines), x.state]
                for x in eng.order_exceptions(None)} == self.exceptions
        assert [x.id for x in eng.order_exceptions()] == sorted(
            k for k, v in self.exceptions.items() if v[3] is ExceptionState.OPEN)

    @invariant()
    def settles(self):
        facts = self.eng.settlement_facts().to_pylist()
        assert facts == self.facts
        # sum of the ledger = price of what was fulfilled - its coupons - the reversed part of the returns
        price = 0
        for s in self.ships.values():
            if s.state in FULFILLED:
                order = self.res[s.rid].order
                unit = {x.sku: x.unit_price_cents for x in order.lines}
                price += sum(unit[sku] * q for sku, q in s.lines)
        coupons = sum(f["coupon_cents"] for f in facts if f["kind"] == "sale")
        reversed_, back = 0, Counter()
        per_sale = {}                                 # sale fact -> what it nets to, after its returns
        for f in facts:
            if f["kind"] == "sale":
                per_sale[f["fact"]] = f["gross_cents"] - f["coupon_cents"]
                continue
            sale = facts[f["sale_fact"]]
            n, m, k = sale["qty"], back[f["sale_fact"]], f["qty"]
            part = sum(a * (m + k) // n - a * m // n for a in sale_entries(sale))
            reversed_ += part
            per_sale[f["sale_fact"]] -= part
            back[f["sale_fact"]] += k
        daily = self.eng.settlement()
        assert sum(daily.column("net_cents").to_pylist()) == price - coupons - reversed_
        # each sale's entries net to what is left of it; a sale returned in full nets to zero for every party
        entries = self.eng.settlement(entries=True).to_pylist()
        by_sale, by_party = Counter(), Counter()
        fact_of = {(f["shipment_id"], f["line"]): f["fact"] for f in facts if f["kind"] == "sale"}
        for e in entries:
            sale = fact_of[(e["shipment_id"], e["line"])]
            by_sale[sale] += e["amount_cents"]
            by_party[(sale, e["party"])] += e["amount_cents"]
        assert {k: v for k, v in by_sale.items() if v} == {k: v for k, v in per_sale.items() if v}
        for (sale, party), amount in by_party.items():
            if back[sale] == facts[sale]["qty"]:
                assert amount == 0, (sale, party)
        # the coupon of a line is carried pro rata: all of it once every unit shipped
        for r in self.res.values():
            weights = [x.unit_price_cents * x.qty for x in r.order.lines]
            parts = split(r.order.coupon_cents, weights) if r.order.coupon_cents else [0] * len(weights)
            for i, line in enumerate(r.order.lines):
                carried = sum(f["coupon_cents"] for f in facts if f["kind"] == "sale" and f["line"] == i
                              and self.ships[f["shipment_id"]].rid == r.id)
                assert carried == parts[i] * self.line_done[(r.id, line.sku)] // line.qty

    def teardown(self):
        self.eng.check_invariants()


TestStoreLifeCycle = StoreLifeCycle.TestCase
TestStoreLifeCycle.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])



# -- a random workload, chosen from the engine's own state -----------------------------------------------
def stock_up(eng: pyomni.Engine, rnd: random.Random) -> None:
    for loc in LOCS:
        for sku in SKUS:
            qty = rnd.choice([0, 0, 1, 2, 3])
            if qty:
                eng.set_stock(loc, sku, qty)


def random_step(eng: pyomni.Engine, clock: FakeClock, rnd: random.Random, serial: int) -> None:
    """One random command of a store's day; refusals are part of it. Decided from ``rnd`` and the engine's
    state alone, so two engines in the same state given the same ``rnd`` do the same thing."""
    roll = rnd.random()
    try:
        if roll < 0.2:
            lines = [(rnd.randrange(len(SKUS)), rnd.randint(1, 2), rnd.choice([0, 999, 4999]))
                     for _ in range(rnd.randint(1, 2))]
            order = make_order(f"w-{serial}", rnd.choice(["delivery", "pickup", "same_day"]), rnd.randrange(20), lines,
                               rnd.choice([0.0, 0.2]), rnd.choice(["app", "tmall"]), None)
            eng.route_order(order, ttl=rnd.choice(TTLS))
        elif roll < 0.55:
            ships = eng.shipments()
            if ships:
                ship = rnd.choice(ships)
                action = rnd.choice(STEPS)
                if TARGET[action] in FULFILLED and eng.reservation(ship.reservation_id).state is R.HELD:
                    eng.confirm(ship.reservation_id)
                eng.store_action(ship.id, action)
        elif roll < 0.65:
            ships = eng.shipments()
            if ships:
                eng.reject_shipment(rnd.choice(ships).id, rnd.choice(STORE_REASONS))
        elif roll < 0.75:
            held = eng.reservations(R.HELD)
            if held:
                (eng.confirm if rnd.random() < 0.8 else eng.release)(rnd.choice(held).id)
        elif roll < 0.8:
            exceptions = eng.order_exceptions()
            if exceptions:
                eng.resolve_exception(rnd.choice(exceptions).id, retry=rnd.random() < 0.5)
        elif roll < 0.85:
            done = [s for s in eng.shipments(open_only=False) if s.state in FULFILLED]
            if done:
                ship = rnd.choice(done)
                eng.return_line(ship.id, ship.lines[0].sku, 1, location=rnd.choice(LOCS))
        elif roll < 0.88:
            eng.receive(rnd.choice(LOCS), rnd.choice(SKUS), rnd.randint(1, 3))
        else:
            clock.advance(rnd.choice(SECONDS))
            if rnd.random() < 0.8:
                eng.expire_due()
    except errors.InvariantViolation:
        raise
    except errors.PyomniError:
        return          # a random step may be refused (a typed error, nothing changed): the workload goes on


# -- a store group's feed, consumed with disconnects ------------------------------------------------------
class FeedConsumer(RuleBasedStateMachine):
    """A consumer keeps ``view`` -- {shipment id: StoreShipment} of its stores' open shipments -- from
    ``store_events``, and persists it with the ``after`` it resumes from. Terminal shipments are removed from the
    view. A RESET page replaces the view, and is applied whole or not at all (its events all carry the same seq);
    other pages may be cut short by a dropped connection after any event."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(START)
        self.eng = pyomni.Engine(NET, clock=self.clock, reservation_ttl=1800.0)
        set_up(self.eng)
        self.serial = 0
        self.group: list[str] = []
        self.view: dict[str, pyomni.fulfilment.StoreShipment] = {}
        self.after = 0
        self.reset_seq: int | None = None      # the seq of the RESET the view was last rebuilt from
        self.applied: list[int] = []           # every seq applied since then, in order

    @initialize(seed=st.integers(0, 2**32 - 1), group=st.sets(st.sampled_from(LOCS), min_size=1, max_size=5))
    def start(self, seed, group):
        stock_up(self.eng, random.Random(seed))
        self.group = sorted(group)

    @rule(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 20))
    def work(self, seed, n):
        rnd = random.Random(seed)
        for _ in range(n):
            self.serial += 1
            random_step(self.eng, self.clock, rnd, self.serial)

    def page(self, limit: int, wait: bool) -> pyomni.stores.StoreEvents:
        if wait:
            return self.eng.wait_store_events(self.group, self.after, timeout=0, limit=limit)
        return self.eng.store_events(self.group, self.after, limit=limit)

    def apply(self, answer: pyomni.stores.StoreEvents, keep: int) -> None:
        """Apply a page, or (a dropped connection) only its first ``keep`` events."""
        events = answer.events
        if answer.reset:
            assert all(e.kind == "RESET" and e.seq == answer.last_seq for e in events)
            assert all(e.shipment.state not in TERMINAL and e.location in self.group for e in events)
            if keep < len(events):
                event("feed: a RESET page lost")
                return                                           # lost before it was applied: nothing changes
            event("feed: RESET applied")
            self.view = {e.shipment.id: e.shipment for e in events}
            self.after = self.reset_seq = answer.last_seq
            self.applied = []
            return
        for e in events[:keep]:
            assert e.seq > self.after, (e.seq, self.after)       # never one applied before
            assert e.location in self.group and e.shipment.location == e.location
            assert e.kind == e.shipment.state.name or (e.kind == "LATE" and e.shipment.late), e
            if e.shipment.state in TERMINAL:
                self.view.pop(e.shipment.id, None)
            else:
                self.view[e.shipment.id] = e.shipment
            self.after = e.seq
            self.applied.append(e.seq)
        event("feed: page cut short" if keep < len(events) else "feed: page applied" if events else "feed: empty page")
        if keep >= len(events):
            assert answer.last_seq >= self.after
            self.after = answer.last_seq

    @rule(limit=st.sampled_from([1, 2, 5, 10_000]), keep=st.one_of(st.just(10_000), st.integers(0, 3)),
          wait=st.booleans())
    def poll(self, limit, keep, wait):
        self.fetch(limit, keep, wait)

    @rule(limit=st.sampled_from([3, 10_000]), wait=st.booleans())
    def poll_all(self, limit, wait):
        self.fetch(limit, 10_000, wait)

    def fetch(self, limit: int, keep: int, wait: bool) -> None:
        """One page from where the consumer is, applied whole or (the connection drops) its first ``keep``."""
        before = self.after
        answer = self.page(limit, wait)
        assert answer.reset == (before == 0), answer            # an in-memory engine keeps every event here
        assert len(answer.events) <= limit or answer.reset
        self.apply(answer, keep)

    @rule(how=st.sampled_from(["forget", "future"]), ahead=st.integers(1, 5))
    def start_over(self, how, ahead):
        """The consumer lost its store as well (``forget``: it starts from 0), or resumes from a seq the engine
        never issued (``future``: another engine's, say): either way the feed answers with a RESET."""
        self.view, self.reset_seq, self.applied = {}, None, []
        self.after = 0 if how == "forget" else self.eng.store_seq + ahead
        answer = self.page(10_000, False)
        assert answer.reset and answer.last_seq == self.eng.store_seq
        self.apply(answer, 10_000)

    def catch_up(self) -> None:
        while True:
            answer = self.page(7, False)
            self.apply(answer, 10_000)
            if (not answer.events and not answer.reset) or self.after == 0:    # 0: no store event yet at all
                return

    @rule()
    def checkpoint(self):
        self.catch_up()
        self.check_caught_up()

    def check_caught_up(self) -> None:
        assert self.after == self.eng.store_seq
        assert self.view == {s.id: s for loc in self.group for s in self.eng.shipments(loc)}

    @invariant()
    def nothing_skipped(self):
        """Since its last RESET the consumer applied exactly the engine's events of its stores up to ``after``."""
        if not self.reset_seq:                  # none yet, or one from before the first event (it starts over)
            return
        engine = self.eng.store_events(self.group, self.reset_seq, limit=1_000_000)
        assert not engine.reset
        assert [e.seq for e in engine.events if e.seq <= self.after] == self.applied
        self.eng.check_invariants()

    def teardown(self):
        if self.group:
            self.catch_up()
            self.check_caught_up()


TestFeedConsumer = FeedConsumer.TestCase
TestFeedConsumer.settings = settings(max_examples=200, stateful_step_count=50, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# -- a restart in the middle -------------------------------------------------------------------------------
def store_fingerprint(eng: pyomni.Engine) -> tuple:
    """Everything the store side knows, and the stock and reservations under it."""
    cells = sorted(tuple(c.values()) for c in eng.stock_table().to_pylist() if any(list(c.values())[2:]))
    return (eng.shipments(open_only=False, limit=100_000), eng.order_exceptions(None), eng.returns(),
            eng.settlement_facts().to_pylist(), eng.discrepancies().to_pylist(), eng.store_seq, eng.reservations(),
            cells)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), before=st.integers(1, 80), after=st.integers(0, 40),
       save=st.sampled_from(["never", "early", "middle", "last"]))
def test_a_restart_in_the_middle_changes_nothing(seed, before, after, save):
    root = Path(tempfile.mkdtemp())
    try:
        clock, twin_clock = FakeClock(START), FakeClock(START)
        eng = pyomni.Engine.open(root, NET, clock=clock, fsync="never", reservation_ttl=1800.0)
        twin = pyomni.Engine(NET, clock=twin_clock, reservation_ttl=1800.0)       # never restarts
        rnd, twin_rnd = random.Random(seed), random.Random(seed)
        for e, r in ((eng, rnd), (twin, twin_rnd)):
            set_up(e)
            stock_up(e, r)
        floor = 0                                    # the store seq of the newest snapshot
        for i in range(before):
            random_step(eng, clock, rnd, i)
            random_step(twin, twin_clock, twin_rnd, i)
            if (save == "early" and i == 0) or (save == "middle" and i == before // 2) or (
                    save == "last" and i == before - 1):
                eng.save()
                floor = eng.store_seq
        expected = store_fingerprint(eng)
        assert expected == store_fingerprint(twin)
        seq = eng.store_seq
        feeds = {after_seq: eng.store_events(LOCS, after_seq) for after_seq in range(seq + 1)}
        eng.close()

        eng = pyomni.Engine.open(root, clock=clock)
        eng.check_invariants()
        assert store_fingerprint(eng) == expected
        for after_seq, answer in feeds.items():
            again = eng.store_events(LOCS, after_seq)
            if after_seq < floor or after_seq == 0:             # events from before the snapshot are gone
                assert again.reset and again.last_seq == seq
                assert {e.shipment.id: e.shipment for e in again.events} == {
                    s.id: s for s in eng.shipments(open_only=True, limit=100_000)}
            else:                                               # the journal after it replays them as they were
                assert not again.reset and again.events == answer.events and again.last_seq == seq
        # and it goes on exactly as an engine that never stopped
        for i in range(before, before + after):
            random_step(eng, clock, rnd, i)
            random_step(twin, twin_clock, twin_rnd, i)
        assert store_fingerprint(eng) == store_fingerprint(twin)
        eng.check_invariants()
        eng.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- known bugs: minimal reproductions -------------------------------------------------------------------
def small_engine() -> tuple[pyomni.Engine, FakeClock]:
    clock = FakeClock(dt.datetime(2026, 11, 11, 12, 0, tzinfo=CST).timestamp())
    eng = pyomni.Engine(NET, clock=clock, reservation_ttl=86_400.0)
    eng.set_store_rules(None, StoreRules(OpeningHours(0, 1440), answer_s=600, pick_s=7200))
    return eng, clock


def test_picking_without_accepting_starts_the_pick_limit():
    eng, clock = small_engine()
    eng.set_stock(STORES[0], SKUS[0], 1)
    eng.route_order(Order("o-1", [(SKUS[0], 1)], destination=WHERE[STORES[0]]))
    (ship,) = eng.shipments(STORES[0])
    picked = eng.pick_shipment(ship.id)                       # a step skipped forward: the pick limit starts
    assert picked.due_at == clock() + 7200


def test_an_order_exception_carries_every_line_it_took_away():
    eng, _ = small_engine()
    a, b = STORES[0], STORES[3]
    eng.set_stock(a, SKUS[0], 1)
    eng.set_stock(a, SKUS[1], 1)
    eng.set_stock(b, SKUS[0], 1)                              # b could take SKU 0 again, nobody else SKU 1
    eng.route_order(Order("o-1", [(SKUS[0], 1), (SKUS[1], 1)], destination=WHERE[a]))
    (ship,) = eng.shipments(a)
    assert len(ship.lines) == 2
    r = eng.reject_shipment(ship.id, "NO_STAFF")
    assert r.new_shipments == () and r.exception is not None
    assert sorted((x.sku, x.requested) for x in r.exception.lines) == [(SKUS[0], 1), (SKUS[1], 1)]


def test_equal_deadlines_fire_in_the_same_order_after_a_restart(tmp_path):
    a, b, c = STORES[2], STORES[5], STORES[6]             # Xi'an, Benxi, Jingdezhen: far apart, nearest wins

    def day(eng: pyomni.Engine) -> None:
        eng.set_store_rules(None, StoreRules(OpeningHours(0, 1440), answer_s=600))
        for loc in (a, b, c):
            eng.set_stock(loc, SKUS[0], 1)
        eng.route_order(Order("o-1", [(SKUS[0], 1)], destination=WHERE[a]))      # R1-1 at a, due in 600 s
        eng.route_order(Order("o-2", [(SKUS[0], 1)], destination=WHERE[b]))      # R2-1 at b, due in 600 s
        assert [s.location for s in eng.shipments()] == [a, b]
        eng.reject_shipment("R0000000001-1", "NO_STAFF")                         # R1-2 at c, due at the same time
        assert eng.shipment("R0000000001-2").location == c

    clock, twin_clock = FakeClock(START), FakeClock(START)
    with pyomni.Engine.open(tmp_path, NET, clock=clock, fsync="never", reservation_ttl=86_400.0) as eng:
        day(eng)
        eng.save()
    twin = pyomni.Engine(NET, clock=twin_clock, reservation_ttl=86_400.0)
    day(twin)
    assert twin.shipment("R0000000001-2").due_at == twin.shipment("R0000000002-1").due_at
    with pyomni.Engine.open(tmp_path, clock=clock) as again:
        for c_ in (clock, twin_clock):
            c_.advance(601)                    # both time out: R2-1 was due first (it was routed first)
        again.expire_due()
        twin.expire_due()
        assert twin.order_exceptions() == []   # R2-1 went to a, then R1-2 to the b that R2-1 freed
        assert again.order_exceptions() == twin.order_exceptions()
        assert again.shipments(open_only=False) == twin.shipments(open_only=False)


def test_the_order_systems_reroute_back_to_a_store_that_had_an_uncollected_pickup():
    eng, clock = small_engine()
    eng.set_store_rules(None, StoreRules(OpeningHours(0, 1440), answer_s=600, collect_days=1))
    a, b = STORES[2], STORES[5]
    eng.set_stock(a, SKUS[0], 1)
    eng.set_stock(b, SKUS[1], 1)
    held = eng.route_order(Order("p-1", [(SKUS[0], 1), (SKUS[1], 1)], pickup_location=a))
    assert [s.location for s in eng.shipments()] == [a, b]      # collected at a, SKU 1 sent there from b
    eng.accept_shipment("R0000000001-2")
    clock.now = eng.ready_shipment("R0000000001-1").due_at + 1
    eng.set_stock(a, SKUS[1], 1)                               # the clock first: the pickup is NOT_COLLECTED
    assert eng.shipment("R0000000001-1").state is S.NOT_COLLECTED
    moved = eng.reroute(held.reservation_id, b)                 # b's parcel goes to a, which has SKU 1 now
    assert [s.location for s in moved.shipments] == [a]
    assert [s.location for s in eng.shipments()] == [a]
    eng.check_invariants()
