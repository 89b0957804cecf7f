"""Flash sales over the service: many processes racing for one sale, pay-window expiry, and ``kill -9`` mid-sale.

* ``test_64_processes_race_for_a_flash_sale`` -- an in-process gRPC server over
  a durable engine (``fsync="always"``) and 64 client *processes* (spawned)
  released together by one barrier, each sending unary claims for a sale whose
  stores hold less stock than their quotas: exactly what the stock allows is
  sold, never more, per store, per customer and in all; every acknowledged
  claim is one the engine holds; the coalescer batched the concurrent calls.
* ``test_pay_window_expiry_gives_back_exactly_those_units`` -- on an embedded
  engine with a fake clock (both backends, with and without an earmark): the
  claims whose pay window ran out, and only those, give their units back to the
  stock and to every quota, and exactly those units can be claimed again.
* ``test_kill_9_mid_sale_loses_no_acknowledged_claim`` -- a ``pyomni serve``
  child killed with SIGKILL under unary and batch claims: after a restart every
  acknowledged claim is there as answered, a retry answers with it, an
  interrupted batch came back whole or not at all, and claim numbers go on
  above every earlier one.

The claim workers of the first test are processes started with the ``spawn``
method, so each imports what it uses from scratch -- 64 times on two cores.
To keep that small a worker runs from its function's source (it imports
neither this module nor pytest) and imports only the client side of pyomni
(see :func:`_race_worker`).
"""

from __future__ import annotations

import inspect
import multiprocessing
import random
import threading
import time
from collections import Counter

import pyarrow as pa
import pytest

import pyomni
from grpc_server.launch import ServerProcess
from grpc_server.selling import FlashSaleServicer
from grpc_server.server import create_server
from pyomni import ReservationState, errors

SKU = "SKU-000001"
HELD, CONFIRMED, RELEASED, EXPIRED = (ReservationState.HELD, ReservationState.CONFIRMED, ReservationState.RELEASED,
                                      ReservationState.EXPIRED)


# -- 1. 64 processes race for one sale --------------------------------------------------------------
N_PROCS = 64
CALLS_PER_PROC = 40
N_CUSTOMERS = 600
RETRY_SHARE = 0.10
N_SALE_STORES = 50
STORE_QUOTA = 20
RICH, POOR = 25, 15                     # stock at 40 stores and at 10: min(quota, stock) = 20 and 15
N_POOR = 10
CUSTOMER_LIMIT = 3
SALE_QUOTA = 1000


