"""Routing benchmarks: one order at a time, in process (DESIGN.md §6, first and fourth rows).

Groups
------
``route-one-order``
    ``Engine.quote`` of one 1–3-line order on the 5,000-location, 100k-SKU network,
    native core vs the plain-Python reference on the same 100 orders (each call is
    one order; the list is cycled). Target: native p50 ≤ 20 µs and ≥ 100× the reference.
``reserve-cycle``
    ``route_order`` (route + hold) then ``confirm`` or ``release``, each call one
    fresh order (unique ids, built before timing) on its own freshly loaded engine.
``route-ratio``
    One sweep = quoting all 2,000 orders natively, each timed with
    ``perf_counter_ns``; the same 100 orders are then timed on the reference. The
    per-order medians and their ratio go to ``extra_info`` (printed with ``-s``).

Timings are never asserted (the machine is shared and noisy); decisions are.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable

import numpy as np
import pyarrow.compute as pc
import pytest

import pyomni
from pyomni.model import Allocation, AllocationStatus, Order, ReservationState

COST_TOLERANCE = 1e-9
QUOTE_ROUNDS = {"native": 20_000, "reference": 100}  # reference: ≈25 ms an order, so ≈2.5 s in all
QUOTE_WARMUP = {"native": 200, "reference": 0}
CYCLE_SEED = 23
CYCLE_ROUNDS = 5_000  # one fresh order per round (iterations=1: per-call medians, like route-one-order)
CYCLE_SPARE = 100  # pytest-benchmark may call once more (e.g. --benchmark-cprofile): never run dry
RATIO_SWEEPS = 3

# Medians (seconds per call) of the backends measured so far in this run, so the
# baseline's row can carry the ratio (native runs first: parametrisation order).
_quote_median: dict[str, float] = {}


def _median_seconds(benchmark) -> float | None:
    """The median of a finished benchmark, or None when benchmarking is disabled."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else float(stats.stats.median)


def _decision(a: Allocation) -> tuple:
    return tuple((s.location, s.lines) for s in a.shipments)


def assert_same_decision(got: Allocation, expected: Allocation) -> None:
    """Both allocations ok, same shipments (location and lines, in order), total cost within 1e-9.

    The status itself may differ (QUOTED vs ALLOCATED) when a quote is compared with a route.
    """
    assert got.ok, f"{got.order_id}: {got.status.name} {got.short_lines}"
    assert expected.ok, f"{expected.order_id}: {expected.status.name} {expected.short_lines}"
    assert _decision(got) == _decision(expected), (got.order_id, got.shipments, expected.shipments)
    assert abs(got.total_cost - expected.total_cost) <= COST_TOLERANCE, (got.total_cost, expected.total_cost)


@pytest.fixture(scope="module")
def native_quotes(native_engine: pyomni.Engine, reference_orders: list[Order]) -> dict[str, Allocation]:
    return {order.id: native_engine.quote(order) for order in reference_orders}


@pytest.fixture(scope="module")
def reference_quotes(reference_engine: pyomni.Engine, reference_orders: list[Order]) -> dict[str, Allocation]:
    return {order.id: reference_engine.quote(order) for order in reference_orders}


@pytest.mark.benchmark(group="route-one-order")
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_quote_one_order(benchmark, backend: str, native_engine: pyomni.Engine, reference_engine: pyomni.Engine,
                         reference_orders: list[Order], native_quotes: dict[str, Allocation],
                         reference_quotes: dict[str, Allocation]) -> None:
    engine = native_engine if backend == "native" else reference_engine
    other = reference_quotes if backend == "native" else native_quotes  # the other backend's answers
    orders = itertools.cycle(reference_orders)
    answers: dict[str, Allocation] = {}

    def quote_one() -> None:
        order = next(orders)
        answers[order.id] = engine.quote(order)

    benchmark.pedantic(quote_one, rounds=QUOTE_ROUNDS[backend], iterations=1, warmup_rounds=QUOTE_WARMUP[backend])

    assert answers  # every order seen (all 100 when timing; one with --benchmark-disable)
    for order_id, answer in answers.items():
        assert answer.status is AllocationStatus.QUOTED
        assert_same_decision(answer, other[order_id])
    benchmark.extra_info["orders_checked"] = len(answers)
    median = _median_seconds(benchmark)
    if median is not None:
        _quote_median[backend] = median
        benchmark.extra_info["median_us"] = round(median * 1e6, 3)
        if backend == "reference" and "native" in _quote_median:
            benchmark.extra_info["reference_over_native_median"] = round(median / _quote_median["native"], 1)


