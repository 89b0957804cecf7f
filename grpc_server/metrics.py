"""Prometheus metrics: per-RPC request counts and latency, and the engine's stock and reservation gauges.

Counts and latencies are recorded by :class:`MetricsInterceptor`, which wraps
every handler once per method (not per call) so an RPC pays one histogram
observation and one counter increment, a microsecond or two. Gauges are read
from :meth:`pyomni.Engine.stats` when Prometheus scrapes, so they cost nothing
between scrapes. Everything lives in a registry of its own, so several servers
in one process (tests) do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pyomni import Engine

from .handlers import rewrap

__all__ = ["Metrics", "MetricsInterceptor"]

# sub-millisecond decisions: buckets from 50 µs to 5 s
_BUCKETS = (5e-5, 1e-4, 2e-4, 3e-4, 5e-4, 7.5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 5.0)


class _EngineCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._engine.stats()
        yield GaugeMetricFamily("pyomni_locations", "Locations in the network", value=stats["locations"])
        yield GaugeMetricFamily("pyomni_skus", "SKUs in the catalogue", value=stats["skus"])
        yield GaugeMetricFamily("pyomni_stock_cells", "(location, SKU) stock cells in the ledger",
                                value=stats["cells"])
        yield GaugeMetricFamily("pyomni_ledger_memory_bytes", "Bytes held by the ledger's native arrays",
                                value=stats["memory_bytes"])
        yield GaugeMetricFamily("pyomni_available_units", "Units available to sell, network-wide",
                                value=stats["available_units"])
        reservations = GaugeMetricFamily("pyomni_reservations", "Reservations by state", labels=["state"])
        for state, count in stats["reservations"].items():
            reservations.add_metric([state.lower()], count)
        yield reservations
        yield GaugeMetricFamily("pyomni_request_ids", "Request ids remembered for idempotent retries",
                                value=stats["request_ids"])
        journal = self._engine.journal_stats()
        if journal:
            # records / commits is the group-commit batch: how many acknowledgements one fsync bought
            for name, key, doc in (
                    ("pyomni_journal_records", "records", "Journal records written since the server started"),
                    ("pyomni_journal_bytes", "bytes", "Journal bytes written since the server started"),
                    ("pyomni_journal_commits", "commits", "Group commits (one write each) since the server started"),
                    ("pyomni_journal_fsyncs", "fsyncs", "fdatasync calls of the journal since the server started"),
                    ("pyomni_journal_segments", "segments", "Journal segment files held"),
                    ("pyomni_journal_pending_records", "pending", "Records waiting for the writer thread"),
                    ("pyomni_journal_last_lsn", "last_lsn", "Sequence number of the last record appended"),
                    ("pyomni_journal_durable_lsn", "durable_lsn", "Sequence number of the last record on disk")):
                yield GaugeMetricFamily(name, doc, value=journal[key])
            yield GaugeMetricFamily("pyomni_journal_failed", "1 once a journal write or fsync failed (fatal)",
                                    value=int(journal["failed"]))


class Metrics:
    """The server's metrics in a registry of their own (serve it with ``prometheus_client.start_http_server``)."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("pyomni_rpc_requests", "RPCs handled, by method and status code",
                                ["method", "code"], registry=self.registry)
        self.latency = Histogram("pyomni_rpc_latency_seconds", "Time in the handler, by method", ["method"],
                                 buckets=_BUCKETS, registry=self.registry)
        self.denied = Counter("pyomni_rpc_denied", "Calls refused before their handler ran (no token, unknown "
                              "token, outside the caller's role or scope), by method and reason",
                              ["method", "reason"], registry=self.registry)
        self.registry.register(_EngineCollector(engine))

    def count_denied(self, method: str, reason: str) -> None:
        """One refused call (the auth interceptor's ``denied`` callback)."""
        self.denied.labels(method, reason).inc()


def _code_name(context: grpc.ServicerContext) -> str:
    code = context.code()
    return "OK" if code is None else code.name if isinstance(code, grpc.StatusCode) else str(code)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts every RPC by method and final status code and times its handler."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._wrapped: dict[str, Any] = {}

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = continuation(details)
            if handler is None:
                return None
            wrapped = self._wrapped[method] = self._wrap(method.rsplit("/", 1)[-1], handler)
        return wrapped

    def _wrap(self, name: str, handler: Any) -> Any:
        latency = self._metrics.latency.labels(name)
        requests = self._metrics.requests
        ok = requests.labels(name, "OK")

        def timed(inner: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
            def run(request: Any, context: grpc.ServicerContext) -> Any:
                start = time.perf_counter()
                try:
                    return inner(request, context)
                finally:
                    latency.observe(time.perf_counter() - start)
                    code = _code_name(context)
                    (ok if code == "OK" else requests.labels(name, code)).inc()
            return run

        def timed_stream(inner: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Callable[..., Iterator[Any]]:
            def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                start = time.perf_counter()
                try:
                    yield from inner(request, context)
                finally:
                    latency.observe(time.perf_counter() - start)
                    code = _code_name(context)
                    (ok if code == "OK" else requests.labels(name, code)).inc()
            return run

        return rewrap(handler, timed, timed_stream)
