"""The engine's selling side: flash-sale commands and their state (a part of :class:`~pyomni.Engine`).

``SellingSide`` is mixed into :class:`~pyomni.Engine`: the same lock, clock,
journal and idempotency window, and the same command path -- every method
here that changes state is a decider (reads, raises typed errors, changes
nothing) or an applier (the only code that changes state, live and in
replay), registered in ``pyomni.engine._HANDLERS``. The sale's own state is
:class:`pyomni.flash._Sale`; claims live in :class:`_ClaimTable`, one row per
claim in plain arrays, so a burst of claims costs no Python object per claim
beyond its request id's entry in the window.

A batch of claims is one command and one journal record holding only the
claims accepted (:class:`~pyomni.commands.ClaimBatch`): decided in one native
pass without changing anything (``pyomni._core.claim_batch``), then applied by
the same pass with the stores it chose. A claim's request id is remembered
with the claim, so a retry -- alone or in another batch, also after a
restart -- answers with the same claim.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from . import errors, validate
from ._core import check_status, claim_batch
from .commands import ClaimBatch, Claimed, CreateSale, Earmark, EndClaim, EndSale, UpdateSale
from .flash import (
    _ST_INVALID_ARGUMENT,
    _ST_INVALID_COORDINATES,
    _ST_INVALID_QUANTITY,
    _ST_REQUEST_ID_REUSED,
    _ST_UNKNOWN_LOCATION,
    _ST_UNKNOWN_SKU,
    CLAIM_OK,
    Claim,
    ClaimResults,
    FlashSale,
    SaleCounters,
    SaleState,
    _Sale,
    claim_id,
    claim_number,
    claim_pass,
    min_dot,
    unit_vectors,
)
from .model import MAX_QTY, ReservationState
from .validate import MAX_ID_CHARS, shown

__all__ = ["SellingSide"]

_HELD, _CONFIRMED, _RELEASED, _EXPIRED = (int(s) for s in ReservationState)
#: Most characters of a customer id in a claim.
MAX_CUSTOMER_CHARS = 128


class _ClaimTable:
    """Every claim, one row each, in arrays that grow by doubling (row = claim number - 1)."""

    sale: np.ndarray
    store: np.ndarray
    sku: np.ndarray
    qty: np.ndarray
    customer: np.ndarray
    state: np.ndarray
    created: np.ndarray
    expires: np.ndarray
    named: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    _COLUMNS = (("sale", np.int32), ("store", np.int32), ("sku", np.int32), ("qty", np.int32),
                ("customer", np.int32), ("state", np.uint8), ("created", np.float64), ("expires", np.float64),
                ("named", np.uint8), ("lat", np.float64), ("lon", np.float64))   # what was asked: a store, or a point

    def __init__(self, n: int = 0, columns: Mapping[str, np.ndarray] | None = None) -> None:
        cap = max(1024, n)
        self.n = n
        for name, dtype in self._COLUMNS:
            col = np.zeros(cap, dtype=dtype)
            if columns is not None and name in columns:
                col[:n] = columns[name]
            setattr(self, name, col)

    def append(self, sale: int, store: np.ndarray, sku: np.ndarray, qty: np.ndarray, customer: np.ndarray,
               created: float, expires: float, named: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> int:
        """Add rows; returns the first new row."""
        m = len(qty)
        first = self.n
        if first + m > len(self.qty):
            cap = max(2 * len(self.qty), first + m)
            for name, _ in self._COLUMNS:
                old = getattr(self, name)
                new = np.zeros(cap, dtype=old.dtype)
                new[:first] = old[:first]
                setattr(self, name, new)
        end = first + m
        self.sale[first:end] = sale
        self.store[first:end] = store
        self.sku[first:end] = sku
        self.qty[first:end] = qty
        self.customer[first:end] = customer
        self.state[first:end] = _HELD
        self.created[first:end] = created
        self.expires[first:end] = expires
        self.named[first:end] = named
        self.lat[first:end] = lat
        self.lon[first:end] = lon
        self.n = end
        return first

    def columns(self) -> dict[str, np.ndarray]:
        """The rows so far, for a snapshot taken under the lock: a row never changes but for its state, so
        the other columns are views (growing the table makes new arrays and leaves these as they are)."""
        return {name: getattr(self, name)[:self.n].copy() if name == "state" else getattr(self, name)[:self.n]
                for name, _ in self._COLUMNS}


class _RememberedClaim:
    """A claim's entry in the idempotency window: like the engine's ``_Remembered``, but its command (the
    fingerprint) and its answer are rebuilt from the claim's row, which never changes, when asked for."""

    __slots__ = ("_side", "number", "lsn", "at")

    def __init__(self, side: SellingSide, number: int, lsn: int, at: float) -> None:
        self._side = side
        self.number = number
        self.lsn = lsn
        self.at = at

    @property
    def command(self) -> tuple:
        return self._side._claim_fingerprint_of(self.number)

    @property
    def answer(self) -> Claim:
        return self.value()

    def value(self) -> Claim:
        return self._side._claim_row_first(self.number)


