"""Routing decisions by intent, on both backends (definitions: core/router.pyx).

Cost of a shipment = fixed + cost_per_km * circuity * km + low_stock_weight * sum(t/a)
+ load_weight * load/capacity + priority_weight * priority. On the city network the
default policy makes 1 km cost 0.039, a store shipment 8 and a warehouse one 5.
"""

from __future__ import annotations

import pytest
from conftest import BEIJING, GUANGZHOU, HANGZHOU, SHANGHAI, haversine_km, make_city_net

import pyomni
from pyomni import AllocationStatus, Fulfilment, Order, RoutingPolicy, errors

ALLOCATED = AllocationStatus.ALLOCATED
QUOTED = AllocationStatus.QUOTED
UNFULFILLABLE = AllocationStatus.UNFULFILLABLE
PUDONG = (31.2215, 121.5447)
XUHUI = (31.1880, 121.4365)


def locs(a: pyomni.Allocation) -> list[str]:
    return [s.location for s in a.shipments]


def plan(a: pyomni.Allocation) -> dict[str, dict[str, int]]:
    return {s.location: {line.sku: line.qty for line in s.lines} for s in a.shipments}


def stock(eng, rows: dict[str, dict[str, int]]) -> None:
    for loc, skus in rows.items():
        for sku, qty in skus.items():
            eng.set_stock(loc, sku, qty)


def coords(net, loc: str) -> tuple[float, float]:
    i = net.index_of(loc)
    return float(net.lat[i]), float(net.lon[i])


def assert_nothing_held(eng) -> None:
    assert all(r["reserved"] == 0 for r in eng.stock_table().to_pylist())
    assert eng.reservations(pyomni.ReservationState.HELD) == []


def assert_consistent(a: pyomni.Allocation, order: Order) -> None:
    """Whatever the decision: a full plan covers each line exactly, totals add up, runners-up are others."""
    if a.status is UNFULFILLABLE:
        assert a.shipments == () and a.reservation_id is None and a.total_cost == 0.0
        assert a.short_lines
        return
    assert a.short_lines == ()
    covered: dict[str, int] = {}
    for s in a.shipments:
        assert s.lines, "a shipment carries something"
        for line in s.lines:
            covered[line.sku] = covered.get(line.sku, 0) + line.qty
    assert covered == {line.sku: line.qty for line in order.lines}
    assert len(set(locs(a))) == len(a.shipments)
    assert a.total_cost == pytest.approx(sum(s.cost.total for s in a.shipments), rel=1e-12)
    assert a.explanation.split == (len(a.shipments) > 1)
    assert not set(locs(a)) & {c.location for c in a.explanation.runners_up}


# -- nearest wins -----------------------------------------------------------------------
@pytest.mark.parametrize(("destination", "expected"), [
    (SHANGHAI, "SH-PEOPLE"), (PUDONG, "SH-PUDONG"), (HANGZHOU, "HZ-WESTLAKE"), (BEIJING, "BJ-DONGCHENG"),
    ((39.99, 116.30), "BJ-HAIDIAN"), (GUANGZHOU, "GZ-TIANHE"), ((31.30, 120.60), "SZ-CENTRE"),
    ((25.0, 117.0), "GZ-TIANHE"), ((36.0, 117.0), "BJ-DONGCHENG"),
])
def test_nearest_store_wins(eng, destination, expected):
    # the same quantity in every shipping store, nothing in the (cheaper) warehouses
    for loc in eng.network.ids:
        if loc.startswith(("SH-", "SZ-", "HZ-", "BJ-", "GZ-")):
            eng.set_stock(loc, "SKU-A", 10)
    order = Order("o-1", [("SKU-A", 1)], destination=destination)
    a = eng.route_order(order)
    assert a.status is ALLOCATED
    assert locs(a) == [expected]
    assert_consistent(a, order)
    ship = a.shipments[0]
    assert ship.distance_km == pytest.approx(haversine_km(destination, coords(eng.network, expected)), abs=1e-6)
    assert eng.stock(expected, "SKU-A").reserved == 1


