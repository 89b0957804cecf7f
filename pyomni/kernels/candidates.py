"""Candidate arcs of a backlog: each order's K cheapest locations, found nearest first.

The batch optimiser cannot price every (order, location) pair of a national
backlog -- 1M orders x 5,000 locations is 5e9 distance evaluations -- so it
prices a few candidates per order and solves over those. The cost is the
engine's (:mod:`pyomni.policy`), split into the part paid per shipment and the
part paid per line::

    shipment(l, o) = base[l] + km_cost * great_circle_km(l, o)
    base[l]        = fixed_cost[l] + load_weight * load[l] / capacity[l] + priority_weight * priority[l]
    line(l, i)     = low_stock_weight * qty_i / available(l, sku_i)

(``km_cost = cost_per_km * circuity``; the split penalty is the optimiser's to
add). Distances use 3-D unit vectors, as the engine does.

The search: each SKU's holders sit in a latitude/longitude grid (sorted by
cell, so a row of cells is one binary search); an order visits grid rings
around its destination, nearest ring first, seeing only locations that hold
the SKU. Everything beyond ring ``r`` is at least ``LB(r)`` km away (a bound
from the ring's latitude and longitude offsets, valid on the sphere), so once
the K-th best candidate costs no more than ``floor_base + km_cost * LB(r)``,
nothing farther can displace it and the walk stops. The few locations with
the cheapest base (warehouses) are priced for every order rather than kept in
the grid, so they do not hold the floor down. SKUs with few holders
(``rare_threshold``) are scanned directly, which is cheaper than walking half
the country to find them. Whole-order candidates of a multi-line order walk
the holders of its rarest SKU and check the other lines at each.

Measured (1M single-line orders, 5,000 locations, 10.4M stock cells, one core):
see ``benchmarks/test_bench_optimize.py``.

Examples
--------
>>> import numpy as np
>>> from pyomni.kernels.candidates import build_stock_index
>>> index = build_stock_index(np.array([0, 1, 1]), np.array([0, 0, 1]), np.array([5, 0, 2]), 2, 2)
>>> index.available(1, 1), index.available(1, 0)
(2, 0)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from ._config import NJIT, NJIT_PARALLEL

__all__ = [
    "EARTH_RADIUS_KM",
    "StockIndex",
    "HolderGrid",
    "CandidateArcs",
    "unit_vectors",
    "great_circle_km",
    "build_stock_index",
    "build_holder_grid",
    "find_candidates",
    "build_arcs",
]

#: Mean Earth radius, as in the engine (``pyomni.reference.EARTH_RADIUS_KM``).
EARTH_RADIUS_KM = 6371.0088
_DEG = math.pi / 180.0


class StockIndex(NamedTuple):
    """Available units per (location, SKU), as two CSR views of the same cells.

    ``cell_*`` arrays are sorted by location, then SKU: the cells of location
    ``l`` are ``loc_ptr[l]:loc_ptr[l+1]``. ``sku_cell[sku_ptr[s]:sku_ptr[s+1]]``
    are the cells holding SKU ``s``. Only cells with units available appear.
    A cell's position is its id in the optimiser's stock constraints.

    Examples
    --------
    >>> import numpy as np
    >>> idx = build_stock_index(np.array([1, 0]), np.array([0, 0]), np.array([3, 4]), 2, 1)
    >>> idx.cell_loc.tolist(), idx.cell_avail.tolist()
    ([0, 1], [4, 3])
    """

    loc_ptr: np.ndarray  #: int64, n_locations + 1
    cell_loc: np.ndarray  #: int32 location of each cell
    cell_sku: np.ndarray  #: int32 SKU of each cell
    cell_avail: np.ndarray  #: int64 available units of each cell
    sku_ptr: np.ndarray  #: int64, n_skus + 1
    sku_cell: np.ndarray  #: int64 cells grouped by SKU

    def available(self, loc: int, sku: int) -> int:
        """Available units of one cell (0 if it does not exist)."""
        c = _find_cell(self.loc_ptr, self.cell_sku, loc, sku)
        return int(self.cell_avail[c]) if c >= 0 else 0


class HolderGrid(NamedTuple):
    """Where each SKU can be found: its holders bucketed by a latitude/longitude grid.

    ``hold_*[hold_ptr[s]:hold_ptr[s+1]]`` are the cells holding SKU ``s`` at
    eligible locations, sorted by grid cell (row-major ``i * nj + j``), so the
    holders in a row segment of cells are one binary search away. The few
    locations with the lowest per-shipment base cost (``special``, e.g. the
    warehouses) are left out of the grid and priced for every order: they are
    what would otherwise keep the ring bound low (``floor_base`` is the least
    base of the locations in the grid).

    Examples
    --------
    >>> import numpy as np
    >>> idx = build_stock_index(np.array([0, 1]), np.array([0, 0]), np.array([2, 3]), 2, 1)
    >>> g = build_holder_grid(idx, np.array([30.0, 31.0]), np.array([120.0, 121.0]), np.array([True, True]),
    ...                       np.array([5.0, 8.0]), n_special=1)
    >>> g.special.tolist(), g.hold_loc.tolist(), g.floor_base
    ([0], [1], 8.0)
    """

    lat0: float
    lon0: float
    dlat: float  #: cell height, degrees
    dlon: float  #: cell width, degrees (360 = one column, when the network spans the antimeridian)
    ni: int
    nj: int
    hold_ptr: np.ndarray  #: int64, n_skus + 1
    hold_gcell: np.ndarray  #: int64 grid cell of each holder
    hold_loc: np.ndarray  #: int32
    hold_avail: np.ndarray  #: int64
    special: np.ndarray  #: int32 locations priced for every order
    floor_base: float  #: least base cost in the grid (inf when empty)


class CandidateArcs(NamedTuple):
    """The priced arcs of a backlog, ready for a solver.

    A *pair* is a possible shipment (order, location); an *arc* is one line of
    that order taken whole from that location's cell. An order is filled when
    every line has exactly one arc chosen, and it pays for each pair used.

    Examples
    --------
    >>> CandidateArcs._fields[:3]
    ('pair_order', 'pair_loc', 'pair_km')
    """

    pair_order: np.ndarray  #: int64 order of each pair
    pair_loc: np.ndarray  #: int32 location of each pair
    pair_km: np.ndarray  #: float64 great-circle km
    pair_cost: np.ndarray  #: float64 shipment cost (base + distance)
    arc_pair: np.ndarray  #: int64 pair of each arc
    arc_line: np.ndarray  #: int64 global line index of each arc
    arc_cell: np.ndarray  #: int64 stock cell the arc draws from
    arc_low: np.ndarray  #: float64 low-stock cost of the arc


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """3-D unit vectors of WGS-84 points, shape ``(n, 3)``, with the engine's formula.

    Examples
    --------
    >>> import numpy as np
    >>> unit_vectors(np.array([0.0]), np.array([90.0])).round(6).tolist()
    [[0.0, 1.0, 0.0]]
    """
    la = np.asarray(lat, dtype=np.float64) * _DEG
    lo = np.asarray(lon, dtype=np.float64) * _DEG
    return np.ascontiguousarray(np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)]))


@numba.njit(**NJIT)
def _chord_km(a: np.ndarray, b: np.ndarray) -> float:
    dx = a[0] - b[0]
    dy = a[1] - b[1]
    dz = a[2] - b[2]
    half = math.sqrt(dx * dx + dy * dy + dz * dz) * 0.5
    return 2.0 * EARTH_RADIUS_KM * math.asin(min(half, 1.0))


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle kilometres between two points, computed as the kernels do.

    Examples
    --------
    >>> round(great_circle_km(31.2304, 121.4737, 39.9042, 116.4074))
    1067
    """
    xyz = unit_vectors(np.array([lat1, lat2]), np.array([lon1, lon2]))
    return float(_chord_km(xyz[0], xyz[1]))


