"""Flash-sale claims on ONE hot SKU, durable: pyomni's server against PostgreSQL and Redis, in one run.

* pyomni: ``pyomni serve --fsync always`` (a child process); one sale on one SKU at one store with
  10 million units, every claim a new member (limit 1 each). ``unary`` is one ``ClaimUnits`` call per
  claim (concurrent calls are coalesced into batches by the server); ``stream`` is one
  ``ClaimUnitsStream`` per client, each message a batch of claims as columns, closed loop.
* PostgreSQL (``pg_baseline``): the guarded hold on one hot row, one statement per claim, and 100 per
  transaction (``check_and_hold_many``); fsync and synchronous_commit on.
* Redis (``redis_baseline``): the same claim as one Lua script (quotas, customer limit, stock,
  idempotency), ``appendfsync always``; one script per claim, and 100 per script.
* The empty unary RPC on the same server (``Echo``) is the yardstick of the gRPC stack; ``RouteOrders``
  with 1,000 one-line orders per call gives routing decisions/s against it.
* Feed latency: stock events at ≈10,000/s through ``ApplyStockEvents`` while a ``WatchAvailability``
  subscriber timestamps every delta; latency = delta received - events sent.

Every case checks its result (units claimed on the server == claims answered; PostgreSQL's and Redis'
totals consistent); figures go to ``reports/flash.json`` and ``reports/flash.png``.

    .venv/bin/python -m pytest benchmarks/test_bench_flash.py --benchmark-only -s -q -p no:cacheprovider
"""

from __future__ import annotations

import dataclasses
import json
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from loadgen import LoadResult, Worker, format_row, run_clients
from scratch import REPO, default_base_dir

import pyomni
from grpc_server.launch import ServerProcess
from pyomni.v1 import (
    diagnostics_pb2,
    diagnostics_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
    selling_pb2,
    selling_pb2_grpc,
)
from pyomni.wire import claim_batch_request

pytestmark = pytest.mark.benchmark(group="flash")

SECONDS = 3.0
STREAM_CLAIMS = 1_500_000         # claims prepared per stream case
STORES = 50
HOT_UNITS = 10_000_000
REPORTS = REPO / "reports"
RESULTS: dict[str, LoadResult] = {}
EXTRA: dict[str, Any] = {}


def _record(benchmark: Any, name: str, result: LoadResult, unit: str = "claims") -> None:
    RESULTS[name] = result
    benchmark.extra_info.update(result.as_dict())
    print("\n" + format_row(name, result) + f"  [{unit}/s]")


class PyomniSide:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pyomni-flash-", dir=default_base_dir()))
        self.server = ServerProcess(self.dir / "data", ["--stores", str(STORES), "--warehouses", "0", "--skus", "50",
                                                        "--seed", "5", "--fsync", "always", "--snapshot-every", "0",
                                                        "--workers", "96"]).start()
        net = pyomni.demo_network(stores=STORES, warehouses=0, skus=50, seed=5)
        self.network = net
        self.store = net.ids[0]
        self.sku = list(net.skus)[0]
        with pyomni.Client(self.server.address, timeout=120) as c:
            c.apply_stock_events([{"location": self.store, "sku": self.sku, "event": "set", "qty": HOT_UNITS}],
                                 request_id="hot")
            now = time.time()
            c.create_sale(pyomni.FlashSale("hot", (self.sku,), now - 10, now + 86_400, HOT_UNITS,
                                           ((self.store, HOT_UNITS),), customer_limit=1, pay_window=86_400.0),
                          request_id="sale")
        self.channel = grpc.insecure_channel(self.server.address)

    def claimed(self) -> int:
        with pyomni.Client(self.server.address, timeout=60) as c:
            return c.sale("hot")[1].claimed

    def close(self) -> None:
        self.channel.close()
        self.server.stop(timeout=300)        # a clean stop snapshots millions of claims and reservations
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def side() -> Iterator[PyomniSide]:
    s = PyomniSide()
    yield s
    s.close()
    _report()


