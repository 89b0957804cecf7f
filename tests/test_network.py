"""Network: construction from every source, lossless round trips, and one test per validation rule."""

from __future__ import annotations

import math
import pickle
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from pyomni import errors
from pyomni.model import Capability, Location, LocationKind
from pyomni.network import LOCATION_SCHEMA, Network

RECORDS = [
    {"id": "SH-0001", "lat": 31.22222, "lon": 121.45806, "province_code": 31, "prefecture_code": 310100,
     "city": "Shanghai", "capabilities": "ship|pickup|same_day", "daily_capacity": 120, "fixed_cost": 9.5,
     "priority": 1, "franchise": True},
    {"id": "WH-URUMQI-1", "kind": "warehouse", "lat": 43.80096, "lon": 87.60046, "city": "Ürümqi",
     "capabilities": "ship", "daily_capacity": 20_000, "fixed_cost": 5.0},
    # An id that looks like a number, a city with a comma and CJK text, no capability, a closed store:
    # everything a CSV round trip could lose.
    {"id": "0042", "kind": "dark_store", "lat": -0.1, "lon": -179.5, "city": "西安, Xi’an",
     "capabilities": "none", "fixed_cost": 0.1 + 0.2, "priority": 1000, "is_open": False},
]


@pytest.fixture
def network() -> Network:
    return Network.from_records(RECORDS, skus=["SKU-1", "SKU-2", "SKU-3"])


def same_network(a: Network, b: Network) -> bool:
    return a.to_arrow().equals(b.to_arrow()) and a.skus == b.skus


# -- construction and access ---------------------------------------------------
def test_columns_hold_the_records_with_fixed_dtypes(network):
    assert network.ids == ("SH-0001", "WH-URUMQI-1", "0042")
    assert network.kind.tolist() == [LocationKind.STORE, LocationKind.WAREHOUSE, LocationKind.DARK_STORE]
    assert network.capabilities.tolist() == [7, 1, 0]
    assert network.city == ("Shanghai", "Ürümqi", "西安, Xi’an")
    assert network.priority.tolist() == [1, 0, 1000]
    assert network.franchise.tolist() == [True, False, False]
    assert network.is_open.tolist() == [True, True, False]
    assert network.skus == ("SKU-1", "SKU-2", "SKU-3")
    dtypes = {name: getattr(network, name).dtype for name in (
        "kind", "lat", "lon", "province_code", "prefecture_code", "capabilities", "daily_capacity", "fixed_cost",
        "priority", "franchise", "is_open")}
    assert dtypes == {"kind": np.int8, "lat": np.float64, "lon": np.float64, "province_code": np.int32,
                      "prefecture_code": np.int32, "capabilities": np.uint8, "daily_capacity": np.int32,
                      "fixed_cost": np.float64, "priority": np.int32, "franchise": np.bool_, "is_open": np.bool_}


def test_missing_optional_values_take_the_location_defaults():
    net = Network.from_records([{"id": "A", "lat": 1.0, "lon": 2.0, "priority": None}])
    assert net.location("A") == Location("A", LocationKind.STORE, 1.0, 2.0)


def test_network_is_immutable(network):
    with pytest.raises(ValueError):
        network.lat[0] = 0.0
    with pytest.raises(AttributeError):
        network.skus = ()
    with pytest.raises(AttributeError):
        del network.ids
    with pytest.raises(TypeError):
        Network()


def test_input_arrays_are_copied_not_frozen():
    lat = np.array([31.0, 32.0])
    net = Network.from_arrow(pa.table({"id": ["a", "b"], "lat": lat, "lon": [121.0, 121.0]}))
    assert lat.flags.writeable
    assert not net.lat.flags.writeable


def test_lookup_by_id_and_index(network):
    assert len(network) == 3
    assert "0042" in network and "nope" not in network and ["unhashable"] not in network
    assert network.index_of("0042") == 2
    assert network.location("0042") == network.location(2) == list(network)[2]
    assert network.location(np.int64(1)).kind is LocationKind.WAREHOUSE
    assert network.location(0).capabilities == Capability.SHIP | Capability.PICKUP | Capability.SAME_DAY


