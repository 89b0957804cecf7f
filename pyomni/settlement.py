"""Revenue attribution and settlement: who is owed what for each fulfilled line, in integer cents.

The picture. An omnichannel sale involves up to four parties: the *selling* party
(the store that took the order, or ``"channel:<name>"`` for an online channel run by
HQ), the *fulfilling* store that shipped the parcel, the customer's *home* store,
and ``"HQ"``. The engine records what happened as a *facts* table
(:data:`FACTS_SCHEMA`: one row per shipped order line, ``kind="sale"``, and one per
return, ``kind="return"``), each sale stamped with the key of the
:class:`AttributionRule` in force. This module turns facts into money, and
nothing else: it is pure (no engine, no clock, no I/O but :func:`write_settlement`)
and vectorised with NumPy (one pass per entry slot, never one per row).

* :func:`settle` -- facts -> settlement entries (:data:`ENTRIES_SCHEMA`): for each
  sale, its revenue split among the four roles by the rule's basis points, the
  parcel fee paid by HQ to the fulfilling store, and the coupon's cost shared among
  its bearers; for each return, every entry of its sale reversed in proportion to
  the units returned, exactly (all units back = every entry back to zero).
* :func:`daily` -- entries -> per (day, party) totals (:data:`DAILY_SCHEMA`).
* :func:`write_settlement` -- either table as Parquet, atomically.
* :func:`split_cents` / :func:`split_cents_array` -- the one rounding rule used for
  every split (largest remainder, ties to the earlier weight); the engine uses it to
  spread an order's coupon over its lines and a parcel's fee over its lines.

Money is ``int64`` cents throughout, never floats, so every split sums exactly.

Examples
--------
>>> import datetime
>>> import pyarrow as pa
>>> from pyomni import settlement as st
>>> row = dict(fact=1, kind="sale", day=datetime.date(2024, 11, 11), at=0.0, order_id="o-1",
...            shipment_id="o-1/1", line=0, sku="SKU-1", qty=1, gross_cents=999, coupon_cents=0,
...            fee_cents=0, channel="tmall", selling_store="", fulfilling_store="SH-0002",
...            home_store="SH-0001", franchise=False, rule="split-361@1", sale_fact=-1,
...            receiving_store="")
>>> facts = pa.Table.from_pylist([row], schema=st.FACTS_SCHEMA)
>>> entries = st.settle(facts, {st.SPLIT_361.key: st.SPLIT_361})
>>> list(zip(entries["party"].to_pylist(), entries["amount_cents"].to_pylist()))
[('channel:tmall', 300), ('SH-0002', 599), ('SH-0001', 100)]
>>> st.daily(entries).select(["party", "net_cents", "sales"]).to_pylist()[0]
{'party': 'SH-0001', 'net_cents': 100, 'sales': 1}
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import errors, validate
from .validate import MAX_QTY, shown

__all__ = [
    "AttributionRule", "FULFILLER_TAKES_ALL", "SPLIT_361", "REGIONAL", "HQ", "CHANNEL_PREFIX", "HOME_CHOICES",
    "ENTRY_KINDS", "FACT_KINDS", "FACTS_SCHEMA", "ENTRIES_SCHEMA", "DAILY_SCHEMA", "BP_WHOLE", "MAX_FEE_CENTS",
    "MAX_GROSS_CENTS",
    "split_cents", "split_cents_array", "settle", "daily", "write_settlement",
]

Int64Array = npt.NDArray[np.int64]

#: The party name of headquarters.
HQ = "HQ"
#: Prefix of the party name of an online channel run by HQ (``"channel:tmall"``).
CHANNEL_PREFIX = "channel:"
#: 100 % in basis points.
BP_WHOLE = 10_000
#: Largest fixed fulfilment fee per parcel a rule may set (ten million yuan).
MAX_FEE_CENTS = 10**9
#: How a rule picks the customer's home store: the store nearest the delivery address, or the store named
#: for the destination's province in ``regional_stores``.
HOME_CHOICES = ("nearest", "region")
#: The ``kind`` of a fact.
FACT_KINDS = ("sale", "return")
#: The ``entry`` of a settlement entry.
ENTRY_KINDS = ("revenue", "fee", "coupon")

_INT64_MAX = 2**63 - 1
_MAX_NAME_CHARS = 128
_MAX_VERSION = 2**31 - 1
_MAX_PROVINCE = 2**31 - 1
#: Largest ``gross_cents`` or ``coupon_cents`` of one fact (times 10000 basis points it must fit in int64):
#: about 9.2 * 10**14 cents. An engine should refuse larger orders when it takes them.
MAX_GROSS_CENTS = _INT64_MAX // BP_WHOLE

#: The facts table the engine produces: one row per fulfilled shipment line (``kind="sale"``) or per
#: return (``kind="return"``). ``fact`` ids are unique and increase in the order things happened.
FACTS_SCHEMA = pa.schema([
    pa.field("fact", pa.int64(), nullable=False),              # unique id, increasing with time
    pa.field("kind", pa.string(), nullable=False),             # "sale" or "return"
    pa.field("day", pa.date32(), nullable=False),              # business day the fact is booked on
    pa.field("at", pa.float64(), nullable=False),              # engine time, seconds since the epoch
    pa.field("order_id", pa.string(), nullable=False),
    pa.field("shipment_id", pa.string(), nullable=False),
    pa.field("line", pa.int32(), nullable=False),              # line index in the order
    pa.field("sku", pa.string(), nullable=False),
    pa.field("qty", pa.int64(), nullable=False),               # > 0: units shipped, or units returned
    pa.field("gross_cents", pa.int64(), nullable=False),       # sale: unit price x qty; return: 0
    pa.field("coupon_cents", pa.int64(), nullable=False),      # sale: coupon discount carried (>= 0); return: 0
    pa.field("fee_cents", pa.int64(), nullable=False),         # sale: this line's part of its parcel's fee; return: 0
    pa.field("channel", pa.string(), nullable=False),
    pa.field("selling_store", pa.string(), nullable=False),    # "" if sold by an online channel
    pa.field("fulfilling_store", pa.string(), nullable=False),
    pa.field("home_store", pa.string(), nullable=False),
    pa.field("franchise", pa.bool_(), nullable=False),         # the fulfilling store is a franchise
    pa.field("rule", pa.string(), nullable=False),             # AttributionRule.key
    pa.field("sale_fact", pa.int64(), nullable=False),         # return: the sale's fact id; sale: -1
    pa.field("receiving_store", pa.string(), nullable=False),  # return: where it was handed back; sale: ""
])

#: The settlement entries :func:`settle` returns, ordered by ``fact`` and, within a fact, by entry slot
#: (revenue: selling, fulfilling, home, HQ; fee: fulfilling, HQ; coupon: HQ, selling, fulfilling, home).
ENTRIES_SCHEMA = pa.schema([
    pa.field("day", pa.date32(), nullable=False),
    pa.field("party", pa.string(), nullable=False),
    pa.field("order_id", pa.string(), nullable=False),
    pa.field("shipment_id", pa.string(), nullable=False),
    pa.field("line", pa.int32(), nullable=False),
    pa.field("fact", pa.int64(), nullable=False),              # the sale's, or the return's for a reversal
    pa.field("entry", pa.string(), nullable=False),            # one of ENTRY_KINDS
    pa.field("amount_cents", pa.int64(), nullable=False),      # never 0
    pa.field("is_return", pa.bool_(), nullable=False),
])

#: The per (day, party) totals :func:`daily` returns, sorted by day then party.
#: ``revenue_cents + fee_cents + coupon_cents + returns_cents == net_cents``.
DAILY_SCHEMA = pa.schema([
    pa.field("day", pa.date32(), nullable=False),
    pa.field("party", pa.string(), nullable=False),
    pa.field("revenue_cents", pa.int64(), nullable=False),     # revenue entries of sales
    pa.field("fee_cents", pa.int64(), nullable=False),         # fee entries of sales
    pa.field("coupon_cents", pa.int64(), nullable=False),      # coupon entries of sales
    pa.field("returns_cents", pa.int64(), nullable=False),     # every reversal booked by returns
    pa.field("net_cents", pa.int64(), nullable=False),         # all entries
    pa.field("sales", pa.int64(), nullable=False),             # distinct sale facts with an entry for the party
])

# The entry slots of one sale, in output order: (entry kind, role). Returns reverse the same slots.
_ROLES = ("selling", "fulfilling", "home", "hq")
_SLOTS = (
    ("revenue", "selling"), ("revenue", "fulfilling"), ("revenue", "home"), ("revenue", "hq"),
    ("fee", "fulfilling"), ("fee", "hq"),
    ("coupon", "hq"), ("coupon", "selling"), ("coupon", "fulfilling"), ("coupon", "home"),
)
_SLOT_ROLE = np.array([_ROLES.index(role) for _, role in _SLOTS], dtype=np.intp)
_SLOT_ENTRY = pa.array([kind for kind, _ in _SLOTS], pa.string())
# the facts column that names each role's party (the selling party falls back to its channel)
_ROLE_FIELD = {"selling": "channel", "fulfilling": "fulfilling_store", "home": "home_store"}


# -- the rule ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AttributionRule:
    """How a fulfilled line's revenue, fee and coupon cost are attributed among the parties.

    A rule is chosen per order by the engine and recorded (its ``key``) on every
    fact; :func:`settle` applies it. Shares are integer basis points (10000 = 100 %).

    Parameters
    ----------
    name, version : str, int
        Identify the rule; ``key`` is ``"name@version"`` (the name may not contain ``"@"``).
    selling_bp, fulfilling_bp, home_bp, hq_bp : int
        Shares of the line's gross revenue credited to the selling party, the fulfilling
        store, the customer's home store and HQ; each 0..10000, together exactly 10000.
    fee_cents : int
        Fixed fulfilment fee per parcel (0..``MAX_FEE_CENTS``), paid by HQ to the
        fulfilling store.
    coupon_hq_bp, coupon_selling_bp, coupon_fulfilling_bp, coupon_home_bp : int
        Shares of a coupon's cost borne by HQ, the selling party, the fulfilling store
        and the home store; together exactly 10000.
    franchise_coupon_hq_bp, franchise_coupon_selling_bp, franchise_coupon_fulfilling_bp, franchise_coupon_home_bp \
        : int or None
        The coupon shares used instead when the fulfilling store is a franchise. All
        ``None`` (the default): the same as the direct ones. Once any is given, those
        left ``None`` are 0 and the four must sum to 10000.
    home : {"nearest", "region"}
        How the engine picks the home store: nearest to the delivery address, or the
        store named for the destination's province in ``regional_stores``.
    regional_stores : mapping of int to str, or tuple of (int, str) pairs
        Province code -> store id; kept as a tuple of pairs sorted by code, so the
        rule is hashable and compares by value.

    Raises
    ------
    pyomni.errors.InvalidArgument
        A bad field, named by ``field``. A sum that is not 10000 names the HQ share
        of its group (``hq_bp``, ``coupon_hq_bp``, ``franchise_coupon_hq_bp``): HQ's
        share is the one that balances the others. A province given twice is
        :class:`~pyomni.errors.DuplicateId`.

    Examples
    --------
    >>> rule = AttributionRule("split", selling_bp=3000, fulfilling_bp=6000, home_bp=1000, fee_cents=500)
    >>> rule.key, rule.revenue_bp, rule.coupon_bp
    ('split@1', (3000, 6000, 1000, 0), (10000, 0, 0, 0))
    >>> AttributionRule("r", home="region", regional_stores={44: "GZ-01", 31: "SH-01"}).regional_stores
    ((31, 'SH-01'), (44, 'GZ-01'))
    >>> AttributionRule("f", franchise_coupon_hq_bp=5000, franchise_coupon_fulfilling_bp=5000).franchise_coupon_bp
    (5000, 0, 5000, 0)
    """

    name: str
    version: int = 1
    selling_bp: int = 0
    fulfilling_bp: int = BP_WHOLE
    home_bp: int = 0
    hq_bp: int = 0
    fee_cents: int = 0
    coupon_hq_bp: int = BP_WHOLE
    coupon_selling_bp: int = 0
    coupon_fulfilling_bp: int = 0
    coupon_home_bp: int = 0
    franchise_coupon_hq_bp: int | None = None
    franchise_coupon_selling_bp: int | None = None
    franchise_coupon_fulfilling_bp: int | None = None
    franchise_coupon_home_bp: int | None = None
    home: str = "nearest"
    regional_stores: tuple[tuple[int, str], ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        name = validate.identifier(self.name, "name", max_chars=_MAX_NAME_CHARS)
        if "@" in name:
            raise errors.InvalidArgument(f"rule name must not contain '@', got {shown(name)}", field="name")
        set_(self, "name", name)
        set_(self, "version", validate.integer(self.version, "version", low=1, high=_MAX_VERSION))
        for group in (_REVENUE_FIELDS, _COUPON_FIELDS):
            for f in group:
                set_(self, f, validate.integer(getattr(self, f), f, low=0, high=BP_WHOLE))
            _check_whole(self, group)
        given = [getattr(self, f) is not None for f in _FRANCHISE_FIELDS]
        if any(given):
            for f in _FRANCHISE_FIELDS:
                value = getattr(self, f)
                set_(self, f, 0 if value is None else validate.integer(value, f, low=0, high=BP_WHOLE))
            _check_whole(self, _FRANCHISE_FIELDS)
        set_(self, "fee_cents", validate.integer(self.fee_cents, "fee_cents", low=0, high=MAX_FEE_CENTS))
        set_(self, "home", validate.choice(self.home, "home", HOME_CHOICES))
        set_(self, "regional_stores", _regional_stores(self.regional_stores))

    @property
    def key(self) -> str:
        """Registry key, ``"name@version"`` (what the facts' ``rule`` column holds)."""
        return f"{self.name}@{self.version}"

    @property
    def revenue_bp(self) -> tuple[int, int, int, int]:
        """Revenue shares of (selling, fulfilling, home, HQ), in basis points."""
        return (self.selling_bp, self.fulfilling_bp, self.home_bp, self.hq_bp)

    @property
    def coupon_bp(self) -> tuple[int, int, int, int]:
        """Coupon cost shares of (HQ, selling, fulfilling, home) when the fulfilling store is direct."""
        return (self.coupon_hq_bp, self.coupon_selling_bp, self.coupon_fulfilling_bp, self.coupon_home_bp)

    @property
    def franchise_coupon_bp(self) -> tuple[int, int, int, int]:
        """Coupon cost shares of (HQ, selling, fulfilling, home) when the fulfilling store is a franchise."""
        if self.franchise_coupon_hq_bp is None:
            return self.coupon_bp
        return (self.franchise_coupon_hq_bp, self.franchise_coupon_selling_bp or 0,
                self.franchise_coupon_fulfilling_bp or 0, self.franchise_coupon_home_bp or 0)

    def regional_store(self, province: int) -> str | None:
        """The store named for ``province`` in ``regional_stores``, or None.

        >>> rule = AttributionRule("r", home="region", regional_stores={31: "SH-0001"})
        >>> rule.regional_store(31), rule.regional_store(44)
        ('SH-0001', None)
        """
        for code, store in self.regional_stores:
            if code == province:
                return store
        return None

    def as_dict(self) -> dict[str, object]:
        """The rule's fields (``regional_stores`` as its tuple of pairs): ``AttributionRule(**d)`` rebuilds it.

        >>> AttributionRule(**SPLIT_361.as_dict()) == SPLIT_361
        True
        """
        return {f.name: getattr(self, f.name) for f in fields(self)}


_REVENUE_FIELDS = ("selling_bp", "fulfilling_bp", "home_bp", "hq_bp")
_COUPON_FIELDS = ("coupon_hq_bp", "coupon_selling_bp", "coupon_fulfilling_bp", "coupon_home_bp")
_FRANCHISE_FIELDS = tuple(f"franchise_{f}" for f in _COUPON_FIELDS)


def _check_whole(rule: AttributionRule, group: tuple[str, ...]) -> None:
    values = [getattr(rule, f) for f in group]
    if sum(values) != BP_WHOLE:
        balancing = next(f for f in group if "hq" in f)
        raise errors.InvalidArgument(f"{' + '.join(group)} must be {BP_WHOLE} basis points, got "
                                     f"{' + '.join(map(str, values))} = {sum(values)}", field=balancing)


def _regional_stores(value: Any) -> tuple[tuple[int, str], ...]:
    """A mapping or a sequence of (province, store) pairs as a tuple of pairs sorted by province."""
    field = "regional_stores"
    if isinstance(value, Mapping):
        pairs: Sequence[Any] = list(value.items())
    else:
        pairs = validate.sequence(value, field, what="a mapping of province code to store id")
    out: dict[int, str] = {}
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise errors.InvalidArgument(f"{field}[{i}] must be a (province, store) pair, got {shown(pair)}",
                                         field=field)
        code = validate.integer(pair[0], field, low=0, high=_MAX_PROVINCE)
        if code in out:
            raise errors.DuplicateId(f"{field} names province {code} twice", field=field)
        out[code] = validate.identifier(pair[1], f"{field}[{code}]")
    return tuple(sorted(out.items()))


#: The fulfilling store takes all revenue; HQ bears coupons; no fee.
FULFILLER_TAKES_ALL = AttributionRule("fulfiller")
#: 30 % to the selling party, 60 % to the fulfilling store, 10 % to the customer's home store.
SPLIT_361 = AttributionRule("split-361", selling_bp=3000, fulfilling_bp=6000, home_bp=1000)
#: Everything to the store of the destination's region (the engine resolves it from ``regional_stores``).
REGIONAL = AttributionRule("regional", fulfilling_bp=0, home_bp=10000, home="region")


# -- splitting cents -----------------------------------------------------------------------------
def split_cents(total: int, weights: Sequence[int]) -> list[int]:
    """Split an integer amount by integer weights, exactly (largest remainder).

    Each part first gets ``floor(|total| * w / sum(weights))``; the cents left over go,
    one each, to the parts with the largest remainders, ties to the earlier weight.
    A negative total is split as its magnitude and negated, so
    ``split_cents(-t, w) == [-p for p in split_cents(t, w)]``: a reversal mirrors
    the original, and the earlier weight wins ties in magnitude either way. A zero
    weight always gets 0. Computed in Python integers, so any weights will do (an
    order's coupon spread by its lines' gross, a parcel's fee by its lines').

    Parameters
    ----------
    total : int
        The amount in cents (may be negative), an ``int64``.
    weights : sequence of int
        Non-negative ``int64`` weights, not all zero.

    Returns
    -------
    list of int
        One part per weight; they sum to exactly ``total``.

    Raises
    ------
    pyomni.errors.InvalidArgument
        ``total`` or a weight is not an integer or out of ``int64`` range, or the weights
        are empty or all zero.

    Examples
    --------
    >>> split_cents(999, [3000, 6000, 1000, 0])
    [300, 599, 100, 0]
    >>> split_cents(10, [1, 1, 1])
    [4, 3, 3]
    >>> split_cents(-10, [1, 1, 1])
    [-4, -3, -3]
    """
    total = validate.integer(total, "total", low=-_INT64_MAX, high=_INT64_MAX)
    items = validate.sequence(weights, "weights", what="a sequence of integer weights")
    ws = [validate.integer(w, f"weights[{i}]", low=0, high=_INT64_MAX) for i, w in enumerate(items)]
    whole = sum(ws)
    if whole == 0:
        raise errors.InvalidArgument(f"weights must not be empty or all zero, got {shown(ws)}", field="weights")
    magnitude = abs(total)
    parts = [magnitude * w // whole for w in ws]
    remainders = [magnitude * w % whole for w in ws]
    short = magnitude - sum(parts)
    for i in sorted(range(len(ws)), key=lambda j: (-remainders[j], j))[:short]:
        parts[i] += 1
    return [-p for p in parts] if total < 0 else parts


def split_cents_array(totals: npt.ArrayLike, weights: npt.ArrayLike) -> Int64Array:
    """:func:`split_cents` of many amounts at once: row ``i`` is ``split_cents(totals[i], weights[i])``.

    Computed in ``int64``, so each ``|total| * sum(weights)`` must fit in it (basis-point
    weights leave room for totals up to ~9 * 10**14 cents); beyond, it raises where
    :func:`split_cents` would not.

    Parameters
    ----------
    totals : array of int, shape (n,)
        Amounts in cents (may be negative).
    weights : array of int, shape (n, k) or (k,)
        Non-negative weights per row (or one set for every row), each row not all zero.

    Returns
    -------
    numpy.ndarray of int64, shape (n, k)
        Each row sums to exactly its total.

    Raises
    ------
    pyomni.errors.InvalidArgument
        Not integer arrays, shapes that do not match, a negative weight, a row of
        zero weights, or an amount whose ``|total| * sum(weights)`` does not fit in ``int64``.

    Examples
    --------
    >>> import numpy as np
    >>> split_cents_array(np.array([999, -11]), np.array([3000, 6000, 1000, 0])).tolist()
    [[300, 599, 100, 0], [-3, -7, -1, 0]]
    """
    t = _int_array(totals, "totals")
    w = _int_array(weights, "weights")
    if t.ndim != 1:
        raise errors.InvalidArgument(f"totals must be one-dimensional, got shape {t.shape}", field="totals")
    if w.ndim not in (1, 2) or w.shape[-1] == 0 or (w.ndim == 2 and w.shape[0] != t.shape[0]):
        raise errors.InvalidArgument(f"weights must have shape ({t.shape[0]}, k) or (k,) with k >= 1, got "
                                     f"{w.shape}", field="weights")
    if w.size and (w.min() < 0 or w.max() > _INT64_MAX // w.shape[-1]):     # and so the row sums fit in int64
        raise errors.InvalidArgument(f"weights must be in 0..{_INT64_MAX // w.shape[-1]}", field="weights")
    w64 = w.astype(np.int64, copy=False)
    whole = w64.sum(axis=-1)
    if np.any(whole == 0):
        row = int(np.flatnonzero(np.atleast_1d(whole == 0))[0])
        raise errors.InvalidArgument(f"weights of row {row} are all zero", field="weights")
    if t.size:
        # |t| * whole <= INT64_MAX, checked without overflow: compare t against INT64_MAX // whole
        limit = _INT64_MAX // whole
        if t.dtype.kind == "u":
            over = t > limit.astype(np.uint64)
        else:
            over = (t > limit) | (t < -limit)
        if np.any(over):
            row = int(np.flatnonzero(np.broadcast_to(over, t.shape))[0])
            raise errors.InvalidArgument(f"totals[{row}] = {int(t[row])} times its weights' sum does not fit in "
                                         "int64", field="totals")
    return _split(t.astype(np.int64), w64)


def _int_array(value: npt.ArrayLike, field: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception:       # a ragged list, an object numpy refuses
        raise errors.InvalidArgument(f"{field} must be an integer array, got {shown(value)}", field=field) from None
    if arr.dtype.kind not in "iu":
        if arr.size == 0 and arr.dtype.kind == "f":     # np.asarray([]) is float64
            return arr.astype(np.int64)
        raise errors.InvalidArgument(f"{field} must be an integer array, got dtype {arr.dtype}", field=field)
    return arr


def _split(totals: Int64Array, weights: Int64Array) -> Int64Array:
    """The kernel of :func:`split_cents_array`, unchecked: int64 totals (n,), weights (n, k) or (k,)."""
    n, k = totals.shape[0], weights.shape[-1]
    whole = weights.sum(axis=-1, keepdims=True)                 # (n, 1) or (1,)
    magnitude = np.abs(totals)[:, None]
    parts, remainder = np.divmod(magnitude * weights, whole)    # (n, k)
    short = magnitude[:, 0] - parts.sum(axis=1)                 # 0 <= short < k
    # rank of each part in (larger remainder first, earlier first); the `short` best get a cent
    if k <= 8:      # k*k vector comparisons beat a row-wise argsort by ~7x for the 4 roles
        rank = np.zeros((n, k), dtype=np.int8)
        for j in range(k):
            mine = remainder[:, j]
            for i in range(k):
                if i < j:
                    rank[:, j] += remainder[:, i] >= mine
                elif i > j:
                    rank[:, j] += remainder[:, i] > mine
    else:
        order = np.argsort(-remainder, axis=1, kind="stable")
        rank = np.empty((n, k), dtype=np.int64)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(k), (n, k)), axis=1)
    parts += rank < short[:, None]
    np.negative(parts, out=parts, where=totals[:, None] < 0)
    return parts


# -- settling ------------------------------------------------------------------------------------
def settle(facts: pa.Table, rules: Mapping[str, AttributionRule]) -> pa.Table:
    """The settlement entries of a facts table: revenue, fee and coupon per party, and their reversals.

    For each sale fact (rule ``r = rules[fact.rule]``):

    * revenue: ``gross_cents`` split (:func:`split_cents`) by ``r.revenue_bp`` and credited
      to the selling party (``selling_store``, or ``"channel:" + channel`` when that is
      empty), the fulfilling store, the home store and ``"HQ"``;
    * fee: ``+fee_cents`` to the fulfilling store, ``-fee_cents`` to ``"HQ"``;
    * coupon: ``-coupon_cents`` split by ``r.coupon_bp`` (``r.franchise_coupon_bp`` when
      ``franchise``) among HQ, the selling party, the fulfilling store and the home store.

    So a sale's entries sum to exactly ``gross_cents - coupon_cents``. Zero amounts are
    left out; two roles held by one party stay separate entries.

    Each return fact reverses every entry of its sale in proportion to the units it
    returns, exactly: with ``n`` the sale's qty, ``m`` the units of that sale returned
    by earlier return facts (by ``fact``) and ``k`` this return's qty, an entry of
    amount ``a`` is reversed by ``-(floor(a*(m+k)/n) - floor(a*m/n))``; once all ``n``
    units are back, every entry of the sale nets to zero. (Floors of ``+a`` and ``-a``
    differ, so a partial return's two fee reversals may differ by a cent; the cent
    comes back with the remaining units.) Reversals are booked on the return's ``day``
    with ``is_return`` true and the return's ``fact``; ``order_id``, ``shipment_id``
    and ``line`` are the sale's.

    Parameters
    ----------
    facts : pyarrow.Table
        Columns of :data:`FACTS_SCHEMA` (in any order, with no nulls; extra columns are ignored).
    rules : mapping of str to AttributionRule
        The rules by ``key``, covering every key in ``facts["rule"]``.

    Returns
    -------
    pyarrow.Table
        :data:`ENTRIES_SCHEMA`, ordered by ``fact`` then entry slot.

    Raises
    ------
    pyomni.errors.InvalidArgument
        Named by ``field``: a missing or mistyped column or a null; an unknown ``kind``;
        a ``qty`` not in 1..``MAX_QTY``; a negative amount, or a return carrying
        amounts; a ``rule`` not in ``rules`` (or a rule filed under another key); a
        return whose ``sale_fact`` names no earlier sale in the table, or whose
        cumulative units exceed the sale's qty; an empty party credited with money.
        A repeated ``fact`` id is :class:`~pyomni.errors.DuplicateId`.

    Examples
    --------
    See the module's example; :func:`daily` sums the entries per day and party.
    """
    facts = validate.instance(facts, pa.Table, "facts", "a pyarrow Table of FACTS_SCHEMA")
    rule_list, rule_index = _rule_table(rules)
    _check_columns(facts, FACTS_SCHEMA, "facts")

    def column(name: str) -> pa.Array:
        return facts.column(name).combine_chunks()

    def numbers(name: str) -> np.ndarray:
        return column(name).to_numpy(zero_copy_only=False)

    fact = numbers("fact")
    kind = column("kind")
    is_sale = pc.equal(kind, "sale").to_numpy(zero_copy_only=False)
    is_ret = pc.equal(kind, "return").to_numpy(zero_copy_only=False)
    _refuse(~(is_sale | is_ret), fact, "kind", lambda i: f"kind {shown(kind[i].as_py())} is not sale or return")
    by_fact = np.argsort(fact, kind="stable")
    repeated = np.flatnonzero(np.diff(fact[by_fact]) == 0)
    if repeated.size:
        raise errors.DuplicateId(f"fact id {int(fact[by_fact[repeated[0]]])} appears twice", field="fact")
    qty = numbers("qty")
    _refuse((qty < 1) | (qty > MAX_QTY), fact, "qty", lambda i: f"qty {int(qty[i])} is not in 1..{MAX_QTY}")
    amounts = {name: numbers(name) for name in ("gross_cents", "coupon_cents", "fee_cents")}
    for name, values in amounts.items():
        _refuse(is_ret & (values != 0), fact, name, lambda i, n=name: f"is a return but carries {n}")
        _refuse(values < 0, fact, name, lambda i, n=name, v=values: f"{n} = {int(v[i])} is negative")
    for name in ("gross_cents", "coupon_cents"):        # split by basis points: times 10000 must fit in int64
        _refuse(amounts[name] > MAX_GROSS_CENTS, fact, name,
                lambda i, n=name: f"{n} = {int(amounts[n][i])} exceeds {MAX_GROSS_CENTS}")

    # which rule each row names
    encoded = pc.dictionary_encode(column("rule"))
    row_rule = np.full(len(encoded.dictionary), -1, dtype=np.intp)
    for j, key in enumerate(encoded.dictionary.to_pylist()):
        row_rule[j] = rule_index.get(key, -1)
    rule_of = row_rule[encoded.indices.to_numpy(zero_copy_only=False)]
    _refuse(rule_of < 0, fact, "rule", lambda i: f"rule {shown(column('rule')[i].as_py())} is not in rules")

    sales = np.flatnonzero(is_sale)
    returns = np.flatnonzero(is_ret)
    sale_amounts, role_codes, dictionary = _sale_entries(facts, sales, rule_of[sales], rule_list, amounts, fact)
    sale_of, rev_amounts = _reversals(fact, qty, numbers("sale_fact"), sales, returns, sale_amounts)

    # one event per sale and per return, in fact order; each holds the ten slots of its sale
    n_sales = len(sales)
    event_fact = np.concatenate([fact[sales], fact[returns]])
    event_of_row = np.empty(len(fact), dtype=np.intp)
    event_of_row[sales] = np.arange(n_sales)
    event_of_row[returns] = np.arange(n_sales, len(fact))
    order = event_of_row[by_fact]                                            # the events in fact order
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    slot_amounts = np.empty((len(order), len(_SLOTS)), dtype=np.int64)
    slot_amounts[position[:n_sales]] = sale_amounts
    slot_amounts[position[n_sales:]] = rev_amounts
    sale_of_event = np.concatenate([np.arange(n_sales), sale_of])[order]    # a position in `sales`
    booked = np.concatenate([sales, returns])[order]                         # the booking row (day)

    flat = np.flatnonzero(slot_amounts.ravel())
    event, slot = np.divmod(flat, len(_SLOTS))
    sale_index = sale_of_event[event]
    rows = sales[sale_index]                                                 # the sale's row (ids, line)
    take = pa.array(rows)
    days = column("day").cast(pa.int32()).to_numpy(zero_copy_only=False)
    return pa.Table.from_arrays([
        pa.array(days[booked[event]], pa.int32()).cast(pa.date32()),
        dictionary.take(pa.array(role_codes[sale_index, _SLOT_ROLE[slot]])),
        column("order_id").take(take),
        column("shipment_id").take(take),
        pa.array(numbers("line")[rows], pa.int32()),
        pa.array(event_fact[order[event]], pa.int64()),
        _SLOT_ENTRY.take(pa.array(slot)),
        pa.array(slot_amounts.ravel()[flat], pa.int64()),
        pa.array(order[event] >= n_sales, pa.bool_()),
    ], schema=ENTRIES_SCHEMA)


def _rule_table(rules: Any) -> tuple[list[AttributionRule], dict[str, int]]:
    """The rules as a list and their keys' positions in it."""
    checked = validate.mapping(rules, "rules")
    listed: list[AttributionRule] = []
    index: dict[str, int] = {}
    for key, rule in checked.items():
        validate.instance(rule, AttributionRule, f"rules[{shown(key)}]", "an AttributionRule")
        if key != rule.key:
            raise errors.InvalidArgument(f"rules[{shown(key)}] holds the rule {rule.key!r}: rules are filed under "
                                         "their key", field="rules")
        index[key] = len(listed)
        listed.append(rule)
    return listed, index


def _refuse(bad: np.ndarray, fact: np.ndarray, field: str, what: Any) -> None:
    """Raise InvalidArgument naming the first fact where ``bad`` holds (``what(row)`` says why)."""
    if bad.any():
        row = int(np.argmax(bad))
        raise errors.InvalidArgument(f"fact {int(fact[row])}: {what(row)}", field=field)


def _sale_entries(facts: pa.Table, sales: np.ndarray, rule_of: np.ndarray, rules: list[AttributionRule],
                  amounts: Mapping[str, np.ndarray], fact: np.ndarray) -> tuple[Int64Array, np.ndarray, pa.Array]:
    """Per sale: the ten slot amounts (n, 10), the party code of each role (n, 4) and the party dictionary."""
    n = len(sales)
    take = pa.array(sales)

    def strings(name: str) -> pa.Array:
        col = facts.column(name).combine_chunks()
        return col if n == len(col) else col.take(take)

    selling_store, channel = strings("selling_store"), strings("channel")
    selling = pc.if_else(pc.equal(selling_store, ""),
                         pc.binary_join_element_wise(CHANNEL_PREFIX, channel, ""), selling_store)
    fulfilling, home = strings("fulfilling_store"), strings("home_store")
    # one dictionary for every party: codes per role, HQ last
    encoded = pc.dictionary_encode(pa.concat_arrays([selling, fulfilling, home, pa.array([HQ], pa.string())]))
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    role_codes = np.stack([codes[:n], codes[n:2 * n], codes[2 * n:3 * n], np.full(n, codes[-1], np.int32)], axis=1)

    franchise = facts.column("franchise").combine_chunks().to_numpy(zero_copy_only=False)[sales]
    revenue_bp = np.array([r.revenue_bp for r in rules], dtype=np.int64).reshape(-1, 4)
    coupon_bp = np.array([[r.coupon_bp, r.franchise_coupon_bp] for r in rules], dtype=np.int64).reshape(-1, 2, 4)
    gross, coupon, fee = (amounts[k][sales] for k in ("gross_cents", "coupon_cents", "fee_cents"))

    out = np.empty((n, len(_SLOTS)), dtype=np.int64)
    out[:, 0:4] = _split(gross, revenue_bp[rule_of])                            # selling, fulfilling, home, HQ
    out[:, 4] = fee
    out[:, 5] = -fee
    out[:, 6:10] = _split(-coupon, coupon_bp[rule_of, franchise.astype(np.intp)])  # HQ, selling, fulfilling, home

    # an empty party (no store, or a channel with no name) may not be credited or debited
    named = {"selling": (selling, CHANNEL_PREFIX), "fulfilling": (fulfilling, ""), "home": (home, "")}
    for role, (party, blank) in named.items():
        is_blank = pc.equal(party, blank).to_numpy(zero_copy_only=False)
        if is_blank.any():
            used = (out[:, _SLOT_ROLE == _ROLES.index(role)] != 0).any(axis=1)
            _refuse(is_blank & used, fact[sales], _ROLE_FIELD[role],
                    lambda i, r=role: f"the {r} party is empty, yet has entries")
    return out, role_codes, encoded.dictionary


def _reversals(fact: np.ndarray, qty: np.ndarray, sale_fact: np.ndarray, sales: np.ndarray, returns: np.ndarray,
               sale_amounts: Int64Array) -> tuple[np.ndarray, Int64Array]:
    """For each return: its sale (a position in ``sales``) and the reversal of each of the sale's slots."""
    ret_fact = fact[returns]
    wanted = sale_fact[returns]
    sale_ids = fact[sales]
    by_id = np.argsort(sale_ids, kind="stable")
    pos = np.minimum(np.searchsorted(sale_ids[by_id], wanted), max(len(sales) - 1, 0))
    found = (sale_ids[by_id][pos] == wanted) if len(sales) else np.zeros(len(returns), bool)
    _refuse(~found, ret_fact, "sale_fact", lambda i: f"the return names sale fact {int(wanted[i])}, which is not a "
                                                     "sale in the table")
    sale_of = by_id[pos]
    _refuse(sale_ids[sale_of] > ret_fact, ret_fact, "sale_fact",
            lambda i: f"the return comes before its sale fact {int(wanted[i])}")

    # units of the same sale returned by earlier returns (by fact id)
    k = qty[returns]
    grouped = np.lexsort((ret_fact, sale_of))
    g, q = sale_of[grouped], k[grouped]
    before = np.cumsum(q) - q
    first = np.ones(len(g), bool)
    first[1:] = g[1:] != g[:-1]
    before -= np.maximum.accumulate(np.where(first, before, 0))     # cumsum is non-decreasing: q > 0
    m = np.empty_like(k)
    m[grouped] = before
    n = qty[sales][sale_of]
    _refuse(m + k > n, ret_fact, "qty", lambda i: f"returns {int(m[i] + k[i])} units of sale fact "
                                                   f"{int(wanted[i])}, which shipped {int(n[i])}")

    a = sale_amounts[sale_of]
    n2, m2, mk2 = n[:, None], m[:, None], (m + k)[:, None]
    # floor(a * x / n) without overflow: a = q*n + r with 0 <= r < n, so it is q*x + floor(r*x / n), and
    # r*x < n*n <= MAX_QTY**2 fits in int64
    whole, rest = np.divmod(a, n2)
    return sale_of, -((whole * mk2 + rest * mk2 // n2) - (whole * m2 + rest * m2 // n2))


# -- daily totals ----------------------------------------------------------------------------------
def daily(entries: pa.Table) -> pa.Table:
    """Per (day, party) totals of settlement entries, sorted by day then party.

    ``revenue_cents``, ``fee_cents`` and ``coupon_cents`` sum the entries of sales;
    ``returns_cents`` sums every reversal booked by returns; ``net_cents`` sums
    everything (so it is the sum of the other four); ``sales`` counts the distinct sale
    facts with at least one entry for the party that day.

    Parameters
    ----------
    entries : pyarrow.Table
        :data:`ENTRIES_SCHEMA` (as :func:`settle` returns it, or any filter of it).

    Returns
    -------
    pyarrow.Table
        :data:`DAILY_SCHEMA`.

    Raises
    ------
    pyomni.errors.InvalidArgument
        ``entries`` is not a table of the entries' columns and types (``field`` names the column).

    Examples
    --------
    See the module's example.
    """
    entries = validate.instance(entries, pa.Table, "entries", "a pyarrow Table of ENTRIES_SCHEMA")
    _check_columns(entries, ENTRIES_SCHEMA, "entries")
    amount = entries.column("amount_cents")
    is_return = entries.column("is_return")
    zero = pa.scalar(0, pa.int64())

    def of_sales(kind: str) -> pa.ChunkedArray:
        return pc.if_else(pc.and_not(pc.equal(entries.column("entry"), kind), is_return), amount, zero)

    party = entries.column("party").combine_chunks()
    first = _first_sale_entries(
        entries.column("fact").to_numpy(), entries.column("day").cast(pa.int32()).to_numpy(),
        pc.dictionary_encode(party).indices.to_numpy(zero_copy_only=False),
        is_return.to_numpy())
    work = pa.table({
        "day": entries.column("day"),
        "party": party,
        "revenue_cents": of_sales("revenue"),
        "fee_cents": of_sales("fee"),
        "coupon_cents": of_sales("coupon"),
        "returns_cents": pc.if_else(is_return, amount, zero),
        "net_cents": amount,
        "sales": pa.array(first.astype(np.int64)),
    })
    sums = [f.name for f in DAILY_SCHEMA][2:]
    grouped = work.group_by(["day", "party"]).aggregate([(c, "sum") for c in sums])
    grouped = grouped.sort_by([("day", "ascending"), ("party", "ascending")])
    return pa.Table.from_arrays([grouped.column("day"), grouped.column("party")]
                                + [grouped.column(f"{c}_sum").cast(pa.int64()) for c in sums], schema=DAILY_SCHEMA)


# the longest run of one fact's entries the no-sort path of _first_sale_entries takes (settle writes <= 10)
_MAX_RUN = 2 * len(_SLOTS)


def _first_sale_entries(fact: np.ndarray, day: np.ndarray, party: np.ndarray, is_return: np.ndarray) -> np.ndarray:
    """True on the first sale entry of each distinct (fact, day, party), so their sum per (day, party) counts the
    distinct sale facts. (pyarrow's hash ``count_distinct`` takes ~10x longer on a million facts.)"""
    sale = ~is_return
    n = len(fact)
    if n == 0:
        return sale
    starts = np.flatnonzero(np.r_[True, fact[1:] != fact[:-1]])
    longest = int(np.diff(np.r_[starts, n]).max())
    if longest <= _MAX_RUN and bool(np.all(fact[1:] >= fact[:-1])):
        # grouped by fact, as settle writes it: compare each entry with the few before it in its fact
        first = sale.copy()
        for lag in range(1, longest):
            first[lag:] &= ~((fact[lag:] == fact[:-lag]) & (party[lag:] == party[:-lag])
                             & (day[lag:] == day[:-lag]) & sale[:-lag])
        return first
    order = np.lexsort((party, day, fact, is_return))          # any other order: sort so equal keys are adjacent
    f, d, p, s = fact[order], day[order], party[order], sale[order]
    repeat = np.r_[False, (f[1:] == f[:-1]) & (d[1:] == d[:-1]) & (p[1:] == p[:-1]) & s[:-1]]
    first = np.empty(n, bool)
    first[order] = s & ~repeat
    return first


def _check_columns(table: pa.Table, schema: pa.Schema, what: str) -> None:
    for f in schema:
        if f.name not in table.column_names:
            raise errors.InvalidArgument(f"{what} has no column {f.name!r}", field=f.name)
        col = table.column(f.name)
        if col.type != f.type:
            raise errors.InvalidArgument(f"{what} column {f.name!r} must be {f.type}, got {col.type}", field=f.name)
        if col.null_count:
            raise errors.InvalidArgument(f"{what} column {f.name!r} holds {col.null_count} nulls", field=f.name)


# -- writing -----------------------------------------------------------------------------------------
def write_settlement(entries_or_daily: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write settlement entries or daily totals as a Parquet file, atomically.

    The table is written to a hidden temporary file in the target's directory,
    fsynced, then renamed over ``path`` (and the directory fsynced): a reader sees the
    old file or the whole new one, never a torn one, and a failed write leaves no
    temporary file behind.

    Parameters
    ----------
    entries_or_daily : pyarrow.Table
        A table of :data:`ENTRIES_SCHEMA` (from :func:`settle`) or :data:`DAILY_SCHEMA` (from :func:`daily`).
    path : str or os.PathLike
        The file to write (replaced if it exists); its directory must exist.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    pyomni.errors.InvalidArgument
        The table has neither schema (``field="entries_or_daily"``), or the file cannot
        be written: no such directory, no permission, disk full (``field="path"``).

    Examples
    --------
    >>> import tempfile, os, pyarrow.parquet as pq
    >>> empty = ENTRIES_SCHEMA.empty_table()
    >>> with tempfile.TemporaryDirectory() as d:
    ...     out = write_settlement(daily(empty), os.path.join(d, "daily.parquet"))
    ...     pq.read_table(out).schema == DAILY_SCHEMA, os.listdir(d)
    (True, ['daily.parquet'])
    """
    table = validate.instance(entries_or_daily, pa.Table, "entries_or_daily", "a pyarrow Table")
    shape = [(f.name, f.type) for f in table.schema]
    if shape not in ([(f.name, f.type) for f in ENTRIES_SCHEMA], [(f.name, f.type) for f in DAILY_SCHEMA]):
        raise errors.InvalidArgument("entries_or_daily must have the columns of ENTRIES_SCHEMA or DAILY_SCHEMA, "
                                     f"got {shown(table.column_names)}", field="entries_or_daily")
    target = validate.path(path, "path")
    # a name of our own (two writers of one path never share a temporary file), hidden, in the same directory
    # so that the rename is atomic
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    created = False
    try:
        with open(tmp, "xb") as sink:
            created = True
            pq.write_table(table, sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, target)
        created = False
        directory = os.open(target.parent, os.O_RDONLY)     # the rename itself survives a crash
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:      # no such directory, no permission, disk full: the caller's path
        raise errors.InvalidArgument(f"cannot write {shown(str(target), 200)}: {str(exc)[:200]}",
                                     field="path") from None
    finally:
        if created:
            with contextlib.suppress(OSError):      # best effort: the temporary file never replaced anything
                tmp.unlink(missing_ok=True)
    return target
