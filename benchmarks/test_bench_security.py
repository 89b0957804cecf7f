"""What TLS and the token check cost: the empty call on four servers, called in turn by one client.

Four ``pyomni serve`` processes on a small network (the call is ``Echo``, so the
network does not matter): plain text without tokens, plain text with tokens,
TLS without tokens, and mutual TLS with tokens. One client calls them in turn,
so all four see the same noise, sequentially and then from 4 threads.

* **the auth interceptor** -- plain text with tokens against plain text without
  (target: ≤ 5 % of the empty call), and the check itself timed in process
  (:meth:`grpc_server.security.AuthInterceptor._authorize` on a stand-in
  context), which the shared machine's noise cannot hide;
* **TLS** -- TLS against plain text (p50, p99, calls/s) and a new connection's
  handshake, stated rather than held to a target.

Every call's answer is checked (the payload comes back).
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from grpc_server.launch import ServerProcess
from grpc_server.security import AuthInterceptor, TokenTable, hash_token
from pyomni.v1 import diagnostics_pb2, diagnostics_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from certs import make_pki  # noqa: E402  (tests/ helper: the test certificates)

N_SEQUENTIAL = 3_000        # calls per server, in turn
N_THREADED = 1_000          # calls per thread per server
THREADS = 4
TOKEN = "bench-admin-token"
_SMALL = ["--stores", "20", "--warehouses", "1", "--skus", "50", "--snapshot-every", "0", "--fsync", "never"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Any:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def servers(tmp_path_factory, pki) -> Iterator[dict[str, tuple[ServerProcess, grpc.Channel]]]:
    tokens = tmp_path_factory.mktemp("tokens") / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"sha256": hash_token(TOKEN), "principal": "bench", "role": "admin"}]}))
    tls = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    kinds = {"plain": [], "plain+tokens": ["--tokens", str(tokens)], "tls": tls,
             "mtls+tokens": [*tls, "--tls-client-ca", str(pki.ca), "--tokens", str(tokens)]}
    out: dict[str, tuple[ServerProcess, grpc.Channel]] = {}
    try:
        for kind, extra in kinds.items():
            server = ServerProcess(tmp_path_factory.mktemp(kind.replace("+", "-")), [*_SMALL, *extra]).start()
            out[kind] = (server, _channel(server.address, kind, pki))
        yield out
    finally:
        for server, channel in out.values():
            channel.close()
            server.stop()


def _channel(address: str, kind: str, pki: Any) -> grpc.Channel:
    if kind.startswith("plain"):
        ch = grpc.insecure_channel(address)
    else:
        creds = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.read_bytes(),
            private_key=pki.client_key.read_bytes() if kind.startswith("mtls") else None,
            certificate_chain=pki.client_cert.read_bytes() if kind.startswith("mtls") else None)
        ch = grpc.secure_channel(address, creds)
    grpc.channel_ready_future(ch).result(timeout=30)
    return ch


def _caller(channel: grpc.Channel, kind: str) -> Callable[[], None]:
    echo = diagnostics_pb2_grpc.DiagnosticsServiceStub(channel).Echo
    req = diagnostics_pb2.EchoRequest(payload=bytes(80), response_bytes=250)   # a RouteOrder's sizes
    metadata = (("authorization", f"Bearer {TOKEN}"),) if "tokens" in kind else None

    def call() -> None:
        assert len(echo(req, metadata=metadata, timeout=10).payload) == 250
    return call


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@pytest.mark.benchmark(group="service-security")
def test_tls_and_token_check_vs_plain_empty_call(benchmark, servers):
    calls = {kind: _caller(ch, kind) for kind, (_, ch) in servers.items()}
    times: dict[str, list[float]] = {k: [] for k in calls}

    def sequential(n: int, record: bool) -> None:
        for _ in range(n):
            for kind, call in calls.items():        # in turn: the same noise for all four
                t = time.perf_counter()
                call()
                if record:
                    times[kind].append(time.perf_counter() - t)

    sequential(300, False)                          # warm every path
    benchmark.pedantic(sequential, args=(N_SEQUENTIAL, True), rounds=1, iterations=1)

    rates: dict[str, float] = {}
    for kind, call in calls.items():
        def load(call: Callable[[], None] = call) -> None:
            for _ in range(N_THREADED):
                call()
        threads = [threading.Thread(target=load) for _ in range(THREADS)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        rates[kind] = THREADS * N_THREADED / (time.perf_counter() - t)

    fig: dict[str, float] = {}
    for kind, ts in times.items():
        fig[f"{kind} p50 µs"] = _pct(ts, 0.5) * 1e6
        fig[f"{kind} p99 µs"] = _pct(ts, 0.99) * 1e6
        fig[f"{kind} calls/s ({THREADS} threads)"] = rates[kind]
    base50, base99 = fig["plain p50 µs"], fig["plain p99 µs"]
    for kind in ("plain+tokens", "tls", "mtls+tokens"):
        fig[f"{kind} / plain p50"] = fig[f"{kind} p50 µs"] / base50
        fig[f"{kind} / plain p99"] = fig[f"{kind} p99 µs"] / base99
        fig[f"{kind} / plain calls/s"] = rates[kind] / rates["plain"]
    benchmark.extra_info.update({k: round(v, 3) for k, v in fig.items()})
    print("\nempty call by transport and auth:")
    for k, v in fig.items():
        print(f"  {k:36s} {v:10.3f}")


@pytest.mark.benchmark(group="service-security")
def test_token_check_in_process_vs_empty_call(benchmark, servers, tmp_path):
    """The interceptor's per-call work alone: metadata scan, SHA-256, table and role lookups."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [
        {"sha256": hash_token(f"t-{i}"), "principal": f"p-{i}", "role": "order-system"} for i in range(1_000)]}))
    interceptor = AuthInterceptor(TokenTable(tokens), engine=None)  # type: ignore[arg-type]

    class Context:                                  # what grpcio's context offers the check
        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return (("user-agent", "grpc-python/1.76"), ("authorization", "Bearer t-500"))

    ctx = Context()
    authorize = interceptor._authorize
    method, short = "/pyomni.v1.RoutingService/RouteOrder", "RoutingService/RouteOrder"
    assert authorize(method, short, None, ctx).name == "p-500"   # type: ignore[arg-type]
    n = 20_000

    def run() -> float:
        t = time.perf_counter()
        for _ in range(n):
            authorize(method, short, None, ctx)    # type: ignore[arg-type]
        return (time.perf_counter() - t) / n

    per_call = [run() for _ in range(5)]
    check_us = statistics.median(per_call) * 1e6
    benchmark.pedantic(run, rounds=1, iterations=1)
    plain = _caller(servers["plain"][1], "plain")
    ts = []
    for _ in range(2_000):
        t = time.perf_counter()
        plain()
        ts.append(time.perf_counter() - t)
    empty_us = _pct(ts, 0.5) * 1e6
    fig = {"check µs": check_us, "empty call p50 µs": empty_us, "check / empty call": check_us / empty_us}
    benchmark.extra_info.update({k: round(v, 4) for k, v in fig.items()})
    print(f"\ntoken check in process: {fig}")
    assert fig["check / empty call"] < 0.05, fig     # the interceptor's target: ≤ 5 % of the empty call


@pytest.mark.benchmark(group="service-security")
def test_tls_handshake_new_connection(benchmark, servers, pki):
    """A new TLS connection (handshake included) to first answer, against a new plain-text one."""
    out: dict[str, float] = {}

    def connect(kind: str) -> float:
        server = servers[kind][0]
        t = time.perf_counter()
        ch = _channel(server.address, kind, pki)
        _caller(ch, kind)()
        dt = time.perf_counter() - t
        ch.close()
        return dt

    def run() -> None:
        for kind in ("plain", "tls", "mtls+tokens"):
            out[kind] = statistics.median(connect(kind) for _ in range(30)) * 1e3

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update({f"{k} new connection ms": round(v, 2) for k, v in out.items()})
    print(f"\nnew connection to first answer (ms, median of 30): {out}")
