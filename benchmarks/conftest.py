"""Shared, seeded data for the benchmark suite (built once per session, never inside a timed region).

The picture: DESIGN.md §6 sets the targets for a 5,000-location network with a
100,000-SKU catalogue. Everything here is built from the demo generators with
fixed seeds, so two runs time exactly the same work:

* ``network`` -- 4,992 stores + 8 warehouses over real Chinese cities, 100k SKUs;
* ``stock`` -- its opening stock (``demo_stock``, default density): ≈10.45 million
  ``set`` events, one per stocked (location, SKU) cell;
* ``native_engine`` -- the compiled engine loaded with all of it (read-only for
  the benchmarks that use it: they only quote, so results stay comparable);
* ``route_orders`` -- 2,000 demo orders of 1–3 lines; ``reference_orders`` are
  the first 100 of them, the ones the plain-Python reference routes;
* ``reference_engine`` -- the plain-Python reference backend on the same network
  (see the fixture for which stock it holds, and why that is enough);
* ``make_native_engine`` -- a factory of fresh, fully loaded native engines for
  benchmarks that change stock (reservations, stock events).

Building the stock takes ≈8 s and loading it ≈4 s; the session pays it once.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import pyomni
from pyomni.model import Order

NETWORK_SEED = 7
STOCK_SEED = 7
ORDER_SEED = 11
N_ROUTE_ORDERS = 2_000
N_REFERENCE_ORDERS = 100


@pytest.fixture(scope="session")
def network() -> pyomni.Network:
    """5,000 locations (4,992 stores, 8 warehouses) and 100,000 SKUs."""
    return pyomni.demo_network(stores=4992, warehouses=8, skus=100_000, seed=NETWORK_SEED)


@pytest.fixture(scope="session")
def stock(network: pyomni.Network) -> pa.Table:
    """The demo opening stock: one ``set`` event per cell, ≈10.45M rows."""
    return pyomni.demo_stock(network, seed=STOCK_SEED)


@pytest.fixture(scope="session")
def make_native_engine(network: pyomni.Network, stock: pa.Table) -> Callable[[], pyomni.Engine]:
    """Factory: a new native engine holding the full demo stock (≈4 s per call)."""

    def make() -> pyomni.Engine:
        engine = pyomni.Engine(network, native=True)
        engine.apply_stock_events(stock)
        return engine

    return make


@pytest.fixture(scope="session")
def native_engine(make_native_engine: Callable[[], pyomni.Engine]) -> pyomni.Engine:
    """The compiled engine with the full stock. Shared: benchmarks using it must not change stock."""
    return make_native_engine()


@pytest.fixture(scope="session")
def route_orders(network: pyomni.Network) -> list[Order]:
    """2,000 delivery orders of 1–3 lines, ids ``o-000001``..., seeded."""
    return pyomni.demo_orders(network, N_ROUTE_ORDERS, seed=ORDER_SEED)


@pytest.fixture(scope="session")
def reference_orders(route_orders: list[Order]) -> list[Order]:
    """The first 100 of ``route_orders``: the ones the reference backend decides."""
    return route_orders[:N_REFERENCE_ORDERS]


@pytest.fixture(scope="session")
def reference_engine(network: pyomni.Network, stock: pa.Table, reference_orders: list[Order]) -> pyomni.Engine:
    """The plain-Python reference backend on the same network, holding every cell of the ordered SKUs.

    Loading all ≈10.45M cells into the reference takes ≈70 s and ≈4.5 GB (measured),
    so it holds only the rows of ``stock`` whose SKU appears in ``reference_orders``
    -- every cell of each of those SKUs, at every location. That gives the reference
    exactly the same decision inputs as the native engine for those orders: a
    routing decision reads only the cells of the order's own SKUs (plus the
    network and the per-location load counters, which are identical), so cells
    of other SKUs cannot change any answer. Only these orders may be routed on it.
    """
    skus = sorted({line.sku for order in reference_orders for line in order.lines})
    subset = stock.filter(pc.is_in(stock.column("sku"), value_set=pa.array(skus, pa.string())))
    engine = pyomni.Engine(network, native=False)
    engine.apply_stock_events(subset)
    return engine
