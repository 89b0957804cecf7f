"""Parity: the compiled core and the plain-Python reference give identical answers.

(a) seeded random orders on a demo network, quoted and then routed on both;
(b) a hypothesis state machine driving both engines with random commands,
    checking after every step that their ledgers agree, that both pass
    ``check_invariants()``, and that on-hand stock is conserved.

What may legitimately differ is how a decision was *found*: the explanation's
``strategy``, ``considered``, ``rejected`` and ``runners_up`` (the native search
prunes, the reference scans everything). Everything decided must be identical.
"""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
from conftest import CITY_LOCATIONS, FakeClock, make_city_net
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import pyomni
from pyomni import Capability, Fulfilment, Order, errors


def decided(a: pyomni.Allocation) -> tuple:
    """The parts of an allocation both backends must agree on."""
    e = a.explanation
    return (a.order_id, a.status, a.reservation_id, a.shipments, a.total_cost, a.short_lines, a.expires_at,
            e.split, e.split_reason, e.policy)


def outcome(command, *args, **kwargs):
    """``("ok", decided answer)`` or ``("error", class, field)`` of ``command(*args, **kwargs)``."""
    try:
        return ("ok", decided(command(*args, **kwargs)))
    except errors.PyomniError as exc:
        return ("error", type(exc), exc.field)


def rows(eng: pyomni.Engine) -> list[tuple]:
    return sorted(tuple(r.values()) for r in eng.stock_table().to_pylist())


# -- (a) seeded random orders ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo():
    net = pyomni.demo_network(stores=60, warehouses=3, skus=300, seed=11)
    return net, pyomni.demo_stock(net, seed=11)


def twin_engines(net, stock, **kwargs) -> tuple[pyomni.Engine, pyomni.Engine]:
    clock = FakeClock()
    native = pyomni.Engine(net, native=True, clock=clock, **kwargs)
    reference = pyomni.Engine(net, native=False, clock=clock, **kwargs)
    for eng in (native, reference):
        eng.apply_stock_events(stock)
    assert rows(native) == rows(reference)
    return native, reference


def order_mix(net: pyomni.Network, seed: int) -> list[Order]:
    """Demo delivery orders plus pickup, same-day, split-limited, distance-limited and excluding variants."""
    rng = random.Random(seed)
    base = pyomni.demo_orders(net, 400, seed=seed, max_lines=4)
    pickup_stores = [x for i, x in enumerate(net.ids) if net.capabilities[i] & Capability.PICKUP]
    out = []
    for i, o in enumerate(base):
        kind = i % 8
        if kind == 1:
            o = Order(o.id, o.lines, pickup_location=rng.choice(pickup_stores))
        elif kind == 2:
            o = Order(o.id, o.lines, destination=o.destination, fulfilment=Fulfilment.SAME_DAY)
        elif kind == 3:
            o = Order(o.id, o.lines, destination=o.destination, max_splits=rng.choice([1, 2]))
        elif kind == 4:
            o = Order(o.id, o.lines, destination=o.destination, max_distance_km=rng.choice([25.0, 150.0, 800.0]))
        elif kind == 5:
            o = Order(o.id, o.lines, destination=o.destination, excluded_locations=rng.sample(net.ids, 5))
        elif kind == 6:
            o = Order(o.id, tuple(pyomni.Line(x.sku, x.qty * rng.choice([3, 10, 40])) for x in o.lines),
                      destination=o.destination, max_splits=rng.choice([3, 8, 16]))
        out.append(o)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_quotes_are_identical(demo, seed):
    net, stock = demo
    native, reference = twin_engines(net, stock)
    orders = order_mix(net, seed)
    statuses = set()
    for o in orders:
        a, b = native.quote(o), reference.quote(o)
        assert decided(a) == decided(b), o
        statuses.add((a.status, a.explanation.split_reason))
    # the mix really exercises single, split and unfulfillable answers
    assert {s for s, _ in statuses} == {pyomni.AllocationStatus.QUOTED, pyomni.AllocationStatus.UNFULFILLABLE}
    assert {r for _, r in statuses} >= {"", "NO_SINGLE_LOCATION", "CHEAPER"}


