"""Flash sales: global, per-store and per-customer quotas checked with the stock in one command.

A :class:`FlashSale` sells a few hundred units of some SKUs (the sizes of one
T-shirt, say) at a set of stores, each with its own quota, inside a window on
the engine's clock. A member *claims* units for pickup at a store -- named, or
the nearest participating store that can still give them -- and the claim
checks, in one command and in this order: the customer's limit, the global
quota, the store's quota and the stock. A claim that passes holds the units at
that store (``reserved`` in the ledger, so neither a walk-in sale nor another
channel can take them) until payment confirms it or its pay window runs out;
a release or an expiry gives the units back to the stock *and* to all three
quotas.

Earmarks. With ``earmark=True`` (the default) the sale *pre-occupies* stock
when it starts: at each store, for each SKU, ``min(store quota, available)``
units are held for the sale (its *pool*), so other channels stop seeing them
the moment the sale opens. A claim takes from the pool first and from the
store's free stock after; a store whose quota is used up gives its pool back
at once, and so does the whole sale when its global quota is reached or it
ends. A unit released while the sale runs goes back to the pool. With several
SKUs each SKU is earmarked up to the store's quota (the sizes a customer will
want are not known in advance); the surplus returns as quotas fill up.

This module holds the public values (:class:`FlashSale`, :class:`Claim`,
:class:`SaleCounters`, :class:`ClaimResults`), the sale's internal state and
the plain-Python claim pass -- the reference the compiled one
(``pyomni._core.claim_batch``) is tested against, and the one
``set_config(native=False)`` runs. The engine's commands live in
:mod:`pyomni.selling`.

Examples
--------
>>> import pyomni
>>> net = pyomni.demo_network(stores=8, warehouses=0, skus=3, seed=1)
>>> eng = pyomni.Engine(net, clock=lambda: 1000.0)
>>> stores = net.ids[:2]
>>> _ = [eng.set_stock(s, "SKU-000000", 5) for s in stores]
>>> sale = pyomni.FlashSale("tee-168", ("SKU-000000",), starts_at=0.0, ends_at=2000.0, quota=3,
...                         stores=((stores[0], 2), (stores[1], 2)), customer_limit=1)
>>> eng.create_sale(sale).state.name
'ACTIVE'
>>> c = eng.claim("tee-168", "member-1", "SKU-000000", store=stores[0])
>>> c.store == stores[0], c.qty, c.expires_at
(True, 1, 1900.0)
>>> eng.sale_counters("tee-168").remaining
2
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import errors, validate
from .model import MAX_QTY, ReservationState

__all__ = [
    "FlashSale", "SaleState", "Claim", "StoreCounters", "SaleCounters", "ClaimResults",
    "CLAIM_OK", "CLAIM_ERRORS",
]

EARTH_RADIUS_KM = 6371.0088

# Per-claim outcome codes of a batch. The first ones are the native status codes (core/status.pxd) the
# claim pass itself returns; the rest are input checks made before it.
CLAIM_OK = 0
_ST_INVALID_QUANTITY = 1
_ST_INSUFFICIENT_STOCK = 2
_ST_UNKNOWN_LOCATION = 5
_ST_UNKNOWN_SKU = 6
_ST_INVARIANT = 8
_ST_SOLD_OUT = 9
_ST_STORE_QUOTA = 10
_ST_CUSTOMER_LIMIT = 11
_ST_REQUEST_ID_REUSED = 100
_ST_INVALID_COORDINATES = 101
_ST_INVALID_ARGUMENT = 102
#: outcome code -> the error a unary claim raises for it
CLAIM_ERRORS: dict[int, type[errors.PyomniError]] = {
    _ST_INVALID_QUANTITY: errors.InvalidQuantity,
    _ST_INSUFFICIENT_STOCK: errors.InsufficientStock,
    _ST_UNKNOWN_LOCATION: errors.UnknownLocation,
    _ST_UNKNOWN_SKU: errors.UnknownSku,
    _ST_INVARIANT: errors.InvariantViolation,
    _ST_SOLD_OUT: errors.SoldOut,
    _ST_STORE_QUOTA: errors.StoreQuotaExhausted,
    _ST_CUSTOMER_LIMIT: errors.CustomerLimitReached,
    _ST_REQUEST_ID_REUSED: errors.RequestIdReused,
    _ST_INVALID_COORDINATES: errors.InvalidCoordinates,
    _ST_INVALID_ARGUMENT: errors.InvalidArgument,
}
_MESSAGES = {
    _ST_INVALID_QUANTITY: ("qty", "qty must be an int in 1..{max}"),
    _ST_INSUFFICIENT_STOCK: ("store", "the store has too few units left for the claim"),
    _ST_UNKNOWN_LOCATION: ("store", "the store does not take part in the sale"),
    _ST_UNKNOWN_SKU: ("sku", "the SKU is not in the sale"),
    _ST_INVARIANT: (None, "the claim does not apply to the state (a bug)"),
    _ST_SOLD_OUT: (None, "the sale is sold out"),
    _ST_STORE_QUOTA: ("store", "the store's share of the sale is used up"),
    _ST_CUSTOMER_LIMIT: ("customer", "the customer has reached the sale's limit"),
    _ST_REQUEST_ID_REUSED: ("request_id", "the request id was used for a different claim"),
    _ST_INVALID_COORDINATES: ("near", "near must be a (lat, lon) pair in degrees"),
    _ST_INVALID_ARGUMENT: ("customer", "customer must be a non-empty string"),
}


def claim_error(code: int, index: int | None = None) -> errors.PyomniError:
    """The typed error for a refused claim's outcome code."""
    field_name, message = _MESSAGES[code]
    where = f"claims[{index}]." if index is not None and field_name else ""
    return CLAIM_ERRORS[code](message.format(max=MAX_QTY),
                              field=(where + field_name) if field_name else None)


