"""Ledger benchmarks: stock events and bulk loads through Arrow (DESIGN.md §6: events, load, memory).

Groups
------
``stock-events``
    ``Engine.apply_stock_events`` of one Arrow table of 1,000,000 events (receive /
    sale / adjust, on existing cells of the ≈10.45M-cell demo ledger), native; the
    baseline is the plain-Python reference applying the first 100,000 of the same
    events to those cells. Target: ≥ 2 million events per second.
``load``
    The whole demo opening stock (≈10.45 million ``set`` events, one per cell) into
    a fresh native engine; the baseline loads the first 200,000 rows of the same
    table into a fresh reference engine. Targets: 10 million cells in ≤ 5 s, and
    ≤ 32 bytes per cell.

Each table is built before timing; each benchmark checks the ledger afterwards
against totals computed independently with NumPy. Timings are recorded, never
asserted (noisy shared machine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import pyomni
from pyomni.io import STOCK_EVENT_SCHEMA

EVENT_SEED = 31
N_EVENTS = 1_000_000
N_REFERENCE_EVENTS = 100_000
EVENT_ROUNDS = 5
N_REFERENCE_LOAD_ROWS = 200_000
LOAD_ROUNDS = {"native": 2, "reference": 3}
EVENT_KINDS = np.array(["receive", "sale", "adjust"])
RECEIVE, SALE, ADJUST = range(3)

# Seconds per event of each backend measured so far in this run (native runs first), so that the
# baseline's row can carry the ratio.
_seconds_per_event: dict[tuple[str, str], float] = {}


def _median_seconds(benchmark) -> float | None:
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else float(stats.stats.median)


def _record_rate(benchmark, group: str, backend: str, n_events: int) -> None:
    """Put events per second (and, for the baseline, the native/reference speed ratio) in extra_info."""
    median = _median_seconds(benchmark)
    if median is None:
        return
    per_event = median / n_events
    _seconds_per_event[(group, backend)] = per_event
    benchmark.extra_info["events"] = n_events
    benchmark.extra_info["median_s"] = round(median, 4)
    benchmark.extra_info["events_per_s"] = round(1.0 / per_event)
    native = _seconds_per_event.get((group, "native"))
    if backend == "reference" and native is not None:
        benchmark.extra_info["native_over_reference_events_per_s"] = round(per_event / native, 1)


@dataclass
class Cells:
    """Ledger cells as NumPy columns: location index, SKU index, on-hand, reserved, safety."""

    loc: np.ndarray
    sku: np.ndarray
    on_hand: np.ndarray
    reserved: np.ndarray
    safety: np.ndarray

    @classmethod
    def of(cls, engine: pyomni.Engine) -> Cells:
        table = engine.stock_table()

        def indices(name: str) -> np.ndarray:
            return table.column(name).combine_chunks().indices.to_numpy().astype(np.int64)

        def values(name: str) -> np.ndarray:
            return table.column(name).to_numpy().astype(np.int64)

        return cls(indices("location"), indices("sku"), values("on_hand"), values("reserved"), values("safety"))

    def sorted_by_key(self, n_skus: int) -> tuple[np.ndarray, ...]:
        key = self.loc * n_skus + self.sku
        order = np.argsort(key)
        return key[order], self.on_hand[order], self.reserved[order], self.safety[order]


@dataclass
class EventBatch:
    table: pa.Table          # the events, STOCK_EVENT_SCHEMA
    cell: np.ndarray         # the opening cell (row of Cells) each event touches
    delta: np.ndarray        # its signed change of on-hand


def build_event_batch(network: pyomni.Network, opening: Cells, n: int, seed: int) -> EventBatch:
    """``n`` receive / sale / adjust events (≈40/40/20 %) on random existing cells, none of which can fail.

    Decreases (sales, negative adjustments) are kept only while their running sum on
    a cell stays within the cell's opening on-hand (nothing is reserved); the few
    beyond it become the matching increases. So the batch, and every prefix of it,
    is valid when applied to the opening stock.
    """
    rng = np.random.default_rng(seed)
    cell = rng.integers(0, len(opening.loc), n)
    kind = rng.choice(3, size=n, p=[0.4, 0.4, 0.2])
    qty = np.where(kind == RECEIVE, rng.integers(1, 11, n), rng.integers(1, 4, n))
    qty = np.where((kind == ADJUST) & (rng.random(n) < 0.5), -qty, qty)
    delta = np.where(kind == SALE, -qty, qty)

    # Running sum of decreases per cell, in event order.
    decrease = np.where(delta < 0, -delta, 0)
    by_cell = np.argsort(cell, kind="stable")
    d = decrease[by_cell]
    running = np.cumsum(d)
    first = np.r_[True, cell[by_cell][1:] != cell[by_cell][:-1]]
    running -= np.maximum.accumulate(np.where(first, running - d, 0))
    unsafe = np.zeros(n, dtype=bool)
    unsafe[by_cell] = (d > 0) & (running > opening.on_hand[cell[by_cell]])
    kind = np.where(unsafe & (kind == SALE), RECEIVE, kind)
    qty = np.where(unsafe & (kind == ADJUST), -qty, qty)
    delta = np.where(unsafe, -delta, delta)

    ids = pa.array(network.ids, pa.string())
    skus = pa.array(network.skus, pa.string())
    table = pa.Table.from_arrays([
        ids.take(pa.array(opening.loc[cell])),
        skus.take(pa.array(opening.sku[cell])),
        pa.array(EVENT_KINDS[kind].tolist(), pa.string()),
        pa.array(qty.astype(np.int64)),
        pa.nulls(n, pa.int64()),
    ], schema=STOCK_EVENT_SCHEMA)
    return EventBatch(table, cell, delta.astype(np.int64))


def assert_cells(engine: pyomni.Engine, n_skus: int, expected: Cells) -> None:
    """The engine's cells are exactly ``expected`` (compared by (location, SKU))."""
    got_key, got_on_hand, got_reserved, got_safety = Cells.of(engine).sorted_by_key(n_skus)
    key, on_hand, reserved, safety = expected.sorted_by_key(n_skus)
    np.testing.assert_array_equal(got_key, key)
    np.testing.assert_array_equal(got_on_hand, on_hand)
    np.testing.assert_array_equal(got_reserved, reserved)
    np.testing.assert_array_equal(got_safety, safety)


