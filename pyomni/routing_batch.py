"""Routing in columns: a batch of delivery orders decided in one native pass (a part of :class:`~pyomni.Engine`).

``Engine.route_orders`` routes a list of :class:`~pyomni.Order` objects one
command at a time: an order, a parse, a decision, an Allocation with its
explanation, per order -- about 60 µs of Python each. ``route_columns`` takes
the same orders as columns (ids, line counts, SKUs, quantities, coordinates)
and, under one lock acquisition:

1. checks every row at once (NumPy), interning SKUs through one dict lookup
   per line; a bad row gets its typed error, the others go on;
2. answers retried request ids from the idempotency window;
3. decides every remaining order **in order, in one native pass**
   (``Router.route_many``): each order sees the holds of the ones before it,
   exactly as if they had been routed one by one -- then the pass gives every
   hold back, so deciding changes nothing;
4. applies the decisions as **one command and one journal record**
   (:class:`~pyomni.commands.RouteBatch` + :class:`~pyomni.commands.HeldBatch`):
   all holds taken in one call, then one reservation record per held order.

Replay applies the recorded batch with the same applier; a retry of any of its
orders -- alone through ``route_order``, or in another batch, also after a
restart -- returns the same allocation, because each order's request id is
remembered with the same fingerprint ``route_order`` would have made.

The fast path covers delivery orders on the default or one named policy. A
batch where any order's channel has a rule (its limit depends on every order
before it) or an engine without the compiled core takes the general path
(``route_orders``) and gives the same answers.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import errors, validate
from ._core import MAX_LINES, check_status
from .commands import HeldBatch, RouteBatch, RouteOrder
from .model import MAX_QTY, Allocation, AllocationStatus, Capability, Explanation, Line, Order, ShortLine
from .policy import RoutingPolicy
from .validate import MAX_ID_CHARS, shown

__all__ = ["BatchRouting", "RouteResults"]

_SPLIT_REASONS = ("", "NO_SINGLE_LOCATION", "CHEAPER")


class RouteResults:
    """The answers of ``route_columns``, column by column (one row per order, in order).

    ``status`` is the :class:`~pyomni.AllocationStatus` value (0 where the row
    failed: see ``errors``); ``reservation`` the reservation number (id
    ``R{n:010d}``) or 0; ``n_ship`` shipments per order, whose locations,
    kilometres, costs (five parts) and units per line follow in ``ship_*`` and
    ``take`` (the order's lines, per shipment), orders in turn; ``total`` the
    cost. :meth:`get` gives one row as an :class:`~pyomni.Allocation`.
    """

    __slots__ = ("order_ids", "status", "reservation", "expires_at", "total", "n_ship", "ship_loc", "ship_km",
                 "ship_cost", "take", "line_counts", "skus", "split", "errors", "_answers", "_build")

    def __init__(self, n: int) -> None:
        self.order_ids: list[str] = []
        self.status = np.zeros(n, dtype=np.uint8)
        self.reservation = np.zeros(n, dtype=np.int64)
        self.expires_at = np.zeros(n)
        self.total = np.zeros(n)
        self.n_ship = np.zeros(n, dtype=np.int32)
        self.split = np.zeros(n, dtype=np.uint8)         # index into ("", NO_SINGLE_LOCATION, CHEAPER)
        self.ship_loc = np.zeros(0, dtype=np.int32)
        self.ship_km = np.zeros(0)
        self.ship_cost = np.zeros(0)
        self.take = np.zeros(0, dtype=np.int32)
        self.line_counts = np.zeros(n, dtype=np.int32)
        self.skus: list[str] = []                       # every line's SKU, orders in turn (as asked)
        self.errors: dict[int, errors.PyomniError] = {}
        self._answers: dict[int, Allocation] = {}       # rows answered with an object (retries, fallbacks)
        self._build: Callable[[int], Allocation] | None = None

    def __len__(self) -> int:
        return len(self.status)

    @property
    def answered(self) -> dict[int, Allocation]:
        """Rows answered with an object (retries from the window, the general path): their shipments are
        in the objects, not in the columns (``n_ship`` 0 there)."""
        return self._answers

    def line_skus(self, i: int) -> list[str]:
        """The SKUs of order ``i``'s lines."""
        start = int(self.line_counts[:i].sum())
        return self.skus[start:start + int(self.line_counts[i])]

    @property
    def held(self) -> int:
        """How many orders are held."""
        return int(np.count_nonzero(self.reservation))

    def get(self, i: int) -> Allocation | errors.PyomniError:
        """Row ``i`` as an Allocation, or the typed error it failed with."""
        if i in self.errors:
            return self.errors[i]
        if i in self._answers:
            return self._answers[i]
        assert self._build is not None
        return self._build(i)

    def __iter__(self):
        return (self.get(i) for i in range(len(self)))


class BatchRouting:
    """``route_columns`` and its command (mixed into :class:`~pyomni.Engine`)."""

    _lock: Any
    _ledger: Any
    _router: Any
    _native: bool
    _loc_ids: tuple[str, ...]
    _sku_ids: list[str]
    _sku_index: dict[str, int]
    _channels: dict[str, Any]
    _feed_shown: dict[str, Any]
    _records: dict[str, Any]
    _record_order: list[Any]
    _live_orders: dict[str, str]
    _expiry: list[tuple[float, int, str]]
    _requests: Any
    _seq: int
    _lsn: int
    _ttl: float
    _journal: Any
    _replaying: bool
    _max_request_ids: int
    _later_type: Any
    _remembered_type: Any
    _record_type: Any
    _ships_new: Any
    _begin_command: Callable[[type], float]
    _log: Callable[..., int]
    _wait: Callable[[int], None]
    _remember: Callable[..., None]
    _settle: Callable[..., None]
    _policy_ref: Callable[..., Any]
    _resolve_policy: Callable[[Any], RoutingPolicy]
    _native_policy: Callable[[RoutingPolicy], Any]
    _held_answer: Callable[..., Allocation]
    route_orders: Callable[..., list[Any]]

    def route_columns(self, order_ids: Sequence[str], line_counts: Sequence[int] | np.ndarray,
                      skus: Sequence[str], qtys: Sequence[int] | np.ndarray, lat: Sequence[float] | np.ndarray,
                      lon: Sequence[float] | np.ndarray, *, channels: str | Sequence[str] = "app",
                      request_ids: Sequence[str | None] | None = None, policy: str | RoutingPolicy | None = None,
                      ttl: float | None = None) -> RouteResults:
        """Route and hold a batch of delivery orders given as columns: one lock, one native pass, one record.

        Order ``i`` has ``line_counts[i]`` lines, taken in turn from ``skus``
        and ``qtys``, and goes to ``(lat[i], lon[i])``; ``channels`` is one
        channel for all or one per order. Each order is decided exactly as
        :meth:`route_order` would decide it at its turn (same policy, same
        fingerprint for its request id); a bad row gets its typed error in
        :attr:`RouteResults.errors` and the others go on. With a journal, the
        call returns once the whole batch is durable.

        Examples
        --------
        >>> import pyomni
        >>> net = pyomni.demo_network(stores=6, warehouses=1, skus=4, seed=1)
        >>> eng = pyomni.Engine(net)
        >>> _ = eng.set_stock(net.ids[0], "SKU-000001", 5)
        >>> r = eng.route_columns(["o-1", "o-2"], [1, 1], ["SKU-000001", "SKU-000001"], [2, 9],
        ...                       [net.lat[0]] * 2, [net.lon[0]] * 2)
        >>> r.get(0).reservation_id, r.get(1).status.name
        ('R0000000001', 'UNFULFILLABLE')
        """
        order_ids = validate.sequence(order_ids, "order_ids", what="a sequence of order ids")
        skus = validate.sequence(skus, "skus", what="a sequence of SKU ids")
        n = len(order_ids)
        counts = self._column(line_counts, n, "line_counts", np.int64)
        # a negative count, or one beyond the lines there are, leaves no way to tell which line is whose
        if n and (int(counts.min()) < 0 or int(counts.max()) > len(skus)):
            raise errors.InvalidArgument(f"line_counts must be in 0..{len(skus)} (the lines given)",
                                         field="line_counts")
        n_lines = int(counts.sum()) if n else 0
        if len(skus) != n_lines:
            raise errors.InvalidArgument(f"skus needs {n_lines} entries (the sum of line_counts)", field="skus")
        qty = self._column(qtys, n_lines, "qtys", np.int64)
        la = self._column(lat, n, "lat", np.float64)
        lo = self._column(lon, n, "lon", np.float64)
        chans = [channels] * n if isinstance(channels, str) else list(
            validate.sequence(channels, "channels", what="a channel or a sequence of them"))
        if len(chans) != n:
            raise errors.InvalidArgument("channels must be one channel or one per order", field="channels")
        if request_ids is not None:
            request_ids = validate.sequence(request_ids, "request_ids", what="a sequence of request ids")
            if len(request_ids) != n:
                raise errors.InvalidArgument("request_ids must have one entry per order", field="request_ids")
        if ttl is not None:
            ttl = validate.seconds(ttl, "ttl")
        if policy is not None and not isinstance(policy, (str, RoutingPolicy)):
            raise errors.UnknownPolicy(f"no routing policy {shown(policy)}", field="policy")
        try:
            distinct = set(chans)
        except TypeError:                       # an unhashable channel: its row is refused below
            distinct = {c for c in chans if type(c) is str}
        if not self._native or any(c in self._channels or c in self._feed_shown for c in distinct):
            return self._route_columns_generally(order_ids, counts, skus, qty, la, lo, chans, request_ids,
                                                 policy, ttl)
        with self._lock:
            results, lsn = self._commit_route_batch(list(order_ids), counts, list(skus), qty, la, lo, chans,
                                                    request_ids, policy, None if ttl is None else float(ttl))
        if lsn and self._journal is not None:
            self._wait(lsn)
        return results

    @staticmethod
    def _column(values: Any, n: int, name: str, dtype: Any) -> np.ndarray:
        try:
            arr = np.asarray(values)
            if n and arr.dtype.kind not in ("iu" if dtype is np.int64 else "iuf"):
                raise TypeError
            arr = arr.astype(dtype, copy=False).reshape(n)
        except (TypeError, ValueError, OverflowError):
            raise errors.InvalidArgument(f"{name} must be {n} numbers", field=name) from None
        return arr

    def _orders_of(self, order_ids: Sequence[str], counts: np.ndarray, skus: Sequence[str], qty: np.ndarray,
                   lat: np.ndarray, lon: np.ndarray, chans: Sequence[str], rows: Any) -> dict[int, Any]:
        """Orders (or the error building one raised) for some rows: retries and the general path."""
        off = np.concatenate([[0], np.cumsum(counts)])
        out: dict[int, Any] = {}
        for i in rows:
            a, b = int(off[i]), int(off[i + 1])
            try:
                out[i] = Order(order_ids[i], tuple(Line(s, int(q)) for s, q in zip(skus[a:b], qty[a:b].tolist())),
                               destination=(float(lat[i]), float(lon[i])), channel=chans[i])
            except errors.PyomniError as exc:
                out[i] = exc
        return out

    def _route_columns_generally(self, order_ids: Sequence[str], counts: np.ndarray, skus: Sequence[str],
                                 qty: np.ndarray, lat: np.ndarray, lon: np.ndarray, chans: list[str],
                                 request_ids: Sequence[str | None] | None, policy: Any,
                                 ttl: float | None) -> RouteResults:
        n = len(order_ids)
        orders = self._orders_of(order_ids, counts, skus, qty, lat, lon, chans, range(n))
        good = [i for i in range(n) if isinstance(orders[i], Order)]
        answers = self.route_orders([orders[i] for i in good],
                                    request_ids=[request_ids[i] for i in good] if request_ids is not None else None,
                                    policies=[policy] * len(good), ttls=[ttl] * len(good))
        res = RouteResults(n)
        res.order_ids = list(order_ids)
        res.line_counts = counts.astype(np.int32)
        res.skus = list(skus)
        for i in range(n):
            if not isinstance(orders[i], Order):
                res.errors[i] = orders[i]
        for i, a in zip(good, answers):
            if isinstance(a, errors.PyomniError):
                res.errors[i] = a
            else:
                res._answers[i] = a
                res.status[i] = int(a.status)
                if a.reservation_id:
                    res.reservation[i] = int(a.reservation_id[1:])
        self._fill_columns(res)
        return res

    @staticmethod
    def _fill_columns(res: RouteResults) -> None:
        """Totals and deadlines of the rows answered with objects (the general path, retries); their
        shipments stay in the objects (``n_ship`` 0 in the columns)."""
        for i, a in res._answers.items():
            res.total[i] = a.total_cost
            res.expires_at[i] = a.expires_at or 0.0

    # -- the fast path ---------------------------------------------------------------------------
    def _commit_route_batch(self, order_ids: list[str], counts: np.ndarray, skus: list[str], qty: np.ndarray,
                            lat: np.ndarray, lon: np.ndarray, chans: list[str],
                            request_ids: Sequence[str | None] | None, policy: Any,
                            ttl: float | None) -> tuple[RouteResults, int]:
        now = self._begin_command(RouteBatch)
        pol_ref = self._policy_ref(policy)
        pol = self._resolve_policy(pol_ref)
        n = len(order_ids)
        res = RouteResults(n)
        res.order_ids = order_ids
        res.line_counts = counts.astype(np.int32)
        res.skus = skus
        bad: dict[int, errors.PyomniError] = res.errors
        off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        # -- row checks, vectorised where they can be -------------------------------------------
        index = self._sku_index
        sku = np.fromiter((index.get(s, -1) if isinstance(s, str) else -1 for s in skus), dtype=np.int32,
                          count=len(skus))
        line_order = np.repeat(np.arange(n), counts) if n else np.zeros(0, dtype=np.int64)
        for k in np.flatnonzero(sku < 0).tolist():
            i = int(line_order[k])
            bad.setdefault(i, errors.UnknownSku(f"unknown SKU {shown(skus[k])}", field=f"lines[{k - off[i]}].sku"))
        for k in np.flatnonzero((qty < 1) | (qty > MAX_QTY)).tolist():
            i = int(line_order[k])
            bad.setdefault(i, errors.InvalidQuantity(f"qty must be in 1..{MAX_QTY}", field=f"lines[{k - off[i]}].qty"))
        for i in np.flatnonzero((counts < 1) | (counts > MAX_LINES)).tolist():
            bad.setdefault(i, errors.InvalidOrder(f"an order has 1..{MAX_LINES} lines", field="lines"))
        for i in np.flatnonzero(~((np.abs(lat) <= 90) & (np.abs(lon) <= 180))).tolist():
            bad.setdefault(i, errors.InvalidCoordinates("destination must be (lat, lon) in degrees",
                                                        field="destination"))
        multi = np.flatnonzero(counts > 1)
        for i in multi.tolist():
            a, b = off[i], off[i + 1]
            if len(set(sku[a:b].tolist())) != b - a:
                bad.setdefault(i, errors.InvalidOrder("order repeats a SKU; merge its lines", field="lines"))
        live, seen = self._live_orders, set()
        rows_ok = validate.are_identifiers(order_ids) and validate.are_identifiers(chans)     # one look, usually
        for i, oid in enumerate(order_ids if not rows_ok else ()):
            if not validate.is_identifier(oid):
                bad.setdefault(i, errors.InvalidOrder(f"order id must be an id (non-empty text of at most "
                                                      f"{MAX_ID_CHARS} characters), got {shown(oid)}", field="id"))
            elif not validate.is_identifier(chans[i]):
                bad.setdefault(i, errors.InvalidOrder(f"channel must be an id, got {shown(chans[i])}",
                                                      field="channel"))
        # -- retries: answered from the window, like route_order ---------------------------------
        rids: list[str | None] = [None] * n
        if request_ids is not None and validate.are_identifiers(request_ids, skip_empty=True):
            rids = [r or None for r in request_ids]
        elif request_ids is not None:
            for i, r in enumerate(request_ids):
                if r is None or (type(r) is str and not r):
                    continue
                if validate.is_identifier(r):
                    rids[i] = r
                else:
                    bad.setdefault(i, errors.InvalidArgument(f"request_id must be an id, got {shown(r)}",
                                                             field="request_id"))
        wait = self._lsn
        if request_ids is not None:
            requests = self._requests
            retried = [i for i, r in enumerate(rids) if r is not None and r in requests and i not in bad]
            if retried:
                orders = self._orders_of(order_ids, counts, skus, qty, lat, lon, chans, retried)
                for i in retried:
                    prior = requests[rids[i]]
                    o = orders[i]
                    if isinstance(o, errors.PyomniError):
                        bad[i] = o
                    elif prior.command != RouteOrder(o, pol_ref, ttl):
                        bad[i] = errors.RequestIdReused(f"request id {shown(rids[i])} was used for a different "
                                                        "request", field="request_id")
                    else:
                        a = prior.value()
                        res._answers[i] = a
                        res.status[i] = int(a.status)
                        res.reservation[i] = int(a.reservation_id[1:]) if a.reservation_id else 0
                        wait = max(wait, prior.lsn)
            first_of: dict[str, int] = {}
            for i, r in enumerate(rids):
                if r is None or i in bad or i in res._answers:
                    continue
                if r in first_of:
                    bad[i] = errors.RequestIdReused(f"request id {shown(r)} appears twice in the batch",
                                                    field="request_id")
                else:
                    first_of[r] = i
        for i, oid in enumerate(order_ids):
            if i in bad or i in res._answers:
                continue
            if oid in live:
                bad[i] = errors.DuplicateId(f"order {shown(oid)} already has reservation {shown(live[oid])}",
                                            field="id")
            elif oid in seen:
                bad[i] = errors.DuplicateId(f"order {shown(oid)} appears twice in the batch", field="id")
            else:
                seen.add(oid)
        todo = np.array([i for i in range(n) if i not in bad and i not in res._answers], dtype=np.int64)
        lsn = wait
        if len(todo):
            lsn = self._decide_and_apply(res, todo, order_ids, counts, off, sku, qty, lat, lon, chans, rids, pol,
                                         pol_ref, ttl, now)
        self._fill_columns(res)
        return res, lsn

    def _decide_and_apply(self, res: RouteResults, todo: np.ndarray, order_ids: list[str], counts: np.ndarray,
                          off: np.ndarray, sku: np.ndarray, qty: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                          chans: list[str], rids: list[str | None], pol: RoutingPolicy, pol_ref: Any,
                          ttl: float | None, now: float) -> int:
        # the rows to decide, compacted
        m = len(todo)
        c = counts[todo]
        lines = np.repeat(off[todo], c) + _ranges(c)
        s_sku = np.ascontiguousarray(sku[lines], dtype=np.int32)
        s_qty = np.ascontiguousarray(qty[lines], dtype=np.int32)
        s_off = np.concatenate([[0], np.cumsum(c)]).astype(np.int64)
        max_ship = pol.max_splits
        status = np.zeros(m, dtype=np.uint8)
        split = np.zeros(m, dtype=np.uint8)
        n_ship = np.zeros(m, dtype=np.int32)
        ship_loc = np.zeros(m * max_ship, dtype=np.int32)
        ship_km = np.zeros(m * max_ship)
        ship_cost = np.zeros(5 * m * max_ship)
        take = np.zeros(len(lines) * max_ship, dtype=np.int32)
        covered = np.zeros(len(lines), dtype=np.int32)
        line_avail = np.zeros(len(lines), dtype=np.int64)
        self._router.route_many(self._native_policy(pol), np.ascontiguousarray(lat[todo]),
                                np.ascontiguousarray(lon[todo]), s_off, s_sku, s_qty, int(Capability.SHIP),
                                float(pol.max_distance_km), max_ship, status, split, n_ship, ship_loc, ship_km,
                                ship_cost, take, covered, line_avail)
        if (status == 2).any():
            raise errors.InvariantViolation("the router could not hold the plan it chose")
        # the record holds the orders held, and those refused that carry a request id (a retry must get the
        # same refusal); the others changed nothing and nobody will ask again
        keep = (status == 0) | np.array([rids[i] is not None for i in todo.tolist()], dtype=bool)
        # compact the shipments: slot j * max_ship + s, and the takes of each order's shipments, in order
        kj = np.flatnonzero(keep)
        slots = np.repeat(kj * max_ship, n_ship[kj]) + _ranges(n_ship[kj])
        n_take = n_ship[kj] * c[kj]
        takes = take[np.repeat(s_off[kj] * max_ship, n_take) + _ranges(n_take)]
        kept = todo[keep]
        kept_lines = np.repeat(s_off[kj], c[kj]) + _ranges(c[kj])
        short = []
        sku_ids = self._sku_ids
        for j in np.flatnonzero(keep & (status == 1)).tolist():
            lines_j = range(int(s_off[j]), int(s_off[j + 1]))
            short.append(tuple(ShortLine(sku_ids[s_sku[k]], int(s_qty[k]), int(covered[k]),
                                         "NO_STOCK" if line_avail[k] < s_qty[k] else "CONSTRAINTS")
                               for k in lines_j if covered[k] < s_qty[k]))
        command = RouteBatch(tuple(order_ids[i] for i in kept.tolist()), tuple(rids[i] for i in kept.tolist()),
                             tuple(chans[i] for i in kept.tolist()), c[keep].astype(np.int32).tobytes(),
                             s_sku[kept_lines].tobytes(), s_qty[kept_lines].tobytes(), lat[kept].tobytes(),
                             lon[kept].tobytes(), pol_ref, ttl)
        effect = HeldBatch(status[keep].tobytes(), split[keep].tobytes(), n_ship[keep].tobytes(),
                           ship_loc[slots].tobytes(), ship_km[slots].tobytes(),
                           ship_cost.reshape(-1, 5)[slots].reshape(-1).tobytes(), takes.tobytes(), tuple(short))
        lsn, first = self._lsn, 0
        if len(kept):
            first = self._apply_route_batch(command, effect, now, None)
            lsn = self._log(now, None, command, effect)
            self._remember(None, command, None, lsn, now)
            self._settle(command, now)
        # the columns of the answer: decided rows in row order (todo is increasing), others have no shipments
        res.status[todo] = np.where(status == 0, int(AllocationStatus.ALLOCATED), int(AllocationStatus.UNFULFILLABLE))
        held = todo[status == 0]
        if len(held):
            res.reservation[held] = np.arange(first, first + len(held))
            res.expires_at[held] = now + (self._ttl if ttl is None else ttl)
        all_slots = np.repeat(np.arange(m) * max_ship, n_ship) + _ranges(n_ship)
        res.ship_loc = ship_loc[all_slots]
        res.ship_km = ship_km[all_slots]
        cost = ship_cost.reshape(-1, 5)[all_slots]
        res.ship_cost = cost.reshape(-1)
        res.n_ship[todo] = n_ship
        res.split[todo] = split
        res.total[todo] = np.bincount(np.repeat(np.arange(m), n_ship), weights=cost.sum(axis=1), minlength=m)
        res.take = takes            # rows not kept are unfulfillable: they have no shipments, hence no takes
        short_of = dict(zip(np.flatnonzero(keep & (status == 1)).tolist(), short))
        res._build = functools.partial(self._route_row, res, todo, short_of, status, split, s_sku, s_qty, covered,
                                       line_avail, s_off, pol)
        return lsn

    def _route_row(self, res: RouteResults, todo: np.ndarray, short_of: dict[int, tuple], status: np.ndarray,
                   split: np.ndarray, s_sku: np.ndarray, s_qty: np.ndarray, covered: np.ndarray,
                   line_avail: np.ndarray, s_off: np.ndarray, pol: RoutingPolicy, i: int) -> Allocation:
        """Row ``i`` of a fast-path answer as an Allocation (built only when asked for)."""
        j = int(np.searchsorted(todo, i))
        if status[j] == 0:
            rec = self._records[f"R{int(res.reservation[i]):010d}"]
            return self._held_answer(rec.order, rec.id, rec.shipments, rec.expires_at, rec.policy, int(split[j]))
        sku_ids = self._sku_ids
        short = short_of.get(j)
        if short is None:
            short = tuple(ShortLine(sku_ids[s_sku[k]], int(s_qty[k]), int(covered[k]),
                                    "NO_STOCK" if line_avail[k] < s_qty[k] else "CONSTRAINTS")
                          for k in range(int(s_off[j]), int(s_off[j + 1])) if covered[k] < s_qty[k])
        return Allocation(res.order_ids[i], AllocationStatus.UNFULFILLABLE, None, (), 0.0, short,
                          Explanation("recorded", 0, {}, (), False, "", pol.key))

    def _apply_route_batch(self, command: RouteBatch, effect: HeldBatch, now: float, request_id: str | None) -> int:
        """Hold every held order of a recorded batch and make its reservation; returns the first number."""
        counts = np.frombuffer(command.line_counts, dtype=np.int32)
        sku = np.frombuffer(command.sku, dtype=np.int32)
        qty = np.frombuffer(command.qty, dtype=np.int32)
        lat = np.frombuffer(command.lat, dtype=np.float64).tolist()
        lon = np.frombuffer(command.lon, dtype=np.float64).tolist()
        status = np.frombuffer(effect.status, dtype=np.uint8)
        split = np.frombuffer(effect.split, dtype=np.uint8).tolist()
        n_ship = np.frombuffer(effect.n_ship, dtype=np.int32)
        ship_loc = np.frombuffer(effect.ship_loc, dtype=np.int32)
        ship_km = np.frombuffer(effect.ship_km, dtype=np.float64).tolist()
        ship_cost = np.frombuffer(effect.ship_cost, dtype=np.float64).reshape(-1, 5)
        takes = np.frombuffer(effect.take, dtype=np.int32)
        off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        # every hold at once: one (location, SKU, units) per shipment line
        lines_per_ship = np.repeat(counts, n_ship)
        take_loc = np.repeat(ship_loc, lines_per_ship)
        ship_first = np.repeat(off[:-1], n_ship)         # first line of each shipment's order
        take_sku = sku[np.repeat(ship_first, lines_per_ship) + _ranges(lines_per_ship)] if len(takes) else sku[:0]
        cells = self._ledger.cells_of(np.ascontiguousarray(take_loc), np.ascontiguousarray(take_sku))
        used = takes > 0
        check_status(self._ledger.change_holds(np.ascontiguousarray(cells[used]), np.ascontiguousarray(takes[used]),
                                               0), "a batch of holds does not apply")
        check_status(self._ledger.add_loads(np.ascontiguousarray(ship_loc), 1))
        pol = self._resolve_policy(command.policy)
        ttl = self._ttl if command.ttl is None else command.ttl
        expires_at = now + ttl
        sku_ids, record, later, remembered = self._sku_ids, self._record_type, self._later_type, self._remembered_type
        records, order_list, live, expiry = self._records, self._record_order, self._live_orders, self._expiry
        requests, window = self._requests, self._max_request_ids > 0
        ships_new = self._ships_new
        cost_rows = ship_cost.tolist()
        take_list = takes.tolist()
        cell_list = cells.tolist()
        sku_list = sku.tolist()
        qty_list = qty.tolist()
        ship_loc_list = ship_loc.tolist()
        first = self._seq + 1
        lsn = self._lsn + 1
        k = t = 0
        short = iter(effect.short)
        for j, oid in enumerate(command.order_ids):
            a, b = int(off[j]), int(off[j + 1])
            line_skus = tuple(sku_list[a:b])
            order = Order(oid, tuple(Line(sku_ids[s], q) for s, q in zip(line_skus, qty_list[a:b])),
                          destination=(lat[j], lon[j]), channel=command.channels[j])
            rid = command.request_ids[j]
            if status[j] != 0:
                answer: Any = Allocation(oid, AllocationStatus.UNFULFILLABLE, None, (), 0.0, next(short),
                                         Explanation("recorded", 0, {}, (), False, "", pol.key))
            else:
                nl = b - a
                ships = []
                for _ in range(int(n_ship[j])):
                    ships.append((ship_loc_list[k], ship_km[k], tuple(cost_rows[k]), tuple(take_list[t:t + nl]),
                                  tuple(cell_list[t + x] if take_list[t + x] else -1 for x in range(nl)), line_skus))
                    k += 1
                    t += nl
                seq = self._seq = self._seq + 1
                res_id = f"R{seq:010d}"
                rec = records[res_id] = record(res_id, seq, rid, order, now, expires_at, ships, frozenset(),
                                               int(Capability.SHIP), float(pol.max_distance_km), pol)
                order_list.append(rec)
                live[oid] = res_id
                heapq.heappush(expiry, (expires_at, seq, res_id))
                ships_new(rec, now)
                answer = later(functools.partial(self._held_answer, order, res_id, ships, expires_at, pol, split[j]))
            if rid is not None and window:
                requests[rid] = remembered(RouteOrder(order, command.policy, command.ttl), answer, lsn, now)
        return first


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """0..n-1 for every n in ``lengths``, concatenated."""
    if not len(lengths):
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    starts = np.repeat(ends - lengths, lengths)
    return np.arange(int(ends[-1])) - starts
