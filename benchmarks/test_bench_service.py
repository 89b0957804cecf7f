"""The gRPC service against the transport's own floor, in one run against one server.

One ``pyomni serve`` process holds the DESIGN §6 network (5,000 locations,
100k SKUs, ≈10.45M stock cells). Over loopback the same client measures:

* **latency** -- ``RouteOrder`` of real 2-line orders against ``Echo``, an
  empty RPC on the same server stack (same interceptor, same thread pool) with
  exactly the same request and response sizes; calls alternate so both see the
  same noise; p50 and p99 sequentially and under a bounded concurrent load
  (4 client threads, a fixed number of calls each);
* **throughput** -- decisions per second through ``RouteOrders`` (1,000 orders
  per call) and ``RouteOrderStream`` (100 orders per message) against the
  empty unary rate (the better of the sequential and 4-thread rates).

Targets (issue 3): RouteOrder ≤ 1.15x the empty RPC at p50 and p99; batch or
stream ≥ 20x the empty unary rate. The figures are in each benchmark's
``extra_info`` and printed with ``-s``. Every routed order is checked:
ALLOCATED or UNFULFILLABLE with a valid plan, never an error.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

import pyomni
from grpc_server.launch import ServerProcess
from pyomni.v1 import diagnostics_pb2, diagnostics_pb2_grpc, routing_pb2, routing_pb2_grpc
from pyomni.wire import order_to_pb

N_SEQUENTIAL = 3_000          # calls of each kind, alternating
N_CONCURRENT = 1_000          # calls of each kind per client thread
CLIENT_THREADS = 4
BATCH = 1_000
N_BATCHES = 10
N_STREAM = 10_000
STREAM_BATCH = 100            # orders per stream message
#: Latency is measured at each policy: ``always`` waits for the disk (one fdatasync, ≥ 0.2 ms here),
#: ``interval`` for the OS (one write by the journal's thread), ``never`` for nothing: the difference
#: between them is the journal's share, the rest the handler's.
FSYNC_POLICIES = ("always", "interval", "never")
_ALLOCATION_CODES = (pyomni.AllocationStatus.ALLOCATED.value, pyomni.AllocationStatus.UNFULFILLABLE.value)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Any:
    return tmp_path_factory.mktemp("bench-data")


@pytest.fixture(scope="module", params=FSYNC_POLICIES)
def server(request, data_dir) -> Iterator[ServerProcess]:
    """The server at one ``--fsync`` policy: the first start builds the network, the others recover it."""
    # the conftest ``network`` (seed 7) with its demo stock (seed 7): serve uses one seed for both
    args = ["--stores", "4992", "--warehouses", "8", "--skus", "100000", "--seed", "7", "--snapshot-every", "0",
            "--fsync", request.param]
    with ServerProcess(data_dir, args, start_timeout=300) as s:
        s.fsync = request.param         # type: ignore[attr-defined]
        yield s


def _only_durable(server: ServerProcess) -> None:
    if server.fsync != "always":        # type: ignore[attr-defined]
        pytest.skip("throughput is measured at --fsync always only")


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(server.address)
    grpc.channel_ready_future(ch).result(timeout=30)
    yield ch
    ch.close()


class _Orders:
    """Fresh RouteOrderRequests of real 2-line demo orders (unique ids: each call really routes and holds)."""

    def __init__(self, network: pyomni.Network) -> None:
        self.orders = [o for o in pyomni.demo_orders(network, 20_000, seed=23) if len(o.lines) == 2]
        self.n = 0
        self.lock = threading.Lock()

    def next(self) -> Any:
        with self.lock:
            self.n += 1
            n = self.n
        o = self.orders[n % len(self.orders)]
        req = routing_pb2.RouteOrderRequest(request_id=f"bench-{n}")
        order_to_pb(pyomni.Order(f"{o.id}-{n}", o.lines, destination=o.destination), req.order)
        return req


@pytest.fixture(scope="module")
def orders(network: pyomni.Network) -> _Orders:
    return _Orders(network)


@pytest.fixture(scope="module")
def sizes(channel: grpc.Channel, orders: _Orders) -> tuple[int, int]:
    """(request bytes, response bytes) of a real 2-line RouteOrder: the Echo calls are sized to match."""
    stub = routing_pb2_grpc.RoutingServiceStub(channel)
    reqs = [orders.next() for _ in range(200)]
    responses = [stub.RouteOrder(r) for r in reqs]
    return (round(statistics.median(r.ByteSize() for r in reqs)),
            round(statistics.median(r.ByteSize() for r in responses)))


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _pair(channel: grpc.Channel, orders: _Orders, sizes: tuple[int, int], n: int) -> tuple[Callable[[], None], ...]:
    """Two calls of equal message sizes; the RouteOrder requests are built up front (client work is not timed)."""
    echo = diagnostics_pb2_grpc.DiagnosticsServiceStub(channel).Echo
    route = routing_pb2_grpc.RoutingServiceStub(channel).RouteOrder
    prebuilt = iter([orders.next() for _ in range(n)])
    # an EchoRequest's bytes are its payload's plus a few of framing: size the payload so the totals match
    payload = bytes(max(0, sizes[0] - 6))
    echo_req = diagnostics_pb2.EchoRequest(payload=payload, response_bytes=max(0, sizes[1] - 4))

    def call_echo() -> None:
        assert len(echo(echo_req).payload) == echo_req.response_bytes

    def call_route() -> None:
        a = route(next(prebuilt))
        assert a.status in _ALLOCATION_CODES

    return call_echo, call_route


def _alternate(call_echo: Callable[[], None], call_route: Callable[[], None], n: int) -> tuple[list[float], ...]:
    te: list[float] = []
    tr: list[float] = []
    for _ in range(n):
        for fn, out in ((call_echo, te), (call_route, tr)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return te, tr


def _report(benchmark: Any, name: str, echo_t: list[float], route_t: list[float], extra: dict[str, Any]) -> None:
    fig = {"echo_p50_us": _pct(echo_t, 0.5) * 1e6, "echo_p99_us": _pct(echo_t, 0.99) * 1e6,
           "route_p50_us": _pct(route_t, 0.5) * 1e6, "route_p99_us": _pct(route_t, 0.99) * 1e6}
    fig["ratio_p50"] = fig["route_p50_us"] / fig["echo_p50_us"]
    fig["ratio_p99"] = fig["route_p99_us"] / fig["echo_p99_us"]
    benchmark.extra_info.update({k: round(v, 3) for k, v in fig.items()} | extra)
    print(f"\n{name}: RouteOrder p50 {fig['route_p50_us']:.0f} µs / Echo {fig['echo_p50_us']:.0f} µs = "
          f"{fig['ratio_p50']:.3f}x; p99 {fig['route_p99_us']:.0f} / {fig['echo_p99_us']:.0f} µs = "
          f"{fig['ratio_p99']:.3f}x  {extra}")


@pytest.mark.benchmark(group="service-latency")
def test_route_order_vs_empty_rpc_sequential(benchmark, server, channel, orders, sizes):
    call_echo, call_route = _pair(channel, orders, sizes, 300 + N_SEQUENTIAL)
    _alternate(call_echo, call_route, 300)                      # warm both paths
    echo_t, route_t = benchmark.pedantic(_alternate, args=(call_echo, call_route, N_SEQUENTIAL), rounds=1,
                                         iterations=1)
    _report(benchmark, f"sequential, --fsync {server.fsync}", echo_t, route_t,
            {"fsync": server.fsync, "calls_each": N_SEQUENTIAL, "request_bytes": sizes[0],
             "response_bytes": sizes[1]})


@pytest.mark.benchmark(group="service-latency")
def test_route_order_vs_empty_rpc_concurrent(benchmark, server, channel, orders, sizes):
    call_echo, call_route = _pair(channel, orders, sizes, N_CONCURRENT * CLIENT_THREADS)
    results: list[tuple[list[float], list[float]]] = []

    def load() -> None:
        threads = [threading.Thread(target=lambda: results.append(_alternate(call_echo, call_route, N_CONCURRENT)))
                   for _ in range(CLIENT_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    start = time.perf_counter()
    benchmark.pedantic(load, rounds=1, iterations=1)
    wall = time.perf_counter() - start
    assert len(results) == CLIENT_THREADS
    echo_t = [x for r in results for x in r[0]]
    route_t = [x for r in results for x in r[1]]
    _report(benchmark, f"{CLIENT_THREADS} client threads, --fsync {server.fsync}", echo_t, route_t,
            {"fsync": server.fsync, "threads": CLIENT_THREADS, "calls_each": N_CONCURRENT * CLIENT_THREADS,
             "calls_per_s": round(2 * len(echo_t) / wall)})


def _empty_unary_rate(channel: grpc.Channel, sizes: tuple[int, int]) -> float:
    """Empty RPCs per second, the better of one caller and 4 concurrent callers."""
    echo = diagnostics_pb2_grpc.DiagnosticsServiceStub(channel).Echo
    req = diagnostics_pb2.EchoRequest(payload=bytes(sizes[0]), response_bytes=sizes[1])
    best = 0.0
    for threads in (1, CLIENT_THREADS):
        n = 2_000 // threads

        def run(n: int = n) -> None:
            for _ in range(n):
                echo(req)

        ts = [threading.Thread(target=run) for _ in range(threads)]
        t = time.perf_counter()
        for x in ts:
            x.start()
        for x in ts:
            x.join()
        best = max(best, n * threads / (time.perf_counter() - t))
    return best


@pytest.mark.benchmark(group="service-throughput")
def test_batch_and_stream_decisions_per_second_vs_empty_unary_rate(benchmark, server, channel, orders, sizes):
    _only_durable(server)
    routing = routing_pb2_grpc.RoutingServiceStub(channel)
    unary_rate = _empty_unary_rate(channel, sizes)

    def batches() -> int:
        done = 0
        for _ in range(N_BATCHES):
            resp = routing.RouteOrders(routing_pb2.RouteOrdersRequest(requests=[orders.next() for _ in range(BATCH)]),
                                       timeout=120)
            assert len(resp.results) == BATCH
            assert all(r.allocation.status in _ALLOCATION_CODES and not r.error_code for r in resp.results)
            done += BATCH
        return done

    # requests are built before the clock starts: the client's protobuf work is not the server's rate
    prebuilt = [[orders.next() for _ in range(BATCH)] for _ in range(N_BATCHES)]
    t = time.perf_counter()
    for chunk in prebuilt:
        resp = routing.RouteOrders(routing_pb2.RouteOrdersRequest(requests=chunk), timeout=120)
        assert all(r.allocation.status in _ALLOCATION_CODES and not r.error_code for r in resp.results)
    batch_rate = N_BATCHES * BATCH / (time.perf_counter() - t)

    stream_msgs = [routing_pb2.RouteOrdersRequest(requests=[orders.next() for _ in range(STREAM_BATCH)])
                   for _ in range(N_STREAM // STREAM_BATCH)]
    t = time.perf_counter()
    got = 0
    for resp in routing.RouteOrderStream(iter(stream_msgs), timeout=300):
        assert all(r.allocation.status in _ALLOCATION_CODES and not r.error_code for r in resp.results)
        got += len(resp.results)
    stream_rate = got / (time.perf_counter() - t)
    assert got == N_STREAM

    benchmark.pedantic(batches, rounds=1, iterations=1)   # the timed region pytest-benchmark reports
    fig = {"empty_unary_per_s": round(unary_rate), "batch_decisions_per_s": round(batch_rate),
           "stream_decisions_per_s": round(stream_rate), "batch_vs_unary": round(batch_rate / unary_rate, 2),
           "stream_vs_unary": round(stream_rate / unary_rate, 2), "batch_size": BATCH,
           "stream_batch": STREAM_BATCH}
    benchmark.extra_info.update(fig)
    print(f"\nthroughput: {fig}")


# -- the server model, measured: the same Echo handler on grpcio's sync server and on grpc.aio --------
_MODEL_SERVER = """
import asyncio, sys
from concurrent import futures
import grpc
from pyomni.v1 import diagnostics_pb2 as d, diagnostics_pb2_grpc as dg