def opening_rows(cells: Cells, rows: np.ndarray, network: pyomni.Network) -> pa.Table:
    """``set`` events recreating the given opening cells (on-hand and safety)."""
    return pa.Table.from_arrays([
        pa.array(network.ids, pa.string()).take(pa.array(cells.loc[rows])),
        pa.array(network.skus, pa.string()).take(pa.array(cells.sku[rows])),
        pa.repeat(pa.scalar("set", pa.string()), len(rows)),
        pa.array(cells.on_hand[rows]),
        pa.array(cells.safety[rows]),
    ], schema=STOCK_EVENT_SCHEMA)


@pytest.fixture(scope="module")
def ledger_engine(make_native_engine: Callable[[], pyomni.Engine]) -> pyomni.Engine:
    """A native engine of its own (the events change stock), loaded with the full demo stock."""
    return make_native_engine()


@pytest.fixture(scope="module")
def opening(ledger_engine: pyomni.Engine) -> Cells:
    return Cells.of(ledger_engine)


@pytest.fixture(scope="module")
def events(network: pyomni.Network, opening: Cells) -> EventBatch:
    return build_event_batch(network, opening, N_EVENTS, EVENT_SEED)


@pytest.mark.benchmark(group="stock-events")
def test_stock_events_native(benchmark, network: pyomni.Network, ledger_engine: pyomni.Engine, opening: Cells,
                             events: EventBatch) -> None:
    touched = np.unique(events.cell)
    reset = opening_rows(opening, touched, network)  # puts every touched cell back to its opening state
    applied = []

    def restore_opening() -> tuple[tuple, dict]:
        ledger_engine.apply_stock_events(reset)  # untimed: pytest-benchmark times only ``apply``
        return (), {}

    def apply() -> None:
        applied.append(ledger_engine.apply_stock_events(events.table))

    benchmark.pedantic(apply, setup=restore_opening, rounds=EVENT_ROUNDS, iterations=1, warmup_rounds=0)

    assert applied == [N_EVENTS] * len(applied)
    net = np.bincount(events.cell, weights=events.delta, minlength=len(opening.loc)).astype(np.int64)
    assert_cells(ledger_engine, len(network.skus),
                 Cells(opening.loc, opening.sku, opening.on_hand + net, opening.reserved, opening.safety))
    total = pc.sum(ledger_engine.stock_table().column("on_hand")).as_py()
    assert total == int(opening.on_hand.sum()) + int(events.delta.sum())
    ledger_engine.check_invariants()
    kinds, counts = np.unique(events.table.column("event").to_numpy(zero_copy_only=False), return_counts=True)
    benchmark.extra_info["mix"] = {str(k): int(c) for k, c in zip(kinds, counts)}
    benchmark.extra_info["cells"] = len(opening.loc)
    # Not asserted here (the load group asserts the target on a fresh load): recorded to show drift.
    benchmark.extra_info["bytes_per_cell_after"] = round(ledger_engine.stats()["bytes_per_cell"], 2)
    _record_rate(benchmark, "stock-events", "native", N_EVENTS)


