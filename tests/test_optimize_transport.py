"""pyomni.optimize on single-unit backlogs: exact pruning, decomposition with a Lagrangian bound, fast encoding."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import pyomni
from pyomni import errors
from pyomni.optimize import SolveStatus, optimize_backlog
from pyomni.optimize.backlog import _candidate_arcs, _per_order_bound, _prepare
from tests.test_optimize import assert_feasible


@pytest.fixture(scope="module")
def crowded():
    """1,500 single-unit orders around the demo's cities: stock and capacity run short, so resources bind."""
    net = pyomni.demo_network(stores=60, warehouses=2, skus=40, seed=3)
    stock = pyomni.demo_stock(net, density=0.3, seed=3)
    snapshot = pa.table({"location": stock.column("location"), "sku": stock.column("sku"),
                         "on_hand": stock.column("qty")})
    rng = np.random.default_rng(3)
    n = 1_500
    home = rng.integers(0, len(net), n)
    orders = pa.table({"order_id": [f"t{i}" for i in range(n)],
                       "sku": [net.skus[int(s)] for s in rng.zipf(1.6, n) % len(net.skus)],
                       "qty": np.ones(n, dtype=np.int64),
                       "lat": np.asarray(net.lat)[home] + rng.normal(0, 0.2, n),
                       "lon": np.asarray(net.lon)[home] + rng.normal(0, 0.2, n)})
    capacity = {loc: 12 for loc in net.ids}
    return net, snapshot, orders, capacity


def test_whole_solve_is_optimal_after_pruning(crowded):
    net, snapshot, orders, capacity = crowded
    result = optimize_backlog(orders, net, snapshot, capacity=capacity, workers=1)
    assert result.status is SolveStatus.OPTIMAL and result.gap == 0.0
    detail = result.stats["piece_stats"][0]
    assert detail["order_arcs"] < detail["order_arcs_before_pruning"]  # some arcs were provably not needed
    assert detail["binding_cells"] > 0 and detail["binding_locations"] > 0  # and the problem is not trivial
    assert_feasible(result, net, snapshot, orders, capacity)


@pytest.mark.parametrize("pieces", [2, 3])
def test_decomposed_plan_is_feasible_and_its_lagrangian_bound_is_valid_and_tight(crowded, pieces):
    net, snapshot, orders, capacity = crowded
    whole = optimize_backlog(orders, net, snapshot, capacity=capacity, workers=1)
    cut = optimize_backlog(orders, net, snapshot, capacity=capacity, workers=1,
                           piece_orders=-(-orders.num_rows // pieces))
    assert cut.stats["pieces"] == pieces
    assert "Lagrangian" in cut.stats["bound_scope"]
    assert_feasible(cut, net, snapshot, orders, capacity)
    # a bound of the whole problem: never above its optimum; the plan never below it
    assert cut.best_bound <= whole.objective + 1e-6 <= cut.objective + 2e-6
    assert cut.stats["bound_search"]["start"] in ("max", "min", "mean")
    # tighter than pricing each order alone, and the status says exactly what is proven
    data = _prepare(orders, net, snapshot, "default", capacity, 50.0)
    arcs, _ = _candidate_arcs(data, net, 8)
    per_order = _per_order_bound(data, arcs, np.ones(data.n_orders, dtype=np.int64)) / 1000
    assert cut.best_bound >= per_order
    assert cut.gap < 0.02
    assert (cut.status is SolveStatus.OPTIMAL) == (cut.objective <= cut.best_bound + 1e-9)


def test_snapshot_chunks_with_repeated_dictionaries_encode_once_and_name_the_bad_row():
    net = pyomni.Network.from_records([{"id": "L0", "lat": 31.0, "lon": 121.0},
                                       {"id": "L1", "lat": 31.5, "lon": 121.5}], skus=["S0", "S1"])
    sku_type = pa.dictionary(pa.int32(), pa.string())
    dictionary = pa.array(["S0", "S1", "S9"])
    chunks = [pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int32()), dictionary),
              pa.DictionaryArray.from_arrays(pa.array([1, 0], pa.int32()), dictionary)]
    stock = pa.table({"location": pa.chunked_array([["L0", "L0"], ["L1", "L1"]]),
                      "sku": pa.chunked_array(chunks, sku_type), "on_hand": pa.chunked_array([[1, 2], [3, 4]])})
    orders = pa.table({"order_id": ["a", "b"], "sku": ["S1", "S1"], "qty": [1, 1], "lat": [31.5, 31.0],
                       "lon": [121.5, 121.0]})
    result = optimize_backlog(orders, net, stock, workers=1)
    assert sorted(result.assignments.column("location").to_pylist()) == ["L0", "L1"]
    bad = pa.chunked_array(chunks[:1] + [pa.DictionaryArray.from_arrays(pa.array([1, 2], pa.int32()), dictionary)],
                           sku_type)
    with pytest.raises(errors.UnknownSku) as info:
        optimize_backlog(orders, net, stock.set_column(1, "sku", bad), workers=1)
    assert info.value.field == "stock[3].sku"


