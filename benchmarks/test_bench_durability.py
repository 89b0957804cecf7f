"""Durable check-and-hold: pyomni's server (journal, ``--fsync always``) against PostgreSQL doing the same job.

Both sides acknowledge a hold only after it is on disk: PostgreSQL commits with
``synchronous_commit=on`` (one WAL flush per commit), pyomni answers once the
journal record is fdatasync'ed (its writer group-commits everything pending).
Closed-loop clients (``loadgen.run_clients``: one thread, one connection or
channel each) run ≈``SECONDS`` per case, the two systems back to back, so each
ratio comes from one stretch of this noisy shared machine:

* ``unary`` -- one hold per request: PostgreSQL's one-statement guarded hold
  (``pg_baseline.check_and_hold``: insert the reservation with a unique request
  id if the cell has the units, then the guarded ``UPDATE``), pyomni's
  ``RouteOrder`` (which also *decides* where the unit comes from: the nearest
  stocked store of a 500-store network) -- at 1, 8 and 64 clients;
* ``batch`` -- 100 holds per request: one PostgreSQL transaction
  (``check_and_hold_many``), one ``RouteOrders`` call (one journal commit);
* ``hot`` -- every hold on the same cell (PostgreSQL: one row lock; pyomni: a
  SKU stocked at one store only), 8 clients.

A third column runs the same engine embedded (``Engine.open(dir, fsync="always")``
called from client threads in this process, no gRPC): what the journal and the
engine cost without the Python gRPC stack.

Checked after every case, on both sides: every acknowledged hold is there
(PostgreSQL: sum reserved == holds x qty == reservations; pyomni: the holds
acknowledged equal the reserved units of the SKUs it sold, and the journal's
last record is durable). ``test_durability_summary`` prints the table with the
ratios, writes ``reports/durability.json`` and plots ``reports/durability.png``.
Other figures here: one raw fdatasync (the bound of a single durable call), the
journal bytes of a one-line hold record, and recovery of a 10-million-cell
snapshot plus 1 million journal records.

    make postgres
    .venv/bin/python -m pytest benchmarks/test_bench_durability.py --benchmark-only -s -q
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import pyomni
from grpc_server.launch import ServerProcess

pytest.importorskip("psycopg", reason="psycopg not installed: pip install -e '.[dev]'")

import pg_baseline as pgb  # noqa: E402  (benchmarks/ is on sys.path)
from loadgen import LoadResult, Worker, format_row, run_clients  # noqa: E402

SECONDS = float(os.environ.get("PYOMNI_BENCH_SECONDS", "3"))
N_SKUS = 200                      # SKUs stocked everywhere (1,000,000 each): the spread case
ON_HAND = 1_000_000
BATCH = 100
STORES = 500
REPO = Path(__file__).resolve().parent.parent
REPORTS = REPO / "reports"
CASES = [("unary", 1), ("unary", 8), ("unary", 64), ("batch", 1), ("batch", 8), ("batch", 64), ("hot", 8)]
RESULTS: dict[tuple[str, int], dict[str, LoadResult]] = {}
EXTRA: dict[str, Any] = {}


def _disk_dir(prefix: str) -> Path:
    """A fresh directory on a real disk (fsync on tmpfs would measure nothing)."""
    base = pgb.default_base_dir()
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


# -- PostgreSQL ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg() -> Iterator[Any]:
    if pgb.find_postgres() is None:
        pytest.skip("PostgreSQL not installed: run `make postgres`")
    with pgb.PostgresServer() as server, server.connect() as conn:
        assert [server.setting(conn, k) for k in ("fsync", "synchronous_commit")] == ["on", "on"]
        pgb.create_schema(conn)
        pgb.load_stock(conn, [(loc, sku, ON_HAND) for loc in range(STORES) for sku in range(N_SKUS)]
                       + [(0, 9_999, 10 * ON_HAND)])
        yield server


def _pg_worker(server: Any, case: str, clients: int, i: int, held: list[int]) -> Worker:
    rng = random.Random(f"pg/{case}/{clients}/{i}")
    state: dict[str, Any] = {}

    def cell() -> tuple[int, int]:
        return (0, 9_999) if case == "hot" else (rng.randrange(STORES), rng.randrange(N_SKUS))

    def op(k: int) -> int:
        rid = f"{case}-{clients}-{i}-{k}"
        if case == "batch":
            n = sum(pgb.check_and_hold_many(state["conn"], [(f"{rid}-{j}", *cell(), 1) for j in range(BATCH)]))
        else:
            n = int(pgb.check_and_hold(state["conn"], rid, *cell(), 1))
        held[i] += n
        return n

    return Worker(op, setup=lambda: state.__setitem__("conn", server.connect()),
                  teardown=lambda: state["conn"].close())


# -- pyomni ------------------------------------------------------------------------------------------
def _bench_stock(network: pyomni.Network, spread: list[str], hot: str, hot_store: str) -> pa.Table:
    """ON_HAND of every spread SKU everywhere; the hot SKU at one store only (zero elsewhere)."""
    rows = [(loc, s, ON_HAND) for loc in network.ids for s in spread]
    rows += [(loc, hot, 0) for loc in network.ids if loc != hot_store] + [(hot_store, hot, 10 * ON_HAND)]
    return pa.table({"location": [r[0] for r in rows], "sku": [r[1] for r in rows],
                     "event": ["set"] * len(rows), "qty": [r[2] for r in rows]})


def _hold(router: Any, case: str, order: Any, k: int) -> int:
    """Op ``k`` of a client: one durable hold, or a batch of them; how many were held.

    ``router`` is a :class:`pyomni.Client` or an :class:`pyomni.Engine`: they route alike.
    """
    if case == "batch":
        orders = [order(k, j) for j in range(BATCH)]
        answers = router.route_orders(orders, request_ids=[f"r-{o.id}" for o in orders])
        return sum(1 for a in answers if isinstance(a, pyomni.Allocation) and a.reservation_id)
    o = order(k)
    return int(bool(router.route_order(o, request_id=f"r-{o.id}").reservation_id))


class PyomniSide:
    """One ``pyomni serve --fsync always`` on a 500-store demo network, stock set for the benchmark."""

    def __init__(self) -> None:
        self.dir = _disk_dir("pyomni-durable-")
        self.server = ServerProcess(self.dir / "data", ["--stores", str(STORES), "--warehouses", "4", "--skus",
                                                        "400", "--seed", "3", "--fsync", "always",
                                                        "--snapshot-every", "0", "--workers", "16"]).start()
        self.network = pyomni.demo_network(stores=STORES, warehouses=4, skus=400, seed=3)
        skus = list(self.network.skus)
        self.spread = skus[:N_SKUS]
        self.hot = skus[-1]
        store = int(pyomni.LocationKind.STORE)
        stores = [x for x, kind in zip(self.network.ids, self.network.kind) if int(kind) == store][:STORES]
        with pyomni.Client(self.server.address, timeout=120) as c:
            # no daily capacity limit: the benchmark holds far more than a day's orders per store
            c.upsert_locations([dataclasses.replace(x, daily_capacity=0) for x in self.network],
                               request_id="bench-capacity")
            c.apply_stock_events(_bench_stock(self.network, self.spread, self.hot, stores[0]), request_id="bench-stock")
        self.cities = list(zip(self.network.lat.tolist(), self.network.lon.tolist()))

    def reserved(self, skus: list[str]) -> int:
        with pyomni.Client(self.server.address, timeout=120) as c:
            return sum(level.reserved for s in skus for level in c.availability(s))

    def worker(self, case: str, clients: int, i: int, held: list[int]) -> Worker:
        rng = random.Random(f"pyomni/{case}/{clients}/{i}")
        state: dict[str, Any] = {}

        def order(k: int, j: int = 0) -> pyomni.Order:
            sku = self.hot if case == "hot" else rng.choice(self.spread)
            lat, lon = rng.choice(self.cities)
            return pyomni.Order(f"{case}-{clients}-{i}-{k}-{j}", [(sku, 1)], destination=(lat, lon))

        def op(k: int) -> int:
            n = _hold(state["client"], case, order, k)
            held[i] += n
            return n

        return Worker(op, setup=lambda: state.__setitem__("client", pyomni.Client(self.server.address, timeout=60)),
                      teardown=lambda: state["client"].close())

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class EmbeddedSide:
    """The same engine embedded (``Engine.open(dir, fsync="always")``, no gRPC): what the journal and the
    engine cost without the Python gRPC stack, from client threads in this process."""

    def __init__(self, network: pyomni.Network, spread: list[str], hot: str, stores: list[str]) -> None:
        self.dir = _disk_dir("pyomni-embedded-")
        self.engine = pyomni.Engine.open(self.dir, network, fsync="always", reservation_ttl=1e9)
        self.engine.upsert_locations([dataclasses.replace(x, daily_capacity=0) for x in network])
        self.engine.apply_stock_events(_bench_stock(network, spread, hot, stores[0]))
        self.spread, self.hot = spread, hot
        self.cities = list(zip(network.lat.tolist(), network.lon.tolist()))

    def reserved(self, skus: list[str]) -> int:
        state = self.engine.state()
        index = {s: i for i, s in enumerate(state.skus)}
        wanted = {index[s] for s in skus}
        return int(sum(r for s, r in zip(state.sku.tolist(), state.reserved.tolist()) if s in wanted))

    def worker(self, case: str, clients: int, i: int, held: list[int]) -> Worker:
        rng = random.Random(f"embedded/{case}/{clients}/{i}")
        eng = self.engine

        def order(k: int, j: int = 0) -> pyomni.Order:
            sku = self.hot if case == "hot" else rng.choice(self.spread)
            return pyomni.Order(f"{case}-{clients}-{i}-{k}-{j}", [(sku, 1)], destination=rng.choice(self.cities))

        def op(k: int) -> int:
            n = _hold(eng, case, order, k)
            held[i] += n
            return n

        return Worker(op)

    def close(self) -> None:
        self.engine.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def embedded(side: PyomniSide) -> Iterator[EmbeddedSide]:
    stores = [x for x, kind in zip(side.network.ids, side.network.kind)
              if int(kind) == int(pyomni.LocationKind.STORE)]
    e = EmbeddedSide(side.network, side.spread, side.hot, stores)
    yield e
    e.close()


@pytest.fixture(scope="module")
def side() -> Iterator[PyomniSide]:
    s = PyomniSide()
    yield s
    s.close()


# -- the cases ---------------------------------------------------------------------------------------
@pytest.mark.benchmark(group="durable-hold")
@pytest.mark.parametrize(("case", "clients"), CASES, ids=[f"{c}-{n}" for c, n in CASES])
def test_durable_hold(benchmark, pg: Any, side: PyomniSide, embedded: EmbeddedSide, case: str,
                      clients: int) -> None:
    pg_held, py_held, em_held = [0] * clients, [0] * clients, [0] * clients
    with pg.connect() as conn:
        pg_before = pgb.totals(conn)["reserved"]
    skus = [side.hot] if case == "hot" else side.spread
    py_before = side.reserved(skus)
    em_before = embedded.reserved(skus)
    warm = 2 if case == "batch" else 5

    def both() -> dict[str, LoadResult]:
        return {"postgres": run_clients(clients, lambda i: _pg_worker(pg, case, clients, i, pg_held),
                                        seconds=SECONDS, warmup_ops=warm, timeout=120),
                "pyomni": run_clients(clients, lambda i: side.worker(case, clients, i, py_held),
                                      seconds=SECONDS, warmup_ops=warm, timeout=120),
                "embedded": run_clients(clients, lambda i: embedded.worker(case, clients, i, em_held),
                                        seconds=SECONDS, warmup_ops=warm, timeout=120)}

    results = benchmark.pedantic(both, rounds=1, iterations=1)
    RESULTS[(case, clients)] = results
    # every acknowledged hold is there, on both sides, and nothing failed
    with pg.connect() as conn:
        assert pgb.totals(conn)["reserved"] - pg_before == sum(pg_held)
    assert side.reserved(skus) - py_before == sum(py_held)
    assert embedded.reserved(skus) - em_before == sum(em_held)
    for name, r in results.items():
        assert r.errors == 0, (name, r.error_samples)
        assert r.units > 0
    ratio = results["pyomni"].rate / results["postgres"].rate
    embedded_ratio = results["embedded"].rate / results["postgres"].rate
    benchmark.extra_info.update({**results["postgres"].as_dict("pg_"), **results["pyomni"].as_dict("pyomni_"),
                                 **results["embedded"].as_dict("embedded_"), "ratio": round(ratio, 2),
                                 "embedded_ratio": round(embedded_ratio, 2)})
    print(f"\n{case:>5} x{clients:<3} " + format_row("postgres", results["postgres"]))
    print(f"{case:>5} x{clients:<3} " + format_row("pyomni", results["pyomni"]) + f"  ratio {ratio:.2f}x")
    print(f"{case:>5} x{clients:<3} " + format_row("embedded", results["embedded"]) + f"  ratio {embedded_ratio:.2f}x")


@pytest.mark.benchmark(group="durable-hold")
def test_one_fdatasync(benchmark) -> None:
    """The floor of any single durable call here: one 4 KiB write + fdatasync, median of 500."""
    d = _disk_dir("fsync-")
    fd = os.open(d / "probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    times = []

    def probe() -> None:
        for _ in range(500):
            t = time.perf_counter()
            os.write(fd, b"x" * 4096)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)

    benchmark.pedantic(probe, rounds=1, iterations=1)
    os.close(fd)
    shutil.rmtree(d, ignore_errors=True)
    EXTRA["fdatasync_ms"] = statistics.median(times) * 1e3
    benchmark.extra_info["fdatasync_p50_ms"] = round(EXTRA["fdatasync_ms"], 3)
    assert len(times) == 500
    print(f"\nwrite 4 KiB + fdatasync: p50 {EXTRA['fdatasync_ms']:.3f} ms")


@pytest.mark.benchmark(group="durable-hold")
def test_hold_record_bytes(benchmark) -> None:
    """Journal bytes per one-line hold (route_order with a 12-character request id), framing included."""
    net = pyomni.demo_network(stores=50, warehouses=1, skus=100, seed=1)
    d = _disk_dir("records-")
    eng = pyomni.Engine.open(d, net, fsync="always")      # so that the counters below are of written records
    eng.apply_stock_events(pa.table({"location": list(net.ids), "sku": ["SKU-000001"] * len(net),
                                     "event": ["set"] * len(net), "qty": [ON_HAND] * len(net)}))
    base = eng.journal_stats()
    rng = random.Random(5)
    cities = list(zip(net.lat.tolist(), net.lon.tolist()))

    def hold_1000() -> None:
        for i in range(1000):
            eng.route_order(pyomni.Order(f"o-{i:08d}", [("SKU-000001", 1)], destination=rng.choice(cities)),
                            request_id=f"rq-{i:09d}")

    benchmark.pedantic(hold_1000, rounds=1, iterations=1)
    eng.close()
    stats = eng.journal_stats()
    per = (stats["bytes"] - base["bytes"]) / (stats["records"] - base["records"])
    EXTRA["hold_record_bytes"] = per
    benchmark.extra_info["bytes_per_hold_record"] = round(per, 1)
    assert stats["records"] - base["records"] == 1000
    shutil.rmtree(d, ignore_errors=True)
    print(f"\none-line hold record: {per:.1f} bytes (target <= 64)")


@pytest.mark.benchmark(group="recovery")
def test_recovery_10m_cells_1m_records(benchmark, network: pyomni.Network, stock: pa.Table) -> None:
    """Open = newest snapshot (10.45M cells) + replay of 1M journal records (route + confirm pairs)."""
    d = _disk_dir("recovery-")
    n_records = int(os.environ.get("PYOMNI_BENCH_RECORDS", "1000000"))
    eng = pyomni.Engine.open(d, network, fsync="never", reservation_ttl=1e9)
    eng.apply_stock_events(stock)
    eng.save()
    base = eng.journal_stats()["last_lsn"]
    orders = pyomni.demo_orders(network, n_records, seed=21)
    written = 0
    start = time.perf_counter()
    for k in range(0, len(orders), 1000):
        chunk = orders[k:k + 1000]
        answers = eng.route_orders(chunk, request_ids=[f"rr-{k + j}" for j in range(len(chunk))])
        for a in answers:
            if isinstance(a, pyomni.Allocation) and a.reservation_id and k % 2000 == 0:
                eng.confirm(a.reservation_id, request_id=f"cc-{a.reservation_id}")
        written = eng.journal_stats()["last_lsn"] - base
        if written >= n_records:
            break
        if k % 50_000 == 0:
            print(f"\r  writing journal: {written:,} / {n_records:,} records "
                  f"({time.perf_counter() - start:.0f} s)", end="", flush=True)
    expected = (eng.stats(), eng.state().lsn)
    eng.close()
    print()

    def recover() -> pyomni.Engine:
        return pyomni.Engine.open(d)

    t = time.perf_counter()
    again = benchmark.pedantic(recover, rounds=1, iterations=1)
    seconds = time.perf_counter() - t
    assert (again.stats(), again.state().lsn) == expected
    again.close()
    cells = expected[0]["cells"]
    EXTRA["recovery"] = {"seconds": seconds, "cells": cells, "records": written}
    benchmark.extra_info.update(EXTRA["recovery"])
    shutil.rmtree(d, ignore_errors=True)
    print(f"recovery: {cells:,} cells + {written:,} records in {seconds:.1f} s (target <= 10 s)")


@pytest.mark.benchmark(group="durable-hold")
def test_durability_summary(benchmark) -> None:
    """The table of ratios, ``reports/durability.json`` and the plot ``reports/durability.png``."""
    if not RESULTS:
        pytest.skip("run with the durable-hold cases")
    rows = []
    for (case, clients), r in RESULTS.items():
        pg_r, py_r, em_r = r["postgres"], r["pyomni"], r["embedded"]
        rows.append({"case": case, "clients": clients, "pg_rate": pg_r.rate, "pyomni_rate": py_r.rate,
                     "embedded_rate": em_r.rate, "ratio": py_r.rate / pg_r.rate,
                     "embedded_ratio": em_r.rate / pg_r.rate, "pg_p50_ms": pg_r.p50_ms, "pg_p99_ms": pg_r.p99_ms,
                     "pyomni_p50_ms": py_r.p50_ms, "pyomni_p99_ms": py_r.p99_ms,
                     "embedded_p50_ms": em_r.p50_ms, "embedded_p99_ms": em_r.p99_ms})
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "durability.json").write_text(json.dumps({"cases": rows, **EXTRA}, indent=1))
    benchmark.pedantic(_plot, args=(rows,), rounds=1, iterations=1)
    print("\ncase   clients | PostgreSQL holds/s (p50/p99 ms) | pyomni gRPC holds/s (p50/p99 ms), ratio"
          " | pyomni embedded holds/s (p50/p99 ms), ratio")
    for x in rows:
        print(f"{x['case']:<6} {x['clients']:>7} | {x['pg_rate']:>8,.0f} ({x['pg_p50_ms']:.2f}/{x['pg_p99_ms']:.2f})"
              f" | {x['pyomni_rate']:>8,.0f} ({x['pyomni_p50_ms']:.2f}/{x['pyomni_p99_ms']:.2f}) {x['ratio']:.2f}x"
              f" | {x['embedded_rate']:>8,.0f} ({x['embedded_p50_ms']:.2f}/{x['embedded_p99_ms']:.2f}) "
              f"{x['embedded_ratio']:.2f}x")
    assert (REPORTS / "durability.png").stat().st_size > 0


def _plot(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.6))
    labels = [f"{x['case']}\n{x['clients']} client{'s' if x['clients'] > 1 else ''}" for x in rows]
    xs = range(len(rows))
    w = 0.27
    left.bar([i - w for i in xs], [x["pg_rate"] for x in rows], w, label="PostgreSQL", color="#7f8c8d")
    left.bar(list(xs), [x["pyomni_rate"] for x in rows], w, label="pyomni over gRPC", color="#2e86de")
    left.bar([i + w for i in xs], [x["embedded_rate"] for x in rows], w, label="pyomni embedded", color="#10ac84")
    left.set_yscale("log")
    left.set_xticks(list(xs), labels, fontsize=8)
    left.set_ylabel("durable holds per second (log)")
    left.set_title("Throughput, fsync on every acknowledgement")
    left.legend()
    for i, x in enumerate(rows):
        left.annotate(f"{x['ratio']:.2f}x", (i, x["pyomni_rate"]), ha="center", va="bottom", fontsize=6.5)
        left.annotate(f"{x['embedded_ratio']:.2f}x", (i + w, x["embedded_rate"]), ha="center", va="bottom",
                      fontsize=7)
    for off, key, color, label in ((-w, "pg", "#7f8c8d", "PostgreSQL"), (0, "pyomni", "#2e86de", "pyomni gRPC"),
                                   (w, "embedded", "#10ac84", "pyomni embedded")):
        right.bar([i + off for i in xs], [x[f"{key}_p99_ms"] for x in rows], w, label=f"{label} p99", color=color)
        right.scatter([i + off for i in xs], [x[f"{key}_p50_ms"] for x in rows], color="black", marker="_", s=120,
                      zorder=3, label="p50" if key == "pg" else None)
    right.set_yscale("log")
    right.set_xticks(list(xs), labels, fontsize=8)
    right.set_ylabel("latency per request, ms (log)")
    right.set_title("Latency (a batch request holds 100)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(REPORTS / "durability.png", dpi=110)
    plt.close(fig)
