"""The stock ledger through the public API, on both backends.

Every stock command, safety-stock semantics (online channels never sell into
safety stock, the till may; nobody sells reserved units), network-wide and
per-channel availability, the store locator and pickup finder against brute
force, bulk-event atomicity and request-id idempotency.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from conftest import BEIJING, CITY_LOCATIONS, SHANGHAI, SKUS, haversine_km, make_city_net

import pyomni
from pyomni import MAX_QTY, ChannelRule, Order, StockLevel, errors


def cells(eng: pyomni.Engine) -> dict[tuple[str, str], tuple[int, int, int]]:
    return {(r["location"], r["sku"]): (r["on_hand"], r["reserved"], r["safety"])
            for r in eng.stock_table().to_pylist()}


def events(rows: list[tuple]) -> pa.Table:
    """Rows of (location, sku, event, qty[, safety])."""
    return pa.table({
        "location": [r[0] for r in rows],
        "sku": [r[1] for r in rows],
        "event": [r[2] for r in rows],
        "qty": pa.array([r[3] for r in rows], pa.int64()),
        "safety": pa.array([r[4] if len(r) > 4 else None for r in rows], pa.int64()),
    })


def hold(eng: pyomni.Engine, location: str, sku: str, qty: int, order_id: str = "hold-1") -> pyomni.Allocation:
    """Reserve ``qty`` units at exactly ``location`` (pickup there, every other store excluded)."""
    net = eng.network
    i = net.index_of(location)
    others = tuple(x for x in net.ids if x != location)
    if net.capabilities[i] & pyomni.Capability.PICKUP:
        order = Order(order_id, [(sku, qty)], pickup_location=location, excluded_locations=others)
    else:
        order = Order(order_id, [(sku, qty)], destination=(net.lat[i], net.lon[i]), excluded_locations=others)
    a = eng.route_order(order)
    assert a.status is pyomni.AllocationStatus.ALLOCATED, a
    assert [s.location for s in a.shipments] == [location]
    return a


# -- single commands ------------------------------------------------------------
def test_new_engine_has_no_cells(eng):
    assert eng.stock_table().num_rows == 0
    assert eng.stock("SH-PEOPLE", "SKU-A") == StockLevel("SH-PEOPLE", "SKU-A", 0, 0, 0)
    assert eng.available("SKU-A") == 0
    assert eng.stats()["cells"] == 0


def test_set_stock_sets_on_hand_and_optionally_safety(eng):
    assert eng.set_stock("SH-PEOPLE", "SKU-A", 10, safety=2) == StockLevel("SH-PEOPLE", "SKU-A", 10, 0, 2)
    # without safety the cell keeps its safety stock
    assert eng.set_stock("SH-PEOPLE", "SKU-A", 7) == StockLevel("SH-PEOPLE", "SKU-A", 7, 0, 2)
    assert eng.set_stock("SH-PEOPLE", "SKU-A", 7, safety=0).safety == 0
    assert eng.stock("SH-PEOPLE", "SKU-A") == StockLevel("SH-PEOPLE", "SKU-A", 7, 0, 0)
    assert cells(eng) == {("SH-PEOPLE", "SKU-A"): (7, 0, 0)}


def test_setting_zero_on_a_cell_never_stocked_records_nothing(eng):
    assert eng.set_stock("SH-PEOPLE", "SKU-A", 0).on_hand == 0
    assert eng.stock_table().num_rows == 0


def test_adjust_stock_adds_and_removes(eng):
    eng.set_stock("SH-PEOPLE", "SKU-A", 10)
    assert eng.adjust_stock("SH-PEOPLE", "SKU-A", 5).on_hand == 15
    assert eng.adjust_stock("SH-PEOPLE", "SKU-A", -15).on_hand == 0
    with pytest.raises(errors.InsufficientStock) as info:
        eng.adjust_stock("SH-PEOPLE", "SKU-A", -1)
    assert info.value.field == "qty"
    assert eng.stock("SH-PEOPLE", "SKU-A").on_hand == 0


def test_adjust_never_drops_below_reserved(eng):
    eng.set_stock("SH-PEOPLE", "SKU-A", 10)
    hold(eng, "SH-PEOPLE", "SKU-A", 4)
    assert eng.adjust_stock("SH-PEOPLE", "SKU-A", -6).on_hand == 4
    with pytest.raises(errors.StockReserved):
        eng.adjust_stock("SH-PEOPLE", "SKU-A", -1)
    assert eng.stock("SH-PEOPLE", "SKU-A") == StockLevel("SH-PEOPLE", "SKU-A", 4, 4, 0)
    eng.check_invariants()


def test_set_stock_below_reserved_is_refused(eng):
    eng.set_stock("SH-PEOPLE", "SKU-A", 10)
    hold(eng, "SH-PEOPLE", "SKU-A", 4)
    with pytest.raises(errors.StockReserved) as info:
        eng.set_stock("SH-PEOPLE", "SKU-A", 3)
    assert info.value.field == "qty"
    assert eng.set_stock("SH-PEOPLE", "SKU-A", 4) == StockLevel("SH-PEOPLE", "SKU-A", 4, 4, 0)
    eng.check_invariants()


def test_receive_and_return_add_units(eng):
    assert eng.receive("WH-JIADING", "SKU-B", 100).on_hand == 100
    assert eng.return_item("SH-PUDONG", "SKU-B", 1) == StockLevel("SH-PUDONG", "SKU-B", 1, 0, 0)
    assert eng.receive("WH-JIADING", "SKU-B", 5).on_hand == 105
    assert cells(eng) == {("WH-JIADING", "SKU-B"): (105, 0, 0), ("SH-PUDONG", "SKU-B"): (1, 0, 0)}


def test_returns_are_accepted_anywhere_even_without_capabilities(make_engine):
    eng = make_engine(make_city_net(**{"SH-XUHUI": {"is_open": False}}))
    assert eng.return_item("SH-XUHUI", "SKU-E", 2).on_hand == 2


def test_sale_removes_unreserved_units(eng):
    eng.set_stock("SH-PEOPLE", "SKU-A", 3)
    assert eng.sell("SH-PEOPLE", "SKU-A", 2).on_hand == 1
    with pytest.raises(errors.InsufficientStock):
        eng.sell("SH-PEOPLE", "SKU-A", 2)
    assert eng.stock("SH-PEOPLE", "SKU-A").on_hand == 1
    with pytest.raises(errors.InsufficientStock):
        eng.sell("SH-PUDONG", "SKU-A", 1)   # a cell that was never stocked
    assert ("SH-PUDONG", "SKU-A") not in cells(eng)


def test_quantity_overflow_is_refused(eng):
    eng.set_stock("WH-JIADING", "SKU-A", MAX_QTY - 1)
    assert eng.receive("WH-JIADING", "SKU-A", 1).on_hand == MAX_QTY
    with pytest.raises(errors.QuantityOverflow):
        eng.receive("WH-JIADING", "SKU-A", 1)
    with pytest.raises(errors.QuantityOverflow):
        eng.return_item("WH-JIADING", "SKU-A", 1)
    with pytest.raises(errors.QuantityOverflow):
        eng.adjust_stock("WH-JIADING", "SKU-A", 1)
    assert eng.stock("WH-JIADING", "SKU-A").on_hand == MAX_QTY


# -- safety stock -----------------------------------------------------------------
def test_safety_is_held_back_from_online_availability(eng):
    eng.set_stock("SH-PEOPLE", "SKU-A", 10)
    level = eng.set_safety("SH-PEOPLE", "SKU-A", 3)
    assert (level.on_hand, level.reserved, level.safety, level.available) == (10, 0, 3, 7)
    assert eng.available("SKU-A") == 7
    assert eng.available("SKU-A", location="SH-PEOPLE") == 7
    # safety larger than on-hand: nothing available, never negative
    assert eng.set_safety("SH-PEOPLE", "SKU-A", 12).available == 0
    assert eng.available("SKU-A") == 0
    assert eng.set_safety("SH-PEOPLE", "SKU-A", 0).available == 10


def test_set_safety_on_an_empty_cell_creates_it(eng):
    level = eng.set_safety("SH-PUDONG", "SKU-C", 2)
    assert (level.on_hand, level.safety, level.available) == (0, 2, 0)
    assert cells(eng) == {("SH-PUDONG", "SKU-C"): (0, 0, 2)}


def test_online_orders_never_take_safety_stock(eng):
    eng.set_stock("SH-PEOPLE", "SKU-A", 10, safety=3)   # the only stock in the network
    order = Order("o-1", [("SKU-A", 8)], destination=SHANGHAI)
    assert eng.quote(order).status is pyomni.AllocationStatus.UNFULFILLABLE
    a = eng.route_order(Order("o-2", [("SKU-A", 7)], destination=SHANGHAI))
    assert a.status is pyomni.AllocationStatus.ALLOCATED
    level = eng.stock("SH-PEOPLE", "SKU-A")
    assert (level.on_hand, level.reserved, level.safety, level.available) == (10, 7, 3, 0)
    assert level.on_hand - level.reserved - level.safety >= 0


def test_pos_sale_may_sell_into_safety_but_never_into_reserved(eng):
    eng.set_stock("SH-PEOPLE", "SKU-A", 10, safety=3)
    hold(eng, "SH-PEOPLE", "SKU-A", 7)
    # online available is 0, but 3 unreserved units are on the shelf for walk-in customers
    assert eng.available("SKU-A") == 0
    level = eng.sell("SH-PEOPLE", "SKU-A", 2)
    assert (level.on_hand, level.reserved, level.safety, level.available) == (8, 7, 3, 0)
    assert eng.sell("SH-PEOPLE", "SKU-A", 1).on_hand == 7
    with pytest.raises(errors.InsufficientStock):
        eng.sell("SH-PEOPLE", "SKU-A", 1)       # the rest is reserved
    assert eng.stock("SH-PEOPLE", "SKU-A") == StockLevel("SH-PEOPLE", "SKU-A", 7, 7, 3)
    eng.check_invariants()


# -- transfers ---------------------------------------------------------------------
def test_transfer_moves_units_atomically(eng):
    eng.set_stock("WH-JIADING", "SKU-C", 50)
    src, dst = eng.transfer("WH-JIADING", "SH-PEOPLE", "SKU-C", 20)
    assert src == StockLevel("WH-JIADING", "SKU-C", 30, 0, 0)
    assert dst == StockLevel("SH-PEOPLE", "SKU-C", 20, 0, 0)
    assert eng.available("SKU-C") == 50


def test_transfer_cannot_move_reserved_units_but_may_move_safety(eng):
    eng.set_stock("SH-PEOPLE", "SKU-C", 10, safety=2)
    hold(eng, "SH-PEOPLE", "SKU-C", 6)
    with pytest.raises(errors.InsufficientStock):
        eng.transfer("SH-PEOPLE", "SH-PUDONG", "SKU-C", 5)
    before = cells(eng)
    assert before == {("SH-PEOPLE", "SKU-C"): (10, 6, 2)}
    src, dst = eng.transfer("SH-PEOPLE", "SH-PUDONG", "SKU-C", 4)
    assert (src.on_hand, src.reserved, dst.on_hand) == (6, 6, 4)
    eng.check_invariants()


def test_transfer_failures_change_nothing(eng, snapshot):
    eng.set_stock("WH-JIADING", "SKU-C", 5)
    eng.set_stock("SH-PEOPLE", "SKU-C", MAX_QTY)
    before = snapshot(eng)
    with pytest.raises(errors.InsufficientStock):
        eng.transfer("WH-JIADING", "SH-PUDONG", "SKU-C", 6)
    with pytest.raises(errors.InsufficientStock):
        eng.transfer("SH-PUDONG", "WH-JIADING", "SKU-C", 1)
    with pytest.raises(errors.QuantityOverflow):
        eng.transfer("WH-JIADING", "SH-PEOPLE", "SKU-C", 1)
    with pytest.raises(errors.InvalidArgument) as info:
        eng.transfer("WH-JIADING", "WH-JIADING", "SKU-C", 1)
    assert info.value.field == "destination"
    with pytest.raises(errors.UnknownLocation) as info:
        eng.transfer("WH-JIADING", "NOWHERE", "SKU-C", 1)
    assert info.value.field == "destination"
    with pytest.raises(errors.UnknownLocation) as info:
        eng.transfer("NOWHERE", "WH-JIADING", "SKU-C", 1)
    assert info.value.field == "source"
    assert snapshot(eng) == before
    assert ("SH-PUDONG", "SKU-C") not in cells(eng)


# -- availability queries ----------------------------------------------------------
def test_network_availability_is_per_sku_and_clips_each_cell(eng):
    eng.set_stock("SH-PEOPLE", "SKU-A", 10, safety=2)      # 8
    eng.set_stock("SH-PUDONG", "SKU-A", 1, safety=5)       # 0, not -4
    eng.set_stock("WH-BEIJING", "SKU-A", 30)               # 30
    eng.set_stock("WH-BEIJING", "SKU-B", 9)
    assert eng.available("SKU-A") == 38
    assert eng.available("SKU-B") == 9
    assert eng.available("SKU-C") == 0
    hold(eng, "WH-BEIJING", "SKU-A", 5)
    assert eng.available("SKU-A") == 33
    assert eng.available("SKU-A", location="WH-BEIJING") == 25
    assert eng.available("SKU-A", location="GZ-TIANHE") == 0


def test_channel_rules_bound_what_a_channel_may_sell(make_engine):
    eng = make_engine(channels={"tmall": ChannelRule(share=0.5, buffer=1)})
    eng.set_stock("SH-PEOPLE", "SKU-A", 11)
    eng.set_stock("WH-JIADING", "SKU-A", 10)
    assert eng.available("SKU-A") == 21
    assert eng.available("SKU-A", channel="tmall") == 9          # floor(10.5) - 1
    assert eng.available("SKU-A", channel="app") == 21           # no rule: everything
    eng.set_channel_rule("app", ChannelRule(share=0.1))
    assert eng.available("SKU-A", channel="app") == 2
    eng.set_channel_rule("app", None)
    assert eng.available("SKU-A", channel="app") == 21
    eng.set_channel_rule("tmall", ChannelRule(share=0.1, buffer=5))
    assert eng.available("SKU-A", channel="tmall") == 0          # never negative


def test_availability_table_matches_the_cells(eng):
    rows = {"SH-PEOPLE": (10, 2), "BJ-DONGCHENG": (4, 0), "WH-BEIJING": (1, 3), "GZ-TIANHE": (6, 1)}
    for loc, (on_hand, safety) in rows.items():
        eng.set_stock(loc, "SKU-D", on_hand, safety=safety)
    eng.set_stock("SH-PUDONG", "SKU-E", 3)
    hold(eng, "GZ-TIANHE", "SKU-D", 2)
    table = eng.availability("SKU-D")
    assert table.column_names == ["location", "on_hand", "reserved", "safety", "available"]
    got = table.to_pylist()
    index = {x: i for i, x in enumerate(eng.network.ids)}
    assert [r["location"] for r in got] == sorted(rows, key=index.__getitem__)
    for r in got:
        level = eng.stock(r["location"], "SKU-D")
        assert (r["on_hand"], r["reserved"], r["safety"], r["available"]) == (
            level.on_hand, level.reserved, level.safety, level.available)
    assert sum(r["available"] for r in got) == eng.available("SKU-D") == 8 + 4 + 0 + 3
    assert eng.availability("SKU-C").num_rows == 0


def test_stock_table_lists_every_cell_once(eng):
    expected = {}
    for i, (loc, *_rest) in enumerate(CITY_LOCATIONS):
        for j, sku in enumerate(SKUS):
            if (i + j) % 3 == 0:
                eng.set_stock(loc, sku, i + j + 1, safety=j)
                expected[(loc, sku)] = (i + j + 1, 0, j)
    table = eng.stock_table()
    assert table.column_names == ["location", "sku", "on_hand", "reserved", "safety"]
    assert table.num_rows == len(expected) == eng.stats()["cells"]
    assert cells(eng) == expected


def brute_force_near(eng, sku_qty: dict[str, int], near, radius_km, limit, need_cap: int):
    net = eng.network
    found = []
    for i, loc in enumerate(net.ids):
        km = haversine_km(near, (net.lat[i], net.lon[i]))
        if km > radius_km or not net.is_open[i] or (int(net.capabilities[i]) & need_cap) != need_cap:
            continue
        if all(eng.stock(loc, s).available >= q for s, q in sku_qty.items()):
            found.append((km, i, loc))
    found.sort()
    return [(loc, km) for km, _, loc in found[:limit]]


def stock_everywhere(eng):
    # a pattern where nearest-first order and the filters all matter
    for i, loc in enumerate(eng.network.ids):
        eng.set_stock(loc, "SKU-A", 1 + i % 4, safety=1 if i % 3 == 0 else 0)
        if i % 2 == 0:
            eng.set_stock(loc, "SKU-B", 2)


@pytest.mark.parametrize("near", [SHANGHAI, BEIJING, (31.0, 121.0), (35.0, 118.0)])
@pytest.mark.parametrize(("radius_km", "limit"), [(10.0, 20), (200.0, 20), (3000.0, 3), (5000.0, 1000)])
def test_available_near_matches_brute_force(make_engine, near, radius_km, limit):
    eng = make_engine(make_city_net(**{"SH-PUDONG": {"is_open": False}}))
    stock_everywhere(eng)
    got = eng.available_near("SKU-A", near, radius_km=radius_km, limit=limit)
    want = brute_force_near(eng, {"SKU-A": 1}, near, radius_km, limit, 0)
    assert [g.location for g in got] == [loc for loc, _ in want]
    for g, (loc, km) in zip(got, want):
        assert g.distance_km == pytest.approx(km, abs=1e-6)
        assert g.available == eng.stock(loc, "SKU-A").available >= 1
    assert "SH-PUDONG" not in [g.location for g in got]     # closed


@pytest.mark.parametrize("basket", [[("SKU-A", 1)], [("SKU-A", 2), ("SKU-B", 2)], [("SKU-A", 4)]])
@pytest.mark.parametrize("near", [SHANGHAI, BEIJING, (28.0, 117.0)])
def test_find_pickup_locations_matches_brute_force(make_engine, basket, near):
    eng = make_engine(make_city_net(**{"SH-PUDONG": {"is_open": False}}))
    stock_everywhere(eng)
    got = eng.find_pickup_locations(basket, near, radius_km=3000.0, limit=5)
    want = brute_force_near(eng, dict(basket), near, 3000.0, 5, int(pyomni.Capability.PICKUP))
    assert [g.location for g in got] == [loc for loc, _ in want]
    for g, (_, km) in zip(got, want):
        assert g.distance_km == pytest.approx(km, abs=1e-6)
    # warehouses cannot serve pickups however much they hold
    assert not any(g.location.startswith("WH-") for g in got)


def test_store_locator_excludes_reserved_and_safety_units(eng):
    eng.set_stock("SH-PEOPLE", "SKU-A", 3, safety=1)
    eng.set_stock("SH-PUDONG", "SKU-A", 1)
    hold(eng, "SH-PUDONG", "SKU-A", 1)
    assert [(n.location, n.available) for n in eng.available_near("SKU-A", SHANGHAI)] == [("SH-PEOPLE", 2)]
    assert eng.find_pickup_locations([("SKU-A", 2)], SHANGHAI) == [pyomni.PickupOption("SH-PEOPLE", 0.0)]
    assert eng.find_pickup_locations([("SKU-A", 3)], SHANGHAI) == []


# -- bulk events --------------------------------------------------------------------
def test_apply_stock_events_applies_every_kind_in_order(eng):
    n = eng.apply_stock_events(events([
        ("SH-PEOPLE", "SKU-A", "set", 10, 2),
        ("SH-PEOPLE", "SKU-A", "sale", 3),
        ("SH-PEOPLE", "SKU-A", "adjust", -1),
        ("SH-PEOPLE", "SKU-A", "receive", 5),
        ("SH-PEOPLE", "SKU-A", "return", 1),
        ("SH-PEOPLE", "SKU-A", "safety", 4),
        ("WH-JIADING", "SKU-B", "receive", 40),
        ("WH-JIADING", "SKU-B", "SALE", 40),      # kinds are case-insensitive
    ]))
    assert n == 8
    assert cells(eng) == {("SH-PEOPLE", "SKU-A"): (12, 0, 4), ("WH-JIADING", "SKU-B"): (0, 0, 0)}
    eng.check_invariants()


def test_apply_stock_events_without_event_column_sets(eng):
    table = pa.table({"location": ["SH-PEOPLE", "WH-JIADING"], "sku": ["SKU-A", "SKU-A"], "qty": [3, 30]})
    assert eng.apply_stock_events(table) == 2
    assert cells(eng) == {("SH-PEOPLE", "SKU-A"): (3, 0, 0), ("WH-JIADING", "SKU-A"): (30, 0, 0)}


def test_demo_stock_loads_like_single_commands(make_engine):
    net = pyomni.demo_network(stores=15, warehouses=2, skus=40, seed=5)
    stock = pyomni.demo_stock(net, seed=5)
    bulk = make_engine(net)
    assert bulk.apply_stock_events(stock) == stock.num_rows
    single = make_engine(net)
    for r in stock.to_pylist():
        single.set_stock(r["location"], r["sku"], r["qty"], safety=r["safety"])
    assert sorted(bulk.stock_table().to_pylist(), key=str) == sorted(single.stock_table().to_pylist(), key=str)
    for sku in net.skus:
        assert bulk.available(sku) == single.available(sku)


BAD_BATCHES = [
    # (description, bad row, expected class, expected field)
    ("sale beyond stock", ("SH-PUDONG", "SKU-B", "sale", 50), errors.InsufficientStock, "events[3]"),
    ("adjust below zero", ("SH-PEOPLE", "SKU-A", "adjust", -99), errors.InsufficientStock, "events[3]"),
    ("receive of zero", ("SH-PEOPLE", "SKU-A", "receive", 0), errors.InvalidQuantity, "events[3]"),
    ("negative set", ("SH-PEOPLE", "SKU-A", "set", -1), errors.InvalidQuantity, "events[3]"),
    ("huge receive", ("SH-PEOPLE", "SKU-A", "receive", MAX_QTY + 1), errors.InvalidQuantity, "events[3]"),
    ("overflow", ("WH-BEIJING", "SKU-C", "receive", MAX_QTY), errors.QuantityOverflow, "events[3]"),
    ("below reserved", ("SH-PEOPLE", "SKU-D", "set", 1), errors.StockReserved, "events[3]"),
    ("unknown sku", ("SH-PEOPLE", "SKU-Z", "set", 1), errors.UnknownSku, "events[3].sku"),
    ("unknown location", ("XX-1", "SKU-A", "set", 1), errors.UnknownLocation, "events[3].location"),
    ("unknown kind", ("SH-PEOPLE", "SKU-A", "steal", 1), errors.InvalidArgument, "events[3].event"),
]


@pytest.mark.parametrize(("bad", "cls", "field"), [b[1:] for b in BAD_BATCHES], ids=[b[0] for b in BAD_BATCHES])
def test_a_bad_event_rejects_the_whole_batch(eng, snapshot, bad, cls, field):
    eng.set_stock("SH-PEOPLE", "SKU-A", 10, safety=1)
    eng.set_stock("SH-PEOPLE", "SKU-D", 5)
    eng.set_stock("WH-BEIJING", "SKU-C", 5)
    hold(eng, "SH-PEOPLE", "SKU-D", 3)
    before = snapshot(eng)
    batch = events([
        ("SH-PEOPLE", "SKU-A", "receive", 5),           # changes an existing cell
        ("SH-PUDONG", "SKU-B", "set", 7, 2),            # creates a new cell
        ("GZ-TIANHE", "SKU-E", "safety", 3),            # creates another
        bad,
        ("BJ-HAIDIAN", "SKU-C", "set", 1),              # after the bad row
    ])
    with pytest.raises(cls) as info:
        eng.apply_stock_events(batch)
    assert type(info.value) is cls
    assert info.value.field == field
    assert snapshot(eng) == before                      # same cells, same order, nothing new
    eng.check_invariants()
    # the ledger still works after the rollback, including inserting the rolled-back cells
    eng.apply_stock_events(batch.slice(0, 3))
    assert cells(eng)[("SH-PUDONG", "SKU-B")] == (7, 0, 2)
    assert cells(eng)[("GZ-TIANHE", "SKU-E")] == (0, 0, 3)
    eng.check_invariants()


def test_rollback_of_a_large_batch_leaves_no_cells(make_engine, snapshot):
    net = pyomni.demo_network(stores=40, warehouses=2, skus=200, seed=2)
    eng = make_engine(net)
    eng.apply_stock_events(pyomni.demo_stock(net, seed=2))
    before = snapshot(eng)
    rows = [(loc, sku, "receive", 1) for loc in net.ids[:30] for sku in net.skus[150:200]]
    rows.insert(1200, (net.ids[0], net.skus[0], "adjust", -MAX_QTY))
    with pytest.raises(errors.InsufficientStock) as info:
        eng.apply_stock_events(events(rows))
    assert info.value.field == "events[1200]"
    assert snapshot(eng) == before
    eng.check_invariants()


# -- idempotency -------------------------------------------------------------------
STOCK_COMMANDS = {
    "set_stock": lambda e, **k: e.set_stock("SH-PEOPLE", "SKU-A", 9, **k),
    "adjust_stock": lambda e, **k: e.adjust_stock("SH-PEOPLE", "SKU-A", 2, **k),
    "receive": lambda e, **k: e.receive("SH-PEOPLE", "SKU-A", 3, **k),
    "sell": lambda e, **k: e.sell("SH-PEOPLE", "SKU-A", 1, **k),
    "return_item": lambda e, **k: e.return_item("SH-PEOPLE", "SKU-A", 1, **k),
    "set_safety": lambda e, **k: e.set_safety("SH-PEOPLE", "SKU-A", 2, **k),
    "transfer": lambda e, **k: e.transfer("SH-PEOPLE", "SH-PUDONG", "SKU-A", 2, **k),
    "apply_stock_events": lambda e, **k: e.apply_stock_events(events([("SH-PEOPLE", "SKU-A", "receive", 4)]), **k),
}


@pytest.mark.parametrize("command", list(STOCK_COMMANDS))
def test_a_retried_request_returns_the_first_answer_and_changes_nothing(eng, snapshot, command):
    eng.set_stock("SH-PEOPLE", "SKU-A", 5)
    run = STOCK_COMMANDS[command]
    first = run(eng, request_id="req-1")
    after_first = snapshot(eng)
    again = run(eng, request_id="req-1")
    assert again == first
    assert snapshot(eng) == after_first
    # without a request id the command applies again
    run(eng)
    if command not in ("set_stock", "set_safety"):
        assert cells(eng) != after_first.cells


@pytest.mark.parametrize("command", list(STOCK_COMMANDS))
def test_reusing_a_request_id_for_another_request_is_refused(eng, snapshot, command):
    eng.set_stock("SH-PEOPLE", "SKU-A", 5)
    eng.receive("WH-BEIJING", "SKU-B", 1, request_id="req-1")
    before = snapshot(eng)
    with pytest.raises(errors.RequestIdReused) as info:
        STOCK_COMMANDS[command](eng, request_id="req-1")
    assert info.value.field == "request_id"
    assert snapshot(eng) == before


def test_same_request_id_with_other_arguments_is_refused(eng, snapshot):
    eng.set_stock("SH-PEOPLE", "SKU-A", 5, request_id="r")
    before = snapshot(eng)
    with pytest.raises(errors.RequestIdReused):
        eng.set_stock("SH-PEOPLE", "SKU-A", 6, request_id="r")
    with pytest.raises(errors.RequestIdReused):
        eng.set_stock("SH-PUDONG", "SKU-A", 5, request_id="r")
    with pytest.raises(errors.RequestIdReused):
        eng.set_stock("SH-PEOPLE", "SKU-A", 5, safety=1, request_id="r")
    assert snapshot(eng) == before


def test_same_request_id_for_a_different_event_batch_is_refused(eng, snapshot):
    # AIP-155: a request id names one request; a different batch (even of the same length) is not a retry
    eng.apply_stock_events(events([("SH-PEOPLE", "SKU-A", "set", 5)]), request_id="batch-1")
    before = snapshot(eng)
    with pytest.raises(errors.RequestIdReused):
        eng.apply_stock_events(events([("WH-BEIJING", "SKU-B", "set", 100)]), request_id="batch-1")
    assert snapshot(eng) == before


def test_a_failed_request_is_not_remembered(eng):
    with pytest.raises(errors.InsufficientStock):
        eng.sell("SH-PEOPLE", "SKU-A", 1, request_id="r-sale")
    eng.set_stock("SH-PEOPLE", "SKU-A", 1)
    assert eng.sell("SH-PEOPLE", "SKU-A", 1, request_id="r-sale").on_hand == 0


@pytest.mark.parametrize("request_id", ["", 7, b"r"])
def test_request_id_must_be_a_non_empty_string(eng, request_id):
    with pytest.raises(errors.InvalidArgument) as info:
        eng.receive("SH-PEOPLE", "SKU-A", 1, request_id=request_id)
    assert info.value.field == "request_id"
    assert eng.stock_table().num_rows == 0


def test_oldest_request_ids_are_forgotten_beyond_the_limit(make_engine):
    eng = make_engine(max_request_ids=3)
    for i in range(4):
        eng.receive("SH-PEOPLE", "SKU-A", 1, request_id=f"r{i}")
    assert eng.stats()["request_ids"] == 3
    assert eng.receive("SH-PEOPLE", "SKU-A", 1, request_id="r3").on_hand == 4      # still a retry
    assert eng.receive("SH-PEOPLE", "SKU-A", 1, request_id="r0").on_hand == 5      # forgotten: applied again
