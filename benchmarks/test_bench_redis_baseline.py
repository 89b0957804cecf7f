"""Redis doing the durable flash-sale claim: the baseline side of the flash-sale claim benchmarks.

One throwaway Redis server (``redis_baseline.RedisServer``: ``appendonly yes``,
``appendfsync always``, no RDB, Unix socket only) serves every test here.

Correctness (plain tests, they run without ``--benchmark-only`` too):

* ``test_redis_claim_statuses`` -- one client, step by step: every status, the order
  of the checks, a refusal changes nothing and its retry is decided afresh, a
  claimed request id answers ``OK`` again and changes nothing (alone and twice in
  one batch), a malformed batch changes nothing, ``load_sale`` replaces a sale.
* ``test_redis_quotas_exact_under_races`` -- 32 threads, each with its own
  connection, race 5,000 claims of one unit (unary ``claim`` on 16 threads,
  ``claim_many`` of 10 on the other 16) at a sale with a global quota of 1,000 over
  50 stores (store quotas summing to 2,078, 13 stores with only 5 -- less than
  their demand -- and every fifth store short of stock) and a limit of 2 per
  customer. Some request ids are sent twice, by two threads at about the same
  moment or twice inside one batch. Exactly 1,000 units are claimed, no store is
  over its quota, no customer over the limit, no stock negative (stock only falls,
  so a non-negative end means it never went below 0), every request id claims at
  most once, and every refusal status occurs.

Benchmarks (``benchmark.pedantic``, one ≈3 s ``loadgen.run_clients`` run per case, one
thread and one connection per client): hot-SKU claims of one unit at ONE store whose
quota, stock and per-customer limit never run out:

* ``claim-hot-c1``, ``claim-hot-c64`` -- unary ``claim`` (one script, one fsync-ed write each);
* ``batch100-hot-c8`` -- ``claim_many`` of 100 claims per script call, 8 clients.

Checked after each case: no request failed or was refused, and the sale's
global claimed count == the claims recorded == the successful claims (warm-up
included), its store and customer counters agree with the claims. Figures
(claims/s, scripts/s, p50/p99/max ms, per-client counts) go to ``extra_info`` and are
printed with ``-s``; nothing about speed is asserted. The server is installed by
``make redis``; without it (or without redis-py) the module is skipped.

    .venv/bin/python -m pytest benchmarks/test_bench_redis_baseline.py --benchmark-only -s -q
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

redis = pytest.importorskip("redis", reason="redis-py not installed: pip install -e '.[dev]'")

import redis_baseline as rb  # noqa: E402  (benchmarks/ is on sys.path: pytest's rootdir-relative import)
from loadgen import LoadResult, Worker, format_row, run_clients  # noqa: E402

if rb.find_redis() is None:
    pytest.skip("Redis not installed: run `make redis`", allow_module_level=True)

pytestmark = pytest.mark.benchmark(group="redis-baseline")

# the race
RACE_SEED = 20_241
RACE_THREADS = 32
RACE_CLAIMS = 5_000
RACE_BATCH = 10                      # claim_many size on the batch threads (the upper half)
N_STORES = 50
GLOBAL_QUOTA = 1_000
CUSTOMER_LIMIT = 2
N_CUSTOMERS = 700                    # ≈7 requests per customer: the limit of 2 refuses some
STORE_QUOTAS = {s: 5 if s % 4 == 1 else 40 + (s * 37) % 31 for s in range(N_STORES)}   # sum 2,078
STOCK = {s: q // 3 if s % 5 == 0 else q + 10 for s, q in STORE_QUOTAS.items()}       # every fifth store short

# the benchmarks
HOT_STORE = 7
AMPLE = 10**12                       # quota, stock and customer limit of the hot sale: never reached
BENCH_CUSTOMERS = 100_000
QTY = 1
SECONDS = 3.0                        # measured time per case
WARMUP_OPS = 5                       # per client (loads the script on the server, fills the connection pool)
CASES = [  # id, clients, batch size
    ("claim-hot-c1", 1, 1),
    ("claim-hot-c64", 64, 1),
    ("batch100-hot-c8", 8, 100),
]
RESULTS: dict[str, LoadResult] = {}


@pytest.fixture(scope="module")
def server() -> Iterator[rb.RedisServer]:
    with rb.RedisServer() as srv:
        assert srv.config("appendonly") == "yes"
        assert srv.config("appendfsync") == "always"
        assert srv.config("save") == ""
        yield srv
    if RESULTS:
        print("\nRedis durable flash-sale claims (this run):")
        for case, r in RESULTS.items():
            print("  " + format_row(case, r))
        r1, r64, rb100 = (RESULTS.get(c[0]) for c in CASES)
        if r1 and r64:
            print(f"  64 clients / 1 client: {r64.rate / r1.rate:.2f}x")
        if r64 and rb100:
            print(f"  batch of 100 (8 clients) / single claims (64 clients): {rb100.rate / r64.rate:.2f}x")


@pytest.fixture
def r(server: rb.RedisServer) -> Iterator[Any]:
    client = server.connect()
    yield client
    client.close()


def _consistent(t: dict[str, Any]) -> None:
    """The counters of a sale agree with each other and with its claims."""
    assert t["global_claimed"] == t["store_claimed_sum"] == t["customer_claimed_sum"] == t["claims_qty"], t
    assert t["mismatched_stores"] == 0 and t["mismatched_customers"] == 0, t
    assert t["global_claimed"] <= t["global_quota"], t


# --------------------------------------------------------------------------------------------------
# correctness


def test_redis_claim_statuses(r: Any) -> None:
    claim, keys = rb.claim, rb.sale_keys("seq")
    rb.load_sale(r, "seq", global_quota=10, store_quotas={1: 4, 2: 10}, stock={1: 10, 2: 3}, customer_limit=3)
    assert claim(r, "seq", "a1", "alice", 1, 3) == rb.OK
    before = rb.totals(r, "seq")
    assert (before["global_claimed"], before["store_claimed"], before["store_stock"]) == (3, {1: 3}, {1: 7, 2: 3})

    # the checks, in order: each request below fails the named check and every later one
    assert claim(r, "seq", "b1", "bob", 1, 2) == rb.STORE_QUOTA_EXHAUSTED          # 1 left at store 1
    assert claim(r, "seq", "a2", "alice", 1, 2) == rb.STORE_QUOTA_EXHAUSTED        # ... before alice's limit
    assert claim(r, "seq", "a3", "alice", 2, 1) == rb.CUSTOMER_LIMIT_REACHED       # alice has 3 of 3
    assert claim(r, "seq", "u1", "bob", 99, 1) == rb.STORE_QUOTA_EXHAUSTED         # not in the sale: quota 0
    assert rb.totals(r, "seq") == before, "refusals change nothing"
    assert claim(r, "seq", "c1", "carol", 2, 3) == rb.OK                           # store 2's stock now 0
    assert claim(r, "seq", "d1", "dave", 2, 1) == rb.INSUFFICIENT_STOCK
    assert claim(r, "seq", "a4", "alice", 2, 1) == rb.CUSTOMER_LIMIT_REACHED       # ... before the stock
    assert claim(r, "seq", "e1", "erin", 2, 5) == rb.SOLD_OUT                      # 4 left; also over limit, no stock

    # a refused request id is decided afresh; a claimed one answers OK and changes nothing, whatever it asks
    assert claim(r, "seq", "b1", "bob", 1, 1) == rb.OK                             # was STORE_QUOTA_EXHAUSTED
    after = rb.totals(r, "seq")
    assert claim(r, "seq", "b1", "bob", 1, 1) == rb.OK
    assert claim(r, "seq", "a1", "alice", 2, 3) == rb.OK                           # another store, same id
    assert rb.claim_many(r, "seq", [("a1", "alice", 1, 3), ("c1", "carol", 2, 3)]) == [rb.OK, rb.OK]
    assert rb.totals(r, "seq") == after
    assert r.hget(keys[5], "a1") == b"1:3:alice"
    _consistent(after)
    assert (after["global_claimed"], after["claims"], after["store_stock"]) == (7, 3, {1: 6, 2: 0})

    # a batch: items decided in order, each seeing the earlier ones; a repeated id claims once
    rb.load_sale(r, "seq", global_quota=5, store_quotas={1: 5}, stock={1: 5}, customer_limit=2)
    assert rb.totals(r, "seq")["claims"] == 0, "load_sale replaces the older sale"
    items = [("m1", "xi", 1, 2), ("m1", "xi", 1, 2), ("m2", "xi", 1, 1), ("m3", "yu", 1, 2), ("m4", "zoe", 1, 2)]
    assert rb.claim_many(r, "seq", items) == [rb.OK, rb.OK, rb.CUSTOMER_LIMIT_REACHED, rb.OK, rb.SOLD_OUT]
    batch = rb.totals(r, "seq")
    _consistent(batch)
    assert (batch["global_claimed"], batch["claims"], batch["customer_max"]) == (4, 2, 2)
    assert rb.claim_many(r, "seq", []) == []

    # malformed input changes nothing: refused in Python, and by the script before its first write
    with pytest.raises(ValueError):
        rb.claim_many(r, "seq", [("m5", "ann", 1, 1), ("m6", "ann", 1, 0)])
    script = r.register_script(rb.CLAIM_LUA)
    with pytest.raises(redis.ResponseError, match="qty"):
        script(keys=keys, args=["m5", "ann", "1", "1", "m6", "ann", "1", "-1"])
    with pytest.raises(redis.ResponseError, match="no such sale"):
        claim(r, "never-loaded", "n1", "ann", 1, 1)
    assert rb.totals(r, "seq") == batch


def _race_requests() -> list[list[tuple[str, str, int, int]]]:
    """Each thread's requests, seeded: 5,000 in all, some request ids sent twice."""
    rng = random.Random(RACE_SEED)
    flat = [(f"race-{n}", f"cust-{rng.randrange(N_CUSTOMERS)}", rng.randrange(N_STORES), 1)
            for n in range(RACE_CLAIMS)]
    for n in range(0, RACE_CLAIMS - 1, 20):   # the next slot goes to the next thread at about the same moment
        flat[n + 1] = flat[n]
    per_thread = [flat[t::RACE_THREADS] for t in range(RACE_THREADS)]
    for requests in per_thread[RACE_THREADS // 2:]:
        for start in range(0, len(requests) - RACE_BATCH + 1, 3 * RACE_BATCH):
            requests[start + RACE_BATCH - 1] = requests[start]   # twice in one batch
    return per_thread


def test_redis_quotas_exact_under_races(server: rb.RedisServer, r: Any) -> None:
    sale = "race"
    rb.load_sale(r, sale, global_quota=GLOBAL_QUOTA, store_quotas=STORE_QUOTAS, stock=STOCK,
                 customer_limit=CUSTOMER_LIMIT)
    per_thread = _race_requests()
    assert sum(map(len, per_thread)) == RACE_CLAIMS
    answers: list[list[tuple[str, str]]] = [[] for _ in range(RACE_THREADS)]
    failures: list[BaseException] = []
    start = threading.Barrier(RACE_THREADS, timeout=30)

    def run(t: int) -> None:
        requests, out = per_thread[t], answers[t]
        try:
            with server.connect() as conn:
                conn.ping()              # connect before the start, so the threads race on claims only
                start.wait()
                if t < RACE_THREADS // 2:
                    for request in requests:
                        out.append((request[0], rb.claim(conn, sale, *request)))
                else:
                    for i in range(0, len(requests), RACE_BATCH):
                        chunk = requests[i:i + RACE_BATCH]
                        out += zip([q[0] for q in chunk], rb.claim_many(conn, sale, chunk))
        except BaseException as exc:
            failures.append(exc)
            start.abort()

    threads = [threading.Thread(target=run, args=(t,), name=f"race-{t}") for t in range(RACE_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "race threads hung"
    assert not failures, failures[0]

    flat = [a for out in answers for a in out]
    assert len(flat) == RACE_CLAIMS
    statuses = Counter(status for _, status in flat)
    t = rb.totals(r, sale)
    _consistent(t)
    assert t["global_claimed"] == GLOBAL_QUOTA and t["claims"] == GLOBAL_QUOTA, (t, statuses)
    for store, quota in STORE_QUOTAS.items():
        claimed = t["store_claimed"].get(store, 0)
        assert claimed <= quota, (store, claimed, quota)
        assert t["store_stock"][store] == STOCK[store] - claimed >= 0, (store, t["store_stock"][store])
    assert t["customer_max"] <= CUSTOMER_LIMIT, t["customer_max"]
    # a request id claims at most once: the ids answered OK are exactly the ids recorded
    claimed_ids = {k.decode() for k in r.hkeys(rb.sale_keys(sale)[5])}
    assert {rid for rid, status in flat if status == rb.OK} == claimed_ids
    assert statuses[rb.OK] > GLOBAL_QUOTA, "some duplicates of claimed ids must have answered OK again"
    for status in rb.STATUSES:
        assert statuses[status] > 0, f"the race never produced {status}: {statuses}"

    # retries after the sale sold out: claimed ids answer OK and change nothing, new ones are sold out
    some = sorted(claimed_ids)[:5]
    for rid in some:
        assert rb.claim(r, sale, rid, "cust-0", 0, 1) == rb.OK
    assert rb.claim_many(r, sale, [(some[0], "c", 0, 1), (some[0], "c", 0, 1), ("race-new", "c", 0, 1)]) == [
        rb.OK, rb.OK, rb.SOLD_OUT]
    assert rb.totals(r, sale) == t
    print(f"\nrace: {dict(statuses)}; {len(claimed_ids)} ids claimed")


# --------------------------------------------------------------------------------------------------
# benchmarks


class _ClaimClient:
    """One closed-loop client: its own connection, its own seeded customers, its own tally of claims."""

    def __init__(self, server: rb.RedisServer, sale: str, i: int, *, batch: int) -> None:
        self.server, self.sale, self.i, self.batch = server, sale, i, batch
        self.rng = random.Random(f"{sale}/{i}")
        self.conn: Any = None
        self.claimed = 0

    def customer(self) -> str:
        return f"cust-{self.rng.randrange(BENCH_CUSTOMERS)}"

    def setup(self) -> None:
        self.conn = self.server.connect()

    def teardown(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def op(self, k: int) -> int:
        rid = f"{self.sale}-{self.i}-{k}"
        if self.batch == 1:
            n = int(rb.claim(self.conn, self.sale, rid, self.customer(), HOT_STORE, QTY) == rb.OK)
        else:
            items = [(f"{rid}-{j}", self.customer(), HOT_STORE, QTY) for j in range(self.batch)]
            n = rb.claim_many(self.conn, self.sale, items).count(rb.OK)
        self.claimed += n
        return n

    def worker(self) -> Worker:
        return Worker(self.op, setup=self.setup, teardown=self.teardown)


@pytest.mark.parametrize(("case", "clients", "batch"), CASES, ids=[c[0] for c in CASES])
def test_redis_claim_hot(benchmark, server: rb.RedisServer, r: Any, case: str, clients: int, batch: int) -> None:
    rb.load_sale(r, case, global_quota=AMPLE, store_quotas={HOT_STORE: AMPLE}, stock={HOT_STORE: AMPLE},
                 customer_limit=AMPLE)
    claim_clients = [_ClaimClient(server, case, i, batch=batch) for i in range(clients)]
    warmup = WARMUP_OPS if batch == 1 else 2
    result = benchmark.pedantic(run_clients, args=(clients, lambda i: claim_clients[i].worker()),
                                kwargs={"seconds": SECONDS, "warmup_ops": warmup}, rounds=1, iterations=1)
    claimed = sum(c.claimed for c in claim_clients)     # warm-up included

    assert result.errors == 0, result.error_samples
    assert result.ops > 0 and min(result.per_client) > 0
    assert result.units == result.ops * batch, "every claim should succeed: nothing runs out"
    t = rb.totals(r, case)
    _consistent(t)
    assert t["global_claimed"] == t["claims"] * QTY == claimed * QTY, (t["global_claimed"], claimed)
    assert t["store_stock"] == {HOT_STORE: AMPLE - claimed * QTY}

    RESULTS[case] = result
    print("\n" + format_row(f"redis {case}", result))
    benchmark.extra_info.update(result.as_dict())
    benchmark.extra_info.update({
        "batch": batch, "qty": QTY, "stores": 1, "customers": BENCH_CUSTOMERS,
        "claims_per_s": round(result.rate, 1),
        "scripts_per_s": round(result.op_rate, 1),        # one atomic script (one AOF write) per op
        "claims_total": t["claims"],
        "redis_version": r.info("server")["redis_version"],
        "appendfsync": server.config("appendfsync"),
        "hiredis": bool(redis.utils.HIREDIS_AVAILABLE),
    })