@pytest.mark.parametrize("bad", ["SH-9999", 3, -1, True])
def test_unknown_location_is_a_typed_not_found(network, bad):
    with pytest.raises(errors.UnknownLocation) as excinfo:
        network.location(bad)
    assert excinfo.value.field == "location"


def test_index_of_unknown_id(network):
    with pytest.raises(errors.UnknownLocation) as excinfo:
        network.index_of("SH-9999")
    assert excinfo.value.field == "location"


def test_iteration_yields_the_locations_it_was_built_from(network):
    assert same_network(Network.from_locations(list(network), network.skus), network)
    assert [loc.id for loc in network] == list(network.ids)


def test_kind_and_capabilities_accept_names_numbers_and_enums():
    net = Network.from_records([
        {"id": "a", "lat": 0, "lon": 0, "kind": "Dark-Store", "capabilities": "SHIP, same-day"},
        {"id": "b", "lat": 0, "lon": 0, "kind": 2, "capabilities": 3},
        {"id": "c", "lat": 0, "lon": 0, "kind": LocationKind.STORE, "capabilities": ["pickup"]},
        {"id": "d", "lat": 0, "lon": 0, "kind": np.int8(1), "capabilities": Capability.SAME_DAY},
    ])
    assert net.kind.tolist() == [3, 2, 1, 1]
    assert net.capabilities.tolist() == [5, 3, 2, 4]


def test_with_skus_shares_locations_and_leaves_the_original(network):
    other = network.with_skus(["X"])
    assert other.skus == ("X",) and network.skus == ("SKU-1", "SKU-2", "SKU-3")
    assert other.lat is network.lat


def test_pickle_round_trip_keeps_arrays_read_only(network):
    copy = pickle.loads(pickle.dumps(network))
    assert same_network(copy, network)
    assert not copy.lat.flags.writeable
    assert copy.index_of("0042") == 2


def test_repr_counts_kinds(network):
    assert repr(network) == "<Network: 3 locations (1 store, 1 warehouse, 1 dark_store), 3 SKUs>"


# -- round trips ---------------------------------------------------------------
def test_to_arrow_writes_text_kinds_and_capabilities(network):
    table = network.to_arrow()
    assert table.schema.equals(LOCATION_SCHEMA)
    assert table.column("kind").to_pylist() == ["store", "warehouse", "dark_store"]
    assert table.column("capabilities").to_pylist() == ["ship|pickup|same_day", "ship", "none"]


def test_arrow_round_trip(network):
    assert same_network(Network.from_arrow(network.to_arrow(), network.skus), network)
    batch = network.to_arrow().to_batches()[0]
    assert same_network(Network.from_arrow(batch, network.skus), network)


def test_parquet_round_trip(network, tmp_path):
    path = tmp_path / "network.parquet"
    pq.write_table(network.to_arrow(), path)
    assert same_network(Network.from_parquet(path, network.skus), network)


def test_csv_round_trip_is_lossless(network, tmp_path):
    path = tmp_path / "network.csv"
    pacsv.write_csv(network.to_arrow(), path)
    back = Network.from_csv(str(path), network.skus)
    assert same_network(back, network)
    assert back.fixed_cost[2] == 0.1 + 0.2  # every bit of the float survives text


def test_csv_with_only_required_columns_and_blank_cells(tmp_path):
    path = tmp_path / "minimal.csv"
    path.write_text("id,lat,lon,priority,city\n007,31.2,121.5,,\n008,39.9,116.4,2,Beijing\n", encoding="utf-8")
    net = Network.from_csv(path)
    assert net.ids == ("007", "008")
    assert net.priority.tolist() == [0, 2]
    assert net.city == ("", "Beijing")


def test_arrow_nulls_in_optional_columns_take_defaults():
    table = pa.table({"id": ["a", "b"], "lat": [1.0, 2.0], "lon": [3.0, 4.0],
                      "kind": ["warehouse", None], "fixed_cost": [None, 3.5], "capabilities": pa.array([None, 1])})
    net = Network.from_arrow(table)
    assert net.kind.tolist() == [2, 1]
    assert net.fixed_cost.tolist() == [8.0, 3.5]
    assert net.capabilities.tolist() == [3, 1]