def _stream_worker(call: Any, request: Any, count: Any) -> Worker:
    """A closed-loop client on one bidirectional stream: send message ``request(k)``, read its answer."""
    inbox: queue.Queue[Any] = queue.Queue()
    state: dict[str, Any] = {}

    def requests() -> Iterator[Any]:
        while (msg := inbox.get()) is not None:
            yield msg

    def setup() -> None:
        state["answers"] = call(requests(), timeout=600)

    def op(k: int) -> int:
        inbox.put(request(k))
        return count(next(state["answers"]))

    def teardown() -> None:
        inbox.put(None)
        for _ in state["answers"]:
            pass            # drain: the server answers what is still in flight before the stream ends
    return Worker(op, setup=setup, teardown=teardown)


def _echo_worker(side: PyomniSide, i: int) -> Worker:
    stub = diagnostics_pb2_grpc.DiagnosticsServiceStub(side.channel)
    req = diagnostics_pb2.EchoRequest()
    return Worker(lambda k: (stub.Echo(req, timeout=30), 1)[1])


@pytest.mark.parametrize("clients", [1, 64])
def test_empty_unary(benchmark, side, clients):
    result = benchmark.pedantic(lambda: run_clients(clients, lambda i: _echo_worker(side, i), seconds=SECONDS),
                                rounds=1, iterations=1)
    assert result.errors == 0
    _record(benchmark, f"echo-unary-{clients}", result, "calls")


@pytest.mark.parametrize("clients", [1, 64])
def test_claim_unary(benchmark, side, clients):
    stub = selling_pb2_grpc.FlashSaleServiceStub(side.channel)
    ok = [0] * clients
    before = side.claimed()

    def worker(i: int) -> Worker:
        def op(k: int) -> int:
            c = stub.ClaimUnits(selling_pb2.ClaimUnitsRequest(
                request_id=f"u{clients}-{i}-{k}", sale_id="hot", customer=f"u{clients}-{i}-{k}", sku=side.sku,
                qty=1, store=side.store), timeout=30)
            ok[i] += 1
            return int(c.qty)
        return Worker(op)

    result = benchmark.pedantic(lambda: run_clients(clients, worker, seconds=SECONDS), rounds=1, iterations=1)
    assert result.errors == 0
    assert side.claimed() - before == sum(ok)          # every answered claim holds exactly one unit
    _record(benchmark, f"pyomni-unary-{clients}", result)


