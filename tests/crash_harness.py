"""Crash harness: ``kill -9`` a ``pyomni serve`` under load, restart it, and prove nothing answered was lost.

One *cycle*: start ``pyomni serve`` on the same data directory (a small demo
network; ``--fsync always`` or ``interval`` and a short or no
``--snapshot-every``, drawn per cycle), verify what the previous cycle's crash
left, run N client threads doing random mutations for a random 0.2-1.5 s, then
SIGKILL the server while calls are in flight. A run is ``cycles`` of those and
a final restart that verifies the last crash (then a clean SIGTERM stop and one
more restart, which checks the shutdown snapshot too).

The workload is built so that the expected state is known *exactly*:

* Client ``i`` owns SKUs of its own (``skus_per_client`` of the catalogue) and
  every cell of them, at every location; it routes orders of its own SKUs only,
  and confirms or releases only its own reservations. Nothing else touches
  those cells (the harness sets every location's daily capacity to unlimited
  once, so no client's load steers another's routing into refusals, and holds
  get a 30-day TTL, so nothing expires), so each client's part of the ledger is
  a function of its own acknowledged operations and their answers.
* Each client works sequentially and keeps a :class:`ClientModel`: every
  acknowledged operation with its answer, the cells (on hand, reserved), its
  reservations and their states, and at most one operation in flight whose fate
  is unknown when the server dies.
* Operations: stock events (``set`` or ``receive`` of 1-3 own cells, one
  request id), ``route_order`` of 1-2 own SKUs, ``route_orders`` batches of 2-5
  orders (one request id each), ``confirm`` / ``release`` of an own HELD
  reservation.
* The harness itself sends one large atomic stock-event batch (``batch_events``
  receives over cells of SKUs no client owns) 0-40 ms before each kill, so every
  kill lands while a call is out; after the restart those cells must hold
  exactly the units of the acknowledged batches, or that plus the whole
  interrupted batch -- never part of it.

After every restart, for each client (in parallel, the clients are independent):

a. the in-flight operation: the client's cells (and the reservation, for
   confirm/release) are read first and must be the model *without* it or *with*
   it (for a batch: with any prefix of it; records are journaled one per order)
   -- anything else is a half-applied mutation; then it is retried with the SAME
   request id(s), and its answer enters the model, which is exact from then on;
b. acknowledged operations are retried with their request ids -- all of those
   answered in the cycle that was just killed, plus a sample of older ones -- and
   each answer must equal the acknowledged one (Allocation equality ignores the
   explanation);
c. the server's cells of the client's SKUs equal the model (on hand, reserved,
   safety);
d. every reservation the model knows exists with the same order id, request id,
   shipments, expiry and state (HELD / CONFIRMED / RELEASED), and the server has
   no reservation nobody was answered (nor in flight);
e. reservation ids are never reissued: one map rid -> order id over the whole
   run; and a new reservation's id lies beyond every id the recovered server held;
f. 0 <= reserved <= on_hand on every cell read (all SKUs, every restart).

Every loop is bounded by a count and by time. Run it as a script::

    python tests/crash_harness.py --cycles 200 --clients 6 --seed 1 --data-dir /tmp/crash

or import :func:`run` (``tests/test_crash.py``, ``benchmarks/soak_crash.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

import pyomni
from grpc_server.launch import ServerProcess
from pyomni import errors
from pyomni.model import Allocation, AllocationStatus, Order, Reservation, ReservationState

__all__ = ["HarnessConfig", "Summary", "Violation", "run", "main"]

#: Hold TTL of every order: nothing expires during a run.
TTL_S = 30 * 86_400.0
#: Log lines of each server kept with a violation.
LOG_TAIL = 15
#: Violations printed by the CLI (all are in the JSON report).
PRINTED_VIOLATIONS = 20


@dataclass
class HarnessConfig:
    """What one harness run does (every field is a CLI flag of the same name, ``_`` -> ``-``)."""

    cycles: int = 20
    clients: int = 6
    seed: int = 1
    #: must be empty or absent (the model starts from nothing); None = a temporary directory
    data_dir: str | None = None
    stores: int = 20
    warehouses: int = 1
    skus: int = 50
    network_seed: int = 3
    skus_per_client: int = 4
    #: the harness's own atomic batch, sent just before every kill: receive events on every location
    #: for the catalogue's first ``batch_skus`` SKUs (no client's), ``batch_events`` events in all
    batch_skus: int = 4
    batch_events: int = 40_000
    run_min_s: float = 0.2
    run_max_s: float = 1.5
    #: drawn per cycle; both must lose nothing on kill -9 of the process
    fsync_modes: tuple[str, ...] = ("always", "interval")
    #: ``--snapshot-every`` drawn per cycle (0 = only at a clean exit, i.e. never before a kill)
    snapshot_every: tuple[float, ...] = (1.0, 1.0, 2.0, 0.0)
    #: older acknowledged operations retried per client per restart (besides all of the killed cycle's)
    retry_sample: int = 20
    #: list every reservation (and look for ones nobody was answered) at every restart while the server
    #: holds at most this many, else every ``full_check_every``-th restart and at the end; in between the
    #: reservations the killed cycle touched and ``reservation_sample`` older ones per client are read one by one
    full_check_below: int = 20_000
    full_check_every: int = 10
    reservation_sample: int = 50
    call_timeout_s: float = 10.0
    start_timeout_s: float = 60.0
    #: stop starting cycles after this long (the final verification still runs)
    max_seconds: float = 3600.0
    #: after the last crash's verification: SIGTERM, restart, verify again
    clean_restart: bool = True


@dataclass
class Violation:
    """A broken guarantee, with what it takes to reproduce it."""

    cycle: int
    client: int | None
    kind: str
    detail: str
    op: dict[str, Any] | None = None
    server_log: list[str] = field(default_factory=list)       # the server that answered the check
    crashed_log: list[str] = field(default_factory=list)      # the server killed before it

    def line(self) -> str:
        who = "" if self.client is None else f" client {self.client}"
        op = "" if self.op is None else f" op={json.dumps(self.op, default=str)[:400]}"
        return f"cycle {self.cycle}{who}: {self.kind}: {self.detail}{op}"


@dataclass
class CycleRecord:
    """What one cycle did."""

    cycle: int
    fsync: str
    snapshot_every: float
    run_s: float
    acked: int
    in_flight_at_kill: int        # calls started before the SIGKILL and not answered
    sent_after_kill: int          # calls started after it (they fail at once)
    snapshots: int
    segments_retired: int
    start_s: float                # from spawning the server to its "serving" line (recovery included)
    verify_s: float
    exit_status: int | None


@dataclass
class Summary:
    """The counts of a run."""

    config: dict[str, Any]
    cycles: int = 0
    acked: Counter = field(default_factory=Counter)                 # per kind
    in_flight: Counter = field(default_factory=Counter)             # applied / not_applied / partial / ...
    in_flight_at_kill: int = 0
    sent_after_kill: int = 0
    retries: int = 0                                                # acknowledged ops retried
    retries_from_window: int = 0                                    # ... answered with the first answer
    reservations_checked: int = 0
    cells_checked: int = 0
    snapshots: int = 0
    segments_retired: int = 0
    warnings: list[str] = field(default_factory=list)               # WARNING+ server log lines
    violations: list[Violation] = field(default_factory=list)
    records: list[CycleRecord] = field(default_factory=list)
    seconds: float = 0.0
    data_dir: str = ""
    stopped_early: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations

    def line(self) -> str:
        acked = sum(self.acked.values())
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.acked.items()))
        flight = ", ".join(f"{k} {v}" for k, v in sorted(self.in_flight.items()))
        return (f"crash harness: {self.cycles} cycles, {acked} acknowledged ({kinds}); "
                f"in flight at the kill {self.in_flight_at_kill} (+{self.sent_after_kill} sent after it) -> "
                f"{flight or 'none'}; {self.retries_from_window}/{self.retries} retries answered from the window; "
                f"{self.reservations_checked} reservation and {self.cells_checked} cell checks; "
                f"{self.snapshots} snapshots, {self.segments_retired} segments retired; "
                f"{len(self.violations)} violations; {self.seconds:.1f} s"
                + (f" (stopped early: {self.stopped_early})" if self.stopped_early else ""))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["acked"], d["in_flight"] = dict(self.acked), dict(self.in_flight)   # asdict garbles Counters
        d["ok"] = self.ok
        return d


# -- the model -------------------------------------------------------------------------------------
@dataclass
class Op:
    """One mutation a client sent."""

    client: int
    n: int
    kind: str                      # stock | route | batch | confirm | release | locations
    request_ids: tuple[str, ...]
    payload: Any                   # events | Order | tuple of Order | reservation id | locations
    cycle: int                     # the cycle whose server answered it (retried after that cycle's crash)
    answer: Any = None
    started: float = 0.0           # monotonic time it was sent
    at_kill: bool = False          # in flight when the SIGKILL went out (not sent after it)
    error: str = ""

    def describe(self) -> dict[str, Any]:
        if self.kind in ("route", "batch"):
            orders = [self.payload] if self.kind == "route" else list(self.payload)
            payload: Any = [{"id": o.id, "lines": [(x.sku, x.qty) for x in o.lines], "to": o.destination}
                            for o in orders]
        elif self.kind == "locations":
            payload = f"{len(self.payload)} locations"
        else:
            payload = self.payload
        return {"kind": self.kind, "client": self.client, "n": self.n, "request_ids": list(self.request_ids),
                "payload": payload, "cycle": self.cycle, "error": self.error}


@dataclass
class ResModel:
    """A reservation as its client expects it."""

    order_id: str
    request_id: str
    shipments: tuple[Any, ...]
    expires_at: float | None
    state: ReservationState = ReservationState.HELD
    touched: int = 0               # the cycle of its last acknowledged change


Cells = dict[tuple[str, str], list[int]]          # (location, sku) -> [on_hand, reserved, safety]


def _cell(cells: Cells, key: tuple[str, str]) -> list[int]:
    c = cells.get(key)
    if c is None:
        c = cells[key] = [0, 0, 0]
    return c


def _norm(answer: Any) -> Any:
    """An answer in a form that compares by value (a batch may hold errors)."""
    if isinstance(answer, list):
        return [_norm(a) for a in answer]
    if isinstance(answer, errors.PyomniError):
        return ("error", type(answer).__name__, str(answer))
    return answer


class ClientModel:
    """One client's SKUs, cells, reservations and operations."""

    def __init__(self, index: int, skus: Sequence[str], locations: Sequence[tuple[str, float, float]],
                 seed: int) -> None:
        self.index = index
        self.skus = tuple(skus)
        self.locations = tuple(locations)
        self.rng = random.Random(f"{seed}/client/{index}")
        self.cells: Cells = {}
        self.reservations: dict[str, ResModel] = {}
        self.held: list[str] = []
        self.acked: list[Op] = []
        self.in_flight: Op | None = None
        self.calling = False
        self.broken = ""                  # why this client's model is no longer exact (it stops then)
        self.suspect = ""                 # ... found while verifying: the rest of that verification still runs
        self._n = 0                       # operations built (request ids)
        self._orders = 0                  # orders built (order ids)

    # -- building operations ---------------------------------------------------------------------
    def _op(self, kind: str, payload: Any, cycle: int, count: int = 1) -> Op:
        self._n += 1
        base = f"c{self.index}-q{self._n}"
        rids = (base,) if count == 1 else tuple(f"{base}.{k}" for k in range(count))
        return Op(self.index, self._n, kind, rids, payload, cycle)

    def init_op(self, cycle: int) -> Op:
        """Set every cell of the client's SKUs (the model starts exact from here)."""
        events = []
        for loc, _, _ in self.locations:
            for sku in self.skus:
                qty = 0 if self.rng.random() < 0.4 else self.rng.randint(5, 40)
                events.append({"location": loc, "sku": sku, "event": "set", "qty": qty, "safety": 0})
        return self._op("stock", events, cycle)

    def _order(self) -> Order:
        self._orders += 1
        k = 1 if self.rng.random() < 0.6 else 2
        lines = [(sku, self.rng.randint(1, 3)) for sku in self.rng.sample(self.skus, k)]
        _, lat, lon = self.rng.choice(self.locations)
        dest = (round(lat + self.rng.uniform(-0.05, 0.05), 6), round(lon + self.rng.uniform(-0.05, 0.05), 6))
        return Order(f"c{self.index}-o{self._orders}", lines, destination=dest)

    def next_op(self, cycle: int) -> Op:
        rng = self.rng
        end = min(0.6, 0.1 + 0.04 * len(self.held)) if self.held else 0.0
        r = rng.random()
        if r < end:
            rid = rng.choice(self.held)
            return self._op("confirm" if rng.random() < 0.5 else "release", rid, cycle)
        r = rng.random()
        if r < 0.25:
            keys = rng.sample([(loc, sku) for loc, _, _ in self.locations for sku in self.skus], rng.randint(1, 3))
            if rng.random() < 0.6:
                events = [{"location": loc, "sku": sku, "event": "receive", "qty": rng.randint(1, 20)}
                          for loc, sku in keys]
            else:
                events = [{"location": loc, "sku": sku, "event": "set", "safety": 0,
                           "qty": _cell(self.cells, (loc, sku))[1] + rng.randint(0, 30)} for loc, sku in keys]
            return self._op("stock", events, cycle)
        if r < 0.75:
            return self._op("route", self._order(), cycle)
        orders = tuple(self._order() for _ in range(rng.randint(2, 5)))
        return self._op("batch", orders, cycle, count=len(orders))

    # -- what an answer does to the cells ----------------------------------------------------------
    def steps(self, op: Op, answer: Any) -> list[Callable[[Cells], None]]:
        """The answer's effects on the cells, one per journal record (a batch has one per order)."""
        if op.kind == "stock":
            def stock(cells: Cells, events: list[dict[str, Any]] = op.payload) -> None:
                for e in events:
                    c = _cell(cells, (e["location"], e["sku"]))
                    if e["event"] == "set":
                        c[0] = e["qty"]
                        c[2] = e.get("safety", c[2])
                    else:
                        c[0] += e["qty"]
            return [stock]
        if op.kind in ("route", "batch"):
            allocations = [answer] if op.kind == "route" else list(answer)

            def hold(cells: Cells, a: Any) -> None:
                if isinstance(a, Allocation) and a.status is AllocationStatus.ALLOCATED:
                    for sh in a.shipments:
                        for line in sh.lines:
                            _cell(cells, (sh.location, line.sku))[1] += line.qty
            return [lambda cells, a=a: hold(cells, a) for a in allocations]
        if op.kind in ("confirm", "release"):
            res = self.reservations[op.payload]
            confirm = op.kind == "confirm"

            def end(cells: Cells) -> None:
                for sh in res.shipments:
                    for line in sh.lines:
                        c = _cell(cells, (sh.location, line.sku))
                        c[1] -= line.qty
                        if confirm:
                            c[0] -= line.qty
            return [end]
        return []

    def check_answer(self, op: Op, answer: Any) -> list[str]:
        """What is wrong with an answer on its own (before it enters the model)."""
        problems: list[str] = []
        if op.kind == "stock":
            if answer != len(op.payload):
                problems.append(f"applied {answer!r} of {len(op.payload)} events")
        elif op.kind in ("route", "batch"):
            orders = [op.payload] if op.kind == "route" else list(op.payload)
            allocations = [answer] if op.kind == "route" else list(answer)
            if len(allocations) != len(orders):
                return [f"{len(allocations)} answers to {len(orders)} orders"]
            for order, a in zip(orders, allocations):
                if not isinstance(a, Allocation):
                    problems.append(f"order {order.id}: error {_norm(a)}")
                    continue
                if a.order_id != order.id:
                    problems.append(f"answer for order {a.order_id!r}, sent {order.id!r}")
                if a.status is AllocationStatus.ALLOCATED:
                    shipped: Counter = Counter()
                    for sh in a.shipments:
                        for line in sh.lines:
                            shipped[line.sku] += line.qty
                    if shipped != Counter({x.sku: x.qty for x in order.lines}) or not a.reservation_id:
                        problems.append(f"order {order.id}: allocated {dict(shipped)} under "
                                        f"{a.reservation_id!r} for lines {order.lines}")
                elif a.status is not AllocationStatus.UNFULFILLABLE or a.reservation_id:
                    problems.append(f"order {order.id}: status {a.status.name}, reservation {a.reservation_id!r}")
        elif op.kind in ("confirm", "release"):
            want = ReservationState.CONFIRMED if op.kind == "confirm" else ReservationState.RELEASED
            res = self.reservations.get(op.payload)
            if not isinstance(answer, Reservation) or answer.id != op.payload or answer.state is not want:
                problems.append(f"answer {answer!r}")
            elif res is None or answer.order_id != res.order_id or answer.shipments != res.shipments:
                problems.append(f"answer {answer!r} does not match the reservation {res!r}")
        return problems

    def apply(self, op: Op, answer: Any) -> list[tuple[str, str, str]]:
        """Enter an acknowledged answer; returns the (rid, order id, request id) of new reservations."""
        for step in self.steps(op, answer):
            step(self.cells)
        op.answer = answer
        self.acked.append(op)
        new = []
        if op.kind in ("route", "batch"):
            allocations = [answer] if op.kind == "route" else list(answer)
            for a, request_id in zip(allocations, op.request_ids):
                if isinstance(a, Allocation) and a.status is AllocationStatus.ALLOCATED and a.reservation_id:
                    self.reservations[a.reservation_id] = ResModel(a.order_id, request_id, a.shipments, a.expires_at,
                                                                   touched=op.cycle)
                    self.held.append(a.reservation_id)
                    new.append((a.reservation_id, a.order_id, request_id))
        elif op.kind in ("confirm", "release"):
            res = self.reservations[op.payload]
            res.state = ReservationState.CONFIRMED if op.kind == "confirm" else ReservationState.RELEASED
            res.touched = op.cycle
            self.held.remove(op.payload)
        return new

    def expected_cells(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        return {k: tuple(v) for k, v in self.cells.items() if any(v)}  # type: ignore[misc]


def _send(client: pyomni.Client, op: Op) -> Any:
    rid = op.request_ids[0]
    if op.kind == "stock":
        return client.apply_stock_events(op.payload, request_id=rid)
    if op.kind == "route":
        return client.route_order(op.payload, request_id=rid, ttl=TTL_S)
    if op.kind == "batch":
        return client.route_orders(op.payload, request_ids=op.request_ids, ttl=TTL_S)
    if op.kind == "confirm":
        return client.confirm(op.payload, request_id=rid)
    if op.kind == "release":
        return client.release(op.payload, request_id=rid)
    if op.kind == "locations":
        return client.upsert_locations(op.payload, request_id=rid)
    raise ValueError(op.kind)


def _rid_number(rid: str) -> int:
    return int(rid.lstrip("R") or 0)


def _log_lines(server: ServerProcess | None, n: int = LOG_TAIL) -> list[str]:
    if server is None:
        return []
    return [json.dumps(r, default=str) for r in server.log[-n:]]


# -- the harness -----------------------------------------------------------------------------------
class Harness:
    """Runs the cycles; :func:`run` is the entry point."""

    def __init__(self, config: HarnessConfig, data_dir: Path, progress: Callable[[str], None] | None) -> None:
        self.config = config
        self.data_dir = data_dir
        self.progress = progress or (lambda _line: None)
        self.rng = random.Random(f"{config.seed}/harness")
        self.summary = Summary(config=dataclasses.asdict(config), data_dir=str(data_dir))
        self.lock = threading.Lock()
        net = pyomni.demo_network(stores=config.stores, warehouses=config.warehouses, skus=config.skus,
                                  seed=config.network_seed)
        self.network = net
        per = config.skus_per_client
        if config.clients < 1 or per < 1 or config.clients * per > len(net.skus):
            raise ValueError(f"{config.clients} clients x {per} SKUs do not fit {len(net.skus)} SKUs")
        locations = [(loc.id, loc.lat, loc.lon) for loc in net]
        # the catalogue's tail: the demo's best sellers stay out of the way
        skus = list(net.skus)[-config.clients * per:]
        self.models = [ClientModel(i, skus[i * per:(i + 1) * per], locations, config.seed)
                       for i in range(config.clients)]
        if config.batch_skus < 1 or config.batch_skus + config.clients * per > len(net.skus):
            raise ValueError(f"{config.batch_skus} batch SKUs do not fit beside the clients' SKUs")
        # The harness's own batch: a large atomic stock-event batch on cells no client touches, sent
        # just before each kill, so that every kill lands while a call is out, and the call it lands on
        # is one whose all-or-nothing application the restart can check exactly (units add up by N or 0).
        self.batch_skus = list(net.skus)[:config.batch_skus]
        cells = [(loc.id, sku) for loc in net for sku in self.batch_skus]
        repeat = max(1, config.batch_events // len(cells))
        self.batch_table = pa.table({"location": [c[0] for c in cells] * repeat,
                                     "sku": [c[1] for c in cells] * repeat,
                                     "event": ["receive"] * (len(cells) * repeat), "qty": [1] * (len(cells) * repeat)})
        self.batch_units: int | None = None    # units on hand in those cells, as acknowledged batches make it
        self.batch_pending = 0                 # units of the batch the last kill interrupted (fate unknown)
        self.setup: list[Op] = []            # harness-wide acknowledged operations (the capacity upsert)
        self.rid_owner: dict[str, str] = {}  # every reservation id ever acknowledged -> its order id
        self.max_rid = 0                     # the highest id the last recovered server held
        self.server: ServerProcess | None = None
        self.crashed: ServerProcess | None = None
        self.cycle = 0
        self._verifications = 0
        self._full_check = True

    # -- bookkeeping -----------------------------------------------------------------------------
    def violation(self, client: int | None, kind: str, detail: str, op: Op | None = None) -> None:
        v = Violation(self.cycle, client, kind, detail, op.describe() if op is not None else None,
                      _log_lines(self.server), _log_lines(self.crashed))
        with self.lock:
            self.summary.violations.append(v)
        self.progress(f"  VIOLATION {v.line()}")

    def _ack(self, model: ClientModel, op: Op, answer: Any, *, new_request: bool) -> None:
        for problem in model.check_answer(op, answer):
            self.violation(model.index, "bad answer", problem, op)
        for rid, order_id, _ in model.apply(op, answer):
            with self.lock:
                owner = self.rid_owner.setdefault(rid, order_id)
                regressed = new_request and _rid_number(rid) <= self.max_rid
            if owner != order_id:
                self.violation(model.index, "reservation id reissued",
                               f"{rid} was acknowledged for order {owner!r}, now for {order_id!r}", op)
            if regressed:
                self.violation(model.index, "reservation id reused",
                               f"new reservation {rid} is not beyond R{self.max_rid:010d}, the highest id the "
                               "recovered server held", op)
        with self.lock:
            self.summary.acked[op.kind] += 1

    # -- talking to the server -------------------------------------------------------------------
    def _connect(self) -> pyomni.Client:
        assert self.server is not None
        client = pyomni.Client(self.server.address, timeout=self.config.call_timeout_s)
        client.wait_ready(self.config.call_timeout_s)
        return client

    def _read_cells(self, client: pyomni.Client, skus: Sequence[str]) -> dict[tuple[str, str], tuple[int, int, int]]:
        out = {}
        for sku in skus:
            for c in client.availability(sku):
                if not 0 <= c.reserved <= c.on_hand or c.safety < 0:
                    self.violation(None, "invariant", f"cell {c.location}/{sku}: on_hand {c.on_hand}, "
                                                      f"reserved {c.reserved}, safety {c.safety}")
                if c.on_hand or c.reserved or c.safety:
                    out[(c.location, sku)] = (c.on_hand, c.reserved, c.safety)
        with self.lock:
            self.summary.cells_checked += len(out)
        return out

    def _batch_units(self, client: pyomni.Client) -> int:
        return sum(v[0] for v in self._read_cells(client, self.batch_skus).values())

    def _send_batch(self, answered: threading.Event, failed: list[str]) -> None:
        try:
            with self._connect() as client:
                client.apply_stock_events(self.batch_table, request_id=f"harness-batch-{self.cycle}")
        except Exception as exc:              # noqa: BLE001 -- the kill ends it; anything else is reported
            failed.append(f"{type(exc).__name__}: {exc}")
            return
        answered.set()

    def _check_batch(self, client: pyomni.Client) -> None:
        """The batch the last kill interrupted was applied wholly or not at all."""
        if self.batch_units is None:
            return
        got = self._batch_units(client)
        outcomes = {self.batch_units: "harness batch not applied",
                    self.batch_units + self.batch_pending: "harness batch applied"}
        if got not in outcomes:
            self.violation(None, "batch half-applied",
                           f"{got} units on hand in the batch cells; expected {self.batch_units} or "
                           f"{self.batch_units + self.batch_pending}")
        elif self.batch_pending:
            with self.lock:
                self.summary.in_flight[outcomes[got]] += 1
        self.batch_units = got
        self.batch_pending = 0

    @staticmethod
    def _diff(got: dict, want: dict, limit: int = 6) -> str:
        keys = sorted(k for k in set(got) | set(want) if got.get(k, (0, 0, 0)) != want.get(k, (0, 0, 0)))
        return "; ".join(f"{k[0]}/{k[1]}: server {got.get(k, (0, 0, 0))} model {want.get(k, (0, 0, 0))}"
                         for k in keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")

    # -- a server's life -------------------------------------------------------------------------
    def _start(self, fsync: str, snapshot_every: float) -> bool:
        c = self.config
        args = ["--stores", str(c.stores), "--warehouses", str(c.warehouses), "--skus", str(c.skus),
                "--seed", str(c.network_seed), "--fsync", fsync, "--snapshot-every", str(snapshot_every),
                "--fsync-interval-ms", str(self.rng.choice((2.0, 5.0, 20.0))), "--grace", "5"]
        self.server = ServerProcess(self.data_dir, args, start_timeout=c.start_timeout_s)
        try:
            self.server.start()
        except errors.PyomniError as exc:
            self.violation(None, "server did not start", f"{exc}; stderr tail: {_log_lines(self.server, 40)}")
            return False
        return True

    def _harvest_log(self, server: ServerProcess) -> tuple[int, int]:
        """Snapshots taken while serving and segments retired; WARNING+ lines are kept."""
        snapshots = retired = 0
        serving = False
        for r in server.log:
            msg = r.get("message")
            if msg == "serving":
                serving = True
            if msg == "snapshot written" and serving:
                snapshots += 1
                retired += int(r.get("segments_retired") or 0)   # type: ignore[call-overload]
            level = str(r.get("level", ""))
            if level in ("WARNING", "ERROR", "CRITICAL") or "level" not in r:
                with self.lock:
                    self.summary.warnings.append(f"cycle {self.cycle}: {json.dumps(r, default=str)[:300]}")
                if level in ("ERROR", "CRITICAL"):
                    self.violation(None, f"server logged {level}", json.dumps(r, default=str)[:500])
        with self.lock:
            self.summary.snapshots += snapshots
            self.summary.segments_retired += retired
        return snapshots, retired

    # -- the workload ----------------------------------------------------------------------------
    def _setup(self, client: pyomni.Client) -> bool:
        """First cycle: unlimited daily capacity everywhere, then every client's cells set."""
        locations = [dataclasses.replace(loc, daily_capacity=0) for loc in self.network]
        op = Op(-1, 0, "locations", ("harness-capacity",), locations, self.cycle)
        try:
            op.answer = _send(client, op)
            for m in self.models:
                init = m.init_op(self.cycle)
                self._ack(m, init, _send(client, init), new_request=True)
        except errors.PyomniError as exc:
            self.violation(None, "setup failed", f"{type(exc).__name__}: {exc}", op)
            return False
        self.setup.append(op)
        self.batch_units = self._batch_units(client)
        with self.lock:
            self.summary.acked[op.kind] += 1
        return True

    def _work(self, model: ClientModel, client: pyomni.Client, deadline: float, killed: threading.Event) -> None:
        while time.monotonic() < deadline and not model.broken:
            op = model.next_op(self.cycle)
            model.in_flight = op
            op.started = time.monotonic()
            model.calling = True
            try:
                answer = _send(client, op)
            except Exception as exc:                      # noqa: BLE001 -- every failure leaves the op in flight
                model.calling = False
                op.error = f"{type(exc).__name__}: {exc}"
                if not killed.is_set():
                    self.violation(model.index, "error while the server was up", op.error, op)
                return
            model.calling = False
            model.in_flight = None
            self._ack(model, op, answer, new_request=True)

    def _run_and_kill(self, run_s: float) -> tuple[int, int, int, int | None]:
        """Clients for ``run_s``, then SIGKILL while calls are in flight; (acked, at kill, after, exit status)."""
        assert self.server is not None
        killed = threading.Event()
        before = sum(self.summary.acked.values())
        clients = []
        threads = []
        live = [m for m in self.models if not m.broken]
        bound = time.monotonic() + run_s + self.config.call_timeout_s
        for m in live:
            client = self._connect()
            clients.append(client)
            threads.append(threading.Thread(target=self._work, args=(m, client, bound, killed),
                                            name=f"crash-client-{m.index}", daemon=True))
        for t in threads:
            t.start()
        time.sleep(run_s)
        wait_until = time.monotonic() + 1.0           # kill while a call is out (it nearly always is)
        while not any(m.calling for m in live) and time.monotonic() < wait_until:
            time.sleep(0.0002)
        # ... and while the harness's own large batch is out: sent now, killed within 0-40 ms of it
        batch_answered = threading.Event()
        batch_failed: list[str] = []
        batch = threading.Thread(target=self._send_batch, args=(batch_answered, batch_failed),
                                 name="crash-batch", daemon=True)
        batch.start()
        time.sleep(self.rng.uniform(0.0, 0.04))
        killed.set()
        if self.server.process is not None and self.server.process.poll() is not None:
            self.violation(None, "server died before the kill", f"exit status {self.server.process.returncode}")
        if self.server.process is not None:
            os.kill(self.server.process.pid, signal.SIGKILL)
        # taken once the signal is sent: a call started before this instant and not answered was out
        # when the server died, whether it went out before or after the decision to kill
        t_kill = time.monotonic()
        batch_out = not batch_answered.is_set()
        status = self.server.kill()                     # reaps it (the second SIGKILL is a no-op)
        batch.join(self.config.call_timeout_s + 5)
        if batch_out:
            self.batch_pending = self.batch_table.num_rows
        elif self.batch_units is not None:             # answered before the kill: acknowledged
            self.batch_units += self.batch_table.num_rows
            with self.lock:
                self.summary.acked["harness batch"] += 1
        if batch_failed and not batch_out:
            self.violation(None, "error while the server was up", batch_failed[0])
        for t in threads:
            t.join(self.config.call_timeout_s + 5)
            if t.is_alive():
                self.violation(None, "client hung", f"{t.name} still running after the kill")
        for client in clients:
            client.close()
        at_kill, after = int(batch_out), 0
        for m in live:
            if m.in_flight is not None:
                m.in_flight.at_kill = m.in_flight.started < t_kill
                at_kill += m.in_flight.at_kill
                after += not m.in_flight.at_kill
        return sum(self.summary.acked.values()) - before, at_kill, after, status

    # -- verification ----------------------------------------------------------------------------
    def _resolve_in_flight(self, model: ClientModel, client: pyomni.Client) -> None:
        op = model.in_flight
        if op is None:
            return
        before = self._read_cells(client, model.skus)
        state_before = None
        if op.kind in ("confirm", "release"):
            state_before = client.reservation(op.payload).state
        try:
            answer = _send(client, op)
        except errors.PyomniError as exc:
            model.broken = f"retry of the in-flight op failed: {type(exc).__name__}: {exc}"
            self.violation(model.index, "in-flight retry failed", f"{type(exc).__name__}: {exc}", op)
            return
        states = [model.expected_cells()]
        cells = {k: list(v) for k, v in model.cells.items()}
        for step in model.steps(op, answer):
            step(cells)
            states.append({k: tuple(v) for k, v in cells.items() if any(v)})
        matches = [i for i, s in enumerate(states) if s == before]
        n = len(states) - 1
        if not matches:
            # an acknowledged mutation lost, or this one half-applied: the checks that follow tell which
            model.suspect = "the cells before the in-flight retry matched no prefix of it"
            self.violation(model.index, "lost or half-applied mutation",
                           f"before the retry the cells are neither the model without the in-flight op nor "
                           f"with {'any prefix of ' if n > 1 else ''}it: {self._diff(before, states[0])} "
                           f"(the retry answered {_norm(answer)!r})", op)
            outcome = "mismatch"
        elif 0 in matches and n in matches:
            outcome = "no_effect"           # the answer changes no cell (unfulfillable, or a set to the same)
        elif n in matches:
            outcome = "applied"
        elif 0 in matches:
            outcome = "not_applied"
        else:
            outcome = "partial"             # a batch: a prefix of its orders was durable
        if state_before is not None:
            target = ReservationState.CONFIRMED if op.kind == "confirm" else ReservationState.RELEASED
            if state_before not in (ReservationState.HELD, target):
                self.violation(model.index, "reservation in an impossible state",
                               f"{op.payload} was {state_before.name} before the retry", op)
            expected = "applied" if state_before is target else "not_applied"
            if outcome not in (expected, "mismatch"):
                self.violation(model.index, "reservation and cells disagree",
                               f"{op.payload} was {state_before.name} but the cells say {outcome}", op)
        with self.lock:
            self.summary.in_flight[outcome if op.at_kill else f"{outcome} (sent after the kill)"] += 1
        model.in_flight = None
        op.cycle = self.cycle               # answered by this server: retried again after its crash
        self._ack(model, op, answer, new_request=False)

    def _retry_acked(self, model: ClientModel, client: pyomni.Client, rng: random.Random) -> None:
        last = self.cycle - 1
        recent = [op for op in model.acked if op.cycle >= last]
        older = [op for op in model.acked if op.cycle < last]
        sample = rng.sample(older, min(self.config.retry_sample, len(older)))
        for op in recent + sample:
            try:
                answer = _send(client, op)
            except errors.PyomniError as exc:
                answer = exc
            same = _norm(answer) == _norm(op.answer)
            with self.lock:
                self.summary.retries += 1
                self.summary.retries_from_window += same
            if not same:
                self.violation(model.index, "retry answered differently",
                               f"first answer {_norm(op.answer)!r}, retry {_norm(answer)!r}", op)

    def _verify_client(self, model: ClientModel, rng: random.Random) -> None:
        if model.broken:
            return
        try:
            with self._connect() as client:
                self._resolve_in_flight(model, client)
                if model.broken:
                    return
                self._retry_acked(model, client, rng)
                got = self._read_cells(client, model.skus)
                want = model.expected_cells()
                if got != want:
                    self.violation(model.index, "stock differs from the acknowledged operations",
                                   self._diff(got, want))
                if not self._full_check:
                    self._check_reservations_one_by_one(model, client, rng)
        except errors.PyomniError as exc:
            self.violation(model.index, "verification call failed", f"{type(exc).__name__}: {exc}")
            model.suspect = model.suspect or f"verification failed: {exc}"

    def _check_reservation(self, model: ClientModel, rid: str, want: ResModel, got: Reservation | None) -> None:
        if got is None:
            self.violation(model.index, "acknowledged reservation lost", f"{rid} of order {want.order_id}")
            return
        expected = (want.order_id, want.request_id, want.state, want.shipments, want.expires_at)
        actual = (got.order_id, got.request_id, got.state, got.shipments, got.expires_at)
        if actual != expected:
            self.violation(model.index, "reservation differs",
                           f"{rid}: server {actual[:3]} model {expected[:3]}"
                           + ("" if actual[3:] == expected[3:] else "; shipments/expiry differ"))

    def _check_reservations_one_by_one(self, model: ClientModel, client: pyomni.Client,
                                       rng: random.Random) -> None:
        recent = [rid for rid, r in model.reservations.items() if r.touched >= self.cycle - 1]
        older = [rid for rid, r in model.reservations.items() if r.touched < self.cycle - 1]
        for rid in recent + rng.sample(older, min(self.config.reservation_sample, len(older))):
            try:
                got: Reservation | None = client.reservation(rid)
            except errors.NotFound:
                got = None
            self._check_reservation(model, rid, model.reservations[rid], got)
            with self.lock:
                self.summary.reservations_checked += 1

    def _verify_reservations(self, client: pyomni.Client) -> None:
        listed: dict[str, Reservation] = {}
        for r in client.reservations(page_size=1000):
            if r.id in listed:
                self.violation(None, "reservation listed twice", r.id)
            listed[r.id] = r
        known: set[str] = set()
        for m in self.models:
            if m.broken:
                known.update(r.id for r in listed.values() if r.order_id.startswith(f"c{m.index}-"))
                continue
            for rid, want in m.reservations.items():
                known.add(rid)
                self._check_reservation(m, rid, want, listed.get(rid))
        with self.lock:
            self.summary.reservations_checked += len(known)
        for rid, r in listed.items():
            owner = self.rid_owner.get(rid)
            if rid not in known:
                self.violation(None, "reservation nobody was answered",
                               f"{rid} of order {r.order_id} ({r.state.name}) is neither acknowledged nor in flight")
            elif owner is not None and owner != r.order_id:
                self.violation(None, "reservation id reissued", f"{rid} holds order {r.order_id}, "
                                                                f"acknowledged for {owner}")
        self.max_rid = max((_rid_number(rid) for rid in listed), default=0)

    def _verify(self, *, final: bool = False) -> float:
        """Everything the previous crash must have kept; returns the seconds it took."""
        start = time.monotonic()
        self._verifications += 1
        total = sum(len(m.reservations) for m in self.models)
        self._full_check = (final or total <= self.config.full_check_below
                            or self._verifications % max(1, self.config.full_check_every) == 0)
        threads = [threading.Thread(target=self._verify_client,
                                    args=(m, random.Random(f"{self.config.seed}/verify/{self.cycle}/{m.index}")),
                                    name=f"crash-verify-{m.index}", daemon=True) for m in self.models]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(60.0, self.config.call_timeout_s * 10))
            if t.is_alive():
                self.violation(None, "verification hung", t.name)
        try:
            with self._connect() as client:
                for op in self.setup:
                    answer = client.upsert_locations(op.payload, request_id=op.request_ids[0])
                    with self.lock:
                        self.summary.retries += 1
                        self.summary.retries_from_window += answer == op.answer
                    if answer != op.answer:
                        self.violation(None, "retry answered differently",
                                       f"first answer {op.answer!r}, retry {answer!r}", op)
                if self._full_check:
                    self._verify_reservations(client)
                else:                   # the newest id the server holds, for the next run's "beyond" check
                    self.max_rid = max([self.max_rid] + [_rid_number(rid) for m in self.models
                                                         for rid in m.reservations])
                self._read_cells(client, self.network.skus)        # invariants on every cell
                self._check_batch(client)
        except errors.PyomniError as exc:
            self.violation(None, "verification call failed", f"{type(exc).__name__}: {exc}")
        for m in self.models:
            if m.suspect and not m.broken:
                m.broken = m.suspect            # its model is no longer exact: it sits out the rest of the run
        return time.monotonic() - start

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> Summary:
        c = self.config
        t0 = time.monotonic()
        s = self.summary
        for cycle in range(1, c.cycles + 1):
            if time.monotonic() - t0 > c.max_seconds:
                s.stopped_early = f"max_seconds {c.max_seconds} reached before cycle {cycle}"
                break
            if all(m.broken for m in self.models):
                s.stopped_early = "every client's model is broken"
                break
            self.cycle = cycle
            fsync = self.rng.choice(c.fsync_modes)
            snap = self.rng.choice(c.snapshot_every)
            run_s = round(self.rng.uniform(c.run_min_s, c.run_max_s), 3)
            started = time.monotonic()
            if not self._start(fsync, snap):
                s.stopped_early = f"the server did not start in cycle {cycle}"
                break
            start_s = time.monotonic() - started
            if cycle == 1:
                with self._connect() as client:
                    if not self._setup(client):
                        self.server.kill()
                        s.stopped_early = "setup failed"
                        break
                verify_s = 0.0
            else:
                verify_s = self._verify()
            acked, at_kill, after, status = self._run_and_kill(run_s)
            if status != -9:
                self.violation(None, "kill", f"exit status {status}, expected -9 (SIGKILL)")
            snaps, retired = self._harvest_log(self.server)
            s.cycles = cycle
            s.in_flight_at_kill += at_kill
            s.sent_after_kill += after
            s.records.append(CycleRecord(cycle, fsync, snap, run_s, acked, at_kill, after, snaps, retired,
                                         round(start_s, 3), round(verify_s, 3), status))
            self.progress(f"cycle {cycle}/{c.cycles}: fsync={fsync} snapshot-every={snap:g}s start={start_s:.2f}s "
                          f"run={run_s:.2f}s acked={acked} in-flight at kill={at_kill} (+{after} after) "
                          f"snapshots={snaps} verify={verify_s:.2f}s violations={len(s.violations)}")
            self.crashed, self.server = self.server, None
        if s.cycles:
            self._final()
        s.seconds = round(time.monotonic() - t0, 2)
        return s

    def _final(self) -> None:
        """Verify the last crash; then a clean stop and one more restart, verified too."""
        self.cycle = self.summary.cycles + 1
        if not self._start(self.rng.choice(self.config.fsync_modes), 0.0):
            return
        verify_s = self._verify(final=True)
        self.progress(f"final restart: verify={verify_s:.2f}s violations={len(self.summary.violations)}")
        if self.config.clean_restart:
            assert self.server is not None
            status = self.server.stop()
            self._harvest_log(self.server)
            if status != 0 or "stopped" not in self.server.messages():
                self.violation(None, "clean stop", f"exit status {status}; log tail {_log_lines(self.server)}")
            self.crashed, self.server = self.server, None
            self.cycle += 1
            if not self._start("always", 0.0):
                return
            verify_s = self._verify(final=True)
            self.progress(f"after a clean stop: verify={verify_s:.2f}s violations={len(self.summary.violations)}")
        assert self.server is not None
        self.server.stop()
        self._harvest_log(self.server)
        self.server = None


def run(config: HarnessConfig, progress: Callable[[str], None] | None = None) -> Summary:
    """Run the harness; the data directory must be empty or absent (a temporary one when None).

    A temporary directory is removed afterwards unless a violation was found (its path is in the summary).
    """
    temporary = config.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="pyomni-crash-") if temporary else config.data_dir)  # type: ignore[arg-type]
    if not temporary and data_dir.exists() and any(data_dir.iterdir()):
        raise ValueError(f"{str(data_dir)!r} is not empty: the harness's model starts from a new data directory")
    harness = Harness(config, data_dir, progress)
    try:
        summary = harness.run()
    finally:
        for server in (harness.server, harness.crashed):
            if server is not None:
                server.kill()
    if temporary and summary.ok:
        shutil.rmtree(data_dir, ignore_errors=True)
    return summary


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def parser() -> argparse.ArgumentParser:
    """The command line (``benchmarks/soak_crash.py`` shares it)."""
    d = HarnessConfig()
    p = argparse.ArgumentParser(description="Kill -9 pyomni serve under load, restart, verify; exit 1 on any "
                                            "violation.")
    p.add_argument("--cycles", type=int, default=d.cycles)
    p.add_argument("--clients", type=int, default=d.clients)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--data-dir", default=None, help="an empty or new directory (default: a temporary one)")
    p.add_argument("--stores", type=int, default=d.stores)
    p.add_argument("--warehouses", type=int, default=d.warehouses)
    p.add_argument("--skus", type=int, default=d.skus)
    p.add_argument("--network-seed", type=int, default=d.network_seed)
    p.add_argument("--skus-per-client", type=int, default=d.skus_per_client)
    p.add_argument("--batch-skus", type=int, default=d.batch_skus)
    p.add_argument("--batch-events", type=int, default=d.batch_events)
    p.add_argument("--run-min-s", type=float, default=d.run_min_s)
    p.add_argument("--run-max-s", type=float, default=d.run_max_s)
    p.add_argument("--fsync-modes", type=lambda t: tuple(t.split(",")), default=d.fsync_modes,
                   help="comma-separated, drawn per cycle (default always,interval)")
    p.add_argument("--snapshot-every", type=_floats, default=d.snapshot_every,
                   help="comma-separated seconds, drawn per cycle (default 1,1,2,0)")
    p.add_argument("--retry-sample", type=int, default=d.retry_sample)
    p.add_argument("--call-timeout-s", type=float, default=d.call_timeout_s)
    p.add_argument("--max-seconds", type=float, default=d.max_seconds)
    p.add_argument("--no-clean-restart", dest="clean_restart", action="store_false")
    p.add_argument("--report", help="write the whole summary (violations with log tails) as JSON here")
    p.add_argument("--quiet", action="store_true", help="no line per cycle")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: progress per cycle, a summary line, the violations; exit status 1 on any violation."""
    args = parser().parse_args(argv)
    fields = {f.name for f in dataclasses.fields(HarnessConfig)}
    config = HarnessConfig(**{k: v for k, v in vars(args).items() if k in fields})
    try:
        summary = run(config, None if args.quiet else (lambda line: print(line, flush=True)))
    except ValueError as exc:
        print(f"crash harness: {exc}", file=sys.stderr)
        return 2
    for v in summary.violations[:PRINTED_VIOLATIONS]:
        print(f"VIOLATION {v.line()}")
        for line in v.server_log[-5:]:
            print(f"    server: {line}")
    if len(summary.violations) > PRINTED_VIOLATIONS:
        print(f"... {len(summary.violations) - PRINTED_VIOLATIONS} more (see --report)")
    if args.report:
        Path(args.report).write_text(json.dumps(summary.to_dict(), indent=2, default=str))
    if not summary.ok:
        print(f"data directory kept: {summary.data_dir}")
    print(summary.line(), flush=True)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
