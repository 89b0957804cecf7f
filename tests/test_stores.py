"""Store operations in the engine: the shipment life cycle, rejections and their stock effects, time limits in
opening hours (also across a restart), the order feed, order exceptions, returns and the settlement facts."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import FakeClock

import pyomni
from pyomni import errors, settlement
from pyomni.fulfilment import (
    ExceptionState,
    OpeningHours,
    RejectReason,
    ShipmentState,
    StoreAction,
    StoreRules,
)
from pyomni.model import Line, Order, ReservationState
from pyomni.stores import MAX_EVENTS_PER_STORE

CST = dt.timezone(dt.timedelta(hours=8))
NOON = dt.datetime(2026, 11, 11, 12, 0, tzinfo=CST).timestamp()        # a Wednesday
NET = pyomni.demo_network(stores=12, warehouses=0, skus=6, seed=11)
LOCS = list(NET.ids)
S = ShipmentState


def at(loc: int) -> tuple[float, float]:
    return float(NET.lat[loc]), float(NET.lon[loc])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


@pytest.fixture
def eng(clock) -> pyomni.Engine:
    e = pyomni.Engine(NET, clock=clock, reservation_ttl=3600.0)
    for loc in LOCS:
        e.set_stock(loc, "SKU-000001", 3)
        e.set_stock(loc, "SKU-000002", 2)
    e.set_store_rules(None, StoreRules())          # 15 minutes to answer, 10:00-22:00 China time
    return e


def route(eng: pyomni.Engine, oid: str, near: int = 0, qty: int = 1, **kw) -> pyomni.Allocation:
    lines = kw.pop("lines", [Line("SKU-000001", qty, 1999)])
    a = eng.route_order(Order(oid, lines, destination=at(near), **kw))
    assert a.reservation_id is not None, a
    return a


def only(eng: pyomni.Engine, oid: str) -> pyomni.fulfilment.StoreShipment:
    (ship,) = eng.shipments(order_id=oid)
    return ship


# -- the life cycle ------------------------------------------------------------------------------
def test_a_routed_order_is_a_routed_shipment_at_its_store_with_its_answer_deadline(eng, clock):
    a = route(eng, "o-1")
    ship = only(eng, "o-1")
    assert (ship.state, ship.location, ship.reservation_id) == (S.ROUTED, a.shipments[0].location, a.reservation_id)
    assert ship.lines == (Line("SKU-000001", 1, 1999),) and not ship.pickup      # with the order's price
    assert ship.due_at == clock() + 900
    assert eng.shipments(ship.location) == [ship]
    eng.check_invariants()


def test_delivery_steps_go_forward_only_and_the_goods_leave_only_once_paid(eng):
    a = route(eng, "o-1")
    sid = only(eng, "o-1").id
    assert eng.accept_shipment(sid).state is S.ACCEPTED
    with pytest.raises(errors.ShipmentStateConflict):
        eng.accept_shipment(sid)                            # not twice
    assert eng.pack_shipment(sid).state is S.PACKED       # PICKED may be skipped
    with pytest.raises(errors.ShipmentStateConflict):
        eng.pick_shipment(sid)                              # never back
    with pytest.raises(errors.ShipmentStateConflict):
        eng.ship_shipment(sid)                              # HELD: not paid yet
    with pytest.raises(errors.ShipmentStateConflict):
        eng.ready_shipment(sid)                             # not a step of a parcel
    eng.confirm(a.reservation_id)
    shipped = eng.ship_shipment(sid)
    assert shipped.state is S.SHIPPED and shipped.due_at is None
    assert eng.shipments(shipped.location) == []            # no longer open
    with pytest.raises(errors.ShipmentStateConflict):
        eng.reject_shipment(sid, "NO_STAFF")
    eng.check_invariants()


def test_a_pickup_shipment_is_readied_and_collected(eng, clock):
    a = eng.route_order(Order("p-1", [Line("SKU-000001", 1, 5000)], pickup_location=LOCS[4]))
    ship = only(eng, "p-1")
    assert ship.pickup and ship.location == LOCS[4]
    with pytest.raises(errors.ShipmentStateConflict):
        eng.pack_shipment(ship.id)                          # packing is a parcel's step
    eng.confirm(a.reservation_id)
    ready = eng.ready_shipment(ship.id)
    assert ready.state is S.READY_FOR_PICKUP
    # three business days: closes 22:00 on the third day counting the day it became ready
    assert ready.due_at == dt.datetime(2026, 11, 13, 22, 0, tzinfo=CST).timestamp()
    assert eng.collect_shipment(ship.id).state is S.COLLECTED
    facts = eng.settlement_facts()
    assert facts.column("fulfilling_store").to_pylist() == [LOCS[4]]
    assert facts.column("home_store").to_pylist() == [LOCS[4]]     # a pickup's home store is the pickup store
    eng.check_invariants()


def test_store_actions_are_idempotent_by_request_id(eng):
    route(eng, "o-1")
    sid = only(eng, "o-1").id
    first = eng.accept_shipment(sid, request_id="acc-1")
    assert eng.accept_shipment(sid, request_id="acc-1") == first
    with pytest.raises(errors.RequestIdReused):
        eng.pick_shipment(sid, request_id="acc-1")


def test_bad_actions_are_typed_errors_and_change_nothing(eng):
    route(eng, "o-1")
    sid = only(eng, "o-1").id
    before = (eng.state().lsn, eng.shipments(open_only=False))
    for call in (lambda: eng.accept_shipment("R9999999999-1"),
                 lambda: eng.store_action(sid, "FLY"),
                 lambda: eng.store_action(sid, StoreAction.ACCEPT, reason="NOT_FOUND"),
                 lambda: eng.store_action(sid, StoreAction.REJECT),
                 lambda: eng.reject_shipment(sid, "TIMEOUT"),          # only the clock times out
                 lambda: eng.reject_shipment(sid, "NO_STAFF", note="x" * 501),
                 lambda: eng.return_line(sid, "SKU-000001", 1, location=LOCS[0]),
                 lambda: eng.resolve_exception("X0000000001")):
        with pytest.raises(errors.PyomniError):
            call()
    assert (eng.state().lsn, eng.shipments(open_only=False)) == before


# -- rejections ----------------------------------------------------------------------------------
@pytest.mark.parametrize("confirmed", [False, True])
def test_a_rejection_reroutes_away_from_every_store_that_rejected(eng, confirmed):
    a = route(eng, "o-1")
    if confirmed:
        eng.confirm(a.reservation_id)
    seen = []
    sid = only(eng, "o-1").id
    for _ in range(3):
        seen.append(eng.shipment(sid).location)
        r = eng.reject_shipment(sid, "NO_STAFF")
        assert r.shipment.state is S.REJECTED and r.shipment.reason is RejectReason.NO_STAFF
        (new,) = r.new_shipments
        assert new.location not in seen and new.state is S.ROUTED
        sid = new.id
        eng.check_invariants()
    res = eng.reservation(a.reservation_id)
    assert [s.location for s in res.shipments] == [eng.shipment(sid).location]
    # NO_STAFF changes no stock: each rejecting store has its units back, free to sell
    for loc in seen:
        level = eng.stock(loc, "SKU-000001")
        assert (level.on_hand, level.reserved) == (3, 0)


@pytest.mark.parametrize("confirmed", [False, True])
def test_not_found_zeroes_the_shelf_and_damaged_writes_the_units_off(eng, confirmed):
    a = route(eng, "o-1", qty=2)
    if confirmed:
        eng.confirm(a.reservation_id)
    sid = only(eng, "o-1").id
    first = eng.shipment(sid).location
    r = eng.reject_shipment(sid, "NOT_FOUND")
    assert eng.stock(first, "SKU-000001").on_hand == 0
    assert r.discrepancies == ((first, "SKU-000001", 3),)
    second = r.new_shipments[0]
    r2 = eng.reject_shipment(second.id, "DAMAGED")
    assert eng.stock(second.location, "SKU-000001").on_hand == 1          # 3 - the 2 damaged units
    assert r2.discrepancies == ((second.location, "SKU-000001", 2),)
    d = eng.discrepancies()
    assert d.column("reason").to_pylist() == ["NOT_FOUND", "DAMAGED"]
    eng.check_invariants()


def test_not_found_keeps_what_other_orders_hold_in_the_same_cell(eng):
    route(eng, "o-1", near=2)
    route(eng, "o-2", near=2)
    s1, s2 = only(eng, "o-1"), only(eng, "o-2")
    assert s1.location == s2.location
    eng.reject_shipment(s1.id, "NOT_FOUND")
    level = eng.stock(s1.location, "SKU-000001")
    assert (level.on_hand, level.reserved) == (1, 1)                      # o-2's unit stays held
    eng.check_invariants()


def test_when_nothing_can_take_the_lines_a_person_gets_an_order_exception(eng):
    a = eng.route_order(Order("o-1", [("SKU-000003", 1)], destination=at(0)))
    assert a.status is pyomni.AllocationStatus.UNFULFILLABLE                # nobody has SKU-000003 yet
    eng.set_stock(LOCS[5], "SKU-000003", 1)
    a = eng.route_order(Order("o-1", [("SKU-000003", 1)], destination=at(0)))
    sid = only(eng, "o-1").id
    r = eng.reject_shipment(sid, "OTHER", note="shelf empty")
    assert r.new_shipments == () and r.exception is not None
    exc = r.exception
    assert (exc.order_id, exc.reservation_id, exc.shipment_id, exc.state) == ("o-1", a.reservation_id, sid,
                                                                               ExceptionState.OPEN)
    assert [(x.sku, x.requested) for x in exc.lines] == [("SKU-000003", 1)]
    assert eng.order_exceptions() == [exc]
    assert eng.reservation(a.reservation_id).state is ReservationState.HELD   # kept, not silently released
    # restocked elsewhere: a retry routes the lines and resolves it
    eng.set_stock(LOCS[7], "SKU-000003", 1)
    done = eng.resolve_exception(exc.id, retry=True)
    assert done.state is ExceptionState.RESOLVED and LOCS[7] in done.resolution
    assert only(eng, "o-1").location == LOCS[7]
    assert eng.order_exceptions() == []
    with pytest.raises(errors.FailedPrecondition):
        eng.resolve_exception(exc.id)
    eng.check_invariants()


def test_the_order_systems_reroute_rejects_the_shipment_too(eng):
    a = route(eng, "o-1")
    first = only(eng, "o-1")
    b = eng.reroute(a.reservation_id, first.location)
    assert eng.shipment(first.id).state is S.REJECTED
    assert eng.shipment(first.id).reason is RejectReason.ORDER_SYSTEM
    assert only(eng, "o-1").location == b.shipments[0].location
    eng.check_invariants()


def test_release_and_expiry_cancel_the_open_shipments(eng, clock):
    a = route(eng, "o-1")
    route(eng, "o-2", near=3)
    eng.release(a.reservation_id)
    assert eng.shipments(order_id="o-1", open_only=False)[0].state is S.CANCELLED
    clock.advance(3601)                                           # o-2's hold expires (before its answer limit,
    eng.set_store_rules(None, None)                               # which is switched off here)
    eng.expire_due()
    assert eng.shipments(order_id="o-2", open_only=False)[0].state is S.CANCELLED
    eng.check_invariants()


# -- time limits ---------------------------------------------------------------------------------
def test_an_unanswered_shipment_times_out_and_is_rerouted_by_the_clock(eng, clock):
    route(eng, "o-1")
    first = only(eng, "o-1")
    clock.advance(899)
    eng.expire_due()
    assert eng.shipment(first.id).state is S.ROUTED
    clock.advance(2)
    eng.expire_due()
    gone = eng.shipment(first.id)
    assert (gone.state, gone.reason) == (S.REJECTED, RejectReason.TIMEOUT)
    nxt = only(eng, "o-1")
    assert nxt.location != first.location and nxt.due_at == clock() + 900
    eng.check_invariants()


def test_any_command_fires_the_deadlines_that_passed_first(eng, clock):
    route(eng, "o-1")
    first = only(eng, "o-1")
    clock.advance(1000)
    eng.set_stock(LOCS[0], "SKU-000004", 1)                       # an unrelated command
    assert eng.shipment(first.id).state is S.REJECTED


def test_limits_count_opening_hours_only(eng, clock):
    clock.now = dt.datetime(2026, 11, 11, 21, 55, tzinfo=CST).timestamp()
    eng.confirm(route(eng, "o-1").reservation_id)                 # paid: the hold does not expire overnight
    ship = only(eng, "o-1")
    assert ship.due_at == dt.datetime(2026, 11, 12, 10, 10, tzinfo=CST).timestamp()
    clock.now = dt.datetime(2026, 11, 12, 9, 0, tzinfo=CST).timestamp()       # overnight: still in time
    eng.expire_due()
    assert eng.shipment(ship.id).state is S.ROUTED


def test_a_store_closed_on_a_weekday_is_due_on_its_next_open_day(eng, clock):
    eng.set_store_rules(LOCS[0], StoreRules(OpeningHours(600, 1320, closed_weekdays=(4,))))     # shut Thursdays
    clock.now = dt.datetime(2026, 11, 11, 21, 50, tzinfo=CST).timestamp()     # Wednesday
    route(eng, "o-1", near=0)
    ship = only(eng, "o-1")
    assert ship.location == LOCS[0]
    assert ship.due_at == dt.datetime(2026, 11, 13, 10, 5, tzinfo=CST).timestamp()   # Friday


def test_a_missed_pick_limit_flags_the_shipment_late(eng, clock):
    eng.confirm(route(eng, "o-1").reservation_id)
    sid = only(eng, "o-1").id
    eng.accept_shipment(sid)
    assert eng.shipment(sid).due_at == clock() + 7200
    clock.advance(7201)
    eng.expire_due()
    late = eng.shipment(sid)
    assert late.late and late.state is S.ACCEPTED and late.due_at is None
    kinds = [e.kind for e in eng.store_events([late.location], 1).events]
    assert kinds[-1] == "LATE"


def test_a_pickup_not_collected_in_time_goes_back_to_the_shelf(eng, clock):
    a = eng.route_order(Order("p-1", [("SKU-000001", 2)], pickup_location=LOCS[4]))
    eng.confirm(a.reservation_id)
    assert eng.stock(LOCS[4], "SKU-000001").on_hand == 1
    sid = only(eng, "p-1").id
    ready = eng.ready_shipment(sid)
    clock.now = ready.due_at + 1
    eng.expire_due()
    assert eng.shipment(sid).state is S.NOT_COLLECTED
    assert eng.stock(LOCS[4], "SKU-000001").on_hand == 3
    assert eng.settlement_facts().num_rows == 0                      # nothing was sold
    eng.check_invariants()


def test_deadlines_survive_a_restart(tmp_path, clock):
    with pyomni.Engine.open(tmp_path, NET, clock=clock, fsync="never") as e:
        e.set_stock(LOCS[0], "SKU-000001", 3)
        e.set_stock(LOCS[1], "SKU-000001", 3)
        e.set_store_rules(None, StoreRules())
        e.confirm(e.route_order(Order("o-1", [("SKU-000001", 1)], destination=at(0))).reservation_id)
        first = only(e, "o-1")
        e.save()                                                   # half in the snapshot ...
        e.accept_shipment(first.id)                                # ... half in the journal after it
    clock.advance(7201)
    with pyomni.Engine.open(tmp_path, clock=clock) as again:
        again.expire_due()
        assert again.shipment(first.id).late
        again.check_invariants()


# -- the feed -------------------------------------------------------------------------------------
def test_the_feed_resumes_after_a_sequence_number_and_resets_when_it_cannot(eng):
    route(eng, "o-1", near=0)
    store = only(eng, "o-1").location
    start = eng.store_events([store], 0)
    assert start.reset and [e.kind for e in start.events] == ["RESET"]
    sid = start.events[0].shipment.id
    eng.accept_shipment(sid)
    eng.pick_shipment(sid)
    more = eng.store_events([store], start.last_seq)
    assert not more.reset and [e.kind for e in more.events] == ["ACCEPTED", "PICKED"]
    assert [e.seq for e in more.events] == sorted(e.seq for e in more.events) and more.last_seq == eng.store_seq
    assert eng.store_events([store], more.last_seq).events == []
    assert eng.store_events([store], more.last_seq + 5).reset           # ahead of the engine: start over


def test_a_store_feed_sees_only_its_stores_and_a_group_feed_sees_them_all(eng):
    route(eng, "o-1", near=0)
    route(eng, "o-2", near=6)
    a, b = only(eng, "o-1").location, only(eng, "o-2").location
    assert a != b
    one = eng.store_events([a], 0).events
    both = eng.store_events([a, b], 0).events
    assert {e.location for e in one} == {a} and {e.location for e in both} == {a, b}


def test_a_feed_that_fell_too_far_behind_gets_a_reset(eng):
    route(eng, "o-1", near=0)
    store = only(eng, "o-1").location
    seq = eng.store_seq
    eng.set_stock(store, "SKU-000005", 100_000)
    for i in range(MAX_EVENTS_PER_STORE + 10):
        a = eng.route_order(Order(f"f-{i}", [("SKU-000005", 1)], destination=at(0)))
        eng.release(a.reservation_id)                              # two events at the store each
    assert eng.store_events([store], seq).reset
    assert not eng.store_events([store], eng.store_seq - 3).reset


def test_wait_store_events_sleeps_until_its_store_has_one(eng):
    import threading
    route(eng, "o-1", near=0)
    store = only(eng, "o-1").location
    seq = eng.store_seq
    got = []
    t = threading.Thread(target=lambda: got.append(eng.wait_store_events([store], seq, timeout=10)))
    t.start()
    eng.accept_shipment(only(eng, "o-1").id)
    t.join(10)
    assert [e.kind for e in got[0].events] == ["ACCEPTED"]
    assert eng.wait_store_events([store], eng.store_seq, timeout=0.05).events == []


# -- returns and money ---------------------------------------------------------------------------
def shipped(eng, oid, **kw):
    a = route(eng, oid, **kw)
    eng.confirm(a.reservation_id)
    sids = [s.id for s in eng.shipments(order_id=oid)]
    for sid in sids:
        eng.ship_shipment(sid)
    return sids


def test_a_return_anywhere_restocks_there_and_reverses_the_sale_exactly(eng, clock):
    eng.register_attribution_rule(settlement.SPLIT_361)
    eng.set_attribution(None, "split-361")
    (sid,) = shipped(eng, "o-1", qty=3, coupon_cents=100, selling_store=LOCS[9])
    before = eng.stock(LOCS[11], "SKU-000001").on_hand
    eng.return_line(sid, "SKU-000001", 1, location=LOCS[11])
    eng.return_line(sid, "SKU-000001", 2, location=LOCS[11])
    assert eng.stock(LOCS[11], "SKU-000001").on_hand == before + 3
    with pytest.raises(errors.ReturnNotAllowed):
        eng.return_line(sid, "SKU-000001", 1, location=LOCS[11])            # all three are back
    entries = eng.settlement(entries=True).to_pandas()
    assert entries.groupby("party").amount_cents.sum().eq(0).all()          # every party nets to zero
    assert len(eng.returns()) == 2
    eng.check_invariants()


def test_the_settlement_of_a_sale_is_its_price_minus_the_coupon(eng):
    eng.register_attribution_rule(settlement.SPLIT_361)
    eng.set_attribution("app", "split-361")
    shipped(eng, "o-1", lines=[Line("SKU-000001", 2, 999), Line("SKU-000002", 1, 4999)], coupon_cents=700)
    daily = eng.settlement()
    assert sum(daily.column("net_cents").to_pylist()) == 2 * 999 + 4999 - 700
    day = eng.settlement(day="2026-11-11")
    assert day.num_rows == daily.num_rows
    assert eng.settlement(day=dt.date(2026, 11, 12)).num_rows == 0


def test_returns_close_with_the_return_window(eng, clock):
    (sid,) = shipped(eng, "o-1")
    clock.advance(31 * 86_400)
    with pytest.raises(errors.ReturnNotAllowed):
        eng.return_line(sid, "SKU-000001", 1, location=LOCS[0])


def test_order_money_fields_are_checked_before_routing(eng):
    for bad in (Order("o", [Line("SKU-000001", 1, -5)], destination=at(0)),
                Order("o", [Line("SKU-000001", 1, 100)], destination=at(0), coupon_cents=101),
                Order("o", [("SKU-000001", 1)], destination=at(0), attribution="nope"),
                Order("o", [("SKU-000001", 1)], destination=at(0), selling_store="NOWHERE")):
        with pytest.raises(errors.PyomniError):
            eng.route_order(bad)
    assert eng.shipments(open_only=False) == []


def test_the_readme_store_example_runs(capsys):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Store operations"):]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md (store operations)", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("ROUTED 900.0") and "SKU-000001', 3)" in out[1]
    assert out[-1] == "['REJECTED', 'ROUTED', 'REJECTED', 'ROUTED', 'ACCEPTED', 'PACKED', 'SHIPPED']"
    nets = [int(line.split()[-1]) for line in out[3:-1]]
    assert sum(nets) == (2 * 19_900 - 2_000) // 2                   # one of the two units came back


def test_a_double_11_day_settles_to_the_revenue_of_what_shipped_minus_returns():
    """300 stores, 4,000 orders through a day with the clock running: stores accept after a delay, some reject,
    some never answer (re-routed by the clock), customers return some units anywhere. At the end the
    settlement ledger's total is exactly what shipped orders paid minus what came back."""
    import numpy as np

    rng = np.random.default_rng(1111)
    net = pyomni.demo_network(stores=300, warehouses=2, skus=40, seed=1111)
    clock = FakeClock(dt.datetime(2026, 11, 11, 0, 0, tzinfo=CST).timestamp())
    eng = pyomni.Engine(net, clock=clock, reservation_ttl=3 * 86_400.0)
    import pyarrow as pa
    cells = [(loc, sku) for loc in net.ids for sku in net.skus if rng.random() < 0.5]
    eng.apply_stock_events(pa.table({"location": [c[0] for c in cells], "sku": [c[1] for c in cells],
                                     "event": ["set"] * len(cells), "qty": rng.integers(1, 8, len(cells))}))
    eng.set_store_rules(None, StoreRules(OpeningHours(0, 1440)))        # a 24-hour Double 11
    eng.register_attribution_rule(settlement.SPLIT_361)
    eng.set_attribution(None, "split-361")
    prices = {s: int(rng.integers(2_900, 99_900)) for s in net.skus}
    paid: dict[str, int] = {}
    orders = pyomni.demo_orders(net, 4000, seed=1111)
    for n, o in enumerate(orders):
        clock.advance(20.0)
        lines = [Line(x.sku, x.qty, prices[x.sku]) for x in o.lines]
        coupon = int(rng.integers(0, 500)) if rng.random() < 0.3 else 0
        a = eng.route_order(Order(o.id, lines, destination=o.destination, coupon_cents=coupon, channel="tmall"))
        if a.reservation_id is None:
            continue
        eng.confirm(a.reservation_id)
        paid[o.id] = sum(x.unit_price_cents * x.qty for x in lines) - coupon
        if n % 5 == 0:                                   # the stores answer what is open, now and then
            for ship in eng.shipments():
                r = rng.random()
                if r < 0.05:
                    eng.reject_shipment(ship.id, rng.choice(["NOT_FOUND", "NO_STAFF", "DAMAGED"]))
                elif r < 0.08:
                    continue                             # nobody answers: the clock re-routes it
                elif ship.state is S.ROUTED:
                    eng.accept_shipment(ship.id)
                else:
                    eng.ship_shipment(ship.id)
    for x in eng.order_exceptions():                     # lines nobody could take: refunded by a person
        eng.resolve_exception(x.id, note="refunded")
    for _ in range(3):
        clock.advance(901)
        eng.expire_due()
        for ship in eng.shipments():
            if ship.state is S.ROUTED:
                eng.accept_shipment(ship.id)
            eng.ship_shipment(ship.id)
    assert eng.shipments() == []
    eng.check_invariants()
    facts = eng.settlement_facts().to_pandas()
    sales = facts[facts.kind == "sale"]
    # fully shipped orders pay their price minus the coupon; orders with lines nobody could take, the lines shipped
    exc_orders = {x.order_id for x in eng.order_exceptions(None)}
    full = sales[~sales.order_id.isin(exc_orders)].groupby("order_id")
    for oid, rows in full:
        assert int((rows.gross_cents - rows.coupon_cents).sum()) == paid[oid]
    # customers return some units anywhere
    returned = 0
    for _, row in sales.sample(300, random_state=3).iterrows():
        k = int(rng.integers(1, row.qty + 1))
        eng.return_line(row.shipment_id, row.sku, k, location=net.ids[int(rng.integers(0, 300))])
        returned += k * prices[row.sku]
    ledger = eng.settlement()
    shipped_revenue = int((sales.gross_cents - sales.coupon_cents).sum())
    returns = -int(np.sum(ledger.column("returns_cents").to_numpy()))
    assert int(np.sum(ledger.column("net_cents").to_numpy())) == shipped_revenue - returns
    assert 0 < returns <= returned                       # coupons taken back in proportion lower what is repaid
    assert len(paid) > 3000 and len(exc_orders) < 0.05 * len(paid)      # a few orders ran out of places


