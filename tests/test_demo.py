"""pyomni.demo: real cities, spread hubs, skewed stock, realistic orders -- deterministic per seed."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pyarrow.compute as pc
import pytest

from pyomni import errors
from pyomni.demo import demo_network, demo_orders, demo_stock, load_cities
from pyomni.io import STOCK_EVENT_SCHEMA, read_stock_events
from pyomni.model import Capability, Fulfilment, LocationKind
from pyomni.network import Network

EARTH_RADIUS_KM = 6371.0088


def km_to_nearest_city(lat, lon) -> np.ndarray:
    """Great-circle distance from each point to the nearest city centre of the packaged table."""
    cities = load_cities()
    clat = np.radians(cities.column("latitude").to_numpy())[None, :]
    clon = np.radians(cities.column("longitude").to_numpy())[None, :]
    lat, lon = np.radians(np.asarray(lat))[:, None], np.radians(np.asarray(lon))[:, None]
    h = np.sin((clat - lat) / 2) ** 2 + np.cos(lat) * np.cos(clat) * np.sin((clon - lon) / 2) ** 2
    return (2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(h))).min(axis=1)


def haversine_km(lat1, lon1, lat2, lon2) -> float:
    lat1, lon1, lat2, lon2 = map(np.radians, (lat1, lon1, lat2, lon2))
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return float(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(h)))


@pytest.fixture(scope="module")
def network() -> Network:
    return demo_network(stores=300, warehouses=8, skus=2_000, dark_stores=6, seed=7)


@pytest.fixture(scope="module")
def stock(network):
    return demo_stock(network, density=0.05, seed=7)


def kind_indices(network: Network, kind: LocationKind) -> np.ndarray:
    return np.flatnonzero(network.kind == kind)


# -- cities --------------------------------------------------------------------
def test_packaged_cities():
    cities = load_cities()
    assert cities.num_rows == 2106
    assert cities.column_names == ["geonameid", "name", "name_zh", "latitude", "longitude", "population",
                                   "province_code", "province", "prefecture_code", "prefecture"]
    assert cities.slice(0, 1).to_pylist()[0]["name_zh"] == "上海"
    population = cities.column("population").to_numpy()
    assert (np.diff(population) <= 0).all()  # largest first


# -- network -------------------------------------------------------------------
def test_network_shape_and_ids(network):
    assert len(network) == 314
    stores, warehouses, dark = (kind_indices(network, k) for k in LocationKind)
    assert (len(stores), len(warehouses), len(dark)) == (300, 8, 6)
    store_ids = [network.ids[i] for i in stores]
    assert all(re.fullmatch(r"[A-Z0-9]{2}-\d{4}", i) for i in store_ids)
    assert sorted(int(i[-4:]) for i in store_ids) == list(range(1, 301))
    assert all(network.ids[i].startswith("WH-") for i in warehouses)
    assert all(re.fullmatch(r"DS-[A-Z0-9]{2}-\d{4}", network.ids[i]) for i in dark)
    assert network.skus[:2] == ("SKU-000000", "SKU-000001") and len(network.skus) == 2000


def test_big_cities_get_several_stores(network):
    stores = kind_indices(network, LocationKind.STORE)
    per_city = {}
    for i in stores:
        per_city[network.city[i]] = per_city.get(network.city[i], 0) + 1
    assert per_city["Shanghai"] >= 5
    assert network.ids[stores[0]] == "SH-0001"  # the largest city's stores are numbered first


def test_every_location_is_in_a_real_city(network):
    assert km_to_nearest_city(network.lat, network.lon).max() < 6.0


def test_warehouses_are_spread_over_china(network):
    warehouses = kind_indices(network, LocationKind.WAREHOUSE)
    assert network.city[warehouses[0]] == "Shanghai"
    points = [(network.lat[i], network.lon[i]) for i in warehouses]
    assert min(haversine_km(*a, *b) for a, b in itertools.combinations(points, 2)) > 300


def test_location_attributes(network):
    stores = kind_indices(network, LocationKind.STORE)
    caps = network.capabilities[stores]
    assert ((caps & (Capability.SHIP | Capability.PICKUP)) == Capability.SHIP | Capability.PICKUP).all()
    shanghai = [i for i in stores if network.city[i] == "Shanghai"]
    assert all(network.capabilities[i] & Capability.SAME_DAY for i in shanghai)
    assert not (caps & Capability.SAME_DAY).all()  # small cities have no same-day courier
    assert network.daily_capacity[stores].min() >= 40 and network.daily_capacity[stores].max() <= 300
    assert network.fixed_cost[stores].min() >= 8 and network.fixed_cost[stores].max() <= 12
    assert set(network.priority[stores].tolist()) == {0, 1, 2}
    assert 0.1 < network.franchise[stores].mean() < 0.3
    assert network.is_open.all()
    assert (network.province_code > 0).all() and (network.prefecture_code > 0).all()

    warehouse = network.location(int(kind_indices(network, LocationKind.WAREHOUSE)[0]))
    assert (warehouse.capabilities, warehouse.daily_capacity, warehouse.fixed_cost) == (Capability.SHIP, 20_000, 5.0)
    dark = network.location(int(kind_indices(network, LocationKind.DARK_STORE)[0]))
    assert (dark.capabilities, dark.daily_capacity, dark.fixed_cost) == (
        Capability.SHIP | Capability.SAME_DAY, 2_000, 6.0)


def test_network_is_deterministic_per_seed():
    a, b = demo_network(50, 3, 10, seed=1), demo_network(50, 3, 10, seed=1)
    assert a.to_arrow().equals(b.to_arrow()) and a.skus == b.skus
    assert not demo_network(50, 3, 10, seed=2).to_arrow().equals(a.to_arrow())


def test_adding_dark_stores_does_not_move_stores():
    plain = demo_network(30, 2, 10, seed=3).to_arrow().slice(0, 32)
    with_dark = demo_network(30, 2, 10, dark_stores=5, seed=3).to_arrow().slice(0, 32)
    assert plain.equals(with_dark)


@pytest.mark.parametrize("kwargs, field", [
    ({"stores": -1}, "stores"),
    ({"warehouses": -1}, "warehouses"),
    ({"warehouses": 2107}, "warehouses"),
    ({"dark_stores": -2}, "dark_stores"),
    ({"skus": 0}, "skus"),
    ({"skus": 10_000_001}, "skus"),
    ({"stores": 2.5}, "stores"),
    ({"seed": -1}, "seed"),
    ({"stores": 0, "warehouses": 0}, "stores"),
])
def test_network_arguments_are_validated(kwargs, field):
    with pytest.raises(errors.InvalidArgument) as excinfo:
        demo_network(**{"stores": 5, "warehouses": 1, "skus": 10, **kwargs})
    assert excinfo.value.field == field


# -- stock ---------------------------------------------------------------------
def cells_of_kind(stock, network, kind) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell location and SKU indices of one kind of location."""
    location = np.array([network.index_of(i) for i in stock.column("location").to_pylist()])
    sku = pc.cast(pc.utf8_slice_codeunits(stock.column("sku"), 4), "int64").to_numpy()
    mine = network.kind[location] == kind
    return location[mine], sku[mine]


