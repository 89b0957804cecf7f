"""The world a scenario describes: network, opening stock and the day's orders with their clocks.

Everything is drawn once per scenario and shared by every policy run, so
policies are compared on exactly the same stores, stock and customers.
Geography and skew come from :mod:`pyomni.demo` (stores in real cities drawn
by population, Zipf-popular SKUs, customers around real cities); this module
adds what a peak needs on top: which stores ship, their capacities, safety
stock, and when each order arrives, becomes pickable and (maybe) is cancelled.

Examples
--------
>>> from pyomni.sim.scenario import preset
>>> from pyomni.sim.world import build_world
>>> w = build_world(preset("small", orders=50))
>>> len(w.orders), bool((w.release_s >= w.arrival_s).all())
(50, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..demo import demo_network, demo_orders, demo_stock
from ..model import Capability, LocationKind, Order
from ..network import Network
from .scenario import Scenario

__all__ = ["World", "build_world", "arrival_times"]

_HOUR = 3600.0
_DAY = 86_400.0


@dataclass(frozen=True, eq=False)
class World:
    """Network, stock and orders of one scenario (read-only; shared by every policy run).

    Attributes
    ----------
    scenario : Scenario
    network : Network
        Stores first, then warehouses; non-shipping stores lack ``SHIP``.
    stock : pyarrow.Table
        Opening stock as ``set`` events (:data:`pyomni.io.STOCK_EVENT_SCHEMA`).
    orders : list of Order
        In arrival order; ids ``o-000001`` ... follow it.
    arrival_s, release_s, cancel_s : numpy.ndarray
        Seconds from the start: when each order arrives, when it may first be
        picked (after the cut-off: the next midnight), when the customer
        cancels (``inf`` = never).
    line_start : numpy.ndarray
        Order ``i``'s lines are ``line_sku[line_start[i]:line_start[i + 1]]``.
    line_sku, line_qty : numpy.ndarray
        SKU index (into ``network.skus``) and quantity of every line.
    lat, lon : numpy.ndarray
        Destinations.
    pick_per_hour : numpy.ndarray
        Shipments each location can pick per hour while it picks (0 = never ships).
    picks_all_day : numpy.ndarray
        True for locations that pick round the clock (warehouses, dark stores).
    """

    scenario: Scenario
    network: Network
    stock: pa.Table
    orders: list[Order]
    arrival_s: np.ndarray
    release_s: np.ndarray
    cancel_s: np.ndarray
    line_start: np.ndarray
    line_sku: np.ndarray
    line_qty: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    pick_per_hour: np.ndarray
    picks_all_day: np.ndarray

    @property
    def units_ordered(self) -> np.ndarray:
        """Units per order."""
        return np.add.reduceat(self.line_qty, self.line_start[:-1]) if len(self.orders) else np.zeros(0, np.int64)

    def lines_of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """SKU indices and quantities of order ``i``."""
        a, b = self.line_start[i], self.line_start[i + 1]
        return self.line_sku[a:b], self.line_qty[a:b]


def arrival_times(profile: tuple[float, ...], n: int, demand_hours: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` sorted arrival times (seconds) over ``demand_hours``, by the hour-of-day ``profile``.

    Each order's hour is drawn with probability proportional to the profile
    weight of its hour of day; its minute within the hour is uniform.

    Examples
    --------
    >>> t = arrival_times((1.0,) * 24, 1000, 24, np.random.default_rng(0))
    >>> bool(t.min() >= 0 and t.max() < 86400 and (np.diff(t) >= 0).all())
    True
    """
    weights = np.array([profile[h % 24] for h in range(demand_hours)], dtype=np.float64)
    hours = rng.choice(demand_hours, size=n, p=weights / weights.sum())
    return np.sort(hours * _HOUR + rng.random(n) * _HOUR)


