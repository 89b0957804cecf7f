"""Exact plans: the cheapest whole-line plan, proven, and the SKU trees that make routing scale.

What is held here (definitions in ``core/router.pyx``):

* the native core and the brute-force reference decide identically on random networks and orders, with
  closed and excluded locations, capacity, distance limits, pickup and same-day orders, ties and both plan
  objectives -- including ``optimal`` and ``lower_bound``;
* an independent brute force (written below from the documented cost model, not from either router) agrees
  that every plan marked optimal is the cheapest plan sending each line whole from one location;
* the exact plan never costs more than the greedy split it replaced;
* the SKU trees stay right while cells are added (their overflow), rolled back and rebuilt.
"""

from __future__ import annotations

import itertools
import math
import random

import pyarrow as pa
import pytest
from conftest import SHANGHAI, make_city_net

import pyomni
from pyomni import Capability, Fulfilment, Location, LocationKind, Order, RoutingPolicy
from pyomni.io import STOCK_EVENT_SCHEMA
from pyomni.reference import chord_sq, chord_sq_to_km, unit_vector

CITIES = ((31.23, 121.47), (30.27, 120.16), (32.06, 118.80), (31.30, 120.59), (39.90, 116.41))


def random_network(rng: random.Random, n_locations: int, n_skus: int) -> pyomni.Network:
    """Locations scattered around a few real cities, with random costs, priorities and capabilities."""
    locations = []
    for i in range(n_locations):
        lat, lon = rng.choice(CITIES)
        warehouse = rng.random() < 0.15
        caps = Capability.SHIP if warehouse else rng.choice(
            [Capability.SHIP | Capability.PICKUP, Capability.SHIP | Capability.PICKUP | Capability.SAME_DAY,
             Capability.PICKUP])
        locations.append(Location(
            f"L{i:03d}", LocationKind.WAREHOUSE if warehouse else LocationKind.STORE,
            lat + rng.uniform(-0.3, 0.3), lon + rng.uniform(-0.3, 0.3), capabilities=caps,
            fixed_cost=rng.choice([5.0, 8.0, 8.0, 10.0, 12.0]),      # repeated values: ties happen
            priority=rng.choice([0, 0, 1, 2]), daily_capacity=rng.choice([0, 0, 0, 2, 5])))
    return pyomni.Network.from_locations(locations, skus=[f"S{k:02d}" for k in range(n_skus)])


def random_stock(rng: random.Random, net: pyomni.Network, density: float) -> list[dict]:
    rows = []
    for loc in net.ids:
        for sku in net.skus:
            if rng.random() < density:
                rows.append({"location": loc, "sku": sku, "event": "set", "qty": rng.choice([1, 1, 2, 3, 5, 9]),
                             "safety": rng.choice([0, 0, 1])})
    return rows


def random_order(rng: random.Random, net: pyomni.Network, i: int) -> Order:
    n_lines = rng.choice([1, 2, 2, 3, 3, 4, 5, 6, 7])
    lines = [(s, rng.choice([1, 1, 1, 2, 3])) for s in rng.sample(net.skus, n_lines)]
    kwargs: dict = {"max_splits": rng.choice([None, 1, 2, 3, 4, 6])}
    kind = rng.random()
    if kind < 0.15:
        kwargs["pickup_location"] = rng.choice(
            [x for j, x in enumerate(net.ids) if net.capabilities[j] & Capability.PICKUP])
    else:
        lat, lon = rng.choice(CITIES)
        kwargs["destination"] = (lat + rng.uniform(-0.2, 0.2), lon + rng.uniform(-0.2, 0.2))
        if kind < 0.25:
            kwargs["fulfilment"] = Fulfilment.SAME_DAY
        elif kind < 0.35:
            kwargs["max_distance_km"] = rng.choice([20.0, 80.0, 300.0])
        elif kind < 0.45:
            kwargs["excluded_locations"] = rng.sample(net.ids, 3)
    return Order(f"o-{i}", lines, **kwargs)


def decided(a: pyomni.Allocation) -> tuple:
    e = a.explanation
    return (a.status, a.shipments, a.total_cost, a.short_lines, e.split, e.split_reason, e.optimal,
            e.lower_bound)


def outcome(call, *args, **kwargs) -> tuple:
    try:
        return ("ok", decided(call(*args, **kwargs)))
    except pyomni.errors.PyomniError as exc:
        return ("error", type(exc), exc.field)


def events(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{"safety": None, **r} for r in rows], schema=STOCK_EVENT_SCHEMA)


def twins(net, rows, **kwargs) -> tuple[pyomni.Engine, pyomni.Engine]:
    engines = pyomni.Engine(net, native=True, **kwargs), pyomni.Engine(net, native=False, **kwargs)
    for eng in engines:
        if rows:
            eng.apply_stock_events(events(rows))
    return engines