def _race_worker(index, address, sale_id, sku, stores, points, seed, calls, customers, retry_share, barrier,
                 results):
    """One claim process: connect, wait at the barrier, send the claims, report what was answered.

    Runs in a spawned interpreter from its source (see :func:`_spawn_worker`), so it imports what it uses
    itself and reads no global of this module.
    """
    import importlib.util
    import random
    import sys
    import time
    import traceback
    from collections import Counter

    try:
        # The client needs pyomni's wire modules, not the engine behind ``pyomni/__init__`` (nor the pandas
        # that pyarrow imports with it): register the package without running its __init__, which more than
        # halves what 64 processes import on two cores. A client that ever needs the package's namespace
        # gets the ordinary import instead.
        if "pyomni" not in sys.modules:
            sys.modules["pyomni"] = importlib.util.module_from_spec(importlib.util.find_spec("pyomni"))
        try:
            from pyomni import errors
            from pyomni.client import Client
        except ImportError:
            for name in [m for m in sys.modules if m == "pyomni" or m.startswith("pyomni.")]:
                del sys.modules[name]
            from pyomni import errors
            from pyomni.client import Client

        refusals = (errors.SoldOut, errors.StoreQuotaExhausted, errors.CustomerLimitReached,
                    errors.InsufficientStock)
        rng = random.Random(seed)
        plan = []
        for i in range(calls):
            customer = f"m-{rng.randrange(customers):03d}"
            where = {"store": rng.choice(stores)} if i % 2 == 0 else {"near": tuple(rng.choice(points))}
            plan.append((f"p{index:02d}-{i:03d}", customer, where, rng.random() < retry_share))
        acked = []
        refused = Counter()
        retries = {"same": 0, "refused_again": 0, "mismatch": []}
        with Client(address, timeout=60.0) as client:
            client.wait_ready(60.0)
            client.sale(sale_id)                        # one call before the start: the connection is up
            barrier.wait(180.0)
            started = time.perf_counter()
            for rid, customer, where, retry in plan:
                answers = []
                for _ in range(2 if retry else 1):
                    try:
                        answers.append(client.claim(sale_id, customer, sku, 1, request_id=rid, **where))
                    except refusals as exc:
                        answers.append(type(exc).__name__)
                first = answers[0]
                if isinstance(first, str):
                    refused[first] += 1
                else:
                    acked.append((first.id, first.store, first.customer, first.qty, rid))
                if retry:
                    again = answers[1]
                    if isinstance(first, str) and isinstance(again, str):
                        retries["refused_again"] += 1
                    elif again == first:
                        retries["same"] += 1
                    else:
                        retries["mismatch"].append((rid, repr(first), repr(again)))
                        if isinstance(first, str):          # a refusal, then a claim: count the claim too
                            acked.append((again.id, again.store, again.customer, again.qty, rid))
            seconds = time.perf_counter() - started
        results.put({"index": index, "acked": acked, "refused": dict(refused), "retries": retries,
                     "seconds": seconds, "stub_import": "pyomni.engine" not in sys.modules})
    except BaseException:
        results.put({"index": index, "error": traceback.format_exc()})
        barrier.abort()


def _spawn_worker(ctx, name: str, function, *args):
    """A spawned process running ``function(*args)`` from its source: the child imports neither this module
    nor pytest (``function`` must import what it uses and read no module global)."""
    source = inspect.getsource(function) + f"\n{function.__name__}(*ARGS)\n"
    return ctx.Process(target=exec, args=(source, {"__name__": "__claim_worker__", "ARGS": args}), name=name,
                       daemon=True)


@pytest.fixture
def recorded_servicers(monkeypatch):
    """The FlashSaleServicers ``create_server`` makes (to read their coalescer's counters)."""
    made: list[FlashSaleServicer] = []

    class Recorded(FlashSaleServicer):
        def __init__(self, engine) -> None:
            super().__init__(engine)
            made.append(self)

    monkeypatch.setattr("grpc_server.server.FlashSaleServicer", Recorded)
    return made