def build_stock_index(loc: np.ndarray, sku: np.ndarray, available: np.ndarray, n_locations: int,
                      n_skus: int) -> StockIndex:
    """Index available stock by location and by SKU.

    Parameters
    ----------
    loc, sku : array of int
        Location and SKU index of each cell (no repeated pair).
    available : array of int
        Units available to sell per cell; cells with none are dropped.
    n_locations, n_skus : int
        Sizes of the network and catalogue.

    Returns
    -------
    StockIndex

    Examples
    --------
    >>> import numpy as np
    >>> build_stock_index(np.array([0]), np.array([1]), np.array([7]), 1, 2).sku_ptr.tolist()
    [0, 0, 1]
    """
    loc = np.asarray(loc, dtype=np.int64)
    sku = np.asarray(sku, dtype=np.int64)
    available = np.asarray(available, dtype=np.int64)
    keep = available > 0
    loc, sku, available = loc[keep], sku[keep], available[keep]
    key = loc * max(1, n_skus) + sku
    if key.size > 1 and not np.all(key[1:] >= key[:-1]):  # snapshots usually come sorted: skip the sort
        order = np.argsort(key, kind="stable")
        loc, sku, available = loc[order], sku[order], available[order]
    loc_ptr = np.zeros(n_locations + 1, dtype=np.int64)
    np.cumsum(np.bincount(loc, minlength=n_locations), out=loc_ptr[1:])
    by_sku = np.argsort(sku, kind="stable").astype(np.int64)
    sku_ptr = np.zeros(n_skus + 1, dtype=np.int64)
    np.cumsum(np.bincount(sku, minlength=n_skus), out=sku_ptr[1:])
    return StockIndex(loc_ptr, loc.astype(np.int32), sku.astype(np.int32), available, sku_ptr, by_sku)