def test_unreadable_files_are_invalid_arguments(tmp_path):
    path = tmp_path / "not.parquet"
    path.write_text("plain text")
    with pytest.raises(errors.InvalidArgument) as excinfo:
        Network.from_parquet(path)
    assert excinfo.value.field == "path"


# -- validation ----------------------------------------------------------------
def with_row(i: int, **changes) -> list[dict]:
    records = [dict(record) for record in RECORDS]
    records[i].update(changes)
    return records


@pytest.mark.parametrize("changes, error, field", [
    ({"id": ""}, errors.InvalidArgument, "locations[1].id"),
    ({"id": None}, errors.InvalidArgument, "locations[1].id"),
    ({"id": 17}, errors.InvalidArgument, "locations[1].id"),
    ({"id": "0042"}, errors.DuplicateId, "locations[2].id"),
    ({"lat": math.nan}, errors.InvalidCoordinates, "locations[1].lat"),
    ({"lat": 90.5}, errors.InvalidCoordinates, "locations[1].lat"),
    ({"lat": None}, errors.InvalidCoordinates, "locations[1].lat"),
    ({"lat": "43.8"}, errors.InvalidCoordinates, "locations[1].lat"),
    ({"lon": math.inf}, errors.InvalidCoordinates, "locations[1].lon"),
    ({"lon": -180.01}, errors.InvalidCoordinates, "locations[1].lon"),
    ({"kind": "shop"}, errors.InvalidArgument, "locations[1].kind"),
    ({"kind": 4}, errors.InvalidArgument, "locations[1].kind"),
    ({"kind": True}, errors.InvalidArgument, "locations[1].kind"),
    ({"capabilities": "ship|teleport"}, errors.InvalidArgument, "locations[1].capabilities"),
    ({"capabilities": 8}, errors.InvalidArgument, "locations[1].capabilities"),
    ({"capabilities": 1.0}, errors.InvalidArgument, "locations[1].capabilities"),
    ({"daily_capacity": -1}, errors.InvalidArgument, "locations[1].daily_capacity"),
    ({"daily_capacity": 2**31}, errors.InvalidArgument, "locations[1].daily_capacity"),
    ({"daily_capacity": 10.5}, errors.InvalidArgument, "locations[1].daily_capacity"),
    ({"fixed_cost": -0.01}, errors.InvalidArgument, "locations[1].fixed_cost"),
    ({"fixed_cost": math.nan}, errors.InvalidArgument, "locations[1].fixed_cost"),
    ({"fixed_cost": math.inf}, errors.InvalidArgument, "locations[1].fixed_cost"),
    ({"priority": 1001}, errors.InvalidArgument, "locations[1].priority"),
    ({"priority": -1}, errors.InvalidArgument, "locations[1].priority"),
    ({"province_code": -31}, errors.InvalidArgument, "locations[1].province_code"),
    ({"franchise": "yes"}, errors.InvalidArgument, "locations[1].franchise"),
    ({"is_open": 2}, errors.InvalidArgument, "locations[1].is_open"),
    ({"city": 5}, errors.InvalidArgument, "locations[1].city"),
])
def test_invalid_values_raise_typed_errors_naming_row_and_column(changes, error, field):
    with pytest.raises(error) as excinfo:
        Network.from_records(with_row(1, **changes))
    assert type(excinfo.value) is error
    assert excinfo.value.field == field