def test_cost_parts_follow_the_documented_model(make_engine):
    net = make_city_net(**{"HZ-WESTLAKE": {"priority": 2, "fixed_cost": 9.5}})
    eng = make_engine(net)
    eng.set_stock("HZ-WESTLAKE", "SKU-A", 8)
    eng.set_stock("HZ-WESTLAKE", "SKU-B", 5)
    a = eng.quote(Order("o-1", [("SKU-A", 2), ("SKU-B", 1)], destination=SHANGHAI))
    pol = pyomni.DEFAULT_POLICY
    km = haversine_km(SHANGHAI, coords(net, "HZ-WESTLAKE"))
    (ship,) = a.shipments
    assert ship.cost.fixed == 9.5
    assert ship.cost.distance == pytest.approx(pol.cost_per_km * pol.circuity * km, rel=1e-9)
    assert ship.cost.low_stock == pytest.approx(pol.low_stock_weight * (2 / 8 + 1 / 5), rel=1e-12)
    assert ship.cost.load == 0.0
    assert ship.cost.priority == pol.priority_weight * 2
    assert a.total_cost == pytest.approx(ship.cost.total)


def test_cheaper_warehouse_beats_a_nearer_store_and_policy_can_reverse_it(eng):
    stock(eng, {"SH-PEOPLE": {"SKU-A": 10}, "WH-JIADING": {"SKU-A": 10}})
    order = Order("o-1", [("SKU-A", 1)], destination=SHANGHAI)
    assert locs(eng.quote(order)) == ["WH-JIADING"]          # 5 + ~26 km * 0.039 < 8
    eng.register_policy(RoutingPolicy(name="express", cost_per_km=0.5))
    a = eng.quote(order, policy="express")
    assert locs(a) == ["SH-PEOPLE"]
    assert a.explanation.policy == "express@1"


# -- single vs split -------------------------------------------------------------------
def test_one_location_is_preferred_over_a_split(eng):
    # SH-PEOPLE is nearer for SKU-A, but SH-PUDONG fills the whole order
    stock(eng, {"SH-PEOPLE": {"SKU-A": 10}, "SH-PUDONG": {"SKU-A": 10, "SKU-B": 10}})
    order = Order("o-1", [("SKU-A", 1), ("SKU-B", 1)], destination=SHANGHAI)
    a = eng.route_order(order)
    assert plan(a) == {"SH-PUDONG": {"SKU-A": 1, "SKU-B": 1}}
    assert a.explanation.split is False and a.explanation.split_reason == ""
    assert_consistent(a, order)


def test_a_split_that_is_not_cheaper_loses_to_the_single_location(eng):
    # the single (Shanghai -> Hangzhou, ~14.9) is dear enough for a split to be computed, but a split
    # (Hangzhou's own SKU-A + Shanghai's SKU-B, ~28.6 with the split penalty) is dearer
    stock(eng, {"HZ-WESTLAKE": {"SKU-A": 1}, "SH-PEOPLE": {"SKU-A": 10, "SKU-B": 10}})
    order = Order("o-1", [("SKU-A", 1), ("SKU-B", 1)], destination=HANGZHOU)
    a = eng.route_order(order)
    assert plan(a) == {"SH-PEOPLE": {"SKU-A": 1, "SKU-B": 1}}
    assert a.total_cost > 2 * 5.0 + pyomni.DEFAULT_POLICY.split_penalty
    assert a.explanation.split_reason == ""
    assert_consistent(a, order)


def test_split_when_no_single_location_can_fill(eng):
    stock(eng, {"SH-PEOPLE": {"SKU-A": 5}, "SH-PUDONG": {"SKU-B": 5}, "HZ-WESTLAKE": {"SKU-C": 5}})
    order = Order("o-1", [("SKU-A", 2), ("SKU-B", 1), ("SKU-C", 3)], destination=SHANGHAI)
    a = eng.route_order(order)
    assert a.status is ALLOCATED
    assert plan(a) == {"SH-PEOPLE": {"SKU-A": 2}, "SH-PUDONG": {"SKU-B": 1}, "HZ-WESTLAKE": {"SKU-C": 3}}
    assert a.explanation.split is True
    assert a.explanation.split_reason == "NO_SINGLE_LOCATION"
    assert a.explanation.runners_up == ()
    # only the first shipment goes without the split penalty
    fixed = sorted(s.cost.fixed for s in a.shipments)
    assert fixed == [8.0, 8.0 + 4.0, 8.0 + 4.0]
    assert_consistent(a, order)
    assert {(s.location, line.sku): eng.stock(s.location, line.sku).reserved
            for s in a.shipments for line in s.lines} == {
        ("SH-PEOPLE", "SKU-A"): 2, ("SH-PUDONG", "SKU-B"): 1, ("HZ-WESTLAKE", "SKU-C"): 3}