def build_holder_grid(stock: StockIndex, lat: np.ndarray, lon: np.ndarray, eligible: np.ndarray,
                      base: np.ndarray, *, cell_deg: float = 0.5, n_special: int = 32) -> HolderGrid:
    """Bucket every SKU's eligible holders into a ``cell_deg`` latitude/longitude grid.

    Half a degree (~55 km) keeps a city's stores in one or two cells, so the
    first rings usually hold enough candidates. A network spanning more than
    180 degrees of longitude gets a single column (the ring bound then comes
    from latitude only, which stays valid across the antimeridian).

    Parameters
    ----------
    stock : StockIndex
    lat, lon, eligible, base : arrays per location
    cell_deg : float
        Grid cell size, degrees.
    n_special : int
        How many of the cheapest-base locations to price for every order instead of searching.

    Returns
    -------
    HolderGrid

    Examples
    --------
    >>> import numpy as np
    >>> idx = build_stock_index(np.array([0, 1]), np.array([0, 0]), np.array([2, 3]), 2, 1)
    >>> build_holder_grid(idx, np.array([30.0, 40.0]), np.array([110.0, 120.0]), np.array([True, False]),
    ...                   np.array([1.0, 1.0]), n_special=0).hold_loc.tolist()
    [0]
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    eligible = np.asarray(eligible, dtype=bool)
    base = np.asarray(base, dtype=np.float64)
    ids = np.flatnonzero(eligible)
    special = ids[np.argsort(base[ids], kind="stable")[:max(0, min(n_special, ids.size - 1))]].astype(np.int32)
    in_grid = eligible.copy()
    in_grid[special] = False
    floor_base = float(base[in_grid].min()) if in_grid.any() else math.inf
    n_skus = stock.sku_ptr.shape[0] - 1
    if ids.size:
        la, lo = lat[ids], lon[ids]
        lat0, lon0 = float(la.min()), float(lo.min())
        dlat = float(cell_deg)
        dlon = float(cell_deg) if float(lo.max()) - lon0 <= 180.0 else 360.0
        ni = int((la.max() - lat0) // dlat) + 1
        nj = int((lo.max() - lon0) // dlon) + 1
    else:
        lat0 = lon0 = 0.0
        dlat = dlon = float(cell_deg)
        ni = nj = 1
    gcell_of_loc = np.zeros(lat.shape[0], dtype=np.int64)
    if dlon < 360.0:
        gcell_of_loc[ids] = np.floor((lon[ids] - lon0) / dlon).astype(np.int64)
    gcell_of_loc[ids] += np.floor((lat[ids] - lat0) / dlat).astype(np.int64) * nj
    keep = np.flatnonzero(in_grid[stock.cell_loc])
    sku = stock.cell_sku[keep].astype(np.int64)
    gcell = gcell_of_loc[stock.cell_loc[keep]]
    order = np.argsort(sku * (ni * nj) + gcell, kind="stable")
    keep, sku, gcell = keep[order], sku[order], gcell[order]
    ptr = np.zeros(n_skus + 1, dtype=np.int64)
    np.cumsum(np.bincount(sku, minlength=n_skus), out=ptr[1:])
    return HolderGrid(lat0, lon0, dlat, dlon, ni, nj, ptr, gcell, stock.cell_loc[keep].astype(np.int32),
                      stock.cell_avail[keep], special, floor_base)


@numba.njit(**NJIT)
def _find_cell(loc_ptr: np.ndarray, cell_sku: np.ndarray, loc: int, sku: int) -> int:
    lo = loc_ptr[loc]
    hi = loc_ptr[loc + 1]
    while lo < hi:
        mid = (lo + hi) >> 1
        if cell_sku[mid] < sku:
            lo = mid + 1
        else:
            hi = mid
    if lo < loc_ptr[loc + 1] and cell_sku[lo] == sku:
        return lo
    return -1


@numba.njit(**NJIT)
def _push(costs: np.ndarray, locs: np.ndarray, count: int, cost: float, loc: int) -> int:
    """Insert into a sorted top-K list (ties broken by location id); returns the new count."""
    k = costs.shape[0]
    if count == k and (cost > costs[k - 1] or (cost == costs[k - 1] and loc >= locs[k - 1])):
        return count
    pos = count if count < k else k - 1
    while pos > 0 and (costs[pos - 1] > cost or (costs[pos - 1] == cost and locs[pos - 1] > loc)):
        if pos < k:
            costs[pos] = costs[pos - 1]
            locs[pos] = locs[pos - 1]
        pos -= 1
    costs[pos] = cost
    locs[pos] = loc
    return count + 1 if count < k else k


@numba.njit(**NJIT)
def _ring_bound_km(r: int, dlat: float, dlon: float, cos_max_lat: float) -> float:
    """Fewest km from a point in grid cell (ci, cj) to any point in a cell at Chebyshev distance >= r."""
    if r <= 1:
        return 0.0
    steps = r - 1
    by_lat = EARTH_RADIUS_KM * steps * dlat * (math.pi / 180.0)
    dl = min(steps * dlon * (math.pi / 180.0), math.pi)
    # haversine: sin(d/2) >= cos(max |lat|) * sin(dlon/2)
    by_lon = 2.0 * EARTH_RADIUS_KM * math.asin(min(1.0, cos_max_lat * math.sin(dl / 2.0)))
    return min(by_lat, by_lon)


@numba.njit(**NJIT)
def _lower(values: np.ndarray, lo: int, hi: int, target: int) -> int:
    """First index in ``[lo, hi)`` whose value is >= ``target`` (values sorted)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[mid] < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(**NJIT)
