"""Replaying a day of the recorded order stream (group ``replay``).

A data directory on a 400-store demo network (20,000 SKUs, demo stock) records one day: 60,000 demo orders
of 1-3 lines over 24 hours of the engine's clock, each routed with a request id, 90 % confirmed and the rest
released, a new business day at 20:00 -- what an order system sends. Built once, outside the timed region.

* ``test_replay_day[recorded]``: :func:`pyomni.replay.replay` under the recorded policy; checked: it
  reproduces every decision (orders and parcels equal on both sides).
* ``test_replay_day[what-if]``: the same day under a policy that prices distance 3x, with 100 more
  ship-from-store stores; checked: every order is accounted for on both sides and every recorded command
  is applied, skipped or refused.

The baseline in the same run is the recovery of the same directory (``Engine.load``: snapshot plus every
record, applied as recorded, no decision), in ``extra_info["recovery_s"]``; a replay applies the records on
one engine and decides them again on the other.

    .venv/bin/python -m pytest benchmarks/test_bench_replay.py --benchmark-only -s -q -p no:cacheprovider
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

import pyomni
from pyomni import codec
from pyomni.journal import read_records
from pyomni.replay import replay

N_ORDERS = 60_000
DAY = 86_400.0
START = 1_762_790_400.0          # 2025-11-11 00:00 UTC


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    d = tmp_path_factory.mktemp("day")
    net = pyomni.demo_network(stores=400, warehouses=4, skus=20_000, seed=7)
    locations = [net.location(i) for i in range(len(net))]
    # a quarter of the stores do not ship from store yet: the what-if turns 100 of them on
    for i in range(0, 400, 4):
        locations[i] = pyomni.model.Location(**{**{f: getattr(locations[i], f) for f in locations[i].__slots__},
                                                "capabilities": pyomni.Capability.PICKUP})
    net = pyomni.Network.from_locations(locations, skus=net.skus)
    clock = [START]
    with pyomni.Engine.open(d, net, fsync="never", clock=lambda: clock[0]) as eng:
        eng.apply_stock_events(pyomni.demo_stock(net, seed=7))
        eng.save()
        for k, order in enumerate(pyomni.demo_orders(net, N_ORDERS, seed=8, max_lines=3)):
            before = clock[0]
            clock[0] = START + DAY * k / N_ORDERS
            if before < START + 20 * 3600 <= clock[0]:
                eng.new_day(request_id="day-2")
            a = eng.route_order(order, request_id=f"r-{order.id}")
            if a.reservation_id is not None:
                (eng.release if k % 10 == 9 else eng.confirm)(a.reservation_id, request_id=f"e-{order.id}")
    return d


@pytest.mark.benchmark(group="replay")
@pytest.mark.parametrize("what", ["recorded", "what-if"])
def test_replay_day(benchmark, day, what):
    kwargs = {} if what == "recorded" else {
        "policy": pyomni.RoutingPolicy(name="near", cost_per_km=0.09), "add_ship_stores": 100}
    result = benchmark.pedantic(replay, args=(day,), kwargs=kwargs, rounds=1, iterations=1)
    assert result.window["orders"] == N_ORDERS
    for side in (result.recorded, result.what_if):
        assert side.orders.num_rows == N_ORDERS
    if what == "recorded":
        assert result.recorded.orders.equals(result.what_if.orders)
        assert result.recorded.shipments.equals(result.what_if.shipments)
        assert result.skipped == {} and result.refused == {}
    else:
        kinds = Counter(type(codec.decode(p)[2]).__name__ for lsn, p in read_records(day / "journal")
                        if lsn >= result.window["first_lsn"])
        for kind, n in kinds.items():
            if kind not in ("Expire", "StoreDeadline"):
                assert result.applied.get(kind, 0) + result.skipped.get(kind, 0) + result.refused.get(kind, 0) == n
    t0 = time.perf_counter()
    pyomni.Engine.load(day)
    recovery = time.perf_counter() - t0
    benchmark.extra_info.update({
        "records": result.window["records"], "orders": result.window["orders"],
        "replay_s": round(result.wall_time_s, 2), "recovery_s": round(recovery, 2),
        "replay_over_recovery": round(result.wall_time_s / recovery, 2),
        "recorded": {k: result.recorded.metrics[k] for k in ("order_fill_rate", "mean_km", "cost_per_order",
                                                              "stores_used")},
        "what_if": {k: result.what_if.metrics[k] for k in ("order_fill_rate", "mean_km", "cost_per_order",
                                                            "stores_used")},
        "skipped": result.skipped, "refused": result.refused})
    print(what, benchmark.extra_info)
