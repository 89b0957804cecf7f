"""Demo data on real Chinese cities: a network, its stock and a stream of orders.

The engine's behaviour depends on geography (where stores cluster, how far the
hubs are) and on skew (a few SKUs sell everywhere, most sit in a handful of
stores). Uniform random data hides both, so the demo builds on the 2,106 real
cities packaged in ``pyomni/data/cn_cities.csv`` (GeoNames, CC BY 4.0):

* :func:`demo_network` -- stores in cities drawn by population, warehouses at
  regional hubs spread across the country, optional dark stores in the largest
  cities, and a SKU catalogue ordered by popularity;
* :func:`demo_stock` -- stock events with Zipf-like assortment and quantities;
* :func:`demo_orders` -- orders from customers around real cities.

It is meant as the embedded default the service starts on, and as data for
tests, benchmarks and simulations. Everything is vectorised NumPy and
deterministic for a given ``seed``.

Examples
--------
>>> from pyomni.demo import demo_network, demo_stock, demo_orders
>>> net = demo_network(stores=40, warehouses=3, skus=500, seed=1)
>>> stock = demo_stock(net, density=0.05, seed=1)
>>> orders = demo_orders(net, 10, seed=1)
>>> len(net), stock.column_names, orders[0].id
(43, ['location', 'sku', 'event', 'qty', 'safety'], 'o-000001')
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from . import errors, validate
from .io import STOCK_EVENT_SCHEMA
from .model import MAX_LINES, Capability, Fulfilment, Line, LocationKind, Order
from .network import Network

__all__ = ["load_cities", "demo_network", "demo_stock", "demo_orders"]

_CITY_COLUMN_TYPES = {
    "geonameid": pa.int64(), "name": pa.string(), "name_zh": pa.string(), "latitude": pa.float64(),
    "longitude": pa.float64(), "population": pa.int64(), "province_code": pa.int32(), "province": pa.string(),
    "prefecture_code": pa.int32(), "prefecture": pa.string(),
}

_KM_PER_DEGREE = math.pi * 6371.0088 / 180  # along a meridian, on the mean Earth radius
_STORE_SCATTER_KM = 5.0  # stores and hubs lie within this distance of their city centre
_CUSTOMER_SCATTER_KM = 20.0
_HUB_CANDIDATES = 60  # warehouses go to the best spread of this many most populous cities
_DARK_STORE_CITIES = 10  # dark stores serve the largest cities only
_SAME_DAY_MIN_POPULATION = 1_000_000
_MAX_SKUS = 10_000_000
_MAX_LOCATIONS = 1_000_000
_MAX_ORDERS = 100_000_000
_MAX_SEED = 2**63 - 1

# Stores
_STORE_CAPACITY = (40, 300)  # online orders per day, inclusive
_STORE_FIXED_COST = (8.0, 12.0)
_STORE_PRIORITIES = 3  # 0, 1 or 2
_FRANCHISE_SHARE = 0.2
_STORE_MAX_QTY = 12
# Warehouses and dark stores
_WAREHOUSE_CAPACITY = 20_000
_WAREHOUSE_FIXED_COST = 5.0
_DARK_STORE_CAPACITY = 2_000
_DARK_STORE_FIXED_COST = 6.0
# Orders: most carry one unit of one SKU, as in Chinese e-commerce.
_SINGLE_UNIT_SHARE = 0.85


@dataclass(frozen=True)
class _Cities:
    """Columns of the city table as NumPy arrays, most populous first."""

    name: np.ndarray  # object array of str
    lat: np.ndarray
    lon: np.ndarray
    population: np.ndarray
    province_code: np.ndarray
    prefecture_code: np.ndarray


@functools.lru_cache(maxsize=1)
def load_cities() -> pa.Table:
    """The packaged table of 2,106 mainland Chinese cities, largest first.

    Returns
    -------
    pyarrow.Table
        Columns ``geonameid``, ``name``, ``name_zh`` (blank for some small
        cities), ``latitude``, ``longitude``, ``population``,
        ``province_code``, ``province``, ``prefecture_code``, ``prefecture``.
        The table is read once and shared (Arrow tables are immutable).

    Notes
    -----
    Cities, coordinates and population: GeoNames (geonames.org, CC BY 4.0).
    Province and prefecture: nearest prefecture seat in the cpca package (MIT).

    Examples
    --------
    >>> cities = load_cities()
    >>> cities.num_rows, cities.column("name")[0].as_py(), cities.column("province_code")[0].as_py()
    (2106, 'Shanghai', 31)
    """
    data = importlib.resources.files("pyomni.data").joinpath("cn_cities.csv").read_bytes()
    options = pacsv.ConvertOptions(column_types=_CITY_COLUMN_TYPES)
    return pacsv.read_csv(pa.BufferReader(data), convert_options=options)


def _cities() -> _Cities:
    table = load_cities()
    population = table.column("population").to_numpy()
    order = np.argsort(-population, kind="stable")
    return _Cities(
        name=np.array(table.column("name").to_pylist(), dtype=object)[order],
        lat=table.column("latitude").to_numpy()[order],
        lon=table.column("longitude").to_numpy()[order],
        population=population[order],
        province_code=table.column("province_code").to_numpy()[order],
        prefecture_code=table.column("prefecture_code").to_numpy()[order],
    )


def demo_network(stores: int = 400, warehouses: int = 8, skus: int = 10_000, *, dark_stores: int = 0,
                 seed: int = 0) -> Network:
    """A retail network on real Chinese cities.

    * **Stores** go to cities drawn with probability proportional to
      population (with replacement, so a big city gets several), scattered
      up to 5 km around the city centre. Ids are the city's first two letters
      and a running number (``"SH-0001"``, ``"BE-0042"``); stores of one city
      are numbered together, largest city first. Each can ship and serve
      pickups, plus same-day delivery in cities of at least a million people;
      daily capacity 40--300 orders, fixed cost 8--12, priority 0--2, 20 %
      franchised.
    * **Warehouses** go one per regional hub: among the 60 most populous
      cities, farthest-point sampling from the largest (Shanghai first, then
      the city farthest from it, then the one farthest from both, ...), so a
      handful of hubs covers the country. Ids ``"WH-SHANGHAI-1"``, ... Ship
      only; capacity 20,000; fixed cost 5.
    * **Dark stores** (optional) go to the 10 largest cities by population,
      ids ``"DS-SH-0001"``, ...; ship and same-day; capacity 2,000; fixed cost 6.
    * **SKUs** ``"SKU-000000"``, ``"SKU-000001"``, ... in order of popularity
      (``SKU-000000`` sells best), as :func:`demo_stock` and
      :func:`demo_orders` assume.

    Parameters
    ----------
    stores, warehouses : int
        How many of each (0 to 1,000,000; at most 2,106 warehouses, one per city).
    skus : int
        Size of the catalogue, 1 to 10,000,000.
    dark_stores : int
        How many dark stores (0 to 1,000,000).
    seed : int
        Seed of the random generator (0 to 2**63 - 1); the same seed gives the same network.
        Stores, warehouses and dark stores draw from separate streams, so
        adding dark stores does not move the stores.

    Returns
    -------
    Network
        Stores first, then warehouses, then dark stores.

    Raises
    ------
    pyomni.errors.InvalidArgument
        A count out of range, or no location at all.

    Examples
    --------
    >>> net = demo_network(stores=5, warehouses=2, skus=3, seed=0)
    >>> [loc.id for loc in net if loc.kind == LocationKind.WAREHOUSE]
    ['WH-SHANGHAI-1', 'WH-URUMQI-2']
    >>> net.skus
    ('SKU-000000', 'SKU-000001', 'SKU-000002')
    """
    cities = _cities()
    stores = _check_int(stores, "stores", 0, _MAX_LOCATIONS)
    warehouses = _check_int(warehouses, "warehouses", 0, len(cities.name))
    dark_stores = _check_int(dark_stores, "dark_stores", 0, _MAX_LOCATIONS)
    skus = _check_int(skus, "skus", 1, _MAX_SKUS)
    seed = _check_int(seed, "seed", 0, _MAX_SEED)
    if stores + warehouses + dark_stores == 0:
        raise errors.InvalidArgument("a network needs at least one location", field="stores")

    store_rng, dark_store_rng, warehouse_rng = (np.random.default_rng(s)
                                                for s in np.random.SeedSequence(seed).spawn(3))
    store_cities = np.sort(store_rng.choice(len(cities.name), size=stores, p=_shares(cities.population)))
    dark_store_cities = np.sort(dark_store_rng.choice(
        _DARK_STORE_CITIES, size=dark_stores, p=_shares(cities.population[:_DARK_STORE_CITIES])))
    hub_cities = _spread_hubs(cities, warehouses)

    store_capabilities = np.where(cities.population[store_cities] >= _SAME_DAY_MIN_POPULATION,
                                  Capability.SHIP | Capability.PICKUP | Capability.SAME_DAY,
                                  Capability.SHIP | Capability.PICKUP)
    parts = [
        _locations_in(
            cities, store_cities, store_rng,
            ids=[f"{_id_prefix(name)}-{n:04d}" for n, name in enumerate(cities.name[store_cities], start=1)],
            kind=LocationKind.STORE,
            capabilities=store_capabilities,
            daily_capacity=store_rng.integers(_STORE_CAPACITY[0], _STORE_CAPACITY[1] + 1, size=stores),
            fixed_cost=np.round(store_rng.uniform(*_STORE_FIXED_COST, size=stores), 2),
            priority=store_rng.integers(0, _STORE_PRIORITIES, size=stores),
            franchise=store_rng.random(stores) < _FRANCHISE_SHARE),
        _locations_in(
            cities, hub_cities, warehouse_rng,
            ids=[f"WH-{_id_slug(name)}-{k}" for k, name in enumerate(cities.name[hub_cities], start=1)],
            kind=LocationKind.WAREHOUSE,
            capabilities=Capability.SHIP,
            daily_capacity=_WAREHOUSE_CAPACITY,
            fixed_cost=_WAREHOUSE_FIXED_COST),
        _locations_in(
            cities, dark_store_cities, dark_store_rng,
            ids=[f"DS-{_id_prefix(name)}-{n:04d}" for n, name in enumerate(cities.name[dark_store_cities], start=1)],
            kind=LocationKind.DARK_STORE,
            capabilities=Capability.SHIP | Capability.SAME_DAY,
            daily_capacity=_DARK_STORE_CAPACITY,
            fixed_cost=_DARK_STORE_FIXED_COST),
    ]
    return Network.from_arrow(pa.concat_tables(parts), skus=[f"SKU-{i:06d}" for i in range(skus)])


def _locations_in(cities: _Cities, city_index: np.ndarray, rng: np.random.Generator, *, ids: list[str],
                  kind: LocationKind, capabilities, daily_capacity, fixed_cost, priority=0,
                  franchise=False) -> pa.Table:
    """One kind of location as a table, placed around the given cities; scalars apply to every row."""
    n = len(city_index)
    lat, lon = _scatter(rng, cities.lat[city_index], cities.lon[city_index], _STORE_SCATTER_KM)
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "kind": np.full(n, int(kind), dtype=np.int8),
        "lat": lat,
        "lon": lon,
        "province_code": cities.province_code[city_index],
        "prefecture_code": cities.prefecture_code[city_index],
        "city": pa.array(cities.name[city_index].tolist(), pa.string()),
        "capabilities": np.broadcast_to(np.asarray(capabilities, dtype=np.uint8), n),
        "daily_capacity": np.broadcast_to(np.asarray(daily_capacity, dtype=np.int32), n),
        "fixed_cost": np.broadcast_to(np.asarray(fixed_cost, dtype=np.float64), n),
        "priority": np.broadcast_to(np.asarray(priority, dtype=np.int32), n),
        "franchise": np.broadcast_to(np.asarray(franchise, dtype=bool), n),
    })


def demo_stock(network: Network, *, density: float = 0.02, seed: int = 0) -> pa.Table:
    """Opening stock for a network: one ``"set"`` event per stocked cell.

    SKU popularity follows Zipf's law in catalogue order (``network.skus[0]``
    sells best, weight ``1 / (rank + 1)``), and the assortment follows it:

    * **stores** hold each SKU with a probability proportional to its
      popularity, scaled so that the number of store cells is about
      ``density x stores x SKUs``: the best sellers are in every store, the
      long tail in one to a few. Every SKU is in at least one store, so a
      density below ``1 / stores`` is raised to that. Quantities are small
      (1--12, geometric, deeper for best sellers); ``safety`` is 1 where
      ``qty >= 3`` -- a unit kept for walk-in customers;
    * **warehouses** each hold about 60 % of the catalogue (95 % of the best
      sellers, about half of the tail) in quantities of 20--500, safety 0;
    * **dark stores** hold the head of the assortment, three times as likely
      as a store to carry a SKU, 5--60 units, safety 0.

    Parameters
    ----------
    network : Network
        Its SKU catalogue must not be empty; stock goes to every location,
        open or not.
    density : float
        Share of (store, SKU) cells that hold stock, in (0, 1].
    seed : int
        Seed of the random generator; the same seed gives the same table.

    Returns
    -------
    pyarrow.Table
        :data:`pyomni.io.STOCK_EVENT_SCHEMA` rows, event ``"set"``, sorted by
        location then SKU, with no repeated (location, SKU) pair. Building
        four million cells (2,000 stores x 100,000 SKUs) takes one to two seconds.

    Raises
    ------
    pyomni.errors.InvalidArgument
        ``network`` is not a Network or has no SKUs, or ``density`` is out of
        range.

    Examples
    --------
    >>> net = demo_network(stores=50, warehouses=2, skus=1000, seed=0)
    >>> stock = demo_stock(net, density=0.05, seed=0)
    >>> stock.schema.names, set(stock.column("event").to_pylist())
    (['location', 'sku', 'event', 'qty', 'safety'], {'set'})
    """
    _check_network(network)
    density = validate.number(density, "density", low=0.0, high=1.0, low_open=True)
    seed = _check_int(seed, "seed", 0, _MAX_SEED)
    rng = np.random.default_rng(seed)
    n_skus = len(network.skus)
    # 0 for the best seller, 1 for the last of the tail; log scale, as popularity is Zipf.
    tail = np.log1p(np.arange(n_skus)) / math.log(n_skus) if n_skus > 1 else np.zeros(1)
    stores = np.flatnonzero(network.kind == LocationKind.STORE)
    warehouses = np.flatnonzero(network.kind == LocationKind.WAREHOUSE)
    dark_stores = np.flatnonzero(network.kind == LocationKind.DARK_STORE)

    cells = []  # (location index, SKU index, qty, safety) per kind of location
    if len(stores) or len(dark_stores):
        # Without stores, dark stores take their assortment from a store profile of their own size.
        store_rate = _store_assortment(n_skus, len(stores) or len(dark_stores), density)
    if len(stores):
        sku, column = _sample_cells(rng, store_rate, len(stores), at_least_one=True)
        qty = np.minimum(_STORE_MAX_QTY, rng.geometric(0.18 + 0.5 * tail[sku]))
        cells.append((stores[column], sku, qty, (qty >= 3).astype(np.int64)))
    if len(warehouses):
        sku, column = _sample_cells(rng, 0.95 - 0.4 * tail, len(warehouses), at_least_one=False)
        qty = rng.integers(20, 501 - np.round(400 * tail[sku]).astype(np.int64))
        cells.append((warehouses[column], sku, qty, np.zeros(len(sku), np.int64)))
    if len(dark_stores):
        sku, column = _sample_cells(rng, np.minimum(1.0, 3.0 * store_rate), len(dark_stores), at_least_one=False)
        qty = rng.integers(5, 61 - np.round(40 * tail[sku]).astype(np.int64))
        cells.append((dark_stores[column], sku, qty, np.zeros(len(sku), np.int64)))
    if not cells:  # a network without locations
        return STOCK_EVENT_SCHEMA.empty_table()

    location, sku, qty, safety = (np.concatenate(parts) for parts in zip(*cells, strict=True))
    order = np.argsort(location.astype(np.int64) * n_skus + sku)
    n = len(order)
    return pa.Table.from_arrays([
        pa.array(network.ids, pa.string()).take(location[order]),
        pa.array(network.skus, pa.string()).take(sku[order]),
        pa.repeat(pa.scalar("set", pa.string()), n),
        pa.array(qty[order].astype(np.int64)),
        pa.array(safety[order]),
    ], schema=STOCK_EVENT_SCHEMA)


def _store_assortment(n_skus: int, n_stores: int, density: float) -> np.ndarray:
    """Probability that a store holds each SKU: ``min(1, s / (rank + 1))``, with ``s`` set by ``density``.

    ``_sample_cells(..., at_least_one=True)`` redraws SKUs that land in no
    store, which raises the expected count of a SKU with probability ``p`` to
    ``n p / (1 - (1 - p)^n)``; the scale ``s`` is solved (bisection on a log
    scale) so that these expectations sum to ``density x stores x SKUs``.
    """
    weight = 1.0 / np.arange(1, n_skus + 1)
    target = density * n_stores * n_skus

    def expected_cells(scale: float) -> float:
        p = np.minimum(1.0, scale * weight)
        with np.errstate(divide="ignore"):  # log1p(-1) = -inf is right: a certain SKU fills every store
            held_somewhere = -np.expm1(n_stores * np.log1p(-p))
        return float(np.sum(n_stores * p / held_somewhere))

    low, high = math.log(1e-12), math.log(n_skus)  # every SKU in one store .. every SKU everywhere
    for _ in range(30):  # the log-scale interval shrinks below 1e-7: far finer than needed
        mid = (low + high) / 2
        low, high = (mid, high) if expected_cells(math.exp(mid)) < target else (low, mid)
    return np.minimum(1.0, math.exp(high) * weight)


def _sample_cells(rng: np.random.Generator, rate: np.ndarray, n_columns: int, *,
                  at_least_one: bool) -> tuple[np.ndarray, np.ndarray]:
    """Independent Bernoulli cells: row ``i`` holds each of ``n_columns`` columns with probability ``rate[i]``.

    Returns the (row, column) pairs, without repeats. A row's cells are found
    by geometric skips from one to the next, so the cost is proportional to
    the cells drawn, not to rows x columns. With ``at_least_one``, each row
    is conditioned on holding a cell: its first skip is drawn from the
    geometric law truncated to the row, which stays exact and cheap even for
    a SKU with a one-in-a-million rate. A row whose batch of skips ran out
    before the last column is redrawn whole (rare: the batch is the mean
    plus three standard deviations); that depends only on how many cells it
    got, so each row's set stays uniformly random given its size.
    """
    rate = np.asarray(rate, dtype=np.float64)
    full = np.flatnonzero(rate >= 1.0)
    rows, columns = [np.repeat(full, n_columns)], [np.tile(np.arange(n_columns), len(full))]
    pending = np.flatnonzero((rate > 0.0) & (rate < 1.0))
    while len(pending):
        p = rate[pending]
        log_q = np.log1p(-p)  # log of the chance to skip a column
        mean = p * n_columns
        draws = np.ceil(mean + 3.0 * np.sqrt(mean) + 4.0).astype(np.int64)
        starts = np.cumsum(draws) - draws
        # Skip lengths by inversion, ~ Geometric(p); log1p(-u) is finite as u < 1.
        u = rng.random(int(draws.sum()))
        if at_least_one:
            # First cell ~ Geometric(p) truncated to the row: scale u by P(row holds a cell).
            u[starts] *= -np.expm1(n_columns * log_q)
        skips = (np.log1p(-u) / np.repeat(log_q, draws)).astype(np.int64) + 1
        position = np.cumsum(skips)
        position -= np.repeat(position[starts] - skips[starts] + 1, draws)  # each row restarts at column -1
        inside = position < n_columns
        done = np.add.reduceat(inside, starts, dtype=np.int64) < draws  # a skip went past the last column
        keep = inside & np.repeat(done, draws)
        rows.append(np.repeat(pending, draws)[keep])
        columns.append(position[keep])
        pending = pending[~done]
    return np.concatenate(rows), np.concatenate(columns)


def demo_orders(network: Network, n: int, *, seed: int = 0, max_lines: int = 3) -> list[Order]:
    """Delivery orders from customers around real Chinese cities.

    Customers live in cities drawn by population, up to 20 km from the
    centre. An order has 1 to ``max_lines`` distinct SKUs (one line in about
    half of the orders, each extra line half as likely), drawn by the same
    Zipf popularity as :func:`demo_stock`; 85 % of lines are for one unit,
    the rest for two.

    Parameters
    ----------
    network : Network
        Supplies the SKU catalogue (most popular first).
    n : int
        Number of orders (0 to 100,000,000); ids ``"o-000001"``, ``"o-000002"``, ...
    seed : int
        Seed of the random generator; the same seed gives the same orders.
    max_lines : int
        Most lines per order: 1 to 64, and at most the catalogue size.

    Returns
    -------
    list of Order
        Fulfilment DELIVERY, channel ``"app"``.

    Raises
    ------
    pyomni.errors.InvalidArgument
        A count out of range, or ``network`` without SKUs.

    Examples
    --------
    >>> net = demo_network(stores=10, warehouses=1, skus=100, seed=0)
    >>> orders = demo_orders(net, 3, seed=0)
    >>> [order.id for order in orders], all(1 <= len(order.lines) <= 3 for order in orders)
    (['o-000001', 'o-000002', 'o-000003'], True)
    """
    _check_network(network)
    n_skus = len(network.skus)
    n = _check_int(n, "n", 0, _MAX_ORDERS)
    max_lines = _check_int(max_lines, "max_lines", 1, min(MAX_LINES, n_skus))
    seed = _check_int(seed, "seed", 0, _MAX_SEED)
    rng = np.random.default_rng(seed)
    cities = _cities()

    home = rng.choice(len(cities.name), size=n, p=_shares(cities.population))
    lat, lon = _scatter(rng, cities.lat[home], cities.lon[home], _CUSTOMER_SCATTER_KM)
    n_lines = 1 + rng.choice(max_lines, size=n, p=_shares(0.5 ** np.arange(max_lines)))
    in_order = np.arange(max_lines) < n_lines[:, None]
    popularity = _shares(1.0 / np.arange(1, n_skus + 1))
    skus = rng.choice(n_skus, size=(n, max_lines), p=popularity)
    repeats = _rows_with_repeats(skus, in_order)
    while repeats.any():  # redraw an order's SKUs until they are distinct (best sellers collide often)
        skus[repeats] = rng.choice(n_skus, size=(int(repeats.sum()), max_lines), p=popularity)
        repeats = _rows_with_repeats(skus, in_order)
    qty = np.where(rng.random((n, max_lines)) < _SINGLE_UNIT_SHARE, 1, 2)

    catalogue = network.skus
    return [
        Order(f"o-{i + 1:06d}",
              tuple(Line(catalogue[s], q) for s, q in zip(order_skus[:k], order_qty[:k], strict=True)),
              destination=(order_lat, order_lon), fulfilment=Fulfilment.DELIVERY)
        for i, (order_skus, order_qty, k, order_lat, order_lon)
        in enumerate(zip(skus.tolist(), qty.tolist(), n_lines.tolist(), lat.tolist(), lon.tolist(), strict=True))
    ]


def _rows_with_repeats(values: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Rows of ``values`` whose used entries (non-negative) are not all distinct."""
    # Unused entries get distinct negative sentinels so they never match anything.
    masked = np.where(used, values, -1 - np.arange(values.shape[1]))
    ordered = np.sort(masked, axis=1)
    return (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)