@pytest.mark.parametrize("seed", [3, 4])
def test_routing_sequences_are_identical(demo, seed):
    net, stock = demo
    native, reference = twin_engines(net, stock, reservation_ttl=600.0)
    policy = pyomni.RoutingPolicy(name="dear-km", version=2, cost_per_km=0.2, load_weight=10.0)
    closed = random.Random(seed).sample(net.ids, 3)
    for eng in (native, reference):
        eng.register_policy(policy)
        for loc in closed:
            eng.set_location_open(loc, False)
        for loc in net.ids[:20]:
            eng.set_daily_capacity(loc, 3)           # loads matter: capacity runs out, the load cost moves
    held: list[str] = []
    for i, o in enumerate(order_mix(net, seed)):
        pol = "dear-km" if i % 5 == 0 else None
        a = outcome(native.route_order, o, policy=pol)
        assert a == outcome(reference.route_order, o, policy=pol), o
        if a[0] == "ok" and a[1][2]:
            held.append(a[1][2])
        if i % 7 == 3 and held:
            rid = held.pop(0)
            assert native.confirm(rid) == reference.confirm(rid)
        if i % 11 == 5 and held:
            rid = held.pop()
            assert native.release(rid) == reference.release(rid)
        if i % 13 == 0 and held:
            rid = held[0]
            loc = native.reservation(rid).shipments[0].location
            r = outcome(native.reroute, rid, loc)
            assert r == outcome(reference.reroute, rid, loc)
            if r[1][1] is pyomni.AllocationStatus.UNFULFILLABLE:
                held.pop(0)          # a failed reroute released the reservation
        if i == 200:
            native.new_day()
            reference.new_day()
    assert rows(native) == rows(reference)
    assert native.reservations() == reference.reservations()
    for rid in held[:50]:
        native.confirm(rid)
        reference.confirm(rid)
    assert rows(native) == rows(reference)
    native.check_invariants()
    reference.check_invariants()
    for sku in net.skus:
        assert native.available(sku) == reference.available(sku)


def test_store_locator_is_identical(demo):
    net, stock = demo
    native, reference = twin_engines(net, stock)
    rng = random.Random(7)
    for o in pyomni.demo_orders(net, 100, seed=7, max_lines=3):
        radius = rng.choice([5.0, 50.0, 500.0])
        sku = o.lines[0].sku
        assert native.available_near(sku, o.destination, radius_km=radius) == reference.available_near(
            sku, o.destination, radius_km=radius)
        assert native.find_pickup_locations(o.lines, o.destination, radius_km=radius) == \
            reference.find_pickup_locations(o.lines, o.destination, radius_km=radius)


# -- (b) stateful parity -----------------------------------------------------------------------------
MACHINE_LOCATIONS = ("SH-PEOPLE", "SH-PUDONG", "SH-XUHUI", "SZ-CENTRE", "HZ-WESTLAKE", "BJ-DONGCHENG",
                     "WH-JIADING", "WH-BEIJING")
MACHINE_SKUS = ("SKU-A", "SKU-B", "SKU-C", "SKU-D", "SKU-E")
POINTS = [(lat, lon) for loc, _, lat, lon, _, _ in CITY_LOCATIONS if loc in MACHINE_LOCATIONS] + [
    (31.0, 121.0), (35.0, 118.0)]

locations = st.sampled_from(MACHINE_LOCATIONS)
skus = st.sampled_from(MACHINE_SKUS)
small = st.integers(1, 4)


def machine_network() -> pyomni.Network:
    net = make_city_net(**{"SH-PUDONG": {"daily_capacity": 2}, "HZ-WESTLAKE": {"daily_capacity": 3}})
    keep = [loc for loc in net if loc.id in MACHINE_LOCATIONS]
    return pyomni.Network.from_locations(keep, skus=MACHINE_SKUS)


@st.composite
def orders(draw, order_id: str) -> Order:
    lines = draw(st.lists(st.tuples(skus, small), min_size=1, max_size=3, unique_by=lambda x: x[0]))
    how = draw(st.sampled_from(["delivery", "delivery", "pickup", "same_day"]))
    kwargs = {"max_splits": draw(st.sampled_from([None, 1, 2, 3]))}
    if draw(st.booleans()):
        kwargs["excluded_locations"] = draw(st.lists(locations, max_size=2, unique=True))
    if how == "pickup":
        kwargs["pickup_location"] = draw(st.sampled_from(MACHINE_LOCATIONS[:6]))
    else:
        kwargs["destination"] = draw(st.sampled_from(POINTS))
        if how == "same_day":
            kwargs["fulfilment"] = Fulfilment.SAME_DAY
    return Order(order_id, lines, **kwargs)