def test_one_line_split_over_locations_when_none_holds_enough(eng):
    stock(eng, {"SH-PEOPLE": {"SKU-A": 2}, "SH-PUDONG": {"SKU-A": 2}, "HZ-WESTLAKE": {"SKU-A": 2}})
    order = Order("o-1", [("SKU-A", 5)], destination=SHANGHAI)
    a = eng.route_order(order)
    assert a.explanation.split_reason == "NO_SINGLE_LOCATION"
    assert plan(a) == {"SH-PEOPLE": {"SKU-A": 2}, "SH-PUDONG": {"SKU-A": 2}, "HZ-WESTLAKE": {"SKU-A": 1}}
    assert_consistent(a, order)


def test_split_when_strictly_cheaper(eng):
    # A and B leave together from People's Square, C from Suzhou; Hangzhou holds all three but is dearer than
    # that split, though cheaper than a parcel per line -- so the search priced it: CHEAPER, with the runner-up
    stock(eng, {"SH-PEOPLE": {"SKU-A": 5, "SKU-B": 5}, "SH-PUDONG": {"SKU-B": 5}, "SZ-CENTRE": {"SKU-C": 5},
                "HZ-WESTLAKE": {"SKU-A": 5, "SKU-B": 5, "SKU-C": 5}})
    eng.register_policy(pyomni.RoutingPolicy(name="dear-km", cost_per_km=0.25, circuity=1.0))
    order = Order("o-1", [("SKU-A", 1), ("SKU-B", 1), ("SKU-C", 1)], destination=SHANGHAI)
    a = eng.route_order(order, policy="dear-km")
    assert plan(a) == {"SH-PEOPLE": {"SKU-A": 1, "SKU-B": 1}, "SZ-CENTRE": {"SKU-C": 1}}
    assert a.explanation.split_reason == "CHEAPER"
    assert a.explanation.optimal is True and a.explanation.lower_bound == a.total_cost
    (runner,) = a.explanation.runners_up
    assert runner.location == "HZ-WESTLAKE"
    assert a.total_cost < runner.cost
    assert a.explanation.next_best_cost <= runner.cost
    assert_consistent(a, order)


def test_split_past_a_far_single_location_reports_no_competitive_single(eng):
    # Beijing could fill the order alone, but for more than a parcel per line costs: the search stops at that
    # price, so the split's reason is NO_SINGLE_LOCATION (none competes); the native search never prices it
    stock(eng, {"SH-PEOPLE": {"SKU-A": 5}, "SH-PUDONG": {"SKU-B": 5},
                "BJ-DONGCHENG": {"SKU-A": 5, "SKU-B": 5}})
    order = Order("o-1", [("SKU-A", 1), ("SKU-B", 1)], destination=SHANGHAI)
    a = eng.route_order(order)
    assert plan(a) == {"SH-PEOPLE": {"SKU-A": 1}, "SH-PUDONG": {"SKU-B": 1}}
    assert a.explanation.split_reason == "NO_SINGLE_LOCATION"
    assert a.explanation.runners_up == () or not eng.stats()["native"]
    assert a.explanation.optimal is True
    beijing = 8.0 + 0.03 * 1.3 * haversine_km(SHANGHAI, BEIJING) + 2.0 * (1 / 5 + 1 / 5)
    assert beijing > a.total_cost
    assert_consistent(a, order)


def test_max_splits_one_takes_the_single_location_even_if_a_split_is_cheaper(eng):
    stock(eng, {"SH-PEOPLE": {"SKU-A": 5}, "SH-PUDONG": {"SKU-B": 5},
                "BJ-DONGCHENG": {"SKU-A": 5, "SKU-B": 5}})
    order = Order("o-1", [("SKU-A", 1), ("SKU-B", 1)], destination=SHANGHAI, max_splits=1)
    a = eng.route_order(order)
    assert locs(a) == ["BJ-DONGCHENG"]
    eng.register_policy(RoutingPolicy(name="one-box", max_splits=1))
    b = eng.quote(Order("o-2", [("SKU-A", 1), ("SKU-B", 1)], destination=SHANGHAI), policy="one-box")
    assert locs(b) == ["BJ-DONGCHENG"]