class SaleState(enum.IntEnum):
    """Where a sale is in its window, on the engine's clock."""

    SCHEDULED = 1   #: created, not started: claims are refused, nothing earmarked
    ACTIVE = 2      #: taking claims
    ENDED = 3       #: over (its window passed or it was ended); held claims can still be paid


def _finite(value: Any, name: str) -> float:
    return validate.number(value, name)


def _count(value: Any, name: str, low: int) -> int:
    value = validate.integer(value, name)
    if not low <= value <= MAX_QTY:
        raise errors.InvalidQuantity(f"{name} must be in {low}..{MAX_QTY}, got {validate.shown(value)}", field=name)
    return value


#: Most characters of a sale's id and of a customer's (claims).
MAX_SALE_ID_CHARS = 128
MAX_TITLE_CHARS = 1024


@dataclass(frozen=True, slots=True)
class FlashSale:
    """A flash sale's definition: what, when, how many, where and for whom.

    Parameters
    ----------
    id : str
        The sale's id (unique in the engine).
    skus : tuple of str
        The SKUs on sale; they share the quotas.
    starts_at, ends_at : float
        The window, in engine-clock seconds: claims are taken for ``starts_at <= now < ends_at``.
    quota : int
        Units the whole sale may sell (held plus paid).
    stores : tuple of (location id, quota)
        The pickup stores taking part, each with its own quota (their sum may exceed ``quota``).
    customer_limit : int
        Units one customer may hold or buy (default 1).
    pay_window : float
        Seconds a claim is held for payment before it expires (default 15 minutes).
    earmark : bool
        Pre-occupy each store's quota of stock while the sale runs (see the module's text).
    max_km : float
        Choosing the nearest store from a point: only stores this close (0 = any distance).
    title : str
        Free text for people.

    Examples
    --------
    >>> FlashSale("s1", ("SKU-1",), 0.0, 60.0, 100, (("SH-01", 60), ("SH-02", 60))).customer_limit
    1
    """

    id: str
    skus: tuple[str, ...]
    starts_at: float
    ends_at: float
    quota: int
    stores: tuple[tuple[str, int], ...]
    customer_limit: int = 1
    pay_window: float = 900.0
    earmark: bool = True
    max_km: float = 0.0
    title: str = ""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "id", validate.identifier(self.id, "id", max_chars=MAX_SALE_ID_CHARS))
        if not isinstance(self.skus, (list, tuple)):
            raise errors.InvalidArgument(f"skus must be a list of SKU ids, got {validate.shown(self.skus)}",
                                         field="skus")
        skus = validate.identifiers(self.skus, "skus")
        if not skus or len(set(skus)) != len(skus):
            raise errors.InvalidArgument("skus must be distinct SKU ids, at least one", field="skus")
        set_(self, "skus", skus)
        start, end = _finite(self.starts_at, "starts_at"), _finite(self.ends_at, "ends_at")
        if end <= start:
            raise errors.InvalidArgument("ends_at must be after starts_at", field="ends_at")
        set_(self, "starts_at", start)
        set_(self, "ends_at", end)
        set_(self, "quota", _count(self.quota, "quota", 1))
        raw = self.stores.items() if isinstance(self.stores, Mapping) else self.stores
        if not isinstance(raw, (list, tuple, type({}.items()))):
            raise errors.InvalidArgument(f"stores must be (location id, quota) pairs, got {validate.shown(raw)}",
                                         field="stores")
        stores = []
        for i, pair in enumerate(raw):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise errors.InvalidArgument(f"stores must be (location id, quota) pairs, got {validate.shown(pair)}",
                                             field=f"stores[{i}]")
            stores.append((validate.identifier(pair[0], f"stores[{i}]"), _count(pair[1], f"stores[{i}].quota", 0)))
        if not stores or len({s for s, _ in stores}) != len(stores):
            raise errors.InvalidArgument("stores must name distinct locations, at least one", field="stores")
        set_(self, "stores", tuple(stores))
        set_(self, "customer_limit", _count(self.customer_limit, "customer_limit", 1))
        set_(self, "pay_window", validate.number(self.pay_window, "pay_window", low=0.0, low_open=True))
        set_(self, "earmark", validate.flag(self.earmark, "earmark"))
        set_(self, "max_km", validate.number(self.max_km, "max_km", low=0.0))
        set_(self, "title", validate.text(self.title, "title", max_chars=MAX_TITLE_CHARS))


