"""Reservation life cycle on both backends: HELD -> CONFIRMED | RELEASED | EXPIRED, and reroutes.

Every test drives the engine through :class:`Checked`, which runs
``check_invariants()`` after every call, failed or not.
"""

from __future__ import annotations

import pytest
from conftest import HANGZHOU, SHANGHAI, Checked

import pyomni
from pyomni import AllocationStatus, Order, ReservationState, RoutingPolicy, StockLevel, errors

HELD, CONFIRMED, RELEASED, EXPIRED = (ReservationState.HELD, ReservationState.CONFIRMED, ReservationState.RELEASED,
                                      ReservationState.EXPIRED)


@pytest.fixture
def eng(make_engine) -> Checked:
    eng = Checked(make_engine(reservation_ttl=600.0))
    for loc, qty in (("SH-PEOPLE", 5), ("SH-PUDONG", 5), ("HZ-WESTLAKE", 5)):
        eng.set_stock(loc, "SKU-A", qty)
    return eng


def order(oid: str = "o-1", qty: int = 2, **kwargs) -> Order:
    return Order(oid, [("SKU-A", qty)], destination=kwargs.pop("destination", SHANGHAI), **kwargs)


def reserved(eng) -> dict[str, int]:
    return {r["location"]: r["reserved"] for r in eng.stock_table().to_pylist() if r["reserved"]}


def locs(a) -> list[str]:
    return [s.location for s in a.shipments]


# -- route -> HELD ---------------------------------------------------------------------------
def test_route_holds_stock_under_a_reservation(eng, clock):
    a = eng.route_order(order(qty=2))
    assert a.status is AllocationStatus.ALLOCATED and a.reservation_id
    assert a.expires_at == clock.now + 600.0
    r = eng.reservation(a.reservation_id)
    assert (r.id, r.order_id, r.channel, r.state, r.request_id) == (a.reservation_id, "o-1", "app", HELD, None)
    assert (r.created_at, r.expires_at) == (clock.now, clock.now + 600.0)
    assert r.shipments == a.shipments
    assert eng.stock("SH-PEOPLE", "SKU-A") == StockLevel("SH-PEOPLE", "SKU-A", 5, 2, 0)
    assert eng.available("SKU-A") == 13
    assert eng.stats()["reservations"] == {"HELD": 1, "CONFIRMED": 0, "RELEASED": 0, "EXPIRED": 0}


def test_reservation_ids_are_distinct_and_listed_in_order(eng):
    ids = [eng.route_order(order(f"o-{i}", qty=1)).reservation_id for i in range(6)]
    assert len(set(ids)) == 6
    assert [r.id for r in eng.reservations()] == sorted(ids)
    eng.release(ids[1])
    eng.confirm(ids[2])
    assert [r.id for r in eng.reservations(HELD)] == [ids[0]] + ids[3:]
    assert [r.id for r in eng.reservations(RELEASED)] == [ids[1]]
    page1 = eng.reservations(limit=4)
    page2 = eng.reservations(after=page1[-1].id, limit=4)
    assert [r.id for r in page1 + page2] == sorted(ids)


# -- confirm / release --------------------------------------------------------------------------
def test_confirm_takes_the_units_out_of_stock(eng):
    a = eng.route_order(order(qty=2))
    r = eng.confirm(a.reservation_id)
    assert r.state is CONFIRMED and r.shipments == a.shipments
    assert eng.stock("SH-PEOPLE", "SKU-A") == StockLevel("SH-PEOPLE", "SKU-A", 3, 0, 0)
    assert eng.available("SKU-A") == 13
    assert eng.reservation(a.reservation_id).state is CONFIRMED
    for again in (eng.confirm, eng.release):
        with pytest.raises(errors.ReservationNotHeld) as info:
            again(a.reservation_id)
        assert info.value.field == "reservation_id"
    with pytest.raises(errors.ReservationNotHeld):
        eng.reroute(a.reservation_id, "SH-PEOPLE")
    assert eng.stock("SH-PEOPLE", "SKU-A").on_hand == 3