@pytest.mark.parametrize(("max_splits", "ok"), [(1, False), (2, False), (3, True), (16, True)])
def test_max_splits_bounds_the_number_of_shipments(eng, max_splits, ok):
    stock(eng, {"SH-PEOPLE": {"SKU-A": 5}, "SH-PUDONG": {"SKU-B": 5}, "HZ-WESTLAKE": {"SKU-C": 5}})
    order = Order("o-1", [("SKU-A", 1), ("SKU-B", 1), ("SKU-C", 1)], destination=SHANGHAI, max_splits=max_splits)
    a = eng.route_order(order)
    if ok:
        assert a.status is ALLOCATED and len(a.shipments) == 3
        return
    assert a.status is UNFULFILLABLE
    # every line is in stock somewhere: the split limit is what failed
    assert {s.reason for s in a.short_lines} == {"CONSTRAINTS"}
    assert len(a.short_lines) == 3 - max_splits
    assert all(s.allocatable == 0 and s.requested == 1 for s in a.short_lines)
    assert_nothing_held(eng)


# -- constraints -------------------------------------------------------------------------
def test_max_distance_excludes_far_locations(make_engine):
    eng = make_engine()
    stock(eng, {"HZ-WESTLAKE": {"SKU-A": 5}, "BJ-DONGCHENG": {"SKU-A": 5}})
    near = Order("o-1", [("SKU-A", 1)], destination=SHANGHAI, max_distance_km=100.0)
    a = eng.route_order(near)
    assert a.status is UNFULFILLABLE
    assert a.short_lines == (pyomni.ShortLine("SKU-A", 1, 0, "CONSTRAINTS"),)
    assert_nothing_held(eng)
    b = eng.route_order(Order("o-2", [("SKU-A", 1)], destination=SHANGHAI, max_distance_km=200.0))
    assert locs(b) == ["HZ-WESTLAKE"] and b.shipments[0].distance_km <= 200.0
    # the policy's limit applies when the order names none
    tight = make_engine(policy=RoutingPolicy(name="local", max_distance_km=50.0))
    stock(tight, {"HZ-WESTLAKE": {"SKU-A": 5}})
    assert tight.quote(Order("o-3", [("SKU-A", 1)], destination=SHANGHAI)).status is UNFULFILLABLE
    assert tight.quote(Order("o-4", [("SKU-A", 1)], destination=SHANGHAI, max_distance_km=500)).ok


def test_excluded_locations_are_never_used(eng):
    stock(eng, {"SH-PEOPLE": {"SKU-A": 5}, "SH-PUDONG": {"SKU-A": 5}, "HZ-WESTLAKE": {"SKU-A": 5}})
    a = eng.route_order(Order("o-1", [("SKU-A", 1)], destination=SHANGHAI, excluded_locations=["SH-PEOPLE"]))
    assert locs(a) == ["SH-PUDONG"]
    # 14 units are available in the network, 4 of them at the one location not excluded
    b = eng.route_order(Order("o-2", [("SKU-A", 12)], destination=SHANGHAI,
                              excluded_locations=("SH-PEOPLE", "HZ-WESTLAKE")))
    assert b.status is UNFULFILLABLE
    assert b.short_lines == (pyomni.ShortLine("SKU-A", 12, 4, "CONSTRAINTS"),)
    b = eng.route_order(Order("o-2", [("SKU-A", 15)], destination=SHANGHAI,
                              excluded_locations=("SH-PEOPLE", "HZ-WESTLAKE")))
    assert b.short_lines == (pyomni.ShortLine("SKU-A", 15, 4, "NO_STOCK"),)
    c = eng.route_order(Order("o-3", [("SKU-A", 2)], destination=SHANGHAI,
                              excluded_locations=("SH-PEOPLE", "SH-PUDONG", "HZ-WESTLAKE")))
    assert c.status is UNFULFILLABLE and c.short_lines[0].reason == "CONSTRAINTS"
    assert eng.stock("SH-PEOPLE", "SKU-A").reserved == 0