@pytest.mark.benchmark(group="reserve-cycle")
@pytest.mark.parametrize("finish", ["confirm", "release"])
def test_route_order_then(benchmark, finish: str, network: pyomni.Network, native_engine: pyomni.Engine,
                          make_native_engine: Callable[[], pyomni.Engine]) -> None:
    # Its own engine: confirming takes stock away, which must not leak into other benchmarks.
    engine = make_native_engine()
    before = engine.stock_table()
    # Unique ids, built before timing: each call routes a fresh order.
    order_list = pyomni.demo_orders(network, CYCLE_ROUNDS + CYCLE_SPARE, seed=CYCLE_SEED)
    orders = iter(order_list)
    end_reservation = engine.confirm if finish == "confirm" else engine.release
    allocations: list[Allocation] = []

    def route_and_finish() -> None:
        allocation = engine.route_order(next(orders))
        if allocation.reservation_id is not None:
            end_reservation(allocation.reservation_id)
        allocations.append(allocation)

    benchmark.pedantic(route_and_finish, rounds=CYCLE_ROUNDS, iterations=1, warmup_rounds=0)

    engine.check_invariants()
    after = engine.stock_table()
    allocated = [a for a in allocations if a.status is AllocationStatus.ALLOCATED]
    for a in allocations:
        assert a.status is AllocationStatus.ALLOCATED or (a.status is AllocationStatus.UNFULFILLABLE and a.short_lines)
        assert (a.reservation_id is not None) == (a.status is AllocationStatus.ALLOCATED)
    states = engine.stats()["reservations"]
    assert states[ReservationState.HELD.name] == 0
    assert pc.sum(after.column("reserved")).as_py() == 0
    shipped = sum(line.qty for a in allocated for s in a.shipments for line in s.lines)
    on_hand_before = pc.sum(before.column("on_hand")).as_py()
    on_hand_after = pc.sum(after.column("on_hand")).as_py()
    if finish == "confirm":
        assert states[ReservationState.CONFIRMED.name] == len(allocated)
        assert on_hand_after == on_hand_before - shipped
    else:
        # Every release restores the state exactly, so each order saw the opening stock with no load:
        # it must get the same answer as a quote on the untouched shared engine.
        assert states[ReservationState.RELEASED.name] == len(allocated)
        assert on_hand_after == on_hand_before
        for order, a in zip(order_list, allocations):
            quoted = native_engine.quote(order)
            if quoted.ok:
                assert_same_decision(a, quoted)
            else:
                assert a.status is AllocationStatus.UNFULFILLABLE
    benchmark.extra_info["orders"] = len(allocations)
    benchmark.extra_info["allocated"] = len(allocated)
    benchmark.extra_info["units_shipped" if finish == "confirm" else "units_released"] = shipped


@pytest.mark.benchmark(group="route-ratio")
def test_native_vs_reference_ratio(benchmark, native_engine: pyomni.Engine, reference_engine: pyomni.Engine,
                                   route_orders: list[Order], reference_orders: list[Order]) -> None:
    clock = time.perf_counter_ns
    native_ns: dict[str, list[int]] = {order.id: [] for order in route_orders}
    native_answers: dict[str, Allocation] = {}
    for order in route_orders:  # warm caches and branch predictors once, untimed
        native_engine.quote(order)

    def sweep() -> None:
        for order in route_orders:
            t0 = clock()
            answer = native_engine.quote(order)
            native_ns[order.id].append(clock() - t0)
            native_answers[order.id] = answer

    benchmark.pedantic(sweep, rounds=RATIO_SWEEPS, iterations=1, warmup_rounds=0)

    reference_ns: list[int] = []
    for order in reference_orders:
        t0 = clock()
        answer = reference_engine.quote(order)
        reference_ns.append(clock() - t0)
        assert_same_decision(native_answers[order.id], answer)
    assert all(a.ok for a in native_answers.values())

    all_native = np.concatenate([np.asarray(v) for v in native_ns.values()])
    same_native = np.concatenate([np.asarray(native_ns[o.id]) for o in reference_orders])
    info = {
        "native_orders": len(route_orders),
        "native_p50_us": float(np.median(all_native)) / 1e3,
        "native_p99_us": float(np.percentile(all_native, 99)) / 1e3,
        "native_p50_us_reference_orders": float(np.median(same_native)) / 1e3,
        "reference_orders": len(reference_orders),
        "reference_p50_us": statistics.median(reference_ns) / 1e3,
    }
    info["ratio_p50_same_orders"] = info["reference_p50_us"] / info["native_p50_us_reference_orders"]
    info["ratio_p50_vs_all_native"] = info["reference_p50_us"] / info["native_p50_us"]
    info["target_native_p50_us"] = 20.0
    info["target_ratio"] = 100.0
    benchmark.extra_info.update({k: round(v, 3) if isinstance(v, float) else v for k, v in info.items()})
    print("\nroute-ratio: " + ", ".join(f"{k}={benchmark.extra_info[k]}" for k in info))
