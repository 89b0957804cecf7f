"""Plain-Python reference of the ledger and the routing decision.

Same contracts as the native core (``core/ledger.pyx``, ``core/router.pyx``),
written for clarity rather than speed: cells in a dict, every decision by
brute force over every location in index order. It exists for three reasons:
parity tests hold the native core to identical answers, ``set_config(native=False)``
runs the engine on it, and benchmarks measure the native core against it.

Floating-point parity: costs are computed with the same formulas in the same
order as the native code (IEEE-754 doubles, the same libm), so totals compare
exactly; the native search only prunes what is worse by more than 1e-9.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["ReferenceLedger", "ReferenceRouter", "unit_vector", "chord_sq_to_km"]

MAX_QTY = 1_000_000_000
ST_OK, ST_INVALID_QUANTITY, ST_INSUFFICIENT_STOCK, ST_STOCK_RESERVED, ST_QUANTITY_OVERFLOW = 0, 1, 2, 3, 4
ST_UNKNOWN_LOCATION, ST_UNKNOWN_SKU, ST_NO_MEMORY, ST_INVARIANT = 5, 6, 7, 8
EV_SET, EV_ADJUST, EV_RECEIVE, EV_SALE, EV_RETURN, EV_SAFETY = range(6)
REJ_CLOSED, REJ_EXCLUDED, REJ_CAPABILITY, REJ_CAPACITY, REJ_DISTANCE, REJ_NO_STOCK = range(6)
EARTH_RADIUS_KM = 6371.0088
N_KEEP = 4
MAX_SHIPMENTS = 16
EXACT_LINES = 6


def _partitions(n: int, k: int):
    """Partitions of lines 0..n-1 into at most k groups, each a tuple of line masks in order of first line,
    in the native enumeration's order: line i joins each group opened so far, in order, then opens the next."""
    def walk(i: int, masks: list[int]):
        if i == n:
            yield tuple(masks)
            return
        for s in range(len(masks)):
            masks[s] |= 1 << i
            yield from walk(i + 1, masks)
            masks[s] &= ~(1 << i)
        if len(masks) < k:
            masks.append(1 << i)
            yield from walk(i + 1, masks)
            masks.pop()
    yield from walk(0, [])


def unit_vector(lat: float, lon: float) -> tuple[float, float, float]:
    """3-D unit vector of a WGS-84 point."""
    la = lat * (3.141592653589793 / 180.0)
    lo = lon * (3.141592653589793 / 180.0)
    return (math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la))


def chord_sq(a: Sequence[float], b: Sequence[float]) -> float:
    dx = a[0] - b[0]
    dy = a[1] - b[1]
    dz = a[2] - b[2]
    return dx * dx + dy * dy + dz * dz


def chord_sq_to_km(c2: float) -> float:
    """Great-circle km of a squared chord on the unit sphere."""
    half = math.sqrt(c2) * 0.5
    return 2.0 * EARTH_RADIUS_KM * math.asin(min(half, 1.0))


def _available(cell: list[int]) -> int:
    return max(0, cell[0] - cell[1] - cell[2])


