"""The Numba kernels of pyomni.kernels against naive pure-Python references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyomni.kernels import build_arcs, build_holder_grid, build_stock_index, find_candidates
from pyomni.kernels.candidates import EARTH_RADIUS_KM, great_circle_km, unit_vectors


def naive_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (lat1, lon1, lat2, lon2))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def random_problem(seed: int, n_loc: int = 60, n_sku: int = 12, n_orders: int = 40, max_lines: int = 3,
                   spread: float = 8.0):
    rng = np.random.default_rng(seed)
    lat = 30 + rng.uniform(-spread, spread, n_loc)
    lon = 115 + rng.uniform(-spread, spread, n_loc)
    eligible = rng.random(n_loc) < 0.9
    base = rng.uniform(5, 12, n_loc)
    # SKU s is held by about 1 / (s + 1) of the locations: a few SKUs become "rare"
    cells = [(loc, s, int(rng.integers(1, 6))) for loc in range(n_loc) for s in range(n_sku)
             if rng.random() < 1.0 / (1 + s)]
    loc_c, sku_c, avail_c = (np.array(x) for x in zip(*cells, strict=True))
    index = build_stock_index(loc_c, sku_c, avail_c, n_loc, n_sku)
    n_lines = rng.integers(1, max_lines + 1, n_orders)
    ptr = np.concatenate([[0], np.cumsum(n_lines)]).astype(np.int64)
    line_sku = np.concatenate([rng.choice(n_sku, k, replace=False) for k in n_lines]).astype(np.int32)
    line_qty = rng.integers(1, 3, ptr[-1]).astype(np.int64)
    o_lat = 30 + rng.uniform(-spread, spread, n_orders)
    o_lon = 115 + rng.uniform(-spread, spread, n_orders)
    max_km = np.where(rng.random(n_orders) < 0.2, 300.0, 1e9)
    splits = rng.integers(1, 4, n_orders).astype(np.int32)
    return dict(lat=lat, lon=lon, eligible=eligible, base=base, index=index, ptr=ptr, line_sku=line_sku,
                line_qty=line_qty, o_lat=o_lat, o_lon=o_lon, max_km=max_km, splits=splits)


def run_kernel(pb, k: int, rare: int, km_cost: float = 0.039, low_w: float = 2.0, split: float = 4.0,
               n_special: int = 3):
    s = pb["index"]
    grid = build_holder_grid(s, pb["lat"], pb["lon"], pb["eligible"], pb["base"], cell_deg=1.0, n_special=n_special)
    cos_max = math.cos(math.radians(max(np.abs(pb["lat"]).max(), np.abs(pb["o_lat"]).max())))
    return find_candidates(pb["ptr"], pb["line_sku"], pb["line_qty"], unit_vectors(pb["o_lat"], pb["o_lon"]),
                           pb["o_lat"], pb["o_lon"], pb["max_km"], pb["splits"], unit_vectors(pb["lat"], pb["lon"]),
                           pb["base"], s.loc_ptr, s.cell_sku, s.cell_avail, grid.hold_ptr, grid.hold_gcell,
                           grid.hold_loc, grid.hold_avail, grid.special, grid.lat0, grid.lon0, grid.dlat, grid.dlon,
                           grid.ni, grid.nj, grid.floor_base, cos_max, km_cost, low_w, split, k, rare)


def naive_candidates(pb, k: int, km_cost: float = 0.039, low_w: float = 2.0, split: float = 4.0):
    """Price every (order, location) pair; sort by (cost, location)."""
    s = pb["index"]
    n_orders = len(pb["ptr"]) - 1
    singles, lines = [], {}
    for o in range(n_orders):
        lo, hi = pb["ptr"][o], pb["ptr"][o + 1]
        whole, per_line = [], {i: [] for i in range(lo, hi)}
        for loc in range(len(pb["lat"])):
            if not pb["eligible"][loc]:
                continue
            km = naive_km(pb["lat"][loc], pb["lon"][loc], pb["o_lat"][o], pb["o_lon"][o])
            if km > pb["max_km"][o]:
                continue
            ship = pb["base"][loc] + km_cost * km
            low, ok = 0.0, True
            for i in range(lo, hi):
                a = s.available(loc, int(pb["line_sku"][i]))
                if a >= pb["line_qty"][i]:
                    low += low_w * pb["line_qty"][i] / a
                    per_line[i].append((ship + low_w * pb["line_qty"][i] / a, loc))
                else:
                    ok = False
            if ok:
                whole.append((ship + low, loc))
        split_ok = hi - lo <= pb["splits"][o] and all(per_line.values())
        stop_at = math.inf
        if split_ok:
            stop_at = sum(min(found)[0] for found in per_line.values()) + split * max(hi - lo - 1, 1)
        singles.append([(loc, cost < stop_at) for cost, loc in sorted(whole)[:k]] if hi - lo > 1 else [])
        for i, found in per_line.items():
            wanted = hi - lo == 1 or pb["splits"][o] > 1
            lines[i] = [loc for _, loc in sorted(found)[:k]] if wanted else []
    return singles, lines


def assert_singles(single_loc, singles):
    """Whole-order candidates cheaper than the order's best split plan must all be there, in order.

    Dearer ones may be cut short: the search stops once nothing farther could beat the split plan.
    """
    for o, expected in enumerate(singles):
        got = [x for x in single_loc[o].tolist() if x >= 0]
        must = [loc for loc, below in expected if below]
        assert got[:len(must)] == must, f"order {o}"
        if len(must) == len(expected):
            continue
        assert len(got) >= len(must)


@pytest.mark.parametrize("rare", [0, 5, 1000], ids=["walk-all", "mixed", "scan-all"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_candidates_match_brute_force(seed, rare):
    pb = random_problem(seed)
    k = 4
    single_loc, line_loc, visited = run_kernel(pb, k, rare)
    singles, lines = naive_candidates(pb, k)
    assert_singles(single_loc, singles)
    for i, expected in lines.items():
        assert [x for x in line_loc[i].tolist() if x >= 0] == expected, f"line {i}"
    assert (visited >= 0).all()
    # without a split plan to compare with (infinite split penalty) the whole-order lists are exact
    single_loc, _, _ = run_kernel(pb, k, rare, split=math.inf)
    singles, _ = naive_candidates(pb, k, split=math.inf)
    for o, expected in enumerate(singles):
        assert [x for x in single_loc[o].tolist() if x >= 0] == [loc for loc, _ in expected], f"order {o}"


def test_prefilter_prices_far_fewer_locations_than_a_scan():
    # a national spread: the walk should stop after the first rings
    pb = random_problem(7, n_loc=2000, n_sku=3, n_orders=300, max_lines=1, spread=15.0)
    pb["max_km"][:] = 1e9
    _, line_loc, visited = run_kernel(pb, 4, rare=0)
    singles, lines = naive_candidates(pb, 4)
    for i, expected in lines.items():
        assert [x for x in line_loc[i].tolist() if x >= 0] == expected
    assert visited.mean() < 0.2 * 2000


def test_arcs_price_every_pair_and_line():
    pb = random_problem(4)
    single_loc, line_loc, _ = run_kernel(pb, 4, rare=5)
    s = pb["index"]
    parts = build_arcs(pb["ptr"], pb["line_sku"], pb["line_qty"], unit_vectors(pb["o_lat"], pb["o_lon"]), single_loc,
                       line_loc, unit_vectors(pb["lat"], pb["lon"]), pb["base"], s.loc_ptr, s.cell_sku,
                       s.cell_avail, 0.039, 2.0)
    pair_order, pair_loc, pair_km, pair_cost, arc_pair, arc_line, arc_cell, arc_low = parts
    for o in range(len(pb["ptr"]) - 1):
        lo, hi = pb["ptr"][o], pb["ptr"][o + 1]
        expected = set(single_loc[o][single_loc[o] >= 0].tolist())
        for i in range(lo, hi):
            expected |= set(line_loc[i][line_loc[i] >= 0].tolist())
        assert sorted(pair_loc[pair_order == o].tolist()) == sorted(expected)
    for p in range(len(pair_order)):
        o, loc = pair_order[p], pair_loc[p]
        km = naive_km(pb["lat"][loc], pb["lon"][loc], pb["o_lat"][o], pb["o_lon"][o])
        assert pair_km[p] == pytest.approx(km, rel=1e-9, abs=1e-6)
        assert pair_cost[p] == pytest.approx(pb["base"][loc] + 0.039 * km, rel=1e-9)
        mine = arc_pair == p
        expected_lines = [i for i in range(pb["ptr"][o], pb["ptr"][o + 1])
                          if s.available(int(loc), int(pb["line_sku"][i])) >= pb["line_qty"][i]]
        assert arc_line[mine].tolist() == expected_lines
        for a in np.flatnonzero(mine):
            assert s.cell_loc[arc_cell[a]] == loc and s.cell_sku[arc_cell[a]] == pb["line_sku"][arc_line[a]]
            assert arc_low[a] == pytest.approx(2.0 * pb["line_qty"][arc_line[a]] / s.cell_avail[arc_cell[a]])


def test_stock_index_and_distance_helpers():
    idx = build_stock_index(np.array([2, 0, 2, 1]), np.array([1, 1, 0, 1]), np.array([3, 0, 4, 9]), 3, 2)
    assert idx.available(2, 1) == 3 and idx.available(2, 0) == 4 and idx.available(0, 1) == 0
    assert idx.sku_ptr.tolist() == [0, 1, 3]
    assert great_circle_km(31.2304, 121.4737, 39.9042, 116.4074) == pytest.approx(
        naive_km(31.2304, 121.4737, 39.9042, 116.4074), rel=1e-12)