class SellingSide:
    """Flash sales: the public methods, deciders and appliers (mixed into :class:`~pyomni.Engine`)."""

    # the engine's attributes this part reads (set by Engine.__init__)
    _lock: Any
    _ledger: Any
    _native: bool
    _loc_ids: tuple[str, ...]
    _loc_index: dict[str, int]
    _sku_index: dict[str, int]
    _requests: Any
    _lsn: int
    _journal: Any
    _replaying: bool

    def _init_selling(self) -> None:
        self._sales: dict[str, _Sale] = {}
        self._sale_list: list[_Sale] = []
        self._claims = _ClaimTable()
        self._claim_expiry: list[tuple[float, int, int]] = []   # (expires_at, first claim number, count)
        self._sale_clock: list[tuple[float, int, int]] = []     # (time, 0 start | 1 end, sale number)

    # -- public: sales ---------------------------------------------------------------------------
    def create_sale(self, sale: FlashSale, *, request_id: str | None = None) -> SaleCounters:
        """Create a flash sale; returns its counters (state ACTIVE if its window has begun).

        Raises :class:`~pyomni.errors.DuplicateId` for a taken id, ``UnknownSku`` /
        ``UnknownLocation`` for SKUs or stores the engine does not know, and
        ``InvalidArgument`` for a window that is already over.
        """
        if not isinstance(sale, FlashSale):
            raise errors.InvalidArgument("sale must be a pyomni.FlashSale", field="sale")
        return self._execute(CreateSale(sale), request_id)

    def update_sale(self, sale: FlashSale, *, request_id: str | None = None) -> SaleCounters:
        """Replace a sale's definition (matched by id); returns its counters.

        May change the window (not the start of a sale that began), the quotas
        (never below what is claimed), the per-customer limit, the pay window
        (for new claims), ``max_km`` and the title, and add stores. The SKUs,
        the earmark setting and the stores already taking part stay.
        """
        if not isinstance(sale, FlashSale):
            raise errors.InvalidArgument("sale must be a pyomni.FlashSale", field="sale")
        return self._execute(UpdateSale(sale), request_id)

    def end_sale(self, sale_id: str, *, request_id: str | None = None) -> SaleCounters:
        """End a sale now: claims are refused from here on and its earmark goes back to the stock.

        Claims still HELD can be paid (confirmed) until their pay window ends.
        """
        return self._execute(EndSale(sale_id), request_id)

    def sale(self, sale_id: str) -> FlashSale:
        """A sale's definition."""
        with self._lock:
            return self._sale_of(sale_id).spec

    def sales(self) -> list[FlashSale]:
        """Every sale's definition, in creation order."""
        with self._lock:
            return [s.spec for s in self._sale_list]

    def sale_counters(self, sale_id: str) -> SaleCounters:
        """A sale's live counters: quota left in all and per store, claims, payments, releases."""
        with self._lock:
            return self._sale_of(sale_id).counters(self._ledger)

    # -- public: claims --------------------------------------------------------------------------
    def claim(self, sale_id: str, customer: str, sku: str, qty: int = 1, *, store: str | None = None,
              near: tuple[float, float] | None = None, request_id: str | None = None) -> Claim:
        """Claim ``qty`` units of ``sku`` in a running sale for pickup at ``store``, or at the nearest
        participating store to ``near`` that can give them.

        One command checks, in order: the sale is running (engine clock), the
        customer's limit, the global quota, the store's quota and the stock;
        then holds the units at that store until the pay window ends. A retry
        with the same ``request_id`` returns the same claim.

        Raises
        ------
        SaleNotActive, CustomerLimitReached, SoldOut, StoreQuotaExhausted, InsufficientStock
            The claim was refused; nothing changed.
        UnknownSale, UnknownSku, UnknownLocation, InvalidQuantity, InvalidCoordinates
            Bad input; nothing changed.
        """
        if (store is None) == (near is None):
            raise errors.InvalidArgument("give exactly one of store and near", field="store")
        qty = validate.quantity(qty, "qty")
        if store is not None and not (isinstance(store, str) and store):
            raise errors.UnknownLocation(f"no store {shown(store)}", field="store")
        if near is not None:
            near = validate.point(near, "near")
        request_id = validate.request_id(request_id)
        results = self.claim_many(sale_id, [customer], [sku], [qty], stores=None if store is None else [store],
                                  near=None if near is None else [near],
                                  request_ids=None if request_id is None else [request_id])
        answer = results.get(0)
        if isinstance(answer, errors.PyomniError):
            answer.field = answer.field.removeprefix("claims[0].") if answer.field else None
            raise answer
        return answer

    def claim_many(self, sale_id: str, customers: Sequence[str], skus: str | Sequence[str],
                   qtys: Sequence[int] | np.ndarray | None = None, *, stores: Sequence[str | None] | None = None,
                   near: Sequence[tuple[float, float]] | np.ndarray | None = None,
                   request_ids: Sequence[str | None] | None = None, wait: bool = True) -> ClaimResults:
        """A batch of claims in one sale: one lock acquisition, one native pass, one journal commit.

        Columns, one entry per claim: ``customers``; ``skus`` (or one SKU for
        all); ``qtys`` (default 1 each); ``stores`` (a store id, or None/"" for
        the nearest) and/or ``near`` (``(lat, lon)`` rows, used where no store
        is named); ``request_ids`` (None = not retryable). Every claim is
        decided as :meth:`claim` would, in order; the answer holds each one's
        outcome (see :class:`~pyomni.flash.ClaimResults`), so one refusal does
        not stop the others. Raises only for the batch as a whole:
        ``UnknownSale``, ``SaleNotActive``, or columns of different lengths.

        With ``wait=False`` the call returns as soon as the batch is decided
        and handed to the journal, before it is durable: the caller must call
        :meth:`wait_durable` with ``results.lsn`` before answering anybody (the
        server does, so that deciding the next batch overlaps this one's fsync).
        """
        customers = validate.sequence(customers, "customers", what="a sequence of customer ids")
        wait = validate.flag(wait, "wait")
        n = len(customers)
        cols = self._claim_columns(n, skus, qtys, stores, near, request_ids)
        with self._lock:
            results, lsn = self._commit_claims(sale_id, list(customers), *cols)
        results.lsn = lsn
        if wait:
            self.wait_durable(lsn)
        return results

    def wait_durable(self, lsn: int) -> None:
        """Return once journal record ``lsn`` is durable (at once without a journal or for lsn 0)."""
        lsn = validate.integer(lsn, "lsn", low=0, high=2**63 - 1)
        if lsn and self._journal is not None:
            self._wait(lsn)

    def confirm_claim(self, claim: str, *, request_id: str | None = None) -> Claim:
        """The claim was paid: its units leave the store's stock (they stay counted in the quotas)."""
        return self._execute(EndClaim(claim, _CONFIRMED), request_id)

    def release_claim(self, claim: str, *, request_id: str | None = None) -> Claim:
        """Cancel a HELD claim: its units go back to the stock (or the sale's earmark) and to the quotas."""
        return self._execute(EndClaim(claim, _RELEASED), request_id)

    def get_claim(self, claim: str) -> Claim:
        """A claim as it is now."""
        with self._lock:
            return self._claim_row(self._claim_index(claim) + 1, current=True)

    def claims(self, sale_id: str, *, state: ReservationState | None = None, after: str | None = None,
               limit: int = 1000) -> list[Claim]:
        """A sale's claims in claim order, ``limit`` at a time after claim id ``after``."""
        limit = validate.integer(limit, "limit", low=1)
        if state is not None:
            state = validate.member(state, "state", ReservationState)
        with self._lock:
            sale = self._sale_of(sale_id)
            t = self._claims
            start = 0 if after is None else claim_number(after, "after")
            rows = np.flatnonzero(t.sale[start:t.n] == sale.number) + start
            if state is not None:
                rows = rows[t.state[rows] == int(state)]
            return [self._claim_row(int(r) + 1, current=True) for r in rows[:limit]]

    # -- input checks (no lock, no state) --------------------------------------------------------
    @staticmethod
    def _claim_columns(n: int, skus: Any, qtys: Any, stores: Any, near: Any, request_ids: Any) -> tuple:
        """The columns of a batch, checked as a whole: sequences of one entry per claim (a bad *entry* is that
        claim's refusal, decided under the lock; a bad *column* refuses the batch)."""
        def column(values: Any, name: str, what: str) -> Any:
            values = validate.sequence(values, name, what=what)
            if len(values) != n:
                raise errors.InvalidArgument(f"{name} must have one entry per claim ({n}), got {len(values)}",
                                             field=name)
            return values

        if isinstance(skus, str):
            skus = [skus] * n
        skus = column(skus, "skus", "a SKU id or a sequence of them")
        if qtys is None:
            qty = np.ones(n, dtype=np.int64)
        else:
            qtys = column(qtys, "qtys", "a sequence of quantities")
            try:
                qty = np.asarray(qtys)
                if n and qty.dtype.kind not in "iu":
                    raise TypeError
                # an unsigned count beyond int64 wraps to a negative one: refused like any other
                qty = qty.astype(np.int64, copy=False).reshape(n)
            except (TypeError, ValueError, OverflowError):
                raise errors.InvalidQuantity("qtys must be ints", field="qtys") from None
        if stores is not None:
            stores = column(stores, "stores", "a sequence of store ids (None or '' for the nearest)")
        lat = np.full(n, np.nan)
        lon = np.full(n, np.nan)
        if near is not None:
            if not isinstance(near, np.ndarray):
                near = column(near, "near", "a sequence of (lat, lon) pairs")
            try:
                pts = np.asarray(near, dtype=np.float64).reshape(n, 2) if n else np.zeros((0, 2))
            except (TypeError, ValueError, OverflowError):
                raise errors.InvalidCoordinates("near must be (lat, lon) rows", field="near") from None
            lat, lon = pts[:, 0].copy(), pts[:, 1].copy()
        if request_ids is not None:
            request_ids = column(request_ids, "request_ids", "a sequence of request ids (None: not retryable)")
        return list(skus), qty, stores, lat, lon, request_ids

    # -- the claim path --------------------------------------------------------------------------
    def _sale_of(self, sale_id: Any) -> _Sale:
        sale = self._sales.get(sale_id) if isinstance(sale_id, str) else None
        if sale is None:
            raise errors.UnknownSale(f"no flash sale {shown(sale_id)}", field="sale_id")
        return sale

    def _commit_claims(self, sale_id: str, customers: list[str], skus: list[str], qty: np.ndarray,
                       stores: Sequence[str | None] | None, lat: np.ndarray, lon: np.ndarray,
                       request_ids: Sequence[str | None] | None) -> tuple[ClaimResults, int]:
        """Under the lock: check, decide, apply, journal and remember a batch of claims."""
        now = self._begin_command(ClaimBatch)
        sale = self._sale_of(sale_id)
        spec = sale.spec
        active = sale.state is SaleState.ACTIVE and spec.starts_at <= now < spec.ends_at
        n = len(customers)
        status = np.zeros(n, dtype=np.uint8)
        # input checks, per claim: a bad claim is refused, the others go on
        bad_qty = (qty < 1) | (qty > MAX_QTY)
        status[bad_qty] = _ST_INVALID_QUANTITY
        sku_pos = sale.sku_pos
        try:
            c_sku = np.fromiter((sku_pos.get(s, -1) for s in skus), dtype=np.int32, count=n)
        except TypeError:               # an unhashable entry: not a SKU of the sale
            c_sku = np.fromiter((sku_pos.get(s, -1) if type(s) is str else -1 for s in skus), dtype=np.int32,
                                count=n)
        status[(c_sku < 0) & (status == 0)] = _ST_UNKNOWN_SKU
        c_store = np.full(n, -1, dtype=np.int32)
        if stores is not None:
            loc_index, store_pos = self._loc_index, sale.store_pos
            # None or "" asks for the nearest store; anything else names one (which must be a known id)
            try:
                named = np.fromiter(map(bool, stores), dtype=bool, count=n)
                c_store = np.fromiter((store_pos.get(loc_index.get(s, -1), -1) if s else -1 for s in stores),
                                      dtype=np.int32, count=n)
                if not named.all() and int(n - named.sum()) != stores.count(None) + stores.count(""):
                    raise TypeError         # 0, False, () ...: not "the nearest", a store id that is not one
            except (TypeError, ValueError, AttributeError):
                # an entry unhashable, an array, or falsy but not None or "": judged one by one
                named = np.fromiter((s is not None and not (type(s) is str and not s) for s in stores), dtype=bool,
                                    count=n)
                c_store = np.fromiter((store_pos.get(loc_index.get(s, -1), -1) if type(s) is str and s else -1
                                       for s in stores), dtype=np.int32, count=n)
            status[named & (c_store < 0) & (status == 0)] = _ST_UNKNOWN_LOCATION
            lat[named] = np.nan
            lon[named] = np.nan
        else:
            named = np.zeros(n, dtype=bool)
        pointed = ~named
        bad_point = pointed & ~((np.abs(lat) <= 90) & (np.abs(lon) <= 180))
        status[bad_point & (status == 0)] = _ST_INVALID_COORDINATES
        if not validate.are_identifiers(customers, MAX_CUSTOMER_CHARS):
            for i, c in enumerate(customers):
                if not validate.is_identifier(c, MAX_CUSTOMER_CHARS):
                    if status[i] == 0:
                        status[i] = _ST_INVALID_ARGUMENT
                    customers[i] = ""
        # retries: a request id answered before gives its claim again; first copies within the batch win
        claim_no = np.full(n, -1, dtype=np.int64)
        rids: list[str | None] = list(request_ids) if request_ids is not None else [None] * n
        copies: dict[int, int] = {}          # later copy of a request id in this batch -> its first
        wait = self._lsn                     # what the answer must see durable (retries: their first record)
        if request_ids is not None:
            first_of: dict[str, int] = {}
            requests = self._requests
            printable = validate.are_identifiers(rids, None, skip_empty=True)     # lengths: below, one by one
            for i, rid in enumerate(rids):
                if rid is None or (type(rid) is str and not rid):
                    rids[i] = None
                    continue
                if type(rid) is not str or len(rid) > MAX_ID_CHARS or (
                        not printable and not validate.is_identifier(rid, MAX_ID_CHARS)):
                    status[i] = _ST_INVALID_ARGUMENT
                    rids[i] = None
                    continue
                if rid in first_of:
                    j = first_of[rid]
                    if self._claim_fingerprint(sale_id, customers, skus, stores, lat, lon, qty, i) == \
                            self._claim_fingerprint(sale_id, customers, skus, stores, lat, lon, qty, j):
                        copies[i] = j
                    else:
                        status[i] = _ST_REQUEST_ID_REUSED
                    continue
                first_of[rid] = i
                prior = requests.get(rid)
                if prior is not None:
                    if status[i] == 0 and prior.command == self._claim_fingerprint(
                            sale_id, customers, skus, stores, lat, lon, qty, i):
                        claim_no[i] = claim_number(prior.value().id)
                        wait = max(wait, prior.lsn)
                    else:
                        status[i] = _ST_REQUEST_ID_REUSED
        todo = np.flatnonzero((status == 0) & (claim_no < 0))
        for i in copies:                    # copies are answered from their first, below
            todo = todo[todo != i]
        if len(todo) and not active:        # retries are answered whatever the clock says; new claims are not
            raise errors.SaleNotActive(f"flash sale {shown(sale_id)} is {sale.state.name.lower()} (it runs from "
                                       f"{spec.starts_at} to {spec.ends_at}; the engine's time is {now})",
                                       field="sale_id")
        out_store = np.full(n, -1, dtype=np.int32)
        if len(todo):
            slot, names, base = sale.customer_slots([customers[i] for i in todo])
            xyz = unit_vectors(lat[todo], lon[todo]).reshape(-1) if pointed[todo].any() else \
                np.zeros(3 * len(todo))
            sub_status = np.zeros(len(todo), dtype=np.uint8)
            sub_store = np.zeros(len(todo), dtype=np.int32)
            st, _ = self._claim_pass(sale, False, base, slot, c_sku[todo], c_store[todo],
                                     np.nan_to_num(xyz), qty[todo].astype(np.int32), sub_status, sub_store)
            check_status(st, "deciding a batch of claims")
            status[todo] = sub_status
            out_store[todo] = sub_store
        ok = todo[status[todo] == 0] if len(todo) else todo
        lsn = wait
        if len(ok):
            command = ClaimBatch(sale_id, tuple(rids[i] for i in ok), tuple(customers[i] for i in ok),
                                 c_sku[ok].tobytes(), c_store[ok].tobytes(), lat[ok].tobytes(), lon[ok].tobytes(),
                                 qty[ok].astype(np.int32).tobytes())
            effect = Claimed(out_store[ok].tobytes())
            first = self._apply_claims(command, effect, now, None)
            lsn = self._log(now, None, command, effect)
            self._remember(None, command, None, lsn, now)        # evicts by age; the claims remembered themselves
            self._settle(command, now)
            claim_no[ok] = np.arange(first, first + len(ok))
        for i, j in copies.items():
            status[i], claim_no[i], out_store[i] = status[j], claim_no[j], out_store[j]
        # where each claim is held and until when (retries: as first answered)
        t = self._claims
        has = claim_no > 0
        rows = claim_no[has] - 1
        loc = np.full(n, -1, dtype=np.int32)
        created = np.full(n, np.nan)
        expires = np.full(n, np.nan)
        if len(rows):
            sales = self._sale_list
            loc[has] = [int(sales[s].loc[p]) for s, p in zip(t.sale[rows].tolist(), t.store[rows].tolist())]
            created[has] = t.created[rows]
            expires[has] = t.expires[rows]
            status[has] = CLAIM_OK
        return ClaimResults(sale_id, status, claim_no, loc, created, expires, self._loc_ids,
                            self._claim_row_first), lsn

    def _claim_fingerprint(self, sale_id: str, customers: list[str], skus: list[str], stores: Any,
                           lat: np.ndarray, lon: np.ndarray, qty: np.ndarray, i: int) -> tuple:
        return self._fingerprint(sale_id, customers[i], skus[i], stores[i] if stores is not None else None,
                                 float(lat[i]), float(lon[i]), int(qty[i]))

    @staticmethod
    def _fingerprint(sale_id: str, customer: str, sku: str, store: str | None, lat: float, lon: float,
                     qty: int) -> tuple:
        """What a claim's request id stands for: equal on a retry, also after a restart."""
        point = None if store or math.isnan(lat) else (lat, lon)
        return ("claim", sale_id, customer, sku, store or None, point, qty)

    def _claim_pass(self, sale: _Sale, apply: bool, cust: np.ndarray, c_cust: np.ndarray, c_sku: np.ndarray,
                    c_store: np.ndarray, c_xyz: np.ndarray, c_qty: np.ndarray, out_status: np.ndarray,
                    out_store: np.ndarray) -> tuple[int, int]:
        kernel = claim_batch if self._native else claim_pass
        return kernel(self._ledger, apply, sale.earmarked, sale.loc, sale.sku, sale.store_quota, sale.store_claimed,
                      sale.pool, sale.xyz, min_dot(sale.spec.max_km), sale.spec.quota, sale.claimed,
                      sale.spec.customer_limit, cust, np.ascontiguousarray(c_cust, dtype=np.int32),
                      np.ascontiguousarray(c_sku, dtype=np.int32), np.ascontiguousarray(c_store, dtype=np.int32),
                      np.ascontiguousarray(c_xyz, dtype=np.float64), np.ascontiguousarray(c_qty, dtype=np.int32),
                      out_status, out_store)

    def _apply_claims(self, command: ClaimBatch, effect: Claimed, now: float, request_id: str | None) -> int:
        """Hold every claim of a recorded batch at its store; returns the first claim number."""
        sale = self._sale_of(command.sale_id)
        sku = np.frombuffer(command.sku, dtype=np.int32)
        store = np.frombuffer(effect.store, dtype=np.int32)
        qty = np.frombuffer(command.qty, dtype=np.int32)
        m = len(qty)
        slot, names, cust = sale.customer_slots(list(command.customers))
        st, claimed = self._claim_pass(sale, True, cust, slot, sku, store, np.zeros(3 * m), qty,
                                       np.zeros(m, dtype=np.uint8), np.zeros(m, dtype=np.int32))
        check_status(st, f"a batch of {m} claims in sale {shown(command.sale_id)} does not apply")
        sale.claimed = claimed
        slots = sale.store_customers(names, cust)
        expires = now + sale.spec.pay_window
        asked = np.frombuffer(command.store, dtype=np.int32) >= 0
        first = self._claims.append(sale.number, store, sku, qty, slots[slot], now, expires, asked,
                                    np.frombuffer(command.lat, dtype=np.float64),
                                    np.frombuffer(command.lon, dtype=np.float64)) + 1
        sale.n_claims += m
        lsn = self._lsn + 1                     # the record this batch is about to be (or was, in replay)
        sale.lsn = lsn
        heapq.heappush(self._claim_expiry, (expires, first, m))
        rids = command.request_ids
        if any(r is not None for r in rids):
            self._remember_claims(sale, command, first, lsn, now)
        return first

    def _remember_claims(self, sale: _Sale, command: ClaimBatch, first: int, lsn: int, now: float) -> None:
        # one small object per claim: its fingerprint and its answer are rebuilt from the claim's row when
        # somebody asks (a retry, a snapshot) -- most never are
        if not self._max_request_ids:
            return
        requests = self._requests
        for i, rid in enumerate(command.request_ids):
            if rid is not None:
                requests[rid] = _RememberedClaim(self, first + i, lsn, now)

    def _remembered_claim(self, number: int, lsn: int, at: float) -> _RememberedClaim:
        return _RememberedClaim(self, number, lsn, at)

    def _claim_fingerprint_of(self, number: int) -> tuple:
        """The fingerprint claim ``number``'s request had (what :meth:`_fingerprint` made of it)."""
        t, r = self._claims, number - 1
        sale = self._sale_list[int(t.sale[r])]
        named = bool(t.named[r])
        store = sale.spec.stores[int(t.store[r])][0] if named else None
        return self._fingerprint(sale.spec.id, sale.customer_names[int(t.customer[r])], sale.spec.skus[int(t.sku[r])],
                                 store, float(t.lat[r]), float(t.lon[r]), int(t.qty[r]))

    def _claim_index(self, claim: Any) -> int:
        n = claim_number(claim)
        if not 1 <= n <= self._claims.n:
            raise errors.UnknownClaim(f"no claim {shown(claim)}", field="claim_id")
        return n - 1

    def _claim_row_first(self, number: int) -> Claim:
        """Claim ``number`` as first answered (HELD)."""
        return self._claim_row(number, current=False)

    def _claim_row(self, number: int, *, current: bool) -> Claim:
        t, r = self._claims, number - 1
        sale = self._sale_list[int(t.sale[r])]
        pos = int(t.store[r])
        return Claim(claim_id(number), sale.spec.id, sale.customer_names[int(t.customer[r])],
                     sale.spec.skus[int(t.sku[r])], self._loc_ids[int(sale.loc[pos])], int(t.qty[r]),
                     ReservationState(int(t.state[r])) if current else ReservationState.HELD,
                     float(t.created[r]), float(t.expires[r]))

    # -- deciders and appliers -------------------------------------------------------------------
    def _sale_arrays(self, spec: FlashSale) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Interned stores and SKUs of a definition and the stores' unit vectors; raises for unknown ones."""
        loc = np.empty(len(spec.stores), dtype=np.int32)
        for i, (store, _) in enumerate(spec.stores):
            k = self._loc_index.get(store)
            if k is None:
                raise errors.UnknownLocation(f"unknown location {shown(store)}", field=f"stores[{i}]")
            loc[i] = k
        sku = np.empty(len(spec.skus), dtype=np.int32)
        for j, s in enumerate(spec.skus):
            k = self._sku_index.get(s)
            if k is None:
                raise errors.UnknownSku(f"unknown SKU {shown(s)}", field=f"skus[{j}]")
            sku[j] = k
        net = self._net
        xyz = unit_vectors(np.asarray(net.lat)[loc], np.asarray(net.lon)[loc])
        return loc, sku, xyz

    def _earmark_of(self, sale: _Sale) -> bytes:
        """The units a sale would earmark now (decision; changes nothing)."""
        if not sale.spec.earmark:
            return b""
        n_sku = len(sale.sku)
        pools = np.zeros(len(sale.loc) * n_sku, dtype=np.int32)
        left = np.maximum(sale.store_quota - sale.store_claimed, 0)
        for i, loc in enumerate(sale.loc.tolist()):
            for j, s in enumerate(sale.sku.tolist()):
                cell = self._ledger.cell(loc, s)
                free = 0 if cell is None else max(0, cell[0] - cell[1] - cell[2])
                pools[i * n_sku + j] = min(int(left[i]), free)
        return pools.tobytes()

    def _decide_create_sale(self, command: CreateSale, now: float) -> tuple[Any, Any]:
        spec = command.sale
        if spec.id in self._sales:
            raise errors.DuplicateId(f"flash sale {shown(spec.id)} exists", field="sale.id")
        if spec.ends_at <= now:
            raise errors.InvalidArgument(f"the sale's window ended at {spec.ends_at}; the engine's time is {now}",
                                         field="sale.ends_at")
        loc, sku, xyz = self._sale_arrays(spec)
        if spec.starts_at > now:
            return None, None
        probe = _Sale(spec, len(self._sale_list), loc, sku, xyz)
        return Earmark(self._earmark_of(probe)), None

    def _apply_create_sale(self, command: CreateSale, effect: Earmark | None, now: float,
                           request_id: str | None) -> SaleCounters:
        spec = command.sale
        loc, sku, xyz = self._sale_arrays(spec)
        sale = _Sale(spec, len(self._sale_list), loc, sku, xyz)
        self._sales[spec.id] = sale
        self._sale_list.append(sale)
        sale.lsn = self._lsn + 1
        if effect is not None:
            self._start_sale(sale, effect.pools)
        else:
            heapq.heappush(self._sale_clock, (spec.starts_at, 0, sale.number))
        heapq.heappush(self._sale_clock, (spec.ends_at, 1, sale.number))
        return sale.counters(self._ledger)

    def _start_sale(self, sale: _Sale, pools: bytes) -> None:
        sale.state = SaleState.ACTIVE
        if sale.spec.earmark:
            sale.earmarked = True
            held = np.frombuffer(pools, dtype=np.int32)
            n_sku = len(sale.sku)
            for k in np.flatnonzero(held).tolist():
                c = self._ledger.cell_index(int(sale.loc[k // n_sku]), int(sale.sku[k % n_sku]))
                check_status(self._ledger.change_holds(np.array([c], dtype=np.int64), held[k:k + 1].copy(), 0)
                             if c >= 0 else 8, f"sale {shown(sale.spec.id)} cannot earmark its units")
            sale.pool = held.copy()

    def _finish_sale(self, sale: _Sale) -> None:
        if sale.earmarked:
            n_sku = len(sale.sku)
            for k in np.flatnonzero(sale.pool).tolist():
                c = self._ledger.cell_index(int(sale.loc[k // n_sku]), int(sale.sku[k % n_sku]))
                check_status(self._ledger.change_holds(np.array([c], dtype=np.int64), sale.pool[k:k + 1].copy(), 1),
                             f"sale {shown(sale.spec.id)} cannot give its earmark back")
            sale.pool = np.zeros_like(sale.pool)
            sale.earmarked = False
        sale.state = SaleState.ENDED

    def _decide_update_sale(self, command: UpdateSale, now: float) -> tuple[Any, Any]:
        new = command.sale
        sale = self._sale_of(new.id)
        old = sale.spec
        if sale.state is SaleState.ENDED:
            raise errors.FailedPrecondition(f"flash sale {shown(new.id)} has ended", field="sale.id")
        if new.skus != old.skus:
            raise errors.InvalidArgument("a sale's SKUs cannot change", field="sale.skus")
        if new.earmark != old.earmark:
            raise errors.InvalidArgument("a sale's earmark setting cannot change", field="sale.earmark")
        if sale.state is SaleState.ACTIVE and new.starts_at != old.starts_at:
            raise errors.InvalidArgument("a running sale's start cannot change", field="sale.starts_at")
        if new.ends_at <= now:
            raise errors.InvalidArgument("the new end is not in the future: end the sale instead",
                                         field="sale.ends_at")
        quotas = dict(new.stores)
        for i, (store, _) in enumerate(old.stores):
            if store not in quotas:
                raise errors.InvalidArgument(f"store {shown(store)} takes part and cannot be removed",
                                             field="sale.stores")
            if quotas[store] < sale.store_claimed[i]:
                raise errors.InvalidArgument(f"store {shown(store)} has {sale.store_claimed[i]} units claimed, more "
                                             f"than the new quota {quotas[store]}", field="sale.stores")
        if new.customer_limit < max(sale.cust_claimed, default=0):
            raise errors.InvalidArgument(f"a customer holds {max(sale.cust_claimed)} units, more than the new "
                                         f"limit {new.customer_limit}", field="sale.customer_limit")
        if new.quota < sale.claimed:
            raise errors.InvalidArgument(f"{sale.claimed} units are claimed, more than the new quota {new.quota}",
                                         field="sale.quota")
        self._sale_arrays(new)                  # every new store must exist
        return None, None

    def _apply_update_sale(self, command: UpdateSale, effect: None, now: float,
                           request_id: str | None) -> SaleCounters:
        new = command.sale
        sale = self._sale_of(new.id)
        old_stores = [s for s, _ in sale.spec.stores]
        # stores keep their positions: the old ones in their order, new ones appended
        quotas = dict(new.stores)
        added = [(s, q) for s, q in new.stores if s not in old_stores]
        spec = FlashSale(new.id, new.skus, new.starts_at, new.ends_at, new.quota,
                         tuple((s, quotas[s]) for s in old_stores) + tuple(added), new.customer_limit,
                         new.pay_window, new.earmark, new.max_km, new.title)
        loc, _, xyz = self._sale_arrays(spec)
        n_new, n_sku = len(added), len(sale.sku)
        sale.spec = spec
        sale.loc = loc
        sale.store_pos = {int(x): i for i, x in enumerate(loc)}
        sale.xyz = xyz.reshape(-1)
        sale.store_quota = np.array([q for _, q in spec.stores], dtype=np.int32)
        sale.store_claimed = np.concatenate([sale.store_claimed, np.zeros(n_new, dtype=np.int32)])
        sale.pool = np.concatenate([sale.pool, np.zeros(n_new * n_sku, dtype=np.int32)])
        if sale.earmarked:                      # an earmark never exceeds what the store may still give
            left = np.maximum(sale.store_quota - sale.store_claimed, 0)
            full = sale.claimed >= spec.quota
            for k in np.flatnonzero(sale.pool).tolist():
                excess = int(sale.pool[k]) if full else int(sale.pool[k]) - int(left[k // n_sku])
                if excess > 0:
                    c = self._ledger.cell_index(int(sale.loc[k // n_sku]), int(sale.sku[k % n_sku]))
                    check_status(self._ledger.change_holds(np.array([c], dtype=np.int64),
                                                           np.array([excess], dtype=np.int32), 1))
                    sale.pool[k] -= excess
        sale.lsn = self._lsn + 1
        heapq.heappush(self._sale_clock, (spec.starts_at, 0, sale.number))
        heapq.heappush(self._sale_clock, (spec.ends_at, 1, sale.number))
        return sale.counters(self._ledger)

    def _decide_end_sale(self, command: EndSale, now: float) -> tuple[Any, Any]:
        sale = self._sale_of(command.sale_id)
        if sale.state is SaleState.ENDED:
            raise errors.FailedPrecondition(f"flash sale {shown(command.sale_id)} has already ended", field="sale_id")
        return None, None

    def _apply_end_sale(self, command: EndSale, effect: None, now: float, request_id: str | None) -> SaleCounters:
        sale = self._sale_of(command.sale_id)
        self._finish_sale(sale)
        sale.lsn = self._lsn + 1
        return sale.counters(self._ledger)

    def _decide_end_claim(self, command: EndClaim, now: float) -> tuple[Any, Any]:
        r = self._claim_index(command.claim_id)
        if command.state not in (_CONFIRMED, _RELEASED):
            raise errors.InvalidArgument("a claim ends CONFIRMED or RELEASED", field="state")
        state = int(self._claims.state[r])
        if state != _HELD:
            raise errors.ReservationNotHeld(f"claim {command.claim_id} is {ReservationState(state).name}",
                                            field="claim_id")
        return None, None

    def _apply_end_claim(self, command: EndClaim, effect: None, now: float, request_id: str | None) -> Claim:
        r = self._claim_index(command.claim_id)
        self._end_claim(r, command.state)
        return self._claim_row(r + 1, current=True)

    def _end_claim(self, r: int, state: int) -> None:
        """Confirm, release or expire claim row ``r`` (HELD)."""
        t = self._claims
        if t.state[r] != _HELD:
            raise errors.InvariantViolation(f"claim {claim_id(r + 1)} is not HELD")
        sale = self._sale_list[int(t.sale[r])]
        pos, j, q = int(t.store[r]), int(t.sku[r]), int(t.qty[r])
        loc, sku = int(sale.loc[pos]), int(sale.sku[j])
        c = self._ledger.cell_index(loc, sku)
        if state == _CONFIRMED:
            check_status(self._ledger.change_holds(np.array([c], dtype=np.int64), np.array([q], dtype=np.int32), 2),
                         "a claim's hold does not match the ledger")
            sale.confirmed += q
        else:
            # units and quotas go back; while the sale runs with an earmark, the units return to it
            sale.store_claimed[pos] -= q
            sale.claimed -= q
            sale.cust_claimed[int(t.customer[r])] -= q
            sale.released += q
            if sale.earmarked:
                sale.pool[pos * len(sale.sku) + j] += q
            else:
                check_status(self._ledger.change_holds(np.array([c], dtype=np.int64),
                                                       np.array([q], dtype=np.int32), 1),
                             "a claim's hold does not match the ledger")
        t.state[r] = state
        sale.lsn = self._lsn + 1

    # -- the clock's part: claim expiry, sales starting and ending ---------------------------------
    def _selling_due(self, now: float) -> bool:
        return bool((self._claim_expiry and self._claim_expiry[0][0] <= now)
                    or (self._sale_clock and self._sale_clock[0][0] <= now))

    def _decide_selling_clock(self, now: float) -> tuple[bytes, tuple[tuple[str, bytes], ...], tuple[str, ...]]:
        """Due claims, sales to start (with their earmark) and to end. Pops the index heaps (stale entries go)."""
        t = self._claims
        due: list[np.ndarray] = []
        heap = self._claim_expiry
        while heap and heap[0][0] <= now:
            _, first, m = heapq.heappop(heap)
            rows = np.arange(first - 1, first - 1 + m)
            due.append(rows[(t.state[rows] == _HELD) & (t.expires[rows] <= now)] + 1)
        claims = np.concatenate(due).astype(np.int64).tobytes() if due else b""
        started: list[tuple[str, bytes]] = []
        ended: list[str] = []
        clock = self._sale_clock
        while clock and clock[0][0] <= now:
            _, kind, number = heapq.heappop(clock)
            sale = self._sale_list[number]
            spec = sale.spec
            if kind == 0 and sale.state is SaleState.SCHEDULED and spec.starts_at <= now:
                if spec.ends_at > now:
                    started.append((spec.id, self._earmark_of(sale)))
                else:
                    ended.append(spec.id)       # its whole window passed unseen
            elif kind == 1 and sale.state is SaleState.ACTIVE and spec.ends_at <= now:
                ended.append(spec.id)
            elif kind == 1 and sale.state is SaleState.SCHEDULED and spec.ends_at <= now \
                    and spec.id not in ended:
                ended.append(spec.id)
        return claims, tuple(started), tuple(ended)

    def _apply_selling_clock(self, claims: bytes, started: Iterable[tuple[str, bytes]], ended: Iterable[str]) -> None:
        for number in np.frombuffer(claims, dtype=np.int64).tolist():
            self._end_claim(number - 1, _EXPIRED)
        for sale_id, pools in started:
            sale = self._sale_of(sale_id)
            self._start_sale(sale, pools)
            sale.lsn = self._lsn + 1
        for sale_id in ended:
            sale = self._sale_of(sale_id)
            self._finish_sale(sale)
            sale.lsn = self._lsn + 1

    # -- snapshots and invariants ----------------------------------------------------------------
    def _capture_selling(self) -> dict[str, Any]:
        """Under the lock: copies of the selling side's state (plain values, codec-encodable)."""
        sales = []
        for s in self._sale_list:
            sales.append({
                "spec": s.spec, "state": int(s.state), "earmarked": s.earmarked, "lsn": s.lsn,
                "counts": (s.claimed, s.confirmed, s.released, s.n_claims),
                "store_claimed": s.store_claimed.tobytes(), "pool": s.pool.tobytes(),
                "customers": list(s.customer_names), "cust_claimed": np.array(s.cust_claimed, np.int32).tobytes(),
            })
        cols = self._claims.columns()
        return {"sales": sales, "claims": {k: v.tobytes() for k, v in cols.items()}, "n_claims": self._claims.n,
                "claim_expiry": list(self._claim_expiry), "sale_clock": list(self._sale_clock)}

    def _restore_selling(self, state: Mapping[str, Any] | None) -> None:
        self._init_selling()
        if not state:
            return
        for number, d in enumerate(state["sales"]):
            spec = d["spec"]
            loc, sku, xyz = self._sale_arrays(spec)
            sale = _Sale(spec, number, loc, sku, xyz)
            sale.state = SaleState(d["state"])
            sale.earmarked = d["earmarked"]
            sale.lsn = d["lsn"]
            sale.claimed, sale.confirmed, sale.released, sale.n_claims = d["counts"]
            sale.store_claimed = np.frombuffer(d["store_claimed"], dtype=np.int32).copy()
            sale.pool = np.frombuffer(d["pool"], dtype=np.int32).copy()
            sale.customer_names = list(d["customers"])
            sale.customers = {c: i for i, c in enumerate(sale.customer_names)}
            sale.cust_claimed = np.frombuffer(d["cust_claimed"], dtype=np.int32).tolist()
            self._sales[spec.id] = sale
            self._sale_list.append(sale)
        n = state["n_claims"]
        cols = {name: np.frombuffer(state["claims"][name], dtype=dtype)
                for name, dtype in _ClaimTable._COLUMNS if name in state["claims"]}
        self._claims = _ClaimTable(n, cols)
        self._claim_expiry = [tuple(x) for x in state["claim_expiry"]]
        heapq.heapify(self._claim_expiry)
        self._sale_clock = [tuple(x) for x in state["sale_clock"]]
        heapq.heapify(self._sale_clock)

    def _selling_holds(self) -> dict[tuple[int, int], int]:
        """Units the selling side holds per (location, SKU): HELD claims plus earmarks (for the invariants)."""
        held: dict[tuple[int, int], int] = {}
        t = self._claims
        rows = np.flatnonzero(t.state[:t.n] == _HELD)
        for r in rows.tolist():
            sale = self._sale_list[int(t.sale[r])]
            key = (int(sale.loc[t.store[r]]), int(sale.sku[t.sku[r]]))
            held[key] = held.get(key, 0) + int(t.qty[r])
        for sale in self._sale_list:
            n_sku = len(sale.sku)
            for k in np.flatnonzero(sale.pool).tolist():
                key = (int(sale.loc[k // n_sku]), int(sale.sku[k % n_sku]))
                held[key] = held.get(key, 0) + int(sale.pool[k])
        return held

    def _check_selling(self) -> None:
        """Every sale's counters against its claims; quotas and limits never passed."""
        t = self._claims
        live = (t.state[:t.n] == _HELD) | (t.state[:t.n] == _CONFIRMED)
        for sale in self._sale_list:
            mine = (t.sale[:t.n] == sale.number)
            rows = np.flatnonzero(mine & live)
            claimed = int(t.qty[rows].sum())
            if claimed != sale.claimed or claimed > sale.spec.quota:
                raise errors.InvariantViolation(f"sale {shown(sale.spec.id)}: claimed {sale.claimed}, claims add to "
                                                f"{claimed}, quota {sale.spec.quota}")
            per_store = np.bincount(t.store[rows], weights=t.qty[rows], minlength=len(sale.loc))
            if not np.array_equal(per_store.astype(np.int64), sale.store_claimed.astype(np.int64)) or \
                    (sale.store_claimed > sale.store_quota).any():
                raise errors.InvariantViolation(f"sale {shown(sale.spec.id)}: store counters do not match its claims")
            per_cust = np.bincount(t.customer[rows], weights=t.qty[rows], minlength=len(sale.cust_claimed))
            if not np.array_equal(per_cust.astype(np.int64), np.array(sale.cust_claimed, dtype=np.int64)) or \
                    (per_cust > sale.spec.customer_limit).any():
                raise errors.InvariantViolation(f"sale {shown(sale.spec.id)}: customer counters do not match its "
                                                "claims")
            if (sale.pool < 0).any() or (sale.pool.any() and not sale.earmarked):
                raise errors.InvariantViolation(f"sale {shown(sale.spec.id)}: bad earmark")
            confirmed = int(t.qty[np.flatnonzero(mine & (t.state[:t.n] == _CONFIRMED))].sum())
            if confirmed != sale.confirmed:
                raise errors.InvariantViolation(f"sale {shown(sale.spec.id)}: confirmed {sale.confirmed} != "
                                                f"{confirmed}")

    # provided by the engine
    _execute: Callable[..., Any]
    _begin_command: Callable[[type], float]
    _log: Callable[..., int]
    _wait: Callable[[int], None]
    _remember: Callable[..., None]
    _settle: Callable[..., None]
    _max_request_ids: int
    _net: Any