def test_delivery_needs_ship_capability(eng):
    stock(eng, {"SH-XUHUI": {"SKU-A": 5}})     # pickup-only store, right at the customer
    a = eng.route_order(Order("o-1", [("SKU-A", 1)], destination=XUHUI))
    assert a.status is UNFULFILLABLE
    assert a.short_lines[0].reason == "CONSTRAINTS"
    stock(eng, {"BJ-DONGCHENG": {"SKU-A": 5}})
    assert locs(eng.route_order(Order("o-2", [("SKU-A", 1)], destination=XUHUI))) == ["BJ-DONGCHENG"]


def test_pickup_store_is_exempt_from_ship(eng):
    stock(eng, {"SH-XUHUI": {"SKU-A": 5}, "SH-PEOPLE": {"SKU-A": 5}})
    order = Order("o-1", [("SKU-A", 2)], pickup_location="SH-XUHUI")
    assert order.fulfilment is Fulfilment.PICKUP
    a = eng.route_order(order)
    assert locs(a) == ["SH-XUHUI"]
    assert a.shipments[0].distance_km == 0.0


def test_pickup_order_ships_from_elsewhere_only_with_ship(eng):
    # SH-XUHUI has none: the units come from the nearest SHIP location to the pickup store
    stock(eng, {"SH-PEOPLE": {"SKU-A": 5}, "HZ-WESTLAKE": {"SKU-A": 5}})
    a = eng.route_order(Order("o-1", [("SKU-A", 1)], pickup_location="SH-XUHUI"))
    assert locs(a) == ["SH-PEOPLE"]
    assert a.shipments[0].distance_km == pytest.approx(haversine_km(XUHUI, SHANGHAI), abs=1e-6)


@pytest.mark.parametrize(("holder", "ok"), [
    ("SH-PUDONG", True),       # same-day store ~7 km away
    ("WH-JIADING", False),     # ship only
    ("SZ-CENTRE", False),      # no same-day
    ("HZ-WESTLAKE", False),    # same-day, but ~165 km > same_day_max_km
])
def test_same_day_needs_the_capability_and_a_short_distance(eng, holder, ok):
    stock(eng, {holder: {"SKU-A": 5}})
    order = Order("o-1", [("SKU-A", 1)], destination=SHANGHAI, fulfilment=Fulfilment.SAME_DAY,
                  max_distance_km=5000.0)       # an order's own limit cannot lift the same-day limit
    a = eng.route_order(order)
    assert (a.status is ALLOCATED) is ok
    if ok:
        assert locs(a) == [holder]
    else:
        assert a.short_lines[0].reason == "CONSTRAINTS"
        assert_nothing_held(eng)


def test_same_day_distance_comes_from_the_policy(eng):
    stock(eng, {"HZ-WESTLAKE": {"SKU-A": 5}})
    order = Order("o-1", [("SKU-A", 1)], destination=SHANGHAI, fulfilment="same_day")
    assert eng.quote(order).status is UNFULFILLABLE
    eng.register_policy(RoutingPolicy(name="wide", same_day_max_km=200.0))
    assert locs(eng.quote(order, policy="wide")) == ["HZ-WESTLAKE"]


def test_closed_locations_are_skipped_until_reopened(eng):
    stock(eng, {"SH-PEOPLE": {"SKU-A": 5}, "SH-PUDONG": {"SKU-A": 5}})
    first = eng.route_order(Order("o-0", [("SKU-A", 1)], destination=SHANGHAI))
    assert locs(first) == ["SH-PEOPLE"]
    eng.set_location_open("SH-PEOPLE", False)
    assert locs(eng.route_order(Order("o-1", [("SKU-A", 1)], destination=SHANGHAI))) == ["SH-PUDONG"]
    # existing reservations stay, and the closed store's stock still counts as held
    assert eng.reservation(first.reservation_id).state is pyomni.ReservationState.HELD
    assert eng.stock("SH-PEOPLE", "SKU-A").reserved == 1
    with pytest.raises(errors.CapabilityMissing) as info:
        eng.route_order(Order("o-2", [("SKU-A", 1)], pickup_location="SH-PEOPLE"))
    assert info.value.field == "pickup_location"
    eng.set_location_open("SH-PEOPLE", True)
    assert locs(eng.route_order(Order("o-3", [("SKU-A", 1)], destination=SHANGHAI))) == ["SH-PEOPLE"]
    eng.check_invariants()