@pytest.mark.benchmark(group="stock-events")
def test_stock_events_reference(benchmark, network: pyomni.Network, opening: Cells, events: EventBatch) -> None:
    head = events.table.slice(0, N_REFERENCE_EVENTS)
    cell = events.cell[:N_REFERENCE_EVENTS]
    touched = np.unique(cell)
    cells_table = opening_rows(opening, touched, network)  # only the cells these events touch
    engines = []

    def fresh_engine() -> tuple[tuple, dict]:
        engine = pyomni.Engine(network, native=False)
        engine.apply_stock_events(cells_table)
        engines[:] = [engine]
        return (engine,), {}

    benchmark.pedantic(lambda engine: engine.apply_stock_events(head), setup=fresh_engine,
                       rounds=3, iterations=1, warmup_rounds=0)

    net = np.bincount(cell, weights=events.delta[:N_REFERENCE_EVENTS], minlength=len(opening.loc)).astype(np.int64)
    expected = Cells(opening.loc[touched], opening.sku[touched], opening.on_hand[touched] + net[touched],
                     opening.reserved[touched], opening.safety[touched])
    assert_cells(engines[0], len(network.skus), expected)
    engines[0].check_invariants()
    _record_rate(benchmark, "stock-events", "reference", N_REFERENCE_EVENTS)


@pytest.mark.benchmark(group="load")
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_load_cells(benchmark, backend: str, network: pyomni.Network, stock: pa.Table) -> None:
    table = stock if backend == "native" else stock.slice(0, N_REFERENCE_LOAD_ROWS)
    loaded = []

    def fresh_engine() -> tuple[tuple, dict]:
        loaded.clear()  # drop the previous round's engine first: only one large ledger alive at a time
        return (pyomni.Engine(network, native=backend == "native"),), {}

    def load(engine: pyomni.Engine) -> None:
        engine.apply_stock_events(table)
        loaded.append(engine)

    benchmark.pedantic(load, setup=fresh_engine, rounds=LOAD_ROUNDS[backend], iterations=1, warmup_rounds=0)

    engine = loaded[-1]
    stats = engine.stats()
    assert stats["cells"] == table.num_rows  # one cell per row: the demo stock repeats no (location, SKU)
    exported = engine.stock_table()
    assert pc.sum(exported.column("on_hand")).as_py() == pc.sum(table.column("qty")).as_py()
    assert pc.sum(exported.column("safety")).as_py() == pc.sum(table.column("safety")).as_py()
    assert pc.sum(exported.column("reserved")).as_py() == 0
    engine.check_invariants()
    benchmark.extra_info["cells"] = stats["cells"]
    if backend == "native":
        assert stats["bytes_per_cell"] <= 32.0, stats
        benchmark.extra_info["bytes_per_cell"] = round(stats["bytes_per_cell"], 2)
        benchmark.extra_info["memory_mb"] = round(stats["memory_bytes"] / 2**20, 1)
    median = _median_seconds(benchmark)
    if median is not None:
        benchmark.extra_info["load_s"] = round(median, 3)
        benchmark.extra_info["seconds_per_10m_cells"] = round(median * 1e7 / table.num_rows, 3)
    _record_rate(benchmark, "load", backend, table.num_rows)
