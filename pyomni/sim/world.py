"""The world a scenario describes: network, opening stock and the day's orders with their clocks.

Everything is drawn once per scenario and shared by every policy run, so
policies are compared on exactly the same stores, stock and customers.
Geography and skew come from :mod:`pyomni.demo` (stores in real cities drawn
by population, Zipf-popular SKUs, customers around real cities); this module
adds what a peak needs on top: which stores ship, their capacities, safety
stock, each SKU's price and each order's coupon, how fast each location
answers a new shipment, and when each order arrives, becomes pickable and
(maybe) is cancelled.

Examples
--------
>>> from pyomni.sim.scenario import preset
>>> from pyomni.sim.world import build_world
>>> w = build_world(preset("small", orders=50))
>>> len(w.orders), bool((w.release_s >= w.arrival_s).all())
(50, True)
>>> bool((w.unit_price_cents >= 2_900).all()), w.orders[0].lines[0].unit_price_cents > 0
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..demo import demo_network, demo_orders, demo_stock
from ..model import Capability, Line, LocationKind, Order
from ..network import Network
from .scenario import Scenario

__all__ = ["World", "build_world", "arrival_times", "unit_prices", "ANSWER_SIGMA_LOCATION", "ANSWER_SIGMA_SHIPMENT"]

_HOUR = 3600.0
_DAY = 86_400.0
# Unit prices: lognormal around ¥199, whole yuan from ¥29 to ¥1,999 (a fashion brand's range).
_PRICE_MEDIAN_CENTS = 19_900
_PRICE_SIGMA = 0.7
_PRICE_LOW_CENTS, _PRICE_HIGH_CENTS = 2_900, 199_900
# A coupon takes 5-15 % off its order's price.
_COUPON_LOW, _COUPON_HIGH = 0.05, 0.15
#: Spread (log-sd) of the locations' median answer times around the scenario's, and of one shipment's around its
#: location's: about 1 % of answers drawn around a 4-minute median would come after a 15-minute limit.
ANSWER_SIGMA_LOCATION = 0.4
ANSWER_SIGMA_SHIPMENT = 0.4


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
    unit_price_cents : numpy.ndarray
        Price of each SKU (index into ``network.skus``), in integer cents; the orders' lines carry it.
    coupon_cents : numpy.ndarray
        Each order's e-coupon (0 = none), in cents; the orders carry it.
    gross_cents : numpy.ndarray
        Each order's price before the coupon (sum of unit price x quantity).
    answer_median_min : numpy.ndarray
        Each location's median answer time, minutes of opening hours.
    answer_seed : numpy.random.SeedSequence
        Seed of a run's per-shipment draws (answer delay, outcome, reason): every policy starts from it.
    regional_stores : tuple of (int, str)
        Each province with a store, and its store holding the most opening stock (the ``regional`` rule's
        home stores).
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
    unit_price_cents: np.ndarray
    coupon_cents: np.ndarray
    gross_cents: np.ndarray
    answer_median_min: np.ndarray
    answer_seed: np.random.SeedSequence
    regional_stores: tuple[tuple[int, str], ...]

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
    # children 0-2 as before store operations existed, so the same seed draws the same network and customers
    seeds = np.random.SeedSequence(s.seed).spawn(6)
    network_rng, arrival_rng, cancel_rng, price_rng, answer_rng = (np.random.default_rng(x) for x in seeds[:5])
    base = demo_network(stores=s.stores, warehouses=s.warehouses, skus=s.skus, seed=s.seed)
    network = _configure_network(base, s, network_rng)
    stock = _opening_stock(network, s)

    n = s.orders
    plain = demo_orders(network, n, seed=s.seed + 1, max_lines=min(s.max_lines, s.skus))
    arrival = arrival_times(s.profile, n, s.demand_hours, arrival_rng)
    # After the cut-off the carrier has gone: the order becomes pickable at the next midnight.
    hour_of_day = (arrival % _DAY) // _HOUR
    release = np.where(hour_of_day >= s.cutoff_hour, (arrival // _DAY + 1) * _DAY, arrival)
    cancels = cancel_rng.random(n) < s.cancel_rate
    cancel = np.where(cancels, arrival + cancel_rng.exponential(s.cancel_mean_hours * _HOUR, n), math.inf)

    sku_index = {sku: i for i, sku in enumerate(network.skus)}
    counts = np.fromiter((len(o.lines) for o in plain), dtype=np.int64, count=n)
    line_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    line_sku = np.fromiter((sku_index[line.sku] for o in plain for line in o.lines), dtype=np.int32,
                           count=int(line_start[-1]))
    line_qty = np.fromiter((line.qty for o in plain for line in o.lines), dtype=np.int32, count=int(line_start[-1]))
    lat = np.array([o.destination[0] for o in plain], dtype=np.float64)  # type: ignore[index]
    lon = np.array([o.destination[1] for o in plain], dtype=np.float64)  # type: ignore[index]

    price = unit_prices(len(network.skus), price_rng)
    line_gross = price[line_sku] * line_qty.astype(np.int64)
    gross = np.add.reduceat(line_gross, line_start[:-1]) if n else np.zeros(0, np.int64)
    has_coupon = price_rng.random(n) < s.coupon_share
    coupon = np.where(has_coupon, np.floor(gross * price_rng.uniform(_COUPON_LOW, _COUPON_HIGH, n)), 0).astype(np.int64)
    orders = [Order(o.id, tuple(Line(x.sku, x.qty, int(c)) for x, c in zip(o.lines, price[line_sku[a:b]].tolist(),
                                                                          strict=True)),
                    destination=o.destination, coupon_cents=int(coupon[i]))
              for i, (o, a, b) in enumerate(zip(plain, line_start[:-1].tolist(), line_start[1:].tolist(), strict=True))]
    answer_median = s.answer_minutes * np.exp(ANSWER_SIGMA_LOCATION * answer_rng.standard_normal(len(network)))

    all_day = network.kind != LocationKind.STORE
    ships = (network.capabilities & int(Capability.SHIP)) != 0
    picking_hours = np.where(all_day, 24.0, float(s.store_hours[1] - s.store_hours[0]))
    pick_per_hour = np.where(ships, network.daily_capacity / picking_hours, 0.0)
    for arr in (arrival, release, cancel, line_start, line_sku, line_qty, lat, lon, pick_per_hour, all_day, price,
                coupon, gross, answer_median):
        arr.setflags(write=False)
    return World(s, network, stock, orders, arrival, release, cancel, line_start, line_sku, line_qty, lat, lon,
                 pick_per_hour, all_day, price, coupon, gross, answer_median, seeds[5], _best_stocked_stores(network,
                                                                                                          stock))


def unit_prices(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit prices in cents: lognormal around ¥199, whole yuan, clipped to ¥29--¥1,999.

    Examples
    --------
    >>> p = unit_prices(10_000, np.random.default_rng(0))
    >>> int(p.min()) >= 2_900 and int(p.max()) <= 199_900 and bool((p % 100 == 0).all())
    True
    >>> 17_000 < float(np.median(p)) < 23_000
    True
    """
    yuan = np.round(_PRICE_MEDIAN_CENTS / 100 * np.exp(_PRICE_SIGMA * rng.standard_normal(n)))
    return np.clip(yuan * 100, _PRICE_LOW_CENTS, _PRICE_HIGH_CENTS).astype(np.int64)


def _best_stocked_stores(network: Network, stock: pa.Table) -> tuple[tuple[int, str], ...]:
    """Per province with a store: the store with the most opening units (ties: the first in network order)."""
    index = {x: i for i, x in enumerate(network.ids)}
    units = np.zeros(len(network), dtype=np.int64)
    np.add.at(units, np.array([index[x] for x in stock.column("location").to_pylist()], dtype=np.int64),
              stock.column("qty").to_numpy().astype(np.int64))
    best: dict[int, int] = {}
    for loc in np.flatnonzero(network.kind == LocationKind.STORE).tolist():
        province = int(network.province_code[loc])
        if province not in best or units[loc] > units[best[province]]:
            best[province] = loc
    return tuple((p, network.ids[loc]) for p, loc in sorted(best.items()))


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