def test_opening_and_closing_is_idempotent_by_request_id(eng):
    # every mutation takes a request id: a retry is a no-op, another request under the same id is refused
    stock(eng, {"SH-PEOPLE": {"SKU-A": 5}, "SH-PUDONG": {"SKU-A": 5}})
    eng.set_location_open("SH-PEOPLE", False, request_id="close-1")
    eng.set_location_open("SH-PEOPLE", False, request_id="close-1")
    with pytest.raises(errors.RequestIdReused) as info:
        eng.set_location_open("SH-PEOPLE", True, request_id="close-1")
    assert info.value.field == "request_id"
    assert locs(eng.quote(Order("o-1", [("SKU-A", 1)], destination=SHANGHAI))) == ["SH-PUDONG"]


def test_a_network_closed_location_is_not_used(make_engine):
    eng = make_engine(make_city_net(**{"SH-PEOPLE": {"is_open": False}}))
    stock(eng, {"SH-PEOPLE": {"SKU-A": 5}})
    assert eng.quote(Order("o-1", [("SKU-A", 1)], destination=SHANGHAI)).status is UNFULFILLABLE
    eng.set_location_open("SH-PEOPLE", True)
    assert locs(eng.quote(Order("o-1", [("SKU-A", 1)], destination=SHANGHAI))) == ["SH-PEOPLE"]


def test_load_against_capacity_is_a_cost(eng):
    stock(eng, {"SH-PEOPLE": {"SKU-A": 50}})
    eng.set_daily_capacity("SH-PEOPLE", 4)
    order = Order("o-1", [("SKU-A", 1)], destination=SHANGHAI)
    assert eng.route_order(order).shipments[0].cost.load == 0.0
    q = eng.quote(Order("o-2", [("SKU-A", 1)], destination=SHANGHAI))
    assert q.shipments[0].cost.load == pytest.approx(pyomni.DEFAULT_POLICY.load_weight * 1 / 4)


def test_daily_capacity_counts_held_and_confirmed_and_new_day_resets_confirmed(make_engine):
    # without the load cost, SH-PEOPLE wins whenever it has capacity left
    eng = make_engine(policy=RoutingPolicy(name="no-load", load_weight=0.0))
    stock(eng, {"SH-PEOPLE": {"SKU-A": 50}, "SH-PUDONG": {"SKU-A": 50}})
    eng.set_daily_capacity("SH-PEOPLE", 2)

    def route(i):
        return eng.route_order(Order(f"o-{i}", [("SKU-A", 1)], destination=SHANGHAI))

    a, b = route(1), route(2)
    assert locs(a) == locs(b) == ["SH-PEOPLE"]
    assert locs(route(3)) == ["SH-PUDONG"]                 # held: 2 of 2
    eng.confirm(a.reservation_id)
    assert locs(route(4)) == ["SH-PUDONG"]                 # held 1 + confirmed 1
    eng.release(b.reservation_id)
    c = route(5)
    assert locs(c) == ["SH-PEOPLE"]                        # confirmed 1 + held 1 again
    eng.confirm(c.reservation_id)
    assert locs(route(6)) == ["SH-PUDONG"]                 # confirmed 2
    eng.new_day()
    assert locs(route(7)) == ["SH-PEOPLE"]                 # yesterday's shipments stop counting
    eng.set_daily_capacity("SH-PEOPLE", 0)                 # 0 = unlimited
    assert locs(route(8)) == ["SH-PEOPLE"]
    eng.check_invariants()


def test_network_daily_capacity_is_honoured(make_engine):
    eng = make_engine(make_city_net(**{"SH-PEOPLE": {"daily_capacity": 1}}))
    stock(eng, {"SH-PEOPLE": {"SKU-A": 5}, "SH-PUDONG": {"SKU-A": 5}})
    assert locs(eng.route_order(Order("o-1", [("SKU-A", 1)], destination=SHANGHAI))) == ["SH-PEOPLE"]
    assert locs(eng.route_order(Order("o-2", [("SKU-A", 1)], destination=SHANGHAI))) == ["SH-PUDONG"]