@pytest.mark.parametrize("column, values, error", [
    ("lat", [31.0, 32.0, math.nan], errors.InvalidCoordinates),
    ("lon", np.array([121.0, 121.0, 181.0]), errors.InvalidCoordinates),
    ("kind", pa.array([1, 2, 9], pa.int8()), errors.InvalidArgument),
    ("capabilities", pa.array([1, 2, 200], pa.uint8()), errors.InvalidArgument),
    ("daily_capacity", [0, 10, -5], errors.InvalidArgument),
    ("priority", [0, 0, 5000], errors.InvalidArgument),
    ("fixed_cost", [1.0, 2.0, -3.0], errors.InvalidArgument),
    ("franchise", [0, 1, 3], errors.InvalidArgument),
])
def test_columnar_checks_name_the_first_bad_row(column, values, error):
    columns = {"id": ["a", "b", "c"], "lat": [31.0, 32.0, 33.0], "lon": [121.0, 121.0, 121.0], column: values}
    with pytest.raises(error) as excinfo:
        Network.from_arrow(pa.table(columns))
    assert type(excinfo.value) is error
    assert excinfo.value.field == f"locations[2].{column}"


@pytest.mark.parametrize("missing", ["id", "lat", "lon"])
def test_missing_required_column(missing):
    columns = {"id": ["a"], "lat": [31.0], "lon": [121.0]}
    del columns[missing]
    with pytest.raises(errors.InvalidArgument) as excinfo:
        Network.from_arrow(pa.table(columns))
    assert excinfo.value.field == missing


def test_null_in_required_arrow_column_names_its_row():
    with pytest.raises(errors.InvalidCoordinates) as excinfo:
        Network.from_arrow(pa.table({"id": ["a", "b"], "lat": [31.0, None], "lon": [121.0, 121.0]}))
    assert excinfo.value.field == "locations[1].lat"


def test_wrong_container_types():
    with pytest.raises(errors.InvalidArgument) as excinfo:
        Network.from_arrow({"id": ["a"]})
    assert excinfo.value.field == "table"
    with pytest.raises(errors.InvalidArgument) as excinfo:
        Network.from_locations([Location("a", LocationKind.STORE, 0, 0), ("b", 1, 0, 0)])
    assert excinfo.value.field == "locations[1]"
    with pytest.raises(errors.InvalidArgument) as excinfo:
        Network.from_records([{"id": "a", "lat": 0, "lon": 0}, "b"])
    assert excinfo.value.field == "locations[1]"


@pytest.mark.parametrize("skus, error, field", [
    (["A", "B", "A"], errors.DuplicateId, "skus[2]"),
    (["A", "", "C"], errors.InvalidArgument, "skus[1]"),
    (["A", None], errors.InvalidArgument, "skus[1]"),
    (["A", 7], errors.InvalidArgument, "skus[1]"),
    ("SKU-1", errors.InvalidArgument, "skus"),
])
def test_invalid_sku_catalogue(network, skus, error, field):
    with pytest.raises(error) as excinfo:
        network.with_skus(skus)
    assert type(excinfo.value) is error
    assert excinfo.value.field == field


def test_sku_catalogue_from_arrays(network):
    assert network.with_skus(np.array(["A", "B"])).skus == ("A", "B")
    assert type(network.with_skus(np.array(["A"])).skus[0]) is str
    assert network.with_skus(pa.array(["A", "B"])).skus == ("A", "B")


# -- scale ---------------------------------------------------------------------
def test_a_million_skus_construct_well_under_a_second(network):
    skus = [f"SKU-{i:07d}" for i in range(1_000_000)]
    start = time.perf_counter()
    net = network.with_skus(skus)
    assert time.perf_counter() - start < 1.0
    assert len(net.skus) == 1_000_000


def test_ten_thousand_locations_from_arrow():
    n = 10_000
    rng = np.random.default_rng(0)
    table = pa.table({
        "id": [f"S-{i:05d}" for i in range(n)],
        "kind": rng.choice(["store", "warehouse", "dark_store"], n),
        "lat": rng.uniform(20, 45, n), "lon": rng.uniform(90, 125, n),
        "capabilities": rng.choice(["ship", "ship|pickup", "ship|same_day"], n),
        "daily_capacity": rng.integers(0, 300, n, dtype=np.int32),
    })
    start = time.perf_counter()
    net = Network.from_arrow(table)
    assert time.perf_counter() - start < 0.5
    assert len(net) == n and net.index_of("S-09999") == n - 1