class ReferenceLedger:
    """Cells ``[on_hand, reserved, safety, loc, sku]`` in a list, found through a dict."""

    def __init__(self, n_locations: int, n_skus: int) -> None:
        self.n_locations = n_locations
        self.n_skus = n_skus
        self.cells: list[list[int]] = []
        self.index: dict[tuple[int, int], int] = {}
        self.by_sku: dict[int, list[int]] = {}
        self.held_shipments = [0] * n_locations
        self.confirmed_today = [0] * n_locations

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    def add_skus(self, n_new: int) -> int:
        if n_new < 0:
            return ST_INVALID_QUANTITY
        self.n_skus += n_new
        return ST_OK

    def _insert(self, loc: int, sku: int) -> int:
        c = len(self.cells)
        self.cells.append([0, 0, 0, loc, sku])
        self.index[(loc, sku)] = c
        self.by_sku.setdefault(sku, []).append(c)
        return c

    def _drop_last(self) -> None:
        cell = self.cells.pop()
        del self.index[(cell[3], cell[4])]
        self.by_sku[cell[4]].pop()

    def apply_event(self, loc: int, sku: int, kind: int, qty: int, safety: int = -1) -> int:
        if not 0 <= loc < self.n_locations:
            return ST_UNKNOWN_LOCATION
        if not 0 <= sku < self.n_skus:
            return ST_UNKNOWN_SKU
        c = self.index.get((loc, sku), -1)
        on_hand, reserved, safe = self.cells[c][:3] if c >= 0 else (0, 0, 0)
        new_safety = safe
        if kind == EV_SET:
            if not 0 <= qty <= MAX_QTY or not -1 <= safety <= MAX_QTY:
                return ST_INVALID_QUANTITY
            new_on_hand = qty
            if safety >= 0:
                new_safety = safety
            if new_on_hand < reserved:
                return ST_STOCK_RESERVED
        elif kind == EV_ADJUST:
            if qty == 0 or not -MAX_QTY <= qty <= MAX_QTY:
                return ST_INVALID_QUANTITY
            new_on_hand = on_hand + qty
            if new_on_hand < 0:
                return ST_INSUFFICIENT_STOCK
            if new_on_hand < reserved:
                return ST_STOCK_RESERVED
        elif kind in (EV_RECEIVE, EV_RETURN):
            if not 0 < qty <= MAX_QTY:
                return ST_INVALID_QUANTITY
            new_on_hand = on_hand + qty
        elif kind == EV_SALE:
            if not 0 < qty <= MAX_QTY:
                return ST_INVALID_QUANTITY
            if on_hand - reserved < qty:
                return ST_INSUFFICIENT_STOCK
            new_on_hand = on_hand - qty
        elif kind == EV_SAFETY:
            if not 0 <= qty <= MAX_QTY:
                return ST_INVALID_QUANTITY
            new_on_hand = on_hand
            new_safety = qty
        else:
            return ST_INVALID_QUANTITY
        if new_on_hand > MAX_QTY:
            return ST_QUANTITY_OVERFLOW
        if c < 0:
            if new_on_hand == 0 and new_safety == 0:
                return ST_OK
            c = self._insert(loc, sku)
        self.cells[c][0] = new_on_hand
        self.cells[c][2] = new_safety
        return ST_OK

    def apply_events(self, loc, sku, kind, qty, safety) -> tuple[int, int]:
        n = len(loc)
        start = len(self.cells)
        undo: list[tuple[int, int, int]] = []
        for i in range(n):
            key = (int(loc[i]), int(sku[i]))
            c = self.index.get(key, -1)
            before = (self.cells[c][0], self.cells[c][2]) if c >= 0 else (0, 0)
            st = self.apply_event(key[0], key[1], int(kind[i]), int(qty[i]), int(safety[i]))
            if st != ST_OK:
                for c, oh, sf in reversed(undo):
                    self.cells[c][0] = oh
                    self.cells[c][2] = sf
                while len(self.cells) > start:
                    self._drop_last()
                return st, i
            c = self.index.get(key, -1)
            if c >= 0:
                undo.append((c, *before))
        return ST_OK, -1

    def transfer(self, src: int, dst: int, sku: int, qty: int) -> int:
        if not (0 <= src < self.n_locations and 0 <= dst < self.n_locations):
            return ST_UNKNOWN_LOCATION
        if not 0 <= sku < self.n_skus:
            return ST_UNKNOWN_SKU
        if not 0 < qty <= MAX_QTY:
            return ST_INVALID_QUANTITY
        c = self.index.get((src, sku), -1)
        if c < 0 or self.cells[c][0] - self.cells[c][1] < qty:
            return ST_INSUFFICIENT_STOCK
        d = self.index.get((dst, sku), -1)
        if (self.cells[d][0] if d >= 0 else 0) + qty > MAX_QTY:
            return ST_QUANTITY_OVERFLOW
        if d < 0:
            self._insert(dst, sku)
        self.apply_event(src, sku, EV_SALE, qty)
        return self.apply_event(dst, sku, EV_RECEIVE, qty)

    def change_holds(self, cells, qty, op: int) -> int:
        pairs = [(int(c), int(q)) for c, q in zip(cells, qty)]
        saved = {c: list(self.cells[c]) for c, _ in pairs if 0 <= c < len(self.cells)}
        for c, q in pairs:
            if not 0 <= c < len(self.cells):
                st = ST_INVARIANT
                break
            cell = self.cells[c]
            if op == 0:
                if q <= 0 or q > _available(cell):
                    st = ST_INSUFFICIENT_STOCK
                    break
                cell[1] += q
            else:
                if q <= 0 or q > cell[1]:
                    st = ST_INVARIANT
                    break
                cell[1] -= q
                if op == 2:
                    cell[0] -= q
        else:
            return ST_OK
        for c, old in saved.items():
            self.cells[c][:] = old
        return st

    def add_load(self, loc: int, held_delta: int, confirmed_delta: int) -> int:
        if not 0 <= loc < self.n_locations:
            return ST_UNKNOWN_LOCATION
        if self.held_shipments[loc] + held_delta < 0 or self.confirmed_today[loc] + confirmed_delta < 0:
            return ST_INVARIANT
        self.held_shipments[loc] += held_delta
        self.confirmed_today[loc] += confirmed_delta
        return ST_OK

    def add_loads(self, loc: np.ndarray, held_delta: int) -> int:
        for i, x in enumerate(loc.tolist()):
            st = self.add_load(x, held_delta, 0)
            if st:
                for y in loc.tolist()[:i]:
                    self.add_load(y, -held_delta, 0)
                return st
        return ST_OK

    def cells_of(self, loc: np.ndarray, sku: np.ndarray) -> np.ndarray:
        return np.array([self.index.get((a, b), -1) for a, b in zip(loc.tolist(), sku.tolist())], dtype=np.int64)

    def new_day(self) -> None:
        self.confirmed_today = [0] * self.n_locations

    def cell(self, loc: int, sku: int) -> tuple[int, int, int] | None:
        c = self.index.get((loc, sku), -1)
        return None if c < 0 else tuple(self.cells[c][:3])  # type: ignore[return-value]

    def cell_index(self, loc: int, sku: int) -> int:
        return self.index.get((loc, sku), -1)

    def sku_totals(self, sku: int) -> tuple[int, int, int, int]:
        if not 0 <= sku < self.n_skus:
            raise IndexError(sku)
        cells = [self.cells[c] for c in self.by_sku.get(sku, [])]
        return (sum(c[0] for c in cells), sum(c[1] for c in cells), sum(_available(c) for c in cells), len(cells))

    @property
    def version(self) -> int:
        # the reference keeps no change log: every look is a new version, and every SKU may have changed
        self._looks = getattr(self, "_looks", 0) + 1
        return self._looks

    def changed_skus(self, since: int) -> tuple[np.ndarray, int]:
        """Every SKU (the reference does not track changes; feeds compare values anyway)."""
        return np.arange(self.n_skus, dtype=np.int32), self.version

    def sku_available_array(self) -> np.ndarray:
        return np.array([self.sku_totals(s)[2] for s in range(self.n_skus)], dtype=np.int64)

    def sku_cells(self, sku: int) -> tuple[np.ndarray, ...]:
        cells = [self.cells[c] for c in reversed(self.by_sku.get(sku, []))]
        return tuple(np.array([c[k] for c in cells], dtype=np.int32) for k in (3, 0, 1, 2))

    def export(self) -> tuple[np.ndarray, ...]:
        return tuple(np.array([c[k] for c in self.cells], dtype=np.int32) for k in (3, 4, 0, 1, 2))

    def loads(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self.held_shipments, dtype=np.int32), np.array(self.confirmed_today, dtype=np.int32)

    def memory_bytes(self) -> int:
        return 0

    def cell_bytes(self) -> float:
        return 0.0

    def check_invariants(self) -> tuple[int, str]:
        for c, cell in enumerate(self.cells):
            if not (0 <= cell[1] <= cell[0] <= MAX_QTY) or cell[2] < 0:
                return ST_INVARIANT, f"cell {c}: {cell}"
        return ST_OK, ""


