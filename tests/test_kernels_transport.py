"""The transportation kernels of pyomni.kernels.transport against naive references and OR-Tools."""

from __future__ import annotations

import numpy as np
import pytest
from ortools.graph.python import min_cost_flow

from pyomni.kernels.transport import flow_potentials, greedy_transport, lagrangian_value, prune_dominated_arcs


def random_transport(seed: int, n_orders: int = 40, n_locs: int = 6, cells_per_loc: int = 4, k: int = 4):
    """Orders with up to ``k`` arcs to (cell, location); tight stock and capacity; arcs sorted by cost per order."""
    rng = np.random.default_rng(seed)
    n_cells = n_locs * cells_per_loc
    cell_loc = np.repeat(np.arange(n_locs), cells_per_loc)
    stock = rng.integers(1, 4, n_cells)
    capacity = np.where(rng.random(n_locs) < 0.3, -1, rng.integers(1, 8, n_locs))
    order, cost, cell = [], [], []
    for o in range(n_orders):
        picks = rng.choice(n_cells, size=int(rng.integers(1, k + 1)), replace=False)
        costs = np.sort(rng.integers(10, 100, picks.size))
        order += [o] * picks.size
        cost += costs.tolist()
        cell += picks.tolist()
    order, cost, cell = (np.array(x, dtype=np.int64) for x in (order, cost, cell))
    ptr = np.zeros(n_orders + 1, dtype=np.int64)
    np.cumsum(np.bincount(order, minlength=n_orders), out=ptr[1:])
    penalty = rng.integers(40, 120, n_orders)
    return dict(order=order, cost=cost, cell=cell, loc=cell_loc[cell], ptr=ptr, penalty=penalty, stock=stock,
                capacity=capacity, cell_loc=cell_loc, n_orders=n_orders, n_cells=n_cells, n_locs=n_locs)


def network(tp, arcs: np.ndarray):
    """The full flow network of a transport instance over ``arcs``: order -> cell -> location -> sink."""
    n, nc, nl = tp["n_orders"], tp["n_cells"], tp["n_locs"]
    sink = n + nc + nl
    loc_cap = np.where(tp["capacity"] < 0, n, tp["capacity"])
    tails = np.concatenate([tp["order"][arcs], n + np.arange(nc), n + nc + np.arange(nl), np.arange(n)])
    heads = np.concatenate([n + tp["cell"][arcs], n + nc + tp["cell_loc"], np.full(nl, sink), np.full(n, sink)])
    caps = np.concatenate([np.ones(arcs.size, np.int64), tp["stock"], loc_cap, np.ones(n, np.int64)])
    costs = np.concatenate([tp["cost"][arcs], np.zeros(nc + nl, np.int64), tp["penalty"]])
    return sink + 1, tails, heads, caps, costs


def solve(tp, arcs: np.ndarray):
    n_nodes, tails, heads, caps, costs = network(tp, arcs)
    flow = min_cost_flow.SimpleMinCostFlow()
    flow.add_arcs_with_capacity_and_unit_cost(tails.astype(np.int32), heads.astype(np.int32), caps, costs)
    n = tp["n_orders"]
    flow.set_nodes_supplies(np.append(np.arange(n), n_nodes - 1).astype(np.int32),
                            np.append(np.ones(n, np.int64), -n))
    assert flow.solve() == flow.OPTIMAL
    return flow.optimal_cost(), flow.flows(np.arange(tails.size, dtype=np.int32))


@pytest.mark.parametrize("seed", range(25))
def test_pruned_arcs_keep_the_optimum(seed):
    tp = random_transport(seed)
    keep = prune_dominated_arcs(tp["ptr"], tp["cost"], tp["cell"], tp["loc"], tp["penalty"], tp["stock"],
                                tp["capacity"])
    everything = np.arange(tp["order"].size)
    assert solve(tp, everything[keep])[0] == solve(tp, everything)[0]
    # only dearer arcs are dropped: an order's kept arcs are a prefix of its cheapest ones below its penalty
    for o in range(tp["n_orders"]):
        kept = keep[tp["ptr"][o]:tp["ptr"][o + 1]]
        assert not np.any(kept[1:] & ~kept[:-1])


def test_pruning_drops_arcs_behind_a_free_one():
    # cell 0 has room for every arc, cell 1 one unit for three: order 0 keeps only its free arc; orders 1 and 2
    # compete for cell 1, so order 1 keeps its fallback into cell 0
    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    keep = prune_dominated_arcs(i64(0, 2, 4, 5), i64(5, 6, 5, 9, 4), i64(0, 1, 1, 0, 1), i64(0, 0, 0, 0, 0),
                                i64(50, 50, 50), i64(9, 1), i64(-1))
    assert keep.tolist() == [True, False, True, True, True]
    # an arc dearer than leaving the order unfilled is never needed
    assert prune_dominated_arcs(i64(0, 1), i64(60), i64(0), i64(0), i64(50), i64(1), i64(-1)).tolist() == [False]