def _spread_hubs(cities: _Cities, count: int) -> np.ndarray:
    """City indices of ``count`` hubs by farthest-point sampling among the most populous cities.

    Starts from the most populous city, then repeatedly adds the candidate
    farthest (great-circle) from every hub chosen so far.
    """
    candidates = np.arange(min(len(cities.name), max(_HUB_CANDIDATES, count)))
    points = _unit_vectors(cities.lat[candidates], cities.lon[candidates])
    chosen = [0]
    # Cosine of the angle to the nearest chosen hub: the smallest is the farthest city.
    nearest = points @ points[0]
    for _ in range(1, count):
        farthest = int(np.argmin(nearest))
        chosen.append(farthest)
        nearest = np.maximum(nearest, points @ points[farthest])
    return candidates[chosen[:count]]


def _unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    phi, lam = np.radians(lat), np.radians(lon)
    return np.column_stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)])


def _scatter(rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray,
             radius_km: float) -> tuple[np.ndarray, np.ndarray]:
    """Points uniformly spread over a disc of ``radius_km`` around each centre (rounded to ~1 m)."""
    distance = radius_km * np.sqrt(rng.random(len(lat)))  # sqrt: uniform over the area, not the radius
    bearing = rng.uniform(0.0, 2.0 * math.pi, len(lat))
    # Flat-Earth offsets are accurate to well under 1 % at these distances.
    d_lat = distance * np.cos(bearing) / _KM_PER_DEGREE
    d_lon = distance * np.sin(bearing) / (_KM_PER_DEGREE * np.cos(np.radians(lat)))
    return np.round(lat + d_lat, 5), np.round(lon + d_lon, 5)


def _shares(weights: np.ndarray) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    return weights / weights.sum()


def _ascii_name(name: str) -> str:
    """Latin letters and digits of a city name, accents dropped: "Ürümqi" -> "Urumqi", "Xi’an" -> "Xian"."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9]", "", folded)


def _id_prefix(name: str) -> str:
    return _ascii_name(name)[:2].upper()


def _id_slug(name: str) -> str:
    return _ascii_name(name).upper()


def _check_int(value: object, name: str, low: int, high: int) -> int:
    return validate.integer(value, name, low=low, high=high)


def _check_network(network: object) -> None:
    if not isinstance(network, Network):
        raise errors.InvalidArgument(f"expected a Network, got {validate.shown(network)}", field="network")
    if not network.skus:
        raise errors.InvalidArgument("the network has no SKU catalogue", field="network.skus")