def test_stock_is_a_valid_event_table(stock):
    assert stock.schema.equals(STOCK_EVENT_SCHEMA)
    assert pc.all(pc.equal(stock.column("event"), "set")).as_py()
    assert stock.column("safety").null_count == 0
    assert read_stock_events(stock).equals(stock)


def test_stock_has_no_repeated_cell_and_is_sorted(stock, network):
    location = np.array([network.index_of(i) for i in stock.column("location").to_pylist()])
    key = location * len(network.skus) + pc.cast(pc.utf8_slice_codeunits(stock.column("sku"), 4), "int64").to_numpy()
    assert (np.diff(key) > 0).all()


def test_store_assortment_is_skewed_and_respects_density(stock, network):
    n_stores = len(kind_indices(network, LocationKind.STORE))
    _, sku = cells_of_kind(stock, network, LocationKind.STORE)
    stores_per_sku = np.bincount(sku, minlength=len(network.skus))
    assert abs(len(sku) / (n_stores * len(network.skus)) - 0.05) < 0.005
    assert stores_per_sku[0] > 0.8 * n_stores  # the best seller is nearly everywhere
    assert np.median(stores_per_sku) <= 0.02 * n_stores  # the typical SKU is in a few stores
    assert stores_per_sku.min() >= 1  # but every SKU is somewhere
    assert stores_per_sku[-200:].mean() < 5  # the long tail in one to a few stores


def test_store_quantities_and_safety(stock, network):
    store = np.isin(stock.column("location").to_numpy(zero_copy_only=False),
                    [network.ids[i] for i in kind_indices(network, LocationKind.STORE)])
    qty = stock.column("qty").to_numpy()[store]
    safety = stock.column("safety").to_numpy()[store]
    assert qty.min() >= 1 and qty.max() <= 12
    assert (safety == (qty >= 3)).all()
    other_qty = stock.column("qty").to_numpy()[~store]
    assert other_qty.min() >= 5 and (stock.column("safety").to_numpy()[~store] == 0).all()


