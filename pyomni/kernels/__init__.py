"""Numba bulk kernels: the array-at-a-time half of the batch tools.

Architecture: the real-time engine decides one order at a time in the Cython
core (``core/``); batch work -- an optimiser building millions of candidate
arcs, a simulation replaying a day -- needs whole-array passes instead. Those
passes live here, and only here, as ``@njit`` functions taking and returning
plain NumPy arrays (no Python objects), so they can run in worker processes
and release the GIL. Every kernel uses the flags of :mod:`pyomni.kernels._config`
and has a naive pure-Python reference in the tests it is checked against.

* :mod:`pyomni.kernels.candidates` -- for each order of a backlog, the K
  cheapest locations that can fill it whole, and per line the K cheapest that
  can fill that line (split candidates), under the routing cost model of
  :mod:`pyomni.policy`, found by a nearest-first walk over each SKU's holders
  in a latitude/longitude grid that stops as soon as nothing farther can be cheaper.
* :mod:`pyomni.kernels.transport` -- for single-unit backlogs (transportation
  problems): drop arcs no optimal plan needs, a whole-backlog greedy plan,
  the dual prices (node potentials) of a min-cost flow, and the Lagrangian
  bound those prices give.

Examples
--------
>>> from pyomni.kernels import StockIndex
>>> StockIndex.__name__
'StockIndex'
"""

from .candidates import (
    CandidateArcs,
    HolderGrid,
    StockIndex,
    build_arcs,
    build_holder_grid,
    build_stock_index,
    find_candidates,
    great_circle_km,
)

__all__ = [
    "CandidateArcs",
    "HolderGrid",
    "StockIndex",
    "build_arcs",
    "build_holder_grid",
    "build_stock_index",
    "find_candidates",
    "great_circle_km",
]
