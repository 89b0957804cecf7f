"""Shared fixtures of the engine tests.

* ``city_net`` -- a hand-made network of ten locations in Shanghai, Suzhou,
  Hangzhou, Beijing and Guangzhou with known coordinates and capabilities, and
  five SKUs. Distances between its cities are hundreds of kilometres, within a
  city a few, so "nearest wins" cases are unambiguous.
* ``clock`` -- a fake clock the tests advance by hand (reservation expiry).
* ``backend`` -- parametrised over the compiled core (``native``) and the
  plain-Python reference (``reference``): a test that asks for ``eng`` or
  ``make_engine`` runs once on each.
* ``snapshot`` -- everything observable about an engine's state, to prove a
  failed call changed nothing.
* ``Checked`` -- an engine proxy that checks the invariants after every call.
"""

from __future__ import annotations

import math

import pytest

import pyomni
from pyomni import Capability, Location, LocationKind


class Checked:
    """Proxy an engine, checking its invariants after every call."""

    def __init__(self, eng: pyomni.Engine) -> None:
        self._eng = eng

    def __getattr__(self, name):
        attr = getattr(self._eng, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            finally:
                self._eng.check_invariants()

        return call


SHIP = Capability.SHIP
PICKUP = Capability.PICKUP
SAME_DAY = Capability.SAME_DAY
ALL_CAPS = SHIP | PICKUP | SAME_DAY

#: id, kind, lat, lon, capabilities, fixed_cost
CITY_LOCATIONS = (
    ("SH-PEOPLE", LocationKind.STORE, 31.2304, 121.4737, ALL_CAPS, 8.0),      # People's Square
    ("SH-PUDONG", LocationKind.STORE, 31.2215, 121.5447, ALL_CAPS, 8.0),      # Lujiazui, ~6.8 km east
    ("SH-XUHUI", LocationKind.STORE, 31.1880, 121.4365, PICKUP, 8.0),         # Xujiahui: pickup only, no SHIP
    ("SZ-CENTRE", LocationKind.STORE, 31.2990, 120.5853, SHIP | PICKUP, 8.0),  # Suzhou, ~85 km from Shanghai
    ("HZ-WESTLAKE", LocationKind.STORE, 30.2741, 120.1551, ALL_CAPS, 8.0),    # Hangzhou, ~165 km
    ("BJ-DONGCHENG", LocationKind.STORE, 39.9042, 116.4074, ALL_CAPS, 8.0),   # Beijing, ~1070 km
    ("BJ-HAIDIAN", LocationKind.STORE, 39.9890, 116.3060, SHIP | PICKUP, 8.0),
    ("GZ-TIANHE", LocationKind.STORE, 23.1291, 113.2644, ALL_CAPS, 8.0),      # Guangzhou, ~1210 km
    ("WH-JIADING", LocationKind.WAREHOUSE, 31.3838, 121.2654, SHIP, 5.0),     # Shanghai's warehouse
    ("WH-BEIJING", LocationKind.WAREHOUSE, 39.7500, 116.5500, SHIP, 5.0),
)
SKUS = ("SKU-A", "SKU-B", "SKU-C", "SKU-D", "SKU-E")

#: Customer addresses.
SHANGHAI = (31.2304, 121.4737)
BEIJING = (39.9042, 116.4074)
HANGZHOU = (30.2741, 120.1551)
GUANGZHOU = (23.1291, 113.2644)


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance, written independently of pyomni."""
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


def make_city_net(**overrides: dict) -> pyomni.Network:
    """The hand-made network; ``overrides`` maps a location id to Location fields to change."""
    locations = []
    for loc_id, kind, lat, lon, caps, fixed in CITY_LOCATIONS:
        fields = {"capabilities": caps, "fixed_cost": fixed, "city": loc_id.split("-")[0]}
        fields.update(overrides.get(loc_id, {}))
        locations.append(Location(loc_id, kind, lat, lon, **fields))
    return pyomni.Network.from_locations(locations, skus=SKUS)


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def city_net() -> pyomni.Network:
    return make_city_net()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=[True, False], ids=["native", "reference"])
def backend(request) -> bool:
    """``native=`` argument of the engine under test."""
    return request.param


@pytest.fixture
def make_engine(backend, city_net, clock):
    """Build an engine on the current backend (default: the city network and the fake clock)."""

    def make(network: pyomni.Network | None = None, **kwargs) -> pyomni.Engine:
        kwargs.setdefault("clock", clock)
        eng = pyomni.Engine(network if network is not None else city_net, native=backend, **kwargs)
        assert eng.native is backend
        return eng

    return make


@pytest.fixture
def eng(make_engine) -> pyomni.Engine:
    return make_engine()


class Snapshot:
    """Everything observable about an engine's state: the stock table (cell order included), stats and reservations.

    A plain class with a short ``repr`` on purpose: a failed ``==`` on two large
    ledgers must not make pytest diff thousands of rows.
    """

    def __init__(self, eng: pyomni.Engine) -> None:
        self.rows = tuple(tuple(r.values()) for r in eng.stock_table().to_pylist())
        stats = eng.stats()
        stats.pop("memory_bytes")      # native capacity bookkeeping, not state
        stats.pop("bytes_per_cell")
        self.stats = stats
        self.reservations = tuple(eng.reservations())

    @property
    def cells(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        return {(r[0], r[1]): tuple(r[2:]) for r in self.rows}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return (self.rows, self.stats, self.reservations) == (other.rows, other.stats, other.reservations)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        on_hand = sum(r[2] for r in self.rows)
        reserved = sum(r[3] for r in self.rows)
        return (f"<Snapshot {len(self.rows)} cells, on_hand={on_hand}, reserved={reserved}, "
                f"hash={hash(self.rows) & 0xFFFF:04x}, stats={self.stats}, {len(self.reservations)} reservations>")


@pytest.fixture
def snapshot():
    """``snapshot(eng)`` -> :class:`Snapshot`."""
    return Snapshot