# -- unfulfillable -----------------------------------------------------------------------
def test_unfulfillable_names_only_the_short_lines_and_holds_nothing(eng, snapshot):
    stock(eng, {"SH-PEOPLE": {"SKU-A": 5, "SKU-B": 2}, "SH-PUDONG": {"SKU-B": 1}})
    before = snapshot(eng)
    order = Order("o-1", [("SKU-A", 1), ("SKU-B", 4), ("SKU-C", 1)], destination=SHANGHAI)
    a = eng.route_order(order)
    assert a.status is UNFULFILLABLE and not a.ok
    assert a.reservation_id is None and a.expires_at is None and a.shipments == ()
    assert {s.sku: (s.requested, s.allocatable, s.reason) for s in a.short_lines} == {
        "SKU-B": (4, 3, "NO_STOCK"), "SKU-C": (1, 0, "NO_STOCK")}
    assert snapshot(eng) == before
    # the order id is free: nothing is live under it
    stock(eng, {"SH-PEOPLE": {"SKU-B": 10, "SKU-C": 1}})
    assert eng.route_order(order).status is ALLOCATED


def test_channel_limit_is_its_own_reason(make_engine, snapshot):
    eng = make_engine(channels={"tmall": pyomni.ChannelRule(share=0.5)})
    stock(eng, {"SH-PEOPLE": {"SKU-A": 6, "SKU-B": 6}})
    before = snapshot(eng)
    a = eng.route_order(Order("o-1", [("SKU-A", 4), ("SKU-B", 3)], destination=SHANGHAI, channel="tmall"))
    assert a.status is UNFULFILLABLE
    assert a.short_lines == (pyomni.ShortLine("SKU-A", 4, 3, "CHANNEL_LIMIT"),)
    assert a.explanation.policy == "default@1"
    assert snapshot(eng) == before
    ok = eng.route_order(Order("o-2", [("SKU-A", 3), ("SKU-B", 3)], destination=SHANGHAI, channel="tmall"))
    assert ok.status is ALLOCATED
    # other channels are not limited
    assert eng.route_order(Order("o-3", [("SKU-A", 3)], destination=SHANGHAI, channel="app")).ok
    # the limit follows what is left: 3 of SKU-B, so 1 for tmall
    c = eng.route_order(Order("o-4", [("SKU-B", 2)], destination=SHANGHAI, channel="tmall"))
    assert c.short_lines == (pyomni.ShortLine("SKU-B", 2, 1, "CHANNEL_LIMIT"),)


# -- quote -------------------------------------------------------------------------------
def test_quote_holds_nothing_and_matches_route(eng, snapshot):
    stock(eng, {"SH-PEOPLE": {"SKU-A": 5}, "SH-PUDONG": {"SKU-B": 5}, "BJ-DONGCHENG": {"SKU-A": 5, "SKU-B": 5}})
    order = Order("o-1", [("SKU-A", 2), ("SKU-B", 1)], destination=SHANGHAI)
    before = snapshot(eng)
    q = eng.quote(order)
    assert q.status is QUOTED and q.ok
    assert q.reservation_id is None and q.expires_at is None
    assert snapshot(eng) == before
    assert eng.quote(order) == q          # quoting again gives the same answer: nothing moved
    r = eng.route_order(order)
    assert r.status is ALLOCATED
    assert (r.shipments, r.total_cost, r.explanation) == (q.shipments, q.total_cost, q.explanation)


# -- explanation -------------------------------------------------------------------------
def test_explanation_describes_the_decision(eng):
    stock(eng, {loc: {"SKU-A": 5} for loc in ("SH-PEOPLE", "SH-PUDONG", "HZ-WESTLAKE", "SZ-CENTRE",
                                               "BJ-DONGCHENG", "GZ-TIANHE")})
    order = Order("o-1", [("SKU-A", 1)], destination=SHANGHAI)
    a = eng.route_order(order)
    e = a.explanation
    assert e.strategy in ("spatial", "sku_scan")
    assert e.considered >= 1
    assert e.policy == "default@1"
    assert set(e.rejected) <= {"NO_STOCK", "CAPACITY", "CAPABILITY", "DISTANCE", "CLOSED", "EXCLUDED"}
    assert all(v > 0 for v in e.rejected.values())
    assert locs(a) == ["SH-PEOPLE"]
    assert e.runners_up, "other stores could fill the order"
    assert "SH-PEOPLE" not in [c.location for c in e.runners_up]
    assert e.runners_up[0].location == "SH-PUDONG"
    costs = [c.cost for c in e.runners_up]
    assert costs == sorted(costs) and costs[0] >= a.total_cost
    assert len(e.runners_up) <= 3
    assert_consistent(a, order)


