"""PostgreSQL doing pyomni's durable check-and-hold: the baseline of the durability benchmarks.

A throwaway PostgreSQL server (``PostgresServer``) with the durability settings
stated explicitly (``fsync``, ``synchronous_commit``, ``full_page_writes`` all on:
a hold is acknowledged only after its commit record is fsynced), a two-table
schema, and the check-and-hold itself:

* ``check_and_hold`` -- reserve ``qty`` units of one stock cell if that many are
  free, recording the request id; ONE autocommit statement, so one commit (one
  WAL flush) per hold. Idempotent: a request id that already holds changes
  nothing and returns ``False``, also when two copies race.
* ``check_and_hold_many`` -- the same for a batch, in one transaction (one
  commit, so one WAL flush per batch): the analogue of pyomni's batch call.

The server is installed by ``make postgres`` (Debian's packages); ``find_postgres``
returns ``None`` when it is not there. Binaries are looked up under
``/usr/lib/postgresql/*/bin`` first (newest version), then on ``PATH``.

Usage::

    with PostgresServer() as pg, pg.connect() as conn:
        create_schema(conn)
        load_stock(conn, [(loc, sku, 1_000_000) for loc in range(10) for sku in range(100)])
        check_and_hold(conn, "req-1", 3, 42, 2)   # True
        check_and_hold(conn, "req-1", 3, 42, 2)   # False: already held, nothing changes
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from scratch import default_base_dir

BENCH_USER = "pyomnibench"
DB_USER = "bench"
_BINARIES = ("initdb", "pg_ctl", "postgres")

# the settings the baseline runs with; the durability ones are PostgreSQL's defaults, stated explicitly
SETTINGS: dict[str, str] = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "256MB",
    "max_connections": "200",
    "listen_addresses": "''",     # no TCP at all: only the Unix socket in the server's own directory
    "logging_collector": "off",
}


# --------------------------------------------------------------------------------------------------
# locating PostgreSQL


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", path.parent.name)) or (0,)


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _BINARIES)


def find_postgres() -> Path | None:
    """The bin directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or ``None`` if not installed.

    Debian's layout first (``/usr/lib/postgresql/<version>/bin``, newest version),
    then whatever ``initdb`` on ``PATH`` resolves to (symlinks followed).
    """
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for bindir in candidates:
        if _has_binaries(bindir):
            return bindir
    initdb = shutil.which("initdb")
    if initdb:
        for bindir in (Path(initdb).resolve().parent, Path(initdb).parent):
            if _has_binaries(bindir):
                return bindir
    return None


def _server_user() -> str | None:
    """The OS user to run PostgreSQL as: ``None`` (ourselves) unless we are root, which initdb refuses.

    As root: Debian's ``postgres`` user if the package created it, else a system user
    ``pyomnibench`` (created with ``useradd`` on first use).
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", BENCH_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass  # no such user: try the next candidate
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", BENCH_USER],
                   check=True, capture_output=True)
    return BENCH_USER


# --------------------------------------------------------------------------------------------------
# the server