def test_confirmed_shipments_count_toward_the_daily_load(eng):
    eng.set_daily_capacity("SH-PEOPLE", 1)
    a = eng.route_order(order("o-1", qty=1))
    assert locs(a) == ["SH-PEOPLE"]
    eng.confirm(a.reservation_id)
    assert locs(eng.route_order(order("o-2", qty=1))) == ["SH-PUDONG"]
    eng.new_day()
    assert locs(eng.route_order(order("o-3", qty=1))) == ["SH-PEOPLE"]


def test_release_returns_the_units(eng):
    a = eng.route_order(order(qty=4))
    r = eng.release(a.reservation_id)
    assert r.state is RELEASED
    assert eng.stock("SH-PEOPLE", "SKU-A") == StockLevel("SH-PEOPLE", "SKU-A", 5, 0, 0)
    assert reserved(eng) == {}
    with pytest.raises(errors.ReservationNotHeld):
        eng.release(a.reservation_id)
    with pytest.raises(errors.ReservationNotHeld):
        eng.confirm(a.reservation_id)


def test_released_capacity_is_free_again(eng):
    eng.set_daily_capacity("SH-PEOPLE", 1)
    a = eng.route_order(order("o-1", qty=1))
    eng.release(a.reservation_id)
    assert locs(eng.route_order(order("o-2", qty=1))) == ["SH-PEOPLE"]


def test_split_reservation_confirms_and_releases_every_shipment(eng):
    eng.set_stock("SZ-CENTRE", "SKU-B", 3)      # no location holds both SKUs
    two = Order("o-2", [("SKU-A", 1), ("SKU-B", 1)], destination=SHANGHAI)
    a = eng.route_order(two)
    assert a.explanation.split and len(a.shipments) == 2
    assert reserved(eng) == {"SH-PEOPLE": 1, "SZ-CENTRE": 1}
    eng.confirm(a.reservation_id)
    assert reserved(eng) == {}
    assert eng.stock("SH-PEOPLE", "SKU-A").on_hand == 4 and eng.stock("SZ-CENTRE", "SKU-B").on_hand == 2
    b = eng.route_order(Order("o-3", [("SKU-A", 1), ("SKU-B", 1)], destination=SHANGHAI))
    assert len(b.shipments) == 2
    eng.release(b.reservation_id)
    assert reserved(eng) == {}
    assert eng.stock("SZ-CENTRE", "SKU-B").on_hand == 2


@pytest.mark.parametrize("verb", ["confirm", "release", "reservation"])
def test_unknown_reservation(eng, verb):
    with pytest.raises(errors.UnknownReservation) as info:
        getattr(eng, verb)("R-none")
    assert info.value.field == "reservation_id"
    with pytest.raises(errors.UnknownReservation):
        eng.reroute("R-none", "SH-PEOPLE")


# -- expiry ---------------------------------------------------------------------------------
def test_holds_expire_after_the_ttl(eng, clock):
    a = eng.route_order(order("o-1", qty=2))
    b = eng.route_order(order("o-2", qty=1), ttl=60.0)
    assert b.expires_at == clock.now + 60.0
    clock.advance(59.0)
    assert eng.expire_due() == []
    clock.advance(1.0)
    assert eng.expire_due() == [b.reservation_id]
    assert eng.reservation(b.reservation_id).state is EXPIRED
    assert eng.reservation(a.reservation_id).state is HELD
    assert eng.stock("SH-PEOPLE", "SKU-A").reserved == 2
    clock.advance(540.0)
    assert eng.expire_due() == [a.reservation_id]
    assert reserved(eng) == {}
    assert eng.expire_due() == []
    assert eng.stats()["reservations"]["EXPIRED"] == 2


def test_expiry_happens_lazily_on_the_next_command(eng, clock):
    a = eng.route_order(order("o-1", qty=3))
    clock.advance(601.0)
    # no expire_due(): the next command expires the hold before it does its own work
    assert eng.stock_table().to_pylist()[0]["reserved"] == 3           # a raw export, not a command
    eng.receive("SH-PUDONG", "SKU-A", 1)
    assert reserved(eng) == {}
    assert eng.reservation(a.reservation_id).state is EXPIRED


