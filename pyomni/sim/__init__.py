"""Peak simulations: replay a Double-11 day on the engine under a policy and measure what happens.

Architecture. A :class:`Scenario` (plain, validated data; presets in
:data:`PRESETS`) is drawn into a :class:`World` once -- a demo network on real
Chinese cities, its opening stock, and the day's orders with arrival,
release (cut-off) and cancellation times -- so every policy sees the same
customers. :func:`simulate` then steps a clock through the horizon with one
:class:`pyomni.Engine` as the single source of truth for stock: a policy
(:mod:`pyomni.sim.policies`: real-time ``greedy`` through ``route_order``, or
``micro_batch`` / ``batch`` through :func:`pyomni.optimize.optimize_backlog`)
decides, the engine holds the stock, stores answer each parcel in their own
time -- accepting it, rejecting it or staying silent until the engine's
answer limit re-routes it -- and pick what they accepted within their hourly
capacity, customers cancel, stores are replenished, and the engine settles
every shipped line among stores, channel and HQ by the scenario's
attribution rule. A :class:`SimulationResult` holds Arrow tables (orders,
parcels, hourly series, store load, settlement per party) and flat metrics;
:mod:`pyomni.sim.report` writes them as JSON, Parquet and an HTML report
with plots; :mod:`pyomni.sim.sweep` runs grids of what-if scenarios in
parallel processes or on Ray; :mod:`pyomni.sim.cli` adds ``pyomni simulate``
and ``pyomni sweep``.

Examples
--------
>>> from pyomni.sim import preset, simulate
>>> result = simulate(preset("small", orders=100, stores=10, hours=24), "greedy")
>>> result.metrics["policy"], result.metrics["orders"]
('greedy', 100)
"""

from .policies import POLICY_NAMES, Batch, Greedy, MicroBatch, make_policy, parse_policies
from .results import TERMINAL_STATES, OrderState, ParcelOutcome, SimulationResult
from .scenario import ATTRIBUTIONS, DOUBLE11_PROFILE, PRESETS, TUNABLE_FIELDS, Scenario, preset
from .simulation import compare_policies, simulate
from .world import World, build_world

__all__ = [
    "Scenario",
    "PRESETS",
    "TUNABLE_FIELDS",
    "DOUBLE11_PROFILE",
    "preset",
    "World",
    "build_world",
    "simulate",
    "compare_policies",
    "SimulationResult",
    "OrderState",
    "ParcelOutcome",
    "TERMINAL_STATES",
    "ATTRIBUTIONS",
    "Greedy",
    "MicroBatch",
    "Batch",
    "POLICY_NAMES",
    "make_policy",
    "parse_policies",
]