def build_world(scenario: Scenario) -> World:
    """Draw the network, the opening stock and the orders of ``scenario`` (deterministic by its seed).

    Parameters
    ----------
    scenario : Scenario

    Returns
    -------
    World

    Examples
    --------
    >>> from pyomni.sim.scenario import preset
    >>> w = build_world(preset("small", orders=20, ship_from_store=10))
    >>> int((w.pick_per_hour[:40] > 0).sum())
    10
    """
    s = scenario
    network_rng, arrival_rng, cancel_rng = (np.random.default_rng(x) for x in np.random.SeedSequence(s.seed).spawn(3))
    base = demo_network(stores=s.stores, warehouses=s.warehouses, skus=s.skus, seed=s.seed)
    network = _configure_network(base, s, network_rng)
    stock = _opening_stock(network, s)

    n = s.orders
    orders = demo_orders(network, n, seed=s.seed + 1, max_lines=min(s.max_lines, s.skus))
    arrival = arrival_times(s.profile, n, s.demand_hours, arrival_rng)
    # After the cut-off the carrier has gone: the order becomes pickable at the next midnight.
    hour_of_day = (arrival % _DAY) // _HOUR
    release = np.where(hour_of_day >= s.cutoff_hour, (arrival // _DAY + 1) * _DAY, arrival)
    cancels = cancel_rng.random(n) < s.cancel_rate
    cancel = np.where(cancels, arrival + cancel_rng.exponential(s.cancel_mean_hours * _HOUR, n), math.inf)

    sku_index = {sku: i for i, sku in enumerate(network.skus)}
    counts = np.fromiter((len(o.lines) for o in orders), dtype=np.int64, count=n)
    line_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    line_sku = np.fromiter((sku_index[line.sku] for o in orders for line in o.lines), dtype=np.int32,
                           count=int(line_start[-1]))
    line_qty = np.fromiter((line.qty for o in orders for line in o.lines), dtype=np.int32, count=int(line_start[-1]))
    lat = np.array([o.destination[0] for o in orders], dtype=np.float64)  # type: ignore[index]
    lon = np.array([o.destination[1] for o in orders], dtype=np.float64)  # type: ignore[index]

    all_day = network.kind != LocationKind.STORE
    ships = (network.capabilities & int(Capability.SHIP)) != 0
    picking_hours = np.where(all_day, 24.0, float(s.store_hours[1] - s.store_hours[0]))
    pick_per_hour = np.where(ships, network.daily_capacity / picking_hours, 0.0)
    for arr in (arrival, release, cancel, line_start, line_sku, line_qty, lat, lon, pick_per_hour, all_day):
        arr.setflags(write=False)
    return World(s, network, stock, orders, arrival, release, cancel, line_start, line_sku, line_qty, lat, lon,
                 pick_per_hour, all_day)


def _configure_network(base: Network, s: Scenario, rng: np.random.Generator) -> Network:
    """Set capacities and which stores ship.

    The shipping stores are a prefix of one seeded permutation, so with the
    same seed the 300 shipping stores of one scenario are among the 400 of
    another: a sweep over ``ship_from_store`` changes one thing only.
    """
    table = base.to_arrow()
    is_store = base.kind == LocationKind.STORE
    stores = np.flatnonzero(is_store)
    shipping = np.zeros(len(base), dtype=bool)
    shipping[stores[rng.permutation(len(stores))[:s.shipping_stores]]] = True
    capacity = np.array(base.daily_capacity, dtype=np.int32)
    if s.capacity is not None:
        capacity[is_store] = s.capacity
    capacity[base.kind == LocationKind.WAREHOUSE] = s.warehouse_capacity
    capabilities = np.array(table.column("capabilities").to_pylist(), dtype=object)
    capabilities[is_store & ~shipping] = "pickup"
    table = table.set_column(table.schema.get_field_index("daily_capacity"), "daily_capacity",
                             pa.array(capacity, pa.int32()))
    table = table.set_column(table.schema.get_field_index("capabilities"), "capabilities",
                             pa.array(capabilities.tolist(), pa.string()))
    return Network.from_arrow(table, skus=base.skus)


def _opening_stock(network: Network, s: Scenario) -> pa.Table:
    stock = demo_stock(network, density=s.density, seed=s.seed)
    if s.stock_multiplier != 1.0:
        qty = np.ceil(stock.column("qty").to_numpy() * s.stock_multiplier).astype(np.int64)
        stock = stock.set_column(stock.schema.get_field_index("qty"), stock.schema.field("qty"),
                                 pa.array(qty, stock.schema.field("qty").type))
    if s.safety is None:
        return stock
    store_ids = pa.array([x for x, k in zip(network.ids, network.kind, strict=True) if k == LocationKind.STORE],
                         pa.string())
    in_store = pc.is_in(stock.column("location"), value_set=store_ids)
    safety = pc.if_else(in_store, pa.scalar(s.safety, pa.int64()), stock.column("safety").cast(pa.int64()))
    return stock.set_column(stock.schema.get_field_index("safety"), stock.schema.field("safety"),
                            safety.cast(stock.schema.field("safety").type))