def test_unsorted_snapshot_is_sorted_and_repeats_still_caught():
    net = pyomni.Network.from_records([{"id": "L0", "lat": 31.0, "lon": 121.0},
                                       {"id": "L1", "lat": 35.0, "lon": 121.0}], skus=["S0", "S1"])
    orders = pa.table({"order_id": ["a"], "sku": ["S0"], "qty": [1], "lat": [35.0], "lon": [121.0]})
    stock = pa.table({"location": ["L1", "L0", "L1"], "sku": ["S1", "S0", "S0"], "on_hand": [1, 1, 1]})
    assert optimize_backlog(orders, net, stock, workers=1).assignments.column("location").to_pylist() == ["L1"]
    with pytest.raises(errors.DuplicateId):
        optimize_backlog(orders, net, pa.table({"location": ["L1", "L0", "L1"], "sku": ["S0", "S0", "S0"],
                                                "on_hand": [1, 1, 1]}), workers=1)


def test_widening_finds_stock_beyond_the_first_candidates_and_keeps_the_bound_honest():
    # five orders in one city, K = 1: the nearest store (2 units) is each order's only first-round candidate,
    # so three are left unfilled until a second round looks past it to the next store and the warehouse
    net = pyomni.Network.from_records([
        {"id": "near", "lat": 31.20, "lon": 121.40, "fixed_cost": 5.0},
        {"id": "next", "lat": 31.60, "lon": 121.40, "fixed_cost": 5.0},
        {"id": "far", "lat": 33.00, "lon": 120.00, "fixed_cost": 5.0}], skus=["S0"])
    stock = pa.table({"location": ["near", "next", "far"], "sku": ["S0"] * 3, "on_hand": [2, 1, 5]})
    orders = pa.table({"order_id": [f"o{i}" for i in range(5)], "sku": ["S0"] * 5, "qty": [1] * 5,
                       "lat": [31.2 + 0.01 * i for i in range(5)], "lon": [121.4] * 5})
    narrow = optimize_backlog(orders, net, stock, candidates=1, rounds=0, workers=1)
    assert narrow.status is SolveStatus.OPTIMAL and narrow.unfilled.num_rows == 3  # optimal over its arcs only
    wide = optimize_backlog(orders, net, stock, candidates=1, workers=1)
    assert wide.unfilled.num_rows == 0 and wide.stats["widen"]["orders_filled"] == 3
    assert_feasible(wide, net, stock, orders)
    full = optimize_backlog(orders, net, stock, candidates=8, rounds=0, workers=1)  # every location a candidate
    assert wide.objective == pytest.approx(full.objective, abs=0.01)
    assert wide.best_bound <= full.objective + 1e-6 and wide.objective < narrow.objective
    assert (wide.status is SolveStatus.OPTIMAL) == (wide.objective <= wide.best_bound + 1e-9)
    with pytest.raises(errors.InvalidArgument) as info:
        optimize_backlog(orders, net, stock, rounds=-1)
    assert info.value.field == "rounds"
