"""OR-Library generalized assignment benchmarks (DESIGN.md §6, row "proven optimum reached exactly").

Group ``orlib-gap``: every instance of ``../shared/data/orlib`` in each sense listed in
``gap_bounds.csv`` (max for gap1-12 as OR-Library states them, min for gapa/gapb, and the
other sense too), solved by :func:`pyomni.optimize.solve_gap` (CP-SAT, 2 workers) with a
120 s limit. The baseline in the same run is SCIP (OR-Tools ``pywraplp``) on the same
model, time-limited alike: ``extra_info`` holds both times and their ratio.

Asserted: status OPTIMAL and objective == the proven optimum. Timings are recorded only.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest

from pyomni.optimize import SolveStatus, read_orlib_gap, solve_gap

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "orlib"
TIME_LIMIT_S = 120.0


def _cases() -> list[tuple[str, str, int]]:
    if not DATA.is_dir():
        return []
    with open(DATA / "gap_bounds.csv") as f:
        return [(r["instance"], r["sense"], int(r["lower_bound"])) for r in csv.DictReader(f)]


def solve_with_scip(costs: np.ndarray, weights: np.ndarray, capacities: np.ndarray, minimize: bool) -> tuple:
    """The same GAP model in SCIP: (objective, seconds)."""
    from ortools.linear_solver import pywraplp

    solver = pywraplp.Solver.CreateSolver("SCIP")
    m, n = costs.shape
    x = [[solver.BoolVar("") for _ in range(n)] for _ in range(m)]
    for j in range(n):
        solver.Add(sum(x[i][j] for i in range(m)) == 1)
    for i in range(m):
        solver.Add(sum(int(weights[i, j]) * x[i][j] for j in range(n)) <= int(capacities[i]))
    objective = sum(int(costs[i, j]) * x[i][j] for i in range(m) for j in range(n))
    solver.Minimize(objective) if minimize else solver.Maximize(objective)
    solver.SetTimeLimit(int(TIME_LIMIT_S * 1000))
    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(params.RELATIVE_MIP_GAP, 0.0)
    start = time.perf_counter()
    solver.Solve(params)
    return solver.Objective().Value(), time.perf_counter() - start


@pytest.mark.skipif(not DATA.is_dir(), reason=f"OR-Library data not found at {DATA}")
@pytest.mark.benchmark(group="orlib-gap")
@pytest.mark.parametrize(("name", "sense", "optimum"), _cases(), ids=lambda v: str(v))
def test_orlib_gap_reaches_proven_optimum(benchmark, name, sense, optimum):
    inst = read_orlib_gap(DATA / "gap" / name)
    result = benchmark.pedantic(solve_gap, args=(inst.costs, inst.weights, inst.capacities),
                                kwargs={"time_limit_s": TIME_LIMIT_S, "minimize": sense == "min", "workers": 2},
                                rounds=1, iterations=1)
    assert result.status is SolveStatus.OPTIMAL
    assert result.objective == optimum
    scip_value, scip_s = solve_with_scip(inst.costs, inst.weights, inst.capacities, sense == "min")
    benchmark.extra_info.update({
        "instance": name, "sense": sense, "agents": inst.shape[0], "jobs": inst.shape[1], "optimum": optimum,
        "cp_sat_s": round(result.wall_time_s, 3), "scip_s": round(scip_s, 3), "scip_objective": scip_value,
        "scip_over_cp_sat": round(scip_s / max(result.wall_time_s, 1e-9), 2),
    })