POLICIES = (RoutingPolicy(),
            RoutingPolicy(name="fewest", plan_objective="fewest_shipments"),
            RoutingPolicy(name="far", cost_per_km=0.2, split_penalty=1.0, low_stock_weight=6.0, load_weight=8.0),
            RoutingPolicy(name="flat", cost_per_km=0.0, split_penalty=0.0, low_stock_weight=0.0, load_weight=0.0,
                          priority_weight=0.0))   # everything ties: the tie rules decide


@pytest.mark.parametrize("seed", range(6))
def test_native_and_reference_decide_identically(seed):
    rng = random.Random(seed)
    net = random_network(rng, rng.choice([12, 25, 40]), 10)
    native, reference = twins(net, random_stock(rng, net, rng.choice([0.2, 0.45])))
    for eng in (native, reference):
        for pol in POLICIES[1:]:
            eng.register_policy(pol)
    closed = rng.sample(net.ids, 2)
    for eng in (native, reference):
        for loc in closed:
            eng.set_location_open(loc, False)
    seen = set()
    for i in range(150):
        order = random_order(rng, net, i)
        pol = POLICIES[i % len(POLICIES)].key
        a = outcome(native.quote, order, policy=pol)
        assert a == outcome(reference.quote, order, policy=pol), (order, pol)
        if a[0] == "ok":
            seen.add((a[1][0], a[1][5], a[1][6]))
        if i % 3 == 0:       # hold some, so loads and availability move
            r = outcome(native.route_order, order, policy=pol)
            assert r == outcome(reference.route_order, order, policy=pol), (order, pol)
    assert (pyomni.AllocationStatus.QUOTED, "", True) in seen


def independent_minimum(eng: pyomni.Engine, net: pyomni.Network, order: Order, pol: RoutingPolicy) -> float:
    """The cheapest plan sending each line whole from one location, by enumerating every assignment of
    lines to locations, priced from the documented cost model (pyomni.policy). Plain delivery orders on
    engines without capacity limits, so every open location that ships is eligible."""
    dest = unit_vector(*order.destination)
    per_km = pol.cost_per_km * pol.circuity
    locs = [i for i, x in enumerate(net.ids) if net.capabilities[i] & Capability.SHIP]
    avail = {(i, line.sku): eng.available(line.sku, location=net.ids[i]) for i in locs for line in order.lines}
    k = min(order.max_splits or pol.max_splits, len(order.lines))
    best = math.inf
    for assign in itertools.product(locs, repeat=len(order.lines)):
        if any(avail[(loc, line.sku)] < line.qty for loc, line in zip(assign, order.lines)):
            continue
        used = list(dict.fromkeys(assign))       # parcels in order of their first line
        if len(used) > k:
            continue
        total = 0.0
        for n, loc in enumerate(used):
            km = chord_sq_to_km(chord_sq(unit_vector(net.lat[loc], net.lon[loc]), dest))
            low = sum(line.qty / avail[(loc, line.sku)] for l2, line in zip(assign, order.lines) if l2 == loc)
            total += (net.fixed_cost[loc] + (pol.split_penalty if n else 0.0) + per_km * km
                      + pol.low_stock_weight * low + pol.priority_weight * net.priority[loc])
        best = min(best, total)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_optimal_plans_are_the_cheapest_whole_line_plans(seed):
    rng = random.Random(100 + seed)
    locations = [Location(f"L{i}", LocationKind.STORE, lat + rng.uniform(-0.4, 0.4), lon + rng.uniform(-0.4, 0.4),
                          capabilities=Capability.SHIP, fixed_cost=rng.choice([5.0, 8.0, 11.0]),
                          priority=rng.choice([0, 1, 2]))
                 for i, (lat, lon) in enumerate(rng.choice(CITIES) for _ in range(9))]
    net = pyomni.Network.from_locations(locations, skus=[f"S{k}" for k in range(6)])
    eng = pyomni.Engine(net)
    eng.apply_stock_events(events(random_stock(rng, net, 0.5)))
    pol = RoutingPolicy(cost_per_km=rng.choice([0.03, 0.3]), split_penalty=rng.choice([1.0, 4.0]))
    checked = 0
    for i in range(60):
        lat, lon = rng.choice(CITIES)
        lines = [(s, rng.choice([1, 1, 2])) for s in rng.sample(net.skus, rng.choice([2, 3, 4]))]
        order = Order(f"o-{i}", lines, destination=(lat, lon), max_splits=rng.choice([2, 3, 4]))
        a = eng.quote(order, policy=pol)
        minimum = independent_minimum(eng, net, order, pol)
        if a.ok and a.explanation.optimal:
            assert a.total_cost == pytest.approx(minimum, rel=1e-12, abs=1e-9), order
            assert a.explanation.lower_bound == a.total_cost
            checked += 1
        elif a.ok:          # the greedy split won: it splits a line's units and beats every whole-line plan
            assert a.total_cost < minimum - 1e-9
            assert a.explanation.lower_bound <= a.total_cost
        else:
            assert minimum == math.inf
        if a.ok and a.explanation.next_best_cost is not None:
            assert a.explanation.next_best_cost >= a.total_cost
    assert checked >= 20