def _whole_cost(loc: int, o_xyz: np.ndarray, loc_xyz: np.ndarray, base: np.ndarray, km_cost: float, low_w: float,
                max_km: float, skus: np.ndarray, qtys: np.ndarray, loc_ptr: np.ndarray, cell_sku: np.ndarray,
                cell_avail: np.ndarray) -> float:
    """Cost of ``loc`` shipping every line of the order, or inf if it cannot."""
    km = _chord_km(loc_xyz[loc], o_xyz)
    if km > max_km:
        return np.inf
    low = 0.0
    for i in range(skus.shape[0]):
        c = _find_cell(loc_ptr, cell_sku, loc, skus[i])
        if c < 0 or cell_avail[c] < qtys[i]:
            return np.inf
        low += low_w * (qtys[i] / cell_avail[c])
    return base[loc] + km_cost * km + low


@numba.njit(**NJIT)
def _consider(p: int, whole: bool, anchor_qty: int, o_xyz: np.ndarray, max_km: float, skus: np.ndarray,
              qtys: np.ndarray, costs: np.ndarray, locs: np.ndarray, count: int, loc_xyz: np.ndarray,
              base: np.ndarray, loc_ptr: np.ndarray, cell_sku: np.ndarray, cell_avail: np.ndarray,
              hold_loc: np.ndarray, hold_avail: np.ndarray, km_cost: float, low_w: float) -> int:
    a = hold_avail[p]
    if a < anchor_qty:
        return count
    loc = hold_loc[p]
    if whole:
        cost = _whole_cost(loc, o_xyz, loc_xyz, base, km_cost, low_w, max_km, skus, qtys, loc_ptr, cell_sku,
                           cell_avail)
        if cost == np.inf:
            return count
    else:
        # the straight chord is never longer than the arc: price it first and skip the asin of every holder
        # that cannot enter the top K even at chord length (most of them, once the list is full)
        q = loc_xyz[loc]
        dx = q[0] - o_xyz[0]
        dy = q[1] - o_xyz[1]
        dz = q[2] - o_xyz[2]
        chord = math.sqrt(dx * dx + dy * dy + dz * dz)
        low = base[loc] + low_w * (anchor_qty / a)
        k = costs.shape[0]
        if chord * EARTH_RADIUS_KM > max_km or (count == k and low + km_cost * chord * EARTH_RADIUS_KM > costs[k - 1]):
            return count
        km = 2.0 * EARTH_RADIUS_KM * math.asin(min(chord * 0.5, 1.0))
        if km > max_km:
            return count
        cost = base[loc] + km_cost * km + low_w * (anchor_qty / a)
    return _push(costs, locs, count, cost, loc)


