"""Stubs for pyomni._core.flash (core/flash.pyx)."""

import numpy as np
import numpy.typing as npt

from .ledger import Ledger

_I32 = npt.NDArray[np.int32]

def claim_batch(ledger: Ledger, apply: bool, earmarked: bool, store_loc: _I32, sku_idx: _I32, store_quota: _I32,
                store_claimed: _I32, pool: _I32, store_xyz: npt.NDArray[np.float64], limit_dot: float, quota: int,
                claimed: int, customer_limit: int, cust: _I32, c_cust: _I32, c_sku: _I32, c_store: _I32,
                c_xyz: npt.NDArray[np.float64], c_qty: _I32, out_status: npt.NDArray[np.uint8],
                out_store: _I32) -> tuple[int, int]: ...