def greedy_decision(router, pol, dest, skus, qtys, max_ship) -> float:
    """The total cost the router chose before exact plans: the single location unless the greedy split is
    strictly cheaper (the reference's own pieces, under the old rule)."""
    km_of = [chord_sq_to_km(chord_sq(router.xyz[loc], dest)) for loc in range(router.n)]
    eligible = [loc for loc in range(router.n) if router.is_open[loc] and router.caps[loc] & Capability.SHIP]
    singles = router._singles(pol, eligible, km_of, skus, qtys)
    single = singles[0][0] if singles else math.inf
    if singles and (max_ship == 1 or single <= 2 * router.min_fixed + pol.split_penalty):
        return single
    plan, remaining, total = router._greedy(pol, eligible, km_of, skus, qtys, max_ship, single)
    if plan and not any(remaining) and (not singles or (len(plan) > 1 and total < single)):
        return total
    return single


def test_exact_plans_never_cost_more_than_the_greedy_split():
    net = pyomni.demo_network(stores=120, warehouses=4, skus=400, seed=5)
    stock = pyomni.demo_stock(net, seed=5)
    native = pyomni.Engine(net)
    reference = pyomni.Engine(net, native=False)
    for eng in (native, reference):
        eng.apply_stock_events(stock)
    router = reference._router
    pol = pyomni.DEFAULT_POLICY
    improved = 0
    for order in pyomni.demo_orders(net, 600, seed=6, max_lines=5):
        a = native.quote(order)
        skus = [reference._sku_index[line.sku] for line in order.lines]
        qtys = [line.qty for line in order.lines]
        old = greedy_decision(router, pol, unit_vector(*order.destination), skus, qtys, pol.max_splits)
        if not a.ok:
            assert old == math.inf
            continue
        assert a.total_cost <= old + 1e-9, order
        improved += a.total_cost < old - 1e-9
    assert improved > 0            # the exact search does find cheaper plans on demo orders


def test_fewest_shipments_policy_prefers_one_parcel_at_a_higher_cost():
    net = make_city_net()
    fewest = RoutingPolicy(name="fewest", plan_objective="fewest_shipments")
    for native in (True, False):
        eng = pyomni.Engine(net, native=native)
        eng.register_policy(fewest)
        eng.apply_stock_events(events([
            {"location": "SH-PEOPLE", "sku": "SKU-A", "event": "set", "qty": 5},
            {"location": "SH-PUDONG", "sku": "SKU-B", "event": "set", "qty": 5},
            {"location": "BJ-DONGCHENG", "sku": "SKU-A", "event": "set", "qty": 5},
            {"location": "BJ-DONGCHENG", "sku": "SKU-B", "event": "set", "qty": 5}]))
        order = Order("o-1", [("SKU-A", 1), ("SKU-B", 1)], destination=SHANGHAI)
        cheapest, one = eng.quote(order), eng.quote(order, policy="fewest")
        assert [s.location for s in cheapest.shipments] == ["SH-PEOPLE", "SH-PUDONG"]
        assert [s.location for s in one.shipments] == ["BJ-DONGCHENG"]
        assert one.total_cost > cheapest.total_cost
        assert one.explanation.optimal and cheapest.explanation.optimal
        with pytest.raises(pyomni.errors.InvalidArgument) as exc:
            RoutingPolicy(plan_objective="fastest")
        assert exc.value.field == "plan_objective"


def test_orders_past_the_exact_size_keep_the_heuristic_and_report_a_bound():
    net = pyomni.demo_network(stores=60, warehouses=3, skus=300, seed=11)
    native, reference = twins(net, None)
    stock = pyomni.demo_stock(net, seed=11, density=0.3)
    for eng in (native, reference):
        eng.apply_stock_events(stock)
    rng = random.Random(3)
    lat, lon = 31.23, 121.47
    for i in range(20):
        order = Order(f"big-{i}", [(s, 1) for s in rng.sample(net.skus[:60], 8)], destination=(lat, lon),
                      max_splits=4)
        a, b = native.quote(order), reference.quote(order)
        assert decided(a) == decided(b)
        if a.ok and a.explanation.split:
            assert a.explanation.optimal is False
            assert 0 < a.explanation.lower_bound <= a.total_cost


