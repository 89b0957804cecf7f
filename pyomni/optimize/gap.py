"""Generalized assignment (GAP) with CP-SAT, and OR-Library's instance format.

The GAP is the core of batch fulfilment with capacities: agents (stores)
with capacities ``b_i``, jobs (orders) that must each go to exactly one agent,
using ``a_ij`` of its capacity at cost ``c_ij``. OR-Library's instances come
with proven optima, so they test that a solver claiming optimality reaches it.

Model (OR-Tools samples' shape: data -> variables -> constraints -> objective
-> solve -> status)::

    x_ij in {0, 1};  sum_i x_ij = 1 for each job j;  sum_j a_ij x_ij <= b_i for each agent i
    minimise (or maximise) sum c_ij x_ij

Examples
--------
>>> r = solve_gap([[4, 1], [2, 3]], [[1, 1], [1, 1]], [1, 1], time_limit_s=5)
>>> r.status.name, r.objective, r.assignment.tolist()
('OPTIMAL', 3.0, [1, 0])
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import errors
from .result import SolveStatus, relative_gap

__all__ = ["GapInstance", "GapResult", "solve_gap", "read_orlib_gap"]


@dataclass(frozen=True)
class GapInstance:
    """One GAP instance: ``costs`` and ``weights`` are (agents x jobs), ``capacities`` per agent.

    Examples
    --------
    >>> import numpy as np
    >>> GapInstance("t", np.ones((2, 3)), np.ones((2, 3)), np.array([2, 2])).shape
    (2, 3)
    """

    name: str
    costs: np.ndarray
    weights: np.ndarray
    capacities: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(agents, jobs)."""
        return (int(self.costs.shape[0]), int(self.costs.shape[1]))


@dataclass(frozen=True)
class GapResult:
    """A solved GAP: the agent of every job and what the solver proved.

    Attributes
    ----------
    assignment : numpy.ndarray
        Agent index per job (-1 for every job when there is no solution).
    status : SolveStatus
    objective, best_bound, gap : float
        The plan's total cost (or profit, when maximising), the solver's
        proven bound on the optimum and their relative gap (nan without a plan).
    wall_time_s : float
    stats : dict

    Examples
    --------
    >>> solve_gap([[1]], [[2]], [1], time_limit_s=1).status.name
    'INFEASIBLE'
    """

    assignment: np.ndarray
    status: SolveStatus
    objective: float
    best_bound: float
    gap: float
    wall_time_s: float
    stats: dict[str, Any] = field(default_factory=dict)


