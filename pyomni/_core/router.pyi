"""Stubs for pyomni._core.router (core/router.pyx)."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .geo import LocationIndex
from .ledger import Ledger

REJECT_NAMES: tuple[str, ...]
MAX_LINES_: int
MAX_SHIPMENTS_: int

class NativePolicy:
    def __init__(self, cost_per_km: float, circuity: float, split_penalty: float, low_stock_weight: float,
                 load_weight: float, priority_weight: float, fewest_first: bool = False,
                 exact_plans: bool = True) -> None: ...

# (loc, km, (fixed, distance, low_stock, load, priority), takes, cells or None)
_Shipment = tuple[int, float, tuple[float, float, float, float, float], tuple[int, ...], tuple[int, ...] | None]
# (status, shipments, total, covered, considered, rejected, singles, strategy, split_reason, optimal,
#  next_best or None, lower_bound)
RouteResult = tuple[int, tuple[_Shipment, ...], float, tuple[int, ...], int, tuple[int, ...],
                    tuple[tuple[int, float, float], ...], int, int, bool, float | None, float]

class Router:
    n: int
    tree_bytes: int
    def __init__(self, ledger: Ledger, index: LocationIndex, xyz: npt.NDArray[np.float64],
                 caps: npt.NDArray[np.uint8], is_open: npt.NDArray[np.uint8], capacity: npt.NDArray[np.int32],
                 priority: npt.NDArray[np.int32], fixed_cost: npt.NDArray[np.float64]) -> None: ...
    def set_open(self, loc: int, is_open: bool) -> None: ...
    def set_capacity(self, loc: int, capacity: int) -> None: ...
    def prepare(self) -> int: ...
    def route(self, pol: NativePolicy, lat: float, lon: float, pickup_loc: int, skus: Sequence[int],
              qtys: Sequence[int], need_cap: int, max_km: float, excluded: Sequence[int], max_shipments: int,
              hold: bool) -> RouteResult: ...
    def route_many(self, pol: NativePolicy, lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64],
                   line_off: npt.NDArray[np.int64], sku: npt.NDArray[np.int32], qty: npt.NDArray[np.int32],
                   need_cap: int, max_km: float, max_shipments: int, status: npt.NDArray[np.uint8],
                   split: npt.NDArray[np.uint8], n_ship: npt.NDArray[np.int32], ship_loc: npt.NDArray[np.int32],
                   ship_km: npt.NDArray[np.float64], ship_cost: npt.NDArray[np.float64],
                   take: npt.NDArray[np.int32], covered: npt.NDArray[np.int32],
                   line_avail: npt.NDArray[np.int64]) -> int: ...
    def nearest_filling(self, lat: float, lon: float, skus: Sequence[int], qtys: Sequence[int], k: int,
                        radius_km: float, need_cap: int) -> list[tuple[int, float]]: ...
