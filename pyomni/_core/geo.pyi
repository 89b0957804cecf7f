"""Stubs for pyomni._core.geo (core/geo.pyx)."""

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_KM: float

def py_unit_vector(lat: float, lon: float) -> tuple[float, float, float]: ...
def py_chord_sq_to_km(c2: float) -> float: ...

class LocationIndex:
    n: int
    n_nodes: int
    def __init__(self, xyz: npt.NDArray[np.float64]) -> None: ...
    def nearest(self, lat: float, lon: float, k: int = 1) -> list[int]: ...
