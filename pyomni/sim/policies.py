"""Allocation policies the simulation compares: when orders are decided, and by what.

* :class:`Greedy` -- every order is routed through :meth:`pyomni.Engine.route_order`
  the moment it arrives (the real-time path the service runs). An order the
  network could serve but no location has capacity for today waits and is
  retried when capacity or stock comes back (a new day, a replenishment).
* :class:`MicroBatch` -- orders wait for the next window of ``N`` minutes; the
  whole waiting backlog is then optimised jointly by
  :func:`pyomni.optimize.optimize_backlog` and the plan applied to the engine.
* :class:`Batch` -- the same joint optimisation, but of everything waiting, at a
  few set hours of the day.

Orders an optimiser plan leaves unfilled are offered to the real-time router
over what the plan left, and each round prices the router's plan of the whole
backlog (:func:`pyomni.optimize.greedy_backlog`, on the optimiser's cost
basis) and applies the cheaper, so a time-limited solve that found no plan, or
a poor one, cannot make a round worse than greedy routing; the solve records
say which plan each round applied (see :meth:`_Optimising.optimise`).

Both batch policies keep orders all-or-nothing, as the real-time router does:
a plan that covers only part of an order is released and the order waits for
the next round, unless the network has no shippable stock left for one of its
lines (a stock-out). ``pyomni.optimize`` is imported lazily, so the greedy
policy works without it.

Examples
--------
>>> make_policy("greedy").name
'greedy'
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

from .. import errors
from ..model import Allocation, AllocationStatus

if TYPE_CHECKING:
    from .simulation import Run

__all__ = ["Policy", "Greedy", "MicroBatch", "Batch", "POLICY_NAMES", "make_policy", "parse_policies"]

_DAY = 86_400.0
_HOUR = 3_600.0


class Policy(Protocol):
    """What the simulation asks of an allocation policy.

    ``on_arrivals`` is called with the orders that arrived in a step (in
    arrival order), ``on_step_end`` at the end of every step (at time
    ``now``), ``on_capacity_or_stock`` after a new day starts or stock is
    replenished.
    """

    name: str

    def on_arrivals(self, run: Run, orders: np.ndarray, now: float) -> None: ...

    def on_step_end(self, run: Run, now: float) -> None: ...

    def on_capacity_or_stock(self, run: Run, now: float) -> None: ...


class Greedy:
    """Route each order in real time through the engine as it arrives.

    Examples
    --------
    >>> Greedy().name
    'greedy'
    """

    name = "greedy"

    def on_arrivals(self, run: Run, orders: np.ndarray, now: float) -> None:
        for i in orders.tolist():
            run.now = float(run.world.arrival_s[i])  # each order is decided the moment it arrives
            self._route(run, i, run.now)

    def on_step_end(self, run: Run, now: float) -> None:
        return None  # decisions happen on arrival only

    def on_capacity_or_stock(self, run: Run, now: float) -> None:
        # Capacity frees only at a new day (confirmed shipments keep counting
        # until then) and stock only at a replenishment: retrying waiting orders
        # at any other time would only fail again.
        for i in list(run.waiting):
            self._route(run, i, now)

    @staticmethod
    def _route(run: Run, i: int, now: float) -> None:
        allocation = run.engine.route_order(run.world.orders[i], policy=run.routing_policy)
        if allocation.status is AllocationStatus.ALLOCATED:
            run.accept(i, allocation, now)
        elif run.is_stock_out(i):
            run.stock_out(i, now)
        else:
            run.wait(i)


class _Optimising(ABC):
    """Shared core of the batch policies: optimise the waiting backlog, apply the plan."""

    name = "optimising"

    def on_arrivals(self, run: Run, orders: np.ndarray, now: float) -> None:
        for i in orders.tolist():
            run.wait(i)

    def on_capacity_or_stock(self, run: Run, now: float) -> None:
        return None  # the next scheduled round sees the new capacity and stock

    def on_step_end(self, run: Run, now: float) -> None:
        if self._due(run, now) and run.waiting:
            self.optimise(run, now)

    @abstractmethod
    def _due(self, run: Run, now: float) -> bool:
        """Whether an optimising round runs at ``now`` (each policy's schedule)."""

    def optimise(self, run: Run, now: float) -> None:
        """Optimise every waiting order jointly and apply the plan to the engine.

        1. The optimiser plans the backlog; its plan is held in the engine.
        2. Orders it left unfilled -- a decomposed backlog's pieces share
           contested stock and capacity by demand, and each order looks at
           its K candidates only -- go to the real-time router's plan over
           what is left (:func:`pyomni.optimize.greedy_backlog` on the engine
           holding the plan), so they are not stranded until the next round.
        3. The result is priced on the optimiser's cost basis (snapshot cost
           model plus the unfilled penalty) and compared with the router's
           plan of the whole backlog on the same basis; if that is cheaper,
           the optimiser's holds are released and the router's plan applied.
           A round whose solvers found no plan within their time limit
           (status UNKNOWN) or a poor time-limited incumbent so never costs
           more than greedy routing of the same backlog.

        Each solve record says which plan was applied (``plan``) and what
        both candidates cost: ``optimiser_plan_objective`` (the optimiser's
        plan with the router's patch; inf without a plan) and
        ``greedy_objective``.
        """
        from ..optimize import greedy_backlog, optimize_backlog  # lazy: greedy runs without the optimiser
        from ..optimize.result import relative_gap

        s = run.world.scenario
        network = run.world.network
        backlog = list(run.waiting)
        started = time.perf_counter()
        table = run.backlog_table(backlog)
        result = optimize_backlog(table, network, run.engine, policy=run.routing_policy, capacity=None,
                                  candidates=s.candidates, unfilled_penalty=s.unfilled_penalty,
                                  time_limit_s=s.time_limit_s, workers=run.solver_workers, backend="local",
                                  progress=False, piece_orders=s.piece_orders)
        baseline = greedy_backlog(table, network, run.engine, policy=run.routing_policy, capacity=None,
                                  unfilled_penalty=s.unfilled_penalty)
        run.solve_count += 1
        prefix = f"{self.name}-{run.solve_count}"
        held: list[tuple[int, Allocation]] = []
        rejected = router_placed = 0
        combined = math.inf
        if result.status.has_solution:
            held, rejected = _hold(run, result, prefix)
            left = sorted(set(backlog) - {i for i, _ in held})
            combined = float(result.objective)
            if left:
                # the optimiser priced its unfilled orders at the penalty; the router's patch replaces that price
                unfilled = set(result.unfilled.column("order_id").to_pylist())
                units = run.world.units_ordered
                combined -= s.unfilled_penalty * float(sum(units[i] for i in left
                                                           if run.world.orders[i].id in unfilled))
                patch = greedy_backlog(run.backlog_table(left), network, run.engine, policy=run.routing_policy,
                                       capacity=None, unfilled_penalty=s.unfilled_penalty)
                combined += float(patch.objective)
                if combined <= baseline.objective:
                    patched, patch_rejected = _hold(run, patch, f"{prefix}-router")
                    held += patched
                    rejected += patch_rejected
                    router_placed = len(patched)
        if combined <= baseline.objective:
            plan, applied = ("optimiser+router" if router_placed else "optimiser"), combined
        else:
            for _, allocation in held:
                run.engine.release(allocation.reservation_id)  # type: ignore[arg-type]
            held, rejected = _hold(run, baseline, f"{prefix}-greedy")
            plan, applied = "greedy", float(baseline.objective)
        for i, allocation in held:
            run.accept(i, allocation, now)
        placed = {i for i, _ in held}
        stock_outs = 0
        for i in backlog:
            if i not in placed and run.is_stock_out(i):
                run.stock_out(i, now)
                stock_outs += 1
        record = _solve_record(result, now, len(backlog), len(placed), stock_outs, time.perf_counter() - started)
        # the plan applied against the bound of the whole round's candidate problem (the optimiser's cost basis)
        record.update(plan=plan, applied_objective=applied, applied_gap=relative_gap(applied, record["best_bound"]),
                      optimiser_plan_objective=combined,
                      greedy_objective=float(baseline.objective),
                      greedy_unfilled_lines=baseline.unfilled.num_rows, router_placed=router_placed,
                      rejected_by_engine=rejected)
        run.solves.append(record)


def _hold(run: Run, plan: Any, request_id_prefix: str) -> tuple[list[tuple[int, Allocation]], int]:
    """Hold ``plan`` in the engine; returns the orders it covers whole and how many it could not hold.

    Orders stay all-or-nothing, as the real-time router keeps them: a plan
    that covers only part of an order is not held. Each order's plan is held
    with :meth:`pyomni.Engine.reserve_plan` for the scenario's own order --
    with its prices and coupon, which the settlement needs and a plan's
    ``apply`` (which rebuilds orders from the backlog table) does not carry --
    under request id ``f"{request_id_prefix}-{order_id}"``, as ``apply`` would.
    One that the engine refuses (the stock moved since the plan was made)
    waits for the next round.
    """
    plans: dict[str, dict[str, list[tuple[str, int]]]] = {}
    assignments = plan.assignments
    for oid, sku, loc, qty in zip(*(assignments.column(c).to_pylist() for c in ("order_id", "sku", "location", "qty")),
                                  strict=True):
        plans.setdefault(oid, {}).setdefault(loc, []).append((sku, int(qty)))
    held: list[tuple[int, Allocation]] = []
    rejected = 0
    for oid, by_location in plans.items():
        i = run.order_index[oid]
        if not run.covers_lines(i, (line for lines in by_location.values() for line in lines)):
            rejected += 1
            continue
        try:
            allocation = run.engine.reserve_plan(run.world.orders[i], list(by_location.items()),
                                                 request_id=f"{request_id_prefix}-{oid}")
        except errors.PyomniError:
            rejected += 1
            continue
        if allocation.status is AllocationStatus.ALLOCATED:
            held.append((i, allocation))
        else:
            rejected += 1
    return held, rejected


class MicroBatch(_Optimising):
    """Optimise the waiting backlog every ``minutes`` (default: the scenario's ``micro_batch_minutes``).

    Examples
    --------
    >>> MicroBatch(15).minutes
    15
    """

    name = "micro_batch"

    def __init__(self, minutes: int | None = None) -> None:
        if minutes is not None and (not isinstance(minutes, int) or isinstance(minutes, bool) or minutes < 1):
            raise errors.InvalidArgument("minutes must be a positive integer", field="minutes")
        self.minutes = minutes

    def _due(self, run: Run, now: float) -> bool:
        minutes = self.minutes or run.world.scenario.micro_batch_minutes
        return round(now) % (minutes * 60) == 0


class Batch(_Optimising):
    """Optimise everything waiting at set hours of the day (default: the scenario's ``batch_hours``).

    Examples
    --------
    >>> Batch((6,)).hours
    (6,)
    """

    name = "batch"

    def __init__(self, hours: tuple[int, ...] | None = None) -> None:
        if hours is not None and (not isinstance(hours, tuple) or not hours
                                  or not all(isinstance(h, int) and 0 <= h <= 23 for h in hours)):
            raise errors.InvalidArgument("hours must be a non-empty tuple of hours 0..23", field="hours")
        self.hours = hours

    def _due(self, run: Run, now: float) -> bool:
        hours = self.hours or run.world.scenario.batch_hours
        seconds = round(now) % int(_DAY)
        return seconds % int(_HOUR) == 0 and seconds // int(_HOUR) in hours


#: Policy names the CLI and :func:`make_policy` accept.
POLICY_NAMES = ("greedy", "micro_batch", "batch")


def make_policy(name: str) -> Policy:
    """A fresh policy by name (``greedy``, ``micro_batch`` or ``batch``).

    Raises
    ------
    pyomni.errors.InvalidArgument
        An unknown name (``field="policies"``).

    Examples
    --------
    >>> make_policy("batch").name
    'batch'
    """
    if name == "greedy":
        return Greedy()
    if name == "micro_batch":
        return MicroBatch()
    if name == "batch":
        return Batch()
    raise errors.InvalidArgument(f"unknown policy {name!r}; known: {', '.join(POLICY_NAMES)}", field="policies")


def parse_policies(text: str) -> tuple[str, ...]:
    """Comma-separated policy names, checked and without repeats.

    Examples
    --------
    >>> parse_policies("greedy, batch")
    ('greedy', 'batch')
    """
    if not isinstance(text, str):
        raise errors.InvalidArgument("policies must be a comma-separated string", field="policies")
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise errors.InvalidArgument("name at least one policy", field="policies")
    for name in names:
        make_policy(name)
    return names


def _solve_record(result: Any, now: float, backlog: int, placed: int, stock_outs: int,
                  wall_time_s: float) -> dict[str, Any]:
    status = getattr(result.status, "name", str(result.status))
    unfilled = result.unfilled
    pieces = result.stats.get("piece_stats", [])
    return {
        "hour": now / _HOUR,
        "backlog": backlog,
        "placed": placed,
        "stock_outs": stock_outs,
        "unfilled_lines": unfilled.num_rows if isinstance(unfilled, pa.Table) else 0,
        "status": status,
        "objective": float(result.objective),
        "best_bound": float(result.best_bound),
        "gap": float(result.gap),
        "solver_wall_time_s": float(result.wall_time_s),
        "wall_time_s": wall_time_s,
        "pieces": len(pieces),
        "pieces_optimal": sum(p["status"] == "OPTIMAL" for p in pieces),
        "pieces_without_solution": sum(p["status"] not in ("OPTIMAL", "FEASIBLE") for p in pieces),
        "bound_scope": str(result.stats.get("bound_scope", "")),
    }