@pytest.mark.slow
def test_64_processes_race_for_a_flash_sale(tmp_path, recorded_servicers):
    net = pyomni.demo_network(stores=60, warehouses=1, skus=4, seed=11)
    store_ids = [i for i, k in zip(net.ids, net.kind.tolist()) if k == int(pyomni.LocationKind.STORE)]
    assert len(store_ids) >= N_SALE_STORES
    rng = random.Random(5)
    sale_stores = rng.sample(store_ids, N_SALE_STORES)
    poor = set(rng.sample(sale_stores, N_POOR))
    stock = {s: POOR if s in poor else RICH for s in sale_stores}
    cap = {s: min(STORE_QUOTA, q) for s, q in stock.items()}
    expected = min(SALE_QUOTA, STORE_QUOTA * N_SALE_STORES, sum(cap.values()))
    assert expected == 950
    position = {loc: i for i, loc in enumerate(net.ids)}
    points = [(float(net.lat[position[s]]), float(net.lon[position[s]])) for s in sale_stores]

    eng = pyomni.Engine.open(tmp_path / "data", net, fsync="always")
    try:
        answers, servicer, spawn_s, race_s = _race(eng, sale_stores, stock, points, recorded_servicers)
    finally:
        eng.close()
    acked = [c for a in answers for c in a["acked"]]
    refused = sum((Counter(a["refused"]) for a in answers), Counter())
    mismatches = [m for a in answers for m in a["retries"]["mismatch"]]
    same = sum(a["retries"]["same"] for a in answers)
    print(f"\n{N_PROCS} processes: {spawn_s:.1f} s to set up, spawn and connect, {race_s:.2f} s of racing "
          f"(slowest worker {max(a['seconds'] for a in answers):.2f} s); {len(acked)} claims, refusals "
          f"{dict(refused)}, {same} retries answered alike; coalescer {servicer.coalescer.batches} batches for "
          f"{servicer.coalescer.claims} claims")
    assert all(a["stub_import"] for a in answers)             # (only how fast the workers start depends on it)

    # retries answer with the first claim; nothing the race refused is given later (nothing came back)
    assert not mismatches, mismatches[:5]
    assert same > 0
    # exactly what the stock allows was sold: per store and in all
    counters = eng.sale_counters("race")
    assert counters.claimed == counters.claims == expected
    assert {s.store: s.claimed for s in counters.stores} == cap
    assert counters.remaining == 0
    # the acknowledged claims are distinct, one per claim held, and the engine's own
    ids = [c[0] for c in acked]
    assert len(set(ids)) == len(ids) == expected
    assert len({c[4] for c in acked}) == len(acked)             # one claim per request id
    held = eng.claims("race", limit=10 * expected)
    assert {(c.id, c.store, c.customer, c.qty) for c in held} == {c[:4] for c in acked}
    assert all(c.state is HELD for c in held)
    assert sum(refused.values()) + len(acked) == N_PROCS * CALLS_PER_PROC
    # no customer over the limit, though customers raced from several processes and hit it
    per_customer = Counter(c.customer for c in held)
    assert max(per_customer.values()) <= CUSTOMER_LIMIT
    assert refused["CustomerLimitReached"] > 0
    processes_of = {}
    for c in acked:
        processes_of.setdefault(c[2], set()).add(c[4][:3])
    assert max(len(p) for p in processes_of.values()) > 1
    # the ledger holds exactly the claimed units at each store (the earmark went back as the stores filled)
    per_store = Counter()
    for c in held:
        per_store[c.store] += c.qty
    for s in sale_stores:
        level = eng.stock(s, SKU)
        assert level.on_hand == stock[s]
        assert level.reserved == per_store[s] == cap[s]
        assert 0 <= level.reserved <= level.on_hand
    eng.check_invariants()
    # concurrent unary calls were decided in batches
    assert servicer.coalescer.claims >= N_PROCS * CALLS_PER_PROC
    assert 0 < servicer.coalescer.batches < servicer.coalescer.claims


def _race(eng, sale_stores, stock, points, recorded_servicers) -> tuple[list[dict], FlashSaleServicer, float, float]:
    """Set the stock, open the sale, serve it and run the workers; returns their reports, the servicer, and the
    seconds to the start and of the race."""
    started = time.perf_counter()
    eng.apply_stock_events(pa_events(stock))
    now = time.time()
    sale = pyomni.FlashSale("race", (SKU,), now - 5.0, now + 3600.0, SALE_QUOTA,
                            tuple((s, STORE_QUOTA) for s in sale_stores), customer_limit=CUSTOMER_LIMIT,
                            pay_window=600.0)
    assert eng.create_sale(sale).state is pyomni.SaleState.ACTIVE
    server, port = create_server("127.0.0.1:0", eng)
    server.start()
    (servicer,) = recorded_servicers
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_PROCS + 1)
    results = ctx.Queue()
    procs = [_spawn_worker(ctx, f"claim-worker-{i}", _race_worker, i, f"127.0.0.1:{port}", "race", SKU,
                           sale_stores, points, 1000 + i, CALLS_PER_PROC, N_CUSTOMERS, RETRY_SHARE, barrier, results)
             for i in range(N_PROCS)]
    answers: list[dict] = []
    try:
        for p in procs:
            p.start()
        try:
            barrier.wait(180.0)
        except threading.BrokenBarrierError:
            pass                                    # a worker failed before the start: its report says why
        raced = time.perf_counter()
        for _ in procs:
            answers.append(results.get(timeout=120.0))
            if "error" in answers[-1]:
                break
        race_s = time.perf_counter() - raced
        for p in procs:
            p.join(30.0)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5.0)
        server.stop(None).wait()
    failed = [a["error"] for a in answers if "error" in a]
    assert not failed, failed[0]
    assert sorted(a["index"] for a in answers) == list(range(N_PROCS))
    assert [p.exitcode for p in procs] == [0] * N_PROCS
    return answers, servicer, raced - started, race_s


