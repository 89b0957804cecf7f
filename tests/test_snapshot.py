"""Engine snapshots (save / load) and in-place network changes (upsert_locations)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import pyomni
from pyomni import errors


def _cells(eng: pyomni.Engine) -> pa.Table:
    t = eng.stock_table()
    t = t.filter(pc.greater(pc.add(t["on_hand"], t["safety"]), 0))
    return pa.table({"location": t["location"].cast(pa.string()), "sku": t["sku"].cast(pa.string()),
                     "on_hand": t["on_hand"], "reserved": t["reserved"], "safety": t["safety"]}).sort_by(
        [("location", "ascending"), ("sku", "ascending")])


@pytest.fixture(params=[True, False], ids=["native", "reference"])
def busy(request):
    """An engine with stock, HELD / CONFIRMED / RELEASED reservations, a raised safety stock and load."""
    net = pyomni.demo_network(stores=120, warehouses=3, skus=800, seed=11)
    eng = pyomni.Engine(net, native=request.param)
    eng.apply_stock_events(pyomni.demo_stock(net, seed=11))
    orders = pyomni.demo_orders(net, 240, seed=12)
    allocs = [eng.route_order(o, request_id=f"r-{o.id}") for o in orders]
    held = [a for a in allocs if a.reservation_id]
    for a in held[:60]:
        eng.confirm(a.reservation_id)
    for a in held[60:80]:
        eng.release(a.reservation_id)
    # safety raised above what is left after a hold: restoring must still re-take the hold
    a = held[100]
    ship = a.shipments[0]
    cell = eng.stock(ship.location, ship.lines[0].sku)
    eng.set_safety(ship.location, cell.sku, cell.on_hand)
    eng.check_invariants()
    return eng, orders, allocs


def test_save_then_load_restores_stock_reservations_load_and_request_ids(busy, tmp_path):
    eng, orders, allocs = busy
    eng.save(tmp_path)
    eng.save(tmp_path)                     # a second save replaces the first
    back = pyomni.Engine.load(tmp_path, native=eng.native)
    back.check_invariants()
    assert _cells(back).equals(_cells(eng))
    assert back.stats()["reservations"] == eng.stats()["reservations"]
    assert back.reservations() == eng.reservations()
    assert np.array_equal(back._ledger.loads()[1], eng._ledger.loads()[1])      # confirmed today
    # a retried request id returns the first answer, and a new request continues the id sequence
    assert back.route_order(orders[5], request_id=f"r-{orders[5].id}") == allocs[5]
    held = back.reservations(pyomni.ReservationState.HELD)
    assert back.confirm(held[0].id).state is pyomni.ReservationState.CONFIRMED
    back.check_invariants()


def test_load_without_a_snapshot_is_not_found(tmp_path):
    with pytest.raises(errors.NotFound):
        pyomni.Engine.load(tmp_path)


def test_reservations_expire_after_load_when_their_time_passed(tmp_path):
    now = [1000.0]
    net = pyomni.demo_network(stores=10, warehouses=1, skus=5, seed=2)
    eng = pyomni.Engine(net, clock=lambda: now[0], reservation_ttl=60)
    eng.set_stock(net.ids[0], "SKU-000001", 3)
    a = eng.route_order(pyomni.Order("o", [("SKU-000001", 2)], destination=(float(net.lat[0]), float(net.lon[0]))))
    eng.save(tmp_path)
    now[0] += 61
    back = pyomni.Engine.load(tmp_path, clock=lambda: now[0])
    # queries never mutate: a hold past its time stays HELD until the expiry command runs
    assert back.reservation(a.reservation_id).state is pyomni.ReservationState.HELD
    assert back.expire_due() == [a.reservation_id]
    assert back.reservation(a.reservation_id).state is pyomni.ReservationState.EXPIRED
    assert back.stock(net.ids[0], "SKU-000001").reserved == 0


def test_upsert_adds_and_replaces_locations_keeping_state(busy):
    eng, _, _ = busy
    before = _cells(eng)
    first = eng.network.location(0)
    lhasa = pyomni.Location("LHASA-1", pyomni.LocationKind.STORE, 29.65, 91.13, city="Lhasa", daily_capacity=50)
    added, updated = eng.upsert_locations([dataclasses.replace(first, fixed_cost=1.5, daily_capacity=9), lhasa])
    assert (added, updated) == (1, 1)
    eng.check_invariants()
    assert _cells(eng).equals(before)
    assert eng.network.location(first.id).fixed_cost == 1.5 and len(eng.network) == 124
    sku = eng.network.skus[-1]
    eng.set_stock("LHASA-1", sku, 4)
    a = eng.route_order(pyomni.Order("tibet", [(sku, 2)], destination=(29.6, 91.1)))
    assert a.shipments[0].location == "LHASA-1" and a.shipments[0].distance_km < 10
    for r in eng.reservations(pyomni.ReservationState.HELD)[:5]:
        eng.release(r.id)
    eng.check_invariants()


def test_upsert_is_idempotent_and_bad_input_changes_nothing(busy):
    eng, _, _ = busy
    store = pyomni.Location("NEW-9", pyomni.LocationKind.STORE, 30.0, 120.0)
    assert eng.upsert_locations([store], request_id="u1") == (1, 0)
    assert eng.upsert_locations([store], request_id="u1") == (1, 0)
    n = len(eng.network)
    before = _cells(eng)
    bad = [pyomni.Location("NEW-10", pyomni.LocationKind.STORE, float("nan"), 120.0)]
    with pytest.raises(errors.InvalidArgument):
        eng.upsert_locations(bad)
    with pytest.raises(errors.DuplicateId):
        eng.upsert_locations([store, store])
    with pytest.raises(errors.InvalidArgument):
        eng.upsert_locations(["NEW-11"])
    assert len(eng.network) == n and _cells(eng).equals(before)
    eng.check_invariants()
