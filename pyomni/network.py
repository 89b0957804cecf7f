"""The retail network: every location the engine may route from, and the SKU catalogue.

A :class:`Network` is the static half of the engine's picture (the ledger is the
moving half). It is immutable and columnar -- one read-only NumPy array per
location attribute -- so the native core can take the arrays as they are, and a
network of 10,000 locations costs a few hundred kilobytes, not 10,000 objects.
:class:`~pyomni.model.Location` objects are built only on the way out
(``network.location("SH-0001")``, iteration).

Every constructor funnels into one private validating path, so a network that
exists is a valid network: ids unique and non-empty, coordinates finite and in
range, capacities, costs and priorities in range, kinds and capabilities known.
A bad value raises the matching :mod:`pyomni.errors` class with ``field`` naming
the row and column (``"locations[3].lat"``).

The tabular form (:meth:`Network.to_arrow`, :data:`LOCATION_SCHEMA`) writes kinds
and capabilities as text (``"store"``, ``"ship|pickup"``) so that a network read
back from CSV or Parquet is the same network.

Examples
--------
>>> from pyomni.network import Network
>>> net = Network.from_records(
...     [{"id": "SH-0001", "lat": 31.23, "lon": 121.47, "city": "Shanghai"},
...      {"id": "WH-1", "kind": "warehouse", "lat": 31.0, "lon": 121.2, "capabilities": "ship"}],
...     skus=["SKU-1", "SKU-2"])
>>> len(net), net.index_of("WH-1"), net.location("WH-1").kind
(2, 1, <LocationKind.WAREHOUSE: 2>)
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from . import errors, validate
from .model import Capability, Location, LocationKind
from .validate import shown

__all__ = ["Network", "LOCATION_SCHEMA"]

#: Canonical tabular form of a network, as written by :meth:`Network.to_arrow`.
LOCATION_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("lat", pa.float64(), nullable=False),
    pa.field("lon", pa.float64(), nullable=False),
    pa.field("province_code", pa.int32(), nullable=False),
    pa.field("prefecture_code", pa.int32(), nullable=False),
    pa.field("city", pa.string(), nullable=False),
    pa.field("capabilities", pa.string(), nullable=False),
    pa.field("daily_capacity", pa.int32(), nullable=False),
    pa.field("fixed_cost", pa.float64(), nullable=False),
    pa.field("priority", pa.int32(), nullable=False),
    pa.field("franchise", pa.bool_(), nullable=False),
    pa.field("is_open", pa.bool_(), nullable=False),
])

_COLUMNS = tuple(LOCATION_SCHEMA.names)
_REQUIRED = ("id", "lat", "lon")
# Defaults come from the Location value object so the two cannot disagree;
# ``kind`` is required on a Location but a table row without one is a store.
_DEFAULTS: Mapping[str, Any] = types.MappingProxyType({
    "kind": LocationKind.STORE,
    **{f.name: f.default for f in dataclasses.fields(Location) if f.default is not dataclasses.MISSING},
})
# The column "id" is the attribute "ids"; every other column keeps its name.
_ATTRIBUTES = tuple("ids" if name == "id" else name for name in _COLUMNS)

_INT32_MAX = 2**31 - 1
_MAX_PRIORITY = 1000
_KIND_CODES = tuple(int(kind) for kind in LocationKind)
_ALL_CAPABILITIES = int(Capability.SHIP | Capability.PICKUP | Capability.SAME_DAY)
_CAPABILITY_MASKS = tuple(range(_ALL_CAPABILITIES + 1))

# Text forms, indexed by code. Mask 0 is written "none" rather than "" so that a
# CSV column holding only empty strings is not read back as nulls (= the default).
_KIND_NAMES = np.array(["", "store", "warehouse", "dark_store"], dtype=np.object_)
_CAPABILITY_WORDS = ((Capability.SHIP, "ship"), (Capability.PICKUP, "pickup"), (Capability.SAME_DAY, "same_day"))
_CAPABILITY_NAMES = np.array(
    ["|".join(word for flag, word in _CAPABILITY_WORDS if mask & flag) or "none" for mask in _CAPABILITY_MASKS],
    dtype=np.object_,
)


def _row(i: int, column: str) -> str:
    return f"locations[{i}].{column}"


def _first_true(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_integer(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _describe(value: object) -> str:
    return "missing" if value is None else "empty" if isinstance(value, str) and not value else shown(value)


def _numeric_array(values: Sequence[Any] | np.ndarray, column: str, error: type[errors.InvalidArgument]) -> np.ndarray:
    """``values`` as an int or float array; name the first row that is not a number.

    Arrow columns arrive as typed arrays and skip the per-row check; Python
    lists (records, Location objects) are checked row by row so that a string
    or a nested list is reported instead of being coerced by NumPy.
    """
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "iuf":
            return values
        values = values.tolist()
    for i, value in enumerate(values):
        if not _is_number(value):
            raise error(f"{column} of location {i} must be a number, got {_describe(value)}", field=_row(i, column))
    arr = np.array(values)
    if arr.dtype.kind in "iuf":
        return arr
    try:
        return arr.astype(np.float64)       # ints beyond int64 become floats (and fail the range checks)
    except OverflowError:                   # beyond every float (10**400): no range holds it
        i = next(i for i, v in enumerate(values) if not -1e308 <= v <= 1e308)
        raise error(f"{column} of location {i} is out of range, got {_describe(values[i])}",
                    field=_row(i, column)) from None


def _float_column(values, column: str, *, low: float, high: float,
                  error: type[errors.InvalidArgument] = errors.InvalidArgument) -> np.ndarray:
    arr = np.array(_numeric_array(values, column, error), dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = _first_true(bad)
        raise error(f"{column} of location {i} must be finite, got {arr[i]}", field=_row(i, column))
    bad = (arr < low) | (arr > high)
    if bad.any():
        i = _first_true(bad)
        raise error(f"{column} of location {i} must be in [{low}, {high}], got {arr[i]}", field=_row(i, column))
    return arr


def _int_column(values, column: str, *, low: int, high: int, dtype: type[np.integer]) -> np.ndarray:
    arr = _numeric_array(values, column, errors.InvalidArgument)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.trunc(arr))
        if bad.any():
            i = _first_true(bad)
            raise errors.InvalidArgument(f"{column} of location {i} must be an integer, got {arr[i]}",
                                         field=_row(i, column))
    bad = (arr < low) | (arr > high)
    if bad.any():
        i = _first_true(bad)
        raise errors.InvalidArgument(f"{column} of location {i} must be in [{low}, {high}], got {arr[i]}",
                                     field=_row(i, column))
    return arr.astype(dtype)


def _bool_column(values, column: str) -> np.ndarray:
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "b" or (values.dtype.kind in "iu" and np.isin(values, (0, 1)).all()):
            return values.astype(bool)
        values = values.tolist()
    for i, value in enumerate(values):
        if not (isinstance(value, (bool, np.bool_)) or (_is_number(value) and value in (0, 1))):
            raise errors.InvalidArgument(f"{column} of location {i} must be true or false, got {_describe(value)}",
                                         field=_row(i, column))
    return np.array(values, dtype=bool)


def _text_column(values, column: str, *, allow_empty: bool) -> tuple[str, ...]:
    texts = values.tolist() if isinstance(values, np.ndarray) else values
    for i, value in enumerate(texts):
        if not isinstance(value, str) or not (value or allow_empty):
            expected = "a string" if allow_empty else "a non-empty string"
            raise errors.InvalidArgument(f"{column} of location {i} must be {expected}, got {_describe(value)}",
                                         field=_row(i, column))
    out = tuple(map(str, texts))  # plain str, not subclasses such as numpy.str_
    _check_texts(out, lambda i: _row(i, column), identifiers=not allow_empty)
    return out


def _check_texts(texts: tuple[str, ...], field_of: Callable[[int], str], *, identifiers: bool) -> None:
    """Ids as :func:`pyomni.validate.identifier` wants them, other text as :func:`pyomni.validate.text` does.

    One look at all of them joined (C speed), and a row-by-row search only when that finds something.
    """
    if not texts:
        return
    limit = validate.MAX_ID_CHARS if identifiers else validate.MAX_TEXT_CHARS
    joined = "".join(texts)
    clean = joined.isascii() and (joined.isprintable() or not identifiers)
    if clean and max(map(len, texts)) <= limit:
        return
    check = validate.identifier if identifiers else validate.text
    for i, text in enumerate(texts):
        check(text, field_of(i), max_chars=limit)


def _parse_kind(value: object, field: str) -> int:
    if isinstance(value, str):
        name = value.strip().upper().replace("-", "_").replace(" ", "_")
        if name in LocationKind.__members__:
            return int(LocationKind[name])
    elif _is_integer(value) and value in _KIND_CODES:
        return int(value)
    raise errors.InvalidArgument(f"unknown location kind {_describe(value)} (expected store, warehouse or dark_store)",
                                 field=field)


def _parse_capabilities(value: object, field: str) -> int:
    spec: int | str | Iterable[str]
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        spec = int(value)
    elif isinstance(value, (str, list, tuple, set, frozenset)):
        spec = value
    else:
        raise errors.InvalidArgument(f"capabilities must be a mask or names like 'ship|pickup', got "
                                     f"{_describe(value)}", field=field)
    try:
        return int(Capability.parse(spec))
    except errors.InvalidArgument as exc:  # re-raised to name the row, not just the column
        raise errors.InvalidArgument(str(exc), field=field) from None


def _code_column(values, column: str, parse: Callable[[object, str], int], valid: Sequence[int],
                 dtype: type[np.integer]) -> np.ndarray:
    """Codes of an enum-like column given as integers (checked at once) or names (each distinct one parsed once)."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "iu":
            bad = ~np.isin(values, valid)
            if bad.any():
                i = _first_true(bad)
                parse(values[i].item(), _row(i, column))  # raises, with the reason and the row
            return values.astype(dtype)
        values = values.tolist()
    codes = np.empty(len(values), dtype=dtype)
    parsed: dict[tuple[type, object], int] = {}
    for i, value in enumerate(values):
        # Cache by (type, value) so that True is not served the code parsed for 1; lists of names are not hashable.
        key = (type(value), value) if isinstance(value, (str, int)) else None
        code = parsed.get(key) if key is not None else None
        if code is None:
            code = parse(value, _row(i, column))
            if key is not None:
                parsed[key] = code
        codes[i] = code
    return codes