@pytest.mark.parametrize("seed", range(25))
def test_potentials_of_an_optimal_flow_leave_no_negative_reduced_cost(seed):
    tp = random_transport(seed)
    arcs = np.arange(tp["order"].size)
    n_nodes, tails, heads, caps, costs = network(tp, arcs)
    optimum, flows = solve(tp, arcs)
    pi, ok = flow_potentials(n_nodes, tails, heads, caps, costs, flows, 64)
    assert ok
    reduced = costs + pi[tails] - pi[heads]
    assert np.all(reduced[flows < caps] >= 0)  # forward residual arcs
    assert np.all(reduced[flows > 0] <= 0)  # backward residual arcs
    # the prices they imply give a Lagrangian bound equal to the optimum (strong duality)
    n, nc = tp["n_orders"], tp["n_cells"]
    cell_price = np.maximum(pi[n + nc + tp["cell_loc"]] - pi[n + np.arange(nc)], 0)
    loc_price = np.where(tp["capacity"] < 0, 0, np.maximum(pi[-1] - pi[n + nc + np.arange(tp["n_locs"])], 0))
    value = lagrangian_value(tp["ptr"], tp["cost"], tp["cell"], tp["loc"], tp["penalty"], cell_price, loc_price,
                             tp["stock"], tp["capacity"])[0]
    assert value == optimum


def test_potentials_report_a_non_optimal_flow():
    # two parallel arcs 0 -> 1, the unit on the dearer one: a negative cycle, never settles
    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    _, ok = flow_potentials(2, i64(0, 0), i64(1, 1), i64(1, 1), i64(5, 9), i64(0, 1), 8)
    assert not ok


def naive_lagrangian(tp, cell_price, loc_price):
    value = 0
    cell_use = np.zeros(tp["n_cells"], dtype=np.int64)
    loc_use = np.zeros(tp["n_locs"], dtype=np.int64)
    for o in range(tp["n_orders"]):
        options = [(int(tp["penalty"][o]), -1)] + [
            (int(tp["cost"][a] + cell_price[tp["cell"][a]] + loc_price[tp["loc"][a]]), a)
            for a in range(tp["ptr"][o], tp["ptr"][o + 1])]
        best = min(c for c, _ in options)
        value += best
        pick = next(a for c, a in options[1:] + options[:1] if c == best)
        if best < tp["penalty"][o]:
            cell_use[tp["cell"][pick]] += 1
            loc_use[tp["loc"][pick]] += 1
    value -= int(cell_price @ tp["stock"]) + int(loc_price @ np.maximum(tp["capacity"], 0))
    return value, cell_use, loc_use


@pytest.mark.parametrize("seed", range(10))
def test_lagrangian_value_matches_a_naive_evaluation_and_bounds_the_optimum(seed):
    tp = random_transport(seed)
    rng = np.random.default_rng(seed + 100)
    cell_price = rng.integers(0, 30, tp["n_cells"])
    loc_price = np.where(tp["capacity"] < 0, 0, rng.integers(0, 30, tp["n_locs"]))
    value, cell_use, loc_use = lagrangian_value(tp["ptr"], tp["cost"], tp["cell"], tp["loc"], tp["penalty"],
                                                cell_price, loc_price, tp["stock"], tp["capacity"])
    expected = naive_lagrangian(tp, cell_price, loc_price)
    assert value == expected[0]
    assert cell_use.sum() == expected[1].sum() and loc_use.sum() == expected[2].sum()
    assert value <= solve(tp, np.arange(tp["order"].size))[0]


def naive_greedy(tp):
    by_cost = sorted(range(tp["order"].size), key=lambda a: (tp["cost"][a], a))
    stock, room = tp["stock"].copy(), tp["capacity"].copy()
    done, taken = set(), []
    for a in by_cost:
        o, c, lo = tp["order"][a], tp["cell"][a], tp["loc"][a]
        if o in done or tp["cost"][a] >= tp["penalty"][o] or stock[c] == 0 or room[lo] == 0:
            continue
        done.add(o)
        taken.append(a)
        stock[c] -= 1
        room[lo] -= room[lo] > 0
    return sorted(taken)


@pytest.mark.parametrize("seed", range(10))
def test_greedy_transport_matches_a_naive_greedy_and_is_feasible(seed):
    tp = random_transport(seed)
    by_cost = np.argsort(tp["cost"], kind="stable")
    taken = greedy_transport(by_cost, tp["order"], tp["cost"], tp["cell"], tp["loc"], tp["penalty"], tp["stock"],
                             tp["capacity"])
    assert np.flatnonzero(taken).tolist() == naive_greedy(tp)
    assert np.all(np.bincount(tp["cell"][taken], minlength=tp["n_cells"]) <= tp["stock"])
    loc_use = np.bincount(tp["loc"][taken], minlength=tp["n_locs"])
    assert np.all((tp["capacity"] < 0) | (loc_use <= tp["capacity"]))
    assert np.bincount(tp["order"][taken], minlength=tp["n_orders"]).max() <= 1
