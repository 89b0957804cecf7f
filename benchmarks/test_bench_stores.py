"""Store actions in process: accept and reject commands per second, against the engine's own trivial command.

Group ``stores``
    ``test_accept[memory]`` -- one ``accept_shipment`` per call on an in-memory engine (the command path:
    validate, idempotency lookup, decide, apply, remember, a store event); its baseline
    ``test_trivial_command[memory]`` is ``set_daily_capacity`` through the same path, the cheapest command
    there is. ``test_reject[memory]`` -- ``reject_shipment(NO_STAFF)``: the units released and the lines
    routed again (a nearest-first search) in one command.
    ``test_accept_durable_8_threads`` / ``test_trivial_durable_8_threads`` -- the same two with
    ``fsync="always"`` from 8 threads at once, so concurrent actions share group commits (what a
    server sees when 400 stores answer at once).

The network is a 1,000-store demo network with 2,000 SKUs; the shipments come from one
``route_columns`` batch of 30,000 one-line orders, built before timing. Each benchmark checks its result
(every shipment acted on is in its new state, the invariants hold). Figures are in ``extra_info``;
run with ``-s`` for the summary lines:

    .venv/bin/python -m pytest benchmarks/test_bench_stores.py --benchmark-only -s -q -p no:cacheprovider
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from scratch import default_base_dir

import pyomni
from pyomni.fulfilment import ShipmentState, StoreRules

N_ORDERS = 30_000
N_THREADS = 8
PER_THREAD = 400
NET = pyomni.demo_network(stores=1000, warehouses=4, skus=2000, seed=23)

_median: dict[str, float] = {}


def _loaded(engine: pyomni.Engine) -> list[str]:
    """Stock every store with every SKU, route N_ORDERS one-line orders; the new shipments' ids."""
    ids, skus = list(NET.ids), list(NET.skus)
    rng = np.random.default_rng(5)
    import pyarrow as pa
    loc = np.repeat(np.arange(len(ids)), len(skus))
    sku = np.tile(np.arange(len(skus)), len(ids))
    engine.apply_stock_events(pa.table({"location": pa.array(np.array(ids)[loc]), "sku": pa.array(np.array(skus)[sku]),
                                        "event": pa.array(["set"] * len(loc)), "qty": pa.array(np.full(len(loc), 50))}))
    engine.set_store_rules(None, StoreRules())
    pick = rng.integers(0, len(ids), N_ORDERS)
    batch = engine.route_columns([f"o-{i}" for i in range(N_ORDERS)], [1] * N_ORDERS,
                                 [skus[int(x)] for x in rng.integers(0, len(skus), N_ORDERS)], [1] * N_ORDERS,
                                 NET.lat[pick].astype(float).tolist(), NET.lon[pick].astype(float).tolist())
    assert batch.held == N_ORDERS and not batch.errors
    return [s.id for s in engine.shipments(limit=100_000)]


@pytest.fixture(scope="module")
def memory_engine() -> tuple[pyomni.Engine, list[str]]:
    engine = pyomni.Engine(NET, clock=lambda: 1_763_000_000.0)       # a fixed clock: no deadline fires
    return engine, _loaded(engine)


def _per_call(benchmark, name: str, call: Callable[[], object], n: int) -> None:
    benchmark.pedantic(call, rounds=n, iterations=1, warmup_rounds=0)
    _median[name] = benchmark.stats.stats.median
    benchmark.extra_info["median_us"] = round(_median[name] * 1e6, 1)


@pytest.mark.benchmark(group="stores")
def test_trivial_command_memory(benchmark, memory_engine):
    engine, _ = memory_engine
    loc = NET.ids[0]
    flip = iter(range(10**9))
    _per_call(benchmark, "trivial", lambda: engine.set_daily_capacity(loc, 100 + next(flip) % 7), 3000)


@pytest.mark.benchmark(group="stores")
def test_accept_memory(benchmark, memory_engine):
    engine, ids = memory_engine
    todo = iter(ids[:3000])
    _per_call(benchmark, "accept", lambda: engine.accept_shipment(next(todo)), 3000)
    assert all(engine.shipment(x).state is ShipmentState.ACCEPTED for x in ids[:3000])
    if "trivial" in _median:
        benchmark.extra_info["over_trivial"] = round(_median["accept"] / _median["trivial"], 2)
        print(f"\naccept {_median['accept'] * 1e6:.1f} µs = {_median['accept'] / _median['trivial']:.2f}x the "
              f"trivial command ({_median['trivial'] * 1e6:.1f} µs)")


