"""Scenarios: every knob of a peak simulation in one validated, frozen value, and the named presets.

A :class:`Scenario` says what the world looks like (stores on real cities,
their capacity, stock and safety stock, prices), how customers behave (how
many orders, when they arrive, how many cancel, how many carry a coupon) and
how the operation runs (store picking hours, how fast stores answer a new
shipment and how often they refuse one, the carrier cut-off, replenishment,
how often the batch policies optimise, how revenue is attributed). It is plain data, so a sweep can ship it to another
process and a report can write it back out as JSON.

Examples
--------
>>> from pyomni.sim.scenario import preset
>>> s = preset("small", stores=30)
>>> s.stores, s.name
(30, 'small')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import errors

__all__ = ["Scenario", "PRESETS", "preset", "TUNABLE_FIELDS", "ATTRIBUTIONS"]

#: Attribution rules a scenario may credit revenue by (:mod:`pyomni.settlement`): ``fulfiller`` --
#: FULFILLER_TAKES_ALL, ``split-361`` -- SPLIT_361 (30 % selling channel, 60 % fulfilling store, 10 % home
#: store), ``regional`` -- REGIONAL with each province's best-stocked store as its home store.
ATTRIBUTIONS = ("fulfiller", "split-361", "regional")

#: Relative order intake by hour of day on Double 11 (Singles' Day): the
#: midnight spike when the sale opens, a trough from 03:00 to 07:00, a steady
#: day and an evening peak before the sale closes. Shares, not counts.
DOUBLE11_PROFILE: tuple[float, ...] = (
    9.0, 5.0, 2.4, 1.0, 0.6, 0.5, 0.6, 1.0,   # 00-07: the spike, then the night trough
    1.8, 2.5, 3.0, 3.0, 3.2, 3.0, 2.8, 2.8,   # 08-15: the day
    2.8, 3.0, 3.4, 4.0, 5.0, 5.5, 4.8, 3.5,   # 16-23: the evening peak
)


@dataclass(frozen=True)
class Scenario:
    """One peak to simulate.

    Parameters
    ----------
    name : str
        Label shown in reports.
    stores, warehouses, skus : int
        Size of the demo network on real Chinese cities (:func:`pyomni.demo_network`).
    ship_from_store : int, optional
        How many stores may ship online orders (the rest only serve walk-in
        and pickup customers); ``None`` = every store.
    capacity : int, optional
        Online orders (shipments) per day each ship-from-store store can
        pick; ``None`` keeps the demo network's 40--300 per store.
    warehouse_capacity : int
        Shipments per day each warehouse can pick (they pick round the clock).
    safety : int, optional
        Safety units held back in every store cell for walk-in customers;
        ``None`` keeps the demo's (one unit where a store holds three or more).
    density : float
        Share of (store, SKU) cells that hold stock (:func:`pyomni.demo_stock`).
    stock_multiplier : float
        Opening quantities of the demo stock times this (rounded up): brands
        stock up for a peak.
    orders : int
        Orders arriving over ``demand_hours``.
    max_lines : int
        Most lines per order.
    profile : tuple of 24 floats
        Relative intake by hour of day (repeated for every day of demand).
    hours : int
        Simulated horizon in hours, from 00:00 of the first day.
    demand_hours : int
        Orders arrive during the first ``demand_hours`` hours.
    step_minutes : int
        Length of one simulation step; must divide 60.
    store_hours : (int, int)
        Stores pick from ``open`` to ``close`` o'clock (``close`` up to 24).
    cutoff_hour : int
        Orders that arrive at or after this hour of day are released for
        picking only when stores open the next day (the carrier has left).
    replenish_hours : tuple of int
        Hours of day at which stores receive a replenishment.
    replenish_share : float
        Share of the units a store shipped since its last replenishment that
        the next one brings back (0 = no replenishment).
    cancel_rate : float
        Share of orders the customer cancels; a cancellation only takes
        effect before the order is picked.
    cancel_mean_hours : float
        Mean delay from arrival to a customer's cancellation (exponential).
    micro_batch_minutes : int
        The ``micro_batch`` policy optimises the backlog this often.
    batch_hours : tuple of int
        Hours of day at which the ``batch`` policy optimises the whole backlog.
    candidates : int
        Candidate locations per order for the optimiser.
    piece_orders : int
        Orders per piece when the optimiser decomposes a backlog of
        multi-line orders. Pieces share contested stock and capacity in
        proportion to demand, which costs more the smaller they are
        (measured on a contended 100-store peak: pieces of 1,000 orders
        planned 12 % above greedy routing, pieces of 4,000 7 % below), while
        SCIP needs about 15 s to prove a piece of 4,000 optimal (see
        ``time_limit_s``).
    unfilled_penalty : float
        Cost the optimiser puts on leaving an order unfilled; high, because an
        order the network can serve must be served.
    time_limit_s : float
        Time limit of each optimiser piece (and of its repair solve). At 5 s
        SCIP returned, for a piece of 3,880 orders, an incumbent 88 % above
        greedy routing (or, for larger ones, none); at 30 s it proved the
        optimum in 15 s. A round never applies a plan worse than greedy
        routing's of the same backlog (see :mod:`pyomni.sim.policies`).
    answer_minutes : float
        Median time a store takes to answer (accept or reject) a new
        shipment, in minutes of its opening hours. Each store's own median is
        drawn once, lognormal around this; each shipment's delay is drawn
        lognormal around its store's median. 0: stores answer at once (when
        they next open). Warehouses always answer at once, through their
        warehouse system, and take every shipment.
    reject_share : float
        Share of a store's shipments it rejects (reason NOT_FOUND, NO_STAFF,
        DAMAGED or OVER_CAPACITY, drawn with fixed weights); the engine
        re-routes the lines away from it.
    no_answer_share : float
        Share of a store's shipments it never answers: the engine's answer
        limit times them out and re-routes them. (A drawn delay past the
        limit times out as well.)
    answer_limit_minutes : float
        The engine's answer limit (:class:`pyomni.fulfilment.StoreRules`
        ``answer_s``), in minutes of opening hours.
    backorder_hours : float
        How long the brand keeps an order open that no plan can serve (the
        stock is in the network, but no plan within the routing policy's
        limits reaches it: parcels, distance, capability, picking capacity).
        Such an order is retried whenever capacity or stock changes (the
        batch policies: every round); once it is this old and a quote still
        finds no plan, the order ends STOCKOUT, the customer refunded, with
        the router's reason. An order short of stock in the whole network
        ends STOCKOUT at once.
    attribution : str
        The rule that credits revenue (one of :data:`ATTRIBUTIONS`).
    coupon_share : float
        Share of orders with an e-coupon worth 5--15 % of the order's price.
    seed : int
        Seed of every random draw; the same scenario gives the same run.
    """

    name: str = "custom"
    stores: int = 400
    warehouses: int = 4
    skus: int = 2_000
    ship_from_store: int | None = None
    capacity: int | None = None
    warehouse_capacity: int = 3_000
    safety: int | None = None
    density: float = 0.05
    stock_multiplier: float = 3.0
    orders: int = 60_000
    max_lines: int = 3
    profile: tuple[float, ...] = DOUBLE11_PROFILE
    hours: int = 60
    demand_hours: int = 24
    step_minutes: int = 15
    store_hours: tuple[int, int] = (8, 23)
    cutoff_hour: int = 20
    replenish_hours: tuple[int, ...] = (6,)
    replenish_share: float = 0.5
    cancel_rate: float = 0.03
    cancel_mean_hours: float = 2.0
    micro_batch_minutes: int = 60
    batch_hours: tuple[int, ...] = (7, 19)
    candidates: int = 8
    piece_orders: int = 4_000
    unfilled_penalty: float = 500.0
    time_limit_s: float = 30.0
    answer_minutes: float = 4.0
    reject_share: float = 0.03
    no_answer_share: float = 0.02
    answer_limit_minutes: float = 15.0
    backorder_hours: float = 36.0
    attribution: str = "split-361"
    coupon_share: float = 0.2
    seed: int = 7

    def __post_init__(self) -> None:
        _check_int(self.stores, "stores", 1, 100_000)
        _check_int(self.warehouses, "warehouses", 0, 200)
        _check_int(self.skus, "skus", 1, 1_000_000)
        if self.ship_from_store is not None:
            _check_int(self.ship_from_store, "ship_from_store", 0, self.stores)
        if self.capacity is not None:
            _check_int(self.capacity, "capacity", 1, 1_000_000)
        _check_int(self.warehouse_capacity, "warehouse_capacity", 1, 10_000_000)
        if self.safety is not None:
            _check_int(self.safety, "safety", 0, 1_000)
        _check_float(self.density, "density", 0.0, 1.0, low_open=True)
        _check_float(self.stock_multiplier, "stock_multiplier", 0.0, 1_000.0, low_open=True)
        _check_int(self.orders, "orders", 1, 50_000_000)
        _check_int(self.max_lines, "max_lines", 1, 16)
        if (not isinstance(self.profile, tuple) or len(self.profile) != 24
                or not all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in self.profile)
                or sum(self.profile) <= 0):
            raise errors.InvalidArgument("profile must be 24 finite weights >= 0 with a positive sum", field="profile")
        _check_int(self.hours, "hours", 1, 24 * 60)
        _check_int(self.demand_hours, "demand_hours", 1, self.hours)
        _check_int(self.step_minutes, "step_minutes", 1, 60)
        if 60 % self.step_minutes:
            raise errors.InvalidArgument(f"step_minutes must divide 60, got {self.step_minutes}", field="step_minutes")
        if (not isinstance(self.store_hours, tuple) or len(self.store_hours) != 2
                or not all(_is_int(h) for h in self.store_hours)
                or not 0 <= self.store_hours[0] < self.store_hours[1] <= 24):
            raise errors.InvalidArgument("store_hours must be (open, close) with 0 <= open < close <= 24",
                                         field="store_hours")
        _check_int(self.cutoff_hour, "cutoff_hour", 1, 24)
        _check_hours(self.replenish_hours, "replenish_hours")
        _check_float(self.replenish_share, "replenish_share", 0.0, 1.0)
        _check_float(self.cancel_rate, "cancel_rate", 0.0, 1.0)
        _check_float(self.cancel_mean_hours, "cancel_mean_hours", 0.0, 1e4, low_open=True)
        _check_int(self.micro_batch_minutes, "micro_batch_minutes", self.step_minutes, 24 * 60)
        if self.micro_batch_minutes % self.step_minutes:
            raise errors.InvalidArgument("micro_batch_minutes must be a multiple of step_minutes",
                                         field="micro_batch_minutes")
        _check_hours(self.batch_hours, "batch_hours")
        if not self.batch_hours:
            raise errors.InvalidArgument("batch_hours must name at least one hour", field="batch_hours")
        _check_int(self.candidates, "candidates", 1, 64)
        _check_int(self.piece_orders, "piece_orders", 1, 10_000_000)
        _check_float(self.unfilled_penalty, "unfilled_penalty", 0.0, 1e9, low_open=True)
        _check_float(self.time_limit_s, "time_limit_s", 0.0, 86_400.0, low_open=True)
        _check_float(self.answer_minutes, "answer_minutes", 0.0, 1_440.0)
        _check_float(self.reject_share, "reject_share", 0.0, 1.0)
        _check_float(self.no_answer_share, "no_answer_share", 0.0, 1.0)
        if self.reject_share + self.no_answer_share > 1.0:
            raise errors.InvalidArgument(f"reject_share + no_answer_share must be at most 1, got "
                                         f"{self.reject_share} + {self.no_answer_share}", field="no_answer_share")
        _check_float(self.answer_limit_minutes, "answer_limit_minutes", 0.0, 1_440.0, low_open=True)
        _check_float(self.backorder_hours, "backorder_hours", 0.0, 1e5, low_open=True)
        if self.attribution not in ATTRIBUTIONS:
            raise errors.InvalidArgument(f"attribution must be one of {', '.join(ATTRIBUTIONS)}, got "
                                         f"{self.attribution!r}", field="attribution")
        _check_float(self.coupon_share, "coupon_share", 0.0, 1.0)
        _check_int(self.seed, "seed", 0, 2**63 - 1)
        if not isinstance(self.name, str) or not self.name:
            raise errors.InvalidArgument("name must be a non-empty string", field="name")

    @property
    def steps(self) -> int:
        """Number of simulation steps in the horizon."""
        return self.hours * 60 // self.step_minutes

    @property
    def shipping_stores(self) -> int:
        """Stores allowed to ship online orders."""
        return self.stores if self.ship_from_store is None else self.ship_from_store

    def replace(self, **changes: Any) -> Scenario:
        """A copy with some fields changed (validated again).

        Raises
        ------
        pyomni.errors.InvalidArgument
            An unknown field, or a value out of range.

        Examples
        --------
        >>> preset("small").replace(orders=100).orders
        100
        """
        known = {f.name for f in dataclasses.fields(self) if not f.name.startswith("_")}
        for key in changes:
            if key not in known:
                raise errors.InvalidArgument(f"unknown scenario field {key!r}", field=key)
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The public fields as plain JSON-ready values (tuples become lists).

        Examples
        --------
        >>> preset("small").as_dict()["name"]
        'small'
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


#: Scenario fields a sweep may vary (numbers only), with their types.
TUNABLE_FIELDS: Mapping[str, type] = {
    "stores": int, "warehouses": int, "skus": int, "ship_from_store": int, "capacity": int,
    "warehouse_capacity": int, "safety": int, "density": float, "stock_multiplier": float, "orders": int,
    "max_lines": int,
    "hours": int, "demand_hours": int, "step_minutes": int, "cutoff_hour": int, "replenish_share": float,
    "cancel_rate": float, "cancel_mean_hours": float, "micro_batch_minutes": int, "candidates": int,
    "piece_orders": int, "unfilled_penalty": float, "time_limit_s": float, "answer_minutes": float,
    "reject_share": float, "no_answer_share": float, "answer_limit_minutes": float, "backorder_hours": float,
    "coupon_share": float, "seed": int,
}

def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(value: object, name: str, low: int, high: int) -> None:
    if not _is_int(value):
        raise errors.InvalidArgument(f"{name} must be an integer, got {value!r}", field=name)
    if not low <= value <= high:  # type: ignore[operator]
        raise errors.InvalidArgument(f"{name} must be between {low} and {high}, got {value}", field=name)


def _check_float(value: object, name: str, low: float, high: float, *, low_open: bool = False) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise errors.InvalidArgument(f"{name} must be a finite number, got {value!r}", field=name)
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise errors.InvalidArgument(f"{name} must be in {bracket}{low}, {high}], got {value}", field=name)


def _check_hours(hours: object, name: str) -> None:
    if not isinstance(hours, tuple) or not all(_is_int(h) and 0 <= h <= 23 for h in hours):  # type: ignore[operator]
        raise errors.InvalidArgument(f"{name} must be a tuple of hours of day 0..23", field=name)


#: Named starting points. ``double11`` is a 400-store brand on real Chinese
#: cities on Singles' Day: 60,000 orders in 24 hours against about 68,000
#: store shipments a day plus four regional warehouses of 3,000 each, so the
#: network runs near its limit and the policies' differences show. Both run
#: store operations: stores answer in about four minutes, 3 % of shipments
#: are rejected and 2 % never answered (re-routed after the 15-minute
#: limit), revenue is split 30/60/10 and a fifth of the orders carry a
#: coupon. ``small`` is the same story scaled down for tests (a few seconds
#: per policy).
PRESETS: Mapping[str, Scenario] = {
    "double11": Scenario(name="double11"),
    "small": Scenario(name="small", stores=40, warehouses=2, skus=300, orders=2_000, density=0.08,
                      warehouse_capacity=300, hours=48, time_limit_s=2.0),
}


def preset(name: str, **overrides: Any) -> Scenario:
    """A named preset, with some fields overridden.

    Parameters
    ----------
    name : str
        ``"double11"`` or ``"small"`` (see :data:`PRESETS`).
    **overrides
        Scenario fields to change; ``None`` values are ignored, so CLI options
        that were not given can be passed straight through.

    Raises
    ------
    pyomni.errors.InvalidArgument
        Unknown preset (``field="preset"``), unknown field, or a bad value.

    Examples
    --------
    >>> preset("double11", stores=300).stores
    300
    """
    try:
        base = PRESETS[name]
    except (KeyError, TypeError):
        raise errors.InvalidArgument(f"unknown preset {name!r}; known: {', '.join(PRESETS)}",
                                     field="preset") from None
    changes = {k: v for k, v in overrides.items() if v is not None}
    return base.replace(**changes) if changes else base