@numba.njit(**NJIT)
def _search(anchor_sku: int, anchor_qty: int, whole: bool, stop_at: float, o_xyz: np.ndarray, o_lat: float,
            o_lon: float, max_km: float, skus: np.ndarray, qtys: np.ndarray, costs: np.ndarray, locs: np.ndarray,
            count: int, loc_xyz: np.ndarray, base: np.ndarray, loc_ptr: np.ndarray, cell_sku: np.ndarray,
            cell_avail: np.ndarray, hold_ptr: np.ndarray, hold_gcell: np.ndarray, hold_loc: np.ndarray,
            hold_avail: np.ndarray, lat0: float, lon0: float, dlat: float, dlon: float, ni: int, nj: int,
            floor_base: float, cos_max_lat: float, km_cost: float, low_w: float, rare_threshold: int) -> tuple:
    """Push the cheapest holders of ``anchor_sku`` onto (costs, locs), nearest grid rings first.

    ``whole``: price every line of the order at each holder (whole-order
    candidates); otherwise the anchor line alone. Stops once the K-th best is
    no dearer than anything beyond the next ring can be, or once that floor
    reaches ``stop_at`` (a known plan no candidate farther out could beat).
    """
    k = costs.shape[0]
    h0 = hold_ptr[anchor_sku]
    h1 = hold_ptr[anchor_sku + 1]
    visited = 0
    if h1 - h0 <= rare_threshold:  # few holders: scanning them beats walking empty rings
        for p in range(h0, h1):
            visited += 1
            count = _consider(p, whole, anchor_qty, o_xyz, max_km, skus, qtys, costs, locs, count, loc_xyz, base,
                              loc_ptr, cell_sku, cell_avail, hold_loc, hold_avail, km_cost, low_w)
        return count, visited
    ci = int(math.floor((o_lat - lat0) / dlat))
    cj = int(math.floor((o_lon - lon0) / dlon)) if dlon < 360.0 else 0
    r_max = max(abs(ci), abs(ni - 1 - ci), abs(cj), abs(nj - 1 - cj))
    for r in range(r_max + 1):
        for gi in range(max(ci - r, 0), min(ci + r, ni - 1) + 1):
            edge = gi == ci - r or gi == ci + r
            for side in range(1 if edge else 2):
                if edge:
                    j_lo = max(cj - r, 0)
                    j_hi = min(cj + r, nj - 1)
                else:  # rows strictly inside the ring contribute their two end cells
                    j_lo = j_hi = cj - r if side == 0 else cj + r
                    if j_lo < 0 or j_lo >= nj:
                        continue
                if j_lo > j_hi:
                    continue
                cell_lo = gi * nj + j_lo
                cell_hi = gi * nj + j_hi
                p = _lower(hold_gcell, h0, h1, cell_lo)
                while p < h1 and hold_gcell[p] <= cell_hi:
                    visited += 1
                    count = _consider(p, whole, anchor_qty, o_xyz, max_km, skus, qtys, costs, locs, count, loc_xyz,
                                      base, loc_ptr, cell_sku, cell_avail, hold_loc, hold_avail, km_cost, low_w)
                    p += 1
        bound_km = _ring_bound_km(r + 1, dlat, dlon, cos_max_lat)
        if bound_km > max_km:
            break
        floor_cost = floor_base + km_cost * bound_km
        if (count == k and costs[k - 1] <= floor_cost) or floor_cost >= stop_at:
            break
    return count, visited