def test_warehouses_hold_a_large_share_biased_to_best_sellers(stock, network):
    n_warehouses = len(kind_indices(network, LocationKind.WAREHOUSE))
    _, sku = cells_of_kind(stock, network, LocationKind.WAREHOUSE)
    share = len(sku) / (n_warehouses * len(network.skus))
    assert 0.5 < share < 0.7
    holders = np.bincount(sku, minlength=len(network.skus))
    assert holders[:10].mean() > 0.75 * n_warehouses  # best sellers in nearly every warehouse
    assert holders[-500:].mean() < 0.65 * n_warehouses  # the tail in about half
    qty = stock.filter(pc.starts_with(stock.column("location"), "WH-")).column("qty").to_numpy()
    assert qty.min() >= 20 and qty.max() <= 500


def test_dark_stores_carry_the_head(stock, network):
    _, sku = cells_of_kind(stock, network, LocationKind.DARK_STORE)
    assert np.median(sku) < np.median(np.arange(len(network.skus))) / 4


def test_stock_is_deterministic_per_seed(network):
    small = demo_network(40, 2, 300, seed=0)
    assert demo_stock(small, seed=5).equals(demo_stock(small, seed=5))
    assert not demo_stock(small, seed=5).equals(demo_stock(small, seed=6))


def test_stock_without_stores():
    warehouses_only = demo_network(0, 3, 500, seed=0)
    stock = demo_stock(warehouses_only, seed=0)
    assert stock.num_rows > 0 and pc.all(pc.starts_with(stock.column("location"), "WH-")).as_py()


@pytest.mark.parametrize("kwargs, field", [
    ({"density": 0.0}, "density"),
    ({"density": 1.5}, "density"),
    ({"density": float("nan")}, "density"),
    ({"seed": -1}, "seed"),
])
def test_stock_arguments_are_validated(network, kwargs, field):
    with pytest.raises(errors.InvalidArgument) as excinfo:
        demo_stock(network, **kwargs)
    assert excinfo.value.field == field


def test_stock_and_orders_need_a_catalogue(network):
    for build in (lambda: demo_stock(network.with_skus([])), lambda: demo_orders(network.with_skus([]), 1)):
        with pytest.raises(errors.InvalidArgument) as excinfo:
            build()
        assert excinfo.value.field == "network.skus"
    with pytest.raises(errors.InvalidArgument):
        demo_stock("not a network")


# -- orders --------------------------------------------------------------------
def test_orders(network):
    orders = demo_orders(network, 500, seed=3, max_lines=4)
    assert [o.id for o in orders[:2]] == ["o-000001", "o-000002"] and len(orders) == 500
    catalogue = set(network.skus)
    for order in orders:
        skus = [line.sku for line in order.lines]
        assert 1 <= len(skus) <= 4 and len(set(skus)) == len(skus) and set(skus) <= catalogue
        assert all(line.qty in (1, 2) for line in order.lines)
        assert order.fulfilment is Fulfilment.DELIVERY
    lines = [len(o.lines) for o in orders]
    assert lines.count(1) > lines.count(2) > lines.count(4)
    assert km_to_nearest_city([o.destination[0] for o in orders], [o.destination[1] for o in orders]).max() < 21
    popular = sum(line.sku == "SKU-000000" for o in orders for line in o.lines)
    rare = sum(line.sku == "SKU-001999" for o in orders for line in o.lines)
    assert popular > 10 * max(rare, 1)


def test_orders_are_deterministic_per_seed(network):
    assert demo_orders(network, 50, seed=1) == demo_orders(network, 50, seed=1)
    assert demo_orders(network, 50, seed=1) != demo_orders(network, 50, seed=2)
    assert demo_orders(network, 0) == []


def test_orders_with_every_sku_in_each_order():
    tiny = demo_network(3, 0, 3, seed=0)
    orders = demo_orders(tiny, 20, seed=0, max_lines=3)
    assert all(len({line.sku for line in o.lines}) == len(o.lines) for o in orders)


@pytest.mark.parametrize("kwargs, field", [
    ({"n": -1}, "n"),
    ({"max_lines": 0}, "max_lines"),
    ({"max_lines": 65}, "max_lines"),
    ({"seed": 1.0}, "seed"),
])
def test_order_arguments_are_validated(network, kwargs, field):
    with pytest.raises(errors.InvalidArgument) as excinfo:
        demo_orders(network, **{"n": 5, **kwargs})
    assert excinfo.value.field == field


def test_max_lines_cannot_exceed_the_catalogue():
    with pytest.raises(errors.InvalidArgument) as excinfo:
        demo_orders(demo_network(3, 0, 2, seed=0), 5, max_lines=3)
    assert excinfo.value.field == "max_lines"
