"""A closed-loop load driver shared by the pyomni and PostgreSQL sides of the durability benchmarks.

``run_clients(n, make_worker, ...)`` runs ``n`` clients, each in its own thread,
each issuing its next operation as soon as the previous one returned (closed
loop: offered load = what the system sustains; no queueing inside the driver).
Threads are enough because the client libraries (grpcio, psycopg) release the
GIL while they wait on the server.

A worker is what ``make_worker(i)`` returns for client ``i``: either a callable
``op(k) -> int`` or a ``Worker(op, setup=..., teardown=...)``. ``op(k)`` performs
operation number ``k`` of that client (``k`` counts from 0 across warm-up and
measurement, so ``f"{i}-{k}"`` is a unique request id) and returns how many units
of work it did (1 for a single hold, the number held for a batch, 0 for a refused
hold). ``setup()`` runs in the client's own thread before its warm-up (open a
connection or channel there), ``teardown()`` after its last operation, always.

Every run stops by itself: it is bounded by ``ops_per_client`` and by time
(``seconds``; when only a count is given, ``timeout`` caps it and the result says
``timed_out``). Latencies are taken per operation with ``time.perf_counter_ns``.
Clients start measuring together, after all of them finished setup and warm-up;
the measured time runs from that start to the end of the last client's last
operation.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

Op = Callable[[int], int]
MAX_ERROR_SAMPLES = 5


@dataclass
class Worker:
    """One client's operation plus optional per-thread setup and teardown."""

    op: Op
    setup: Callable[[], Any] | None = None
    teardown: Callable[[], Any] | None = None


@dataclass
class LoadResult:
    """What one ``run_clients`` measured (warm-up excluded)."""

    clients: int
    ops: int                       # operations that returned (not counting failed ones)
    units: int                     # sum of what they returned
    seconds: float                 # common start -> end of the last operation
    rate: float                    # units per second
    op_rate: float                 # operations per second
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    per_client: list[int] = field(default_factory=list)    # operations per client
    errors: int = 0                                          # operations that raised
    error_samples: list[str] = field(default_factory=list)
    timed_out: bool = False         # stopped by time before reaching ops_per_client (only when a count was asked)

    def as_dict(self, prefix: str = "") -> dict[str, Any]:
        """Flat, rounded figures (for ``benchmark.extra_info``)."""
        d = asdict(self)
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, float):
                v = round(v, 3 if k.endswith("_ms") or k == "seconds" else 1)
            out[prefix + k] = v
        return out


