"""Batch optimisation: backlogs of orders and generalized assignment, solved with OR-Tools.

Architecture: the real-time engine (:class:`pyomni.Engine`) routes one order
at a time, greedily, in microseconds. When a backlog builds up (a flash sale,
a night's orders, a what-if), deciding all of it at once does better: this
package takes the backlog, the network and a stock snapshot, finds each
order's cheapest candidate locations with the Numba kernels of
:mod:`pyomni.kernels`, and solves the assignment exactly -- min-cost flow
(``SimpleMinCostFlow``, bulk NumPy API) when it is a transportation problem,
CP-SAT when orders have several lines and parcels cost. Large backlogs are
cut into regional pieces solved in parallel (processes, or Ray) and
reconciled. Every solve has a time limit and reports status, objective, best
bound and gap -- never FEASIBLE as OPTIMAL; infeasible is an answer. The plan
goes back to the engine as reservations (:meth:`OptimizeResult.apply`, via
:meth:`pyomni.Engine.reserve_plan`).

* :func:`optimize_backlog` / :func:`greedy_backlog` -- the optimiser and the
  baseline it is measured against (the engine's own order-by-order routing);
* :func:`solve_gap` / :func:`read_orlib_gap` -- generalized assignment, the
  textbook core of the problem, checked against OR-Library's proven optima.

Examples
--------
>>> from pyomni.optimize import solve_gap
>>> solve_gap([[1, 5], [4, 2]], [[1, 1], [1, 1]], [1, 1], time_limit_s=5).objective
3.0
"""

from .backlog import backlog_table, greedy_backlog, optimize_backlog
from .gap import GapInstance, GapResult, read_orlib_gap, solve_gap
from .result import OptimizeResult, SolveStatus

__all__ = [
    "optimize_backlog",
    "greedy_backlog",
    "backlog_table",
    "OptimizeResult",
    "SolveStatus",
    "solve_gap",
    "read_orlib_gap",
    "GapInstance",
    "GapResult",
]
