"""Engine.reserve_plan: hold exactly a given plan, all or nothing, recorded like route_order.

Runs on both backends (``eng`` is parametrised over native and reference).
"""

from __future__ import annotations

import pytest

import pyomni
from pyomni import errors
from tests.conftest import SHANGHAI, haversine_km, make_city_net


def _stock(eng: pyomni.Engine) -> None:
    eng.set_stock("SH-PEOPLE", "SKU-A", 5, safety=1)
    eng.set_stock("SH-PUDONG", "SKU-A", 2)
    eng.set_stock("SH-PUDONG", "SKU-B", 3)
    eng.set_stock("WH-JIADING", "SKU-B", 10)
    eng.set_stock("BJ-DONGCHENG", "SKU-C", 4)


def _order(oid: str = "o-1", **kw) -> pyomni.Order:
    return pyomni.Order(oid, [("SKU-A", 2), ("SKU-B", 1)], destination=SHANGHAI, **kw)


def test_holds_exactly_the_plan_and_prices_it_with_the_cost_model(eng):
    _stock(eng)
    a = eng.reserve_plan(_order(), [("SH-PEOPLE", [("SKU-A", 2)]), ("WH-JIADING", [("SKU-B", 1)])])
    assert a.status is pyomni.AllocationStatus.ALLOCATED
    assert [s.location for s in a.shipments] == ["SH-PEOPLE", "WH-JIADING"]
    assert eng.stock("SH-PEOPLE", "SKU-A").reserved == 2
    assert eng.stock("WH-JIADING", "SKU-B").reserved == 1
    eng.check_invariants()
    pol = eng.policy()
    first, second = a.shipments
    km = haversine_km((31.2304, 121.4737), SHANGHAI)
    assert first.distance_km == pytest.approx(km, abs=1e-6)
    # available before the hold: 5 - 0 - 1 = 4 -> low-stock 2 / 4
    assert first.cost.low_stock == pytest.approx(pol.low_stock_weight * 2 / 4)
    assert first.cost.fixed == pytest.approx(8.0)
    assert second.cost.fixed == pytest.approx(5.0 + pol.split_penalty)  # the second parcel pays the split penalty
    wh_km = haversine_km((31.3838, 121.2654), SHANGHAI)
    assert second.cost.distance == pytest.approx(pol.cost_per_km * pol.circuity * wh_km, rel=1e-9)
    assert a.total_cost == pytest.approx(first.cost.total + second.cost.total)


def test_same_plan_as_route_order_gives_the_same_state_and_cost(make_engine, snapshot):
    routed, planned = make_engine(), make_engine()
    _stock(routed)
    _stock(planned)
    order = pyomni.Order("o-1", [("SKU-B", 2)], destination=SHANGHAI)
    a = routed.route_order(order)
    plan = [(s.location, [(line.sku, line.qty) for line in s.lines]) for s in a.shipments]
    b = planned.reserve_plan(order, plan)
    assert snapshot(routed).cells == snapshot(planned).cells
    assert routed.stats()["reservations"] == planned.stats()["reservations"]
    assert b.total_cost == pytest.approx(a.total_cost, rel=1e-9)
    for x, y in zip(a.shipments, b.shipments, strict=True):
        assert (x.location, x.lines) == (y.location, y.lines)
        assert x.cost.total == pytest.approx(y.cost.total, rel=1e-9)
    routed.check_invariants()
    planned.check_invariants()


def test_life_cycle_confirm_release_expire_reroute(eng, clock):
    _stock(eng)
    a = eng.reserve_plan(_order("o-1"), [("SH-PEOPLE", [("SKU-A", 2)]), ("SH-PUDONG", [("SKU-B", 1)])])
    assert eng.confirm(a.reservation_id).state is pyomni.ReservationState.CONFIRMED
    assert eng.stock("SH-PEOPLE", "SKU-A").on_hand == 3
    b = eng.reserve_plan(_order("o-2"), [("SH-PUDONG", [("SKU-A", 2), ("SKU-B", 1)])])
    assert eng.release(b.reservation_id).state is pyomni.ReservationState.RELEASED
    assert eng.stock("SH-PUDONG", "SKU-A").reserved == 0
    c = eng.reserve_plan(_order("o-3"), [("SH-PUDONG", [("SKU-A", 2), ("SKU-B", 1)])])
    r = eng.reroute(c.reservation_id, "SH-PUDONG")
    assert r.status is pyomni.AllocationStatus.ALLOCATED
    assert all(s.location != "SH-PUDONG" for s in r.shipments)
    eng.check_invariants()
    d = eng.reserve_plan(pyomni.Order("o-4", [("SKU-C", 1)], destination=SHANGHAI),
                         [("BJ-DONGCHENG", [("SKU-C", 1)])])
    clock.advance(10_000)
    assert d.reservation_id in eng.expire_due()
    assert eng.stock("BJ-DONGCHENG", "SKU-C").reserved == 0
    eng.check_invariants()


