"""Routing policies: the named, versioned weights and limits of the cost model.

A policy is chosen per call (``engine.route_order(order, policy="express@1")``);
the engine keeps a registry of them. The cost of a shipment from location ``l``
carrying ``t_i`` units of each line ``i`` (``a_i`` available there) is::

    fixed_cost[l] (+ split_penalty for every shipment after the first)
    + cost_per_km * circuity * great_circle_km(l, destination)
    + low_stock_weight * sum(t_i / a_i)
    + load_weight * load[l] / daily_capacity[l]
    + priority_weight * priority[l]

Examples
--------
>>> from pyomni.policy import RoutingPolicy
>>> express = RoutingPolicy(name="express", cost_per_km=0.05, max_splits=1)
>>> express.key
'express@1'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from . import errors, validate
from .validate import MAX_QTY

__all__ = ["RoutingPolicy", "DEFAULT_POLICY", "ChannelRule", "PLAN_OBJECTIVES"]

_MAX_SHIPMENTS = 16
#: What a plan minimises: its cost, or its number of parcels and then its cost.
PLAN_OBJECTIVES = ("cheapest", "fewest_shipments")
_MAX_NAME_CHARS = 128
_MAX_VERSION = 2**31 - 1


def _plain(given: object, checked: float) -> float | int:
    """A checked number as it was given if that is a plain int or float, else as a float (NumPy scalars would
    not compare equal after a journal round trip)."""
    return given if type(given) is int or type(given) is float else checked  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """Weights and limits of the routing cost model.

    Parameters
    ----------
    name, version : str, int
        Identify the policy; ``key`` is ``"name@version"``.
    cost_per_km : float
        Cost per great-circle kilometre (times ``circuity`` for road distance).
    circuity : float
        Road distance / great-circle distance (>= 1).
    split_penalty : float
        Extra cost of each shipment after the first (customer experience, packaging).
    low_stock_weight : float
        Penalty for taking a large share of a location's available units.
    load_weight : float
        Penalty per unit of a location's load / daily capacity.
    priority_weight : float
        Penalty per priority step (0 = most preferred location).
    max_splits : int
        Most shipments per order (1 = never split), unless the order says otherwise.
    max_distance_km : float
        Farthest fulfilling location (``inf`` = anywhere).
    same_day_max_km : float
        Farthest location for same-day orders.
    plan_objective : str
        ``"cheapest"``: the plan of least total cost (a split wins only when strictly cheaper);
        ``"fewest_shipments"``: the fewest parcels, then the cheapest such plan.
    exact_plans : bool
        Search orders of 2 to 6 lines exactly: the cheapest plan that sends each line whole from one
        location (or the greedy split where it splits a line's units and costs less), proven, with the
        next-best plan's cost in the explanation. ``False``: the single location unless the greedy split
        (cheapest cost per unit covered, one parcel at a time) is strictly cheaper -- faster on split
        orders, never cheaper.
    """

    name: str = "default"
    version: int = 1
    cost_per_km: float = 0.03
    circuity: float = 1.3
    split_penalty: float = 4.0
    low_stock_weight: float = 2.0
    load_weight: float = 3.0
    priority_weight: float = 1.0
    max_splits: int = 3
    max_distance_km: float = math.inf
    same_day_max_km: float = 30.0
    plan_objective: str = "cheapest"
    exact_plans: bool = True
    _native: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        name = validate.identifier(self.name, "name", max_chars=_MAX_NAME_CHARS)
        if "@" in name:
            raise errors.InvalidArgument(f"policy name must not contain '@', got {validate.shown(name)}", field="name")
        set_(self, "name", name)
        set_(self, "version", validate.integer(self.version, "version", low=1, high=_MAX_VERSION))
        for f in ("cost_per_km", "split_penalty", "low_stock_weight", "load_weight", "priority_weight"):
            set_(self, f, _plain(getattr(self, f), validate.number(getattr(self, f), f, low=0.0)))
        set_(self, "circuity", _plain(self.circuity, validate.number(self.circuity, "circuity", low=1.0)))
        for f in ("max_distance_km", "same_day_max_km"):
            v = getattr(self, f)
            set_(self, f, _plain(v, validate.number(v, f, low=0.0, low_open=True, allow_inf=True)))
        set_(self, "max_splits", validate.integer(self.max_splits, "max_splits", low=1, high=_MAX_SHIPMENTS))
        if type(self.exact_plans) is not bool:
            raise errors.InvalidArgument(f"exact_plans must be a bool, got {validate.shown(self.exact_plans)}",
                                         field="exact_plans")
        if self.plan_objective not in PLAN_OBJECTIVES:
            raise errors.InvalidArgument(f"plan_objective must be one of {', '.join(PLAN_OBJECTIVES)}, "
                                         f"got {validate.shown(self.plan_objective)}", field="plan_objective")

    @property
    def key(self) -> str:
        """Registry key, ``"name@version"``."""
        return f"{self.name}@{self.version}"

    def as_dict(self) -> dict[str, object]:
        """The policy's public fields."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


#: The policy used when a call names none.
DEFAULT_POLICY = RoutingPolicy()


@dataclass(frozen=True, slots=True)
class ChannelRule:
    """What share of network stock a sales channel may sell.

    A channel with a rule may sell at most ``floor(share * network_available) - buffer``
    units of a SKU in one order; channels without a rule may sell everything
    available.

    Examples
    --------
    >>> ChannelRule(share=0.3, buffer=2).limit(100)
    28
    """

    share: float = 1.0
    buffer: int = 0

    def __post_init__(self) -> None:
        share = validate.number(self.share, "share", low=0.0, high=1.0, low_open=True)
        object.__setattr__(self, "share", _plain(self.share, share))
        object.__setattr__(self, "buffer", validate.integer(self.buffer, "buffer", low=0, high=MAX_QTY))

    def limit(self, network_available: int) -> int:
        """Units the channel may sell given the network's available-to-sell."""
        return max(0, math.floor(self.share * network_available) - self.buffer)
