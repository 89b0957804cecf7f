"""pyomni.optimize.optimize_backlog: exact against brute force, feasible always, typed errors, apply, scale paths."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

import pyomni
from pyomni import errors
from pyomni.optimize import SolveStatus, greedy_backlog, optimize_backlog
from tests.conftest import haversine_km

POLICY = pyomni.DEFAULT_POLICY
KM_COST = POLICY.cost_per_km * POLICY.circuity


# -- helpers ----------------------------------------------------------------------------------------------------------
def small_instance(seed: int, *, single_unit: bool):
    """At most 5 orders x 4 locations, tight stock and capacity."""
    rng = np.random.default_rng(seed)
    n_loc = int(rng.integers(2, 5))
    skus = ["S0", "S1", "S2"]
    records = [{"id": f"L{i}", "lat": 31 + rng.uniform(-1.5, 1.5), "lon": 121 + rng.uniform(-1.5, 1.5),
                "daily_capacity": int(rng.integers(1, 4)), "fixed_cost": float(rng.uniform(4, 10)),
                "priority": int(rng.integers(0, 3)), "province_code": 31 if i % 2 else 32} for i in range(n_loc)]
    net = pyomni.Network.from_records(records, skus=skus)
    stock_rows = [(f"L{i}", s, int(rng.integers(1, 4))) for i in range(n_loc) for s in skus if rng.random() < 0.7]
    stock = pa.table({"location": [r[0] for r in stock_rows], "sku": [r[1] for r in stock_rows],
                      "on_hand": [r[2] for r in stock_rows]})
    rows = []
    for o in range(int(rng.integers(1, 6))):
        lat, lon = 31 + rng.uniform(-2, 2), 121 + rng.uniform(-2, 2)
        n_lines = 1 if single_unit else int(rng.integers(1, 3))
        splits = int(rng.integers(1, 3))
        for s in rng.choice(3, n_lines, replace=False):
            rows.append({"order_id": f"o{o}", "sku": skus[s], "qty": 1 if single_unit else int(rng.integers(1, 3)),
                         "lat": lat, "lon": lon, "max_splits": splits})
    orders = pa.Table.from_pylist(rows)
    return net, stock, orders, float(rng.choice([5.0, 50.0]))


def brute_force(net: pyomni.Network, stock: pa.Table, orders: pa.Table, penalty: float) -> float:
    """Enumerate every plan (each line whole from one location, or the order unfilled); the cheapest cost."""
    avail = {(loc, s): q for loc, s, q in zip(*(stock.column(c).to_pylist() for c in ("location", "sku", "on_hand")),
                                              strict=True)}
    locs = list(net)
    by_order: dict[str, list[dict]] = defaultdict(list)
    for row in orders.to_pylist():
        by_order[row["order_id"]].append(row)
    options = []  # per order: list of (cost, {loc: [(sku, qty)]})
    for lines in by_order.values():
        opts = [(penalty * sum(r["qty"] for r in lines), {})]
        for choice in np.ndindex(*(len(locs),) * len(lines)):
            plan: dict[str, list] = defaultdict(list)
            for r, li in zip(lines, choice, strict=True):
                plan[locs[li].id].append((r["sku"], r["qty"]))
            if len(plan) > lines[0]["max_splits"]:
                continue
            if any(avail.get((loc, s), 0) < q for loc, items in plan.items() for s, q in items):
                continue
            parcels = []
            for loc_id, items in plan.items():
                loc = net.location(loc_id)
                km = haversine_km((loc.lat, loc.lon), (lines[0]["lat"], lines[0]["lon"]))
                low = sum(POLICY.low_stock_weight * q / avail[(loc_id, s)] for s, q in items)
                parcels.append(loc.fixed_cost + POLICY.priority_weight * loc.priority + KM_COST * km + low)
            opts.append((sum(parcels) + POLICY.split_penalty * (len(parcels) - 1), dict(plan)))
        options.append(opts)
    capacity = {loc.id: loc.daily_capacity for loc in locs}
    best = math.inf

    def search(i: int, cost: float, used_stock: dict, used_cap: dict) -> None:
        nonlocal best
        if cost >= best:
            return
        if i == len(options):
            best = cost
            return
        for c, plan in options[i]:
            ok = all(used_cap.get(loc, 0) + 1 <= capacity[loc] for loc in plan) and all(
                used_stock.get((loc, s), 0) + q <= avail[(loc, s)] for loc, items in plan.items() for s, q in items)
            if not ok:
                continue
            stock2 = dict(used_stock)
            cap2 = dict(used_cap)
            for loc, items in plan.items():
                cap2[loc] = cap2.get(loc, 0) + 1
                for s, q in items:
                    stock2[(loc, s)] = stock2.get((loc, s), 0) + q
            search(i + 1, cost + c, stock2, cap2)

    search(0, 0.0, {}, {})
    return best


def assert_feasible(result, net: pyomni.Network, stock, orders: pa.Table, capacity=None, *,
                    whole_lines: bool = True) -> None:
    """No stock or capacity exceeded, units conserved, each order filled once, whole, or listed unfilled.

    The optimiser ships each line from one location (``whole_lines``); the engine's greedy routing may split one.
    """
    if isinstance(stock, pyomni.Engine):
        t = stock.stock_table()
        rows = zip(*(t.column(c).to_pylist() for c in ("location", "sku", "on_hand", "reserved", "safety")),
                   strict=True)
        avail = {(loc, s): max(0, oh - r - sf) for loc, s, oh, r, sf in rows}
    else:
        avail = {(loc, s): q for loc, s, q in zip(*(stock.column(c).to_pylist()
                                                    for c in ("location", "sku", "on_hand")), strict=True)}
    wanted: dict[str, dict[str, int]] = defaultdict(dict)
    splits = {}
    for r in orders.to_pylist():
        wanted[r["order_id"]][r["sku"]] = r["qty"]
        splits[r["order_id"]] = r.get("max_splits", POLICY.max_splits)
    got: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    used: dict[tuple, int] = defaultdict(int)
    parcels: dict[str, set] = defaultdict(set)
    seen_lines = set()
    for r in result.assignments.to_pylist():
        key = (r["order_id"], r["sku"]) if whole_lines else (r["order_id"], r["sku"], r["location"])
        assert key not in seen_lines, "a line shipped twice"
        seen_lines.add(key)
        got[r["order_id"]][r["sku"]] += r["qty"]
        used[(r["location"], r["sku"])] += r["qty"]
        parcels[r["order_id"]].add(r["location"])
    for key, q in used.items():
        assert q <= avail.get(key, 0), f"stock exceeded at {key}"
    cap = {loc.id: loc.daily_capacity for loc in net} if capacity is None else capacity
    load: dict[str, int] = defaultdict(int)
    for oid, locs in parcels.items():
        assert len(locs) <= splits[oid]
        for loc in locs:
            load[loc] += 1
    for loc, n in load.items():
        assert cap[loc] <= 0 or n <= cap[loc], f"capacity exceeded at {loc}"
    unfilled = defaultdict(dict)
    for r in result.unfilled.to_pylist():
        unfilled[r["order_id"]][r["sku"]] = r["qty"]
    for oid, lines in wanted.items():
        assert (oid in got) != (oid in unfilled), f"order {oid} must be filled or unfilled, exactly one"
        assert dict(got.get(oid, unfilled.get(oid))) == lines, f"units of {oid} not conserved"
    total = sum(result.assignments.column("cost").to_pylist())
    assert result.summary()["total_cost"] == pytest.approx(total)


# -- exactness --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("single_unit", [True, False], ids=["min-cost-flow", "mip"])
@pytest.mark.parametrize("seed", range(12))
def test_optimum_matches_brute_force(seed, single_unit):
    net, stock, orders, penalty = small_instance(seed, single_unit=single_unit)
    result = optimize_backlog(orders, net, stock, unfilled_penalty=penalty, time_limit_s=10, workers=1)
    assert result.status is SolveStatus.OPTIMAL
    assert result.stats["model"] == ("min_cost_flow" if single_unit else "mip")
    expected = brute_force(net, stock, orders, penalty)
    # costs are solved in units of 1e-3: each chosen pair/arc rounds by at most 5e-4
    assert result.objective == pytest.approx(expected, abs=0.01)
    assert result.best_bound == pytest.approx(result.objective) and result.gap == 0.0
    assert_feasible(result, net, stock, orders)
    unfilled_units = sum(result.unfilled.column("qty").to_pylist())
    assert result.summary()["total_cost"] + penalty * unfilled_units == pytest.approx(result.objective, abs=0.01)


def test_no_stock_anywhere_is_an_answer_not_an_error():
    net = pyomni.Network.from_records([{"id": "L0", "lat": 31.0, "lon": 121.0}], skus=["S0", "S1"])
    stock = pa.table({"location": ["L0"], "sku": ["S0"], "on_hand": [1]})
    orders = pa.table({"order_id": ["a", "b"], "sku": ["S1", "S0"], "qty": [1, 3], "lat": [31.0, 31.0],
                       "lon": [121.0, 121.0]})
    result = optimize_backlog(orders, net, stock, workers=1)
    assert result.status is SolveStatus.OPTIMAL
    assert result.assignments.num_rows == 0
    assert sorted(result.unfilled.column("order_id").to_pylist()) == ["a", "b"]
    assert result.objective == pytest.approx(4 * 50.0)
    assert result.summary()["fill_rate"] == 0.0


# -- demo-sized backlogs: engine snapshot, decomposition, apply --------------------------------------------------------
@pytest.fixture(scope="module")
def demo():
    net = pyomni.demo_network(stores=120, warehouses=3, skus=300, seed=5)
    eng = pyomni.Engine(net)
    eng.apply_stock_events(pyomni.demo_stock(net, density=0.05, seed=5))
    rows = []
    for o in pyomni.demo_orders(net, 300, seed=5):
        for line in o.lines:
            rows.append({"order_id": o.id, "sku": line.sku, "qty": line.qty, "lat": o.destination[0],
                         "lon": o.destination[1]})
    return net, eng, pa.Table.from_pylist(rows)


def test_engine_snapshot_plan_is_feasible_and_beats_greedy(demo):
    net, eng, orders = demo
    result = optimize_backlog(orders, net, eng, time_limit_s=20, workers=1)
    assert result.status.has_solution
    assert result.best_bound <= result.objective + 1e-6
    assert_feasible(result, net, eng, orders)
    greedy = greedy_backlog(orders, net, eng)
    assert_feasible(greedy, net, eng, orders, whole_lines=False)
    assert greedy.status is SolveStatus.FEASIBLE and math.isnan(greedy.best_bound)
    # greedy's plan is one of the optimiser's (same cost model), up to lines greedy splits across parcels
    assert result.objective <= greedy.objective * 1.001


def test_decomposed_pieces_stay_feasible_and_report_an_honest_bound(demo):
    net, eng, orders = demo
    whole = optimize_backlog(orders, net, eng, time_limit_s=20, workers=1)
    cut = optimize_backlog(orders, net, eng, time_limit_s=10, workers=2, piece_orders=60, progress=True)
    assert cut.stats["pieces"] >= 4
    assert_feasible(cut, net, eng, orders)
    assert "LP relaxation of the whole" in cut.stats["bound_scope"]
    # the LP bound is a bound of the whole problem: below the best plan found either way, and above the weak
    # per-order relaxation it replaced
    assert cut.best_bound >= 0.95 * whole.objective
    assert cut.best_bound <= whole.objective + 1e-6
    assert cut.best_bound <= cut.objective + 1e-6
    if cut.status is SolveStatus.OPTIMAL:
        assert cut.objective == pytest.approx(cut.best_bound)


def test_apply_holds_the_plan_and_rolls_back_on_failure(demo):
    net, eng0, orders = demo
    eng = pyomni.Engine(net)
    eng.apply_stock_events(pyomni.demo_stock(net, density=0.05, seed=5))
    result = optimize_backlog(orders.slice(0, 80), net, eng, time_limit_s=10, workers=1)
    before = eng.stock_table()
    allocations = result.apply(eng, request_id_prefix="batch-1")
    filled = set(result.assignments.column("order_id").to_pylist())
    assert {a.order_id for a in allocations} == filled
    assert all(a.status is pyomni.AllocationStatus.ALLOCATED for a in allocations)
    reserved = sum(eng.stock_table().column("reserved").to_pylist()) - sum(before.column("reserved").to_pylist())
    assert reserved == sum(result.assignments.column("qty").to_pylist())
    eng.check_invariants()
    # idempotent: the same call again changes nothing
    again = result.apply(eng, request_id_prefix="batch-1")
    assert [a.reservation_id for a in again] == [a.reservation_id for a in allocations]
    for a in allocations:
        eng.release(a.reservation_id)
    # stock taken away after planning: the whole apply fails and holds nothing
    row = result.assignments.slice(result.assignments.num_rows - 1, 1).to_pylist()[0]
    level = eng.stock(row["location"], row["sku"])
    eng.set_stock(row["location"], row["sku"], level.reserved + level.safety)
    snapshot = eng.stock_table()
    with pytest.raises(errors.InsufficientStock):
        result.apply(eng, request_id_prefix="batch-2")
    assert eng.stock_table().equals(snapshot)
    eng.check_invariants()


def test_ray_backend_solves_the_same_pieces(demo):
    ray = pytest.importorskip("ray")
    net, eng, orders = demo
    part = orders.slice(0, 200)
    local = optimize_backlog(part, net, eng, time_limit_s=10, workers=2, piece_orders=60)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:     # noqa: BLE001 -- Ray's own plain Exception
        # Ray gives its local node a fixed 30 s to register; on a loaded 2-core machine it once took longer
        # (a CI run): start it once more before judging the backend
        if "timed out during startup" not in str(exc):
            raise
        ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = optimize_backlog(part, net, eng, time_limit_s=10, workers=2, piece_orders=60, backend="ray")
    finally:
        ray.shutdown()
    assert remote.stats["backend"] == "ray" and remote.stats["pieces"] == local.stats["pieces"]
    assert_feasible(remote, net, eng, part)
    assert remote.objective == pytest.approx(local.objective, rel=1e-3)


# -- bad input --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "error", "field"), [
    ({"sku": "NOPE"}, errors.UnknownSku, "orders[1].sku"),
    ({"qty": -1}, errors.InvalidQuantity, "orders[1].qty"),
    ({"qty": 0}, errors.InvalidQuantity, "orders[1].qty"),
    ({"lat": float("nan")}, errors.InvalidCoordinates, "orders[1].lat"),
    ({"lon": 200.0}, errors.InvalidCoordinates, "orders[1].lon"),
    ({"sku": "SKU-000000", "order_id": "a"}, errors.InvalidOrder, "orders[1]"),  # duplicate (order_id, sku)
    ({"order_id": "a", "lat": 40.0}, errors.InvalidOrder, "orders[1].lat"),  # two destinations for one order
    ({"max_splits": 0}, errors.InvalidOrder, "orders[1].max_splits"),
])
def test_bad_backlog_raises_typed_errors_and_changes_nothing(demo, change, error, field):
    net, eng, _ = demo
    rows = [{"order_id": "a", "sku": "SKU-000000", "qty": 1, "lat": 31.0, "lon": 121.0, "max_splits": 2},
            {"order_id": "b", "sku": "SKU-000001", "qty": 1, "lat": 31.0, "lon": 121.0, "max_splits": 2}]
    rows[1].update(change)
    before = eng.stock_table()
    with pytest.raises(error) as info:
        optimize_backlog(pa.Table.from_pylist(rows), net, eng, workers=1)
    assert info.value.field == field
    assert eng.stock_table().equals(before)


def test_bad_parameters_and_stock_tables(demo):
    net, eng, orders = demo
    part = orders.slice(0, 5)
    for kwargs, field in (({"candidates": 0}, "candidates"), ({"time_limit_s": -1}, "time_limit_s"),
                          ({"unfilled_penalty": math.inf}, "unfilled_penalty"), ({"backend": "dask"}, "backend"),
                          ({"workers": 0}, "workers"), ({"capacity": [1, 2]}, "capacity"),
                          ({"capacity": {"NOPE": 1}}, "capacity['NOPE']")):
        with pytest.raises(errors.InvalidArgument if field != "capacity['NOPE']" else errors.UnknownLocation) as info:
            optimize_backlog(part, net, eng, **kwargs)
        assert info.value.field == field
    with pytest.raises(errors.UnknownPolicy):
        optimize_backlog(part, net, eng, policy="nope")
    with pytest.raises(errors.InvalidArgument) as info:
        optimize_backlog(part.drop_columns(["lat"]), net, eng)
    assert info.value.field == "orders.lat"
    with pytest.raises(errors.UnknownLocation):
        optimize_backlog(part, net, pa.table({"location": ["X"], "sku": ["SKU-000000"], "on_hand": [1]}))
    with pytest.raises(errors.DuplicateId):
        optimize_backlog(part, net, pa.table({"location": [net.ids[0]] * 2, "sku": ["SKU-000000"] * 2,
                                              "on_hand": [1, 2]}))
    with pytest.raises(errors.InvalidQuantity):
        optimize_backlog(part, net, pa.table({"location": [net.ids[0]], "sku": ["SKU-000000"], "on_hand": [-1]}))
    with pytest.raises(errors.InvalidArgument):
        optimize_backlog([1, 2], net, eng)


def test_pandas_backlog_and_explicit_capacity(demo):
    net, eng, orders = demo
    part = orders.slice(0, 40)
    cap = {loc: 0 for loc in net.ids}  # nothing may ship: everything unfilled, still an answer
    result = optimize_backlog(part.to_pandas(), net, eng, capacity=cap, workers=1)
    assert result.assignments.num_rows == 0 and result.status is SolveStatus.OPTIMAL
    assert result.unfilled.num_rows == part.num_rows