@pytest.mark.benchmark(group="stores")
def test_reject_memory(benchmark, memory_engine):
    engine, ids = memory_engine
    todo = iter(ids[3000:5000])
    answers: list = []
    _per_call(benchmark, "reject", lambda: answers.append(engine.reject_shipment(next(todo), "NO_STAFF")), 2000)
    assert all(a.shipment.state is ShipmentState.REJECTED and len(a.new_shipments) == 1 for a in answers)
    assert all(a.new_shipments[0].location != a.shipment.location for a in answers)
    engine.check_invariants()
    if "trivial" in _median:
        benchmark.extra_info["over_trivial"] = round(_median["reject"] / _median["trivial"], 2)
        print(f"\nreject + re-route {_median['reject'] * 1e6:.1f} µs = "
              f"{_median['reject'] / _median['trivial']:.2f}x the trivial command")


def _threads(run_one: Callable[[int, int], object]) -> float:
    """N_THREADS threads each doing PER_THREAD calls; the actions per second."""
    start = threading.Barrier(N_THREADS + 1)

    def body(t: int) -> None:
        start.wait()
        for k in range(PER_THREAD):
            run_one(t, k)

    threads = [threading.Thread(target=body, args=(t,)) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    start.wait()
    began = time.perf_counter()
    for th in threads:
        th.join()
    return N_THREADS * PER_THREAD / (time.perf_counter() - began)


@pytest.fixture(scope="module")
def durable_engine():
    root = tempfile.mkdtemp(prefix="stores-bench-", dir=default_base_dir())
    engine = pyomni.Engine.open(root, NET, fsync="always", clock=lambda: 1_763_000_000.0)
    ids = _loaded(engine)
    yield engine, ids
    engine.close()
    shutil.rmtree(root, ignore_errors=True)


def _rates(benchmark, name: str, run_one: Callable[[int, int], object]) -> float:
    rates = []
    benchmark.pedantic(lambda: rates.append(_threads(run_one)), rounds=3, iterations=1)
    rate = statistics.median(rates)
    _median[name] = rate
    benchmark.extra_info["per_second_median"] = round(rate)
    return rate


@pytest.mark.benchmark(group="stores-durable")
def test_trivial_durable_8_threads(benchmark, durable_engine):
    engine, _ = durable_engine
    locs = NET.ids[:N_THREADS]
    rate = _rates(benchmark, "trivial_durable", lambda t, k: engine.set_daily_capacity(locs[t], 100 + k % 7))
    print(f"\ntrivial command, fsync always, {N_THREADS} threads: {rate:,.0f}/s")


@pytest.mark.benchmark(group="stores-durable")
def test_accept_durable_8_threads(benchmark, durable_engine):
    engine, ids = durable_engine
    rounds = iter(range(3))
    chunk: list[list[str]] = []

    def next_round() -> None:
        r = next(rounds)
        base = 10_000 + r * N_THREADS * PER_THREAD
        chunk[:] = [ids[base + t * PER_THREAD: base + (t + 1) * PER_THREAD] for t in range(N_THREADS)]

    next_round()
    rates = []

    def one_round() -> None:
        rates.append(_threads(lambda t, k: engine.accept_shipment(chunk[t][k])))
        done = [x for c in chunk for x in c]
        assert all(engine.shipment(x).state is ShipmentState.ACCEPTED for x in done)
        if len(rates) < 3:
            next_round()

    benchmark.pedantic(one_round, rounds=3, iterations=1)
    rate = statistics.median(rates)
    benchmark.extra_info["per_second_median"] = round(rate)
    if "trivial_durable" in _median:
        benchmark.extra_info["over_trivial"] = round(rate / _median["trivial_durable"], 2)
    print(f"\naccept, fsync always, {N_THREADS} threads: {rate:,.0f}/s"
          + (f" = {rate / _median['trivial_durable']:.2f}x the trivial command" if "trivial_durable" in _median
             else ""))
    engine.check_invariants()