def _id_index(ids: tuple[str, ...]) -> dict[str, int]:
    index = {location_id: i for i, location_id in enumerate(ids)}
    if len(index) != len(ids):
        seen: set[str] = set()
        for i, location_id in enumerate(ids):
            if location_id in seen:
                raise errors.DuplicateId(f"location id {shown(location_id)} appears more than once",
                                         field=_row(i, "id"))
            seen.add(location_id)
    return index


def _sku_catalogue(skus: Iterable[str]) -> tuple[str, ...]:
    """Validate a SKU catalogue. Plain Python set and tuple scans: a million SKUs take about 0.2 s."""
    if isinstance(skus, str):
        raise errors.InvalidArgument("skus must be a collection of SKU ids, not one string", field="skus")
    if isinstance(skus, np.ndarray):
        skus = skus.tolist()
    elif isinstance(skus, (pa.Array, pa.ChunkedArray)):
        skus = skus.to_pylist()
    catalogue = skus if isinstance(skus, tuple) else tuple(validate.sequence(skus, "skus",
                                                                             what="a collection of SKU ids"))
    if not all(type(sku) is str for sku in catalogue):
        for i, sku in enumerate(catalogue):
            if not isinstance(sku, str):
                raise errors.InvalidArgument(f"SKU id {i} must be a string, got {_describe(sku)}", field=f"skus[{i}]")
        catalogue = tuple(map(str, catalogue))  # plain str, not subclasses such as numpy.str_
    if "" in catalogue:
        i = catalogue.index("")
        raise errors.InvalidArgument(f"SKU id {i} is empty", field=f"skus[{i}]")
    _check_texts(catalogue, lambda i: f"skus[{i}]", identifiers=True)
    if len(set(catalogue)) != len(catalogue):
        seen: set[str] = set()
        for i, sku in enumerate(catalogue):
            if sku in seen:
                raise errors.DuplicateId(f"SKU id {shown(sku)} appears more than once", field=f"skus[{i}]")
            seen.add(sku)
    return catalogue