def pa_events(stock: dict[str, int]) -> pa.Table:
    """``set`` events, safety 0, for the sale's SKU."""
    stores = list(stock)
    return pa.table({"location": stores, "sku": [SKU] * len(stores), "event": ["set"] * len(stores),
                     "qty": [stock[s] for s in stores], "safety": [0] * len(stores)})


# -- 2. pay-window expiry -----------------------------------------------------------------------------
@pytest.mark.parametrize("earmark", [True, False], ids=["earmark", "no-earmark"])
def test_pay_window_expiry_gives_back_exactly_those_units(make_engine, clock, earmark):
    sku, a, b, c = "SKU-A", "SH-PEOPLE", "SH-PUDONG", "SZ-CENTRE"
    eng = make_engine()
    for store in (a, b, c):
        eng.set_stock(store, sku, 10, safety=0)
    t0 = clock.now
    eng.create_sale(pyomni.FlashSale("drop", (sku,), t0 - 1.0, t0 + 10_000.0, 12, ((a, 5), (b, 5), (c, 5)),
                                     customer_limit=2, pay_window=100.0, earmark=earmark))

    def claim(customer, qty, **where):
        got = eng.claim("drop", customer, sku, qty, request_id=f"{customer}@{clock.now}", **where)
        eng.check_invariants()
        return got

    def reserved():
        return {s: eng.stock(s, sku).reserved for s in (a, b, c)}

    # t0: five claims; one is paid, one released -- neither may expire
    early = {"c1": claim("c1", 2, store=a), "c2": claim("c2", 1, store=b),
             "c3": claim("c3", 1, near=(31.2304, 121.4737)),        # People's Square itself
             "c4": claim("c4", 1, store=c), "c5": claim("c5", 2, store=b)}
    assert early["c3"].store == a and all(x.expires_at == t0 + 100.0 for x in early.values())
    eng.confirm_claim(early["c2"].id)
    eng.release_claim(early["c4"].id)
    # t0 + 50: the rest of the quota, held until t0 + 150
    clock.advance(50.0)
    late = {"c6": claim("c6", 2, store=a), "c7": claim("c7", 1, store=c), "c8": claim("c8", 2, store=b),
            "c9": claim("c9", 1, store=c)}
    with pytest.raises(errors.SoldOut):
        claim("c10", 1, store=c)
    before = eng.sale_counters("drop")
    assert (before.claimed, before.confirmed, before.released, before.claims, before.remaining) == (12, 1, 1, 9, 0)
    assert {s.store: s.claimed for s in before.stores} == {a: 5, b: 5, c: 2}
    reserved_before = reserved()
    assert reserved_before == {a: 5, b: 4, c: 2}          # sold out: every earmark went back; c2 left the stock

    # a moment before the deadline nothing expires; at it, exactly the three unpaid early claims do
    clock.advance(49.999)
    assert eng.expire_due() == []
    clock.advance(0.001)
    expiring = {"c1", "c3", "c5"}
    assert sorted(eng.expire_due()) == sorted(early[k].id for k in expiring)
    eng.check_invariants()
    assert eng.expire_due() == []
    states = {k: eng.get_claim(x.id).state for k, x in {**early, **late}.items()}
    assert states == {"c1": EXPIRED, "c2": CONFIRMED, "c3": EXPIRED, "c4": RELEASED, "c5": EXPIRED,
                      "c6": HELD, "c7": HELD, "c8": HELD, "c9": HELD}
    for k in expiring:
        with pytest.raises(errors.ReservationNotHeld):
            eng.confirm_claim(early[k].id)
    # the units came back to every quota: 2 + 1 at People's Square, 2 at Lujiazui, 5 in all
    after = eng.sale_counters("drop")
    assert (after.claimed, after.confirmed, after.released, after.claims, after.remaining) == (7, 1, 6, 9, 5)
    assert {s.store: s.claimed for s in after.stores} == {a: 2, b: 3, c: 2}
    # ... and to the stock: freed for everyone, or (earmark) back in the sale's earmark while it runs
    freed = {a: 3, b: 2, c: 0}
    assert reserved() == (reserved_before if earmark else {s: reserved_before[s] - freed[s] for s in freed})
    # exactly those five units can be claimed again, by the same customers (their limits came back too)
    again = [claim("c1", 2, store=a), claim("c3", 1, store=a), claim("c5", 2, store=b)]
    assert [x.store for x in again] == [a, a, b]
    for customer, where in (("c11", {"store": c}), ("c12", {"near": (31.2304, 121.4737)})):
        with pytest.raises(errors.SoldOut):
            claim(customer, 1, **where)
    final = eng.sale_counters("drop")
    assert (final.claimed, final.claims, final.remaining) == (12, 12, 0)
    assert {s.store: s.claimed for s in final.stores} == {a: 5, b: 5, c: 2}
    held = Counter()
    for x in eng.claims("drop", state=HELD):
        held[x.store] += x.qty
    assert reserved() == dict(held) == {a: 5, b: 4, c: 2}
    assert [eng.stock(s, sku).on_hand for s in (a, b, c)] == [10, 9, 10]
    # the sale's end gives nothing more back (sold out: no earmark left); held claims stay payable
    eng.end_sale("drop")
    assert reserved() == {a: 5, b: 4, c: 2}
    eng.confirm_claim(again[0].id)
    assert eng.stock(a, sku).on_hand == 8 and eng.stock(a, sku).reserved == 3
    eng.check_invariants()