def test_an_expired_hold_frees_its_units_for_the_next_order(eng, clock):
    eng.set_stock("SH-PUDONG", "SKU-A", 0)
    eng.set_stock("HZ-WESTLAKE", "SKU-A", 0)
    a = eng.route_order(order("o-1", qty=5))
    assert eng.route_order(order("o-2", qty=5)).status is AllocationStatus.UNFULFILLABLE
    clock.advance(600.0)
    b = eng.route_order(order("o-2", qty=5))
    assert b.status is AllocationStatus.ALLOCATED
    assert eng.reservation(a.reservation_id).state is EXPIRED


def test_confirm_after_expiry_is_refused(eng, clock):
    a = eng.route_order(order(qty=2))
    clock.advance(600.0)
    with pytest.raises(errors.ReservationNotHeld):
        eng.confirm(a.reservation_id)
    assert eng.stock("SH-PEOPLE", "SKU-A") == StockLevel("SH-PEOPLE", "SKU-A", 5, 0, 0)
    with pytest.raises(errors.ReservationNotHeld):
        eng.reroute(a.reservation_id, "SH-PEOPLE")


@pytest.mark.parametrize("ttl", [0, -1.0, float("nan"), float("inf"), "60"])
def test_ttl_must_be_positive_and_finite(eng, snapshot, ttl):
    before = snapshot(eng)
    with pytest.raises(errors.InvalidArgument) as info:
        eng.route_order(order(), ttl=ttl)
    assert info.value.field == "ttl"
    assert snapshot(eng) == before


# -- order ids --------------------------------------------------------------------------------
def test_duplicate_order_id_while_live(eng, clock, snapshot):
    a = eng.route_order(order("o-1", qty=1))
    before = snapshot(eng)
    with pytest.raises(errors.DuplicateId) as info:
        eng.route_order(order("o-1", qty=1, destination=HANGZHOU))
    assert info.value.field == "id"
    assert snapshot(eng) == before
    # a quote is not a reservation: it may reuse a live id
    assert eng.quote(order("o-1", qty=1)).ok
    eng.release(a.reservation_id)
    b = eng.route_order(order("o-1", qty=1))             # free again once released
    clock.advance(600.0)
    c = eng.route_order(order("o-1", qty=1))             # and once expired
    assert len({a.reservation_id, b.reservation_id, c.reservation_id}) == 3
    eng.confirm(c.reservation_id)
    with pytest.raises(errors.DuplicateId):              # a confirmed order stays live
        eng.route_order(order("o-1", qty=1))


# -- reroute ----------------------------------------------------------------------------------
def test_reroute_moves_the_rejected_shipment_and_never_goes_back(eng, clock):
    a = eng.route_order(order(qty=2))
    assert locs(a) == ["SH-PEOPLE"]
    clock.advance(10.0)
    b = eng.reroute(a.reservation_id, "SH-PEOPLE")
    assert b.status is AllocationStatus.ALLOCATED
    assert b.reservation_id == a.reservation_id
    assert b.expires_at == a.expires_at
    assert locs(b) == ["SH-PUDONG"]
    assert reserved(eng) == {"SH-PUDONG": 2}
    r = eng.reservation(a.reservation_id)
    assert r.state is HELD and r.shipments == b.shipments
    assert "SH-PEOPLE" in r.excluded_locations
    # SH-PEOPLE is the cheapest again, but it rejected this order once
    c = eng.reroute(a.reservation_id, "SH-PUDONG")
    assert locs(c) == ["HZ-WESTLAKE"]
    assert reserved(eng) == {"HZ-WESTLAKE": 2}
    assert set(eng.reservation(a.reservation_id).excluded_locations) >= {"SH-PEOPLE", "SH-PUDONG"}
    eng.confirm(a.reservation_id)
    assert eng.stock("HZ-WESTLAKE", "SKU-A").on_hand == 3
    assert eng.stock("SH-PEOPLE", "SKU-A").on_hand == 5