@numba.njit(**NJIT_PARALLEL)
def find_candidates(order_ptr: np.ndarray, line_sku: np.ndarray, line_qty: np.ndarray, dest_xyz: np.ndarray,
                    dest_lat: np.ndarray, dest_lon: np.ndarray, max_km: np.ndarray, max_splits: np.ndarray,
                    loc_xyz: np.ndarray, base: np.ndarray, loc_ptr: np.ndarray, cell_sku: np.ndarray,
                    cell_avail: np.ndarray, hold_ptr: np.ndarray, hold_gcell: np.ndarray, hold_loc: np.ndarray,
                    hold_avail: np.ndarray, special: np.ndarray, lat0: float, lon0: float, dlat: float, dlon: float,
                    ni: int, nj: int, floor_base: float, cos_max_lat: float, km_cost: float, low_w: float,
                    split_penalty: float, k: int, rare_threshold: int) -> tuple:
    """The K cheapest whole-order locations per order and K cheapest locations per line.

    Parameters
    ----------
    order_ptr : int64 array, n_orders + 1
        Lines of order ``o`` are ``order_ptr[o]:order_ptr[o+1]`` of ``line_sku`` / ``line_qty``.
    dest_xyz, dest_lat, dest_lon : arrays
        Destinations (unit vectors, degrees).
    max_km, max_splits : arrays per order
        Farthest location and most shipments.
    loc_xyz, base : arrays per location
        Unit vectors and per-shipment base cost.
    loc_ptr, cell_sku, cell_avail : the :class:`StockIndex` arrays (stock lookups).
    hold_ptr ... floor_base : the :class:`HolderGrid` fields (only eligible locations are in it).
    cos_max_lat : float
        cos of the largest |latitude| of any location or destination (ring bound).
    km_cost, low_w, split_penalty : float
        Policy weights (``cost_per_km * circuity``, ``low_stock_weight``, ``split_penalty``).
    k : int
        Candidates kept per order and per line.
    rare_threshold : int
        SKUs with at most this many holders are scanned, not searched ring by ring.

    Returns
    -------
    single_loc : int32 array (n_orders, k)
        Whole-order candidates, cheapest first, -1 padded (multi-line orders only).
    line_loc : int32 array (n_lines, k)
        Per-line candidates (every line of single-line orders; lines of
        multi-line orders that may split).
    visited : int64 array (n_orders,)
        Holders priced per order (to measure the prefilter).

    Examples
    --------
    See :func:`pyomni.optimize.optimize_backlog`, which prepares the arrays.
    """
    n_orders = order_ptr.shape[0] - 1
    single_loc = np.full((n_orders, k), -1, dtype=np.int32)
    line_loc = np.full((line_sku.shape[0], k), -1, dtype=np.int32)
    visited = np.zeros(n_orders, dtype=np.int64)
    for o in numba.prange(n_orders):
        costs = np.empty(k, dtype=np.float64)
        locs = np.empty(k, dtype=np.int32)
        s0 = order_ptr[o]
        n = order_ptr[o + 1] - s0
        skus = line_sku[s0:s0 + n]
        qtys = line_qty[s0:s0 + n]
        o_xyz = dest_xyz[o]
        o_max_km = max_km[o]
        best_line_sum = 0.0
        lines_complete = True
        if n == 1 or max_splits[o] > 1:
            for i in range(n):
                count = 0
                for loc in special:
                    c = _find_cell(loc_ptr, cell_sku, loc, skus[i])
                    if c >= 0 and cell_avail[c] >= qtys[i]:
                        km = _chord_km(loc_xyz[loc], o_xyz)
                        if km <= o_max_km:
                            count = _push(costs, locs, count, base[loc] + km_cost * km
                                          + low_w * (qtys[i] / cell_avail[c]), loc)
                count, seen = _search(skus[i], qtys[i], False, np.inf, o_xyz, dest_lat[o], dest_lon[o], o_max_km,
                                      skus, qtys, costs, locs, count, loc_xyz, base, loc_ptr, cell_sku, cell_avail,
                                      hold_ptr, hold_gcell, hold_loc, hold_avail, lat0, lon0, dlat, dlon, ni, nj,
                                      floor_base, cos_max_lat, km_cost, low_w, rare_threshold)
                visited[o] += seen
                for j in range(count):
                    line_loc[s0 + i, j] = locs[j]
                if count:
                    best_line_sum += costs[0]
                else:
                    lines_complete = False
        else:
            lines_complete = False
        if n > 1:
            # anchor on the line with the fewest holders: every holder visited can at least ship it
            anchor = 0
            for i in range(1, n):
                if hold_ptr[skus[i] + 1] - hold_ptr[skus[i]] < hold_ptr[skus[anchor] + 1] - hold_ptr[skus[anchor]]:
                    anchor = i
            # a whole-order location is only worth having if it beats the split plan of each line's best
            stop_at = np.inf
            if lines_complete and n <= max_splits[o]:
                stop_at = best_line_sum + split_penalty * (n - 1)
            count = 0
            for loc in special:
                cost = _whole_cost(loc, o_xyz, loc_xyz, base, km_cost, low_w, o_max_km, skus, qtys, loc_ptr,
                                   cell_sku, cell_avail)
                if cost < np.inf:
                    count = _push(costs, locs, count, cost, loc)
            count, seen = _search(skus[anchor], qtys[anchor], True, stop_at, o_xyz, dest_lat[o], dest_lon[o],
                                  o_max_km, skus, qtys, costs, locs, count, loc_xyz, base, loc_ptr, cell_sku,
                                  cell_avail, hold_ptr, hold_gcell, hold_loc, hold_avail, lat0, lon0, dlat, dlon, ni,
                                  nj, floor_base, cos_max_lat, km_cost, low_w, rare_threshold)
            visited[o] += seen
            for j in range(count):
                single_loc[o, j] = locs[j]
    return single_loc, line_loc, visited


