"""What an optimiser returns: the plan, its quality (status, objective, bound, gap) and how to act on it.

Examples
--------
>>> from pyomni.optimize.result import SolveStatus
>>> SolveStatus.FEASIBLE.is_optimal
False
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import errors
from ..model import Allocation, Line, Order

__all__ = ["SolveStatus", "OptimizeResult", "ASSIGNMENT_SCHEMA", "UNFILLED_SCHEMA"]

#: Columns of :attr:`OptimizeResult.assignments`.
ASSIGNMENT_SCHEMA = pa.schema([
    pa.field("order_id", pa.string()),
    pa.field("sku", pa.string()),
    pa.field("location", pa.string()),
    pa.field("qty", pa.int64()),
    pa.field("distance_km", pa.float64()),
    pa.field("cost", pa.float64()),
])

#: Columns of :attr:`OptimizeResult.unfilled`.
UNFILLED_SCHEMA = pa.schema([
    pa.field("order_id", pa.string()),
    pa.field("sku", pa.string()),
    pa.field("qty", pa.int64()),
])


class SolveStatus(enum.Enum):
    """How good a solver's answer is known to be.

    ``OPTIMAL``: proven best (gap 0). ``FEASIBLE``: a valid plan, not proven
    best -- the gap says how far it may be. ``INFEASIBLE``: proven that no plan
    exists. ``UNKNOWN``: the time limit came before any plan.

    Examples
    --------
    >>> SolveStatus.OPTIMAL.is_optimal, SolveStatus.UNKNOWN.has_solution
    (True, False)
    """

    OPTIMAL = "OPTIMAL"
    FEASIBLE = "FEASIBLE"
    INFEASIBLE = "INFEASIBLE"
    UNKNOWN = "UNKNOWN"

    @property
    def is_optimal(self) -> bool:
        """True only for a proven optimum."""
        return self is SolveStatus.OPTIMAL

    @property
    def has_solution(self) -> bool:
        """True when a plan comes with the answer."""
        return self in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)


def relative_gap(objective: float, bound: float) -> float:
    """``(objective - bound) / max(|objective|, 1e-9)``, 0 when they agree, nan when either is unknown.

    Examples
    --------
    >>> relative_gap(101.0, 100.0) == 1 / 101
    True
    """
    if not (math.isfinite(objective) and math.isfinite(bound)):
        return math.nan
    diff = objective - bound
    if abs(diff) <= 1e-9 * max(1.0, abs(objective)):
        return 0.0
    return diff / max(abs(objective), 1e-9)


@dataclass(frozen=True)
class OptimizeResult:
    """A batch plan for a backlog and what is known about its quality.

    Attributes
    ----------
    assignments : pyarrow.Table
        One row per (order, SKU, location): ``order_id, sku, location, qty,
        distance_km, cost``. ``cost`` is the row's share of the order's cost:
        each shipment's cost (fixed, distance, load, priority, and the split
        penalty for every shipment after an order's first) spread evenly over
        the shipment's rows, plus the row's own low-stock term. An order's rows
        sum to its cost.
    unfilled : pyarrow.Table
        ``order_id, sku, qty`` of the lines of orders left unfilled (orders
        are filled whole or not at all, as the engine does).
    status : SolveStatus
        OPTIMAL only when proven for the whole problem solved.
    objective : float
        Total cost of the plan: shipments + unfilled penalties (cost units,
        at the solver's integer resolution -- see ``stats["cost_scale"]``).
    best_bound : float
        A lower bound on the objective (``stats["bound_scope"]`` says of which problem).
    gap : float
        ``(objective - best_bound) / objective``; nan when there is no bound.
    wall_time_s : float
        Wall-clock seconds, validation to answer.
    stats : dict
        Sizes and per-piece solver details (pieces, arcs, solver, status, time ...).

    Examples
    --------
    >>> import pyomni
    >>> from pyomni.optimize import optimize_backlog
    >>> net = pyomni.demo_network(stores=20, warehouses=1, skus=5, seed=1)
    >>> eng = pyomni.Engine(net)
    >>> _ = eng.apply_stock_events(pyomni.demo_stock(net, seed=1))
    >>> orders = {"order_id": ["a", "b"], "sku": ["SKU-000000", "SKU-000001"], "qty": [1, 1],
    ...           "lat": [31.2, 39.9], "lon": [121.5, 116.4]}
    >>> result = optimize_backlog(pa.table(orders), net, eng, time_limit_s=5)
    >>> result.status.name, result.summary()["fill_rate"]
    ('OPTIMAL', 1.0)
    """

    assignments: pa.Table
    unfilled: pa.Table
    status: SolveStatus
    objective: float
    best_bound: float
    gap: float
    wall_time_s: float
    stats: dict[str, Any] = field(default_factory=dict)
    # the validated backlog (order_id, lat, lon, max_splits per order) that apply() rebuilds orders from
    _orders: pa.Table | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict[str, float]:
        """Headline figures of the plan.

        Returns
        -------
        dict
            ``orders``, ``filled_orders``, ``fill_rate`` (share of orders filled),
            ``unit_fill_rate``, ``split_rate`` (share of filled orders shipped in
            more than one parcel), ``shipments``, ``mean_distance_km`` and
            ``p95_distance_km`` (per shipment), ``total_cost`` (sum of the
            ``cost`` column, without unfilled penalties), ``objective``, ``gap``.

        Examples
        --------
        >>> sorted(OptimizeResult(ASSIGNMENT_SCHEMA.empty_table(), UNFILLED_SCHEMA.empty_table(),
        ...        SolveStatus.OPTIMAL, 0.0, 0.0, 0.0, 0.0).summary())[:3]
        ['fill_rate', 'filled_orders', 'gap']
        """
        a = self.assignments
        filled_ids = pc.unique(a.column("order_id")) if a.num_rows else pa.array([], pa.string())
        unfilled_ids = pc.unique(self.unfilled.column("order_id")) if self.unfilled.num_rows else pa.array(
            [], pa.string())
        n_filled, n_unfilled = len(filled_ids), len(unfilled_ids)
        n_orders = n_filled + n_unfilled
        units_filled = int(pc.sum(a.column("qty")).as_py() or 0) if a.num_rows else 0
        units_unfilled = int(pc.sum(self.unfilled.column("qty")).as_py() or 0) if self.unfilled.num_rows else 0
        if a.num_rows:
            ships = a.group_by(["order_id", "location"]).aggregate([("distance_km", "max")])
            km = ships.column("distance_km_max").to_numpy()
            per_order = ships.group_by("order_id").aggregate([("location", "count")])
            split = float(np.mean(per_order.column("location_count").to_numpy() > 1))
            total = float(pc.sum(a.column("cost")).as_py())
            mean_km, p95_km, n_ships = float(km.mean()), float(np.percentile(km, 95)), len(km)
        else:
            split, total, mean_km, p95_km, n_ships = 0.0, 0.0, math.nan, math.nan, 0
        return {
            "orders": float(n_orders),
            "filled_orders": float(n_filled),
            "fill_rate": n_filled / n_orders if n_orders else 1.0,
            "unit_fill_rate": units_filled / (units_filled + units_unfilled) if units_filled + units_unfilled
            else 1.0,
            "split_rate": split,
            "shipments": float(n_ships),
            "mean_distance_km": mean_km,
            "p95_distance_km": p95_km,
            "total_cost": total,
            "objective": self.objective,
            "gap": self.gap,
        }

    def apply(self, engine: Any, *, request_id_prefix: str = "plan") -> list[Allocation]:
        """Hold the plan's stock in ``engine``: one reservation per filled order.

        Each order becomes :meth:`pyomni.Engine.reserve_plan` with request id
        ``f"{request_id_prefix}-{order_id}"``, holding exactly the planned
        units. The whole plan is held or none of it: if one order's units are
        no longer there (stock moved since the snapshot), every reservation
        made by this call is released and the error is raised.

        Parameters
        ----------
        engine : pyomni.Engine
            The engine to hold stock in (normally the one the snapshot came from).
        request_id_prefix : str
            Prefix of the per-order request ids (a retry of the same call is idempotent).

        Returns
        -------
        list of Allocation
            ALLOCATED, one per filled order, in the order of ``assignments``.

        Raises
        ------
        pyomni.errors.InsufficientStock, pyomni.errors.CapabilityMissing, ...
            An order's plan cannot be held; nothing stays held.

        Examples
        --------
        >>> import pyomni
        >>> from pyomni.optimize import optimize_backlog
        >>> net = pyomni.demo_network(stores=20, warehouses=1, skus=5, seed=1)
        >>> eng = pyomni.Engine(net)
        >>> _ = eng.apply_stock_events(pyomni.demo_stock(net, seed=1))
        >>> orders = pa.table({"order_id": ["a"], "sku": ["SKU-000000"], "qty": [1], "lat": [31.2], "lon": [121.5]})
        >>> [a.status.name for a in optimize_backlog(orders, net, eng).apply(eng)]
        ['ALLOCATED']
        """
        from ..engine import Engine

        if not isinstance(engine, Engine):
            raise errors.InvalidArgument("engine must be a pyomni.Engine", field="engine")
        if not isinstance(request_id_prefix, str) or not request_id_prefix:
            raise errors.InvalidArgument("request_id_prefix must be a non-empty string", field="request_id_prefix")
        if self._orders is None:
            raise errors.InvalidArgument("this result carries no backlog to apply", field="result")
        meta = self._orders
        where = {oid: i for i, oid in enumerate(meta.column("order_id").to_pylist())}
        lat = meta.column("lat").to_numpy()
        lon = meta.column("lon").to_numpy()
        splits = meta.column("max_splits").to_numpy()
        plans: dict[str, dict[str, list[tuple[str, int]]]] = {}
        for oid, sku, loc, qty in zip(*(self.assignments.column(c).to_pylist()
                                        for c in ("order_id", "sku", "location", "qty")), strict=True):
            plans.setdefault(oid, {}).setdefault(loc, []).append((sku, int(qty)))
        made: list[Allocation] = []
        try:
            for oid, by_loc in plans.items():
                i = where[oid]
                lines: list[tuple[str, int]] = []
                for rows in by_loc.values():
                    lines.extend(rows)
                merged: dict[str, int] = {}
                for sku, qty in lines:
                    merged[sku] = merged.get(sku, 0) + qty
                order = Order(oid, tuple(Line(sku, qty) for sku, qty in merged.items()),
                              destination=(float(lat[i]), float(lon[i])), max_splits=int(splits[i]))
                shipments: Sequence[tuple[str, Sequence[tuple[str, int]]]] = list(by_loc.items())
                made.append(engine.reserve_plan(order, shipments, request_id=f"{request_id_prefix}-{oid}"))
        except errors.PyomniError:
            for allocation in made:
                if allocation.reservation_id is not None:
                    engine.release(allocation.reservation_id)
            raise
        return made