def test_reroute_keeps_the_other_shipments_of_a_split(eng):
    eng.set_stock("SH-PUDONG", "SKU-B", 3)
    eng.set_stock("BJ-DONGCHENG", "SKU-B", 3)
    eng.set_stock("SH-PUDONG", "SKU-A", 0)
    eng.set_stock("HZ-WESTLAKE", "SKU-A", 0)
    two = Order("o-2", [("SKU-A", 1), ("SKU-B", 2)], destination=SHANGHAI)
    a = eng.route_order(two)
    assert {s.location: [(x.sku, x.qty) for x in s.lines] for s in a.shipments} == {
        "SH-PEOPLE": [("SKU-A", 1)], "SH-PUDONG": [("SKU-B", 2)]}
    b = eng.reroute(a.reservation_id, "SH-PUDONG")
    assert b.status is AllocationStatus.ALLOCATED
    assert {s.location: [(x.sku, x.qty) for x in s.lines] for s in b.shipments} == {
        "SH-PEOPLE": [("SKU-A", 1)], "BJ-DONGCHENG": [("SKU-B", 2)]}
    assert b.total_cost == pytest.approx(sum(s.cost.total for s in b.shipments))
    assert reserved(eng) == {"SH-PEOPLE": 1, "BJ-DONGCHENG": 2}


def test_reroute_with_no_alternative_releases_everything(eng, snapshot):
    eng.set_stock("SZ-CENTRE", "SKU-B", 3)      # the only SKU-B in the network
    two = Order("o-2", [("SKU-A", 1), ("SKU-B", 2)], destination=SHANGHAI)
    a = eng.route_order(two)
    assert set(locs(a)) == {"SH-PEOPLE", "SZ-CENTRE"}
    b = eng.reroute(a.reservation_id, "SZ-CENTRE")
    assert b.status is AllocationStatus.UNFULFILLABLE
    assert b.reservation_id is None and b.shipments == ()
    assert [(s.sku, s.requested) for s in b.short_lines] == [("SKU-B", 2)]
    assert eng.reservation(a.reservation_id).state is RELEASED
    assert reserved(eng) == {}
    assert eng.available("SKU-A") == 15
    with pytest.raises(errors.ReservationNotHeld):
        eng.reroute(a.reservation_id, "SH-PEOPLE")
    assert eng.route_order(two).status is AllocationStatus.ALLOCATED    # the order id is free again


def test_reroute_rejected_by_must_be_one_of_the_reservation_locations(eng, snapshot):
    a = eng.route_order(order(qty=1))
    before = snapshot(eng)
    with pytest.raises(errors.InvalidArgument) as info:
        eng.reroute(a.reservation_id, "SH-PUDONG")
    assert info.value.field == "rejected_by"
    with pytest.raises(errors.UnknownLocation) as info:
        eng.reroute(a.reservation_id, "XX-NOWHERE")
    assert info.value.field == "rejected_by"
    with pytest.raises(errors.UnknownPolicy):
        eng.reroute(a.reservation_id, "SH-PEOPLE", policy="nope")
    assert snapshot(eng) == before


def test_reroute_may_use_another_policy(eng):
    eng.set_stock("WH-JIADING", "SKU-A", 5)
    eng.register_policy(RoutingPolicy(name="express", cost_per_km=0.5))
    a = eng.route_order(order(qty=1), policy="express")
    assert locs(a) == ["SH-PEOPLE"]
    # the reservation's own policy by default: distance is dear, so the nearest store
    assert locs(eng.reroute(a.reservation_id, "SH-PEOPLE")) == ["SH-PUDONG"]
    b = eng.route_order(order("o-2", qty=1), policy="express")
    assert locs(b) == ["SH-PEOPLE"]
    c = eng.reroute(b.reservation_id, "SH-PEOPLE", policy="default")
    assert locs(c) == ["WH-JIADING"] and c.explanation.policy == "default@1"


# -- idempotent retries --------------------------------------------------------------------------
def test_route_retry_returns_the_first_answer(eng, snapshot, clock):
    a = eng.route_order(order(qty=2), request_id="req-route")
    after = snapshot(eng)
    clock.advance(5.0)
    assert eng.route_order(order(qty=2), request_id="req-route") == a
    assert snapshot(eng) == after
    assert eng.reservation(a.reservation_id).request_id == "req-route"
    # even after the reservation moved on, a retry gets the original answer, not DuplicateId
    eng.confirm(a.reservation_id)
    assert eng.route_order(order(qty=2), request_id="req-route") == a
    with pytest.raises(errors.RequestIdReused) as info:
        eng.route_order(order(qty=3), request_id="req-route")
    assert info.value.field == "request_id"
    with pytest.raises(errors.RequestIdReused):
        eng.route_order(order(qty=2), request_id="req-route", ttl=5.0)