class TwinEngines(RuleBasedStateMachine):
    """The same commands on a native and a reference engine sharing one fake clock."""

    def __init__(self) -> None:
        super().__init__()
        net = machine_network()
        self.clock = FakeClock()
        self.native = pyomni.Engine(net, native=True, clock=self.clock, reservation_ttl=600.0)
        self.reference = pyomni.Engine(net, native=False, clock=self.clock, reservation_ttl=600.0)
        self.expected_on_hand = 0
        self.rids: list[str] = []
        self.n_orders = 0

    # -- running a command on both -----------------------------------------------------------
    def both(self, command, normalise=lambda x: x):
        """Run ``command(engine)`` on both; same answer or same error class (and then no change)."""
        outcomes = []
        for eng in (self.native, self.reference):
            # holds due at this time expire first, as a command of their own, whatever the command does
            eng.expire_due()
            before = (rows(eng), eng.reservations())
            try:
                outcomes.append(("ok", normalise(command(eng))))
            except errors.PyomniError as exc:
                assert (rows(eng), eng.reservations()) == before, f"{type(exc).__name__} changed state"
                outcomes.append(("error", type(exc), exc.field))
        assert outcomes[0] == outcomes[1]
        return outcomes[0][1] if outcomes[0][0] == "ok" else None

    def on_hand(self, loc: str, sku: str) -> int:
        return self.native.stock(loc, sku).on_hand

    @initialize(levels=st.lists(st.integers(0, 4), min_size=40, max_size=40))
    def opening_stock(self, levels):
        # small, uneven stock everywhere: orders split, stock runs out, lines go short
        cells = [(loc, sku) for loc in MACHINE_LOCATIONS for sku in MACHINE_SKUS]
        for (loc, sku), qty in zip(cells, levels):
            self.both(lambda e, loc=loc, sku=sku, qty=qty: e.set_stock(loc, sku, qty))
        self.expected_on_hand = sum(levels)

    # -- stock rules -----------------------------------------------------------------------------
    @rule(loc=locations, sku=skus, qty=st.integers(0, 6), safety=st.none() | st.integers(0, 2))
    def set_stock(self, loc, sku, qty, safety):
        old = self.on_hand(loc, sku)
        if self.both(lambda e: e.set_stock(loc, sku, qty, safety=safety)) is not None:
            self.expected_on_hand += qty - old

    @rule(loc=locations, sku=skus, qty=st.integers(1, 5))
    def receive(self, loc, sku, qty):
        if self.both(lambda e: e.receive(loc, sku, qty)) is not None:
            self.expected_on_hand += qty

    @rule(loc=locations, sku=skus, qty=st.integers(1, 3))
    def return_item(self, loc, sku, qty):
        if self.both(lambda e: e.return_item(loc, sku, qty)) is not None:
            self.expected_on_hand += qty

    @rule(loc=locations, sku=skus, qty=small)
    def sell(self, loc, sku, qty):
        if self.both(lambda e: e.sell(loc, sku, qty)) is not None:
            self.expected_on_hand -= qty

    @rule(loc=locations, sku=skus, delta=st.integers(-4, 4).filter(bool))
    def adjust(self, loc, sku, delta):
        if self.both(lambda e: e.adjust_stock(loc, sku, delta)) is not None:
            self.expected_on_hand += delta

    @rule(src=locations, dst=locations, sku=skus, qty=small)
    def transfer(self, src, dst, sku, qty):
        self.both(lambda e: e.transfer(src, dst, sku, qty))        # conserves on-hand

    @rule(loc=locations, sku=skus, safety=st.integers(0, 2))
    def set_safety(self, loc, sku, safety):
        self.both(lambda e: e.set_safety(loc, sku, safety))

    @rule(events=st.lists(st.tuples(locations, skus, st.sampled_from(["receive", "sale", "adjust"]),
                                    st.integers(-2, 4)), min_size=1, max_size=5))
    def apply_events(self, events):
        old = sum(r[2] for r in rows(self.native))
        table = pa.table({"location": [e[0] for e in events], "sku": [e[1] for e in events],
                          "event": [e[2] for e in events], "qty": pa.array([e[3] for e in events], pa.int64())})
        if self.both(lambda e: e.apply_stock_events(table)) is not None:
            delta = sum(-q if kind == "sale" else q for _, _, kind, q in events)
            self.expected_on_hand += delta
            assert sum(r[2] for r in rows(self.native)) == old + delta

    # -- routing and reservations ---------------------------------------------------------------
    @rule(data=st.data())
    def route(self, data):
        self.n_orders += 1
        order = data.draw(orders(f"o-{self.n_orders}"))
        a = self.both(lambda e: e.route_order(order), decided)
        if a is not None:
            event(f"route: {a[1].name}, {len(a[3])} shipment(s)")
            if a[2] is not None:
                self.rids.append(a[2])

    @rule(data=st.data())
    def quote(self, data):
        order = data.draw(orders("quote"))
        self.both(lambda e: e.quote(order), decided)

    @rule(data=st.data())
    def route_live_id_again(self, data):
        # an order id that may still be live: DuplicateId on both, or a new reservation on both
        if self.n_orders:
            order = data.draw(orders(f"o-{data.draw(st.integers(1, self.n_orders))}"))
            a = self.both(lambda e: e.route_order(order), decided)
            if a is not None and a[2] is not None:
                self.rids.append(a[2])

    def pick(self, data) -> str:
        return data.draw(st.sampled_from(self.rids))

    @precondition(lambda self: self.rids)
    @rule(data=st.data())
    def confirm(self, data):
        rid = self.pick(data)
        r = self.both(lambda e: e.confirm(rid))
        event(f"confirm: {'ok' if r else 'error'}")
        if r is not None:
            self.expected_on_hand -= sum(x.qty for s in r.shipments for x in s.lines)

    @precondition(lambda self: self.rids)
    @rule(data=st.data())
    def release(self, data):
        rid = self.pick(data)
        self.both(lambda e: e.release(rid))

    @precondition(lambda self: self.rids)
    @rule(data=st.data())
    def reroute(self, data):
        rid = self.pick(data)
        shipped = [s.location for s in self.native.reservation(rid).shipments]
        loc = data.draw(st.sampled_from(shipped) if shipped and data.draw(st.booleans()) else locations)
        a = self.both(lambda e: e.reroute(rid, loc), decided)
        event(f"reroute: {a[1].name if a else 'error'}")

    @rule(seconds=st.sampled_from([1.0, 120.0, 599.0, 601.0]))
    def advance_clock(self, seconds):
        self.clock.advance(seconds)

    @rule()
    def expire_due(self):
        self.both(lambda e: e.expire_due())

    @rule()
    def new_day(self):
        self.both(lambda e: e.new_day())

    @rule(loc=locations, is_open=st.booleans())
    def open_or_close(self, loc, is_open):
        self.both(lambda e: e.set_location_open(loc, is_open))

    # -- invariants ---------------------------------------------------------------------------------
    @invariant()
    def ledgers_agree(self):
        assert rows(self.native) == rows(self.reference)

    @invariant()
    def reservations_agree(self):
        assert self.native.reservations() == self.reference.reservations()

    @invariant()
    def both_are_consistent(self):
        self.native.check_invariants()
        self.reference.check_invariants()

    @invariant()
    def on_hand_is_conserved(self):
        for eng in (self.native, self.reference):
            assert sum(r[2] for r in rows(eng)) == self.expected_on_hand

    @invariant()
    def online_never_oversells(self):
        for eng in (self.native, self.reference):
            for r in rows(eng):
                assert 0 <= r[3] <= r[2]      # 0 <= reserved <= on_hand
            for sku in MACHINE_SKUS:
                assert eng.available(sku) == sum(max(0, r[2] - r[3] - r[4]) for r in rows(eng) if r[1] == sku)


TwinEngines.TestCase.settings = settings(
    max_examples=30, stateful_step_count=40, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestTwinEngines = TwinEngines.TestCase