class PostgresServer:
    """A fresh PostgreSQL cluster in a temporary directory on disk, reachable only by its Unix socket.

    ``__enter__`` runs initdb (as a non-root user when we are root), writes ``SETTINGS``
    and starts the server with ``pg_ctl -w``; ``__exit__`` stops it and deletes the
    directory, also when the body raised. ``dsn`` (and ``connect()``) reach the
    database ``postgres`` as superuser ``bench`` (trust authentication on the socket,
    which only the directory's owner -- and root -- can reach).

    Layout of ``root``: ``data/`` (the cluster), ``.s.PGSQL.<port>`` (the socket),
    ``server.log``.
    """

    def __init__(self, *, base_dir: Path | str | None = None, port: int = 5432,
                 settings: dict[str, str] | None = None, start_timeout: float = 60.0) -> None:
        self.bindir = find_postgres()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL not installed: run `make postgres`")
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.port = port
        self.settings = {**SETTINGS, **(settings or {})}
        self.start_timeout = start_timeout
        self.user = _server_user()
        self.root: Path | None = None
        self.started = False

    # paths ----------------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "server.log"

    @property
    def dsn(self) -> str:
        """libpq connection string for psycopg: the socket directory, port, user ``bench``, database ``postgres``."""
        assert self.root is not None, "server not started"
        return f"host={self.root} port={self.port} user={DB_USER} dbname=postgres"

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A psycopg connection in autocommit mode that prepares every statement on first use."""
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("prepare_threshold", 0)
        return psycopg.connect(self.dsn, **kwargs)

    # running --------------------------------------------------------------------------------------
    def _cmd(self, *args: str | Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        argv = [str(a) for a in args]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AssertionError):
            return "(no server log)"

    def start(self) -> PostgresServer:
        base = self.base_dir if self.base_dir is not None else default_base_dir()
        base.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="pyomni-pg-", dir=base))
        try:
            if self.user is not None:
                shutil.chown(self.root, self.user, self.user)
            assert self.bindir is not None
            # --no-sync only skips initdb's final sync of the template files; the run itself is fully durable
            self._cmd(self.bindir / "initdb", "-D", self.data_dir, "-U", DB_USER, "--auth=trust",
                      "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
            lines = [f"{k} = {v}" for k, v in self.settings.items()]
            lines += [f"unix_socket_directories = '{self.root}'", f"port = {self.port}"]
            with open(self.data_dir / "postgresql.conf", "a") as conf:
                conf.write("\n# pyomni benchmark baseline (benchmarks/pg_baseline.py)\n" + "\n".join(lines) + "\n")
            self._cmd(self.bindir / "pg_ctl", "-D", self.data_dir, "-l", self.log_file, "-w",
                      "-t", str(int(self.start_timeout)), "start", timeout=self.start_timeout + 30)
            self.started = True
        except subprocess.CalledProcessError as exc:
            detail = f"{exc.cmd}: exit {exc.returncode}\n{exc.stdout}\n{exc.stderr}\n--- server log ---\n"
            detail += self._log_tail()
            self.stop()
            raise RuntimeError(f"could not start PostgreSQL: {detail}") from exc
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown, immediate if that hangs) and delete its directory. Idempotent."""
        if self.root is None:
            return
        if self.started and self.bindir is not None:
            for mode in ("fast", "immediate"):
                try:
                    self._cmd(self.bindir / "pg_ctl", "-D", self.data_dir, "-m", mode, "-w", "-t", "30", "stop",
                              timeout=60)
                    break
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                    time.sleep(0.1)
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def setting(self, conn: psycopg.Connection[Any], name: str) -> str:
        """The value the running server uses for ``name`` (``SHOW``)."""
        row = conn.execute(f"SHOW {name}").fetchone()  # names are ours, never user input
        assert row is not None
        return str(row[0])


# --------------------------------------------------------------------------------------------------
# schema and data

SCHEMA = """
CREATE TABLE stock (
    loc      int NOT NULL,
    sku      int NOT NULL,
    on_hand  int NOT NULL,
    reserved int NOT NULL,
    PRIMARY KEY (loc, sku),
    CHECK (reserved BETWEEN 0 AND on_hand)
);
CREATE TABLE reservations (
    request_id text PRIMARY KEY,
    loc        int,
    sku        int,
    qty        int,
    created_at timestamptz DEFAULT now()
);
"""


def create_schema(conn: psycopg.Connection[Any]) -> None:
    """Create ``stock`` and ``reservations`` (dropping old ones)."""
    with conn.transaction():
        conn.execute("DROP TABLE IF EXISTS reservations, stock")
        for statement in filter(str.strip, SCHEMA.split(";")):
            conn.execute(statement)


def load_stock(conn: psycopg.Connection[Any], cells: Iterable[Sequence[int]]) -> int:
    """Bulk-load ``(loc, sku, on_hand)`` or ``(loc, sku, on_hand, reserved)`` rows with COPY; returns the count.

    Runs ANALYZE afterwards so the planner knows the table's size.
    """
    n = 0
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy("COPY stock (loc, sku, on_hand, reserved) FROM STDIN") as copy:
            for cell in cells:
                copy.write_row((cell[0], cell[1], cell[2], cell[3] if len(cell) > 3 else 0))
                n += 1
    conn.execute("ANALYZE stock")
    return n


# --------------------------------------------------------------------------------------------------
# check-and-hold

