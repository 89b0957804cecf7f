"""Redis doing a durable flash-sale claim: the baseline of the flash-sale claim benchmarks.

A throwaway Redis server (``RedisServer``) with the durability stated explicitly
(``appendonly yes``, ``appendfsync always``, ``save ""``: every write is in the
append-only file and fsynced before its reply is sent, no RDB snapshots), a sale
kept in six hashes, and the claim itself as ONE Lua script (``EVALSHA``; Redis runs
a script atomically, so the checks and the updates cannot interleave with another
client's):

* ``claim`` -- claim ``qty`` units of a sale at one store for one customer. The
  checks, in order: the global quota (``SOLD_OUT``), the store's quota
  (``STORE_QUOTA_EXHAUSTED``), the customer's limit (``CUSTOMER_LIMIT_REACHED``),
  the store's available stock (``INSUFFICIENT_STOCK``); the first that fails is the
  answer and nothing changes. ``OK`` raises global, store and customer claimed,
  lowers the store's stock and records ``request_id -> "store:qty:customer"``.
  Idempotent: a request id that already claimed returns ``OK`` again and changes
  nothing (also with other arguments). Only successful claims are remembered --
  a refusal changes nothing -- so a retried refused request is decided afresh.
* ``claim_many`` -- the same for a batch, in ONE script call (one atomic script:
  one append-only-file write and one fsync per batch), one status per item: the
  analogue of a batched claim.

Redis fsyncs once per event-loop iteration for all the clients served in it (a
group commit), then sends their replies: with ``appendfsync always`` no reply
leaves before its write is on disk. Scripts reach the append-only file as their
effects (the writes they made, in one ``MULTI``/``EXEC``), so a replay never
re-decides a claim.

The server is installed by ``make redis`` (Debian's package); ``find_redis``
returns ``None`` when it is not there.

Usage::

    with RedisServer() as server:
        r = server.connect()
        load_sale(r, "s1", global_quota=1_000, store_quotas={7: 100}, stock={7: 40}, customer_limit=2)
        claim(r, "s1", "req-1", "alice", 7, 2)       # "OK"
        claim(r, "s1", "req-1", "alice", 7, 2)       # "OK": already claimed, nothing changes
        claim(r, "s1", "req-2", "alice", 7, 1)       # "CUSTOMER_LIMIT_REACHED"
        claim_many(r, "s1", [("req-3", "bob", 7, 1), ("req-4", "bob", 8, 1)])   # ["OK", "STORE_QUOTA_EXHAUSTED"]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.commands.core import Script
from redis.typing import EncodableT, FieldT
from scratch import REPO_TMP, default_base_dir

__all__ = [
    "REPO_TMP", "SETTINGS", "STATUSES", "OK", "SOLD_OUT", "STORE_QUOTA_EXHAUSTED", "CUSTOMER_LIMIT_REACHED",
    "INSUFFICIENT_STOCK", "MAX_AMOUNT", "CLAIM_LUA", "find_redis", "default_base_dir", "RedisServer", "sale_keys",
    "load_sale", "claim", "claim_many", "totals",
]

# used instead of the system temporary directory when that is in memory (tmpfs): fsync must hit a disk.
# The same place and rule as pg_baseline's, repeated so that this module does not need psycopg.

# the settings the baseline runs with; the durability ones stated explicitly (Redis's defaults are
# appendonly no, appendfsync everysec, RDB snapshots on)
SETTINGS: dict[str, str] = {
    "appendonly": "yes",
    "appendfsync": "always",
    "save": '""',                  # no RDB snapshots: the append-only file is the only persistence
    "port": "0",                   # no TCP at all: only the Unix socket in the server's own directory
    "daemonize": "no",             # a child process of ours, stopped by stop()
    "protected-mode": "no",
    "unixsocketperm": "700",       # only the directory's owner (and root) can reach it
}
_SOCKET_PATH_MAX = 107             # sun_path is 108 bytes with the terminating NUL (Linux)

# --------------------------------------------------------------------------------------------------
# claim statuses: declared once here; the Lua script returns the index, claim() the name

STATUSES = ("OK", "SOLD_OUT", "STORE_QUOTA_EXHAUSTED", "CUSTOMER_LIMIT_REACHED", "INSUFFICIENT_STOCK")
OK, SOLD_OUT, STORE_QUOTA_EXHAUSTED, CUSTOMER_LIMIT_REACHED, INSUFFICIENT_STOCK = STATUSES
# quotas, stock and quantities stay below this, so Lua's double arithmetic is exact and prints as integers
MAX_AMOUNT = 2**53


# --------------------------------------------------------------------------------------------------
# locating Redis


def find_redis() -> Path | None:
    """The ``redis-server`` executable: the one on ``PATH``, else ``/usr/bin/redis-server``; ``None`` if neither."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    debian = Path("/usr/bin/redis-server")
    return debian if debian.is_file() and os.access(debian, os.X_OK) else None