class Sync(dg.DiagnosticsServiceServicer):
    def Echo(self, request, context):
        return d.EchoResponse(payload=bytes(request.response_bytes) if request.response_bytes else request.payload)

class Aio(dg.DiagnosticsServiceServicer):
    async def Echo(self, request, context):
        return d.EchoResponse(payload=bytes(request.response_bytes) if request.response_bytes else request.payload)

if sys.argv[1] == "sync":
    server = grpc.server(futures.ThreadPoolExecutor(8))
    dg.add_DiagnosticsServiceServicer_to_server(Sync(), server)
    print(server.add_insecure_port("127.0.0.1:0"), flush=True)
    server.start()
    server.wait_for_termination()
else:
    async def main():
        server = grpc.aio.server()
        dg.add_DiagnosticsServiceServicer_to_server(Aio(), server)
        print(server.add_insecure_port("127.0.0.1:0"), flush=True)
        await server.start()
        await server.wait_for_termination()
    asyncio.run(main())
"""


@pytest.mark.benchmark(group="service-model")
def test_server_model_sync_thread_pool_vs_grpc_aio(benchmark, server, sizes):
    """Why grpc_server uses the sync server: its empty call is cheaper (p50, p99) at the same throughput."""
    _only_durable(server)
    import subprocess
    import sys

    req = diagnostics_pb2.EchoRequest(payload=bytes(sizes[0]), response_bytes=sizes[1])
    runs: dict[str, list[float]] = {}

    def measure(model: str) -> None:
        proc = subprocess.Popen([sys.executable, "-c", _MODEL_SERVER, model], stdout=subprocess.PIPE, text=True)
        try:
            port = int(proc.stdout.readline())                       # type: ignore[union-attr]
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                echo = diagnostics_pb2_grpc.DiagnosticsServiceStub(ch).Echo
                for _ in range(300):
                    echo(req)
                times = []
                for _ in range(N_SEQUENTIAL):
                    t = time.perf_counter()
                    assert len(echo(req).payload) == sizes[1]
                    times.append(time.perf_counter() - t)
                runs.setdefault(f"{model}_p50_us", []).append(_pct(times, 0.5) * 1e6)
                runs.setdefault(f"{model}_p99_us", []).append(_pct(times, 0.99) * 1e6)
        finally:
            proc.terminate()
            proc.wait()

    def both() -> None:
        for model in ("sync", "aio", "sync", "aio"):              # interleaved: both see the same noise
            measure(model)

    benchmark.pedantic(both, rounds=1, iterations=1)
    figures = {k: statistics.fmean(v) for k, v in runs.items()}          # mean of the two runs of each
    figures["aio_over_sync_p50"] = figures["aio_p50_us"] / figures["sync_p50_us"]
    figures["aio_over_sync_p99"] = figures["aio_p99_us"] / figures["sync_p99_us"]
    benchmark.extra_info.update({k: round(v, 3) for k, v in figures.items()})
    print(f"\nserver model: {figures}")


# -- where a unary RouteOrder's time goes, piece by piece, in process --------------------------------------
@pytest.mark.benchmark(group="service-latency")
def test_route_order_handler_breakdown_in_process(benchmark, tmp_path):
    """The handler's pieces timed alone (medians): what the RouteOrder-vs-Echo difference is made of.

    On ``pyomni serve``'s default network (500 stores, 20k SKUs, its demo stock): decode the request,
    build the Order, route and hold in memory, then with a journal at each fsync policy, and encode the
    answer. The difference of the two in-memory lines is the hold's Python (apply, remember, answer);
    the journal lines minus the in-memory one are the journal's share.
    """
    import gc

    from pyomni.wire import allocation_to_pb, order_from_pb

    net = pyomni.demo_network(stores=500, warehouses=8, skus=20_000, seed=7)
    stock = pyomni.demo_stock(net, seed=7)
    demo = [o for o in pyomni.demo_orders(net, 12_000, seed=23) if len(o.lines) == 2][:2_500]
    engines = {"memory": pyomni.Engine(net)}
    for policy in FSYNC_POLICIES:
        engines[policy] = pyomni.Engine.open(tmp_path / policy, net, fsync=policy)
    for eng in engines.values():
        eng.apply_stock_events(stock, request_id="stock")
    gc.collect()
    gc.freeze()                                   # as pyomni serve does (grpc_server.server._tune_gc)
    threshold = gc.get_threshold()
    gc.set_threshold(50_000, 50, 1000)
    requests = []
    for n, o in enumerate(demo):
        req = routing_pb2.RouteOrderRequest(request_id=f"bd-{n}")
        order_to_pb(pyomni.Order(f"{o.id}-bd{n}", o.lines, destination=o.destination), req.order)
        requests.append(req.SerializeToString())
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        times.setdefault(name, []).append(time.perf_counter() - t)
        return out

    def run() -> None:
        for n, data in enumerate(requests):
            req = timed("decode request", routing_pb2.RouteOrderRequest.FromString, data)
            order = timed("build Order", order_from_pb, req.order)
            timed("decide only (quote)", engines["memory"].quote, order)
            answer = None
            for name, eng in engines.items():
                answer = timed(f"route + hold, {name if name == 'memory' else '--fsync ' + name}",
                               eng.route_order, order, request_id=f"bd-{n}", explain=False)
                assert answer.status in (pyomni.AllocationStatus.ALLOCATED, pyomni.AllocationStatus.UNFULFILLABLE)
            timed("encode answer", lambda a: allocation_to_pb(a).SerializeToString(), answer)

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
        for name, eng in engines.items():
            if name != "memory":
                eng.close()
    fig = {name: round(statistics.median(v[200:]) * 1e6, 1) for name, v in times.items()}
    benchmark.extra_info.update({f"{k} p50 µs": v for k, v in fig.items()})
    print("\nRouteOrder handler, in process (p50 µs):")
    for name, value in fig.items():
        print(f"  {name:32s} {value:8.1f}")