def test_sku_trees_follow_new_cells_rollbacks_and_rebuilds():
    # 300 stores holding one SKU: more than SCAN_LIMIT cells, so it is routed through its tree
    rng = random.Random(9)
    locations = [Location(f"S{i:03d}", LocationKind.STORE, 30 + rng.uniform(0, 3), 119 + rng.uniform(0, 3),
                          capabilities=Capability.SHIP, fixed_cost=rng.choice([8.0, 9.0, 10.0]))
                 for i in range(300)]
    net = pyomni.Network.from_locations(locations, skus=["TEE", "CAP"])
    native, reference = twins(net, [{"location": x, "sku": "TEE", "event": "set", "qty": 3} for x in net.ids[20:]])
    customers = [(30 + rng.uniform(0, 3), 119 + rng.uniform(0, 3)) for _ in range(40)]

    def same_answers() -> None:
        for k, dest in enumerate(customers):
            order = Order(f"q-{k}", [("TEE", rng.choice([1, 2]))], destination=dest)
            assert decided(native.quote(order)) == decided(reference.quote(order))

    same_answers()
    assert native.stats()["routing_index_bytes"] > 0
    # a few new cells: they are the tree's overflow until it is rebuilt
    for eng in (native, reference):
        eng.apply_stock_events(events([{"location": x, "sku": "TEE", "event": "set", "qty": 9} for x in net.ids[:5]]))
    same_answers()
    # a batch that adds cells and then fails is rolled back: the dropped cells must not stay in any tree
    bad = [{"location": x, "sku": "TEE", "event": "set", "qty": 9} for x in net.ids[5:12]]
    bad.append({"location": net.ids[30], "sku": "TEE", "event": "sale", "qty": 100})
    for eng in (native, reference):
        with pytest.raises(pyomni.errors.PyomniError):
            eng.apply_stock_events(events(bad))
    same_answers()
    # the rolled-back indices are reused by other cells (of another SKU), then many new cells force a rebuild
    for eng in (native, reference):
        eng.apply_stock_events(events([{"location": x, "sku": "CAP", "event": "set", "qty": 1} for x in net.ids[5:12]]))
        eng.apply_stock_events(events([{"location": x, "sku": "TEE", "event": "set", "qty": 1} for x in net.ids[5:20]]))
    same_answers()
    native.check_invariants()


def test_sku_tree_bounds_follow_stock_that_comes_back():
    # The trees bound what each subtree holds; a hold only lowers stock (the bound stays valid), a release,
    # a receipt or a return raises it and must lift the bound, also past the ledger's raise log (8,192 raises
    # between two decisions: every bound is recomputed).
    rng = random.Random(12)
    locations = [Location(f"S{i:03d}", LocationKind.STORE, 30 + rng.uniform(0, 3), 119 + rng.uniform(0, 3),
                          capabilities=Capability.SHIP, fixed_cost=8.0) for i in range(400)]
    net = pyomni.Network.from_locations(locations, skus=["TEE", "CAP"])
    native, reference = twins(net, [{"location": x, "sku": s, "event": "set", "qty": 1}
                                    for x in net.ids for s in ("TEE", "CAP")])
    customers = [(30 + rng.uniform(0, 3), 119 + rng.uniform(0, 3)) for _ in range(30)]

    def same_answers(qty: int) -> None:
        for k, dest in enumerate(customers):
            order = Order(f"q-{k}", [("TEE", qty), ("CAP", 1)], destination=dest, max_splits=1)
            assert decided(native.quote(order)) == decided(reference.quote(order)), (k, qty)

    same_answers(2)                                     # nobody has two: unfulfillable everywhere
    held = {eng: [eng.route_order(Order(f"h-{k}", [("TEE", 1)], destination=d)).reservation_id
                  for k, d in enumerate(customers)] for eng in (native, reference)}
    assert held[native] == held[reference] and all(held[native])
    same_answers(1)
    for eng in (native, reference):                     # releases raise what the holds lowered
        for rid in held[eng]:
            eng.release(rid)
    same_answers(1)
    for eng in (native, reference):                     # a receipt somewhere: now one store has three
        eng.apply_stock_events(events([{"location": net.ids[123], "sku": "TEE", "event": "receive", "qty": 2}]))
    same_answers(2)
    for eng in (native, reference):                     # more raises than the log holds, in one batch
        eng.apply_stock_events(events([{"location": x, "sku": s, "event": "receive", "qty": 1}
                                       for x in net.ids for s in ("TEE", "CAP")] * 11))
    assert native.stats()["cells"] == 800
    same_answers(9)
    native.check_invariants()