def _percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in milliseconds (0 when empty)."""
    if not sorted_ns:
        return 0.0
    rank = max(1, -(-len(sorted_ns) * q // 100))   # ceil(n * q / 100), at least 1
    return sorted_ns[int(rank) - 1] / 1e6


class _Client:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.latencies: list[int] = []
        self.ops = 0
        self.units = 0
        self.errors = 0
        self.samples: list[str] = []
        self.end_ns = 0
        self.failure: BaseException | None = None

    def record_error(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.samples) < MAX_ERROR_SAMPLES:
            self.samples.append("".join(traceback.format_exception_only(type(exc), exc)).strip())


def _as_worker(w: Worker | Op) -> Worker:
    if isinstance(w, Worker):
        return w
    if callable(w):
        return Worker(op=w)
    raise TypeError(f"make_worker must return a callable or a Worker, got {type(w).__name__}")


def run_clients(n_clients: int, make_worker: Callable[[int], Worker | Op], *,
                ops_per_client: int | None = None, seconds: float | None = None,
                warmup_ops: int = 5, timeout: float = 60.0, max_errors: int = 10) -> LoadResult:
    """Run ``n_clients`` closed-loop clients and measure them; see the module docstring.

    ``ops_per_client`` and/or ``seconds`` bound the measurement (at least one is
    required); ``timeout`` caps the time when only a count is given, and also each
    client's setup + warm-up. ``warmup_ops`` operations per client run first and are
    not measured. An operation that raises counts as an error (with a few samples
    kept); a client stops after ``max_errors`` of them. If a setup fails, or a
    warm-up operation raises, no client measures and the exception is raised.
    """
    if n_clients < 1:
        raise ValueError("n_clients must be >= 1")
    if ops_per_client is None and seconds is None:
        raise ValueError("give ops_per_client, seconds, or both: a run must stop by itself")
    limit_s = seconds if seconds is not None else timeout
    max_ops = ops_per_client if ops_per_client is not None else 2**62

    clients = [_Client(_as_worker(make_worker(i))) for i in range(n_clients)]
    start_ns = [0]

    def mark_start() -> None:
        start_ns[0] = time.perf_counter_ns()

    barrier = threading.Barrier(n_clients, action=mark_start, timeout=timeout)

    def body(c: _Client) -> None:
        w = c.worker
        op = w.op
        try:
            try:
                if w.setup is not None:
                    w.setup()
                for k in range(warmup_ops):
                    op(k)
            except BaseException as exc:
                c.failure = exc
                barrier.abort()
                return
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return
            deadline = start_ns[0] + int(limit_s * 1e9)
            lat = c.latencies
            k = warmup_ops
            done = 0
            clock = time.perf_counter_ns
            now = clock()
            while done < max_ops and now < deadline and c.errors < max_errors:
                t0 = now
                try:
                    units = op(k)
                except Exception as exc:   # counted, the client goes on (up to max_errors)
                    now = clock()
                    c.record_error(exc)
                else:
                    now = clock()
                    lat.append(now - t0)
                    c.units += units
                    done += 1
                k += 1
            c.ops = done
            c.end_ns = now
        finally:
            if w.teardown is not None:
                try:
                    w.teardown()
                except BaseException as exc:
                    if c.failure is None:
                        c.failure = exc

    threads = [threading.Thread(target=body, args=(c,), name=f"loadgen-client-{i}", daemon=True)
               for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    failures = [c.failure for c in clients if c.failure is not None]
    if failures:
        raise RuntimeError(f"{len(failures)} of {n_clients} clients failed outside measured operations: "
                           f"{failures[0]!r}") from failures[0]
    if barrier.broken:
        raise RuntimeError("clients did not all finish setup and warm-up in time")

    end = max(c.end_ns for c in clients)
    elapsed = max(end - start_ns[0], 1) / 1e9
    lat = sorted(x for c in clients for x in c.latencies)
    ops = sum(c.ops for c in clients)
    units = sum(c.units for c in clients)
    return LoadResult(
        clients=n_clients, ops=ops, units=units, seconds=elapsed,
        rate=units / elapsed, op_rate=ops / elapsed,
        p50_ms=_percentile(lat, 50), p99_ms=_percentile(lat, 99),
        max_ms=lat[-1] / 1e6 if lat else 0.0, mean_ms=(sum(lat) / len(lat) / 1e6) if lat else 0.0,
        per_client=[c.ops for c in clients],
        errors=sum(c.errors for c in clients),
        error_samples=[s for c in clients for s in c.samples][:MAX_ERROR_SAMPLES],
        timed_out=ops_per_client is not None and any(c.ops < ops_per_client and c.errors < max_errors
                                                     for c in clients),
    )


def format_row(name: str, result: LoadResult) -> str:
    """One line: name, clients, units/s, ops/s, p50/p99/max latency, ops, errors, client spread."""
    r = result
    spread = f"{min(r.per_client)}-{max(r.per_client)}" if r.per_client else "-"
    flag = " TIMED-OUT" if r.timed_out else ""
    return (f"{name:<28} c={r.clients:<3} {r.rate:>10,.0f} units/s {r.op_rate:>9,.0f} ops/s  "
            f"p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  max {r.max_ms:7.2f} ms  "
            f"ops {r.ops:>7,} in {r.seconds:5.2f} s  err {r.errors}  per-client {spread}{flag}")
