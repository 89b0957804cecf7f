"""China's provinces, its coastline and neighbours, and its main cities, for the simulation's maps (offline).

The outlines are Natural Earth's (public domain), shipped in the package as
``pyomni/data/cn_basemap.json`` (≈200 kB, simplified to about 2 km; how it was
made: ``pyomni/data/make_basemap.py``); the city labels come from the
package's city table (:func:`pyomni.demo.load_cities`, GeoNames). Maps use an
equirectangular projection with the aspect of 35°N, which keeps China's
shape within a few per cent over the frame.

Examples
--------
>>> b = load_basemap()
>>> len(b.provinces), sorted(p.name for p in b.provinces)[:3]
(31, ['Anhui', 'Beijing', 'Chongqing'])
>>> province_of(np.array([31.23, 39.90, 23.13]), np.array([121.47, 116.41, 113.26])).tolist()
[31, 11, 44]
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.path import Path

__all__ = ["Province", "Basemap", "load_basemap", "province_of", "draw_basemap", "MAP_ASPECT"]

#: Data units of latitude per unit of longitude on the maps (equirectangular at 35°N).
MAP_ASPECT = 1.0 / math.cos(math.radians(35.0))
_LABEL_GAP = 1.3
_SEA, _LAND, _NEIGHBOUR, _BORDER = "#dde9f2", "#fbf9f4", "#ecebe8", "#a3a3a3"


@dataclass(frozen=True, eq=False)
class Province:
    """One province-level division: its GB/T 2260 code (the first two digits of a city's code), English name,
    outline rings (lon, lat) and the point its label goes to."""

    code: int
    name: str
    rings: tuple[np.ndarray, ...]
    label_at: tuple[float, float]

    @functools.cached_property
    def paths(self) -> tuple[Path, ...]:
        return tuple(Path(r) for r in self.rings)


@dataclass(frozen=True, eq=False)
class Basemap:
    """The map's frame (lon min, lon max, lat min, lat max), China's provinces and the neighbouring land."""

    frame: tuple[float, float, float, float]
    provinces: tuple[Province, ...]
    land: tuple[np.ndarray, ...]
    source: str


@functools.cache
def load_basemap() -> Basemap:
    """The packaged basemap (read once per process)."""
    doc = json.loads(importlib.resources.files("pyomni.data").joinpath("cn_basemap.json").read_bytes())
    provinces = []
    for p in doc["provinces"]:
        rings = tuple(np.asarray(ring, dtype=np.float64) for poly in p["polygons"] for ring in poly)
        outer = max((np.asarray(poly[0], dtype=np.float64) for poly in p["polygons"]), key=_area)
        provinces.append(Province(int(p["code"]), p["name"], rings, _label_point(outer)))
    land = tuple(np.asarray(ring, dtype=np.float64) for c in doc["land"] for poly in c["polygons"] for ring in poly)
    return Basemap(tuple(doc["frame"]), tuple(provinces), land, doc["source"])


def province_of(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """The province code of each point (0 outside every province, e.g. at sea or abroad).

    A point inside a province's outer ring and inside one of its holes is
    rare at this scale; the first province whose ring holds it wins.
    """
    points = np.column_stack([np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)])
    out = np.zeros(len(points), dtype=np.int64)
    if not len(points):
        return out
    for p in load_basemap().provinces:
        todo = out == 0
        if not todo.any():
            break
        inside = np.zeros(len(points), dtype=bool)
        for path in p.paths:
            inside[todo] |= path.contains_points(points[todo])
        out[todo & inside] = p.code
    return out


def nearest_province(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Like :func:`province_of`, but a point outside every province (a coastal address drawn at sea) gets
    the province of the nearest city of the package's city table."""
    from ..demo import load_cities

    codes = province_of(lat, lon)
    missing = np.flatnonzero(codes == 0)
    if len(missing):
        cities = load_cities()
        clat = cities.column("latitude").to_numpy()
        clon = cities.column("longitude").to_numpy()
        cprov = cities.column("province_code").to_numpy()
        for i in missing.tolist():
            d = (clat - lat[i]) ** 2 + ((clon - lon[i]) * math.cos(math.radians(float(lat[i])))) ** 2
            codes[i] = int(cprov[int(np.argmin(d))])
    return codes


def draw_basemap(ax: Axes, *, cities: int = 40, province_fill: dict[int, Any] | None = None) -> None:
    """Draw the sea, the neighbouring land, China's provinces (filled with ``province_fill[code]`` where given)
    and the largest of the ``cities`` largest cities, labelled (none closer than 1.3 degrees to a larger one),
    on ``ax``; set its frame and aspect."""
    from ..demo import load_cities

    b = load_basemap()
    ax.set_facecolor(_SEA)
    ax.add_collection(PolyCollection(list(b.land), facecolors=_NEIGHBOUR, edgecolors="#c8c8c8", linewidths=0.4,
                                     zorder=0))
    fill = province_fill or {}
    rings = [r for p in b.provinces for r in p.rings]
    colours = [fill.get(p.code, _LAND) for p in b.provinces for _ in p.rings]
    ax.add_collection(PolyCollection(rings, facecolors=colours, edgecolors=_BORDER, linewidths=0.5, zorder=0.5))
    if cities:
        table = load_cities().slice(0, cities)
        lat = table.column("latitude").to_numpy()
        lon = table.column("longitude").to_numpy()
        # largest first; a city closer than ``_LABEL_GAP`` degrees to one already labelled is left out
        kept: list[tuple[float, float]] = []
        for name, x, y in zip(table.column("name").to_pylist(), lon.tolist(), lat.tolist(), strict=True):
            if any(((x - kx) * 0.8) ** 2 + (y - ky) ** 2 < _LABEL_GAP ** 2 for kx, ky in kept):
                continue
            kept.append((x, y))
            ax.scatter([x], [y], s=7, c="#333333", marker="s", zorder=3, linewidths=0)
            ax.annotate(name, (x, y), xytext=(3, 2), textcoords="offset points", fontsize=6.5, color="#222222",
                        zorder=4)
    x0, x1, y0, y1 = b.frame
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0 + 3.0, y1 - 2.0)
    ax.set_aspect(MAP_ASPECT)
    ax.set_xticks([])
    ax.set_yticks([])


def _area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))) / 2


def _label_point(ring: np.ndarray) -> tuple[float, float]:
    # the centroid of the outer ring (the mean of its vertices for a degenerate one)
    x, y = ring[:, 0], ring[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    a = cross.sum() / 2
    if abs(a) < 1e-9:
        return float(x.mean()), float(y.mean())
    return (float(((x + np.roll(x, -1)) * cross).sum() / (6 * a)),
            float(((y + np.roll(y, -1)) * cross).sum() / (6 * a)))
