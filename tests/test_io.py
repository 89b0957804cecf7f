"""pyomni.io: every source kind gives the same normalised table; every malformed input gives a typed error."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from pyomni import errors
from pyomni.io import STOCK_EVENT_KINDS, STOCK_EVENT_SCHEMA, read_locations, read_stock_events
from pyomni.network import LOCATION_SCHEMA, Network

EVENTS = pa.table({
    "location": ["SH-0001", "SH-0001", "WH-1", "0042", "SH-0001", "WH-1"],
    "sku": ["000123", "SKU-2", "000123", "SKU-2", "SKU-2", "SKU-3"],
    "event": ["set", "sale", "receive", "adjust", "return", "safety"],
    "qty": pa.array([10, 1, 500, -2, 1, 3], pa.int64()),
    "safety": pa.array([2, None, None, None, None, None], pa.int64()),
})


def write(table: pa.Table, path, kind: str) -> None:
    if kind == "parquet":
        pq.write_table(table, path)
    elif kind == "csv":
        pacsv.write_csv(table, path)
    elif kind == "ipc-stream":
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        feather.write_feather(table, path)


# -- sources -------------------------------------------------------------------
def test_schema_and_event_kinds():
    assert STOCK_EVENT_SCHEMA.names == ["location", "sku", "event", "qty", "safety"]
    assert STOCK_EVENT_KINDS == ("set", "adjust", "receive", "sale", "return", "safety")
    assert STOCK_EVENT_SCHEMA.field("safety").nullable
    assert not STOCK_EVENT_SCHEMA.field("qty").nullable


@pytest.mark.parametrize("make", [
    lambda: EVENTS,
    lambda: EVENTS.to_batches()[0],
    lambda: EVENTS.to_pandas(),
], ids=["table", "record-batch", "pandas"])
def test_in_memory_sources(make):
    assert read_stock_events(make()).equals(EVENTS.cast(STOCK_EVENT_SCHEMA))


@pytest.mark.parametrize("suffix, kind", [
    (".parquet", "parquet"), (".arrow", "feather"), (".feather", "feather"), (".ipc", "feather"),
    (".arrow", "ipc-stream"), (".CSV", "csv"),
])
def test_file_sources(tmp_path, suffix, kind):
    path = tmp_path / f"events{suffix}"
    write(EVENTS, path, kind)
    result = read_stock_events(path)
    assert result.equals(EVENTS.cast(STOCK_EVENT_SCHEMA))
    assert read_stock_events(str(path)).equals(result)


def test_csv_keeps_numeric_looking_ids_as_text(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("location,sku,qty\n0042,000123,5\n", encoding="utf-8")
    assert read_stock_events(path).to_pylist() == [
        {"location": "0042", "sku": "000123", "event": "set", "qty": 5, "safety": None}]


def test_missing_event_means_set_and_missing_safety_means_null():
    result = read_stock_events(EVENTS.drop_columns(["event", "safety"]))
    assert result.schema.equals(STOCK_EVENT_SCHEMA)
    assert set(result.column("event").to_pylist()) == {"set"}
    assert result.column("safety").null_count == result.num_rows


def test_columns_are_cast_reordered_and_extra_ones_dropped():
    table = pa.table({
        "note": ["x", "y"],
        "qty": pa.array([3, 4], pa.int32()),
        "sku": pa.array(["A", "B"]).dictionary_encode(),
        "location": pa.array(["L1", "L2"], pa.large_string()),
        "event": ["SET", "Receive"],
        "safety": pa.array([1, None], pa.int8()),
    })
    result = read_stock_events(table)
    assert result.schema.equals(STOCK_EVENT_SCHEMA)
    assert result.to_pylist() == [
        {"location": "L1", "sku": "A", "event": "set", "qty": 3, "safety": 1},
        {"location": "L2", "sku": "B", "event": "receive", "qty": 4, "safety": None},
    ]


def test_integral_floats_and_numeric_strings_are_accepted_quantities():
    frame = pd.DataFrame({"location": ["L"] * 2, "sku": ["A", "B"], "qty": [5.0, -1.0]})
    assert read_stock_events(frame).column("qty").to_pylist() == [5, -1]
    table = pa.table({"location": ["L"], "sku": ["A"], "qty": ["7"]})
    assert read_stock_events(table).column("qty").to_pylist() == [7]


def test_quantity_ranges_are_left_to_the_engine():
    table = pa.table({"location": ["L"], "sku": ["A"], "qty": [-(2**40)]})
    assert read_stock_events(table).column("qty").to_pylist() == [-(2**40)]


def test_empty_table():
    table = pa.table({"location": pa.array([], pa.string()), "sku": pa.array([], pa.string()),
                      "qty": pa.array([], pa.int64())})
    result = read_stock_events(table)
    assert result.num_rows == 0 and result.schema.equals(STOCK_EVENT_SCHEMA)


# -- errors --------------------------------------------------------------------
def events_with(**columns) -> pa.Table:
    table = EVENTS
    for name, values in columns.items():
        if values is None:
            table = table.drop_columns([name])
        else:
            table = table.set_column(table.column_names.index(name), name, pa.array(values))
    return table


@pytest.mark.parametrize("missing", ["location", "sku", "qty"])
def test_missing_required_column(missing):
    with pytest.raises(errors.InvalidArgument) as excinfo:
        read_stock_events(events_with(**{missing: None}))
    assert excinfo.value.field == missing


@pytest.mark.parametrize("column, values", [
    ("qty", [1.0, 2.5, 3.0, 4.0, 5.0, 6.0]),
    ("qty", ["1", "2", "three", "4", "5", "6"]),
    ("qty", [[1]] * 6),
    ("safety", [0.5] + [None] * 5),
])
def test_uncastable_column(column, values):
    with pytest.raises(errors.InvalidArgument) as excinfo:
        read_stock_events(events_with(**{column: values}))
    assert excinfo.value.field == column


@pytest.mark.parametrize("column, values, row", [
    ("location", ["SH-0001", "SH-0001", None, "0042", "SH-0001", "WH-1"], 2),
    ("sku", ["A", "B", "C", "D", "E", None], 5),
    ("event", ["set", None, "set", "set", "set", "set"], 1),
    ("qty", [1, 2, 3, None, 5, 6], 3),
    ("location", ["SH-0001", "", "WH-1", "0042", "SH-0001", "WH-1"], 1),
    ("sku", ["A", "B", "C", "D", "", "F"], 4),
])
def test_missing_or_empty_values_name_the_first_row(column, values, row):
    with pytest.raises(errors.InvalidArgument) as excinfo:
        read_stock_events(events_with(**{column: values}))
    assert excinfo.value.field == f"events[{row}].{column}"


def test_unknown_event_kind_names_the_kind_and_the_first_row():
    with pytest.raises(errors.InvalidArgument) as excinfo:
        read_stock_events(events_with(event=["set", "sale", "set", "Transfer", "steal", "set"]))
    assert excinfo.value.field == "events[3].event"
    assert "'transfer'" in str(excinfo.value)


def test_blank_csv_cells_are_reported_with_their_row(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("location,sku,qty\nL1,A,1\nL2,,2\n", encoding="utf-8")
    with pytest.raises(errors.InvalidArgument) as excinfo:
        read_stock_events(path)
    assert excinfo.value.field == "events[1].sku"


@pytest.mark.parametrize("source", [[{"location": "L"}], 42, "events.xlsx"])
def test_unsupported_sources(source):
    with pytest.raises(errors.InvalidArgument) as excinfo:
        read_stock_events(source)
    assert excinfo.value.field == "source"


def test_corrupt_file_is_an_invalid_argument(tmp_path):
    path = tmp_path / "events.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(errors.InvalidArgument) as excinfo:
        read_stock_events(path)
    assert excinfo.value.field == "source"


def test_a_missing_or_unreadable_file_is_an_invalid_argument(tmp_path):
    with pytest.raises(errors.InvalidArgument) as excinfo:
        read_stock_events(tmp_path / "absent.parquet")
    assert excinfo.value.field == "source"
    (tmp_path / "dir.parquet").mkdir()
    with pytest.raises(errors.InvalidArgument):
        read_stock_events(tmp_path / "dir.parquet")


# -- locations -----------------------------------------------------------------
LOCATIONS = pa.table({"id": ["0042", "WH-1"], "lat": [31.2, 30.5], "lon": [121.5, 114.3],
                      "kind": ["store", "warehouse"], "capabilities": ["ship|pickup", "ship"]})


@pytest.mark.parametrize("kind, suffix", [("table", ""), ("parquet", ".parquet"), ("csv", ".csv"),
                                          ("feather", ".feather")])
def test_read_locations_gives_the_canonical_table(tmp_path, kind, suffix):
    source = LOCATIONS
    if suffix:
        source = tmp_path / f"locations{suffix}"
        write(LOCATIONS, source, kind)
    table = read_locations(source)
    assert table.schema.equals(LOCATION_SCHEMA)
    assert table.column("id").to_pylist() == ["0042", "WH-1"]
    assert table.equals(Network.from_arrow(LOCATIONS).to_arrow())


def test_read_locations_from_pandas():
    assert read_locations(LOCATIONS.to_pandas()).equals(Network.from_arrow(LOCATIONS).to_arrow())


def test_read_locations_validates():
    with pytest.raises(errors.InvalidCoordinates) as excinfo:
        read_locations(LOCATIONS.set_column(1, "lat", pa.array([31.2, 95.0])))
    assert excinfo.value.field == "locations[1].lat"
    with pytest.raises(errors.InvalidArgument) as excinfo:
        read_locations(LOCATIONS.drop_columns(["lon"]))
    assert excinfo.value.field == "lon"
