"""Routing in columns (``Engine.route_columns``, ``RouteOrderColumns``): one native pass per batch, the same
decisions as routing the orders one by one, one journal record, retries answered like ``route_order``."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st

import pyomni
from pyomni import errors

NET = pyomni.demo_network(stores=40, warehouses=2, skus=12, seed=9)
SKUS = list(NET.skus)


def engine(clock: FakeClock, **kw) -> pyomni.Engine:
    eng = pyomni.Engine(NET, clock=clock, **kw)
    eng.apply_stock_events(pyomni.demo_stock(NET, seed=9))
    return eng


def columns(orders: list[pyomni.Order]) -> tuple:
    return ([o.id for o in orders], [len(o.lines) for o in orders], [x.sku for o in orders for x in o.lines],
            [x.qty for o in orders for x in o.lines], [o.destination[0] for o in orders],
            [o.destination[1] for o in orders])


order_lists = st.lists(
    st.tuples(st.lists(st.integers(0, len(SKUS) - 1), min_size=1, max_size=3, unique=True),
              st.lists(st.integers(1, 6), min_size=3, max_size=3), st.integers(0, len(NET.ids) - 1)),
    min_size=1, max_size=60)


def build(spec) -> list[pyomni.Order]:
    return [pyomni.Order(f"o-{i}", [(SKUS[s], q) for s, q in zip(skus, qtys)],
                         destination=(float(NET.lat[at]) + 0.01, float(NET.lon[at])))
            for i, (skus, qtys, at) in enumerate(spec)]


@settings(max_examples=60, deadline=None)
@given(spec=order_lists, with_ids=st.booleans())
def test_columns_decide_exactly_like_one_order_at_a_time(spec, with_ids):
    orders = build(spec)
    rids = [f"r-{o.id}" for o in orders] if with_ids else None
    a, b = engine(FakeClock()), engine(FakeClock())
    got = a.route_columns(*columns(orders), request_ids=rids)
    want = b.route_orders(orders, request_ids=rids)
    assert list(got) == want                             # Allocation equality leaves the explanation out
    assert got.held == sum(1 for x in want if x.reservation_id)
    assert a.stock_table().to_pydict() == b.stock_table().to_pydict()
    assert a.reservations(limit=1000) == b.reservations(limit=1000)
    a.check_invariants()


def test_bad_rows_get_their_errors_and_the_others_go_on():
    a, b = engine(FakeClock()), engine(FakeClock())
    good = build([([0], [1, 1, 1], 3), ([1, 2], [1, 2, 1], 5)])
    live = a.route_order(pyomni.Order("live", [(SKUS[3], 1)], destination=(31.2, 121.5)))
    b.route_order(pyomni.Order("live", [(SKUS[3], 1)], destination=(31.2, 121.5)))
    ids = ["g-0", "bad-sku", "bad-qty", "bad-point", "twice", "g-1", "twice", "live", ""]
    counts = [1, 1, 1, 1, 1, 2, 1, 1, 1]
    skus = [SKUS[0], "NOPE", SKUS[1], SKUS[1], SKUS[4], SKUS[1], SKUS[2], SKUS[4], SKUS[5], SKUS[5]]
    qtys = [1, 1, 0, 1, 1, 1, 2, 1, 1, 1]
    lat = [good[0].destination[0], 31.0, 31.0, 95.0, 31.0, good[1].destination[0], 31.0, 31.0, 31.0]
    lon = [good[0].destination[1], 121.0, 121.0, 121.0, 121.0, good[1].destination[1], 121.0, 121.0, 121.0]
    res = a.route_columns(ids, counts, skus, qtys, lat, lon)
    kinds = {i: type(e) for i, e in res.errors.items()}
    assert kinds == {1: errors.UnknownSku, 2: errors.InvalidQuantity, 3: errors.InvalidCoordinates,
                     6: errors.DuplicateId, 7: errors.DuplicateId, 8: errors.InvalidOrder}
    assert res.errors[1].field == "lines[0].sku" and res.errors[7].field == "id"
    # the good rows (and "twice" the first time) were routed as they would have been alone
    b.route_orders([pyomni.Order("g-0", [(SKUS[0], 1)], destination=(lat[0], lon[0])),
                    pyomni.Order("twice", [(SKUS[4], 1)], destination=(31.0, 121.0)),
                    pyomni.Order("g-1", [(SKUS[1], 1), (SKUS[2], 2)], destination=(lat[5], lon[5]))])
    assert a.stock_table().to_pydict() == b.stock_table().to_pydict()
    assert live.reservation_id
    with pytest.raises(errors.InvalidArgument):
        a.route_columns(["x"], [2], [SKUS[0]], [1], [31.0], [121.0])      # skus shorter than the line counts


def test_retries_answer_from_the_window_like_route_order():
    eng = engine(FakeClock())
    orders = build([([0], [1, 1, 1], 2), ([1], [2, 1, 1], 4), ([2], [99, 1, 1], 6)])
    rids = ["a", "b", "c"]
    first = list(eng.route_columns(*columns(orders), request_ids=rids))
    before = eng.stock_table().to_pydict()
    again = eng.route_columns(*columns(orders), request_ids=rids)
    assert list(again) == first and eng.stock_table().to_pydict() == before
    assert eng.route_order(orders[1], request_id="b") == first[1]           # unary retry: the same answer
    changed = build([([0], [2, 1, 1], 2)])
    res = eng.route_columns(*columns(changed), request_ids=["a"])
    assert isinstance(res.get(0), errors.RequestIdReused)
    twice = build([([3], [1, 1, 1], 1), ([4], [1, 1, 1], 1)])
    twice = [pyomni.Order(name, o.lines, destination=o.destination) for name, o in zip(("fresh", "other"), twice)]
    res = eng.route_columns(*columns(twice), request_ids=["d", "d"])
    assert isinstance(res.get(1), errors.RequestIdReused) and res.get(0).reservation_id


def test_a_channel_with_a_rule_takes_the_general_path_with_the_same_answers():
    rules = {"tmall": pyomni.ChannelRule(share=0.3, buffer=1)}
    a, b = engine(FakeClock(), channels=rules), engine(FakeClock(), channels=rules)
    orders = [pyomni.Order(o.id, o.lines, destination=o.destination, channel="tmall")
              for o in build([([0], [3, 1, 1], 2), ([0], [5, 1, 1], 3), ([1], [1, 1, 1], 4)])]
    got = a.route_columns(*columns(orders), channels="tmall")
    assert list(got) == b.route_orders(orders)
    assert a.stock_table().to_pydict() == b.stock_table().to_pydict()


def test_the_reference_engine_routes_columns_generally():
    clock_a, clock_b = FakeClock(), FakeClock()
    a, b = engine(clock_a, native=False), engine(clock_b)
    orders = build([([0, 1], [1, 2, 1], 2), ([2], [1, 1, 1], 9)])
    assert list(a.route_columns(*columns(orders))) == list(b.route_columns(*columns(orders)))


def test_a_batch_is_one_record_that_replays_and_snapshots(tmp_path):
    clock = FakeClock()
    eng = pyomni.Engine.open(tmp_path / "d", NET, clock=clock)
    eng.apply_stock_events(pyomni.demo_stock(NET, seed=9))
    orders = build([([s % len(SKUS)], [1, 1, 1], (7 * s) % len(NET.ids)) for s in range(30)])
    records = eng.journal_stats()["records"]
    res = eng.route_columns(*columns(orders), request_ids=[f"r-{o.id}" for o in orders])
    assert eng.journal_stats()["records"] == records + 1
    held = [r.reservation_id for r in res if isinstance(r, pyomni.Allocation) and r.reservation_id]
    eng.confirm(held[0])
    state = (eng.stock_table().to_pydict(), eng.reservations(limit=100))
    eng.close()
    again = pyomni.Engine.open(tmp_path / "d", clock=clock)
    assert (again.stock_table().to_pydict(), again.reservations(limit=100)) == state
    assert again.route_order(orders[3], request_id="r-o-3") == res.get(3)
    again.save()
    late = pyomni.Order("late", [(SKUS[0], 1)], destination=(float(NET.lat[1]), float(NET.lon[1])))
    more = again.route_columns(*columns([late]), request_ids=["late"])
    assert more.held == 1
    state = (again.stock_table().to_pydict(), again.reservations(limit=100))
    again.close()
    last = pyomni.Engine.open(tmp_path / "d", clock=clock)
    assert (last.stock_table().to_pydict(), last.reservations(limit=100)) == state
    assert int(more.reservation[0]) > max(int(h[1:]) for h in held)       # numbers never reused
    clock.advance(10_000)
    assert len(last.expire_due()) == len(held) - 1 + more.held
    last.check_invariants()
    last.close()


def test_route_order_columns_over_grpc_matches_route_orders():
    from grpc_server import create_server

    a, b = engine(FakeClock()), engine(FakeClock())
    server, port = create_server("127.0.0.1:0", a)
    server.start()
    try:
        with pyomni.Client(f"127.0.0.1:{port}") as client:
            orders = build([([s % len(SKUS), (s + 1) % len(SKUS)], [1 + s % 3, 1, 1], (5 * s) % len(NET.ids))
                            for s in range(50)])
            orders.append(pyomni.Order("bad", [("NOPE", 1)], destination=(31.0, 121.0)))
            orders.append(pyomni.Order("big", [(SKUS[0], 10_000)], destination=(31.0, 121.0)))
            rids = [f"g-{o.id}" for o in orders]
            got = client.route_columns(orders, request_ids=rids)
            want = b.route_orders(orders, request_ids=rids)
            assert isinstance(got[-2], errors.UnknownSku) and isinstance(want[-2], errors.UnknownSku)
            for g, w in zip(got[:-2] + got[-1:], want[:-2] + want[-1:]):
                assert (g.status, g.reservation_id, g.shipments, g.short_lines, g.expires_at) == \
                    (w.status, w.reservation_id, w.shipments, w.short_lines, w.expires_at)
                assert g.total_cost == pytest.approx(w.total_cost)
            assert [x.reservation_id for x in client.route_columns(orders[:5], request_ids=rids[:5])] == \
                [x.reservation_id for x in got[:5]]                              # retries over the wire
    finally:
        server.stop(None)
    assert a.stock_table().to_pydict() == b.stock_table().to_pydict()
    np.testing.assert_equal(a.state().held, b.state().held)