@dataclass(frozen=True, slots=True)
class Claim:
    """Units held (or bought) in a flash sale, as seen from outside.

    ``expires_at`` is the pay deadline: unpaid by then, the claim expires and
    its units return to the stock and the quotas.
    """

    id: str
    sale_id: str
    customer: str
    sku: str
    store: str
    qty: int
    state: ReservationState
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class StoreCounters:
    """One store's side of a sale: its quota, what it gave, and what it can still give."""

    store: str
    quota: int
    claimed: int          #: units held or bought here
    remaining: int        #: quota - claimed
    available: int        #: units it can still give now: min(remaining, earmarked + free stock, over the SKUs)


@dataclass(frozen=True, slots=True)
class SaleCounters:
    """A sale's live counters ("N left"), consistent as of journal record ``lsn``."""

    sale_id: str
    state: SaleState
    quota: int
    claimed: int          #: units held or bought (HELD + CONFIRMED)
    confirmed: int        #: units paid for
    released: int         #: units given back (released or expired claims), in all
    remaining: int        #: what the app shows: min(quota - claimed, what the stores can still give)
    claims: int           #: claims ever accepted
    stores: tuple[StoreCounters, ...] = field(default=())
    lsn: int = 0


class ClaimResults:
    """The outcome of a batch of claims, column by column (one row per claim, in order).

    ``status`` is 0 (:data:`CLAIM_OK`) or the code of the refusal (see
    :data:`CLAIM_ERRORS`); ``claim`` is the claim's number (``C{n:010d}``) or
    -1; ``store`` the location index it is held at or -1; ``created_at`` when it was
    made and ``expires_at`` its pay deadline (NaN when refused). :meth:`get` turns one
    row into a :class:`Claim` or its error.
    """

    __slots__ = ("sale_id", "status", "claim", "store", "created_at", "expires_at", "lsn", "_loc_ids", "_rows")

    def __init__(self, sale_id: str, status: np.ndarray, claim: np.ndarray, store: np.ndarray,
                 created_at: np.ndarray, expires_at: np.ndarray, loc_ids: tuple[str, ...], rows: Any) -> None:
        self.sale_id = sale_id
        self.status = status
        self.claim = claim
        self.store = store
        self.created_at = created_at
        self.expires_at = expires_at
        self.lsn = 0                # the journal record the batch must see durable before it is answered
        self._loc_ids = loc_ids
        self._rows = rows           # builds a Claim from its number

    def __len__(self) -> int:
        return len(self.status)

    @property
    def accepted(self) -> int:
        """How many claims succeeded."""
        return int(np.count_nonzero(self.status == CLAIM_OK))

    def loc_ids_of(self, locs: np.ndarray) -> list[str]:
        """Location ids of location indices."""
        ids = self._loc_ids
        return [ids[x] for x in locs.tolist()]

    def store_id(self, i: int) -> str | None:
        loc = int(self.store[i])
        return self._loc_ids[loc] if loc >= 0 else None

    def get(self, i: int) -> Claim | errors.PyomniError:
        """Row ``i`` as a :class:`Claim`, or the typed error it was refused with."""
        code = int(self.status[i])
        if code != CLAIM_OK:
            return claim_error(code, i)
        return self._rows(int(self.claim[i]))

    def __iter__(self):
        return (self.get(i) for i in range(len(self)))


