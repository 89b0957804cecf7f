"""The one place Numba flags are set for every ``@njit`` kernel of :mod:`pyomni.kernels`.

``cache=True`` keeps compiled machine code in ``__pycache__`` so a process
pays the compile once per kernel version, not once per run (process-pool
workers start warm); ``nogil=True`` lets worker threads run kernels side by
side; ``error_model="numpy"`` makes division by zero give inf/nan like NumPy
instead of raising, which keeps the hot loops branch-free. ``NJIT_PARALLEL``
adds ``parallel=True`` for kernels whose orders are independent.

Examples
--------
>>> from pyomni.kernels._config import NJIT
>>> NJIT["cache"], NJIT["nogil"]
(True, True)
"""

from __future__ import annotations

from typing import Any

__all__ = ["NJIT", "NJIT_PARALLEL"]

#: Keyword arguments of every ``numba.njit`` in the package.
NJIT: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy"}

#: The same, for kernels whose outer loop is a ``numba.prange`` over independent items (orders):
#: they use every core Numba is allowed (``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``).
NJIT_PARALLEL: dict[str, Any] = {**NJIT, "parallel": True}
