"""Optimiser bounds are valid: never above a brute-forced optimum, never above the objective, and from a relaxation
of the whole problem a decomposition solved (not of its pieces)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyomni
from pyomni.optimize import backlog_table, optimize_backlog
from pyomni.optimize.bounds import lp_bound
from pyomni.optimize.solvers import Piece, solve_piece


def random_piece(seed: int) -> Piece:
    """A tiny piece: 2-3 orders of 1-2 lines (1-2 units), 2-3 locations, scarce stock, tight capacity."""
    rng = np.random.default_rng(seed)
    n_orders, n_locs, n_skus = int(rng.integers(2, 4)), int(rng.integers(2, 4)), 2
    line_order, line_sku, line_qty = [], [], []
    for o in range(n_orders):
        for s in rng.choice(n_skus, size=int(rng.integers(1, 3)), replace=False).tolist():
            line_order.append(o)
            line_sku.append(s)
            line_qty.append(int(rng.integers(1, 3)))
    cell_stock = {(loc, s): int(rng.integers(0, 4)) for loc in range(n_locs) for s in range(n_skus)}
    pair_order, pair_loc, pair_cost, arc_pair, arc_line, arc_cell, arc_qty, arc_low = ([] for _ in range(8))
    cells = sorted(cell_stock)
    for o in range(n_orders):
        for loc in range(n_locs):
            lines = [i for i, oo in enumerate(line_order) if oo == o and cell_stock[(loc, line_sku[i])] > 0]
            if not lines:
                continue
            pair_order.append(o)
            pair_loc.append(loc)
            pair_cost.append(int(rng.integers(1_000, 9_000)))
            for i in lines:
                arc_pair.append(len(pair_order) - 1)
                arc_line.append(i)
                arc_cell.append(cells.index((loc, line_sku[i])))
                arc_qty.append(line_qty[i])
                arc_low.append(int(rng.integers(0, 800)))
    units = np.bincount(line_order, weights=line_qty, minlength=n_orders).astype(np.int64)
    i64 = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return Piece(order_units=units, order_splits=i64(rng.integers(1, 3, n_orders)), order_penalty=units * 6_000,
                 line_order=i64(line_order), pair_order=i64(pair_order), pair_loc=i64(pair_loc),
                 pair_cost=i64(pair_cost), arc_pair=i64(arc_pair), arc_line=i64(arc_line), arc_cell=i64(arc_cell),
                 arc_qty=i64(arc_qty), arc_low=i64(arc_low), cell_id=i64(range(len(cells))),
                 cell_stock=i64([cell_stock[c] for c in cells]), loc_id=i64(range(n_locs)),
                 loc_capacity=i64(rng.integers(1, 3, n_locs)), split_cost=int(rng.integers(0, 3_000)))


def brute_force(p: Piece) -> int:
    """The optimum of the piece's model by enumerating every order's options (unfilled, or each line on an arc)."""
    n_lines = p.line_order.shape[0]
    arcs_of_line = [np.flatnonzero(p.arc_line == i).tolist() for i in range(n_lines)]
    options = []
    for o in range(p.n_orders):
        lines = np.flatnonzero(p.line_order == o).tolist()
        opts: list[tuple[int, ...] | None] = [None]
        opts += [combo for combo in itertools.product(*(arcs_of_line[i] for i in lines))
                 if len({int(p.arc_pair[a]) for a in combo}) <= p.order_splits[o]]
        options.append(opts)
    best = None
    for plan in itertools.product(*options):
        stock = dict(zip(p.cell_id.tolist(), p.cell_stock.tolist(), strict=True))
        cap = dict(zip(p.loc_id.tolist(), p.loc_capacity.tolist(), strict=True))
        cost, ok = 0, True
        for o, choice in enumerate(plan):
            if choice is None:
                cost += int(p.order_penalty[o])
                continue
            pairs = {int(p.arc_pair[a]) for a in choice}
            cost += sum(int(p.pair_cost[q]) for q in pairs) + p.split_cost * (len(pairs) - 1)
            cost += sum(int(p.arc_low[a]) for a in choice)
            for a in choice:
                stock[int(p.arc_cell[a])] -= int(p.arc_qty[a])
            for q in pairs:
                cap[int(p.pair_loc[q])] -= 1
        if any(v < 0 for v in stock.values()) or any(v < 0 for v in cap.values()):
            ok = False
        if ok and (best is None or cost < best):
            best = cost
    assert best is not None                    # everything unfilled is always a plan
    return best


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000))
def test_the_lp_bound_never_exceeds_the_brute_forced_optimum(seed):
    p = random_piece(seed)
    optimum = brute_force(p)
    b = lp_bound(p, time_limit_s=5)
    assert b.bound <= optimum
    assert b.lp_status == "OPTIMAL" and b.bound >= int(np.floor(b.lp_value)) - 1   # certified = the LP's value
    exact = solve_piece(p, time_limit_s=10)
    assert exact.status.name == "OPTIMAL" and exact.objective == optimum          # SCIP agrees with brute force
    assert b.bound <= exact.objective


def test_a_bound_from_any_prices_is_still_a_bound(monkeypatch):
    # the certificate does not trust the solver: with its duals scrambled (or a time limit cutting it short) the
    # bound gets weaker, never invalid
    from pyomni.optimize import bounds
    rng = np.random.default_rng(3)
    real = bounds._solve_lp

    def scrambled(*args, **kwargs):
        y, value, status = real(*args, **kwargs)
        return y + rng.normal(0.0, 2_000.0, y.shape), value, status

    monkeypatch.setattr(bounds, "_solve_lp", scrambled)
    for seed in range(30):
        p = random_piece(seed)
        assert lp_bound(p, time_limit_s=5).bound <= brute_force(p)


@pytest.fixture(scope="module")
def multiline():
    net = pyomni.demo_network(stores=60, warehouses=2, skus=60, seed=4)
    eng = pyomni.Engine(net)
    eng.apply_stock_events(pyomni.demo_stock(net, seed=4))
    return net, eng, backlog_table(pyomni.demo_orders(net, 600, seed=5, max_lines=3))


def test_a_decomposed_solve_is_bounded_by_the_lp_of_the_whole(multiline):
    net, eng, orders = multiline
    whole = optimize_backlog(orders, net, eng, time_limit_s=30, workers=1)            # one piece, SCIP
    cut = optimize_backlog(orders, net, eng, time_limit_s=30, workers=1, piece_orders=150)
    assert whole.status.name == "OPTIMAL" and cut.stats["pieces"] >= 3
    assert cut.stats["bound_scope"].startswith("candidate problem (LP relaxation of the whole")
    assert cut.best_bound <= whole.objective + 1e-9 <= cut.objective + 1e-9   # valid for the whole problem
    assert cut.stats["bound_search"]["lp_status"] == "OPTIMAL"
    # and it means something: within a few per cent of the optimum (the per-order relaxation was far off)
    assert (whole.objective - cut.best_bound) / whole.objective < 0.03