def test_idempotent_retry_and_reused_request_id(eng, snapshot):
    _stock(eng)
    plan = [("SH-PEOPLE", [("SKU-A", 2)]), ("WH-JIADING", [("SKU-B", 1)])]
    a = eng.reserve_plan(_order(), plan, request_id="r-1")
    before = snapshot(eng)
    assert eng.reserve_plan(_order(), plan, request_id="r-1") == a
    assert snapshot(eng) == before
    with pytest.raises(errors.RequestIdReused):
        eng.reserve_plan(_order("o-9"), plan, request_id="r-1")
    assert snapshot(eng) == before


@pytest.mark.parametrize(("plan", "error", "field"), [
    ([("SH-PEOPLE", [("SKU-A", 2)])], errors.InvalidOrder, "shipments"),  # SKU-B not covered
    ([("SH-PEOPLE", [("SKU-A", 2)]), ("SH-PUDONG", [("SKU-B", 4)])], errors.InsufficientStock,
     "shipments[1].lines[0].qty"),
    ([("SH-PEOPLE", [("SKU-A", 5)]), ("WH-JIADING", [("SKU-B", 1)])], errors.InsufficientStock,
     "shipments[0].lines[0].qty"),  # 5 on hand but 1 is safety
    ([("NOWHERE", [("SKU-A", 2)]), ("WH-JIADING", [("SKU-B", 1)])], errors.UnknownLocation, "shipments[0].location"),
    ([("SH-PEOPLE", [("SKU-Z", 2)])], errors.UnknownSku, "shipments[0].lines[0].sku"),
    ([("SH-PEOPLE", [("SKU-C", 2)])], errors.InvalidArgument, "shipments[0].lines[0].sku"),  # not in the order
    ([("SH-PEOPLE", [("SKU-A", 0)])], errors.InvalidQuantity, "shipments[0].lines[0].qty"),
    ([("SH-XUHUI", [("SKU-A", 2)]), ("WH-JIADING", [("SKU-B", 1)])], errors.CapabilityMissing,
     "shipments[0].location"),
    ([("SH-PEOPLE", [("SKU-A", 1)]), ("SH-PEOPLE", [("SKU-A", 1)]), ("WH-JIADING", [("SKU-B", 1)])],
     errors.InvalidArgument, "shipments[1]"),
    ([], errors.InvalidOrder, "shipments"),
    ("SH-PEOPLE", errors.InvalidArgument, "shipments"),
])
def test_bad_plans_raise_typed_errors_and_change_nothing(eng, snapshot, plan, error, field):
    _stock(eng)
    eng.set_stock("SH-XUHUI", "SKU-A", 5)
    before = snapshot(eng)
    with pytest.raises(error) as info:
        eng.reserve_plan(_order(), plan, request_id="bad")
    assert info.value.field == field
    assert snapshot(eng) == before
    # the request id was not consumed by the failure
    eng.reserve_plan(_order(), [("SH-PEOPLE", [("SKU-A", 2)]), ("WH-JIADING", [("SKU-B", 1)])], request_id="bad")


def test_limits_of_the_order_and_the_location(make_engine, snapshot):
    eng = make_engine(make_city_net(**{"SH-PUDONG": {"daily_capacity": 1}}))
    _stock(eng)
    eng.reserve_plan(pyomni.Order("o-1", [("SKU-B", 1)], destination=SHANGHAI), [("SH-PUDONG", [("SKU-B", 1)])])
    before = snapshot(eng)
    with pytest.raises(errors.FailedPrecondition):  # capacity 1 used up
        eng.reserve_plan(pyomni.Order("o-2", [("SKU-B", 1)], destination=SHANGHAI), [("SH-PUDONG", [("SKU-B", 1)])])
    with pytest.raises(errors.InvalidOrder):  # two parcels, max_splits = 1
        eng.reserve_plan(_order("o-3", max_splits=1), [("SH-PEOPLE", [("SKU-A", 2)]), ("WH-JIADING", [("SKU-B", 1)])])
    with pytest.raises(errors.InvalidOrder):  # Beijing is farther than the order allows
        eng.reserve_plan(pyomni.Order("o-4", [("SKU-C", 1)], destination=SHANGHAI, max_distance_km=100.0),
                         [("BJ-DONGCHENG", [("SKU-C", 1)])])
    with pytest.raises(errors.DuplicateId):  # o-1 already holds stock
        eng.reserve_plan(pyomni.Order("o-1", [("SKU-B", 1)], destination=SHANGHAI), [("WH-JIADING", [("SKU-B", 1)])])
    eng.set_location_open("WH-JIADING", False)
    before = snapshot(eng)
    with pytest.raises(errors.CapabilityMissing):
        eng.reserve_plan(pyomni.Order("o-5", [("SKU-B", 1)], destination=SHANGHAI), [("WH-JIADING", [("SKU-B", 1)])])
    assert snapshot(eng) == before
    eng.check_invariants()