def test_a_rejection_after_not_found_in_a_cell_below_safety_keeps_every_hold():
    # the re-route's decision once released the parcel's hold and held it again, which failed the availability
    # check where NOT_FOUND had left on-hand == reserved below safety, and lost the hold (found by the simulation)
    net = pyomni.demo_network(stores=4, warehouses=0, skus=2, seed=2)
    eng = pyomni.Engine(net)
    a, b = net.ids[0], net.ids[1]
    eng.set_stock(a, "SKU-000000", 5, safety=1)
    eng.set_stock(b, "SKU-000000", 5)
    dest = (float(net.lat[0]), float(net.lon[0]))
    eng.route_order(Order("o-1", [("SKU-000000", 1)], destination=dest))
    eng.route_order(Order("o-2", [("SKU-000000", 1)], destination=dest))
    s1, s2 = only(eng, "o-1"), only(eng, "o-2")
    assert s1.location == s2.location == a
    eng.reject_shipment(s1.id, "NOT_FOUND")
    eng.check_invariants()
    r = eng.reject_shipment(s2.id, "NO_STAFF")
    assert r.new_shipments[0].location == b
    eng.check_invariants()


def test_the_order_systems_reroute_keeps_its_hold_when_safety_was_raised_since():
    net = pyomni.demo_network(stores=4, warehouses=0, skus=2, seed=2)
    eng = pyomni.Engine(net)
    a, b = net.ids[0], net.ids[1]
    eng.set_stock(a, "SKU-000000", 2)
    eng.set_stock(b, "SKU-000000", 5)
    held = eng.route_order(Order("o-1", [("SKU-000000", 2)], destination=(float(net.lat[0]), float(net.lon[0]))))
    assert held.shipments[0].location == a
    eng.set_safety(a, "SKU-000000", 2)                   # on-hand 2 = reserved 2, safety 2
    moved = eng.reroute(held.reservation_id, a)
    assert moved.shipments[0].location == b
    eng.check_invariants()


def test_not_found_at_a_warehouse_writes_off_the_parcels_units_only():
    net = pyomni.demo_network(stores=3, warehouses=1, skus=2, seed=4)
    eng = pyomni.Engine(net)
    wh = next(x.id for x in net if x.kind is pyomni.LocationKind.WAREHOUSE)
    eng.set_stock(wh, "SKU-000000", 500)
    eng.route_order(Order("o-1", [("SKU-000000", 3)], destination=(float(net.lat[0]), float(net.lon[0]))))
    r = eng.reject_shipment(only(eng, "o-1").id, "NOT_FOUND")
    assert eng.stock(wh, "SKU-000000").on_hand == 497 and r.discrepancies == ((wh, "SKU-000000", 3),)
    assert r.exception is not None                      # nobody else has the SKU
    eng.check_invariants()