@pytest.mark.parametrize(("clients", "batch"), [(1, 5000), (1, 2000), (1, 500), (8, 500), (64, 100)])
def test_claim_stream(benchmark, side, clients, batch):
    ok = [0] * clients
    before = side.claimed()

    # the messages are built before the timed run (enough for ~400,000 claims/s), so the client's own
    # protobuf work does not take the server's CPU; every claim is a new member with its own request id
    per_client = -(-STREAM_CLAIMS // (clients * batch))
    stores = [side.store] * batch
    prepared = [[claim_batch_request("hot", names, side.sku, stores=stores, request_ids=names)
                 for names in ([f"s{clients}x{batch}-{i}-{k}-{j}" for j in range(batch)] for k in range(per_client))]
                for i in range(clients)]

    def worker(i: int) -> Worker:
        stub = selling_pb2_grpc.FlashSaleServiceStub(side.channel)

        def request(k: int) -> Any:
            return prepared[i][k]

        def count(answer: Any) -> int:
            n = sum(1 for x in answer.outcomes if x == selling_pb2.CLAIMED)
            ok[i] += n
            return n
        return _stream_worker(stub.ClaimUnitsStream, request, count)

    result = benchmark.pedantic(lambda: run_clients(clients, worker, seconds=SECONDS, warmup_ops=2), rounds=1,
                                iterations=1)
    assert result.errors == 0
    assert side.claimed() - before == sum(ok)
    assert result.units == result.ops * batch          # nothing refused: the quota is far away
    _record(benchmark, f"pyomni-stream-{clients}x{batch}", result)


@pytest.mark.parametrize("mode", ["unary", "stream"])
def test_route_orders_batch(benchmark, side, mode):
    """RouteOrders / RouteOrderStream: one RouteOrderRequest message per order (the requests are built
    before the timed run, so the client's own protobuf work does not take the server's CPU)."""
    net = side.network
    rng = np.random.default_rng(3)
    other = list(net.skus)[1]
    with pyomni.Client(side.server.address, timeout=120) as c:
        c.apply_stock_events([{"location": x, "sku": other, "event": "set", "qty": 1_000_000} for x in net.ids],
                             request_id=f"route-stock-{mode}")
        # no daily capacity: the benchmark holds far more than a day's orders per store
        c.upsert_locations([dataclasses.replace(x, daily_capacity=0) for x in net], request_id=f"route-cap-{mode}")
    messages = []
    for k in range(600):                        # more than 3 s can use
        msg = routing_pb2.RouteOrdersRequest()
        for j, a in enumerate(rng.integers(len(net.ids), size=1000).tolist()):
            r = msg.requests.add(request_id=f"ro-{mode}-{k}-{j}")
            o = r.order
            o.id = r.request_id
            o.lines.add(sku=other, qty=1)
            o.destination.latitude, o.destination.longitude = float(net.lat[a]), float(net.lon[a])
        messages.append(msg)
    stub = routing_pb2_grpc.RoutingServiceStub(side.channel)

    def count(answer: Any) -> int:
        return sum(1 for r in answer.results if r.allocation.reservation_id)

    def worker(i: int) -> Worker:
        if mode == "unary":
            return Worker(lambda k: count(stub.RouteOrders(messages[k], timeout=60)))
        return _stream_worker(stub.RouteOrderStream, lambda k: messages[k], count)

    result = benchmark.pedantic(lambda: run_clients(1, worker, seconds=SECONDS, warmup_ops=1),
                                rounds=1, iterations=1)
    assert result.errors == 0 and result.units == result.ops * 1000           # every order held
    _record(benchmark, f"pyomni-route-orders-{mode}-1x1000", result, "decisions")


@pytest.mark.parametrize(("mode", "batch"), [("unary", 1000), ("stream", 2000)])
def test_route_order_columns(benchmark, side, mode, batch):
    """Routing decisions through RouteOrderColumns (columns in, one native pass, columns out)."""
    net = side.network
    rng = np.random.default_rng(4)
    other = list(net.skus)[2]
    with pyomni.Client(side.server.address, timeout=120) as c:
        c.apply_stock_events([{"location": x, "sku": other, "event": "set", "qty": 1_000_000} for x in net.ids],
                             request_id=f"columns-stock-{mode}")
        c.upsert_locations([dataclasses.replace(x, daily_capacity=0) for x in net], request_id="columns-cap")
    stub = routing_pb2_grpc.RoutingServiceStub(side.channel)
    held = [0]

    def request(k: int) -> Any:
        at = rng.integers(len(net.ids), size=batch)
        ids = [f"rc-{mode}-{k}-{j}" for j in range(batch)]
        return routing_pb2.RouteOrderColumnsRequest(
            order_ids=ids, request_ids=ids, line_counts=[1] * batch, skus=[other] * batch, qtys=[1] * batch,
            latitudes=net.lat[at].tolist(), longitudes=net.lon[at].tolist())

    def worker(i: int) -> Worker:
        if mode == "unary":
            def op(k: int) -> int:
                n = sum(1 for x in stub.RouteOrderColumns(request(k), timeout=60).reservation_numbers if x)
                held[0] += n
                return n
            return Worker(op)

        def count(answer: Any) -> int:
            n = sum(1 for x in answer.reservation_numbers if x)
            held[0] += n
            return n
        return _stream_worker(stub.RouteOrderColumnsStream, request, count)

    result = benchmark.pedantic(lambda: run_clients(1, worker, seconds=SECONDS, warmup_ops=1), rounds=1, iterations=1)
    assert result.errors == 0 and result.units == result.ops * batch      # every order held
    _record(benchmark, f"pyomni-route-columns-{mode}-1x{batch}", result, "decisions")


def test_feed_latency(benchmark, side):
    """Stock events at ~10,000/s; each (location, SKU, value) timed from its send to its delta's arrival.

    The LOCATION scope of the feed without a channel rule carries each cell's own value, and every event
    sets a new, unique quantity, so a delta names exactly the event it reports.
    """
    stub = selling_pb2_grpc.ChannelFeedServiceStub(side.channel)
    net = side.network
    skus = list(net.skus)[10:50]
    sent: dict[tuple[str, str, int], float] = {}
    latencies: list[float] = []
    watch = stub.WatchAvailability(selling_pb2.WatchAvailabilityRequest(channel="", scope=selling_pb2.LOCATION))
    assert next(watch).reset

    def watcher() -> None:
        try:
            for msg in watch:
                now = time.time()
                for key in zip(msg.skus, msg.locations, msg.values):
                    t = sent.pop(key, None)
                    if t is not None:
                        latencies.append(now - t)
        except grpc.RpcError:
            return                                      # cancelled at the end

    th = threading.Thread(target=watcher, daemon=True)
    th.start()
    inventory = pyomni.Client(side.server.address, timeout=60)

    def run() -> dict[str, Any]:
        rng = np.random.default_rng(9)
        per_tick, tick = 100, 0.01                     # 100 events every 10 ms = 10,000/s
        start = time.perf_counter()
        n, value = 0, 1000
        while time.perf_counter() - start < SECONDS:
            events, keys = [], []
            for _ in range(per_tick):
                value += 1
                loc, sku = net.ids[int(rng.integers(len(net.ids)))], skus[int(rng.integers(len(skus)))]
                events.append({"location": loc, "sku": sku, "event": "set", "qty": value})
                keys.append((sku, loc, value))
            t = time.time()
            for k in keys:
                sent[k] = t
            inventory.apply_stock_events(events)
            n += per_tick
            time.sleep(max(0.0, start + (n / per_tick) * tick - time.perf_counter()))
        return {"events": n, "seconds": time.perf_counter() - start}

    out = benchmark.pedantic(run, rounds=1, iterations=1)
    time.sleep(0.5)
    watch.cancel()
    th.join(timeout=5)
    inventory.close()
    lat = np.array(latencies) * 1000
    # a cell set twice within one interval reports only its last value: the earlier sends are coalesced away
    assert len(lat) > 0.5 * out["events"]
    EXTRA["feed"] = {"events_per_s": out["events"] / out["seconds"], "deltas_timed": int(len(lat)),
                     "coalesced_away": len(sent), "p50_ms": float(np.percentile(lat, 50)),
                     "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max())}
    benchmark.extra_info.update(EXTRA["feed"])
    print(f"\nfeed: {EXTRA['feed']}")


# -- the baselines --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("clients", "batch"), [(1, 1), (8, 1), (64, 1), (8, 100)])
def test_postgres_hot_row(benchmark, clients, batch):
    pgb = pytest.importorskip("pg_baseline")
    if pgb.find_postgres() is None:
        pytest.skip("PostgreSQL not installed: run `make postgres`")
    with pgb.PostgresServer() as server, server.connect() as conn:
        pgb.create_schema(conn)
        pgb.load_stock(conn, [(0, 0, HOT_UNITS)])
        held = [0] * clients

        def worker(i: int) -> Worker:
            state: dict[str, Any] = {}

            def op(k: int) -> int:
                rid = f"pg{clients}-{i}-{k}"
                if batch == 1:
                    n = int(pgb.check_and_hold(state["conn"], rid, 0, 0, 1))
                else:
                    n = sum(pgb.check_and_hold_many(state["conn"], [(f"{rid}-{j}", 0, 0, 1) for j in range(batch)]))
                held[i] += n
                return n
            return Worker(op, setup=lambda: state.__setitem__("conn", server.connect()),
                          teardown=lambda: state["conn"].close())

        result = benchmark.pedantic(lambda: run_clients(clients, worker, seconds=SECONDS), rounds=1, iterations=1)
        t = pgb.totals(conn)
        assert result.errors == 0
        assert t["reserved"] == t["reserved_qty"] == sum(held) and t["mismatched_cells"] == 0
    _record(benchmark, f"postgres-{'unary' if batch == 1 else f'batch{batch}'}-{clients}", result)


@pytest.mark.parametrize(("clients", "batch"), [(1, 1), (64, 1), (8, 100)])
def test_redis_lua(benchmark, clients, batch):
    rb = pytest.importorskip("redis_baseline")
    if rb.find_redis() is None:
        pytest.skip("redis-server not installed: run `make redis`")
    with rb.RedisServer() as server:
        r = server.connect()
        assert server.config("appendfsync") == "always"
        rb.load_sale(r, "hot", global_quota=HOT_UNITS, store_quotas={0: HOT_UNITS}, stock={0: HOT_UNITS},
                     customer_limit=1)
        ok = [0] * clients

        def worker(i: int) -> Worker:
            state: dict[str, Any] = {}

            def op(k: int) -> int:
                rid = f"r{clients}-{i}-{k}"
                if batch == 1:
                    n = int(rb.claim(state["r"], "hot", rid, rid, 0, 1) == rb.OK)
                else:
                    answers = rb.claim_many(state["r"], "hot", [(f"{rid}-{j}", f"{rid}-{j}", 0, 1)
                                                                for j in range(batch)])
                    n = sum(1 for a in answers if a == rb.OK)
                ok[i] += n
                return n
            return Worker(op, setup=lambda: state.__setitem__("r", server.connect()))

        result = benchmark.pedantic(lambda: run_clients(clients, worker, seconds=SECONDS), rounds=1, iterations=1)
        t = rb.totals(r, "hot")
        assert result.errors == 0
        assert t["global_claimed"] == t["claims"] >= sum(ok) and t["mismatched_stores"] == 0
    _record(benchmark, f"redis-{'unary' if batch == 1 else f'batch{batch}'}-{clients}", result)


# -- the report -----------------------------------------------------------------------------------------
def _report() -> None:
    if not RESULTS:
        return
    rate = {k: v.rate for k, v in RESULTS.items()}
    echo = rate.get("echo-unary-1")
    pg = max((v for k, v in rate.items() if k.startswith("postgres-unary")), default=None)
    out: dict[str, Any] = {"cases": {k: v.as_dict() for k, v in RESULTS.items()}, **EXTRA}
    best_stream = max((v for k, v in rate.items() if k.startswith("pyomni-stream")), default=None)
    if best_stream and pg:
        out["stream_vs_pg_best_unary"] = best_stream / pg
    if best_stream and "postgres-unary-8" in rate:          # the yardstick: the hot row at 8 clients
        out["stream_vs_pg_hot_row_8_clients"] = best_stream / rate["postgres-unary-8"]
    if best_stream and "redis-batch100-8" in rate:
        out["stream_vs_redis_batch"] = best_stream / rate["redis-batch100-8"]
    for mode in ("unary", "stream"):
        if echo and f"pyomni-route-orders-{mode}-1x1000" in rate:
            out[f"route_orders_{mode}_vs_empty_unary"] = rate[f"pyomni-route-orders-{mode}-1x1000"] / echo
    for mode in ("unary-1x1000", "stream-1x2000"):
        if echo and f"pyomni-route-columns-{mode}" in rate:
            out[f"route_columns_{mode}_vs_empty_unary"] = rate[f"pyomni-route-columns-{mode}"] / echo
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "flash.json").write_text(json.dumps(out, indent=1))
    print("\n" + json.dumps({k: v for k, v in out.items() if k != "cases"}, indent=1))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = [k for k in RESULTS if k.startswith(("pyomni-unary", "pyomni-stream", "postgres", "redis"))]
    names.sort(key=lambda k: rate[k])
    if not names:
        return
    colours = ["#d62728" if k.startswith("postgres") else "#ff7f0e" if k.startswith("redis") else "#1f77b4"
               for k in names]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(names) + 1.6))
    ax.barh(names, [rate[k] for k in names], color=colours)
    ax.set_xscale("log")
    for y, k in enumerate(names):
        ratio = rate[k] / pg if pg else 0.0
        label = f"{rate[k]:,.0f}/s" + (f"  ({ratio:,.0f}x PG)" if ratio >= 10 else f"  ({ratio:.1f}x PG)" if pg else "")
        ax.text(rate[k] * 1.1, y, label, va="center", fontsize=8)
    ax.set_xlim(right=max(rate[k] for k in names) * 30)
    ax.set_xlabel("durable claims per second on one hot SKU (log scale)\nin brackets: times PostgreSQL's best "
                  "one-claim-per-transaction rate in the same run")
    ax.set_title("Flash-sale claims, fsync on every acknowledgement: pyomni (blue), Redis Lua (orange), "
                 "PostgreSQL hot row (red)", fontsize=9)
    fig.tight_layout()
    fig.savefig(REPORTS / "flash.png", dpi=110)
    plt.close(fig)