def _matrix(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise errors.InvalidArgument(f"{name} must be a numeric matrix", field=name) from None
    if arr.ndim != 2 or arr.size == 0:
        raise errors.InvalidArgument(f"{name} must be a non-empty 2-D matrix (agents x jobs)", field=name)
    if not np.isfinite(arr).all() or (arr != np.trunc(arr)).any():
        raise errors.InvalidArgument(f"{name} must hold finite integers (scale costs first)", field=name)
    return arr.astype(np.int64)


def solve_gap(costs: Any, weights: Any, capacities: Any, *, time_limit_s: float = 30.0, minimize: bool = True,
              workers: int | None = None) -> GapResult:
    """Solve a generalized assignment problem exactly with CP-SAT (within the time limit).

    Parameters
    ----------
    costs, weights : array-like (agents x jobs) of int
        ``c_ij`` and ``a_ij`` (``a_ij >= 0``).
    capacities : array-like (agents,) of int >= 0
    time_limit_s : float
        Wall-clock limit of the search.
    minimize : bool
        Minimise total cost (default) or maximise it (OR-Library's gap1-12 convention).
    workers : int, optional
        CP-SAT search workers (default: the CPU count).

    Returns
    -------
    GapResult
        OPTIMAL with gap 0 when proven; FEASIBLE with the gap to the bound when
        the time ran out; INFEASIBLE when no assignment fits the capacities.

    Raises
    ------
    pyomni.errors.InvalidArgument
        Shapes disagree, non-integer or negative weights/capacities.

    Examples
    --------
    >>> solve_gap([[1, 5], [4, 2]], [[1, 1], [1, 1]], [1, 1], time_limit_s=5, minimize=False).objective
    9.0
    """
    from ortools.sat.python import cp_model

    start = time.perf_counter()
    c = _matrix(costs, "costs")
    a = _matrix(weights, "weights")
    b = np.asarray(capacities)
    if a.shape != c.shape:
        raise errors.InvalidArgument(f"weights shape {a.shape} differs from costs {c.shape}", field="weights")
    if b.shape != (c.shape[0],) or b.dtype.kind not in "iuf" or not np.isfinite(b).all() or (b < 0).any() or (
            b != np.trunc(b)).any():
        raise errors.InvalidArgument(f"capacities must be {c.shape[0]} integers >= 0", field="capacities")
    if (a < 0).any():
        raise errors.InvalidArgument("weights must be >= 0", field="weights")
    if isinstance(time_limit_s, bool) or not isinstance(time_limit_s, (int, float)) or not (
            math.isfinite(time_limit_s) and time_limit_s > 0):
        raise errors.InvalidArgument("time_limit_s must be a positive finite number", field="time_limit_s")
    b = b.astype(np.int64)
    m, n = c.shape
    model = cp_model.CpModel()
    # an agent that could never take a job (weight above its capacity) gets no variable for it
    fits = a <= b[:, None]
    x = {(i, j): model.new_bool_var(f"x{i}_{j}") for i in range(m) for j in range(n) if fits[i, j]}
    for j in range(n):
        model.add_exactly_one([x[i, j] for i in range(m) if fits[i, j]])
    for i in range(m):
        jobs = [j for j in range(n) if fits[i, j]]
        if a[i, jobs].sum() > b[i]:
            model.add(cp_model.LinearExpr.weighted_sum([x[i, j] for j in jobs], a[i, jobs].tolist()) <= int(b[i]))
    keys = list(x)
    objective = cp_model.LinearExpr.weighted_sum([x[k] for k in keys], [int(c[k]) for k in keys])
    if minimize:
        model.minimize(objective)
    else:
        model.maximize(objective)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit_s)
    solver.parameters.num_workers = int(workers) if workers else max(1, os.cpu_count() or 1)
    code = solver.solve(model)
    status = {cp_model.OPTIMAL: SolveStatus.OPTIMAL, cp_model.FEASIBLE: SolveStatus.FEASIBLE,
              cp_model.INFEASIBLE: SolveStatus.INFEASIBLE}.get(code, SolveStatus.UNKNOWN)
    assignment = np.full(n, -1, dtype=np.int64)
    value = bound = math.nan
    if status.has_solution:
        for (i, j), var in x.items():
            if solver.boolean_value(var):
                assignment[j] = i
        value = float(solver.objective_value)
    if status is not SolveStatus.INFEASIBLE:
        bound = float(solver.best_objective_bound)
    gap = relative_gap(value, bound) if minimize else relative_gap(-value, -bound)
    return GapResult(assignment, status, value, bound, gap, time.perf_counter() - start,
                     {"agents": m, "jobs": n, "variables": len(x), "branches": int(solver.num_branches),
                      "cp_sat_status": solver.status_name(code)})


def read_orlib_gap(path: str | os.PathLike[str]) -> GapInstance:
    """Read one OR-Library GAP instance.

    Format: whitespace-separated integers, line breaks insignificant: ``m n``,
    the m x n cost matrix, the m x n resource matrix, the m capacities.

    Parameters
    ----------
    path : path-like
        The instance file; its name (``c0515_1``) becomes the instance name.

    Returns
    -------
    GapInstance

    Raises
    ------
    pyomni.errors.NotFound
        No such file.
    pyomni.errors.InvalidArgument
        The file is not a GAP instance (wrong token count, non-integers).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "tiny"
    >>> _ = p.write_text("2 1\\n 3\\n 4\\n 1\\n 1\\n 5 5\\n")
    >>> read_orlib_gap(p).costs.tolist()
    [[3], [4]]
    """
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise errors.NotFound(f"no GAP instance at {str(p)!r}", field="path") from None
    try:
        tokens = np.array(text.split(), dtype=np.int64)
    except ValueError:
        raise errors.InvalidArgument(f"{p.name}: every token must be an integer", field="path") from None
    if tokens.size < 2:
        raise errors.InvalidArgument(f"{p.name}: missing the 'm n' header", field="path")
    m, n = int(tokens[0]), int(tokens[1])
    if m < 1 or n < 1 or tokens.size != 2 + 2 * m * n + m:
        raise errors.InvalidArgument(f"{p.name}: expected {2 + 2 * max(m, 0) * max(n, 0) + max(m, 0)} integers "
                                     f"for m={m}, n={n}, found {tokens.size}", field="path")
    body = tokens[2:]
    costs = body[:m * n].reshape(m, n)
    weights = body[m * n:2 * m * n].reshape(m, n)
    capacities = body[2 * m * n:]
    return GapInstance(p.name, costs, weights, capacities)
