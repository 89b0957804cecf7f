"""Bulk data in: stock events and locations from Arrow, Parquet, Feather/IPC, CSV or pandas.

ERP and POS systems hand over stock as files or data frames of millions of
rows. This module turns any of those into one normalised Arrow table, checked
with vectorised :mod:`pyarrow.compute` kernels (no Python loop per row), which
the engine then applies in bulk:

* :func:`read_stock_events` -> a table with :data:`STOCK_EVENT_SCHEMA`;
* :func:`read_locations` -> a validated table with
  :data:`pyomni.network.LOCATION_SCHEMA`, ready for
  :meth:`pyomni.network.Network.from_arrow`.

The split of checks is deliberate: this module checks shape (columns, types,
missing values, known event kinds); the engine checks values against its state
(quantity ranges, known SKUs and locations), because only it knows them.

Examples
--------
>>> import pyarrow as pa
>>> from pyomni.io import read_stock_events
>>> events = read_stock_events(pa.table({"location": ["SH-0001"], "sku": ["SKU-1"], "qty": [5]}))
>>> events.to_pylist()
[{'location': 'SH-0001', 'sku': 'SKU-1', 'event': 'set', 'qty': 5, 'safety': None}]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq

from . import errors, validate
from .network import Network
from .validate import shown

__all__ = ["STOCK_EVENT_KINDS", "STOCK_EVENT_SCHEMA", "read_stock_events", "read_locations"]

#: What a stock event does to its cell:
#:
#: * ``set`` -- on-hand becomes ``qty`` (a count or snapshot); a non-null ``safety`` sets safety stock too;
#: * ``adjust`` -- on-hand changes by ``qty`` (signed: shrinkage, corrections);
#: * ``receive`` -- ``qty`` units arrive (replenishment);
#: * ``sale`` -- ``qty`` units sold at the till (may sell into safety stock);
#: * ``return`` -- ``qty`` units come back into stock;
#: * ``safety`` -- safety stock becomes ``qty``.
STOCK_EVENT_KINDS = ("set", "adjust", "receive", "sale", "return", "safety")

#: The normalised stock event table returned by :func:`read_stock_events`.
STOCK_EVENT_SCHEMA = pa.schema([
    pa.field("location", pa.string(), nullable=False),
    pa.field("sku", pa.string(), nullable=False),
    pa.field("event", pa.string(), nullable=False),
    pa.field("qty", pa.int64(), nullable=False),
    pa.field("safety", pa.int64(), nullable=True),
])

_REQUIRED_EVENT_COLUMNS = ("location", "sku", "qty")
_EVENT_COLUMNS = ("location", "sku", "event", "qty", "safety")
# Ids stay text even when they look like numbers ("000123"); qty and safety are
# inferred and cast afterwards so that a bad cell is reported like any other.
_EVENT_CSV_COLUMN_TYPES = {"location": pa.string(), "sku": pa.string(), "event": pa.string()}
_EVENT_KIND_SET = pa.array(STOCK_EVENT_KINDS, pa.string())


def read_stock_events(source: Any) -> pa.Table:
    """Read stock events from any supported source into :data:`STOCK_EVENT_SCHEMA`.

    Parameters
    ----------
    source : pyarrow.Table, pyarrow.RecordBatch, pandas.DataFrame, str or path-like
        A path must end in ``.parquet``, ``.arrow``, ``.feather``, ``.ipc``
        (Arrow IPC file or stream) or ``.csv`` (with a header row).
        Columns ``location``, ``sku`` and ``qty`` are required. Without an
        ``event`` column every row is a ``"set"``; without ``safety`` it is all
        null. Event kinds are matched case-insensitively (see
        :data:`STOCK_EVENT_KINDS`); other columns are dropped.

    Returns
    -------
    pyarrow.Table
        Columns ``location``, ``sku``, ``event`` (lower case), ``qty`` and
        ``safety`` (nullable), in that order and with those types.

    Raises
    ------
    pyomni.errors.InvalidArgument
        A required column is missing or cannot be cast (``field`` is the
        column), a location, SKU, event or quantity is missing or empty, or an
        event kind is unknown (``field`` is ``"events[row].column"``, the first
        offending row). Quantities are not range-checked here: the engine does
        that when it applies the events.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"location": ["WH-1", "SH-0001"], "sku": ["SKU-1", "SKU-1"],
    ...                       "event": ["RECEIVE", "sale"], "qty": [100, 2]})
    >>> read_stock_events(frame).column("event").to_pylist()
    ['receive', 'sale']
    >>> try:
    ...     read_stock_events(frame.assign(event=["receive", "steal"]))
    ... except errors.InvalidArgument as exc:
    ...     print(exc.field)
    events[1].event
    """
    table = _read_table(source, csv_column_types=_EVENT_CSV_COLUMN_TYPES)
    for name in _REQUIRED_EVENT_COLUMNS:
        if name not in table.column_names:
            raise errors.InvalidArgument(f"the stock event table has no {name!r} column", field=name)
    for name in _EVENT_COLUMNS:
        if table.column_names.count(name) > 1:
            raise errors.InvalidArgument(f"the stock event table has {name!r} more than once", field=name)
    n = table.num_rows
    location = _cast(table.column("location"), pa.string(), "location")
    sku = _cast(table.column("sku"), pa.string(), "sku")
    qty = _cast(table.column("qty"), pa.int64(), "qty")
    if "event" in table.column_names:
        event = _cast(table.column("event"), pa.string(), "event")
    else:
        event = pa.chunked_array([pa.repeat(pa.scalar("set", pa.string()), n)])
    if "safety" in table.column_names:
        safety = _cast(table.column("safety"), pa.int64(), "safety")
    else:
        safety = pa.chunked_array([pa.nulls(n, pa.int64())])

    for name, column in (("location", location), ("sku", sku), ("event", event), ("qty", qty)):
        _require_present(column, name)
    for name, column in (("location", location), ("sku", sku)):
        _require_non_empty(column, name)
    event = _normalise_event_kinds(event)

    return pa.Table.from_arrays([location, sku, event, qty, safety], schema=STOCK_EVENT_SCHEMA)


def read_locations(source: Any) -> pa.Table:
    """Read and validate locations from any supported source.

    Parameters
    ----------
    source : pyarrow.Table, pyarrow.RecordBatch, pandas.DataFrame, str or path-like
        As for :func:`read_stock_events`; the columns are those of
        :meth:`pyomni.network.Network.from_arrow` (``id``, ``lat`` and ``lon``
        required, the rest optional with defaults).

    Returns
    -------
    pyarrow.Table
        The locations with :data:`pyomni.network.LOCATION_SCHEMA`: defaults
        filled in, kinds and capabilities as text.

    Raises
    ------
    pyomni.errors.InvalidArgument
        As :meth:`pyomni.network.Network.from_arrow` (missing column, invalid
        value with ``field="locations[row].column"``), or an unreadable source.

    Examples
    --------
    >>> import pyarrow as pa
    >>> table = read_locations(pa.table({"id": ["SH-0001"], "lat": [31.23], "lon": [121.47]}))
    >>> table.column("kind").to_pylist(), table.column("fixed_cost").to_pylist()
    (['store'], [8.0])
    """
    table = _read_table(source, csv_column_types=Network.CSV_COLUMN_TYPES)
    return Network.from_arrow(table).to_arrow()


def _read_table(source: Any, *, csv_column_types: Mapping[str, pa.DataType]) -> pa.Table:
    """Any supported source as an Arrow table, with no checks on its columns."""
    if isinstance(source, pa.Table):
        return source
    if isinstance(source, pa.RecordBatch):
        return pa.Table.from_batches([source])
    pandas = sys.modules.get("pandas")  # a DataFrame implies pandas is imported; never import it here
    if pandas is not None and isinstance(source, pandas.DataFrame):
        try:
            return pa.Table.from_pandas(source, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise errors.InvalidArgument(f"cannot convert the DataFrame to Arrow: {str(exc)[:300]}",
                                         field="source") from None
    if not isinstance(source, (str, os.PathLike)):
        raise errors.InvalidArgument(
            f"expected a pyarrow Table or RecordBatch, a pandas DataFrame or a file path, got {type(source).__name__}",
            field="source")
    path = str(validate.path(source, "source"))
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix in (".arrow", ".feather", ".ipc"):
            return _read_ipc(path)
        if suffix == ".csv":
            options = pacsv.ConvertOptions(column_types=dict(csv_column_types))
            return pacsv.read_csv(path, convert_options=options)
    except (OSError, pa.ArrowException) as exc:     # missing, unreadable or malformed: the caller's input
        raise errors.InvalidArgument(f"cannot read {shown(path, 200)}: {str(exc)[:300]}", field="source") from None
    raise errors.InvalidArgument(f"unsupported file type {shown(suffix or path, 200)}: expected .parquet, .arrow, "
                                 ".feather, .ipc or .csv", field="source")


def _read_ipc(path: str) -> pa.Table:
    # Feather v2 is the Arrow IPC file format; ``.arrow`` files are sometimes
    # written in the IPC stream format instead, which has no footer.
    try:
        return feather.read_table(path)
    except pa.ArrowInvalid:
        with pa.OSFile(path, "rb") as stream:
            return pa.ipc.open_stream(stream).read_all()


def _cast(column: pa.ChunkedArray, to: pa.DataType, name: str) -> pa.ChunkedArray:
    if column.type == to:
        return column
    try:
        return column.cast(to)  # safe cast: 1.5 -> int64 or "abc" -> int64 raise instead of truncating
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise errors.InvalidArgument(f"column {name!r} of type {str(column.type)[:100]} cannot be read as {to}: "
                                     f"{str(exc)[:300]}", field=name) from None


def _first_true(mask: pa.ChunkedArray) -> int:
    return pc.index(mask, True).as_py()


def _require_present(column: pa.ChunkedArray, name: str) -> None:
    if column.null_count:
        row = _first_true(column.is_null())
        raise errors.InvalidArgument(f"{name} is missing in row {row}", field=f"events[{row}].{name}")


def _require_non_empty(column: pa.ChunkedArray, name: str) -> None:
    # An empty id is what a blank CSV cell becomes; report it here with its row
    # rather than later as an unknown location or SKU named ''.
    empty = pc.equal(pc.binary_length(column), 0)
    if pc.any(empty).as_py():
        row = _first_true(empty)
        raise errors.InvalidArgument(f"{name} is empty in row {row}", field=f"events[{row}].{name}")


def _normalise_event_kinds(event: pa.ChunkedArray) -> pa.ChunkedArray:
    """Lower-case event kinds, or raise for the first unknown one.

    The common case -- every kind already lower case -- costs one hash lookup
    per row; lower-casing (a copy of the column) happens only when needed.
    """
    if pc.all(pc.is_in(event, value_set=_EVENT_KIND_SET)).as_py():
        return event
    event = pc.utf8_lower(event)
    unknown = pc.invert(pc.is_in(event, value_set=_EVENT_KIND_SET))
    if pc.any(unknown).as_py():
        row = _first_true(unknown)
        raise errors.InvalidArgument(
            f"unknown stock event {shown(event[row].as_py())} in row {row} (expected one of "
            f"{', '.join(STOCK_EVENT_KINDS)})",
            field=f"events[{row}].event")
    return event
