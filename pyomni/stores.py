"""The engine's store side: each shipment's life in its store, store time limits, order feeds, returns and the
facts settlement is computed from.

A mixin of :class:`~pyomni.Engine` (as :mod:`pyomni.selling` is for flash sales): every mutation here is a
command of :mod:`pyomni.commands` that passes the engine's one command path (decide, apply, journal,
remember), so store actions are idempotent by request id, journaled and replayed like everything else. The
values and the life cycle are described in :mod:`pyomni.fulfilment`; the money in :mod:`pyomni.settlement`.

How the pieces meet the reservations:

- A shipment is created ROUTED for every parcel a reservation holds -- routed one by one, in a batch, planned
  by the optimiser or re-routed -- and goes to its store's feed at once.
- The reservation decides whether it may leave: SHIPPED and COLLECTED need it CONFIRMED (paid); a release or
  expiry CANCELS its open shipments. Confirming takes the units off the shelf as it always has; a rejection
  after that puts them back first (then applies the reason's effect on the stock).
- A rejection (by the store, by the clock when nobody answered, or by the order system's ``reroute``) takes
  the store out of the order for good and routes its lines again at once; a new shipment goes to the new
  store's feed. When nothing can take them, the reservation keeps its other parcels and an
  :class:`~pyomni.fulfilment.OrderException` waits for a person (:meth:`StoreSide.resolve_exception`).

Examples
--------
>>> import pyomni
>>> from pyomni.fulfilment import StoreAction
>>> net = pyomni.demo_network(stores=6, warehouses=0, skus=3, seed=2)
>>> eng = pyomni.Engine(net, clock=lambda: 1_763_000_000.0)
>>> store = net.ids[0]
>>> _ = eng.set_stock(store, "SKU-000000", 4)
>>> a = eng.route_order(pyomni.Order("o-1", [("SKU-000000", 1)], pickup_location=store))
>>> [s.state.name for s in eng.shipments(store)]
['ROUTED']
>>> sid = eng.shipments(store)[0].id
>>> eng.accept_shipment(sid).state.name
'ACCEPTED'
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import errors, settlement, validate
from ._core import check_status
from .commands import (
    RegisterAttributionRule,
    Rerouted,
    ResolveException,
    ReturnLine,
    SetAttribution,
    SetStoreRules,
    ShipmentAction,
    ShipmentPlan,
    StoreDeadline,
)
from .fulfilment import (
    DEFAULT_STORE_RULES,
    TERMINAL,
    ExceptionState,
    OrderException,
    Rejection,
    RejectReason,
    ReturnRecord,
    ShipmentState,
    StoreAction,
    StoreEvent,
    StoreRules,
    StoreShipment,
)
from .model import Fulfilment, Line, LocationKind, Order, ReservationState, ShortLine
from .settlement import AttributionRule
from .validate import shown

__all__ = ["StoreSide", "StoreEvents", "MAX_EVENTS_PER_STORE", "FACT_FIELDS", "facts_table"]

#: Events kept per store for feeds to resume from; a feed that resumes from an older one gets a RESET.
MAX_EVENTS_PER_STORE = 4096

_S = ShipmentState
_EV_SET, _EV_ADJUST, _EV_RECEIVE, _EV_SALE, _EV_RETURN = 0, 1, 2, 3, 4      # pyomni._core.EVENT_KINDS
_TIMEOUT, _LATE, _NOT_COLLECTED = 0, 1, 2                                    # StoreDeadline kinds
_HELD, _CONFIRMED = ReservationState.HELD, ReservationState.CONFIRMED
_EPOCH = dt.date(1970, 1, 1)
#: a fact row's fields, in order (the columns of :data:`pyomni.settlement.FACTS_SCHEMA`; ``day`` as days since
#: 1970-01-01 while in memory)
FACT_FIELDS = ("fact", "kind", "day", "at", "order_id", "shipment_id", "line", "sku", "qty", "gross_cents",
               "coupon_cents", "fee_cents", "channel", "selling_store", "fulfilling_store", "home_store", "franchise",
               "rule", "sale_fact", "receiving_store")

# what each action moves a shipment to, and the states it may come from (a step may be skipped forward)
_DELIVERY_NEXT = {StoreAction.ACCEPT: (_S.ACCEPTED, {_S.ROUTED}),
                  StoreAction.PICK: (_S.PICKED, {_S.ROUTED, _S.ACCEPTED}),
                  StoreAction.PACK: (_S.PACKED, {_S.ROUTED, _S.ACCEPTED, _S.PICKED}),
                  StoreAction.SHIP: (_S.SHIPPED, {_S.ROUTED, _S.ACCEPTED, _S.PICKED, _S.PACKED})}
_PICKUP_NEXT = {StoreAction.ACCEPT: (_S.ACCEPTED, {_S.ROUTED}),
                StoreAction.PICK: (_S.PICKED, {_S.ROUTED, _S.ACCEPTED}),
                StoreAction.READY: (_S.READY_FOR_PICKUP, {_S.ROUTED, _S.ACCEPTED, _S.PICKED}),
                StoreAction.COLLECT: (_S.COLLECTED, {_S.READY_FOR_PICKUP})}
_STORE_REASONS = frozenset(RejectReason) - {RejectReason.TIMEOUT, RejectReason.ORDER_SYSTEM}


def facts_table(rows: Sequence[tuple]) -> pa.Table:
    """Fact rows (:data:`FACT_FIELDS`) as a table of :data:`pyomni.settlement.FACTS_SCHEMA`."""
    schema = settlement.FACTS_SCHEMA
    cols = list(zip(*rows)) if rows else [()] * len(FACT_FIELDS)
    arrays = {}
    for name, values in zip(FACT_FIELDS, cols):
        typ = schema.field(name).type
        arrays[name] = pa.array(values, pa.int32()).cast(typ) if name == "day" else pa.array(values, typ)
    return pa.table([arrays[f.name] for f in schema], schema=schema)


class StoreEvents:
    """What :meth:`StoreSide.store_events` found: the events, the sequence number to resume after, and whether
    the feed had to start over (``reset``: the events are every open shipment, as RESET)."""

    __slots__ = ("events", "last_seq", "reset")

    def __init__(self, events: list[StoreEvent], last_seq: int, reset: bool) -> None:
        self.events = events
        self.last_seq = last_seq
        self.reset = reset

    def __repr__(self) -> str:
        return f"StoreEvents({len(self.events)} events, last_seq={self.last_seq}, reset={self.reset})"


class _Ship:
    """A shipment as the engine keeps it (mutable, internal; :class:`StoreShipment` is the public copy)."""

    __slots__ = ("id", "rid", "order", "loc", "pickup", "state", "created_at", "updated_at", "due_at", "late",
                 "reason", "note", "skus", "qtys", "fulfilled_at", "lines", "tick")

    def __init__(self, sid: str, rid: str, order: Order, loc: int, pickup: bool, created_at: float,
                 skus: tuple[int, ...], qtys: tuple[int, ...]) -> None:
        self.id = sid
        self.rid = rid
        self.order = order
        self.loc = loc
        self.pickup = pickup
        self.state = _S.ROUTED
        self.created_at = created_at
        self.updated_at = created_at
        self.due_at: float | None = None
        self.late = False
        self.reason: RejectReason | None = None
        self.note = ""
        self.skus = skus            # only the lines this shipment carries (units > 0)
        self.qtys = qtys
        self.fulfilled_at: float | None = None
        self.lines: tuple[Line, ...] | None = None      # the public lines, built once
        self.tick = 0                                    # when its deadline was set, among equal deadlines


class StoreSide:
    """Store operations on the engine (a mixin of :class:`~pyomni.Engine`; see the module docstring)."""

    # provided by the engine (set by Engine.__init__, or its methods)
    _lock: Any
    _records: dict[str, Any]
    _loc_ids: tuple[str, ...]
    _sku_ids: list[str]
    _sku_index: dict[str, int]
    _ledger: Any
    _net: Any
    _no_effect: Any
    _execute: Callable[..., Any]
    _commit: Callable[..., Any]
    _loc: Callable[[Any, str], int]
    _sku: Callable[[Any, str], int]
    _parse: Callable[..., Any]
    _decide: Callable[..., tuple]
    _allocation: Callable[..., Any]
    _take: Callable[..., list[tuple]]
    _change_holds: Callable[..., None]
    _freed_by: Callable[..., dict[int, int]]
    _end: Callable[..., None]
    _wait: Callable[[int], None]
    _journal: Any
    _lsn: int

    def _init_stores(self) -> None:
        self._ships: dict[str, _Ship] = {}
        self._ships_of: dict[str, list[_Ship]] = {}           # reservation id -> its shipments, in order
        self._open_at: dict[int, dict[str, _Ship]] = {}        # location -> its open shipments
        self._store_clock: list[tuple[float, int, str, int]] = []   # (due, tiebreak, shipment id, state)
        self._store_ticks = 0
        self._store_seq = 0                                    # last store event number
        self._events_at: dict[int, list[tuple[int, str, StoreShipment, int]]] = {}   # (seq, kind, shipment, lsn)
        self._floor_at: dict[int, int] = {}                    # per store: events up to here may be gone
        self._floor = 0                                        # every store: up to here (a restart)
        self._store_rules: dict[int, StoreRules] = {}
        self._default_store_rules: StoreRules | None = None    # None: no time limits unless a store has its own
        self._exceptions: dict[str, OrderException] = {}
        self._facts: list[tuple] = []                          # settlement.FACTS_SCHEMA rows
        self._sale_fact: dict[tuple[str, int], int] = {}       # (shipment id, sku index) -> its sale fact
        self._returned: dict[int, int] = {}                    # sale fact -> units returned
        self._line_done: dict[tuple[str, int], int] = {}       # (reservation id, sku) -> units fulfilled so far
        self._returns: dict[str, ReturnRecord] = {}
        self._discrepancies: list[tuple] = []                  # (at, location, sku, units, reason, shipment)
        self._rules: dict[str, AttributionRule] = {}
        self._channel_rules: dict[str, str] = {}               # channel ("" = default) -> rule key
        self._add_rule(settlement.FULFILLER_TAKES_ALL)
        self._store_geo: tuple[Any, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._store_waiters: dict[int, set[threading.Event]] = {}      # feeds asleep on a store's events

    # -- configuration ------------------------------------------------------------------------
    def set_store_rules(self, location: str | None, rules: StoreRules | None, *,
                        request_id: str | None = None) -> StoreRules:
        """Set a store's time limits and opening hours (``location`` None: the default of every store without
        its own); ``rules`` None removes them (a store goes back to the default; the default None means no
        time limits at all, which is how an engine starts -- ``pyomni serve`` sets the default on a new data
        directory). Applies to shipments from the next step on; returns the rules now in force there (None:
        no limits)."""
        where = "" if location is None else validate.identifier(location, "location")
        if where:
            self._loc(where, "location")
        if rules is not None:
            validate.instance(rules, StoreRules, "rules", "a StoreRules")
        return self._execute(SetStoreRules(where, rules), request_id)

    def store_rules(self, location: str | None = None) -> StoreRules | None:
        """The rules in force at a store (or the default); None: no time limits."""
        if location is None:
            return self._default_store_rules
        return self._limits_at(self._loc(location, "location"))

    def register_attribution_rule(self, rule: AttributionRule, *, request_id: str | None = None) -> None:
        """Make an attribution rule selectable (by its key, and by its name for its newest version)."""
        validate.instance(rule, AttributionRule, "rule", "a pyomni.settlement.AttributionRule")
        for _, store in rule.regional_stores:
            self._loc(store, "rule.regional_stores")
        self._execute(RegisterAttributionRule(rule), request_id)

    def set_attribution(self, channel: str | None, rule: str | None, *, request_id: str | None = None) -> None:
        """Credit a channel's orders by ``rule`` (a registered key or name); channel None sets the default,
        ``rule`` None removes a channel's own choice."""
        where = "" if channel is None else validate.identifier(channel, "channel")
        key = None
        if rule is not None:
            key = self.attribution_rule(rule).key
        elif not where:
            raise errors.InvalidArgument("the default attribution rule cannot be removed; set another one",
                                         field="rule")
        self._execute(SetAttribution(where, key), request_id)

    def attribution_rule(self, key: str | None = None, *, channel: str | None = None) -> AttributionRule:
        """A registered rule by key or name, or (``key`` None) the one a channel's orders use."""
        if key is None:
            where = "" if channel is None else validate.identifier(channel, "channel")
            key = self._channel_rules.get(where, self._channel_rules[""])
        else:
            validate.identifier(key, "key")
        rule = self._rules.get(key)
        if rule is None:
            raise errors.UnknownAttributionRule(f"no attribution rule {shown(key)}", field="rule")
        return rule

    def attribution_rules(self) -> list[AttributionRule]:
        """Every registered rule version."""
        return sorted({r.key: r for r in self._rules.values()}.values(), key=lambda r: r.key)

    # -- store actions ------------------------------------------------------------------------
    def store_action(self, shipment_id: str, action: StoreAction | int | str, *,
                     reason: RejectReason | int | str | None = None, note: str = "",
                     request_id: str | None = None) -> StoreShipment | Rejection:
        """Do ``action`` to a shipment; a REJECT needs a ``reason`` and answers a :class:`Rejection`."""
        validate.identifier(shipment_id, "shipment_id")
        act = validate.member(action, "action", StoreAction, by_name=True, by_value=True)
        note = validate.text(note, "note", max_chars=500)
        code = 0
        if act is StoreAction.REJECT:
            if reason is None:
                raise errors.InvalidArgument("a rejection needs a reason", field="reason")
            why = validate.member(reason, "reason", RejectReason, by_name=True, by_value=True)
            if why not in _STORE_REASONS:
                raise errors.InvalidArgument(f"a store cannot reject for {why.name}", field="reason")
            code = int(why)
        elif reason is not None:
            raise errors.InvalidArgument("only a rejection takes a reason", field="reason")
        return self._execute(ShipmentAction(shipment_id, int(act), code, note), request_id)

    def accept_shipment(self, shipment_id: str, *, request_id: str | None = None) -> StoreShipment:
        """The store takes the shipment on (within its answer limit)."""
        return self.store_action(shipment_id, StoreAction.ACCEPT, request_id=request_id)  # type: ignore[return-value]

    def pick_shipment(self, shipment_id: str, *, request_id: str | None = None) -> StoreShipment:
        return self.store_action(shipment_id, StoreAction.PICK, request_id=request_id)  # type: ignore[return-value]

    def pack_shipment(self, shipment_id: str, *, request_id: str | None = None) -> StoreShipment:
        return self.store_action(shipment_id, StoreAction.PACK, request_id=request_id)  # type: ignore[return-value]

    def ship_shipment(self, shipment_id: str, *, request_id: str | None = None) -> StoreShipment:
        """Handed to the courier: the lines are fulfilled and credited. Needs the reservation CONFIRMED."""
        return self.store_action(shipment_id, StoreAction.SHIP, request_id=request_id)  # type: ignore[return-value]

    def ready_shipment(self, shipment_id: str, *, request_id: str | None = None) -> StoreShipment:
        """Ready for the customer to collect: the collection deadline starts."""
        return self.store_action(shipment_id, StoreAction.READY, request_id=request_id)  # type: ignore[return-value]

    def collect_shipment(self, shipment_id: str, *, request_id: str | None = None) -> StoreShipment:
        """The customer took it: the lines are fulfilled and credited. Needs the reservation CONFIRMED."""
        return self.store_action(shipment_id, StoreAction.COLLECT,  # type: ignore[return-value]
                                 request_id=request_id)

    def reject_shipment(self, shipment_id: str, reason: RejectReason | int | str, *, note: str = "",
                        request_id: str | None = None) -> Rejection:
        """The store gives the shipment back; its lines are re-routed away from every store that refused them."""
        return self.store_action(shipment_id, StoreAction.REJECT, reason=reason, note=note,  # type: ignore[return-value]
                                 request_id=request_id)

    def return_line(self, shipment_id: str, sku: str, qty: int, *, location: str,
                    request_id: str | None = None) -> ReturnRecord:
        """Units of a fulfilled shipment's line handed back at any ``location``: restocked there, and
        everything their sale credited is reversed in proportion (:mod:`pyomni.settlement`)."""
        validate.identifier(shipment_id, "shipment_id")
        validate.identifier(sku, "sku")
        qty = validate.quantity(qty, "qty")
        validate.identifier(location, "location")
        return self._execute(ReturnLine(shipment_id, sku, qty, location), request_id)

    def resolve_exception(self, exception_id: str, *, retry: bool = False, note: str = "",
                          request_id: str | None = None) -> OrderException:
        """Close an order exception (a person dealt with it: ``note`` says how), or with ``retry`` route its
        lines again (after a restock, say); a retry that still finds no place leaves it OPEN."""
        validate.identifier(exception_id, "exception_id")
        retry = validate.flag(retry, "retry")
        note = validate.text(note, "note", max_chars=500)
        return self._execute(ResolveException(exception_id, retry, note), request_id)

    # -- queries --------------------------------------------------------------------------------
    def shipment(self, shipment_id: str) -> StoreShipment:
        """One shipment as its store sees it."""
        with self._lock:
            return self._public_ship(self._ship(shipment_id))

    def shipments(self, location: str | None = None, *, open_only: bool = True, order_id: str | None = None,
                  after: str | None = None, limit: int = 1000) -> list[StoreShipment]:
        """Shipments in id order (a store's, or every store's), open ones only unless ``open_only`` is False;
        ``after`` pages on from a shipment id."""
        open_only = validate.flag(open_only, "open_only")
        limit = validate.integer(limit, "limit", low=1, high=100_000)
        if after is not None:
            validate.identifier(after, "after")
        with self._lock:
            if location is not None:
                loc = self._loc(location, "location")
                pool: Iterable[_Ship] = (self._open_at.get(loc, {}).values() if open_only
                                         else (s for s in self._ships.values() if s.loc == loc))
            else:
                pool = (s for s in self._ships.values() if not open_only or s.state not in TERMINAL)
            if order_id is not None:
                validate.identifier(order_id, "order_id")
                pool = (s for s in pool if s.order.id == order_id)
            chosen = sorted((s for s in pool if after is None or s.id > after), key=lambda s: s.id)[:limit]
            return [self._public_ship(s) for s in chosen]

    @property
    def store_seq(self) -> int:
        """The newest store event's sequence number (a feed that saw it is up to date)."""
        return self._store_seq

    def store_events(self, locations: Sequence[str], after: int = 0, *, limit: int = 10_000) -> StoreEvents:
        """The store events of ``locations`` after sequence number ``after``, oldest first (at most ``limit``).

        A feed resumes from the last ``seq`` it applied. If the engine no longer has every event after it (a
        restart, or more than :data:`MAX_EVENTS_PER_STORE` since), the answer is a reset: every open
        shipment of those stores as a RESET event -- the feed replaces its list and goes on after
        ``last_seq``. ``after`` 0 always starts with a reset.
        """
        locs = sorted({self._loc(x, "locations") for x in validate.identifiers(locations, "locations")})
        if not locs:
            raise errors.InvalidArgument("name at least one store", field="locations")
        after = validate.integer(after, "after", low=0, high=2**63 - 1)
        limit = validate.integer(limit, "limit", low=1, high=1_000_000)
        with self._lock:
            last = self._store_seq
            if after == 0 or after > last or any(after < max(self._floor, self._floor_at.get(x, 0)) for x in locs):
                events = [StoreEvent(last, self._loc_ids[s.loc], "RESET", self._public_ship(s))
                          for x in locs for s in sorted(self._open_at.get(x, {}).values(), key=lambda s: s.id)]
                answer, lsn = StoreEvents(events, last, True), self._lsn
            else:
                found: list[tuple[int, str, StoreShipment, int]] = []
                for x in locs:
                    evs = self._events_at.get(x)
                    if evs:
                        found.extend(evs[bisect.bisect_right(evs, after, key=lambda e: e[0]):])
                found.sort(key=lambda e: e[0])
                found = found[:limit]
                out = [StoreEvent(seq, ship.location, kind, ship) for seq, kind, ship, _ in found]
                answer = StoreEvents(out, found[-1][0] if len(found) == limit else last, False)
                lsn = max((e[3] for e in found), default=0)
        # a feed shows only what is durable: a store must never act on a shipment a crash would undo
        if lsn and self._journal is not None:
            self._wait(min(lsn, self._lsn))
        return answer

    def wait_store_events(self, locations: Sequence[str], after: int, timeout: float | None = None, *,
                          limit: int = 10_000) -> StoreEvents:
        """:meth:`store_events`, but if there are none yet, sleep until one of ``locations`` has one (or
        ``timeout`` seconds pass: then the answer is empty, with ``last_seq`` the current sequence number).

        What a store's feed runs: each feed sleeps on its own stores only, so a busy engine wakes a feed
        for that feed's events, not for every command.
        """
        timeout = validate.timeout(timeout)
        first = self.store_events(locations, after, limit=limit)
        if first.events or first.reset:
            return first
        locs = {self._loc(x, "locations") for x in locations}
        woken = threading.Event()
        with self._lock:
            for x in locs:
                self._store_waiters.setdefault(x, set()).add(woken)
        try:
            again = self.store_events(locations, after, limit=limit)    # an event between the two looks
            if again.events or again.reset:
                return again
            woken.wait(timeout)
        finally:
            with self._lock:
                for x in locs:
                    waiting = self._store_waiters.get(x)
                    if waiting is not None:
                        waiting.discard(woken)
                        if not waiting:
                            del self._store_waiters[x]
        return self.store_events(locations, after, limit=limit)

    def order_exceptions(self, state: ExceptionState | None = ExceptionState.OPEN) -> list[OrderException]:
        """Order exceptions in id order (open ones by default; None: all)."""
        if state is not None:
            state = validate.member(state, "state", ExceptionState, by_name=True, by_value=True)
        with self._lock:
            return [x for _, x in sorted(self._exceptions.items()) if state is None or x.state is state]

    def returns(self) -> list[ReturnRecord]:
        with self._lock:
            return [r for _, r in sorted(self._returns.items())]

    def discrepancies(self) -> pa.Table:
        """Stock the stores found missing or damaged: ``at``, ``location``, ``sku``, ``units``, ``reason``,
        ``shipment_id``."""
        with self._lock:
            rows = list(self._discrepancies)
        return pa.table({"at": pa.array([r[0] for r in rows], pa.float64()),
                         "location": pa.array([r[1] for r in rows], pa.string()),
                         "sku": pa.array([r[2] for r in rows], pa.string()),
                         "units": pa.array([r[3] for r in rows], pa.int64()),
                         "reason": pa.array([r[4] for r in rows], pa.string()),
                         "shipment_id": pa.array([r[5] for r in rows], pa.string())})

    def settlement_facts(self) -> pa.Table:
        """Every fulfilled shipment line and every return so far (:data:`pyomni.settlement.FACTS_SCHEMA`)."""
        with self._lock:
            rows = list(self._facts)
        return facts_table(rows)

    def settlement(self, *, day: Any = None, entries: bool = False) -> pa.Table:
        """The settlement ledger: per business day and party (``entries`` True: every entry); ``day`` (a
        ``datetime.date`` or ISO string) keeps one day."""
        entries = validate.flag(entries, "entries")
        with self._lock:
            rows = list(self._facts)
            rules = {k: r for k, r in self._rules.items() if k == r.key}
        table = settlement.settle(facts_table(rows), rules)
        out = table if entries else settlement.daily(table)
        if day is not None:
            when = validate.instance(day, (dt.date, str), "day", "a datetime.date or an ISO date")
            try:
                when = dt.date.fromisoformat(when) if isinstance(when, str) else when
            except ValueError:
                raise errors.InvalidArgument(f"day {shown(day)} is not an ISO date", field="day") from None
            out = out.filter(pc.equal(out.column("day"), pa.scalar(when, pa.date32())))
        return out

    # -- deciders and appliers ------------------------------------------------------------------
    def _apply_store_rules(self, command: SetStoreRules, effect: None, now: float,
                           request_id: str | None) -> StoreRules | None:
        if not command.location:
            self._default_store_rules = command.rules
            return command.rules
        loc = self._loc(command.location, "location")
        if command.rules is None:
            self._store_rules.pop(loc, None)
        else:
            self._store_rules[loc] = command.rules
        return self._limits_at(loc)

    def _apply_attribution_rule(self, command: RegisterAttributionRule, effect: None, now: float,
                                request_id: str | None) -> None:
        self._add_rule(command.rule)

    def _add_rule(self, rule: AttributionRule) -> None:
        self._rules[rule.key] = rule
        latest = self._rules.get(rule.name)
        if latest is None or latest.version <= rule.version:
            self._rules[rule.name] = rule
        self._channel_rules.setdefault("", rule.key)

    def _apply_attribution(self, command: SetAttribution, effect: None, now: float, request_id: str | None) -> None:
        if command.rule is None:
            self._channel_rules.pop(command.channel, None)
        else:
            if command.rule not in self._rules:
                raise errors.UnknownAttributionRule(f"no attribution rule {shown(command.rule)}", field="rule")
            self._channel_rules[command.channel] = command.rule

    def _decide_action(self, command: ShipmentAction, now: float) -> tuple[Any, Any]:
        ship = self._ship(command.shipment_id)
        act = StoreAction(command.action)
        if ship.state in TERMINAL:
            raise errors.ShipmentStateConflict(f"shipment {shown(ship.id)} is {ship.state.name}",
                                               field="shipment_id")
        if act is StoreAction.REJECT:
            return self._decide_move(self._records[ship.rid], ship)
        nxt = (_PICKUP_NEXT if ship.pickup else _DELIVERY_NEXT).get(act)
        if nxt is None:
            path = "pickup" if ship.pickup else "delivery"
            raise errors.ShipmentStateConflict(f"{act.name} is not a step of a {path} shipment", field="action")
        if ship.state not in nxt[1]:
            need = " or ".join(x.name for x in sorted(nxt[1]))
            raise errors.ShipmentStateConflict(f"shipment {shown(ship.id)} is {ship.state.name}; {act.name} needs "
                                               f"it {need}", field="action")
        rec = self._records[ship.rid]
        if nxt[0] in (_S.SHIPPED, _S.COLLECTED) and rec.state is not _CONFIRMED:
            raise errors.ShipmentStateConflict(f"reservation {shown(rec.id)} is {rec.state.name}: the order "
                                               f"system confirms (payment) before the goods leave",
                                               field="shipment_id")
        return None, None

    def _apply_action(self, command: ShipmentAction, effect: Rerouted | None, now: float,
                      request_id: str | None) -> StoreShipment | Rejection:
        ship = self._ship(command.shipment_id)
        act = StoreAction(command.action)
        if act is StoreAction.REJECT:
            assert effect is not None
            return self._apply_move(ship, RejectReason(command.reason), command.note, effect, now)
        state = (_PICKUP_NEXT if ship.pickup else _DELIVERY_NEXT)[act][0]
        public = self._step(ship, state, now)
        if state in (_S.SHIPPED, _S.COLLECTED):
            self._fulfil(ship, now)
        return public

    def _decide_deadline(self, command: StoreDeadline, now: float) -> tuple[Any, Any]:
        ship = self._ship(command.shipment_id)
        if ship.due_at is None or ship.due_at > now or ship.state in TERMINAL:
            return self._no_effect, None                # it moved on meanwhile (its reservation expired ...)
        if command.kind == _TIMEOUT and ship.state is _S.ROUTED:
            return self._decide_move(self._records[ship.rid], ship)
        if (command.kind == _LATE and ship.state in (_S.ACCEPTED, _S.PICKED)) or (
                command.kind == _NOT_COLLECTED and ship.state is _S.READY_FOR_PICKUP):
            return None, None
        return self._no_effect, None

    def _apply_deadline(self, command: StoreDeadline, effect: Rerouted | None, now: float,
                        request_id: str | None) -> StoreShipment | Rejection | None:
        if effect is self._no_effect:
            return None
        ship = self._ship(command.shipment_id)
        if command.kind == _TIMEOUT:
            assert effect is not None
            return self._apply_move(ship, RejectReason.TIMEOUT, "", effect, now)
        if command.kind == _LATE:
            ship.late = True
            ship.due_at = None
            self._event(ship, "LATE")
            return self._public_ship(ship)
        # not collected: the units go back (to the shelf if they were paid for, to the free stock if held)
        rec = self._records[ship.rid]
        self._undo_ship(rec, ship)
        self._step(ship, _S.NOT_COLLECTED, now)
        if rec.state is _HELD and not rec.shipments:
            self._end(rec, ReservationState.RELEASED)
        return self._public_ship(ship)

    def _decide_return(self, command: ReturnLine, now: float) -> tuple[Any, Any]:
        ship = self._ship(command.shipment_id)
        sku = self._sku(command.sku, "sku")
        self._loc(command.location, "location")
        if ship.state not in (_S.SHIPPED, _S.COLLECTED):
            raise errors.ReturnNotAllowed(f"shipment {shown(ship.id)} is {ship.state.name}, not fulfilled",
                                          field="shipment_id")
        fact = self._sale_fact.get((ship.id, sku))
        if fact is None:
            raise errors.ReturnNotAllowed(f"shipment {shown(ship.id)} carried no {shown(command.sku)}", field="sku")
        left = self._facts[fact][8] - self._returned.get(fact, 0)
        if command.qty > left:
            raise errors.ReturnNotAllowed(f"only {left} units of {shown(command.sku)} from {shown(ship.id)} are "
                                          f"left to return", field="qty")
        window = self._rules_at(ship.loc).return_days * 86_400.0
        assert ship.fulfilled_at is not None
        if now > ship.fulfilled_at + window:
            raise errors.ReturnNotAllowed(f"the return window of {shown(ship.id)} closed "
                                          f"{(now - ship.fulfilled_at - window) / 86_400.0:.1f} days ago",
                                          field="shipment_id")
        return None, None

    def _apply_return(self, command: ReturnLine, effect: None, now: float, request_id: str | None) -> ReturnRecord:
        ship = self._ship(command.shipment_id)
        sku = self._sku(command.sku, "sku")
        loc = self._loc(command.location, "location")
        fact = self._sale_fact[(ship.id, sku)]
        check_status(self._ledger.apply_event(loc, sku, _EV_RETURN, command.qty, -1),
                     f"return {command.qty} of {shown(command.sku)} at {shown(command.location)}", field="qty")
        self._returned[fact] = self._returned.get(fact, 0) + command.qty
        sale = self._facts[fact]
        rid = f"RT{len(self._returns) + 1:010d}"
        hours = self._rules_at(loc).hours
        day = (hours.business_day(now) - _EPOCH).days
        self._facts.append((len(self._facts), "return", day, now, *sale[4:8], command.qty, 0, 0, 0, *sale[12:18],
                            fact, command.location))
        record = ReturnRecord(rid, ship.id, ship.order.id, command.sku, command.qty, command.location, now, True)
        self._returns[rid] = record
        return record

    def _decide_resolve(self, command: ResolveException, now: float) -> tuple[Any, Any]:
        exc = self._exception(command.exception_id)
        if exc.state is not ExceptionState.OPEN:
            raise errors.FailedPrecondition(f"order exception {shown(exc.id)} is already resolved",
                                            field="exception_id")
        if not command.retry:
            return None, None
        rec = self._records[exc.reservation_id]
        if rec.state not in (_HELD, _CONFIRMED):
            raise errors.FailedPrecondition(f"reservation {shown(rec.id)} is {rec.state.name}; nothing to route",
                                            field="exception_id")
        skus = [self._sku_index[x.sku] for x in exc.lines]
        qtys = [x.requested for x in exc.lines]
        return self._decide_lines(rec, -1, skus, qtys)

    def _apply_resolve(self, command: ResolveException, effect: Rerouted | None, now: float,
                       request_id: str | None) -> OrderException:
        exc = self._exception(command.exception_id)
        if effect is not None:
            if effect.shipments is None:
                return exc                              # still nowhere to go: stays open
            rec = self._records[exc.reservation_id]
            new = self._take_more(rec, effect.shipments, now)
            note = command.note or "re-routed to " + ", ".join(f"{s.id} at {self._loc_ids[s.loc]}" for s in new)
        else:
            note = command.note or "closed"
        done = OrderException(exc.id, exc.order_id, exc.reservation_id, exc.shipment_id, exc.lines, exc.reason,
                              exc.created_at, ExceptionState.RESOLVED, note, now)
        self._exceptions[exc.id] = done
        return done

    # -- moving a shipment's lines elsewhere ------------------------------------------------------
    def _decide_move(self, rec: Any, ship: _Ship) -> tuple[Rerouted, Any]:
        """Route a shipment's lines again, away from every location that ever rejected the order and from the
        reservation's other locations; the decision changes nothing."""
        return self._decide_lines(rec, ship.loc, list(ship.skus), list(ship.qtys), ship)

    def _decide_lines(self, rec: Any, loc: int, skus: list[int], qtys: list[int],
                      ship: _Ship | None = None) -> tuple[Rerouted, Any]:
        from .model import AllocationStatus
        pol = rec.policy
        others = [s for s in rec.shipments if s[0] != loc]
        try:
            p = self._parse(rec.order, pol)
        except errors.PyomniError:                      # the order no longer routes (its pickup store closed ...)
            short = tuple(ShortLine(self._sku_ids[s], q, 0, "CONSTRAINTS") for s, q in zip(skus, qtys))
            return Rerouted(loc, None, short), None
        excluded = tuple(sorted(rec.excluded | ({loc} if loc >= 0 else set()) | {s[0] for s in others}))
        budget = max(1, p.max_ship - len(others))
        # a held parcel's units count as released for channel limits (the ledger is not touched: see
        # Engine._decide_reroute); a confirmed one's are off the shelf until the rejection puts them back
        freed = self._freed_by([self._ship_tuple(rec, ship)]) if rec.state is _HELD and ship is not None else None
        r = self._decide(p, pol, False, skus, qtys, excluded, budget, freed)
        if r[0] != 0:
            live = self._allocation(p, pol, r, AllocationStatus.UNFULFILLABLE, skus, qtys)
            # every line the parcel carried goes to the exception, also those that could go elsewhere alone:
            # they travel together or wait together, never dropped
            missing = {x.sku: x for x in live.short_lines}
            lines = tuple(missing.get(self._sku_ids[s]) or ShortLine(self._sku_ids[s], q, q, "CONSTRAINTS")
                          for s, q in zip(skus, qtys))
            return Rerouted(loc, None, lines), None
        ships = tuple(ShipmentPlan(s[0], s[1], s[2], s[3], tuple(skus)) for s in r[1])
        return Rerouted(loc, ships, (), r[8]), None

    def _apply_move(self, ship: _Ship, reason: RejectReason, note: str, effect: Rerouted, now: float) -> Rejection:
        rec = self._records[ship.rid]
        self._undo_ship(rec, ship)
        lost = self._stock_effect(ship, reason, now)
        ship.reason = reason
        ship.note = note
        self._step(ship, _S.REJECTED, now)
        rec.excluded = rec.excluded | {ship.loc}
        if effect.shipments is None:
            exc = self._raise_exception(rec, ship, effect.short, f"{reason.name}: no other location can take it",
                                        now)
            return Rejection(self._public_ship(ship), (), exc, lost)
        new = self._take_more(rec, effect.shipments, now)
        return Rejection(self._public_ship(ship), tuple(self._public_ship(s) for s in new), None, lost)

    def _undo_ship(self, rec: Any, ship: _Ship) -> tuple:
        """Take a shipment out of its reservation: held units released, confirmed ones back on the shelf."""
        tup = self._ship_tuple(rec, ship)
        rec.shipments = [s for s in rec.shipments if s is not tup]
        if rec.state is _HELD:
            self._change_holds([tup], 1)
            self._check(self._ledger.add_load(ship.loc, -1, 0))
        else:
            for s, t in zip(ship.skus, ship.qtys):
                self._check(self._ledger.apply_event(ship.loc, s, _EV_RECEIVE, t, -1))
            if self._ledger.loads()[1][ship.loc] > 0:
                self._check(self._ledger.add_load(ship.loc, 0, -1))
        return tup

    def _stock_effect(self, ship: _Ship, reason: RejectReason, now: float) -> tuple[tuple[str, str, int], ...]:
        lost = []
        loc_id = self._loc_ids[ship.loc]
        # a store that cannot find an item has none of it; a warehouse misses the parcel's units (its cycle
        # count finds the rest), so NOT_FOUND there writes off what the parcel asked for
        shelf = int(self._net.kind[ship.loc]) == int(LocationKind.STORE)
        for s, t in zip(ship.skus, ship.qtys):
            if reason is RejectReason.NOT_FOUND and shelf:
                on_hand, reserved, _ = self._ledger.cell(ship.loc, s)
                units = on_hand - reserved
                if units > 0:
                    self._check(self._ledger.apply_event(ship.loc, s, _EV_SET, reserved, -1))
            elif reason in (RejectReason.DAMAGED, RejectReason.NOT_FOUND):
                units = t
                self._check(self._ledger.apply_event(ship.loc, s, _EV_ADJUST, -t, -1))
            else:
                continue
            if units > 0:
                lost.append((loc_id, self._sku_ids[s], units))
                self._discrepancies.append((now, loc_id, self._sku_ids[s], units, reason.name, ship.id))
        return tuple(lost)

    def _take_more(self, rec: Any, plans: Sequence[ShipmentPlan], now: float) -> list[_Ship]:
        """Hold new parcels for a reservation (and take them off the shelf at once if it is confirmed)."""
        ships = self._take(plans, ())
        if rec.state is _CONFIRMED:
            self._change_holds(ships, 2)
            for t in ships:
                self._check(self._ledger.add_load(t[0], -1, 1))
        rec.shipments = rec.shipments + ships
        return [self._new_ship(rec, t, now) for t in ships]

    def _raise_exception(self, rec: Any, ship: _Ship | None, short: Iterable[ShortLine], why: str,
                         now: float) -> OrderException:
        xid = f"X{len(self._exceptions) + 1:010d}"
        exc = OrderException(xid, rec.order.id, rec.id, ship.id if ship is not None else "", tuple(short), why, now)
        self._exceptions[xid] = exc
        return exc

    # -- shipments follow their reservation (called by the engine's appliers) ----------------------
    def _ships_new(self, rec: Any, now: float) -> None:
        """Every parcel of a new reservation becomes a ROUTED shipment on its store's feed."""
        for t in rec.shipments:
            self._new_ship(rec, t, now)

    def _new_ship(self, rec: Any, t: tuple, now: float) -> _Ship:
        mine = self._ships_of.setdefault(rec.id, [])
        order = rec.order
        pickup = order.fulfilment is Fulfilment.PICKUP and self._loc_ids[t[0]] == order.pickup_location
        skus = tuple(s for s, q in zip(t[5], t[3]) if q)
        qtys = tuple(q for q in t[3] if q)
        ship = _Ship(f"{rec.id}-{len(mine) + 1}", rec.id, order, t[0], pickup, now, skus, qtys)
        mine.append(ship)
        self._ships[ship.id] = ship
        self._open_at.setdefault(ship.loc, {})[ship.id] = ship
        rules = self._limits_at(ship.loc)
        if rules is not None:
            self._schedule(ship, rules.hours.advance(now, rules.answer_limit(order.fulfilment)))
        self._event(ship, "ROUTED")
        return ship

    def _ship_removed(self, rec: Any, loc: int, now: float) -> None:
        """The order system re-routed away from ``loc`` (``Engine.reroute``): its shipment is REJECTED."""
        for ship in self._ships_of.get(rec.id, ()):
            if ship.loc == loc and ship.state not in TERMINAL:
                ship.reason = RejectReason.ORDER_SYSTEM
                self._step(ship, _S.REJECTED, now)

    def _ships_added(self, rec: Any, now: float) -> None:
        """Parcels the reservation gained (``Engine.reroute``) become shipments."""
        have = {s.loc for s in self._ships_of.get(rec.id, ())
                if s.state not in TERMINAL or s.state in (_S.SHIPPED, _S.COLLECTED)}
        for t in rec.shipments:
            if t[0] not in have:
                self._new_ship(rec, t, now)

    def _ships_cancelled(self, rec: Any, now: float) -> None:
        """The reservation was released or expired: its open shipments are CANCELLED."""
        for ship in self._ships_of.get(rec.id, ()):
            if ship.state not in TERMINAL:
                self._step(ship, _S.CANCELLED, now)

    # -- the clock --------------------------------------------------------------------------------
    def _store_due(self, now: float) -> bool:
        clock = self._store_clock
        return bool(clock) and clock[0][0] <= now

    def _run_store_clock(self, now: float) -> None:
        """Under the lock: each shipment deadline that passed by ``now``, as a command of its own."""
        clock = self._store_clock
        while clock and clock[0][0] <= now:
            entry = heapq.heappop(clock)
            due, _, sid, state = entry
            ship = self._ships.get(sid)
            if ship is None or ship.state != state or ship.due_at != due:
                continue                                  # stale: the shipment moved on
            kind = {_S.ROUTED: _TIMEOUT, _S.ACCEPTED: _LATE, _S.PICKED: _LATE,
                    _S.READY_FOR_PICKUP: _NOT_COLLECTED}.get(ship.state)
            if kind is None:
                continue
            try:
                self._commit(StoreDeadline(sid, kind), None)    # type: ignore[attr-defined]
            except BaseException:
                heapq.heappush(clock, entry)              # it fires with the next command instead
                raise

    def _schedule(self, ship: _Ship, due: float | None) -> None:
        ship.due_at = due
        if due is not None:
            self._store_ticks += 1
            ship.tick = self._store_ticks                   # equal deadlines fire in the order they were set,
            heapq.heappush(self._store_clock, (due, ship.tick, ship.id, int(ship.state)))   # also after a restart

    def _step(self, ship: _Ship, state: ShipmentState, now: float) -> StoreShipment:
        """Move a shipment to ``state``: its next deadline, its store's open list and feed."""
        was = ship.state
        ship.state = state
        ship.updated_at = now
        if state in TERMINAL:
            ship.due_at = None
            self._open_at.get(ship.loc, {}).pop(ship.id, None)
        elif (rules := self._limits_at(ship.loc)) is None:
            ship.due_at = None
        else:
            fulfilment: Fulfilment = ship.order.fulfilment    # type: ignore[assignment]  # never None
            if state is _S.ACCEPTED:
                self._schedule(ship, None if ship.late else rules.hours.advance(now, rules.pick_limit(fulfilment)))
            elif state is _S.PICKED:
                if was is _S.ROUTED:                       # picked without accepting: the pick limit starts here
                    self._schedule(ship, rules.hours.advance(now, rules.pick_limit(fulfilment)))
                elif ship.due_at is not None:
                    self._schedule(ship, ship.due_at)       # same deadline, rescheduled under the new state
            elif state is _S.READY_FOR_PICKUP:
                self._schedule(ship, rules.hours.closing_after(now, rules.collect_days))
            else:
                ship.due_at = None
        return self._event(ship, state.name)

    def _event(self, ship: _Ship, kind: str) -> StoreShipment:
        """Put the shipment as it is now on its store's feed; returns that copy (the answer, often)."""
        self._store_seq += 1
        evs = self._events_at.setdefault(ship.loc, [])
        public = self._public_ship(ship)
        evs.append((self._store_seq, kind, public, self._lsn + 1))     # its command's record
        waiting = self._store_waiters.get(ship.loc)
        if waiting:
            for woken in waiting:
                woken.set()
        if len(evs) > 2 * MAX_EVENTS_PER_STORE:
            cut = len(evs) - MAX_EVENTS_PER_STORE
            self._floor_at[ship.loc] = evs[cut - 1][0]
            del evs[:cut]
        return public

    # -- fulfilment: the facts settlement is computed from -----------------------------------------
    def _fulfil(self, ship: _Ship, now: float) -> None:
        ship.fulfilled_at = now
        order = ship.order
        rule = self._rule_of(order)
        prices = {self._sku_index[x.sku]: x for x in order.lines}
        coupons = self._coupon_split(order)
        gross = [prices[s].unit_price_cents * q for s, q in zip(ship.skus, ship.qtys)]
        fees = settlement.split_cents(rule.fee_cents, gross if any(gross) else list(ship.qtys))
        loc_id = self._loc_ids[ship.loc]
        home = self._home_store(order, rule)
        day = (self._rules_at(ship.loc).hours.business_day(now) - _EPOCH).days
        franchise = bool(self._net.franchise[ship.loc])
        for i, (s, q) in enumerate(zip(ship.skus, ship.qtys)):
            line = prices[s]
            done = self._line_done.get((ship.rid, s), 0)
            self._line_done[(ship.rid, s)] = done + q
            c = coupons[s]
            coupon = c * (done + q) // line.qty - c * done // line.qty
            fact = len(self._facts)
            self._sale_fact[(ship.id, s)] = fact
            self._facts.append((fact, "sale", day, now, order.id, ship.id, order.lines.index(line), line.sku, q,
                                gross[i], coupon, fees[i], order.channel, order.selling_store or "", loc_id, home,
                                franchise, rule.key, -1, ""))

    def _coupon_split(self, order: Order) -> dict[int, int]:
        weights = [x.unit_price_cents * x.qty for x in order.lines]
        parts = settlement.split_cents(order.coupon_cents, weights) if order.coupon_cents else [0] * len(weights)
        return {self._sku_index[x.sku]: c for x, c in zip(order.lines, parts)}

    def _rule_of(self, order: Order) -> AttributionRule:
        key = order.attribution or self._channel_rules.get(order.channel, self._channel_rules[""])
        return self._rules[key]

    def _home_store(self, order: Order, rule: AttributionRule) -> str:
        if order.fulfilment is Fulfilment.PICKUP and order.pickup_location is not None:
            return order.pickup_location
        assert order.destination is not None
        geo = self._store_geo
        if geo is None or geo[0] is not self._net:
            net = self._net
            lat = np.radians(np.asarray(net.lat, dtype=np.float64))
            lon = np.radians(np.asarray(net.lon, dtype=np.float64))
            xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
            stores = np.asarray(net.kind) == int(LocationKind.STORE)
            geo = self._store_geo = (net, xyz, stores, np.asarray(net.province_code, dtype=np.int64))
        _, xyz, stores, province = geo
        la, lo = math.radians(order.destination[0]), math.radians(order.destination[1])
        dots = xyz @ np.array([math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la)])
        if rule.home == "region":
            regional = dict(rule.regional_stores)
            store = regional.get(int(province[int(np.argmax(dots))]))
            if store is not None:
                return store
        if not stores.any():
            return ""
        return self._loc_ids[int(np.argmax(np.where(stores, dots, -np.inf)))]

    def _check_order_money(self, order: Order) -> None:
        """The settlement fields of an order (prices, coupon, rule, selling store), checked before routing."""
        total = 0
        for i, line in enumerate(order.lines):
            total += validate.integer(line.unit_price_cents, f"lines[{i}].unit_price_cents", low=0,
                                      high=10**12, error=errors.InvalidOrder) * line.qty
        if total > settlement.MAX_GROSS_CENTS:
            raise errors.InvalidOrder(f"the order's lines total {total} cents; at most {settlement.MAX_GROSS_CENTS}",
                                      field="lines")
        validate.integer(order.coupon_cents, "coupon_cents", low=0, high=total, error=errors.InvalidOrder)
        if order.attribution is not None:
            if order.attribution not in self._rules:
                raise errors.UnknownAttributionRule(f"no attribution rule {shown(order.attribution)}",
                                                    field="attribution")
        if order.selling_store is not None:
            self._loc(order.selling_store, "selling_store")

    # -- helpers ----------------------------------------------------------------------------------
    def _limits_at(self, loc: int) -> StoreRules | None:
        """A store's time limits (None: none)."""
        return self._store_rules.get(loc, self._default_store_rules)

    def _rules_at(self, loc: int) -> StoreRules:
        """A store's rules for its calendar and return window (the built-in ones without limits set)."""
        return self._store_rules.get(loc) or self._default_store_rules or DEFAULT_STORE_RULES

    def _ship(self, shipment_id: Any) -> _Ship:
        ship = self._ships.get(shipment_id) if isinstance(shipment_id, str) else None
        if ship is None:
            raise errors.UnknownShipment(f"no shipment {shown(shipment_id)}", field="shipment_id")
        return ship

    def _exception(self, exception_id: Any) -> OrderException:
        exc = self._exceptions.get(exception_id) if isinstance(exception_id, str) else None
        if exc is None:
            raise errors.UnknownOrderException(f"no order exception {shown(exception_id)}", field="exception_id")
        return exc

    @staticmethod
    def _ship_tuple(rec: Any, ship: _Ship) -> tuple:
        for t in rec.shipments:
            if t[0] == ship.loc:
                return t
        raise errors.InvariantViolation(f"shipment {ship.id} is not in reservation {rec.id}")

    @staticmethod
    def _check(status: int) -> None:
        check_status(status, "a store action does not apply to the ledger")

    def _public_ship(self, ship: _Ship) -> StoreShipment:
        order = ship.order
        lines = ship.lines
        if lines is None:
            sku_ids = self._sku_ids
            price = {x.sku: x.unit_price_cents for x in order.lines}
            lines = ship.lines = tuple(Line(sku_ids[s], q, price.get(sku_ids[s], 0))
                                       for s, q in zip(ship.skus, ship.qtys))
        return StoreShipment(ship.id, ship.rid, order.id, self._loc_ids[ship.loc], ship.state, ship.pickup,
                             order.fulfilment, order.channel, lines,                           # type: ignore[arg-type]
                             ship.created_at, ship.updated_at, ship.due_at, ship.late, ship.reason, ship.note,
                             order.destination)

    # -- snapshots --------------------------------------------------------------------------------
    def _capture_stores(self) -> dict[str, Any]:
        """Under the lock: the store side's state as plain, codec-encodable values."""
        ships = [(s.id, s.rid, s.loc, s.pickup, int(s.state), s.created_at, s.updated_at, s.due_at, s.late,
                  0 if s.reason is None else int(s.reason), s.note, s.skus, s.qtys, s.fulfilled_at, s.tick)
                 for s in self._ships.values()]
        return {
            "ships": ships, "seq": self._store_seq, "ticks": self._store_ticks,
            "rules": [(self._loc_ids[loc], r) for loc, r in self._store_rules.items()],
            "default_rules": self._default_store_rules, "exceptions": list(self._exceptions.values()),
            "facts": list(self._facts), "returned": list(self._returned.items()),
            "line_done": [(k[0], k[1], v) for k, v in self._line_done.items()],
            "returns": list(self._returns.values()), "discrepancies": list(self._discrepancies),
            "attribution": [r for k, r in self._rules.items() if k == r.key], "channels": dict(self._channel_rules),
        }

    def _restore_stores(self, state: Mapping[str, Any] | None) -> None:
        self._init_stores()
        if not state:
            return
        for (sid, rid, loc, pickup, st, created, updated, due, late, reason, note, skus, qtys, fulfilled,
             tick) in state["ships"]:
            rec = self._records[rid]
            ship = _Ship(sid, rid, rec.order, loc, pickup, created, tuple(skus), tuple(qtys))
            ship.state = ShipmentState(st)
            ship.updated_at, ship.late, ship.note, ship.fulfilled_at = updated, late, note, fulfilled
            ship.reason = RejectReason(reason) if reason else None
            self._ships[sid] = ship
            self._ships_of.setdefault(rid, []).append(ship)
            if ship.state not in TERMINAL:
                self._open_at.setdefault(loc, {})[sid] = ship
            ship.due_at, ship.tick = due, tick
            if due is not None:
                self._store_clock.append((due, tick, sid, st))
        heapq.heapify(self._store_clock)
        self._store_seq = self._floor = state["seq"]
        self._store_ticks = state["ticks"]
        self._store_rules = {self._loc_ids.index(x): r for x, r in state["rules"]}
        self._default_store_rules = state["default_rules"]
        self._exceptions = {x.id: x for x in state["exceptions"]}
        self._facts = [tuple(f) for f in state["facts"]]
        for f in self._facts:
            if f[1] == "sale":
                self._sale_fact[(f[5], self._sku_index[f[7]])] = f[0]
        self._returned = dict(state["returned"])
        self._line_done = {(a, b): v for a, b, v in state["line_done"]}
        self._returns = {r.id: r for r in state["returns"]}
        self._discrepancies = [tuple(x) for x in state["discrepancies"]]
        for rule in state["attribution"]:
            self._add_rule(rule)
        self._channel_rules = dict(state["channels"])

    # -- invariants -------------------------------------------------------------------------------
    def _check_stores(self) -> None:
        """Every parcel of a live reservation has exactly one shipment that is open or fulfilled; every open
        shipment belongs to a live reservation's parcels; nothing fulfilled unpaid; no more returned than sold."""
        for rid, ships in self._ships_of.items():
            rec = self._records[rid]
            live = {}
            for s in ships:
                if s.state not in TERMINAL or s.state in (_S.SHIPPED, _S.COLLECTED):
                    if s.loc in live:
                        raise errors.InvariantViolation(f"{rid} has two live shipments at {self._loc_ids[s.loc]}")
                    live[s.loc] = s
                if s.state in (_S.SHIPPED, _S.COLLECTED) and rec.state is not _CONFIRMED:
                    raise errors.InvariantViolation(f"{s.id} is {s.state.name} but {rid} is {rec.state.name}")
                if (s.state not in TERMINAL) != (s.id in self._open_at.get(s.loc, {})):
                    raise errors.InvariantViolation(f"{s.id}: the open index disagrees with its state")
            parcels = {t[0] for t in rec.shipments}
            if rec.state in (_HELD, _CONFIRMED):
                if set(live) != parcels:
                    raise errors.InvariantViolation(f"{rid}: parcels at {sorted(parcels)} but live shipments at "
                                                    f"{sorted(live)}")
            elif any(s.state not in TERMINAL for s in ships):
                raise errors.InvariantViolation(f"{rid} is {rec.state.name} with open shipments")
        for rid, rec in self._records.items():
            if rec.state in (_HELD, _CONFIRMED) and rec.shipments and rid not in self._ships_of:
                raise errors.InvariantViolation(f"{rid} holds parcels but has no shipments")
        for fact, units in self._returned.items():
            if not 0 < units <= self._facts[fact][8]:
                raise errors.InvariantViolation(f"sale fact {fact}: {units} units returned of {self._facts[fact][8]}")