# One statement. The reservation row is inserted first, and only if the cell has the units free:
# the SELECT locks the cell row (FOR NO KEY UPDATE, the lock the UPDATE itself takes) and, under
# READ COMMITTED, re-checks the availability on the newest committed version after waiting for a
# concurrent holder. The UPDATE then adds the quantity only for a reservation that was really
# inserted (it reads ``ins``). So:
#   * a request id already held (committed) -> ON CONFLICT DO NOTHING -> ``ins`` empty -> no UPDATE;
#   * two copies of one new id racing -> the second waits on the first's unique-index entry and then
#     does nothing (a commit) or inserts (an abort);
#   * not enough stock -> no row to insert -> nothing changes.
# (The obvious "UPDATE in a CTE, then INSERT ... ON CONFLICT DO NOTHING" is wrong: every sub-statement
# of a WITH runs to completion, so a retry would raise ``reserved`` again with no reservation row.)
# The CHECK constraint on ``stock`` backs all of this up: an oversell would abort the statement.
HOLD_SQL = """
WITH ins AS (
    INSERT INTO reservations (request_id, loc, sku, qty)
    SELECT %(rid)s, loc, sku, %(qty)s
      FROM stock
     WHERE loc = %(loc)s AND sku = %(sku)s AND on_hand - reserved >= %(qty)s
       FOR NO KEY UPDATE
    ON CONFLICT (request_id) DO NOTHING
    RETURNING loc, sku, qty
)
UPDATE stock AS s
   SET reserved = s.reserved + ins.qty
  FROM ins
 WHERE s.loc = ins.loc AND s.sku = ins.sku
RETURNING 1
"""

Item = tuple[str, int, int, int]   # (request_id, loc, sku, qty)


def _params(request_id: str, loc: int, sku: int, qty: int) -> dict[str, Any]:
    if qty <= 0:
        raise ValueError(f"qty must be positive, got {qty}")
    return {"rid": request_id, "loc": loc, "sku": sku, "qty": qty}


def check_and_hold(conn: psycopg.Connection[Any], request_id: str, loc: int, sku: int, qty: int) -> bool:
    """Hold ``qty`` units of cell (loc, sku) for ``request_id`` if free; ``True`` iff this call held them.

    One prepared statement on an autocommit connection: it returns only after the
    commit is flushed to disk. ``False`` means nothing changed: not enough free units,
    no such cell, or the request id already holds (a retry).
    """
    if not conn.autocommit:
        raise ValueError("check_and_hold needs an autocommit connection (one statement = one transaction)")
    cur = conn.execute(HOLD_SQL, _params(request_id, loc, sku, qty), prepare=True)
    return cur.fetchone() is not None


def check_and_hold_many(conn: psycopg.Connection[Any], items: Sequence[Item], *, retries: int = 3) -> list[bool]:
    """Check-and-hold every ``(request_id, loc, sku, qty)`` in ONE transaction (one commit, one WAL flush).

    Returns one flag per item, in the order given. The statements are pipelined (one
    round trip per batch, not per item) and run in (loc, sku) order -- stable, so items
    of one cell keep their relative order -- so concurrent batches lock cells in the
    same order and cannot deadlock on them. All or nothing: if the transaction fails,
    nothing is held; a deadlock (possible only when concurrent batches share request
    ids) is retried up to ``retries`` times, which is safe because holds are idempotent.
    """
    if not items:
        return []
    order = sorted(range(len(items)), key=lambda i: (items[i][1], items[i][2]))
    params = [_params(*items[i]) for i in order]
    for attempt in range(retries + 1):
        try:
            held = [False] * len(items)
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(HOLD_SQL, params, returning=True)
                for i in order:
                    held[i] = cur.fetchone() is not None
                    cur.nextset()
            return held
        except psycopg.errors.DeadlockDetected:
            if attempt == retries:
                raise
    raise AssertionError("unreachable")


def totals(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """``reserved`` summed over stock, ``qty`` summed over reservations, the reservation count, and the
    number of cells whose ``reserved`` differs from the sum of their reservations (0 when consistent)."""
    row = conn.execute("""
        SELECT (SELECT coalesce(sum(reserved), 0) FROM stock),
               (SELECT coalesce(sum(qty), 0) FROM reservations),
               (SELECT count(*) FROM reservations),
               (SELECT count(*) FROM stock s
                  LEFT JOIN (SELECT loc, sku, sum(qty) AS q FROM reservations GROUP BY loc, sku) r
                         USING (loc, sku)
                 WHERE s.reserved <> coalesce(r.q, 0))
    """).fetchone()
    assert row is not None
    return {"reserved": int(row[0]), "reserved_qty": int(row[1]), "reservations": int(row[2]),
            "mismatched_cells": int(row[3])}