@pytest.mark.parametrize("seed", range(3))
def test_runners_up_never_include_a_chosen_location(make_engine, seed):
    net = pyomni.demo_network(stores=40, warehouses=2, skus=30, seed=seed)
    eng = make_engine(net)
    eng.apply_stock_events(pyomni.demo_stock(net, density=0.3, seed=seed))
    for order in pyomni.demo_orders(net, 60, seed=seed, max_lines=4):
        a = eng.route_order(order)
        assert_consistent(a, order)
        for c in a.explanation.runners_up:
            assert c.cost >= 0 and c.distance_km >= 0
    eng.check_invariants()


def test_strategy_names_how_candidates_were_found():
    # native only: the reference scans every location, so it has no strategies to report
    net = pyomni.demo_network(stores=400, warehouses=2, skus=50, seed=1)
    eng = pyomni.Engine(net, native=True)
    for loc in net.ids:
        eng.set_stock(loc, "SKU-000000", 3)               # the best seller everywhere: a spatial search
    eng.set_stock(net.ids[5], "SKU-000049", 3)            # a rare SKU: scan its one cell
    near = (float(net.lat[0]), float(net.lon[0]))
    assert eng.quote(Order("o-1", [("SKU-000000", 1)], destination=near)).explanation.strategy == "spatial"
    rare = eng.quote(Order("o-2", [("SKU-000049", 1)], destination=near))
    assert rare.explanation.strategy == "sku_scan"
    assert rare.explanation.considered == 1
    assert locs(rare) == [net.ids[5]]


# -- policies ----------------------------------------------------------------------------
def test_named_policies_are_chosen_per_call(eng):
    stock(eng, {"SH-PEOPLE": {"SKU-A": 10}, "WH-JIADING": {"SKU-A": 10}})
    eng.register_policy(RoutingPolicy(name="express", version=1, cost_per_km=0.5))
    eng.register_policy(RoutingPolicy(name="express", version=2, cost_per_km=0.0))
    order = Order("o-1", [("SKU-A", 1)], destination=SHANGHAI)
    assert eng.quote(order, policy="express@1").explanation.policy == "express@1"
    assert locs(eng.quote(order, policy="express@1")) == ["SH-PEOPLE"]
    # the bare name is the latest version
    latest = eng.quote(order, policy="express")
    assert latest.explanation.policy == "express@2"
    assert locs(latest) == ["WH-JIADING"] and latest.shipments[0].cost.distance == 0.0
    # registering an older version later does not take the name back
    eng.register_policy(RoutingPolicy(name="express", version=1, cost_per_km=0.5))
    assert eng.policy("express").version == 2
    assert eng.policy("default@1") is pyomni.DEFAULT_POLICY
    # a policy object can be passed directly
    direct = eng.route_order(order, policy=RoutingPolicy(name="adhoc", version=3, cost_per_km=0.5))
    assert direct.explanation.policy == "adhoc@3" and locs(direct) == ["SH-PEOPLE"]


def test_engine_default_policy(make_engine):
    eng = make_engine(policy=RoutingPolicy(name="house", version=4, cost_per_km=0.5))
    stock(eng, {"SH-PEOPLE": {"SKU-A": 10}, "WH-JIADING": {"SKU-A": 10}})
    a = eng.route_order(Order("o-1", [("SKU-A", 1)], destination=SHANGHAI))
    assert a.explanation.policy == "house@4" and locs(a) == ["SH-PEOPLE"]
    assert eng.policy().key == "house@4" and eng.policy("house").key == "house@4"


@pytest.mark.parametrize("key", ["nope", "express@3", "default@2", "", 12])
def test_unknown_policy_is_refused_and_nothing_changes(eng, snapshot, key):
    eng.register_policy(RoutingPolicy(name="express", version=1))
    stock(eng, {"SH-PEOPLE": {"SKU-A": 10}})
    before = snapshot(eng)
    order = Order("o-1", [("SKU-A", 1)], destination=SHANGHAI)
    for call in (lambda: eng.quote(order, policy=key), lambda: eng.route_order(order, policy=key)):
        with pytest.raises(errors.UnknownPolicy) as info:
            call()
        assert info.value.field == "policy"
    assert snapshot(eng) == before