def _freeze(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


class Network:
    """An immutable, columnar set of locations plus the SKU catalogue.

    Build one with :meth:`from_locations`, :meth:`from_records`,
    :meth:`from_arrow`, :meth:`from_parquet` or :meth:`from_csv`; each validates
    every value. Attributes are read-only NumPy arrays (or tuples of strings)
    of length ``len(network)``, aligned by location index.

    Attributes
    ----------
    ids : tuple of str
        External location ids, unique and non-empty.
    kind : ndarray of int8
        :class:`~pyomni.model.LocationKind` values.
    lat, lon : ndarray of float64
        WGS-84 degrees.
    province_code, prefecture_code : ndarray of int32
        Administrative codes; 0 when unknown.
    city : tuple of str
    capabilities : ndarray of uint8
        :class:`~pyomni.model.Capability` bit masks.
    daily_capacity : ndarray of int32
        Online shipments per day; 0 means unlimited.
    fixed_cost : ndarray of float64
        Cost of one shipment from the location (finite, >= 0).
    priority : ndarray of int32
        0 (most preferred) to 1000.
    franchise, is_open : ndarray of bool
    skus : tuple of str
        The SKU catalogue: unique, non-empty ids.

    Examples
    --------
    >>> from pyomni.model import Location, LocationKind
    >>> net = Network.from_locations([Location("SH-0001", LocationKind.STORE, 31.23, 121.47)], skus=["SKU-1"])
    >>> net.ids, net.lat.tolist(), net.skus
    (('SH-0001',), [31.23], ('SKU-1',))
    >>> net.lat[0] = 0.0
    Traceback (most recent call last):
    ...
    ValueError: assignment destination is read-only
    """

    __slots__ = ("ids", "kind", "lat", "lon", "province_code", "prefecture_code", "city", "capabilities",
                 "daily_capacity", "fixed_cost", "priority", "franchise", "is_open", "skus", "_index")

    #: Column types forced when reading CSV, so that ids such as ``"0042"`` and
    #: blank city names stay text instead of being inferred as numbers or nulls.
    CSV_COLUMN_TYPES: Mapping[str, pa.DataType] = types.MappingProxyType({"id": pa.string(), "city": pa.string()})

    ids: tuple[str, ...]
    kind: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    province_code: np.ndarray
    prefecture_code: np.ndarray
    city: tuple[str, ...]
    capabilities: np.ndarray
    daily_capacity: np.ndarray
    fixed_cost: np.ndarray
    priority: np.ndarray
    franchise: np.ndarray
    is_open: np.ndarray
    skus: tuple[str, ...]
    _index: dict[str, int]  # id -> index

    def __init__(self) -> None:
        raise TypeError("build a Network with Network.from_locations, from_records, from_arrow, from_parquet "
                        "or from_csv")

    # -- construction ---------------------------------------------------------
    @classmethod
    def _build(cls, columns: Mapping[str, Any], skus: Iterable[str]) -> Network:
        """The one validating constructor: ``columns`` holds every column, optional ones without nulls."""
        ids = _text_column(columns["id"], "id", allow_empty=False)
        return cls._assemble(
            ids=ids,
            kind=_code_column(columns["kind"], "kind", _parse_kind, _KIND_CODES, np.int8),
            lat=_float_column(columns["lat"], "lat", low=-90.0, high=90.0, error=errors.InvalidCoordinates),
            lon=_float_column(columns["lon"], "lon", low=-180.0, high=180.0, error=errors.InvalidCoordinates),
            province_code=_int_column(columns["province_code"], "province_code", low=0, high=_INT32_MAX,
                                      dtype=np.int32),
            prefecture_code=_int_column(columns["prefecture_code"], "prefecture_code", low=0, high=_INT32_MAX,
                                        dtype=np.int32),
            city=_text_column(columns["city"], "city", allow_empty=True),
            capabilities=_code_column(columns["capabilities"], "capabilities", _parse_capabilities,
                                      _CAPABILITY_MASKS, np.uint8),
            daily_capacity=_int_column(columns["daily_capacity"], "daily_capacity", low=0, high=_INT32_MAX,
                                       dtype=np.int32),
            fixed_cost=_float_column(columns["fixed_cost"], "fixed_cost", low=0.0, high=math.inf),
            priority=_int_column(columns["priority"], "priority", low=0, high=_MAX_PRIORITY, dtype=np.int32),
            franchise=_bool_column(columns["franchise"], "franchise"),
            is_open=_bool_column(columns["is_open"], "is_open"),
            skus=_sku_catalogue(skus),
            _index=_id_index(ids),
        )

    @classmethod
    def _assemble(cls, **state: Any) -> Network:
        """Set already-validated state on a new instance and make its arrays read-only."""
        network = object.__new__(cls)
        for name, value in state.items():
            object.__setattr__(network, name, _freeze(value) if isinstance(value, np.ndarray) else value)
        return network

    @classmethod
    def from_locations(cls, locations: Iterable[Location], skus: Iterable[str] = ()) -> Network:
        """Build a network from :class:`~pyomni.model.Location` objects.

        Parameters
        ----------
        locations : iterable of Location
        skus : iterable of str, optional
            The SKU catalogue.

        Raises
        ------
        pyomni.errors.InvalidArgument
            For any invalid value (a subclass such as ``DuplicateId`` or
            ``InvalidCoordinates`` when one fits); ``field`` names the row.

        Examples
        --------
        >>> from pyomni.model import Location, LocationKind
        >>> Network.from_locations([Location("BJ-1", LocationKind.STORE, 39.9, 116.4)]).ids
        ('BJ-1',)
        """
        locations = list(validate.sequence(locations, "locations", what="a sequence of Location"))
        for i, location in enumerate(locations):
            if not isinstance(location, Location):
                raise errors.InvalidArgument(f"location {i} is not a Location: {shown(location)}",
                                             field=f"locations[{i}]")
        columns = {name: [getattr(location, name) for location in locations] for name in _COLUMNS}
        return cls._build(columns, skus)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], skus: Iterable[str] = ()) -> Network:
        """Build a network from dicts keyed by column name (JSON, database rows).

        ``id``, ``lat`` and ``lon`` are required; other keys of
        :data:`LOCATION_SCHEMA` are optional (a missing key or ``None`` takes
        the default) and keys outside it are ignored.

        Examples
        --------
        >>> net = Network.from_records([{"id": "GZ-1", "lat": 23.13, "lon": 113.26, "capabilities": "ship"}])
        >>> net.location("GZ-1").capabilities
        <Capability.SHIP: 1>
        """
        records = list(validate.sequence(records, "locations", what="a sequence of mappings"))
        columns: dict[str, list[Any]] = {}
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise errors.InvalidArgument(f"location {i} is not a mapping: {shown(record)}", field=f"locations[{i}]")
        for name in _COLUMNS:
            values = [record.get(name) for record in records]
            if name in _DEFAULTS:
                default = _DEFAULTS[name]
                values = [default if value is None else value for value in values]
            columns[name] = values
        return cls._build(columns, skus)

    @classmethod
    def from_arrow(cls, table: pa.Table | pa.RecordBatch, skus: Iterable[str] = ()) -> Network:
        """Build a network from an Arrow table shaped like :data:`LOCATION_SCHEMA`.

        ``id``, ``lat`` and ``lon`` are required. Optional columns may be
        absent or hold nulls (both take the default); ``kind`` and
        ``capabilities`` may be text (``"warehouse"``, ``"ship|pickup"``,
        case-insensitive) or integer codes. Other columns are ignored.

        Raises
        ------
        pyomni.errors.InvalidArgument
            A required column is missing (``field`` is the column name) or a
            value is invalid (``field`` is ``"locations[i].column"``).

        Examples
        --------
        >>> import pyarrow as pa
        >>> table = pa.table({"id": ["SZ-1"], "lat": [22.54], "lon": [114.06], "kind": ["dark_store"]})
        >>> Network.from_arrow(table).location(0).kind
        <LocationKind.DARK_STORE: 3>
        """
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not isinstance(table, pa.Table):
            raise errors.InvalidArgument(f"expected a pyarrow Table, got {type(table).__name__}", field="table")
        columns: dict[str, Any] = {}
        for name in _COLUMNS:
            if name not in table.column_names:
                if name in _REQUIRED:
                    raise errors.InvalidArgument(f"the location table has no {shown(name)} column", field=name)
                columns[name] = [_DEFAULTS[name]] * table.num_rows
                continue
            column = table.column(name)
            if column.null_count == 0:
                columns[name] = column.to_numpy(zero_copy_only=False)
            elif name in _DEFAULTS:
                default = _DEFAULTS[name]
                columns[name] = [default if value is None else value for value in column.to_pylist()]
            else:
                columns[name] = column.to_pylist()  # the validators name the first missing value
        return cls._build(columns, skus)

    @classmethod
    def from_parquet(cls, path: str | os.PathLike[str], skus: Iterable[str] = ()) -> Network:
        """Read a network from a Parquet file (see :meth:`from_arrow` for the columns).

        Examples
        --------
        >>> import tempfile, pathlib, pyarrow.parquet as pq
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "net.parquet"
        >>> net = Network.from_records([{"id": "CD-1", "lat": 30.66, "lon": 104.07}])
        >>> pq.write_table(net.to_arrow(), path)
        >>> Network.from_parquet(path).ids
        ('CD-1',)
        """
        try:
            table = pq.read_table(path)
        except pa.ArrowInvalid as exc:
            raise errors.InvalidArgument(f"cannot read {shown(os.fspath(path))} as Parquet: {exc}",
                                         field="path") from None
        return cls.from_arrow(table, skus)

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str], skus: Iterable[str] = ()) -> Network:
        """Read a network from a CSV file with a header row (see :meth:`from_arrow` for the columns).

        ``id`` and ``city`` are always read as text (:attr:`CSV_COLUMN_TYPES`);
        an empty cell in an optional numeric column takes the default.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "net.csv"
        >>> _ = path.write_text("id,lat,lon,kind\\n0042,31.2,121.5,warehouse\\n")
        >>> Network.from_csv(path).ids
        ('0042',)
        """
        options = pacsv.ConvertOptions(column_types=dict(cls.CSV_COLUMN_TYPES))
        try:
            table = pacsv.read_csv(path, convert_options=options)
        except pa.ArrowInvalid as exc:
            raise errors.InvalidArgument(f"cannot read {shown(os.fspath(path))} as CSV: {exc}",
                                         field="path") from None
        return cls.from_arrow(table, skus)

    def with_skus(self, skus: Iterable[str]) -> Network:
        """A network with the same locations and another SKU catalogue.

        The location arrays are shared, not copied: they are read-only.

        Examples
        --------
        >>> net = Network.from_records([{"id": "S-1", "lat": 31.2, "lon": 121.5}])
        >>> net.with_skus(["A", "B"]).skus, net.skus
        (('A', 'B'), ())
        """
        state = {name: getattr(self, name) for name in self.__slots__}
        state["skus"] = _sku_catalogue(skus)
        return type(self)._assemble(**state)

    # -- access ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[Location]:
        columns = [getattr(self, name) for name in _ATTRIBUTES]
        for row in zip(*(column if isinstance(column, tuple) else column.tolist() for column in columns), strict=True):
            yield _location_from_row(row)

    def __contains__(self, location_id: object) -> bool:
        return isinstance(location_id, str) and location_id in self._index

    def __repr__(self) -> str:
        counts = np.bincount(self.kind, minlength=len(_KIND_NAMES))
        kinds = ", ".join(f"{counts[k]} {_KIND_NAMES[k]}" for k in range(1, len(_KIND_NAMES)) if counts[k])
        return f"<Network: {len(self)} locations ({kinds or 'empty'}), {len(self.skus)} SKUs>"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Network is immutable; use with_skus() or build a new one")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Network is immutable")

    def __reduce__(self):
        # Immutability blocks the default slot-by-slot unpickling; rebuild from
        # validated state instead (networks travel to worker processes).
        return (_restore_network, ({name: getattr(self, name) for name in self.__slots__},))

    def index_of(self, location_id: str) -> int:
        """Dense index of a location id.

        Raises
        ------
        pyomni.errors.UnknownLocation
            The id is not in the network (``field="location"``).

        Examples
        --------
        >>> net = Network.from_records([{"id": "A", "lat": 0, "lon": 0}, {"id": "B", "lat": 1, "lon": 1}])
        >>> net.index_of("B")
        1
        """
        index = self._index.get(location_id) if isinstance(location_id, str) else None
        if index is None:
            raise errors.UnknownLocation(f"no location {shown(location_id)} in the network", field="location")
        return index

    def location(self, id_or_index: str | int) -> Location:
        """The :class:`~pyomni.model.Location` with this id, or at this index.

        Raises
        ------
        pyomni.errors.UnknownLocation
            Unknown id, or an index outside ``0 .. len(self) - 1``.

        Examples
        --------
        >>> net = Network.from_records([{"id": "A", "lat": 31.2, "lon": 121.5, "priority": 2}])
        >>> net.location("A").priority, net.location(0).id
        (2, 'A')
        """
        if isinstance(id_or_index, str):
            i = self.index_of(id_or_index)
        elif isinstance(id_or_index, (int, np.integer)) and not isinstance(id_or_index, (bool, np.bool_)):
            i = int(id_or_index)
            if not 0 <= i < len(self):
                raise errors.UnknownLocation(f"location index {i} outside 0..{len(self) - 1}", field="location")
        else:
            raise errors.UnknownLocation(f"expected a location id or index, got {shown(id_or_index)}",
                                         field="location")
        columns = [getattr(self, name) for name in _ATTRIBUTES]
        return _location_from_row([column[i] if isinstance(column, tuple) else column[i].item() for column in columns])

    def to_arrow(self) -> pa.Table:
        """The locations as a table with :data:`LOCATION_SCHEMA`.

        ``kind`` and ``capabilities`` are written as text (``"store"``,
        ``"ship|pickup"``, ``"none"``), so that writing the table to CSV or
        Parquet and reading it back with :meth:`from_csv` /
        :meth:`from_parquet` gives the same network. The SKU catalogue is not
        part of the table.

        Examples
        --------
        >>> net = Network.from_records([{"id": "A", "lat": 31.2, "lon": 121.5}])
        >>> net.to_arrow().column("capabilities").to_pylist()
        ['ship|pickup']
        """
        return pa.table({
            "id": pa.array(self.ids, pa.string()),
            "kind": pa.array(_KIND_NAMES[self.kind], pa.string()),
            "lat": self.lat,
            "lon": self.lon,
            "province_code": self.province_code,
            "prefecture_code": self.prefecture_code,
            "city": pa.array(self.city, pa.string()),
            "capabilities": pa.array(_CAPABILITY_NAMES[self.capabilities], pa.string()),
            "daily_capacity": self.daily_capacity,
            "fixed_cost": self.fixed_cost,
            "priority": self.priority,
            "franchise": self.franchise,
            "is_open": self.is_open,
        }, schema=LOCATION_SCHEMA)


def _location_from_row(row: Sequence[Any]) -> Location:
    """A Location from one row of plain Python values, in :data:`LOCATION_SCHEMA` column order."""
    values = dict(zip(_COLUMNS, row, strict=True))
    values["kind"] = LocationKind(values["kind"])
    values["capabilities"] = Capability(values["capabilities"])
    return Location(**values)


def _restore_network(state: dict[str, Any]) -> Network:
    return Network._assemble(**state)
