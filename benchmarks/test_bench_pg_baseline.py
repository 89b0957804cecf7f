"""PostgreSQL doing the durable check-and-hold: the baseline side of the durability benchmarks.

One throwaway PostgreSQL server (``pg_baseline.PostgresServer``: fsync,
synchronous_commit and full_page_writes on, Unix socket only) holds 1,000 stock
cells (10 locations x 100 SKUs) plus one hot cell, each with 1,000,000 on hand.
Closed-loop clients (``loadgen.run_clients``, one thread and one connection each)
reserve ``QTY`` units per request for ≈3 s per case:

* ``hold-spread`` -- ``check_and_hold`` on a random cell of the 1,000, 1 and 8 clients;
* ``hold-hot`` -- every request on the one hot cell (one row lock: commits serialize), 1 and 8 clients;
* ``batch100-spread`` -- ``check_and_hold_many`` of 100 requests in one transaction, 8 clients.

Every hold is one commit acknowledged after its WAL flush (a batch: one commit
for 100). Checked after each case, on the whole database: sum(stock.reserved) ==
sum(reservations.qty) == successful holds x QTY, every cell's ``reserved`` equals
its reservations, and no request failed. ``test_pg_idempotency_and_races`` then
checks that a retried request id (alone, in a batch, or eight copies racing)
holds nothing more and that eight clients cannot oversell a scarce cell.

Figures (units/s, ops/s, p50/p99/max ms, per-client counts) go to each case's
``extra_info`` and are printed with ``-s``; nothing about speed is asserted. The
server is installed by ``make postgres``; without it the module is skipped.

    .venv/bin/python -m pytest benchmarks/test_bench_pg_baseline.py --benchmark-only -s -q
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("psycopg", reason="psycopg not installed: pip install -e '.[dev]'")

import pg_baseline as pgb  # noqa: E402  (benchmarks/ is on sys.path: pytest's rootdir-relative import)
from loadgen import LoadResult, Worker, format_row, run_clients  # noqa: E402

pytestmark = pytest.mark.benchmark(group="pg-baseline")

N_LOCS, N_SKUS = 10, 100            # 1,000 cells
HOT = (1_000, 0)                    # the hot cell, outside the spread grid
SCARCE = (1_001, 0)                 # for the oversell race: room for exactly SCARCE_HOLDS holds
SCARCE_HOLDS = 20
ON_HAND = 1_000_000
QTY = 2                             # units per request
SECONDS = 3.0                       # measured time per case
WARMUP_OPS = 5                      # per client (prepares the statement on its connection)
BATCH = 100

CASES = [  # id, clients, batch size, hot cell?
    ("hold-spread-c1", 1, 1, False),
    ("hold-spread-c8", 8, 1, False),
    ("hold-hot-c1", 1, 1, True),
    ("hold-hot-c8", 8, 1, True),
    ("batch100-spread-c8", 8, BATCH, False),
]
RESULTS: dict[str, LoadResult] = {}


@dataclass
class Baseline:
    server: pgb.PostgresServer
    conn: Any                                     # autocommit admin connection
    holds: int = 0                                # successful holds so far (all cases, warm-up included)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, n: int) -> None:
        with self.lock:
            self.holds += n

    def check_totals(self) -> dict[str, int]:
        t = pgb.totals(self.conn)
        assert t["mismatched_cells"] == 0, t
        assert t["reserved"] == t["reserved_qty"] == self.holds * QTY, (t, self.holds)
        assert t["reservations"] == self.holds, (t, self.holds)
        return t


@pytest.fixture(scope="module")
def pg() -> Iterator[Baseline]:
    if pgb.find_postgres() is None:
        pytest.skip("PostgreSQL not installed: run `make postgres`")
    with pgb.PostgresServer() as server, server.connect() as conn:
        for name, value in (("fsync", "on"), ("synchronous_commit", "on"), ("full_page_writes", "on")):
            assert server.setting(conn, name) == value
        pgb.create_schema(conn)
        cells = [(loc, sku, ON_HAND) for loc in range(N_LOCS) for sku in range(N_SKUS)]
        cells += [(*HOT, ON_HAND), (*SCARCE, SCARCE_HOLDS * QTY)]
        pgb.load_stock(conn, cells)
        yield Baseline(server, conn)


class _HoldClient:
    """One closed-loop client: its own connection, its own seeded cell picks, its own hold tally.

    ``cell`` fixes the cell (``None``: a random one of the 1,000 per request); ``request_id``
    fixes the request id of every op (``None``: a fresh ``case-i-k`` per op).
    """

    def __init__(self, pg: Baseline, case: str, i: int, *, batch: int = 1, cell: tuple[int, int] | None = None,
                 request_id: str | None = None) -> None:
        self.pg, self.case, self.i, self.batch, self.fixed_cell, self.request_id = pg, case, i, batch, cell, request_id
        self.rng = random.Random(f"{case}/{i}")
        self.conn: Any = None
        self.held = 0

    def cell(self) -> tuple[int, int]:
        return self.fixed_cell or (self.rng.randrange(N_LOCS), self.rng.randrange(N_SKUS))

    def setup(self) -> None:
        self.conn = self.pg.server.connect()

    def teardown(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def op(self, k: int) -> int:
        rid = self.request_id or f"{self.case}-{self.i}-{k}"
        if self.batch == 1:
            n = int(pgb.check_and_hold(self.conn, rid, *self.cell(), QTY))
        else:
            items = [(f"{rid}-{j}", *self.cell(), QTY) for j in range(self.batch)]
            n = sum(pgb.check_and_hold_many(self.conn, items))
        self.held += n
        return n

    def worker(self) -> Worker:
        return Worker(self.op, setup=self.setup, teardown=self.teardown)


@pytest.mark.parametrize(("case", "clients", "batch", "hot"), CASES, ids=[c[0] for c in CASES])
def test_pg_check_and_hold(benchmark, pg: Baseline, case: str, clients: int, batch: int, hot: bool) -> None:
    hold_clients = [_HoldClient(pg, case, i, batch=batch, cell=HOT if hot else None) for i in range(clients)]
    warmup = WARMUP_OPS if batch == 1 else 2
    result = benchmark.pedantic(run_clients, args=(clients, lambda i: hold_clients[i].worker()),
                                kwargs={"seconds": SECONDS, "warmup_ops": warmup}, rounds=1, iterations=1)
    pg.add(sum(c.held for c in hold_clients))

    assert result.errors == 0, result.error_samples
    assert result.ops > 0 and min(result.per_client) > 0
    assert result.units == result.ops * batch, "every request should hold: the stock is ample"
    totals = pg.check_totals()

    RESULTS[case] = result
    print("\n" + format_row(f"pg {case}", result))
    benchmark.extra_info.update(result.as_dict())
    benchmark.extra_info.update({
        "batch": batch, "hot_cell": hot, "qty": QTY, "cells": N_LOCS * N_SKUS,
        "commits_per_s": round(result.op_rate, 1),       # one commit per op (hold or batch)
        "ms_per_commit_per_client": round(1e3 * clients / result.op_rate, 3) if result.op_rate else None,
        "reservations_total": totals["reservations"],
    })


def _check_idempotency_and_races(pg: Baseline) -> dict[str, Any]:
    conn = pg.conn
    before = pg.check_totals()

    # a retried request id holds nothing, alone or inside a batch
    some = "SELECT request_id, loc, sku, qty FROM reservations ORDER BY request_id LIMIT 10"
    existing = conn.execute(some).fetchall()
    if not existing:  # only this test selected: make some
        for k in range(10):
            assert pgb.check_and_hold(conn, f"idem-seed-{k}", k % N_LOCS, k, QTY)
        pg.add(10)
        existing = conn.execute(some).fetchall()
        before = pg.check_totals()
    rid, loc, sku, qty = existing[0]
    assert pgb.check_and_hold(conn, rid, loc, sku, qty) is False
    assert pgb.check_and_hold(conn, rid, *HOT, qty) is False        # same id, another cell: still nothing
    assert pg.check_totals() == before
    flags = pgb.check_and_hold_many(conn, [(r[0], r[1], r[2], r[3]) for r in existing] + [("idem-new", *HOT, QTY)])
    assert flags == [False] * len(existing) + [True]
    pg.add(1)
    assert pgb.check_and_hold_many(conn, [("idem-new", *HOT, QTY)]) == [False]

    # refused holds change nothing: more than is free, a cell that does not exist
    assert pgb.check_and_hold(conn, "idem-too-much", *HOT, ON_HAND + 1) is False
    assert pgb.check_and_hold(conn, "idem-no-cell", -5, -5, QTY) is False
    pg.check_totals()

    # eight copies of one new request id, released together: exactly one holds
    dups = [_HoldClient(pg, "race", i, cell=HOT, request_id="race-dup") for i in range(8)]
    race = run_clients(8, lambda i: dups[i].worker(), ops_per_client=1, warmup_ops=0, timeout=30)
    assert race.errors == 0, race.error_samples
    assert race.units == 1, race
    pg.add(1)

    # eight clients on a cell with room for SCARCE_HOLDS holds: exactly that many succeed, no oversell
    racers = [_HoldClient(pg, "scarce", i, cell=SCARCE) for i in range(8)]
    scarce = run_clients(8, lambda i: racers[i].worker(), ops_per_client=6, warmup_ops=0, timeout=30)
    assert scarce.errors == 0, scarce.error_samples
    assert scarce.units == SCARCE_HOLDS, scarce
    pg.add(SCARCE_HOLDS)
    row = conn.execute("SELECT on_hand, reserved FROM stock WHERE loc = %s AND sku = %s", SCARCE).fetchone()
    assert row == (SCARCE_HOLDS * QTY, SCARCE_HOLDS * QTY)
    after = pg.check_totals()
    return {"race_dup_holds": race.units, "scarce_holds": scarce.units, "scarce_attempts": scarce.ops,
            "reservations_total": after["reservations"]}


def test_pg_idempotency_and_races(benchmark, pg: Baseline) -> None:
    info = benchmark.pedantic(_check_idempotency_and_races, args=(pg,), rounds=1, iterations=1)
    benchmark.extra_info.update(info)
    # a summary of the cases that ran, with the ratios worth comparing against pyomni's side
    if RESULTS:
        print("\nPostgreSQL durable check-and-hold (this run):")
        for case, r in RESULTS.items():
            print("  " + format_row(case, r))
        r1, r8 = RESULTS.get("hold-spread-c1"), RESULTS.get("hold-spread-c8")
        rb = RESULTS.get("batch100-spread-c8")
        if r1 and r8:
            benchmark.extra_info["spread_c8_over_c1"] = round(r8.rate / r1.rate, 2)
            print(f"  8 clients / 1 client (spread): {r8.rate / r1.rate:.2f}x")
        if r8 and rb:
            benchmark.extra_info["batch100_over_single_c8"] = round(rb.rate / r8.rate, 2)
            print(f"  batch of {BATCH} / single holds (8 clients): {rb.rate / r8.rate:.2f}x")