def claim_id(number: int) -> str:
    """The id of claim number ``number``."""
    return f"C{number:010d}"


def claim_number(claim: Any, field: str = "claim_id") -> int:
    """The number in a claim id; raises :class:`~pyomni.errors.UnknownClaim` if it is not one."""
    if isinstance(claim, str) and len(claim) == 11 and claim[0] == "C" and claim[1:].isdigit():
        return int(claim[1:])
    raise errors.UnknownClaim(f"no claim {validate.shown(claim)}", field=field)


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """``(n, 3)`` unit vectors of points in degrees (nearest = largest dot product)."""
    la, lo = np.radians(lat), np.radians(lon)
    c = np.cos(la)
    return np.ascontiguousarray(np.stack([c * np.cos(lo), c * np.sin(lo), np.sin(la)], axis=-1), dtype=np.float64)


def min_dot(max_km: float) -> float:
    """The smallest dot product of two unit vectors at most ``max_km`` apart (-2: no limit)."""
    if max_km <= 0 or max_km >= math.pi * EARTH_RADIUS_KM:
        return -2.0
    return math.cos(max_km / EARTH_RADIUS_KM)


class _Sale:
    """A sale's state as the engine keeps it (internal; changed only by the selling side's appliers).

    Stores and SKUs are addressed by their position in the definition (a store added by an update is
    appended, so positions never move). ``pool`` is ``n_stores x n_skus``, flat: units earmarked.
    """

    __slots__ = ("spec", "number", "loc", "sku", "store_pos", "sku_pos", "store_quota", "store_claimed", "pool",
                 "xyz", "claimed", "confirmed", "released", "n_claims", "customers", "customer_names",
                 "cust_claimed", "state", "earmarked", "lsn")

    def __init__(self, spec: FlashSale, number: int, loc: np.ndarray, sku: np.ndarray, xyz: np.ndarray) -> None:
        self.spec = spec
        self.number = number                      # index in the engine's list of sales
        self.loc = np.ascontiguousarray(loc, dtype=np.int32)
        self.sku = np.ascontiguousarray(sku, dtype=np.int32)
        self.store_pos = {int(x): i for i, x in enumerate(self.loc)}
        self.sku_pos = {s: j for j, s in enumerate(spec.skus)}
        self.store_quota = np.array([q for _, q in spec.stores], dtype=np.int32)
        self.store_claimed = np.zeros(len(self.loc), dtype=np.int32)
        self.pool = np.zeros(len(self.loc) * len(self.sku), dtype=np.int32)
        self.xyz = np.ascontiguousarray(xyz, dtype=np.float64).reshape(-1)
        self.claimed = 0
        self.confirmed = 0
        self.released = 0
        self.n_claims = 0
        self.customers: dict[str, int] = {}       # customer -> slot
        self.customer_names: list[str] = []
        self.cust_claimed: list[int] = []         # per slot: units held or bought
        self.state = SaleState.SCHEDULED
        self.earmarked = False
        self.lsn = 0                              # last record that changed it

    def customer_slots(self, customers: list[str]) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Per claim, a slot in a scratch array of the batch's distinct customers; those customers; their
        current counts. Changes nothing."""
        local: dict[str, int] = {}
        slot = np.fromiter((local.setdefault(c, len(local)) for c in customers), dtype=np.int32,
                           count=len(customers))
        names = list(local)
        known, counts = self.customers, self.cust_claimed
        base = np.fromiter((counts[k] if (k := known.get(c, -1)) >= 0 else 0 for c in names), dtype=np.int32,
                           count=len(names))
        return slot, names, base

    def store_customers(self, names: list[str], counts: np.ndarray) -> np.ndarray:
        """Write a batch's customer counts back; returns each name's permanent slot."""
        slots = np.empty(len(names), dtype=np.int32)
        known, claimed, all_names = self.customers, self.cust_claimed, self.customer_names
        for i, (c, n) in enumerate(zip(names, counts.tolist())):
            k = known.get(c)
            if k is None:
                k = known[c] = len(claimed)
                claimed.append(n)
                all_names.append(c)
            else:
                claimed[k] = n
            slots[i] = k
        return slots

    def store_available(self, ledger: Any) -> np.ndarray:
        """Per store: units it could give now (earmarked plus free), summed over the SKUs."""
        n_sku = len(self.sku)
        out = self.pool.reshape(-1, n_sku).sum(axis=1).astype(np.int64)
        for i, loc in enumerate(self.loc.tolist()):
            for s in self.sku.tolist():
                cell = ledger.cell(loc, s)
                if cell is not None:
                    out[i] += max(0, cell[0] - cell[1] - cell[2])
        return out

    def counters(self, ledger: Any) -> SaleCounters:
        store_left = np.maximum(self.store_quota.astype(np.int64) - self.store_claimed, 0)
        can_give = np.minimum(store_left, self.store_available(ledger))
        remaining = 0 if self.state is not SaleState.ACTIVE else int(min(self.spec.quota - self.claimed,
                                                                         int(can_give.sum())))
        stores = tuple(StoreCounters(name, int(q), int(c), int(left), int(g)) for (name, _), q, c, left, g in
                       zip(self.spec.stores, self.store_quota, self.store_claimed, store_left, can_give))
        return SaleCounters(self.spec.id, self.state, self.spec.quota, self.claimed, self.confirmed, self.released,
                            max(remaining, 0), self.n_claims, stores, self.lsn)


# -- the plain-Python claim pass (the reference of pyomni._core.claim_batch) -------------------------
def _free(ledger: Any, loc: int, sku: int) -> int:
    cell = ledger.cell(loc, sku)
    return 0 if cell is None else max(0, cell[0] - cell[1] - cell[2])


def _change(ledger: Any, loc: int, sku: int, qty: int, op: int) -> int:
    c = ledger.cell_index(loc, sku)
    if c < 0:
        return _ST_INVARIANT
    return ledger.change_holds(np.array([c], dtype=np.int64), np.array([qty], dtype=np.int32), op)


def claim_pass(ledger: Any, apply: bool, earmarked: bool, store_loc: np.ndarray, sku_idx: np.ndarray,
               store_quota: np.ndarray, store_claimed: np.ndarray, pool: np.ndarray, store_xyz: np.ndarray,
               limit_dot: float, quota: int, claimed: int, customer_limit: int, cust: np.ndarray,
               c_cust: np.ndarray, c_sku: np.ndarray, c_store: np.ndarray, c_xyz: np.ndarray, c_qty: np.ndarray,
               out_status: np.ndarray, out_store: np.ndarray) -> tuple[int, int]:
    """Decide (``apply=False``: nothing changes, ``store_claimed``/``pool``/``cust`` are left as they are) or
    apply (``apply=True``: the claims were decided against this very state, ``c_store`` holds the stores
    chosen) a batch of claims; returns ``(status, claimed after)``.

    Mirrors ``claim_batch`` in ``core/flash.pyx`` line by line; ``tests/test_flash.py`` holds them together.
    """
    n_st, n_sku = len(store_loc), len(sku_idx)
    if not apply:
        store_claimed, pool, cust = store_claimed.copy(), pool.copy(), cust.copy()
    free: dict[int, int] = {}                   # decide mode: the ledger's free units as this pass changed them

    def avail(k: int) -> int:
        if k not in free:
            free[k] = _free(ledger, int(store_loc[k // n_sku]), int(sku_idx[k % n_sku]))
        return free[k]

    def give_back(k: int) -> int:
        if pool[k]:
            if apply:
                st = _change(ledger, int(store_loc[k // n_sku]), int(sku_idx[k % n_sku]), int(pool[k]), 1)
                if st:
                    return st
            else:
                free[k] = avail(k) + int(pool[k])
            pool[k] = 0
        return 0

    for i in range(len(c_qty)):
        q, j, slot = int(c_qty[i]), int(c_sku[i]), int(c_cust[i])
        s = int(c_store[i])
        code = 0
        if cust[slot] + q > customer_limit:
            code = _ST_CUSTOMER_LIMIT
        elif claimed + q > quota:
            code = _ST_SOLD_OUT
        elif not apply and s < 0:               # the nearest store in reach that can give all q units
            best, best_dot, quota_ok, in_reach = -1, -3.0, False, False
            for t in range(n_st):
                d = float(c_xyz[3 * i] * store_xyz[3 * t] + c_xyz[3 * i + 1] * store_xyz[3 * t + 1]
                          + c_xyz[3 * i + 2] * store_xyz[3 * t + 2])
                if d < limit_dot:
                    continue
                in_reach = True
                if store_claimed[t] + q > store_quota[t]:
                    continue
                quota_ok = True
                if pool[t * n_sku + j] + avail(t * n_sku + j) >= q and d > best_dot:
                    best, best_dot = t, d
            s = best
            if s < 0:
                # every store in reach used its quota up; or none in reach, or none with the units
                code = _ST_STORE_QUOTA if in_reach and not quota_ok else _ST_INSUFFICIENT_STOCK
        elif store_claimed[s] + q > store_quota[s]:
            code = _ST_STORE_QUOTA
        elif not apply and pool[s * n_sku + j] + avail(s * n_sku + j) < q:
            code = _ST_INSUFFICIENT_STOCK
        if code:
            if apply:
                return _ST_INVARIANT, claimed
            out_status[i], out_store[i] = code, -1
            continue
        k = s * n_sku + j
        take = min(int(pool[k]), q)
        pool[k] -= take
        if q > take:
            if apply:
                st = _change(ledger, int(store_loc[s]), int(sku_idx[j]), q - take, 0)
                if st:
                    return st, claimed
            else:
                free[k] = avail(k) - (q - take)
        store_claimed[s] += q
        claimed += q
        cust[slot] += q
        out_status[i], out_store[i] = 0, s
        if earmarked:                           # a store or a sale that is full gives its earmark back
            if store_claimed[s] >= store_quota[s]:
                for jj in range(n_sku):
                    if st := give_back(s * n_sku + jj):
                        return st, claimed
            if claimed >= quota:
                for kk in range(n_st * n_sku):
                    if st := give_back(kk):
                        return st, claimed
    return 0, claimed