class ReferenceRouter:
    """Brute-force routing with the native router's exact definitions (see core/router.pyx)."""

    def __init__(self, ledger: ReferenceLedger, xyz: np.ndarray, caps, is_open, capacity, priority,
                 fixed_cost) -> None:
        self.ledger = ledger
        self.xyz = [tuple(map(float, row)) for row in xyz]
        self.caps = [int(x) for x in caps]
        self.is_open = [bool(x) for x in is_open]
        self.capacity = [int(x) for x in capacity]
        self.priority = [int(x) for x in priority]
        self.fixed_cost = [float(x) for x in fixed_cost]
        self.min_fixed = min(self.fixed_cost) if self.fixed_cost else 0.0
        self.n = len(self.xyz)
        self.tree_bytes = 0             # the native router's SKU trees; brute force has none

    def set_open(self, loc: int, is_open: bool) -> None:
        self.is_open[loc] = bool(is_open)

    def prepare(self) -> int:
        """The native router builds its SKU trees here; brute force has none to build (0 bytes)."""
        return 0

    def set_capacity(self, loc: int, capacity: int) -> None:
        self.capacity[loc] = int(capacity)

    def _eligible(self, q: dict, loc: int, km: float) -> bool:
        if not self.is_open[loc] or loc in q["excluded"]:
            return False
        if loc != q["pickup"] and (self.caps[loc] & q["need_cap"]) != q["need_cap"]:
            return False
        cap = self.capacity[loc]
        if cap > 0 and self.ledger.held_shipments[loc] + self.ledger.confirmed_today[loc] >= cap:
            return False
        return not km > q["max_km"]

    def _costs(self, pol: Any, loc: int, km: float, low_sum: float, extra: bool) -> tuple[float, ...]:
        cap = self.capacity[loc]
        fixed = self.fixed_cost[loc] + (pol.split_penalty if extra else 0.0)
        distance = (pol.cost_per_km * pol.circuity) * km
        low = pol.low_stock_weight * low_sum
        load = pol.load_weight * (float(self.ledger.held_shipments[loc] + self.ledger.confirmed_today[loc]) / cap
                                  ) if cap > 0 else 0.0
        prio = pol.priority_weight * self.priority[loc]
        return (fixed, distance, low, load, prio, fixed + distance + low + load + prio)

    def _avail(self, loc: int, sku: int) -> int:
        c = self.ledger.index.get((loc, sku), -1)
        return _available(self.ledger.cells[c]) if c >= 0 else 0

    def _singles(self, pol: Any, eligible: list[int], km_of: list[float], skus, qtys,
                 base_only: bool = False) -> list[tuple]:
        """Every eligible location filling all of ``qtys`` of ``skus``, cheapest first (ties: lower index), as
        ``(total, loc, km, costs)``; ``base_only`` prices them without the stock-dependent part."""
        found = []
        for loc in eligible:
            avail = [self._avail(loc, s) for s in skus]
            if all(a >= qty for a, qty in zip(avail, qtys)):
                low = 0.0
                if not base_only:
                    for qty, a in zip(qtys, avail):
                        low += qty / a
                costs = self._costs(pol, loc, km_of[loc], low, False)
                found.append((costs[5], loc, km_of[loc], costs))
        found.sort(key=lambda t: (t[0], t[1]))
        return found

    def _greedy(self, pol: Any, eligible: list[int], km_of: list[float], skus, qtys, max_ship: int,
                split_cap: float) -> tuple[list[tuple], list[int], float]:
        """The greedy split (see core/router.pyx): ``(shipments, remaining, total)``."""
        # only locations that could be part of a plan of two or more shipments cheaper than split_cap
        members = [loc for loc in eligible
                   if self._costs(pol, loc, km_of[loc], 0.0, False)[5] + self.min_fixed + pol.split_penalty
                   < split_cap]
        plan: list[tuple] = []
        remaining = list(qtys)
        total = 0.0
        while len(plan) < max_ship and any(remaining):
            used = {p[0] for p in plan}
            step = None
            for loc in members:
                if loc in used:
                    continue
                takes = []
                units = 0
                low = 0.0
                for s, rem in zip(skus, remaining):
                    a = self._avail(loc, s) if rem else 0
                    t = min(a, rem) if a > 0 else 0
                    takes.append(t)
                    units += t
                    if t:
                        low += t / a
                if units == 0:
                    continue
                costs = self._costs(pol, loc, km_of[loc], low, bool(plan))
                ratio = costs[5] / units
                if step is None or (ratio, loc) < (step[0], step[1]):
                    step = (ratio, loc, costs, takes)
            if step is None:
                break
            _, loc, costs, takes = step
            plan.append((loc, km_of[loc], costs, takes))
            remaining = [r - t for r, t in zip(remaining, takes)]
            total += costs[5]
        return plan, remaining, total

    def _line_bound(self, pol: Any, eligible: list[int], km_of: list[float], skus) -> float:
        """The dearest over the lines of the cheapest parcel (without its stock part) holding a unit of it."""
        bound = 0.0
        for s in skus:
            found = self._singles(pol, eligible, km_of, [s], [1], base_only=True)
            if found and found[0][0] > bound:
                bound = found[0][0]
        return bound

    def _exact(self, pol: Any, eligible: list[int], km_of: list[float], skus, qtys, max_ship: int,
               fewest: bool) -> tuple:
        """The exact plan by brute force (definitions in core/router.pyx): every subset of the lines at its own
        cheapest location, every partition of the lines into at most ``max_ship`` of them, and the greedy
        split where it may split a line's units. Returns ``(plan, remaining, total, split_reason, optimal,
        next_best, bound, status)``."""
        n_lines = len(skus)
        inf = math.inf
        needs_greedy = any(qty > 1 for qty in qtys)
        groups: dict[int, Any] = {}            # mask -> (loc, km, first costs, later costs), or None
        for mask in range(1, 1 << n_lines):
            lines = [i for i in range(n_lines) if mask >> i & 1]
            found = self._singles(pol, eligible, km_of, [skus[i] for i in lines], [qtys[i] for i in lines])
            if found:
                _, loc, km, costs = found[0]
                later = (costs[0] + pol.split_penalty, *costs[1:5])
                groups[mask] = (loc, km, costs, (*later, later[0] + later[1] + later[2] + later[3] + later[4]))
            else:
                groups[mask] = None
        full = (1 << n_lines) - 1
        per_line = [groups[1 << i] for i in range(n_lines)]
        if not all(per_line):
            # a line no location can send whole: no whole-line plan, no single location; the greedy split
            plan, remaining, total = self._greedy(pol, eligible, km_of, skus, qtys, max_ship, inf)
            if not plan or any(remaining):
                return plan, remaining, 0.0, 0, False, inf, 0.0, 1
            return (plan, remaining, total, 1 if len(plan) > 1 else 0, False, inf,
                    self._line_bound(pol, eligible, km_of, skus), 0)
        # a single location is "found" when it costs no more than a parcel per line (when that plan exists)
        ub = inf
        if not fewest and max_ship >= n_lines and len({g[0] for g in per_line}) == n_lines:
            ub = 0.0
            for s in range(n_lines - 1, -1, -1):
                ub = (per_line[s][2][5] if s == 0 else per_line[s][3][5]) + ub
        found_single = not fewest and groups[full] is not None and groups[full][2][5] <= ub + 1e-9
        if fewest:
            groups[full] = None
        best_part, best_total, next_total = None, inf, inf
        for part in _partitions(n_lines, min(max_ship, n_lines)):
            gs = [groups[m] for m in part]
            if any(g is None for g in gs) or len({g[0] for g in gs}) != len(gs):
                continue
            t = 0.0
            for s in range(len(gs) - 1, -1, -1):
                t = (gs[s][2][5] if s == 0 else gs[s][3][5]) + t
            m = len(gs)
            if best_part is None:
                better = True
            elif fewest:
                better = m < len(best_part) or (m == len(best_part) and t < best_total)
            else:
                better = t < best_total or (t == best_total and m < len(best_part))
            if better:
                if best_part is not None:
                    next_total = min(next_total, best_total)
                best_part, best_total = part, t
            else:
                next_total = min(next_total, t)
        use_greedy, complete = False, False
        g_plan: list[tuple] = []
        g_remaining, g_total = list(qtys), 0.0
        if needs_greedy or best_part is None:
            cap = inf if best_part is None or fewest else best_total
            g_plan, g_remaining, g_total = self._greedy(pol, eligible, km_of, skus, qtys, max_ship, cap)
            complete = bool(g_plan) and not any(g_remaining)
            if complete:
                if best_part is None:
                    use_greedy = True
                elif fewest:
                    use_greedy = (len(g_plan) < len(best_part)
                                  or (len(g_plan) == len(best_part) and g_total < best_total - 1e-9))
                else:
                    use_greedy = g_total < best_total - 1e-9
        if use_greedy:
            plan, remaining, total = g_plan, g_remaining, g_total
            next_best, optimal, bound = best_total, False, self._line_bound(pol, eligible, km_of, skus)
        elif best_part is not None:
            next_best = next_total
            if complete and best_total + 1e-9 < g_total < next_best:
                next_best = g_total
            optimal, bound, total, remaining = True, best_total, best_total, [0] * n_lines
            plan = []
            for s, m in enumerate(best_part):
                loc, km, costs, later = groups[m]
                plan.append((loc, km, costs if s == 0 else later,
                             [qtys[i] if m >> i & 1 else 0 for i in range(n_lines)]))
        else:
            return g_plan, g_remaining, 0.0, 0, False, inf, 0.0, 1
        split_reason = (2 if found_single else 1) if len(plan) > 1 else 0
        return plan, remaining, total, split_reason, optimal, next_best, bound, 0

    def route(self, pol: Any, lat: float, lon: float, pickup_loc: int, skus, qtys, need_cap: int, max_km: float,
              excluded, max_shipments: int, hold: bool) -> tuple:
        n_lines = len(skus)
        dest = self.xyz[pickup_loc] if pickup_loc >= 0 else unit_vector(lat, lon)
        q = {"pickup": pickup_loc, "need_cap": need_cap, "max_km": max_km, "excluded": set(excluded)}
        max_ship = max(1, min(max_shipments, MAX_SHIPMENTS))
        fewest = getattr(pol, "plan_objective", "cheapest") == "fewest_shipments"
        km_of = [chord_sq_to_km(chord_sq(self.xyz[loc], dest)) for loc in range(self.n)]
        eligible = [loc for loc in range(self.n) if self._eligible(q, loc, km_of[loc])]
        singles = self._singles(pol, eligible, km_of, skus, qtys)
        best = singles[:N_KEEP]
        can_split = max_ship > 1
        exact = can_split and 2 <= n_lines <= EXACT_LINES and getattr(pol, "exact_plans", True)
        shortcut = 2.0 * self.min_fixed + pol.split_penalty
        whole = list(qtys)
        plan: list[tuple] = []
        remaining = list(qtys)
        total = 0.0
        split_reason = 0
        optimal = False
        next_best = math.inf
        bound = 0.0
        status = 0
        if best and (not can_split or fewest or best[0][0] <= shortcut):
            cost, loc, km, costs = best[0]
            plan, remaining, total = [(loc, km, costs, whole)], [0] * n_lines, cost
            optimal, bound = True, cost
            next_best = best[1][0] if len(best) > 1 else math.inf
        elif not exact:
            plan, remaining, total = self._greedy(pol, eligible, km_of, skus, qtys, max_ship,
                                                  best[0][0] if best else math.inf)
            complete = bool(plan) and not any(remaining)
            if complete and (not best or (len(plan) > 1 and total < best[0][0])):
                split_reason = 2 if best else 1
                next_best = best[0][0] if best else math.inf
                bound = self._line_bound(pol, eligible, km_of, skus)
            elif best:
                next_best = total if complete and len(plan) > 1 else (best[1][0] if len(best) > 1 else math.inf)
                cost, loc, km, costs = best[0]
                plan, remaining, total = [(loc, km, costs, whole)], [0] * n_lines, cost
                optimal = n_lines == 1
                bound = cost if optimal else self._line_bound(pol, eligible, km_of, skus)
            else:
                status = 1
        else:
            plan, remaining, total, split_reason, optimal, next_best, bound, status = self._exact(
                pol, eligible, km_of, skus, qtys, max_ship, fewest)
        covered = tuple(qty - r for qty, r in zip(qtys, remaining))
        shipments = []
        if status == 0:
            holds = []
            for loc, km, costs, takes in plan:
                cells = tuple(self.ledger.index.get((loc, s), -1) if t else -1 for s, t in zip(skus, takes))
                holds.append(cells)
                shipments.append((loc, km, tuple(costs[:5]), tuple(takes), cells if hold else None))
            if hold:
                held_cells = [c for hs, p in zip(holds, plan) for c, t in zip(hs, p[3]) if t]
                qty = [t for p in plan for t in p[3] if t]
                if self.ledger.change_holds(held_cells, qty, 0) != ST_OK:
                    return (2, (), 0.0, covered, 0, (0,) * 6, (), 0, 0, False, None, 0.0)
                for p in plan:
                    self.ledger.held_shipments[p[0]] += 1
        chosen = {p[0] for p in plan} if status == 0 else set()
        runners = tuple((loc, cost, km) for cost, loc, km, _ in best if loc not in chosen)
        return (status, tuple(shipments), total if status == 0 else 0.0, covered, len(eligible), (0,) * 6,
                runners, 0, split_reason if status == 0 else 0, optimal if status == 0 else False,
                next_best if status == 0 and next_best < math.inf else None, bound if status == 0 else 0.0)

    def nearest_filling(self, lat: float, lon: float, skus, qtys, k: int, radius_km: float,
                        need_cap: int) -> list[tuple[int, float]]:
        dest = unit_vector(lat, lon)
        half = radius_km / (2.0 * EARTH_RADIUS_KM)
        radius_c2 = (2.0 * math.sin(half)) ** 2 if half < math.pi / 2 else 4.0
        found = []
        for loc in range(self.n):
            c2 = chord_sq(self.xyz[loc], dest)
            if c2 > radius_c2 or not self.is_open[loc] or (self.caps[loc] & need_cap) != need_cap:
                continue
            if all(self._avail(loc, s) >= qty for s, qty in zip(skus, qtys)):
                found.append((c2, loc))
        found.sort()
        return [(loc, chord_sq_to_km(c2)) for c2, loc in found[:k]]