@numba.njit(**NJIT)
def _count_arcs(order_ptr: np.ndarray, k: int) -> tuple:
    pairs = 0
    arcs = 0
    for o in range(order_ptr.shape[0] - 1):
        n = order_ptr[o + 1] - order_ptr[o]
        m = k * (n + 1) if n > 1 else k
        pairs += m
        arcs += m * n
    return pairs, arcs


@numba.njit(**NJIT)
def build_arcs(order_ptr: np.ndarray, line_sku: np.ndarray, line_qty: np.ndarray, dest_xyz: np.ndarray,
               single_loc: np.ndarray, line_loc: np.ndarray, loc_xyz: np.ndarray, base: np.ndarray,
               loc_ptr: np.ndarray, cell_sku: np.ndarray, cell_avail: np.ndarray, km_cost: float,
               low_w: float) -> tuple:
    """Turn candidate locations into priced pairs and arcs (see :class:`CandidateArcs`).

    Each order's pairs are the union of its whole-order and per-line
    candidates; each pair gets an arc for every line that location can fill
    whole. Pairs of an order are contiguous and in increasing pair index.

    Returns
    -------
    tuple
        The eight arrays of :class:`CandidateArcs`, in field order.

    Examples
    --------
    See :func:`pyomni.optimize.optimize_backlog`.
    """
    n_orders = order_ptr.shape[0] - 1
    k = single_loc.shape[1]
    max_pairs, max_arcs = _count_arcs(order_ptr, k)
    pair_order = np.empty(max_pairs, dtype=np.int64)
    pair_loc = np.empty(max_pairs, dtype=np.int32)
    pair_km = np.empty(max_pairs, dtype=np.float64)
    pair_cost = np.empty(max_pairs, dtype=np.float64)
    arc_pair = np.empty(max_arcs, dtype=np.int64)
    arc_line = np.empty(max_arcs, dtype=np.int64)
    arc_cell = np.empty(max_arcs, dtype=np.int64)
    arc_low = np.empty(max_arcs, dtype=np.float64)
    np_ = 0
    na = 0
    seen = np.empty(k * 65, dtype=np.int32)
    for o in range(n_orders):
        s0 = order_ptr[o]
        n = order_ptr[o + 1] - s0
        m = 0
        for j in range(k):
            loc = single_loc[o, j]
            if loc >= 0:
                seen[m] = loc
                m += 1
        for i in range(n):
            for j in range(k):
                loc = line_loc[s0 + i, j]
                if loc < 0:
                    continue
                dup = False
                for t in range(m):
                    if seen[t] == loc:
                        dup = True
                        break
                if not dup:
                    seen[m] = loc
                    m += 1
        # ascending location id: deterministic models whatever order candidates arrived in
        seen[:m].sort()
        for t in range(m):
            loc = seen[t]
            km = _chord_km(loc_xyz[loc], dest_xyz[o])
            first_arc = na
            for i in range(n):
                c = _find_cell(loc_ptr, cell_sku, loc, line_sku[s0 + i])
                if c >= 0 and cell_avail[c] >= line_qty[s0 + i]:
                    arc_pair[na] = np_
                    arc_line[na] = s0 + i
                    arc_cell[na] = c
                    arc_low[na] = low_w * (line_qty[s0 + i] / cell_avail[c])
                    na += 1
            if na == first_arc:
                continue
            pair_order[np_] = o
            pair_loc[np_] = loc
            pair_km[np_] = km
            pair_cost[np_] = base[loc] + km_cost * km
            np_ += 1
    return (pair_order[:np_].copy(), pair_loc[:np_].copy(), pair_km[:np_].copy(), pair_cost[:np_].copy(),
            arc_pair[:na].copy(), arc_line[:na].copy(), arc_cell[:na].copy(), arc_low[:na].copy())
