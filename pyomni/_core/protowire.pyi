"""Stubs for pyomni._core.protowire (core/protowire.pyx)."""

import numpy as np
import numpy.typing as npt

def read_route_orders(data: bytes) -> tuple[list[str], list[str | None], npt.NDArray[np.int64], list[str],
                                            npt.NDArray[np.int64], npt.NDArray[np.float64],
                                            npt.NDArray[np.float64], list[str], str, float] | None: ...
def write_route_orders(order_ids: list[str], status: npt.NDArray[np.uint8], reservation: npt.NDArray[np.int64],
                       total: npt.NDArray[np.float64], expires: npt.NDArray[np.float64],
                       n_ship: npt.NDArray[np.int32], ship_locations: list[str], ship_km: npt.NDArray[np.float64],
                       ship_cost: npt.NDArray[np.float64], take: npt.NDArray[np.int64],
                       line_counts: npt.NDArray[np.int64], skus: list[str], split: npt.NDArray[np.uint8],
                       split_reasons: list[str], policy_key: str, written: dict[int, bytes]) -> bytes: ...