def test_unfulfillable_answer_is_also_replayed(eng, snapshot):
    big = order(qty=99)
    a = eng.route_order(big, request_id="req-big")
    assert a.status is AllocationStatus.UNFULFILLABLE
    eng.receive("SH-PEOPLE", "SKU-A", 200)
    before = snapshot(eng)
    assert eng.route_order(big, request_id="req-big") == a
    assert snapshot(eng) == before
    assert eng.route_order(big, request_id="req-big-2").status is AllocationStatus.ALLOCATED


@pytest.mark.parametrize("verb", ["confirm", "release"])
def test_confirm_and_release_retries_return_the_first_answer(eng, snapshot, verb):
    a = eng.route_order(order(qty=2))
    first = getattr(eng, verb)(a.reservation_id, request_id="req-end")
    after = snapshot(eng)
    assert getattr(eng, verb)(a.reservation_id, request_id="req-end") == first
    assert snapshot(eng) == after
    with pytest.raises(errors.ReservationNotHeld):
        getattr(eng, verb)(a.reservation_id, request_id="req-other")
    b = eng.route_order(order("o-2", qty=1))
    with pytest.raises(errors.RequestIdReused):
        getattr(eng, verb)(b.reservation_id, request_id="req-end")
    other = "release" if verb == "confirm" else "confirm"
    with pytest.raises(errors.RequestIdReused):
        getattr(eng, other)(a.reservation_id, request_id="req-end")
    assert eng.reservation(b.reservation_id).state is HELD


def test_reroute_retry_does_not_reroute_again(eng, snapshot):
    a = eng.route_order(order(qty=2))
    b = eng.reroute(a.reservation_id, "SH-PEOPLE", request_id="req-rr")
    after = snapshot(eng)
    assert eng.reroute(a.reservation_id, "SH-PEOPLE", request_id="req-rr") == b
    assert snapshot(eng) == after
    assert reserved(eng) == {"SH-PUDONG": 2}
    with pytest.raises(errors.RequestIdReused):
        eng.reroute(a.reservation_id, "SH-PUDONG", request_id="req-rr")
    assert reserved(eng) == {"SH-PUDONG": 2}


def test_request_ids_are_one_namespace_across_commands(eng, snapshot):
    a = eng.route_order(order(qty=1), request_id="shared")
    before = snapshot(eng)
    for call in (lambda: eng.confirm(a.reservation_id, request_id="shared"),
                 lambda: eng.receive("SH-PEOPLE", "SKU-A", 1, request_id="shared"),
                 lambda: eng.reroute(a.reservation_id, "SH-PEOPLE", request_id="shared")):
        with pytest.raises(errors.RequestIdReused):
            call()
    assert snapshot(eng) == before


def test_reroute_never_returns_to_a_rejecting_store_even_after_many_rejections(make_engine):
    # 70 stores on a line going north, one unit each: every reroute takes the next store up. More
    # rejections than an order may list as excluded locations (64) must still all be remembered.
    stores = [pyomni.Location(f"S-{i:03d}", pyomni.LocationKind.STORE, 31.0 + 0.01 * i, 121.0) for i in range(70)]
    eng = make_engine(pyomni.Network.from_locations(stores, skus=["SKU-A"]))
    for s in stores:
        eng.set_stock(s.id, "SKU-A", 1)
    a = eng.route_order(Order("o-1", [("SKU-A", 1)], destination=(31.0, 121.0)))
    rid, current, rejected = a.reservation_id, a.shipments[0].location, []
    assert current == "S-000"
    while True:
        rejected.append(current)
        b = eng.reroute(rid, current)
        eng.check_invariants()
        if b.status is AllocationStatus.UNFULFILLABLE:
            break
        current = b.shipments[0].location
        assert current not in rejected, f"went back to {current} after {len(rejected)} rejections"
    assert len(rejected) == 70
    assert eng.reservation(rid).state is RELEASED
