"""Generalized assignment: OR-Library's proven optima, small exact cases, bad input."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest

from pyomni import errors
from pyomni.optimize import SolveStatus, read_orlib_gap, solve_gap

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "orlib"


def _optima() -> dict[tuple[str, str], int]:
    with open(DATA / "gap_bounds.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(r["lower_bound"] == r["upper_bound"] for r in rows)
    return {(r["instance"], r["sense"]): int(r["lower_bound"]) for r in rows}


# gap1-gap12 are the c-instances; OR-Library states them as maximisation problems
SMALL = sorted(p.name for p in (DATA / "gap").glob("c*")) if DATA.is_dir() else []


@pytest.mark.skipif(not DATA.is_dir(), reason=f"OR-Library data not found at {DATA}")
@pytest.mark.parametrize("name", SMALL)
def test_orlib_gap1_to_gap12_reach_the_proven_optimum(name):
    inst = read_orlib_gap(DATA / "gap" / name)
    result = solve_gap(inst.costs, inst.weights, inst.capacities, time_limit_s=20, minimize=False)
    assert result.status is SolveStatus.OPTIMAL
    assert result.objective == _optima()[name, "max"]
    assert result.gap == 0.0
    # the plan itself is feasible and worth what it claims
    jobs = np.arange(inst.shape[1])
    assert (result.assignment >= 0).all()
    used = np.bincount(result.assignment, weights=inst.weights[result.assignment, jobs], minlength=inst.shape[0])
    assert (used <= inst.capacities).all()
    assert inst.costs[result.assignment, jobs].sum() == result.objective


def brute_force(c, a, b, minimize):
    best = None
    for choice in itertools.product(range(len(b)), repeat=len(c[0])):
        used = [0] * len(b)
        for j, i in enumerate(choice):
            used[i] += a[i][j]
        if all(u <= cap for u, cap in zip(used, b)):
            value = sum(c[i][j] for j, i in enumerate(choice))
            if best is None or (value < best if minimize else value > best):
                best = value
    return best


@pytest.mark.parametrize("seed", range(8))
def test_small_random_instances_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(2, 4)), int(rng.integers(3, 7))
    c = rng.integers(1, 30, (m, n))
    a = rng.integers(1, 6, (m, n))
    b = rng.integers(3, 12, m)
    for minimize in (True, False):
        expected = brute_force(c.tolist(), a.tolist(), b.tolist(), minimize)
        result = solve_gap(c, a, b, time_limit_s=5, minimize=minimize)
        if expected is None:
            assert result.status is SolveStatus.INFEASIBLE
            assert (result.assignment == -1).all()
        else:
            assert result.status is SolveStatus.OPTIMAL
            assert result.objective == expected


def test_infeasible_is_an_answer():
    result = solve_gap([[1, 1], [1, 1]], [[3, 3], [3, 3]], [2, 2], time_limit_s=2)
    assert result.status is SolveStatus.INFEASIBLE
    assert np.isnan(result.objective)


@pytest.mark.parametrize(("args", "field"), [
    (([[1, 2]], [[1]], [1]), "weights"),
    (([[1.5]], [[1]], [1]), "costs"),
    (([[1]], [[1]], [-1]), "capacities"),
    (([[1]], [[-1]], [1]), "weights"),
    (([[1]], [[1]], [1, 2]), "capacities"),
])
def test_bad_input(args, field):
    with pytest.raises(errors.InvalidArgument) as info:
        solve_gap(*args, time_limit_s=1)
    assert info.value.field == field
    with pytest.raises(errors.InvalidArgument):
        solve_gap([[1]], [[1]], [1], time_limit_s=0)


def test_read_orlib_gap_errors(tmp_path):
    with pytest.raises(errors.NotFound):
        read_orlib_gap(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.write_text("2 2\n1 2 3\n")
    with pytest.raises(errors.InvalidArgument):
        read_orlib_gap(bad)
    bad.write_text("1 1 x 1 1\n")
    with pytest.raises(errors.InvalidArgument):
        read_orlib_gap(bad)
    good = tmp_path / "good"
    good.write_text("2 2\n1 2\n3 4\n5 6 7 8\n9 10\n")
    inst = read_orlib_gap(good)
    assert inst.costs.tolist() == [[1, 2], [3, 4]] and inst.weights.tolist() == [[5, 6], [7, 8]]
    assert inst.capacities.tolist() == [9, 10] and inst.name == "good"