# --------------------------------------------------------------------------------------------------
# the server


class RedisServer:
    """A fresh Redis server in a temporary directory on disk, reachable only by its Unix socket.

    ``__enter__`` writes ``redis.conf`` (``SETTINGS`` plus ``dir`` and ``unixsocket``)
    into a new directory under ``base_dir`` (default: ``default_base_dir()``, never an
    in-memory file system, so fsync hits a disk), starts ``redis-server`` as a child
    process and waits until PING answers; ``__exit__`` shuts it down and deletes the
    directory, also when the body raised. ``port`` adds a TCP listener on 127.0.0.1
    (default ``None``: the Unix socket only).

    Layout of ``root``: ``redis.conf``, ``redis.sock``, ``redis.log``, and the
    append-only files under ``appendonlydir/``.

    Examples
    --------
    >>> with RedisServer() as server:                      # doctest: +SKIP
    ...     server.config("appendfsync")
    'always'
    """

    def __init__(self, base_dir: Path | str | None = None, port: int | None = None, *,
                 settings: dict[str, str] | None = None, start_timeout: float = 30.0) -> None:
        self.executable = find_redis()
        if self.executable is None:
            raise RuntimeError("Redis not installed: run `make redis`")
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.port = port
        self.settings = {**SETTINGS, **(settings or {})}
        if port is not None:
            self.settings.update({"port": str(port), "bind": "127.0.0.1"})
        self.start_timeout = start_timeout
        self.root: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._admin: redis.Redis | None = None

    # paths ----------------------------------------------------------------------------------------
    @property
    def socket_path(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "redis.sock"

    @property
    def log_file(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "redis.log"

    def connect(self, **kwargs: Any) -> redis.Redis:
        """A client on the Unix socket, replies as bytes (redis-py uses the hiredis parser when installed)."""
        kwargs.setdefault("decode_responses", False)
        return redis.Redis(unix_socket_path=str(self.socket_path), **kwargs)

    def config(self, name: str) -> str:
        """The value the running server uses for ``name`` (``CONFIG GET``), as text."""
        assert self._admin is not None, "server not started"
        values = self._admin.config_get(name)
        if name not in values:
            raise KeyError(f"no such Redis setting: {name}")
        return str(values[name])

    # running --------------------------------------------------------------------------------------
    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AssertionError):
            return "(no server log)"

    def _write_config(self) -> Path:
        assert self.root is not None
        if len(str(self.socket_path)) > _SOCKET_PATH_MAX:
            raise RuntimeError(f"socket path too long for a Unix socket: {self.socket_path}")
        lines = [f"{k} {v}" for k, v in self.settings.items()]
        lines += [f'dir "{self.root}"', f'unixsocket "{self.socket_path}"', f'logfile "{self.log_file}"']
        conf = self.root / "redis.conf"
        conf.write_text("# pyomni benchmark baseline (benchmarks/redis_baseline.py)\n" + "\n".join(lines) + "\n")
        return conf

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        # the server's own client (CONFIG GET, SHUTDOWN): replies as text
        self._admin = self.connect(decode_responses=True, socket_timeout=5)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{self._log_tail()}")
            if self.socket_path.exists():
                try:
                    if self._admin.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass  # not listening yet, or still loading: try again
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer PING in {self.start_timeout} s:\n{self._log_tail()}")
            time.sleep(0.02)

    def start(self) -> RedisServer:
        base = self.base_dir if self.base_dir is not None else default_base_dir()
        base.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="pyomni-redis-", dir=base))
        try:
            conf = self._write_config()
            assert self.executable is not None
            self.process = subprocess.Popen([str(self.executable), str(conf)], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Shut the server down (SHUTDOWN NOSAVE; terminate, then kill, if that hangs) and delete its directory.

        Idempotent.
        """
        if self.process is not None:
            if self.process.poll() is None and self._admin is not None:
                try:
                    self._admin.shutdown(nosave=True)
                except redis.RedisError:
                    pass  # refused or already gone: the signals below finish the job
            for finish in (None, self.process.terminate, self.process.kill):
                if finish is not None and self.process.poll() is None:
                    finish()
                try:
                    self.process.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue  # next, harsher step
            self.process = None
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# a sale's keys and data

_KEY_PARTS = ("meta", "store_quota", "store_claimed", "store_stock", "customer_claimed", "claims")


def sale_keys(sale: str) -> list[str]:
    """The six hashes of ``sale``, in the order the script takes them.

    ``meta`` (fields ``global_quota``, ``global_claimed``, ``customer_limit``),
    ``store_quota``, ``store_claimed``, ``store_stock`` (store -> units; stock is what
    is available: on hand minus held), ``customer_claimed`` (customer -> units) and
    ``claims`` (request id -> ``"store:qty:customer"``). One hash tag (``{sale}``), so a
    cluster would keep them in one slot, as a script needs.
    """
    if "{" in sale or "}" in sale:
        raise ValueError(f"sale names cannot contain braces (they would break the hash tag): {sale!r}")
    return [f"flash:{{{sale}}}:{part}" for part in _KEY_PARTS]


def _amount(name: str, value: int, *, positive: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not (1 if positive else 0) <= value < MAX_AMOUNT:
        raise ValueError(f"{name} must be in [{1 if positive else 0}, 2**53), got {value}")
    return value


def load_sale(r: redis.Redis, sale: str, *, global_quota: int, store_quotas: Mapping[int, int],
              stock: Mapping[int, int], customer_limit: int) -> None:
    """Set up ``sale`` (deleting an older sale of that name), in one ``MULTI``/``EXEC``.

    ``store_quotas`` and ``stock`` map store -> units; a store missing from either has
    0 of it (so it refuses every claim). Nothing is claimed yet.

    Examples
    --------
    >>> load_sale(r, "s1", global_quota=10, store_quotas={1: 5}, stock={1: 3}, customer_limit=2)  # doctest: +SKIP
    """
    keys = sale_keys(sale)
    meta: dict[FieldT, EncodableT] = {"global_quota": _amount("global_quota", global_quota), "global_claimed": 0,
                                      "customer_limit": _amount("customer_limit", customer_limit)}
    quotas: dict[FieldT, EncodableT] = {str(s): _amount(f"store_quotas[{s}]", q) for s, q in store_quotas.items()}
    units: dict[FieldT, EncodableT] = {str(s): _amount(f"stock[{s}]", q) for s, q in stock.items()}
    pipe = r.pipeline(transaction=True)
    pipe.delete(*keys)
    pipe.hset(keys[0], mapping=meta)
    if quotas:
        pipe.hset(keys[1], mapping=quotas)
    if units:
        pipe.hset(keys[3], mapping=units)
    pipe.execute()


# --------------------------------------------------------------------------------------------------
# the claim script

# The claim script, for claim() and claim_many() alike (one home for the rule).
# KEYS: sale_keys(sale). ARGV: request_id, customer, store, qty -- repeated, one group per item.
# Returns one status index (into STATUSES) per item.
# Redis does not roll a script back when it fails half-way, so everything that could fail (an unknown
# sale, a malformed item) is checked before the first write; after that only HINCRBY/HSET run.
# Numbers written go through string.format('%d'): Lua prints a large double as "1e+15", which HINCRBY
# would refuse.
CLAIM_LUA = """
local OK, SOLD_OUT, STORE_QUOTA_EXHAUSTED, CUSTOMER_LIMIT_REACHED, INSUFFICIENT_STOCK = 0, 1, 2, 3, 4
local meta, squota, sclaimed, sstock, cclaimed, claims = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

if #ARGV % 4 ~= 0 then
    return redis.error_reply('ERR claim: arguments come in groups of request_id, customer, store, qty')
end
for i = 4, #ARGV, 4 do
    local qty = tonumber(ARGV[i])
    if not qty or qty < 1 or qty ~= math.floor(qty) then
        return redis.error_reply('ERR claim: qty must be a positive integer, got ' .. ARGV[i])
    end
end
local quota = tonumber(redis.call('HGET', meta, 'global_quota'))
if not quota then
    return redis.error_reply('ERR claim: no such sale (load it first)')
end
local claimed = tonumber(redis.call('HGET', meta, 'global_claimed'))
local limit = tonumber(redis.call('HGET', meta, 'customer_limit'))

local function units(key, field)
    return tonumber(redis.call('HGET', key, field) or '0')
end

local out, gained = {}, 0
for i = 1, #ARGV, 4 do
    local rid, customer, store, qty = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
    local status
    if redis.call('HEXISTS', claims, rid) == 1 then
        status = OK                                   -- claimed before: the same answer, nothing changes
    elseif quota - claimed < qty then
        status = SOLD_OUT
    elseif units(squota, store) - units(sclaimed, store) < qty then
        status = STORE_QUOTA_EXHAUSTED
    elseif units(cclaimed, customer) + qty > limit then
        status = CUSTOMER_LIMIT_REACHED
    elseif units(sstock, store) < qty then
        status = INSUFFICIENT_STOCK
    else
        local q = string.format('%d', qty)
        redis.call('HINCRBY', sclaimed, store, q)
        redis.call('HINCRBY', cclaimed, customer, q)
        redis.call('HINCRBY', sstock, store, '-' .. q)
        redis.call('HSET', claims, rid, store .. ':' .. q .. ':' .. customer)
        claimed = claimed + qty
        gained = gained + qty
        status = OK
    end
    out[#out + 1] = status
end
if gained > 0 then
    redis.call('HINCRBY', meta, 'global_claimed', string.format('%d', gained))
end
return out
"""

_scripts: weakref.WeakKeyDictionary[redis.Redis, Script] = weakref.WeakKeyDictionary()
_scripts_lock = threading.Lock()


def _claim_script(r: redis.Redis) -> Script:
    """The claim script registered with ``r`` (one ``Script`` per client: EVALSHA, loading it on NOSCRIPT)."""
    script = _scripts.get(r)
    if script is None:
        with _scripts_lock:
            script = _scripts.get(r)
            if script is None:
                script = _scripts[r] = r.register_script(CLAIM_LUA)
    return script


Item = tuple[str, str | int, int, int]   # (request_id, customer, store, qty)


def _args(items: Sequence[Item]) -> list[str | int]:
    args: list[str | int] = []
    for request_id, customer, store, qty in items:
        args += [request_id, str(customer), str(store), _amount("qty", qty, positive=True)]
    return args


def _run(r: redis.Redis, sale: str, items: Sequence[Item]) -> list[str]:
    codes = _claim_script(r)(keys=sale_keys(sale), args=_args(items), client=r)
    return [STATUSES[code] for code in codes]


def claim(r: redis.Redis, sale: str, request_id: str, customer: str | int, store: int, qty: int) -> str:
    """Claim ``qty`` units of ``sale`` at ``store`` for ``customer``; the status (one of ``STATUSES``).

    One script call: it returns only after the claim is fsynced (``appendfsync always``).
    ``"OK"`` means the units are claimed -- now, or by an earlier call with this
    request id (then nothing changes). Any other status is a refusal and nothing
    changed; see the module docstring for the order of the checks. A sale that was
    never loaded raises ``redis.ResponseError``; ``qty`` must be a positive int.

    Examples
    --------
    >>> claim(r, "s1", "req-1", "alice", 1, 2)                # doctest: +SKIP
    'OK'
    """
    return _run(r, sale, [(request_id, customer, store, qty)])[0]


def claim_many(r: redis.Redis, sale: str, items: Sequence[Item]) -> list[str]:
    """Claim every ``(request_id, customer, store, qty)`` in ONE script call; one status per item, in order.

    The items are decided one after another inside one atomic script, exactly as
    that many ``claim`` calls in a row would be (an item sees what earlier items
    claimed; a request id repeated in the batch claims once and answers ``"OK"``
    again), but with one append-only-file write and one fsync for the batch. A
    malformed item fails the whole call before anything changes.

    Examples
    --------
    >>> claim_many(r, "s1", [("req-2", "bob", 1, 1), ("req-2", "bob", 1, 1)])   # doctest: +SKIP
    ['OK', 'OK']
    """
    if not items:
        return []
    return _run(r, sale, items)


# --------------------------------------------------------------------------------------------------
# consistency


def _ints(raw: Mapping[bytes, bytes]) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in raw.items()}


def totals(r: redis.Redis, sale: str) -> dict[str, Any]:
    """A consistent snapshot of ``sale`` (one ``MULTI``/``EXEC``) and its cross-checks.

    Keys: ``global_quota``, ``global_claimed``, ``customer_limit``; ``store_claimed_sum``,
    ``customer_claimed_sum``, ``claims_qty`` (qty summed over the claims hash) and
    ``claims`` (how many) -- all four equal ``global_claimed`` when consistent;
    ``store_claimed``, ``store_stock``, ``store_quota`` (store -> units),
    ``customer_max`` (the most any customer claimed) and ``customers``;
    ``mismatched_stores`` / ``mismatched_customers``: how many stores / customers
    whose claimed count differs from the sum of their claims (0 when consistent).

    Examples
    --------
    >>> t = totals(r, "s1"); t["global_claimed"] == t["claims_qty"]   # doctest: +SKIP
    True
    """
    keys = sale_keys(sale)
    pipe = r.pipeline(transaction=True)
    for key in keys[:5]:
        pipe.hgetall(key)
    pipe.hvals(keys[5])
    meta, squota, sclaimed, sstock, cclaimed, records = pipe.execute()
    if not meta:
        raise KeyError(f"no such sale: {sale}")
    meta, store_claimed, customer_claimed = _ints(meta), _ints(sclaimed), _ints(cclaimed)
    by_store: Counter[str] = Counter()
    by_customer: Counter[str] = Counter()
    for record in records:
        store, qty, customer = record.decode().split(":", 2)
        by_store[store] += int(qty)
        by_customer[customer] += int(qty)
    return {
        "global_quota": meta["global_quota"],
        "global_claimed": meta["global_claimed"],
        "customer_limit": meta["customer_limit"],
        "store_claimed_sum": sum(store_claimed.values()),
        "customer_claimed_sum": sum(customer_claimed.values()),
        "claims_qty": sum(by_store.values()),
        "claims": len(records),
        "store_claimed": {int(s): v for s, v in store_claimed.items()},
        "store_stock": {int(s): v for s, v in _ints(sstock).items()},
        "store_quota": {int(s): v for s, v in _ints(squota).items()},
        "customer_max": max(customer_claimed.values(), default=0),
        "customers": len(customer_claimed),
        "mismatched_stores": sum(store_claimed.get(s, 0) != by_store.get(s, 0)
                                 for s in store_claimed.keys() | by_store.keys()),
        "mismatched_customers": sum(customer_claimed.get(c, 0) != by_customer.get(c, 0)
                                    for c in customer_claimed.keys() | by_customer.keys()),
    }