# -- 3. kill -9 mid-sale -----------------------------------------------------------------------------
SERVE_ARGS = ["--stores", "20", "--warehouses", "1", "--skus", "20", "--seed", "3", "--fsync", "always",
              "--grace", "5", "--snapshot-every", "0", "--snapshot-records", "0"]   # recovery = journal replay
UNARY_THREADS = 8
BATCH = 200


@pytest.mark.slow
def test_kill_9_mid_sale_loses_no_acknowledged_claim(tmp_path):
    data = tmp_path / "data"
    net = pyomni.demo_network(stores=20, warehouses=1, skus=20, seed=3)     # what the server builds
    position = {loc: i for i, loc in enumerate(net.ids)}
    stores = [i for i, k in zip(net.ids, net.kind.tolist()) if k == int(pyomni.LocationKind.STORE)]
    points = [(float(net.lat[position[s]]), float(net.lon[position[s]])) for s in stores]
    server = ServerProcess(data, SERVE_ARGS).start()
    client = pyomni.Client(server.address, timeout=10.0)
    client.apply_stock_events([{"location": s, "sku": SKU, "event": "set", "qty": 100_000, "safety": 0}
                               for s in stores])
    now = time.time()
    client.create_sale(pyomni.FlashSale("kill", (SKU,), now - 60.0, now + 3600.0, 1_000_000,
                                        tuple((s, 100_000) for s in stores), pay_window=3600.0))

    lock = threading.Lock()
    stop = threading.Event()
    acked: dict[str, tuple] = {}          # request id -> (request, claim as answered)
    in_flight: dict[str, tuple] = {}      # request id -> request (unanswered when the server died)
    batches_acked: list[tuple] = []       # (request ids, stores, points)
    batch_in_flight: list[tuple] = []
    failures: list[str] = []

    def request(rid: str, rng: random.Random) -> tuple:
        """(request id, customer, where): a named store or a point (one customer per request)."""
        k = rng.randrange(len(stores))
        return (rid, rid, {"store": stores[k]} if rng.random() < 0.5 else {"near": points[k]})

    def unary(t: int) -> None:
        rng = random.Random(t)
        i = 0
        while not stop.is_set():
            req = request(f"u{t}-{i}", rng)
            with lock:
                in_flight[req[0]] = req
            try:
                got = client.claim("kill", req[1], SKU, 1, request_id=req[0], **req[2])
            except (errors.Unavailable, errors.DeadlineExceeded):
                return                                          # the server is gone
            except errors.PyomniError as exc:
                failures.append(f"{req}: {exc!r}")
                return
            with lock:
                del in_flight[req[0]]
                acked[req[0]] = (req, got)
            i += 1

    def batches() -> None:
        rng = random.Random(99)
        k = 0
        while not stop.is_set():
            reqs = [request(f"b{k}-{j}", rng) for j in range(BATCH)]
            cols = ([r[0] for r in reqs], [r[2].get("store", "") for r in reqs],
                    [r[2].get("near", (0.0, 0.0)) for r in reqs])
            batch_in_flight.append((reqs, cols))
            try:
                got = client.claim_many("kill", cols[0], SKU, stores=cols[1], near=cols[2], request_ids=cols[0])
            except (errors.Unavailable, errors.DeadlineExceeded):
                return
            except errors.PyomniError as exc:
                failures.append(f"batch {k}: {exc!r}")
                return
            batch_in_flight.pop()
            bad = [g for g in got if isinstance(g, errors.PyomniError)]
            if bad:
                failures.append(f"batch {k}: {bad[0]!r}")
                return
            with lock:
                for r, g in zip(reqs, got):
                    acked[r[0]] = (r, g)
            batches_acked.append((reqs, cols))
            k += 1

    threads = [threading.Thread(target=unary, args=(t,), name=f"claims-{t}") for t in range(UNARY_THREADS)]
    threads.append(threading.Thread(target=batches, name="claim-batches"))
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10.0
    time.sleep(0.5)
    while (not batches_acked or len(acked) < 2 * BATCH) and time.monotonic() < deadline and not failures:
        time.sleep(0.05)
    with lock:
        acked_at_kill = len(acked)
    status = server.kill()
    stop.set()
    for t in threads:
        t.join(30.0)
    client.close()
    assert not failures, failures[:5]
    assert status == -9
    assert batches_acked and acked_at_kill > 2 * BATCH
    unary_in_flight = [r for r in in_flight.values()]
    print(f"\nkilled with {len(acked)} claims acknowledged ({len(batches_acked)} batches), "
          f"{len(unary_in_flight)} unary and {len(batch_in_flight)} batch calls unanswered")

    # -- restart on the same directory -----------------------------------------------------------
    server = ServerProcess(data, SERVE_ARGS).start()
    client = pyomni.Client(server.address, timeout=30.0)
    try:
        _, counters = client.sale("kill")
        # what the kill interrupted was applied whole or not at all: each unary claim, and the batch as one
        applied = counters.claims - len(acked)
        u = len(unary_in_flight)
        b = BATCH * len(batch_in_flight)
        assert 0 <= applied <= u or (b and b <= applied <= b + u), (applied, u, b)
        assert counters.claimed == counters.claims
        # every acknowledged claim is there, as it was answered
        for req, got in acked.values():
            now_ = client.get_claim(got.id)
            assert (now_.id, now_.sale_id, now_.customer, now_.sku, now_.store, now_.qty, now_.expires_at) == \
                (got.id, "kill", req[1], SKU, got.store, 1, got.expires_at)
            assert now_.state is HELD
            if "store" in req[2]:
                assert got.store == req[2]["store"]
        # retrying an acknowledged request answers with its claim: unary ones one by one (a sample) and in
        # batches (the request id and the claim it stands for, whatever path it came in by), batches as sent
        unary_acked = [(r, g) for r, g in acked.values() if r[0].startswith("u")]
        for req, got in random.Random(1).sample(unary_acked, min(60, len(unary_acked))):
            assert client.claim("kill", req[1], SKU, 1, request_id=req[0], **req[2]) == got
        for i in range(0, len(unary_acked), 500):
            chunk = unary_acked[i:i + 500]
            again = client.claim_many("kill", [r[1] for r, _ in chunk], SKU,
                                      stores=[r[2].get("store", "") for r, _ in chunk],
                                      near=[r[2].get("near", (0.0, 0.0)) for r, _ in chunk],
                                      request_ids=[r[0] for r, _ in chunk])
            assert [(x.id, x.store) for x in again] == [(g.id, g.store) for _, g in chunk]
        for reqs, cols in batches_acked:
            again = client.claim_many("kill", cols[0], SKU, stores=cols[1], near=cols[2], request_ids=cols[0])
            assert [(x.id, x.store) for x in again] == [(acked[r[0]][1].id, acked[r[0]][1].store) for r in reqs]
        _, counters = client.sale("kill")
        assert counters.claims == len(acked) + applied            # the retries made nothing new
        # the interrupted requests, retried: now answered (with the claim made before the kill, if it was)
        known = {rid: got for rid, (_, got) in acked.items()}
        for req in unary_in_flight:
            known[req[0]] = client.claim("kill", req[1], SKU, 1, request_id=req[0], **req[2])
        for reqs, cols in batch_in_flight:
            got = client.claim_many("kill", cols[0], SKU, stores=cols[1], near=cols[2], request_ids=cols[0])
            known.update((r[0], g) for r, g in zip(reqs, got))
        assert not [g for g in known.values() if isinstance(g, errors.PyomniError)]
        _, counters = client.sale("kill")
        numbers = sorted(int(g.id[1:]) for g in known.values())
        # no claim number was given twice, none is missing, and the counters count exactly these claims
        assert numbers == list(range(1, len(known) + 1))
        assert counters.claims == counters.claimed == len(known)
        # claims go on after the restart, numbered above every earlier one
        rng = random.Random(7)
        after = [request(f"after-{i}", rng) for i in range(20)]
        for req in after:
            known[req[0]] = client.claim("kill", req[1], SKU, 1, request_id=req[0], **req[2])
        assert min(int(known[r[0]].id[1:]) for r in after) > numbers[-1]
        _, counters = client.sale("kill")
        assert counters.claims == len(known)
    finally:
        client.close()
        exit_status = server.stop()         # a clean stop: it snapshots, the sale and the claims with it
    assert exit_status == 0, server.log[-8:]

    # -- offline: the directory holds exactly these claims, the ones made after the restart too ------
    eng = pyomni.Engine.load(data)
    eng.check_invariants()
    held = eng.claims("kill", limit=10 * len(known))
    assert {(c.id, c.customer, c.store, c.qty) for c in held} == \
        {(g.id, rid, g.store, g.qty) for rid, g in known.items()}
    counters = eng.sale_counters("kill")
    assert counters.claims == counters.claimed == len(held) == len(known)
    assert sum(s.claimed for s in counters.stores) == len(held)
    for s in stores:
        level = eng.stock(s, SKU)
        assert level.on_hand == 100_000 and 0 <= level.reserved <= level.on_hand
    # the request ids came back with the snapshot too
    for req, got in random.Random(2).sample(list(acked.values()), 50):
        assert eng.claim("kill", req[1], SKU, 1, request_id=req[0], **req[2]).id == got.id
    assert eng.sale_counters("kill").claims == len(known)


def test_a_snapshot_holds_the_answer_of_a_sale_command(tmp_path):
    net = pyomni.demo_network(stores=5, warehouses=0, skus=3, seed=1)
    now = time.time()
    with pyomni.Engine.open(tmp_path / "data", net) as eng:
        eng.set_stock(net.ids[0], SKU, 5)
        sale = pyomni.FlashSale("s", (SKU,), now - 1.0, now + 600.0, 3, ((net.ids[0], 3),))
        first = eng.create_sale(sale, request_id="create-s")
        claim = eng.claim("s", "m-1", SKU, store=net.ids[0], request_id="claim-1")
        eng.save()
    eng = pyomni.Engine.load(tmp_path / "data")
    eng.check_invariants()
    assert eng.create_sale(sale, request_id="create-s") == first
    assert eng.claim("s", "m-1", SKU, store=net.ids[0], request_id="claim-1") == claim
