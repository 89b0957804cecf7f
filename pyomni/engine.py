"""The real-time engine: ledger + routing + reservations behind one command path.

Every mutation is a typed, frozen command (:mod:`pyomni.commands`) executed
by one method, all or nothing: validate -> idempotency lookup -> stamp the
clock -> decide -> apply -> journal -> remember -> answer. The public methods
(``route_order``, ``confirm``, ``set_stock``, ...) are thin wrappers that
validate their arguments and build the command.

* **Decide, then apply.** Deciding reads the state and names the effect (the
  locations and units to hold, the reservation number, the ids that expire);
  applying the effect is the only code that changes state, and it is the same
  code live and in journal replay, so a replay never re-decides and gives the
  same state whatever the routing code or policy does today.
* **Time is an input.** The clock is read once per command and stamped on it;
  expiry is a command of its own (run before every decision, and by
  :meth:`Engine.expire_due` from a sweeper); queries never mutate.
* **Idempotency.** Every mutation takes an optional ``request_id``; a retry
  with the same id returns the first answer and changes nothing, and reusing
  an id for a different request is an error (AIP-155). The window of
  remembered ids is bounded by count and age, evicted oldest first, and is
  part of the durable state (journal and snapshots), so it survives restarts.
* **Durability.** :meth:`Engine.open` puts the engine on a data directory: a
  write-ahead journal (:mod:`pyomni.journal`, group-committed) plus Arrow IPC
  snapshots (:mod:`pyomni.snapshot`). A mutation returns only once its record
  is acknowledged by the journal's fsync policy. Recovery = the newest valid
  snapshot + replay of the journal after it.
* **Concurrency.** Commands are serialised by one lock; waiting for the disk
  happens outside it, so concurrent callers share one fsync (group commit).
  Queries take the lock too and may see effects whose records are not yet on
  disk (they are never answered to a mutation's caller before they are).

Examples
--------
>>> import pyomni
>>> net = pyomni.demo_network(stores=50, warehouses=2, skus=100, seed=1)
>>> eng = pyomni.Engine(net)
>>> _ = eng.apply_stock_events(pyomni.demo_stock(net, seed=1))
>>> a = eng.route_order(pyomni.Order("o-1", [("SKU-000000", 1)], destination=(31.23, 121.47)))
>>> a.status.name, len(a.shipments)
('ALLOCATED', 1)
>>> eng.confirm(a.reservation_id).state.name
'CONFIRMED'
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import gc
import hashlib
import heapq
import itertools
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import codec, errors, snapshot, validate
from ._core import EVENT_KINDS, MAX_SHIPMENTS, REJECT_NAMES, check_status
from .commands import (
    ClaimBatch,
    Command,
    CreateSale,
    EndClaim,
    EndReservation,
    EndSale,
    Expire,
    Expired,
    Hold,
    NewDay,
    RegisterAttributionRule,
    RegisterPolicy,
    RegisterSkus,
    Reroute,
    Rerouted,
    ReservePlan,
    ResolveException,
    ReturnLine,
    RouteBatch,
    RouteOrder,
    SetAttribution,
    SetChannelRule,
    SetDailyCapacity,
    SetLocationOpen,
    SetStoreRules,
    ShipmentAction,
    ShipmentPlan,
    StockCommand,
    StockEvents,
    StoreDeadline,
    Transfer,
    Unfilled,
    UpdateSale,
    UpsertLocations,
)
from .feeds import ChannelFeed
from .flash import claim_id
from .model import (
    MAX_EXCLUDED,
    MAX_LINES,
    MAX_QTY,
    Allocation,
    AllocationStatus,
    Candidate,
    Capability,
    CostBreakdown,
    Explanation,
    Fulfilment,
    Line,
    Location,
    NearbyStock,
    Order,
    PickupOption,
    Reservation,
    ReservationState,
    Shipment,
    ShortLine,
    StockLevel,
)
from .network import Network
from .policy import DEFAULT_POLICY, ChannelRule, RoutingPolicy
from .routing_batch import BatchRouting
from .selling import SellingSide
from .stores import StoreSide
from .validate import MAX_ID_CHARS, shown

__all__ = ["Engine", "EngineState", "config", "set_config"]

log = logging.getLogger("pyomni.engine")

_STRATEGIES = ("spatial", "sku_scan")
_SPLIT_REASONS = ("", "NO_SINGLE_LOCATION", "CHEAPER")
_NEED_CAP = {Fulfilment.DELIVERY: int(Capability.SHIP), Fulfilment.PICKUP: int(Capability.SHIP),
             Fulfilment.SAME_DAY: int(Capability.SAME_DAY)}
_EV_SET, _EV_ADJUST, _EV_RECEIVE, _EV_SALE, _EV_RETURN, _EV_SAFETY = range(6)


@dataclass
class _Config:
    native: bool = True


_config = _Config()


def set_config(*, native: bool | None = None) -> None:
    """Set process-wide defaults. ``native=False`` makes new engines use the plain-Python reference.

    >>> set_config(native=True)
    """
    native = validate.optional_flag(native, "native")
    if native is not None:
        _config.native = native


def config() -> dict[str, Any]:
    """The current process-wide defaults."""
    return {"native": _config.native}


class _Record:
    """A reservation as the engine keeps it (mutable, internal)."""

    __slots__ = ("id", "seq", "request_id", "order", "state", "created_at", "expires_at", "shipments", "excluded",
                 "need_cap", "max_km", "policy")

    def __init__(self, rid, seq, request_id, order, created_at, expires_at, shipments, excluded, need_cap, max_km,
                 policy):
        self.id = rid
        self.seq = seq
        self.request_id = request_id
        self.order = order
        self.state = ReservationState.HELD
        self.created_at = created_at
        self.expires_at = expires_at
        # Only ``state``, ``shipments`` and ``excluded`` change, and each is replaced, never changed in
        # place (a new list, a new frozenset): a snapshot copies the references under the lock, cheaply,
        # and reads them afterwards.
        self.shipments = shipments      # list of native shipment tuples (loc, km, costs, takes, cells, line skus)
        self.excluded = excluded        # frozenset of location indices this order must not use again
        self.need_cap = need_cap
        self.max_km = max_km
        self.policy = policy


class _Remembered(NamedTuple):
    """An answered request in the idempotency window."""

    command: Command
    answer: Any       # the answer, or while replaying a _Later that builds it when first asked for
    lsn: int          # the journal record that made the answer durable (0: none needed)
    at: float         # the command's time, for eviction by age

    def value(self) -> Any:
        answer = self.answer
        return answer.build() if type(answer) is _Later else answer


_CLAIM_ENTRY = "claim"     # a snapshot's window entry for a claim: the command slot holds this, the answer its number


class _Later:
    """An answer replay does not build until somebody asks (a retry, :meth:`Engine.remembered`, a snapshot).

    Most remembered answers are never asked for again, and building them (shipments, lines, costs as
    objects) was a quarter of replay. ``build`` reads only values that never change afterwards.
    """

    __slots__ = ("build",)

    def __init__(self, build: Callable[[], Any]) -> None:
        self.build = build


class _ParsedOrder:
    """An order validated and interned to native indices."""

    __slots__ = ("order", "skus", "qtys", "lat", "lon", "pickup", "need_cap", "max_km", "excluded", "max_ship")
    order: Order
    skus: list[int]
    qtys: list[int]
    lat: float
    lon: float
    pickup: int
    need_cap: int
    max_km: float
    excluded: tuple[int, ...]
    max_ship: int


@dataclass(frozen=True)
class EngineState:
    """A consistent copy of an engine's stock and loads, taken under its lock (:meth:`Engine.state`).

    What the optimiser, the simulator and snapshots read instead of the
    engine's internals. Arrays are copies: the engine goes on changing.

    Attributes
    ----------
    network : Network
    skus : tuple of str
        The catalogue in index order (``sku`` values index it).
    loc, sku : ndarray of int32
        Each stock cell's location and SKU index.
    on_hand, reserved, safety : ndarray
        Each cell's counts.
    held, confirmed : ndarray of int32
        Per location: shipments held now, shipments confirmed today.
    capabilities, is_open, daily_capacity : ndarray
        Per location, as the engine has them now (they change by command).
    lsn : int
        The last journal record applied (0 for an engine without journal that never changed).
    seq : int
        The last reservation number issued.
    """

    network: Network
    skus: tuple[str, ...]
    loc: np.ndarray
    sku: np.ndarray
    on_hand: np.ndarray
    reserved: np.ndarray
    safety: np.ndarray
    held: np.ndarray
    confirmed: np.ndarray
    capabilities: np.ndarray
    is_open: np.ndarray
    daily_capacity: np.ndarray
    lsn: int
    seq: int


# the argument rules live in pyomni.validate (one home for each): the command path checks the request id here
def _check_request_id(request_id: Any) -> None:
    if request_id is not None:
        validate.request_id(request_id)


#: Keyword arguments of ``Engine`` that :meth:`Engine.open` passes on for a new directory.
_ENGINE_OPTIONS = ("policy", "reservation_ttl", "channels", "max_request_ids", "request_id_ttl")
_MAX_SEGMENT_BYTES = 1 << 40
_PATH_SHOWN = 200                 # characters of a path shown in a message


class Engine(SellingSide, BatchRouting, StoreSide):
    """Inventory ledger, routing, reservations, flash sales and store operations for one network.

    ``Engine(network)`` keeps its state in memory only; :meth:`Engine.open`
    gives the same engine on a data directory, where every acknowledged
    mutation survives a crash.

    Parameters
    ----------
    network : Network
        Locations and the SKU catalogue.
    policy : RoutingPolicy, optional
        The default routing policy (registered under its key).
    clock : callable, optional
        Returns the current time in seconds (``time.time``); inject one in tests.
        It is read once per command and the time is recorded with it.
    reservation_ttl : float
        Seconds a HELD reservation lives before it expires (default 15 minutes).
    channels : mapping of str to ChannelRule, optional
        Per-channel selling limits.
    native : bool, optional
        Use the compiled core (default, see :func:`set_config`) or the plain-Python reference.
    max_request_ids : int
        How many answered request ids are remembered for idempotent retries (oldest forgotten first).
    request_id_ttl : float
        Seconds an answered request id is remembered (default one day); a retry
        after that is a new request.

    Examples
    --------
    >>> import pyomni
    >>> eng = pyomni.Engine(pyomni.demo_network(stores=10, warehouses=1, skus=5, seed=0))
    >>> eng.set_stock("SH-0001" if "SH-0001" in eng.network else eng.network.ids[0], "SKU-000001", 5).on_hand
    5
    """

    _later_type = _Later            # for the mixins (selling, batch routing), which cannot import this module
    _remembered_type = _Remembered
    _record_type = _Record
    _no_effect: Any = None          # _NOTHING, set below: an effect that changed nothing (no record)

    def __init__(self, network: Network, *, policy: RoutingPolicy | None = None,
                 clock: Callable[[], float] = time.time, reservation_ttl: float = 900.0,
                 channels: Mapping[str, ChannelRule] | None = None, native: bool | None = None,
                 max_request_ids: int = 1_000_000, request_id_ttl: float = 86_400.0) -> None:
        validate.instance(network, Network, "network", "a pyomni.Network")
        self._ttl = validate.seconds(reservation_ttl, "reservation_ttl")
        self._request_id_ttl = validate.seconds(request_id_ttl, "request_id_ttl")
        max_request_ids = validate.integer(max_request_ids, "max_request_ids", low=0, high=2**63 - 1)
        if policy is not None:
            validate.instance(policy, RoutingPolicy, "policy", "a RoutingPolicy")
        native = validate.optional_flag(native, "native")
        channel_rules = validate.mapping(channels, "channels")
        for name, rule in channel_rules.items():
            validate.identifier(name, "channels")
            validate.instance(rule, ChannelRule, "channels", "a mapping of channel names to ChannelRule")
        self._net = network
        self._native = _config.native if native is None else native
        self._clock = validate.callable_(clock, "clock")
        self._lock = threading.Lock()
        self._loc_ids: tuple[str, ...] = network.ids
        self._loc_index: dict[str, int] = {x: i for i, x in enumerate(network.ids)}
        self._sku_ids: list[str] = list(network.skus)
        self._sku_index: dict[str, int] = {x: i for i, x in enumerate(self._sku_ids)}
        self._caps = np.ascontiguousarray(network.capabilities, dtype=np.uint8).copy()
        self._open = np.ascontiguousarray(network.is_open, dtype=np.uint8).copy()
        self._capacity = np.ascontiguousarray(network.daily_capacity, dtype=np.int32).copy()
        self._ledger, self._router = _make_backend(self._native, network, len(self._sku_ids), self._caps,
                                                   self._open, self._capacity)
        # the native router takes a compiled copy of the weights; the reference reads the policy itself
        self._policy_arg: Callable[[RoutingPolicy], Any] = self._native_policy if self._native else _identity
        self._default_policy = policy or DEFAULT_POLICY
        self._policies: dict[str, RoutingPolicy] = {}
        self._add_policy(self._default_policy)
        self._channels: dict[str, ChannelRule] = {str(k): v for k, v in channel_rules.items()}
        self._records: dict[str, _Record] = {}
        self._record_order: list[_Record] = []          # the same records in id (= issue) order, for paging
        self._live_orders: dict[str, str] = {}          # order id -> reservation id (HELD or CONFIRMED)
        self._expiry: list[tuple[float, int, str]] = []
        self._seq = 0                                   # last reservation number issued
        self._lsn = 0                                   # last record applied (journal sequence number)
        self._requests: OrderedDict[str, Any] = OrderedDict()     # _Remembered, or a claim's compact entry
        self._max_request_ids = max_request_ids
        self._journal: Any = None                       # a pyomni.journal.Journal once opened on a directory
        self._directory: Path | None = None
        self._failure: errors.StorageFailed | None = None
        self._closed = False
        self._snapshot_lock = threading.Lock()          # one snapshot at a time
        self._parsed: _ParsedOrder | None = None        # handed from a routing decider to its applier
        self._replaying = False                         # appliers may answer with a _Later
        self._init_selling()
        self._init_stores()
        self._cmd_now = 0.0                             # the time of the command being applied (for hooks)
        self._changed = threading.Event()               # set by every commit: feeds wake on it
        self._commit_cond = threading.Condition()       # watchers wait on it for the next commit
        self._commit_waiters = 0
        self._feed_shown: dict[str, np.ndarray] = {}    # channel -> per SKU the value its feed last published

    # -- configuration -------------------------------------------------------------
    @property
    def network(self) -> Network:
        """The network the engine was built on (with every upsert since)."""
        return self._net

    @property
    def native(self) -> bool:
        """True when the compiled core is in use."""
        return self._native

    @property
    def skus(self) -> tuple[str, ...]:
        """The SKU catalogue, in index order."""
        return tuple(self._sku_ids)

    @property
    def lsn(self) -> int:
        """The sequence number of the last journal record applied (cheap: no copy, unlike :meth:`state`)."""
        return self._lsn

    @property
    def storage_failure(self) -> errors.StorageFailed | None:
        """The storage error that stopped this engine taking writes, or None while it is healthy."""
        if self._failure is None and self._journal is not None and self._journal.failed:
            return errors.StorageFailed("the journal failed")
        return self._failure

    @property
    def directory(self) -> Path | None:
        """The data directory of an engine from :meth:`open` (None for an in-memory engine)."""
        return self._directory

    def policy(self, key: str | RoutingPolicy | None = None) -> RoutingPolicy:
        """Look up a registered policy by ``"name"`` or ``"name@version"`` (default: the engine's)."""
        if key is None:
            return self._default_policy
        if isinstance(key, RoutingPolicy):
            return key
        try:
            return self._policies[key]
        except (KeyError, TypeError):
            raise errors.UnknownPolicy(f"no routing policy {shown(key)}", field="policy") from None

    def _policy_ref(self, key: str | RoutingPolicy | None, *, none_is_default: bool = True
                    ) -> str | RoutingPolicy | None:
        """How a command names its policy: None for the engine's default (the usual case: no bytes in the
        journal), the registered key, or the policy itself if it is not registered."""
        pol = self.policy(key)
        if none_is_default and pol is self._default_policy:
            return None
        return pol.key if self._policies.get(pol.key) == pol else pol

    def _resolve_policy(self, ref: str | RoutingPolicy | None) -> RoutingPolicy:
        return self._default_policy if ref is None else ref if isinstance(ref, RoutingPolicy) else self.policy(ref)

    def register_policy(self, policy: RoutingPolicy, *, request_id: str | None = None) -> None:
        """Make ``policy`` selectable by its key (``"name@version"``) and by its name (latest version)."""
        validate.instance(policy, RoutingPolicy, "policy", "a RoutingPolicy")
        self._execute(RegisterPolicy(policy), request_id)

    def set_channel_rule(self, channel: str, rule: ChannelRule | None, *, request_id: str | None = None) -> None:
        """Set (or with ``None`` remove) the selling limit of a channel."""
        channel = validate.identifier(channel, "channel")
        if rule is not None:
            validate.instance(rule, ChannelRule, "rule", "a ChannelRule or None")
        self._execute(SetChannelRule(channel, rule), request_id)

    def register_skus(self, skus: Iterable[str], *, request_id: str | None = None) -> int:
        """Add SKUs to the catalogue; returns how many were added.

        Raises :class:`~pyomni.errors.DuplicateId` if any is already known or repeated.
        """
        return self._execute(RegisterSkus(validate.identifiers(skus, "skus")), request_id)

    def set_location_open(self, location: str, is_open: bool, *, request_id: str | None = None) -> None:
        """Open or close a location for online orders (its existing reservations stay)."""
        self._execute(SetLocationOpen(location, validate.flag(is_open, "is_open")), request_id)

    def set_daily_capacity(self, location: str, capacity: int, *, request_id: str | None = None) -> None:
        """Change a location's daily shipment capacity (0 = unlimited)."""
        self._execute(SetDailyCapacity(location, validate.quantity(capacity, "capacity", allow_zero=True)), request_id)

    def new_day(self, *, request_id: str | None = None) -> None:
        """Start a new business day: shipments confirmed so far stop counting toward capacity."""
        self._execute(NewDay(), request_id)

    # -- ids -------------------------------------------------------------------
    def _loc(self, location: Any, field: str) -> int:
        try:
            return self._loc_index[location]
        except (KeyError, TypeError):
            raise errors.UnknownLocation(f"no location {shown(location)}", field=field) from None

    def _sku(self, sku: Any, field: str) -> int:
        try:
            return self._sku_index[sku]
        except (KeyError, TypeError):
            raise errors.UnknownSku(f"no SKU {shown(sku)}", field=field) from None

    # -- the command path --------------------------------------------------------------
    # One method executes every mutation (TigerBeetle's ``commit``); the public methods only validate
    # their arguments and build the command. ``_commit`` runs under the lock; the wait for the disk
    # does not, so concurrent callers share one fsync.
    def _execute(self, command: Command, request_id: str | None = None, explain: bool = True) -> Any:
        _check_request_id(request_id)
        with self._lock:
            answer, lsn = self._commit(command, request_id, explain)
        if lsn and self._journal is not None:
            self._wait(lsn)
        return answer

    def _execute_many(self, items: Sequence[tuple[Command, str | None]]) -> list[Any]:
        """Execute commands in order under one lock acquisition and one journal commit.

        Each item's answer, or the typed error it raised (the others still run).
        """
        results: list[Any] = []
        last = 0
        with self._lock:
            for command, request_id in items:
                try:
                    _check_request_id(request_id)
                    answer, lsn = self._commit(command, request_id)
                except errors.StorageFailed:
                    raise
                except errors.PyomniError as exc:
                    results.append(exc)
                    continue
                results.append(answer)
                last = max(last, lsn)
        if last and self._journal is not None:
            self._wait(last)
        return results

    def _commit(self, command: Command, request_id: str | None, explain: bool = True) -> tuple[Any, int]:
        """Under the lock: idempotency lookup, time stamp, decide, apply, journal, remember.

        Returns the answer and the sequence number the caller must see durable
        before answering (the command's own record, or for an answer that
        changed nothing, the last record it may have read).
        """
        self._check_writable()
        if request_id is not None:
            prior = self._requests.get(request_id)
            if prior is not None:
                if prior.command != command:
                    raise errors.RequestIdReused(f"request id {shown(request_id)} was used for a different request",
                                                 field="request_id")
                return prior.value(), prior.lsn
        now = self._begin_command(type(command))
        decide, apply = _HANDLERS[type(command)]
        effect, explanation = decide(self, command, now)
        answer = apply(self, command, effect, now, request_id)
        # the first caller gets the router's full explanation if it asks; the window and replay keep the
        # recorded one
        first = answer if explanation is None or not explain else dataclasses.replace(answer, explanation=explanation)
        if effect is _NOTHING or (request_id is None and type(effect) is Unfilled):
            if type(command) is Expire and self._store_clock and self._store_clock[0][0] <= now:
                self._run_store_clock(now)              # the sweeper's Expire: shipment deadlines come after it
            return first, self._lsn      # nothing changed and nobody will ask again: no record
        lsn = self._log(now, request_id, command, effect)
        self._remember(request_id, command, answer, lsn, now)
        expiry, claims, sales, store = self._expiry, self._claim_expiry, self._sale_clock, self._store_clock
        if ((expiry and expiry[0][0] <= now) or (claims and claims[0][0] <= now) or (sales and sales[0][0] <= now)
                or (store and store[0][0] <= now)):        # the hot path: look first
            self._settle(command, now)
        return first, lsn

    def _settle(self, command: Command, now: float) -> None:
        """After a command, under the lock: what its own effect made due at its time (a hold with a tiny ttl, a sale
        whose start moved into the past) is done at once, as the clock's command, so that no later call -- a query
        or one that fails -- finds the state due for a change it did not ask for."""
        if ((self._expiry and self._expiry[0][0] <= now) or self._selling_due(now)) and type(command) is not Expire:
            self._commit(Expire(), None)
        if self._store_due(now) and type(command) is not StoreDeadline:
            self._run_store_clock(now)

    def _check_writable(self) -> None:
        if self._failure is not None or (self._journal is not None and self._journal.failed):
            raise errors.StorageFailed(f"the engine stopped taking writes after a storage failure: "
                                       f"{self._failure or 'the journal failed'}")
        if self._closed:
            raise errors.FailedPrecondition("the engine is closed; open its directory again to change it")

    def _begin_command(self, kind: type) -> float:
        """Under the lock, before deciding: the command's time, with whatever the clock made due done first."""
        self._check_writable()
        now = float(self._clock())
        if kind is not Expire and ((self._expiry and self._expiry[0][0] <= now) or self._selling_due(now)):
            self._commit(Expire(), None)                  # expiry first, as a command (and record) of its own
        if kind is not StoreDeadline and kind is not Expire and self._store_clock and self._store_clock[0][0] <= now:
            self._run_store_clock(now)      # then each shipment deadline, as a command of its own (after Expire's)
        self._cmd_now = now
        return now

    def _log(self, now: float, request_id: str | None, command: Command, effect: Any) -> int:
        self._lsn += 1
        if not self._changed.is_set():    # set() takes the event's lock and notifies even when set
            self._changed.set()
        if self._commit_waiters:
            with self._commit_cond:
                self._commit_cond.notify_all()
        if self._journal is not None:
            try:
                lsn = self._journal.append(codec.encode((now, request_id, command, effect)))
            except errors.StorageFailed as exc:
                self._failure = exc        # applied in memory, not on disk: never take another write
                raise
            except errors.PyomniError as exc:   # no record can hold it (the public methods check, so a bug):
                self._failure = errors.StorageFailed(f"a {type(command).__name__} record cannot be written: {exc}")
                raise self._failure from None   # applied in memory, not on disk: as above
            if lsn != self._lsn:
                raise errors.InvariantViolation(f"journal sequence {lsn} != engine sequence {self._lsn}")
        return self._lsn

    def wait_for_commit(self, after: int, timeout: float | None = None) -> int:
        """Block until a record after ``after`` is applied (or ``timeout`` seconds pass); the lsn now.

        For watchers (``WatchFlashSale``): they sleep until something changes instead of polling.
        """
        after = validate.integer(after, "after", low=-(2**63), high=2**63 - 1)
        timeout = validate.timeout(timeout)
        with self._commit_cond:
            self._commit_waiters += 1
            try:
                self._commit_cond.wait_for(lambda: self._lsn > after, timeout)
            finally:
                self._commit_waiters -= 1
        return self._lsn

    def _wait(self, lsn: int) -> None:
        try:
            self._journal.wait(lsn)
        except errors.StorageFailed as exc:
            self._failure = exc
            raise

    def _remember(self, request_id: str | None, command: Command, answer: Any, lsn: int, now: float) -> None:
        requests = self._requests
        if request_id is not None and self._max_request_ids:
            requests[request_id] = _Remembered(command, answer, lsn, now)
        # evict in arrival order, by count and by age: deterministic, so replay rebuilds the same window
        horizon = now - self._request_id_ttl
        while requests and (len(requests) > self._max_request_ids or next(iter(requests.values())).at < horizon):
            requests.popitem(last=False)

    def _replay_all(self, records: Iterable[tuple[int, bytes]], total: int | None = None) -> int:
        """Apply journal records in order; how many. Logs progress every few seconds of a long replay.

        The cyclic GC is paused meanwhile (see :func:`_gc_paused`): 31 -> 17 µs per record measured.
        """
        n = 0
        start = last = time.perf_counter()
        with _gc_paused(), self._lock:
            self._replaying = True
            try:
                for lsn, payload in records:
                    self._replay_record(lsn, payload)
                    n += 1
                    if not n & 0x3FFF and time.perf_counter() - last >= 2.0:
                        last = time.perf_counter()
                        rate = n / (last - start)
                        left = "" if total is None else f", about {(total - n) / rate:.0f} s left"
                        log.info(f"replaying the journal: {n:,}{'' if total is None else f' of {total:,}'} "
                                 f"records ({rate:,.0f}/s{left})",
                                 extra={"replayed": n, "total": total, "lsn": lsn})
            finally:
                self._replaying = False
        return n

    def _replay_record(self, lsn: int, payload: bytes | memoryview) -> None:
        """Apply one journal record: its recorded effect, never a new decision."""
        now, request_id, command, effect = codec.decode(payload)
        if lsn != self._lsn + 1:
            raise errors.JournalCorrupt(f"journal record {lsn} follows {self._lsn}")
        self._cmd_now = now
        try:
            answer = _HANDLERS[type(command)][1](self, command, effect, now, request_id)
        except errors.PyomniError as exc:
            raise errors.JournalCorrupt(f"journal record {lsn} ({type(command).__name__}) does not apply to the "
                                        f"recovered state: {exc}") from None
        self._lsn = lsn
        self._remember(request_id, command, answer, lsn, now)

    # -- stock commands ----------------------------------------------------------
    def set_stock(self, location: str, sku: str, on_hand: int, *, safety: int | None = None,
                  request_id: str | None = None) -> StockLevel:
        """Set a cell's on-hand count (a stock take), and optionally its safety stock.

        Raises :class:`~pyomni.errors.StockReserved` if ``on_hand`` is below what is reserved.
        """
        q = validate.quantity(on_hand, "on_hand", allow_zero=True)
        sf = -1 if safety is None else validate.quantity(safety, "safety", allow_zero=True)
        return self._execute(StockCommand(_EV_SET, location, sku, q, sf), request_id)

    def adjust_stock(self, location: str, sku: str, delta: int, *, request_id: str | None = None) -> StockLevel:
        """Add (or with a negative ``delta`` remove) units, e.g. after a count or damage."""
        q = validate.quantity(delta, "delta", allow_negative=True)
        return self._execute(StockCommand(_EV_ADJUST, location, sku, q, -1), request_id)

    def receive(self, location: str, sku: str, qty: int, *, request_id: str | None = None) -> StockLevel:
        """Book a delivery of ``qty`` units into a location."""
        return self._execute(StockCommand(_EV_RECEIVE, location, sku, validate.quantity(qty, "qty"), -1), request_id)

    def sell(self, location: str, sku: str, qty: int, *, request_id: str | None = None) -> StockLevel:
        """A shop-floor (POS) sale: may sell into safety stock, never into reserved units.

        Raises :class:`~pyomni.errors.InsufficientStock` when fewer unreserved units are on hand.
        """
        return self._execute(StockCommand(_EV_SALE, location, sku, validate.quantity(qty, "qty"), -1), request_id)

    def return_item(self, location: str, sku: str, qty: int, *, request_id: str | None = None) -> StockLevel:
        """A customer return, accepted at any location (it goes back on hand there)."""
        return self._execute(StockCommand(_EV_RETURN, location, sku, validate.quantity(qty, "qty"), -1), request_id)

    def set_safety(self, location: str, sku: str, safety: int, *, request_id: str | None = None) -> StockLevel:
        """Set the safety stock held back for walk-in customers at one cell."""
        q = validate.quantity(safety, "safety", allow_zero=True)
        return self._execute(StockCommand(_EV_SAFETY, location, sku, q, -1), request_id)

    def transfer(self, source: str, destination: str, sku: str, qty: int, *,
                 request_id: str | None = None) -> tuple[StockLevel, StockLevel]:
        """Move unreserved units between locations atomically; returns both cells after the move."""
        return self._execute(Transfer(source, destination, sku, validate.quantity(qty, "qty")), request_id)

    def apply_stock_events(self, source: Any, *, request_id: str | None = None) -> int:
        """Apply a batch of stock events atomically in one native pass; returns the number applied.

        ``source`` is anything :func:`pyomni.io.read_stock_events` accepts: an Arrow
        table or record batch, a pandas DataFrame, or a Parquet / Arrow IPC / CSV path.
        Columns: ``location``, ``sku``, ``event`` (set, adjust, receive, sale, return,
        safety), ``qty``, ``safety`` (optional, for ``set``). If any event is bad,
        none is applied and the error names its row (``field="events[12]"``).
        """
        from .io import read_stock_events

        table = read_stock_events(source)
        # ids are interned outside the lock: locations and SKUs are append-only, so an index stays valid
        loc = self._encode(table.column("location"), self._loc_index, errors.UnknownLocation, "location")
        sku = self._encode(table.column("sku"), self._sku_index, errors.UnknownSku, "sku")
        kind = self._encode(table.column("event"), {k: i for i, k in enumerate(EVENT_KINDS)},
                            errors.InvalidArgument, "event").astype(np.int8)
        qty = np.ascontiguousarray(table.column("qty").to_numpy(zero_copy_only=False), dtype=np.int64)
        given = table.column("safety")
        negative = pc.less(given, 0)
        if pc.any(negative).as_py():
            row = int(pc.index(negative, True).as_py())
            raise errors.InvalidQuantity(f"safety must be >= 0 (leave it empty to keep the cell's), row {row}",
                                         field=f"events[{row}].safety")
        # an empty safety keeps the cell's: -1 says so to the native ledger
        safety = np.ascontiguousarray(pc.fill_null(given, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
        c = [a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes() for a in (loc, sku, kind, qty, safety)]
        # a retry must carry the same events: fingerprint the content, not just the size (AIP-155)
        digest = hashlib.blake2b(digest_size=16)
        for column in c:
            digest.update(column)
        return self._execute(StockEvents(table.num_rows, c[0], c[1], c[2], c[3], c[4], digest.hexdigest()), request_id)

    @staticmethod
    def _encode(column: pa.ChunkedArray, index: Mapping[str, int], error: type[errors.PyomniError],
                name: str) -> np.ndarray:
        # Dictionary-encode in Arrow (C++), map only the distinct values through the
        # Python dict, then gather: one dict lookup per distinct id, not per row.
        encoded = pc.dictionary_encode(column).combine_chunks()
        values = encoded.dictionary.to_pylist()
        codes = np.fromiter((index.get(v, -1) for v in values), dtype=np.int32, count=len(values))
        ids = encoded.indices.to_numpy(zero_copy_only=False)
        out = codes[ids] if len(codes) else np.zeros(len(ids), dtype=np.int32)
        bad = np.flatnonzero(out < 0)
        if len(bad):
            row = int(bad[0])
            raise error(f"unknown {name} {shown(values[ids[row]])} in event {row}; no event was applied",
                        field=f"events[{row}].{name}")
        return np.ascontiguousarray(out, dtype=np.int32)

    # -- routing and reservations: the public wrappers ------------------------------------
    def route_order(self, order: Order, *, policy: str | RoutingPolicy | None = None,
                    request_id: str | None = None, ttl: float | None = None, explain: bool = True) -> Allocation:
        """Choose the location(s) for an order and hold the stock atomically.

        The cheapest location that fills every line wins; the order is split
        (up to ``max_splits`` shipments) only when no single location can fill
        it or when splitting is strictly cheaper. If no plan exists, the answer
        has status UNFULFILLABLE and names the short lines; nothing is held.

        Parameters
        ----------
        order : Order
        policy : str or RoutingPolicy, optional
            ``"name"`` or ``"name@version"`` of a registered policy.
        request_id : str, optional
            Idempotency key: a retry returns the first answer and changes nothing.
        ttl : float, optional
            Seconds until the hold expires (default: the engine's ``reservation_ttl``).
        explain : bool
            Answer with the router's full account (candidates considered, rejections, runners-up);
            False answers with the recorded one (shipments, split reason, policy), as a retry does,
            and saves the work (the gRPC service asks for it only when the caller does).

        Raises
        ------
        InvalidOrder, InvalidQuantity, InvalidCoordinates, UnknownSku, UnknownLocation, DuplicateId
            Bad input; nothing changed.

        Examples
        --------
        >>> import pyomni
        >>> net = pyomni.demo_network(stores=20, warehouses=1, skus=10, seed=3)
        >>> eng = pyomni.Engine(net)
        >>> _ = eng.set_stock(net.ids[0], "SKU-000001", 4)
        >>> a = eng.route_order(pyomni.Order("o-9", [("SKU-000001", 2)], destination=(net.lat[0], net.lon[0])))
        >>> a.shipments[0].location == net.ids[0], eng.stock(net.ids[0], "SKU-000001").reserved
        (True, 2)
        """
        if type(explain) is not bool:
            raise errors.InvalidArgument(f"explain must be True or False, not {type(explain).__name__}",
                                         field="explain")
        return self._execute(self._route_command(order, policy, ttl), request_id, explain)

    def route_orders(self, orders: Sequence[Order], *, request_ids: Sequence[str | None] | None = None,
                     policies: Sequence[str | RoutingPolicy | None] | None = None,
                     ttls: Sequence[float | None] | None = None) -> list[Allocation | errors.PyomniError]:
        """Route a batch of orders in order, under one lock and one journal commit.

        Each order is routed exactly as :meth:`route_order` would; the answer
        list holds each order's :class:`~pyomni.model.Allocation`, or the typed
        error it raised (the other orders go on). With a journal, the call
        returns once the whole batch is durable: one fsync for the batch.
        """
        orders = validate.sequence(orders, "orders", what="a sequence of Order")
        n = len(orders)
        columns: list[Any] = []
        for name, values in (("request_ids", request_ids), ("policies", policies), ("ttls", ttls)):
            if values is not None:
                values = validate.sequence(values, name)
                if len(values) != n:
                    raise errors.InvalidArgument(f"{name} must have one entry per order", field=name)
            columns.append(values)
        request_ids, policies, ttls = columns
        items: list[tuple[Command, str | None]] = []
        failed: dict[int, errors.PyomniError] = {}
        for i, order in enumerate(orders):
            try:
                items.append((self._route_command(order, policies[i] if policies is not None else None,
                                                  ttls[i] if ttls is not None else None),
                              request_ids[i] if request_ids is not None else None))
            except errors.PyomniError as exc:
                failed[i] = exc
        results = iter(self._execute_many(items))
        return [failed[i] if i in failed else next(results) for i in range(n)]

    def _route_command(self, order: Order, policy: str | RoutingPolicy | None, ttl: float | None) -> RouteOrder:
        if ttl is not None:
            ttl = validate.seconds(ttl, "ttl")
        if type(order) is not Order:
            validate.instance(order, Order, "order", "a pyomni.Order", errors.InvalidOrder)
        return RouteOrder(order, self._policy_ref(policy), ttl)

    def quote(self, order: Order, *, policy: str | RoutingPolicy | None = None) -> Allocation:
        """Decide where an order would be fulfilled, without holding anything (a query: it changes nothing).

        Returns an :class:`~pyomni.model.Allocation` with status QUOTED or UNFULFILLABLE.
        """
        pol = self.policy(policy)
        with self._lock:
            p = self._parse(order, pol)
            return self._allocation(p, pol, self._decide(p, pol, False), AllocationStatus.QUOTED, p.skus, p.qtys)

    def reserve_plan(self, order: Order, shipments: Sequence[tuple[str, Sequence[tuple[str, int]]]], *,
                     request_id: str | None = None, policy: str | RoutingPolicy | None = None) -> Allocation:
        """Hold exactly the given plan for an order: the shipments a batch optimiser chose, all or nothing.

        Where :meth:`route_order` decides and holds, this only holds: each
        shipment's units are taken from the named location. The plan is
        validated completely first -- every line of the order covered exactly,
        locations known, open, able to ship, within capacity, distance and
        ``max_splits`` -- then the units are held in one all-or-nothing step.
        The reservation is recorded exactly as :meth:`route_order` records one,
        so :meth:`confirm`, :meth:`release`, expiry and :meth:`reroute` work on
        it. Shipments are priced with the policy's cost model; the first
        shipment listed is the order's first parcel (the rest pay the split penalty).

        Parameters
        ----------
        order : Order
        shipments : sequence of (location id, sequence of (sku, qty))
            One entry per parcel; a location appears once.
        request_id : str, optional
            Idempotency key: a retry returns the first answer and changes nothing.
        policy : str or RoutingPolicy, optional
            Prices the shipments and gives the order's default ``max_splits`` and ``max_distance_km``.

        Returns
        -------
        Allocation
            ALLOCATED with the reservation id; UNFILLABLE (nothing held) only when
            the order's channel rule forbids the quantities, as :meth:`route_order` does.

        Raises
        ------
        InvalidOrder, InvalidArgument, InvalidQuantity, UnknownSku, UnknownLocation, DuplicateId
            The plan or the order is malformed, or the order already has a live reservation.
        InsufficientStock
            A location no longer has the units available.
        CapabilityMissing, FailedPrecondition
            A location is closed, cannot ship, or has no capacity left today.

        In every error case nothing changed.

        Examples
        --------
        >>> import pyomni
        >>> net = pyomni.demo_network(stores=20, warehouses=1, skus=10, seed=3)
        >>> eng = pyomni.Engine(net)
        >>> _ = eng.set_stock(net.ids[0], "SKU-000001", 4)
        >>> _ = eng.set_stock(net.ids[1], "SKU-000002", 1)
        >>> order = pyomni.Order("o-7", [("SKU-000001", 2), ("SKU-000002", 1)], destination=(31.2, 121.5))
        >>> a = eng.reserve_plan(order, [(net.ids[0], [("SKU-000001", 2)]), (net.ids[1], [("SKU-000002", 1)])])
        >>> a.status.name, len(a.shipments), eng.stock(net.ids[0], "SKU-000001").reserved
        ('ALLOCATED', 2, 2)
        """
        validate.instance(order, Order, "order", "a pyomni.Order", errors.InvalidOrder)
        return self._execute(ReservePlan(order, _normalise_plan(shipments), self._policy_ref(policy)), request_id)

    def confirm(self, reservation_id: str, *, request_id: str | None = None) -> Reservation:
        """Confirm a HELD reservation: the units leave on-hand stock and count toward the day's load.

        Raises :class:`~pyomni.errors.ReservationNotHeld` if it is no longer HELD (e.g. expired).
        """
        return self._execute(EndReservation(reservation_id, int(ReservationState.CONFIRMED)), request_id)

    def release(self, reservation_id: str, *, request_id: str | None = None) -> Reservation:
        """Release a HELD reservation: its units become available again."""
        return self._execute(EndReservation(reservation_id, int(ReservationState.RELEASED)), request_id)

    def reroute(self, reservation_id: str, rejected_by: str, *, policy: str | RoutingPolicy | None = None,
                request_id: str | None = None) -> Allocation:
        """Re-route the shipment a location rejected, keeping the rest of the reservation.

        The rejecting location's hold is released and its lines are routed again,
        excluding every location that rejected this order before (and the
        reservation's other locations, which ship their own parcels). If the
        lines cannot be placed, the whole reservation is released and the answer
        is UNFULFILLABLE, naming the short lines.
        """
        return self._execute(Reroute(reservation_id, rejected_by,
                                     None if policy is None else self._policy_ref(policy, none_is_default=False)),
                             request_id)

    def expire_due(self) -> list[str]:
        """Expire every HELD reservation and claim whose time has come (and start or end the flash sales
        whose window says so); returns the ids of what expired.

        Every command also does this first (as a command of its own); a server
        runs it from a sweeper so that holds expire while nothing else happens.
        """
        return list(self._execute(Expire()))

    def upsert_locations(self, locations: Iterable[Location], *,
                         request_id: str | None = None) -> tuple[int, int]:
        """Add locations to the network or replace existing ones (matched by id); returns ``(added, updated)``.

        A replaced location takes every attribute of the new record, including
        ``is_open`` and ``daily_capacity``; its stock, reservations and load are
        kept. Locations cannot be removed (close them instead), so every id and
        index stays valid. The whole network is revalidated first; on any error
        nothing changes. The native indexes are rebuilt, so this is an
        administrative call (about a second per million stock cells), not a hot path.

        Examples
        --------
        >>> import pyomni
        >>> net = pyomni.demo_network(stores=5, warehouses=1, skus=3, seed=0)
        >>> eng = pyomni.Engine(net)
        >>> eng.upsert_locations([pyomni.Location("NEW-1", pyomni.LocationKind.STORE, 31.2, 121.5)])
        (1, 0)
        >>> "NEW-1" in eng.network
        True
        """
        if isinstance(locations, Location):
            raise errors.InvalidArgument("locations must be a sequence of Location, not one", field="locations")
        given = validate.sequence(locations, "locations", what="a sequence of Location")
        for i, loc in enumerate(given):
            validate.instance(loc, Location, f"locations[{i}]", "a Location")
        # validated as a network of their own (ids unique, every value in range), and recorded as that network
        # gives them back: canonical types (enums, plain numbers), so the journal replays exactly what was applied
        new = tuple(Network.from_locations(given))
        return self._execute(UpsertLocations(new), request_id)

    # -- deciders: read the state, name the effect, change nothing -----------------------------
    # Each returns ``(effect, explanation)``: the explanation (or None) is the router's full account of a
    # routing decision, handed to the first caller only; the window and replay keep the recorded one.
    def _decide_apply_only(self, command: Command, now: float) -> tuple[Any, Any]:
        return None, None

    def _decide_claims_elsewhere(self, command: ClaimBatch | RouteBatch, now: float) -> tuple[Any, Any]:
        # batches are decided row by row in _commit_claims (selling.py) and _commit_route_batch
        # (routing_batch.py); only their records come through here, in replay
        raise errors.InvariantViolation("batches go through claim_many() / route_columns(), not as bare commands")

    def _decide_route(self, command: RouteOrder, now: float) -> tuple[Any, Any]:
        pol = self._resolve_policy(command.policy)
        p = self._parse(command.order, pol)
        self._check_not_live(command.order)
        return self._hold_effect(p, pol, self._decide(p, pol, False))

    def _hold_effect(self, p: _ParsedOrder, pol: RoutingPolicy, r: tuple) -> tuple[Any, Any]:
        self._parsed = p              # the applier uses it instead of parsing the order again
        if r[0] != 0:
            live = self._allocation(p, pol, r, AllocationStatus.UNFULFILLABLE, p.skus, p.qtys)
            return Unfilled(live.short_lines), live.explanation
        ships = tuple(ShipmentPlan(s[0], s[1], s[2], s[3]) for s in r[1])
        return Hold(ships, r[8]), self._explain(pol, r)

    def _decide_plan(self, command: ReservePlan, now: float) -> tuple[Any, Any]:
        pol = self._resolve_policy(command.policy)
        p = self._parse(command.order, pol)
        self._check_not_live(command.order)
        short = self._channel_short(p.order.channel, p.skus, p.qtys)
        if short:
            return self._hold_effect(p, pol, ("channel", short))
        ships = self._price_plan(p, pol, command.plan)
        self._parsed = p
        return Hold(tuple(ShipmentPlan(s[0], s[1], s[2], s[3]) for s in ships)), None

    def _check_not_live(self, order: Order) -> None:
        if order.id in self._live_orders:
            raise errors.DuplicateId(f"order {shown(order.id)} already has reservation "
                                     f"{shown(self._live_orders[order.id])}", field="id")

    def _decide_end(self, command: EndReservation, now: float) -> tuple[Any, Any]:
        self._held(command.reservation_id)
        return None, None

    def _held(self, reservation_id: Any) -> _Record:
        rec = self._record(reservation_id)
        if rec.state is not ReservationState.HELD:
            raise errors.ReservationNotHeld(f"reservation {shown(reservation_id)} is {rec.state.name}, not HELD",
                                            field="reservation_id")
        return rec

    def _decide_reroute(self, command: Reroute, now: float) -> tuple[Any, Any]:
        rec = self._held(command.reservation_id)
        loc = self._loc(command.rejected_by, "rejected_by")
        idx = next((i for i, s in enumerate(rec.shipments) if s[0] == loc), None)
        if idx is None:
            raise errors.InvalidArgument(f"{shown(command.rejected_by)} does not fulfil reservation "
                                         f"{shown(command.reservation_id)}", field="rejected_by")
        pol = rec.policy if command.policy is None else self._resolve_policy(command.policy)
        rejected = rec.shipments[idx]
        others = [s for i, s in enumerate(rec.shipments) if i != idx]
        p = self._parse(rec.order, pol)
        skus = [s for s, t in zip(rejected[5], rejected[3]) if t]
        qtys = [t for t in rejected[3] if t]
        # every location that ever rejected this order stays excluded, however many
        excluded = tuple(sorted(rec.excluded | {loc} | {s[0] for s in others}))
        budget = max(1, p.max_ship - len(others))
        # decide as if the rejected parcel were already released: its units count for channel limits (the
        # location itself is excluded). The ledger is not touched: releasing and holding again could fail
        # the hold's availability check (safety raised since) and lose it
        r = self._decide(p, pol, False, skus, qtys, excluded, budget, self._freed_by([rejected]))
        if r[0] != 0:
            live = self._allocation(p, pol, r, AllocationStatus.UNFULFILLABLE, skus, qtys)
            return Rerouted(loc, None, live.short_lines), live.explanation
        ships = tuple(ShipmentPlan(s[0], s[1], s[2], s[3], tuple(skus)) for s in r[1])
        return Rerouted(loc, ships, (), r[8]), self._explain(pol, r)

    def _decide_expire(self, command: Expire, now: float) -> tuple[Any, Any]:
        heap = self._expiry
        due: list[str] = []
        while heap and heap[0][0] <= now:               # the heap is an index: stale entries are dropped here
            _, _, rid = heapq.heappop(heap)
            rec = self._records.get(rid)
            if rec is not None and rec.state is ReservationState.HELD and rec.expires_at <= now:
                due.append(rid)
        claims, started, ended = self._decide_selling_clock(now)
        if not (due or claims or started or ended):
            return _NOTHING, None
        return Expired(tuple(due), claims, started, ended), None

    # -- appliers: the only code that changes state; live and in replay alike ---------------------
    def _apply_stock(self, command: StockCommand, effect: None, now: float, request_id: str | None) -> StockLevel:
        loc = self._loc(command.location, "location")
        s = self._sku(command.sku, "sku")
        if not 0 <= command.kind < len(EVENT_KINDS):
            raise errors.InvalidArgument(f"unknown stock event kind {command.kind}", field="event")
        check_status(self._ledger.apply_event(loc, s, command.kind, command.qty, command.safety),
                     f"{EVENT_KINDS[command.kind]} {command.qty} of {shown(command.sku)} at {shown(command.location)}",
                     field="qty")
        return self._stock_level(loc, s)

    def _apply_events(self, command: StockEvents, effect: None, now: float, request_id: str | None) -> int:
        loc = np.frombuffer(command.loc, dtype="<i4")
        sku = np.frombuffer(command.sku, dtype="<i4")
        kind = np.frombuffer(command.kind, dtype="<i1")
        qty = np.frombuffer(command.qty, dtype="<i8")
        safety = np.frombuffer(command.safety, dtype="<i8")
        if not (len(loc) == len(sku) == len(kind) == len(qty) == len(safety) == command.n):
            raise errors.InvalidArgument("stock event columns differ in length", field="events")
        if command.n and (int(loc.max()) >= len(self._loc_ids) or int(sku.max()) >= len(self._sku_ids)):
            raise errors.InvalidArgument("stock events name unknown location or SKU indices", field="events")
        status, row = self._ledger.apply_events(loc, sku, kind, qty, safety)
        if status:
            what = EVENT_KINDS[kind[row]] if 0 <= kind[row] < len(EVENT_KINDS) else f"kind {kind[row]}"
            check_status(status, f"event {row} ({what} {qty[row]} of {shown(self._sku_ids[sku[row]])} at "
                         f"{shown(self._loc_ids[loc[row]])}) failed; no event of the batch was applied",
                         field=f"events[{row}]")
        # new cells go to their SKUs' trees now, not inside the next orders' routing
        self._router.prepare()
        return command.n

    def _apply_transfer(self, command: Transfer, effect: None, now: float,
                        request_id: str | None) -> tuple[StockLevel, StockLevel]:
        src = self._loc(command.source, "source")
        dst = self._loc(command.destination, "destination")
        if src == dst:
            raise errors.InvalidArgument("source and destination are the same location", field="destination")
        s = self._sku(command.sku, "sku")
        check_status(self._ledger.transfer(src, dst, s, command.qty),
                     f"transfer {command.qty} of {shown(command.sku)} from {shown(command.source)} to "
                     f"{shown(command.destination)}",
                     field="qty")
        return self._stock_level(src, s), self._stock_level(dst, s)

    def _apply_hold(self, command: RouteOrder | ReservePlan, effect: Hold | Unfilled, now: float,
                    request_id: str | None) -> Allocation | _Later:
        order = command.order
        pol = self._resolve_policy(command.policy)
        if isinstance(effect, Unfilled):
            expl = Explanation("recorded", 0, {}, (), False, "", pol.key)
            return Allocation(order.id, AllocationStatus.UNFULFILLABLE, None, (), 0.0, effect.short, expl)
        p = self._parsed
        if p is None or p.order is not order:           # replay: the order was checked when it was decided
            p = self._parse(order, pol)
        self._parsed = None
        ships = self._take(effect.shipments, tuple(p.skus))
        # the number and the expiry follow from the state and the command: replay derives them the same way
        seq = self._seq = self._seq + 1
        rid = f"R{seq:010d}"
        ttl = command.ttl if type(command) is RouteOrder and command.ttl is not None else self._ttl
        expires_at = now + ttl
        rec = self._records[rid] = _Record(rid, seq, request_id, order, now, expires_at, ships,
                                           frozenset(p.excluded), p.need_cap, p.max_km, pol)
        self._record_order.append(rec)
        self._live_orders[order.id] = rid
        heapq.heappush(self._expiry, (expires_at, seq, rid))
        self._ships_new(rec, now)
        if self._replaying:       # a partial, not a closure: one object per remembered answer, not five
            return _Later(functools.partial(self._held_answer, order, rid, ships, expires_at, pol, effect.split_reason))
        return self._held_answer(order, rid, ships, expires_at, pol, effect.split_reason)

    def _held_answer(self, order: Order, rid: str, ships: list[tuple], expires_at: float, pol: RoutingPolicy,
                     split_reason: int) -> Allocation:
        out = self._shipments(ships)
        expl = Explanation("recorded", len(out), {}, (), len(out) > 1, _SPLIT_REASONS[split_reason], pol.key)
        return Allocation(order.id, AllocationStatus.ALLOCATED, rid, out, sum(sh.cost.total for sh in out), (), expl,
                          expires_at)

    def _take(self, plans: Sequence[ShipmentPlan], order_skus: tuple[int, ...]) -> list[tuple]:
        """Hold the units of planned shipments (all or nothing); their internal shipment tuples."""
        ships = []
        for sp in plans:
            skus = order_skus if sp.skus is None else sp.skus
            cells = tuple(self._ledger.cell_index(sp.loc, s) if t else -1 for s, t in zip(skus, sp.takes))
            ships.append((sp.loc, sp.km, sp.costs, sp.takes, cells, skus))
        self._change_holds(ships, 0)
        for ship in ships:
            check_status(self._ledger.add_load(ship[0], 1, 0))
        return ships

    def _apply_end(self, command: EndReservation, effect: None, now: float,
                   request_id: str | None) -> Reservation | _Later:
        rec = self._held(command.reservation_id)
        self._end(rec, ReservationState(command.state))
        if self._replaying:            # the record's state, shipments and exclusions are replaced, never changed
            return _Later(functools.partial(self._public, rec, rec.state, rec.shipments, rec.excluded))
        return self._public(rec)

    def _apply_reroute(self, command: Reroute, effect: Rerouted, now: float, request_id: str | None) -> Allocation:
        rec = self._held(command.reservation_id)
        idx = next(i for i, s in enumerate(rec.shipments) if s[0] == effect.rejected)
        rejected = rec.shipments[idx]
        others = [s for i, s in enumerate(rec.shipments) if i != idx]
        self._change_holds([rejected], 1)
        check_status(self._ledger.add_load(effect.rejected, -1, 0))
        self._ship_removed(rec, effect.rejected, now)
        rec.excluded = rec.excluded | {effect.rejected}
        pol = rec.policy if command.policy is None else self._resolve_policy(command.policy)
        if effect.shipments is None:
            rec.shipments = others
            self._end(rec, ReservationState.RELEASED)
            expl = Explanation("recorded", 0, {}, (), False, "", pol.key)
            return Allocation(rec.order.id, AllocationStatus.UNFULFILLABLE, None, (), 0.0, effect.short, expl)
        rec.shipments = others + self._take(effect.shipments, ())
        self._ships_added(rec, now)
        out = self._shipments(rec.shipments)
        expl = Explanation("recorded", len(effect.shipments), {}, (), len(out) > 1,
                           _SPLIT_REASONS[effect.split_reason], pol.key)
        return Allocation(rec.order.id, AllocationStatus.ALLOCATED, rec.id, out, sum(sh.cost.total for sh in out),
                          (), expl, rec.expires_at)

    def _apply_expire(self, command: Expire, effect: Any, now: float, request_id: str | None) -> tuple[str, ...]:
        if effect is _NOTHING:
            return ()
        for rid in effect.reservation_ids:
            self._end(self._held(rid), ReservationState.EXPIRED)
        self._apply_selling_clock(effect.claims, effect.started, effect.ended)
        return effect.reservation_ids + tuple(claim_id(n) for n in np.frombuffer(effect.claims, dtype=np.int64))

    def _apply_upsert(self, command: UpsertLocations, effect: None, now: float,
                      request_id: str | None) -> tuple[int, int]:
        new = command.locations
        current = list(self._net)
        by_id = {x.id: x for x in new}
        merged = [by_id.get(x.id, x) for x in current] + [x for x in new if x.id not in self._loc_index]
        try:
            network = Network.from_locations(merged, skus=self._sku_ids)
        except errors.PyomniError as exc:   # name the upserted record, not the merged network's row
            raise type(exc)(str(exc), field="locations") from None
        n_old = len(current)
        changed = np.array([x.id in by_id for x in current] + [True] * (len(merged) - n_old), dtype=bool)
        caps = np.where(changed, network.capabilities, np.resize(self._caps, len(merged))).astype(np.uint8)
        is_open = np.where(changed, network.is_open, np.resize(self._open, len(merged))).astype(np.uint8)
        capacity = np.where(changed, network.daily_capacity, np.resize(self._capacity, len(merged))).astype(np.int32)
        self._install(network, self._export_locked(), caps, is_open, capacity)
        return len(merged) - n_old, int(changed[:n_old].sum())

    def _apply_open(self, command: SetLocationOpen, effect: None, now: float, request_id: str | None) -> None:
        loc = self._loc(command.location, "location")
        self._open[loc] = command.is_open
        self._router.set_open(loc, command.is_open)

    def _apply_capacity(self, command: SetDailyCapacity, effect: None, now: float, request_id: str | None) -> None:
        loc = self._loc(command.location, "location")
        self._capacity[loc] = command.capacity
        self._router.set_capacity(loc, command.capacity)

    def _apply_new_day(self, command: NewDay, effect: None, now: float, request_id: str | None) -> None:
        self._ledger.new_day()

    def _apply_skus(self, command: RegisterSkus, effect: None, now: float, request_id: str | None) -> int:
        seen: set[str] = set()
        for i, s in enumerate(command.skus):
            if s in self._sku_index or s in seen:
                raise errors.DuplicateId(f"SKU {shown(s)} is already in the catalogue", field=f"skus[{i}]")
            seen.add(s)
        check_status(self._ledger.add_skus(len(command.skus)))
        for s in command.skus:
            self._sku_index[s] = len(self._sku_ids)
            self._sku_ids.append(s)
        return len(command.skus)

    def _apply_policy(self, command: RegisterPolicy, effect: None, now: float, request_id: str | None) -> None:
        self._add_policy(command.policy)

    def _add_policy(self, policy: RoutingPolicy) -> None:
        self._policies[policy.key] = policy
        latest = self._policies.get(policy.name)
        if latest is None or latest.version <= policy.version:
            self._policies[policy.name] = policy

    def _apply_channel(self, command: SetChannelRule, effect: None, now: float, request_id: str | None) -> None:
        if command.rule is None:
            self._channels.pop(command.channel, None)
        else:
            self._channels[command.channel] = command.rule
    # -- reservation life cycle -----------------------------------------------------
    def _record(self, reservation_id: Any) -> _Record:
        try:
            return self._records[reservation_id]
        except (KeyError, TypeError):
            raise errors.UnknownReservation(f"no reservation {shown(reservation_id)}", field="reservation_id") from None

    def _change_holds(self, ships: Iterable[tuple], op: int) -> None:
        cells: list[int] = []
        qtys: list[int] = []
        for ship in ships:
            for c, t in zip(ship[4], ship[3]):
                if t:
                    cells.append(c)
                    qtys.append(t)
        check_status(self._ledger.change_holds(np.array(cells, dtype=np.int64), np.array(qtys, dtype=np.int32), op),
                     "reservation holds do not match the ledger")

    def _end(self, rec: _Record, state: ReservationState) -> None:
        # release (op 1) or consume (op 2) every hold, then move the load counters
        self._change_holds(rec.shipments, 2 if state is ReservationState.CONFIRMED else 1)
        for ship in rec.shipments:
            check_status(self._ledger.add_load(ship[0], -1, 1 if state is ReservationState.CONFIRMED else 0))
        rec.state = state
        if state is not ReservationState.CONFIRMED:
            self._live_orders.pop(rec.order.id, None)
            self._ships_cancelled(rec, self._cmd_now)

    # -- routing -----------------------------------------------------------------
    def _parse(self, order: Order, pol: RoutingPolicy) -> _ParsedOrder:
        """Validate and intern an order; raises typed errors and touches no state."""
        if not isinstance(order, Order):
            raise errors.InvalidOrder("order must be a pyomni.Order", field="order")
        oid = order.id
        if not (type(oid) is str and 0 < len(oid) <= MAX_ID_CHARS and oid.isascii() and oid.isprintable()):
            validate.identifier(oid, "id", error=errors.InvalidOrder)
        lines = order.lines
        n = len(lines)
        if n == 0:
            raise errors.InvalidOrder("order has no lines", field="lines")
        if n > MAX_LINES:
            raise errors.InvalidOrder(f"order has {n} lines; at most {MAX_LINES}", field="lines")
        p = _ParsedOrder()
        p.order = order
        skus: list[int] = []
        qtys: list[int] = []
        sku_index = self._sku_index
        for line in lines:
            # hot path: no error-field strings unless something is wrong
            s = sku_index.get(line.sku, -1) if isinstance(line.sku, str) else -1
            qty = line.qty
            if s < 0 or type(qty) is not int or qty < 1 or qty > MAX_QTY:
                i = len(skus)
                self._sku(line.sku, f"lines[{i}].sku")
                validate.quantity(qty, f"lines[{i}].qty")
            skus.append(s)
            qtys.append(qty)
        if n > 1 and len(set(skus)) != n:
            raise errors.InvalidOrder("order repeats a SKU; merge its lines", field="lines")
        p.skus = skus
        p.qtys = qtys
        p.pickup = -1
        p.lat = p.lon = 0.0
        f = order.fulfilment
        assert f is not None  # Order.__post_init__ fills it in
        if f is Fulfilment.PICKUP:
            if order.pickup_location is None:
                raise errors.InvalidOrder("a pickup order needs pickup_location", field="pickup_location")
            p.pickup = self._loc(order.pickup_location, "pickup_location")
            if not self._caps[p.pickup] & Capability.PICKUP or not self._open[p.pickup]:
                raise errors.CapabilityMissing(f"{shown(order.pickup_location)} does not take pickup orders now",
                                               field="pickup_location")
        else:
            if order.destination is None:
                raise errors.InvalidOrder("a delivery order needs a destination", field="destination")
            if len(order.destination) != 2:
                raise errors.InvalidCoordinates("destination must be (lat, lon)", field="destination")
            p.lat, p.lon = validate.lat_lon(order.destination[0], order.destination[1])
        p.need_cap = _NEED_CAP[f]
        max_km = pol.max_distance_km if order.max_distance_km is None else order.max_distance_km
        if not isinstance(max_km, (int, float)) or isinstance(max_km, bool) or math.isnan(max_km) or max_km <= 0:
            raise errors.InvalidOrder("max_distance_km must be > 0", field="max_distance_km")
        if f is Fulfilment.SAME_DAY:
            max_km = min(max_km, pol.same_day_max_km)
        p.max_km = float(max_km)
        max_ship = pol.max_splits if order.max_splits is None else order.max_splits
        if type(max_ship) is not int or not 1 <= max_ship <= MAX_SHIPMENTS:
            raise errors.InvalidOrder(f"max_splits must be an int in 1..{MAX_SHIPMENTS}", field="max_splits")
        p.max_ship = max_ship
        if len(order.excluded_locations) > MAX_EXCLUDED:
            raise errors.InvalidOrder(f"at most {MAX_EXCLUDED} excluded locations", field="excluded_locations")
        p.excluded = tuple(self._loc(x, f"excluded_locations[{i}]")
                           for i, x in enumerate(order.excluded_locations)) if order.excluded_locations else ()
        channel = order.channel
        if not (type(channel) is str and 0 < len(channel) <= MAX_ID_CHARS and channel.isascii()
                and channel.isprintable()):
            validate.identifier(channel, "channel", error=errors.InvalidOrder)
        if order.coupon_cents or order.attribution is not None or order.selling_store is not None or any(
                line.unit_price_cents for line in lines):
            self._check_order_money(order)
        return p

    def _native_policy(self, pol: RoutingPolicy) -> Any:
        native = pol._native
        if native is None:
            native = self._make_native_policy(pol)
            object.__setattr__(pol, "_native", native)
        return native

    @staticmethod
    def _make_native_policy(pol: RoutingPolicy) -> Any:
        from ._core import NativePolicy
        return NativePolicy(float(pol.cost_per_km), float(pol.circuity), float(pol.split_penalty),
                            float(pol.low_stock_weight), float(pol.load_weight), float(pol.priority_weight),
                            pol.plan_objective == "fewest_shipments", pol.exact_plans)

    def _decide(self, p: _ParsedOrder, pol: RoutingPolicy, hold: bool, skus: Sequence[int] | None = None,
                qtys: Sequence[int] | None = None, excluded: tuple[int, ...] | None = None,
                max_ship: int | None = None, freed: Mapping[int, int] | None = None) -> tuple:
        skus = p.skus if skus is None else skus
        qtys = p.qtys if qtys is None else qtys
        # channel rules are checked before routing: a short line here is a CHANNEL_LIMIT answer
        short = self._channel_short(p.order.channel, skus, qtys, freed)
        if short:
            return ("channel", short)
        return self._router.route(self._policy_arg(pol), p.lat, p.lon, p.pickup, skus, qtys, p.need_cap,
                                  p.max_km, p.excluded if excluded is None else excluded,
                                  p.max_ship if max_ship is None else max_ship, hold)

    def _channel_short(self, channel: str, skus: Sequence[int], qtys: Sequence[int],
                       freed: Mapping[int, int] | None = None) -> list[tuple[int, int, int]]:
        """The lines a channel's rule forbids, as ``(sku, qty, limit)`` (none without a rule); ``freed``: units of
        available-to-sell per SKU to count as if a hold were already released."""
        rule = self._channels.get(channel)
        if rule is None:
            return []
        more = freed or {}
        limits = [(s, q, rule.limit(self._ledger.sku_totals(s)[2] + more.get(s, 0))) for s, q in zip(skus, qtys)]
        shown = self._feed_shown.get(channel)
        if shown is not None:       # never more than the channel's feed told it (see pyomni.feeds)
            limits = [(s, q, min(lim, int(shown[s])) if s < len(shown) and shown[s] >= 0 else lim)
                      for s, q, lim in limits]
        return [x for x in limits if x[1] > x[2]]

    def _freed_by(self, ships: Iterable[tuple]) -> dict[int, int]:
        """Per SKU, what releasing these held shipments would add to the network's available-to-sell (each cell's
        available is on-hand - reserved - safety, never below 0), computed without touching the ledger."""
        freed: dict[int, int] = {}
        for ship in ships:
            for s, t in zip(ship[5], ship[3]):
                if t:
                    on_hand, reserved, safety = self._ledger.cell(ship[0], s)
                    gain = max(0, on_hand - reserved + t - safety) - max(0, on_hand - reserved - safety)
                    freed[s] = freed.get(s, 0) + gain
        return freed

    def _explain(self, pol: RoutingPolicy, r: tuple) -> Explanation:
        """The router's account of a decision, built only if somebody reads it."""
        _, ships, _, _, considered, rejected, singles, strategy, split_reason, optimal, next_best, bound = r
        loc_ids = self._loc_ids
        return Explanation(_build=lambda: (
            _STRATEGIES[strategy], considered,
            {REJECT_NAMES[i]: c for i, c in enumerate(rejected) if c},
            tuple(Candidate(loc_ids[loc], cost, km) for loc, cost, km in singles),
            len(ships) > 1, _SPLIT_REASONS[split_reason], pol.key, optimal, next_best,
            bound if ships else None))

    def _allocation(self, p: _ParsedOrder, pol: RoutingPolicy, r: tuple, status: AllocationStatus,
                    skus: Sequence[int], qtys: Sequence[int]) -> Allocation:
        """The answer to a decision that held nothing: QUOTED, or UNFULFILLABLE with its short lines."""
        sku_ids = self._sku_ids
        if r[0] == "channel":
            limited = tuple(ShortLine(sku_ids[s], q, min(q, lim), "CHANNEL_LIMIT") for s, q, lim in r[1])
            expl = Explanation("none", 0, {}, (), False, "", pol.key)
            return Allocation(p.order.id, AllocationStatus.UNFULFILLABLE, None, (), 0.0, limited, expl)
        code, ships, total, covered = r[:4]
        if code == 2:
            raise errors.InvariantViolation("the router could not hold the plan it chose")
        expl = self._explain(pol, r)
        if code == 1:
            short: list[ShortLine] = []
            for s, q, c in zip(skus, qtys, covered):
                if c < q:
                    reason = "NO_STOCK" if self._ledger.sku_totals(s)[2] < q else "CONSTRAINTS"
                    short.append(ShortLine(sku_ids[s], q, c, reason))
            return Allocation(p.order.id, AllocationStatus.UNFULFILLABLE, None, (), 0.0, tuple(short), expl)
        if len(ships) == 1 and ships[0][3] == tuple(qtys) and skus is p.skus:
            # one location ships the whole order: its lines are the order's own Line objects
            loc, km, costs = ships[0][:3]
            out: tuple[Shipment, ...] = (Shipment(self._loc_ids[loc], p.order.lines, km, CostBreakdown(*costs)),)
        else:
            out = self._shipments(ships, skus)
        return Allocation(p.order.id, status, None, out, total, (), expl, None)

    def _shipments(self, ships: Iterable[tuple], skus: Sequence[int] | None = None) -> tuple[Shipment, ...]:
        sku_ids = self._sku_ids
        out = []
        for ship in ships:
            loc, km, costs, takes = ship[0], ship[1], ship[2], ship[3]
            line_skus: Sequence[int] = ship[5] if len(ship) == 6 else skus   # type: ignore[assignment]
            out.append(Shipment(self._loc_ids[loc],
                                tuple(Line(sku_ids[s], t) for s, t in zip(line_skus, takes) if t),
                                km, CostBreakdown(*costs)))
        return tuple(out)

    def _price_plan(self, p: _ParsedOrder, pol: RoutingPolicy, plan: tuple) -> list[tuple]:
        """Validate a plan against the order and the ledger; its native shipment tuples, priced. Changes nothing."""
        from ._core import py_chord_sq_to_km, py_unit_vector

        if not plan:
            raise errors.InvalidOrder("a plan needs at least one shipment", field="shipments")
        if len(plan) > p.max_ship:
            raise errors.InvalidOrder(f"{len(plan)} shipments exceed max_splits = {p.max_ship}", field="shipments")
        position = {s: i for i, s in enumerate(p.skus)}
        covered = [0] * len(p.skus)
        held, confirmed = self._ledger.loads()
        net = self._net
        if p.pickup >= 0:
            dest = py_unit_vector(float(net.lat[p.pickup]), float(net.lon[p.pickup]))
        else:
            dest = py_unit_vector(p.lat, p.lon)
        seen: set[int] = set()
        ships: list[tuple] = []
        for k, (location, lines) in enumerate(plan):
            where = f"shipments[{k}]"
            loc = self._loc(location, f"{where}.location")
            if loc in seen:
                raise errors.InvalidArgument(f"location {shown(location)} appears twice in the plan", field=where)
            seen.add(loc)
            if loc in p.excluded:
                raise errors.InvalidArgument(f"the order excludes {shown(location)}", field=f"{where}.location")
            if not self._open[loc]:
                raise errors.CapabilityMissing(f"{shown(location)} is closed", field=f"{where}.location")
            if loc != p.pickup and (int(self._caps[loc]) & p.need_cap) != p.need_cap:
                raise errors.CapabilityMissing(f"{shown(location)} cannot fulfil this kind of order",
                                               field=f"{where}.location")
            cap = int(self._capacity[loc])
            load = int(held[loc]) + int(confirmed[loc])
            if cap > 0 and load >= cap:
                raise errors.FailedPrecondition(f"{shown(location)} has no shipment capacity left today ({load}/{cap})",
                                                field=f"{where}.location")
            xyz = py_unit_vector(float(net.lat[loc]), float(net.lon[loc]))
            km = py_chord_sq_to_km(sum((a - b) * (a - b) for a, b in zip(xyz, dest)))
            if km > p.max_km:
                raise errors.InvalidOrder(f"{shown(location)} is {km:.1f} km away; the order allows {p.max_km}",
                                          field=f"{where}.location")
            takes = [0] * len(p.skus)
            cells = [-1] * len(p.skus)
            low = 0.0
            for j, (sku, qty) in enumerate(lines):
                s = self._sku(sku, f"{where}.lines[{j}].sku")
                i = position.get(s)
                if i is None:
                    raise errors.InvalidArgument(f"SKU {shown(sku)} is not in order {shown(p.order.id)}",
                                                 field=f"{where}.lines[{j}].sku")
                if takes[i]:
                    raise errors.InvalidArgument(f"SKU {shown(sku)} appears twice in one shipment",
                                                 field=f"{where}.lines[{j}].sku")
                c = self._ledger.cell_index(loc, s)
                cell = self._ledger.cell(loc, s)
                available = max(0, cell[0] - cell[1] - cell[2]) if cell is not None else 0
                if c < 0 or available < qty:
                    raise errors.InsufficientStock(f"{shown(location)} has {available} of {shown(sku)} available, "
                                                   f"the plan takes {qty}", field=f"{where}.lines[{j}].qty")
                takes[i] = qty
                cells[i] = c
                covered[i] += qty
                low += qty / available
            fixed = float(net.fixed_cost[loc]) + (pol.split_penalty if k else 0.0)
            costs = (fixed, pol.cost_per_km * pol.circuity * km, pol.low_stock_weight * low,
                     pol.load_weight * load / cap if cap > 0 else 0.0, pol.priority_weight * int(net.priority[loc]))
            ships.append((loc, km, costs, tuple(takes), tuple(cells), tuple(p.skus)))
        for i, (got, want) in enumerate(zip(covered, p.qtys)):
            if got != want:
                raise errors.InvalidOrder(f"the plan ships {got} of {want} units of {shown(self._sku_ids[p.skus[i]])}",
                                          field="shipments")
        return ships

    # -- queries -------------------------------------------------------------------
    def _public(self, rec: _Record, state: ReservationState | None = None, ships: list[tuple] | None = None,
                excluded: frozenset[int] | None = None) -> Reservation:
        """The public view of a record: as it is now, or as it was (its state, shipments and exclusions then)."""
        return Reservation(rec.id, rec.request_id, rec.order.id, rec.order.channel,
                           rec.state if state is None else state,
                           self._shipments(rec.shipments if ships is None else ships), rec.created_at, rec.expires_at,
                           tuple(self._loc_ids[i] for i in sorted(rec.excluded if excluded is None else excluded)))

    def reservation(self, reservation_id: str) -> Reservation:
        """One reservation by id (any state)."""
        with self._lock:
            return self._public(self._record(reservation_id))

    def reservations(self, state: ReservationState | None = None, *, after: str | None = None,
                     limit: int | None = None) -> list[Reservation]:
        """Reservations in id order, optionally of one state; ``after``/``limit`` page through them."""
        if state is not None:
            state = validate.member(state, "state", ReservationState)
        if after is not None:
            validate.instance(after, str, "after", "a reservation id (a string) or None")
        if limit is not None:
            limit = validate.integer(limit, "limit", low=0)
        if limit == 0:
            return []
        with self._lock:
            ordered = self._record_order
            # ids are issued in order, so a page starts by bisection, not by a scan from the first record
            start = 0 if after is None else bisect.bisect_right(ordered, after, key=_record_id)
            out = []
            for rec in itertools.islice(ordered, start, None):
                if state is None or rec.state is state:
                    out.append(self._public(rec))
                    if limit is not None and len(out) >= limit:
                        break
            return out

    def remembered(self, request_id: str) -> Any:
        """The answer remembered for ``request_id`` (what a retry would get), or None if it is not in the window.

        Examples
        --------
        >>> import pyomni
        >>> eng = pyomni.Engine(pyomni.demo_network(stores=5, warehouses=1, skus=3, seed=0))
        >>> eng.set_stock(eng.network.ids[0], "SKU-000001", 7, request_id="take-1").on_hand
        7
        >>> eng.remembered("take-1").on_hand, eng.remembered("take-2")
        (7, None)
        """
        validate.instance(request_id, str, "request_id", "a request id (a string)")
        with self._lock:
            entry = self._requests.get(request_id)
            return None if entry is None else entry.value()

    def _stock_level(self, loc: int, s: int) -> StockLevel:
        cell = self._ledger.cell(loc, s)
        on_hand, reserved, safety = cell if cell is not None else (0, 0, 0)
        return StockLevel(self._loc_ids[loc], self._sku_ids[s], on_hand, reserved, safety)

    def stock(self, location: str, sku: str) -> StockLevel:
        """One stock cell (all zero if the location never held the SKU)."""
        with self._lock:
            return self._stock_level(self._loc(location, "location"), self._sku(sku, "sku"))

    def available(self, sku: str, *, location: str | None = None, channel: str | None = None) -> int:
        """Available-to-sell of a SKU: network-wide, at one location, or for one channel.

        Examples
        --------
        >>> import pyomni
        >>> net = pyomni.demo_network(stores=5, warehouses=1, skus=3, seed=0)
        >>> eng = pyomni.Engine(net, channels={"tmall": pyomni.ChannelRule(share=0.5)})
        >>> _ = eng.set_stock(net.ids[0], "SKU-000000", 10, safety=2)
        >>> eng.available("SKU-000000"), eng.available("SKU-000000", channel="tmall")
        (8, 4)
        """
        if channel is not None:
            validate.instance(channel, str, "channel", "a channel name (a string) or None")
        with self._lock:
            s = self._sku(sku, "sku")
            if location is not None:
                return self._stock_level(self._loc(location, "location"), s).available
            total = int(self._ledger.sku_totals(s)[2])
            rule = self._channels.get(channel) if channel is not None else None
            return rule.limit(total) if rule is not None else total

    def channel_feed(self, channel: str | None, *, scope: str = "network", interval_ms: float = 20.0,
                     start: bool = True) -> ChannelFeed:
        """A live feed of a channel's available-to-sell (see :mod:`pyomni.feeds`); ``close()`` it when done.

        While a network-scope feed of a channel runs, that channel's orders are
        held to what the feed last published.
        """
        channel = validate.optional_identifier(channel, "channel")
        return ChannelFeed(self, channel, scope=scope, interval_ms=interval_ms, start=start)

    def availability(self, sku: str) -> pa.Table:
        """Every location holding a SKU: ``location, on_hand, reserved, safety, available`` (Arrow)."""
        with self._lock:
            loc, on_hand, reserved, safety = self._ledger.sku_cells(self._sku(sku, "sku"))
        order = np.argsort(loc, kind="stable")
        loc, on_hand, reserved, safety = loc[order], on_hand[order], reserved[order], safety[order]
        ids = np.asarray(self._loc_ids, dtype=object)
        return pa.table({
            "location": pa.array(ids[loc] if len(loc) else [], type=pa.string()),
            "on_hand": on_hand, "reserved": reserved, "safety": safety,
            "available": np.maximum(on_hand - reserved - safety, 0).astype(np.int32),
        })

    def available_near(self, sku: str, near: tuple[float, float], *, radius_km: float = 30.0,
                       limit: int = 20) -> list[NearbyStock]:
        """Store locator: open locations within ``radius_km`` with the SKU available, nearest first."""
        lat, lon = validate.point(near, "near")
        radius, k = self._radius_limit(radius_km, limit)
        with self._lock:
            s = self._sku(sku, "sku")
            found = self._router.nearest_filling(lat, lon, (s,), (1,), k, radius, 0)
            return [NearbyStock(self._loc_ids[loc], km, self._stock_level(loc, s).available) for loc, km in found]

    def find_pickup_locations(self, lines: Sequence[Line | tuple[str, int]], near: tuple[float, float], *,
                              radius_km: float = 30.0, limit: int = 5) -> list[PickupOption]:
        """Click-and-collect: the nearest pickup locations that can fill the whole basket from their own stock."""
        lat, lon = validate.point(near, "near")
        radius, k = self._radius_limit(radius_km, limit)
        lines = validate.sequence(lines, "lines", error=errors.InvalidOrder, what="a sequence of Line or (sku, qty)")
        basket = Order("basket", tuple(lines), destination=(lat, lon)).lines  # type: ignore[arg-type]
        if not basket or len(basket) > MAX_LINES:
            raise errors.InvalidOrder(f"basket must have 1..{MAX_LINES} lines", field="lines")
        qtys = tuple(validate.quantity(line.qty, f"lines[{i}].qty") for i, line in enumerate(basket))
        with self._lock:
            skus = tuple(self._sku(line.sku, f"lines[{i}].sku") for i, line in enumerate(basket))
            if len(set(skus)) != len(skus):
                raise errors.InvalidOrder("basket repeats a SKU", field="lines")
            found = self._router.nearest_filling(lat, lon, skus, qtys, k, radius, int(Capability.PICKUP))
            return [PickupOption(self._loc_ids[loc], km) for loc, km in found]

    @staticmethod
    def _radius_limit(radius_km: float, limit: int) -> tuple[float, int]:
        radius = validate.number(radius_km, "radius_km", low=0.0, low_open=True)
        return radius, validate.integer(limit, "limit", low=1, high=1000)

    def stock_table(self) -> pa.Table:
        """All stock cells as an Arrow table: ``location, sku, on_hand, reserved, safety``."""
        with self._lock:
            loc, sku, on_hand, reserved, safety = self._ledger.export()
        return pa.table({
            "location": pa.DictionaryArray.from_arrays(loc, pa.array(self._loc_ids, type=pa.string())),
            "sku": pa.DictionaryArray.from_arrays(sku, pa.array(self._sku_ids, type=pa.string())),
            "on_hand": on_hand, "reserved": reserved, "safety": safety,
        })

    def stats(self) -> dict[str, Any]:
        """Sizes and memory: cells, bytes per cell, units available to sell network-wide, reservations per state."""
        with self._lock:
            states = {s.name: 0 for s in ReservationState}
            for rec in self._records.values():
                states[rec.state.name] += 1
            return {
                "native": self._native,
                "locations": len(self._loc_ids),
                "skus": len(self._sku_ids),
                "cells": int(self._ledger.n_cells),
                "memory_bytes": int(self._ledger.memory_bytes()),
                "routing_index_bytes": int(self._router.tree_bytes),
                "available_units": int(self._ledger.sku_available_array().sum()),
                "bytes_per_cell": float(self._ledger.cell_bytes()),
                "reservations": states,
                "request_ids": len(self._requests),
            }

    def _export_locked(self) -> dict[str, Any]:
        loc, sku, on_hand, reserved, safety = self._ledger.export()
        held, confirmed = self._ledger.loads()
        return {"loc": loc, "sku": sku, "on_hand": on_hand, "reserved": reserved, "safety": safety,
                "held": held, "confirmed": confirmed}

    def _install(self, network: Network, cells: Mapping[str, np.ndarray], caps: np.ndarray, is_open: np.ndarray,
                 capacity: np.ndarray) -> None:
        """Replace the backend with one for ``network`` holding ``cells``, then re-take every HELD hold
        (reservations, claims and earmarks)."""
        ledger, router = _make_backend(self._native, network, len(self._sku_ids), caps, is_open, capacity)
        n = len(cells["loc"])
        loc = np.ascontiguousarray(cells["loc"], dtype=np.int32)
        sku = np.ascontiguousarray(cells["sku"], dtype=np.int32)
        zeros = np.zeros(n, dtype=np.int64)
        status, row = ledger.apply_events(loc, sku, np.full(n, _EV_SET, dtype=np.int8),
                                          np.ascontiguousarray(cells["on_hand"], dtype=np.int64), zeros)
        check_status(status, f"restoring stock cell {row}")
        for rec in self._records.values():
            if rec.state is ReservationState.HELD:
                rec.shipments = [(s[0], s[1], s[2], s[3],
                                  tuple(ledger.cell_index(s[0], k) if t else -1 for k, t in zip(s[5], s[3])), s[5])
                                 for s in rec.shipments]
                for ship in rec.shipments:
                    cs = [c for c, t in zip(ship[4], ship[3]) if t]
                    ts = [t for t in ship[3] if t]
                    check_status(ledger.change_holds(np.array(cs, dtype=np.int64), np.array(ts, dtype=np.int32), 0),
                                 f"restoring the holds of reservation {rec.id}")
                    check_status(ledger.add_load(ship[0], 1, 0))
        for (loc_i, sku_i), units in self._selling_holds().items():     # claims and earmarks
            check_status(ledger.change_holds(np.array([ledger.cell_index(loc_i, sku_i)], dtype=np.int64),
                                             np.array([units], dtype=np.int32), 0),
                         "restoring the flash sales' holds")
        status, row = ledger.apply_events(loc, sku, np.full(n, _EV_SAFETY, dtype=np.int8),
                                          np.ascontiguousarray(cells["safety"], dtype=np.int64), zeros - 1)
        check_status(status, f"restoring safety stock of cell {row}")
        for i, c in enumerate(np.asarray(cells["confirmed"], dtype=np.int64)):
            if c:
                check_status(ledger.add_load(i, 0, int(c)))
        _, _, _, reserved, _ = ledger.export()
        if int(reserved.sum()) != int(np.asarray(cells["reserved"], dtype=np.int64).sum()):
            raise errors.InvariantViolation("the HELD reservations do not account for the reserved units")
        router.prepare()
        self._net = network
        self._ledger, self._router = ledger, router
        self._loc_ids = network.ids
        self._loc_index = {x: i for i, x in enumerate(network.ids)}
        self._caps, self._open, self._capacity = caps, is_open, capacity


    # -- durable state: snapshots, the journal, recovery ------------------------------------------
    def state(self) -> EngineState:
        """A consistent copy of the stock and the loads, taken under the lock (see :class:`EngineState`).

        Examples
        --------
        >>> import pyomni
        >>> eng = pyomni.Engine(pyomni.demo_network(stores=5, warehouses=1, skus=3, seed=0))
        >>> _ = eng.set_stock(eng.network.ids[0], "SKU-000001", 7)
        >>> s = eng.state()
        >>> int(s.on_hand.sum()), s.lsn
        (7, 1)
        """
        with self._lock:
            cells = self._export_locked()
            return EngineState(self._net, tuple(self._sku_ids), cells["loc"], cells["sku"], cells["on_hand"],
                               cells["reserved"], cells["safety"], cells["held"], cells["confirmed"],
                               self._caps.copy(), self._open.copy(), self._capacity.copy(), self._lsn, self._seq)

    def _capture(self) -> snapshot.SnapshotData:
        """Under the lock: copies of everything a snapshot holds -- references only, where the referenced
        values are never changed in place (see ``_Record``); converting and writing happen outside."""
        cells = self._export_locked()
        policies = {p.key: p for p in self._policies.values()}
        return snapshot.SnapshotData(
            lsn=self._lsn, seq=self._seq, saved_at=float(self._clock()),
            config={"reservation_ttl": self._ttl, "max_request_ids": self._max_request_ids,
                    "request_id_ttl": self._request_id_ttl},
            default_policy=self._default_policy.key, policies=list(policies.values()), channels=dict(self._channels),
            locations=list(self._net), skus=list(self._sku_ids), capabilities=self._caps.copy(),
            is_open=self._open.copy(), daily_capacity=self._capacity.copy(), confirmed=cells["confirmed"],
            cells=cells, reservations=[(r, r.state, r.shipments, r.excluded) for r in self._records.values()],
            # a claim's entry is its number: the claim's row rebuilds its fingerprint and answer after a restart
            requests=[(rid, e.lsn, e.at, e.command, e.answer) if type(e) is _Remembered
                      else (rid, e.lsn, e.at, _CLAIM_ENTRY, e.number) for rid, e in self._requests.items()],
            selling=self._capture_selling(), stores=self._capture_stores())

    @staticmethod
    def _snapshot_records(data: snapshot.SnapshotData) -> None:
        """Outside the lock: the captured records as the snapshot's plain tuples, every answer built."""
        registered = {id(p) for p in data.policies}

        def policy_ref(pol: RoutingPolicy) -> str | RoutingPolicy:
            return pol.key if id(pol) in registered else pol

        data.reservations = [
            (r.id, r.seq, r.request_id, r.order, int(state), r.created_at, r.expires_at,
             tuple((s[0], s[1], s[2], s[3], s[5]) for s in ships), tuple(sorted(excluded)), r.need_cap, r.max_km,
             policy_ref(r.policy))
            for r, state, ships, excluded in data.reservations]
        # answers replay left unbuilt are built here, outside the lock (they read only unchanging values)
        data.requests = [(rid, lsn, at, command, answer.build() if type(answer) is _Later else answer)
                         for rid, lsn, at, command, answer in data.requests]

    def save(self, directory: str | os.PathLike[str] | None = None) -> Path:
        """Write a snapshot of the whole engine; returns its path.

        Without ``directory``, an engine from :meth:`open` checkpoints into its
        own data directory: the snapshot is written beside the previous ones
        (the two newest are kept) and journal segments older than the oldest
        kept snapshot are deleted, which bounds both disk use and recovery
        time. With ``directory``, a standalone snapshot is written there, to be
        read with :meth:`load` or :meth:`open`. The engine is locked only while
        its state is copied; encoding and writing run beside new commands.

        Examples
        --------
        >>> import pyomni, tempfile
        >>> eng = pyomni.Engine(pyomni.demo_network(stores=5, warehouses=1, skus=3, seed=0))
        >>> _ = eng.set_stock(eng.network.ids[0], "SKU-000001", 7)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = eng.save(d)
        ...     pyomni.Engine.load(d).stock(eng.network.ids[0], "SKU-000001").on_hand
        7
        """
        target = None if directory is None else validate.path(directory, "directory")
        own = self._directory is not None and (target is None or target.resolve() == self._directory.resolve())
        if target is None and not own:
            raise errors.InvalidArgument("an engine without a data directory needs a directory to save to",
                                         field="directory")
        root = (self._directory if own else target) / "snapshots"   # type: ignore[operator]
        with self._snapshot_lock:
            start = time.perf_counter()
            with self._lock, _gc_paused():           # 200k records + 200k request ids: 1.2 s -> 0.25 s locked
                data = self._capture()
            locked = time.perf_counter() - start
            self._snapshot_records(data)
            if own:
                self._journal.sync()          # every record the snapshot includes is on disk before it counts
            path = snapshot.write(root, data)
            if own:
                oldest = snapshot.prune(root, keep=2)
                retired = self._journal.retire(oldest) if oldest is not None else 0
                log.info("snapshot written", extra={"lsn": data.lsn, "cells": len(data.cells["loc"]),
                                                    "reservations": len(data.reservations),
                                                    "request_ids": len(data.requests), "segments_retired": retired,
                                                    "locked_seconds": round(locked, 3),
                                                    "seconds": round(time.perf_counter() - start, 3)})
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, clock: Callable[[], float] = time.time,
             native: bool | None = None) -> Engine:
        """An in-memory engine holding the durable state of ``directory`` (it is only read).

        The newest valid snapshot, plus the journal records after it if the
        directory has a journal (as :meth:`open` recovers, but changing no
        file: a torn tail is left for :meth:`open` to cut). The engine keeps no
        journal: use it to inspect or copy a data directory, not to serve.

        Raises
        ------
        NotFound
            ``directory`` holds no snapshot.
        JournalCorrupt
            A snapshot or the journal fails its checksums, or records are missing.
        """
        from .journal import read_records

        root = validate.path(directory, "directory")
        validate.callable_(clock, "clock")
        native = validate.optional_flag(native, "native")
        data = snapshot.latest(root / "snapshots")
        if data is None:
            raise errors.NotFound(f"no engine snapshot in {shown(str(root), _PATH_SHOWN)}", field="directory")
        eng = cls._from_snapshot(data, clock=clock, native=native)
        if (root / "journal").is_dir():
            eng._replay_all(read_records(root / "journal", after_lsn=eng._lsn))
        return eng

    @classmethod
    def open(cls, directory: str | os.PathLike[str], network: Network | None = None, *, fsync: str = "always",
             interval_ms: float = 5.0, clock: Callable[[], float] = time.time, native: bool | None = None,
             segment_bytes: int = 64 << 20, **options: Any) -> Engine:
        """An engine on a data directory: every acknowledged mutation survives a crash.

        A new directory (no snapshot yet) is started from ``network`` and
        ``options`` (the keyword arguments of :class:`Engine`), which are made
        durable at once; an existing one recovers its own state (``network``
        and ``options`` are then ignored): the newest valid snapshot, plus every
        journal record after it, applied as recorded. A torn last record (a
        crash mid-write) is cut and logged; damage anywhere else raises
        :class:`~pyomni.errors.JournalCorrupt` naming the file and offset
        (``pyomni journal verify`` shows it). Reservation ids, sequence numbers
        and the idempotency window carry on exactly.

        Parameters
        ----------
        directory : path
            The data directory (``snapshots/`` and ``journal/`` inside).
        network : Network, optional
            The network of a new directory.
        fsync : {"always", "interval", "never"}
            When a mutation is acknowledged: ``always`` once its record is
            written and fdatasync'ed (survives power loss); ``interval`` once
            written to the operating system (survives a crash of the process;
            the disk is synced every ``interval_ms``); ``never`` at once (the
            journal is written in the background: a crash may lose the last
            milliseconds; for tests and disposable state).
        interval_ms : float
            The sync period of ``fsync="interval"``.
        segment_bytes : int
            Journal segment size; old segments are deleted once a snapshot covers them.

        Examples
        --------
        >>> import pyomni, tempfile
        >>> net = pyomni.demo_network(stores=5, warehouses=1, skus=3, seed=0)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with pyomni.Engine.open(d, net, fsync="always") as eng:
        ...         _ = eng.set_stock(net.ids[0], "SKU-000001", 7, request_id="take-1")
        ...     with pyomni.Engine.open(d) as again:        # as after a crash: snapshot + journal
        ...         again.stock(net.ids[0], "SKU-000001").on_hand
        7
        """
        from .journal import FSYNC_POLICIES, Journal, read_records

        root = validate.path(directory, "directory")
        if network is not None:
            validate.instance(network, Network, "network", "a pyomni.Network or None")
        validate.choice(fsync, "fsync", FSYNC_POLICIES)
        interval_ms = validate.number(interval_ms, "interval_ms", low=0.0, high=60_000.0, low_open=True)
        segment_bytes = validate.integer(segment_bytes, "segment_bytes", low=1, high=_MAX_SEGMENT_BYTES)
        validate.callable_(clock, "clock")
        native = validate.optional_flag(native, "native")
        unknown = sorted(str(k) for k in options if k not in _ENGINE_OPTIONS)
        if unknown:
            raise errors.InvalidArgument(f"unknown engine options {shown(unknown)} (the options are "
                                         f"{', '.join(_ENGINE_OPTIONS)})", field="options")
        start = time.perf_counter()
        data = snapshot.latest(root / "snapshots")
        if data is None:
            if any(read_records(root / "journal", after_lsn=0)) if (root / "journal").is_dir() else False:
                raise errors.JournalCorrupt(f"{shown(str(root / 'journal'), _PATH_SHOWN)} holds records but there "
                                            "is no snapshot to replay them onto")
            if network is None:
                raise errors.NotFound(f"no engine state in {shown(str(root), _PATH_SHOWN)}; pass a network to "
                                      "start one", field="directory")
            eng = cls(network, clock=clock, native=native, **options)
            with eng._lock:
                data0 = eng._capture()
            eng._snapshot_records(data0)
            snapshot.write(root / "snapshots", data0)
        else:
            eng = cls._from_snapshot(data, clock=clock, native=native)
            if network is not None or options:
                # the directory's own state and configuration win; say so rather than ignore it silently
                log.warning("opening an existing data directory: its own network and configuration are used",
                            extra={"data_dir": str(root),
                                   "ignored": sorted([*options, *(["network"] if network is not None else [])])})
        journal = Journal.open(root / "journal", fsync=fsync, interval_ms=interval_ms, segment_bytes=segment_bytes,
                               after_lsn=eng._lsn)
        try:
            replayed = eng._replay_all(journal.replay(after_lsn=eng._lsn), journal.last_lsn - eng._lsn)
            if journal.last_lsn != eng._lsn:
                raise errors.JournalCorrupt(f"the journal ends at record {journal.last_lsn}, the state at {eng._lsn}")
        except BaseException:
            journal.close()
            raise
        eng._journal = journal
        eng._directory = root
        log.info("engine opened", extra={"data_dir": str(root.resolve()), "snapshot_lsn": data.lsn if data else 0,
                                         "replayed": replayed, "lsn": eng._lsn, "fsync": fsync,
                                         "seconds": round(time.perf_counter() - start, 3)})
        return eng

    @classmethod
    def _from_snapshot(cls, data: snapshot.SnapshotData, *, clock: Callable[[], float],
                       native: bool | None) -> Engine:
        policies = {p.key: p for p in data.policies}
        cfg = data.config
        eng = cls(Network.from_locations(data.locations, skus=data.skus), policy=policies[data.default_policy],
                  clock=clock, reservation_ttl=cfg["reservation_ttl"], channels=data.channels, native=native,
                  max_request_ids=cfg["max_request_ids"], request_id_ttl=cfg["request_id_ttl"])
        for p in policies.values():
            eng._add_policy(p)
        eng._seq, eng._lsn = data.seq, data.lsn
        for (rid, seq, request_id, order, state, created, expires, ships, excluded, need_cap, max_km,
             pol) in data.reservations:
            rec = _Record(rid, seq, request_id, order, created, expires,
                          [(s[0], s[1], s[2], s[3], (-1,) * len(s[3]), s[4]) for s in ships], frozenset(excluded),
                          need_cap, max_km, eng._resolve_policy(pol))
            rec.state = ReservationState(state)
            eng._records[rid] = rec
            eng._record_order.append(rec)
            if rec.state in (ReservationState.HELD, ReservationState.CONFIRMED):
                eng._live_orders[order.id] = rid
            if rec.state is ReservationState.HELD:
                eng._expiry.append((expires, seq, rid))
        heapq.heapify(eng._expiry)
        eng._requests = OrderedDict(
            (rid, eng._remembered_claim(ans, lsn, at) if cmd == _CLAIM_ENTRY else _Remembered(cmd, ans, lsn, at))
            for rid, lsn, at, cmd, ans in data.requests)
        cells = dict(data.cells)
        cells["confirmed"] = data.confirmed
        with eng._lock:
            # copies: the arrays read from Arrow are read-only, these change by command
            eng._restore_selling(data.selling)
            eng._restore_stores(data.stores)
            if data.stores is None:            # a snapshot from before store operations: every live parcel is new
                for rec in eng._record_order:
                    if rec.state in (ReservationState.HELD, ReservationState.CONFIRMED):
                        eng._ships_new(rec, rec.created_at)
            eng._install(eng._net, cells, np.array(data.capabilities, dtype=np.uint8),
                         np.array(data.is_open, dtype=np.uint8), np.array(data.daily_capacity, dtype=np.int32))
        return eng

    def close(self) -> None:
        """Make everything acknowledged durable and close the journal (idempotent; the engine stays readable)."""
        if self._journal is not None:
            with self._lock:
                self._closed = True
            self._journal.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def journal_stats(self) -> dict[str, Any]:
        """The journal's counters (records, bytes, group commits, segments, sequence numbers), or {} without one."""
        return self._journal.stats() if self._journal is not None else {}

    def check_invariants(self) -> None:
        """Verify the ledger and the reservations agree; raises :class:`~pyomni.errors.InvariantViolation`.

        Checks 0 <= reserved <= on_hand on every cell, the per-SKU totals, that
        every cell's reserved units are exactly the HELD reservations' and claims'
        holds plus the flash sales' earmarks, that every location's held-shipment
        counter matches, and every sale's counters against its claims (quotas
        and customer limits never passed).
        """
        with self._lock:
            status, message = self._ledger.check_invariants()
            check_status(status, message)
            held: dict[int, int] = {}
            shipments = np.zeros(len(self._loc_ids), dtype=np.int64)
            for rec in self._records.values():
                if rec.state is ReservationState.HELD:
                    for ship in rec.shipments:
                        shipments[ship[0]] += 1
                        for c, t in zip(ship[4], ship[3]):
                            if t:
                                held[c] = held.get(c, 0) + t
            for (loc_i, sku_i), units in self._selling_holds().items():
                c = self._ledger.cell_index(loc_i, sku_i)
                held[c] = held.get(c, 0) + units
            self._check_selling()
            self._check_stores()
            loc, sku, _, reserved, _ = self._ledger.export()
            for c in np.flatnonzero(reserved):
                if held.get(int(c), 0) != reserved[c]:
                    raise errors.InvariantViolation(f"cell {c} reserves {reserved[c]} but holds add to "
                                                    f"{held.get(int(c), 0)}")
            for c, t in held.items():
                if reserved[c] != t:
                    raise errors.InvariantViolation(f"cell {c}: holds {t} != reserved {reserved[c]}")
            if not np.array_equal(self._ledger.loads()[0], shipments):
                raise errors.InvariantViolation("held-shipment counters do not match the HELD reservations")




def _normalise_plan(shipments: Any) -> tuple[tuple[Any, tuple[tuple[Any, int], ...]], ...]:
    """A plan as nested tuples (hashable, for the idempotency fingerprint); shapes and quantities checked."""
    if isinstance(shipments, (str, bytes)) or not isinstance(shipments, Iterable):
        raise errors.InvalidArgument("shipments must be a sequence of (location, lines)", field="shipments")
    plan = []
    for k, ship in enumerate(shipments):
        if isinstance(ship, (str, bytes)) or not isinstance(ship, Sequence) or len(ship) != 2:
            raise errors.InvalidArgument("a shipment is (location, [(sku, qty), ...])", field=f"shipments[{k}]")
        location, lines = ship
        if isinstance(lines, (str, bytes)) or not isinstance(lines, Iterable):
            raise errors.InvalidArgument("a shipment's lines are a sequence of (sku, qty)",
                                         field=f"shipments[{k}].lines")
        out = []
        for j, line in enumerate(lines):
            if isinstance(line, Line):
                line = (line.sku, line.qty)
            if isinstance(line, (str, bytes)) or not isinstance(line, Sequence) or len(line) != 2:
                raise errors.InvalidArgument("a line is (sku, qty)", field=f"shipments[{k}].lines[{j}]")
            out.append((line[0], validate.quantity(line[1], f"shipments[{k}].lines[{j}].qty")))
        if not out:
            raise errors.InvalidArgument("a shipment needs at least one line", field=f"shipments[{k}].lines")
        plan.append((location, tuple(out)))
    return tuple(plan)


def _identity(x: Any) -> Any:
    return x


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around bulk allocation (replay, snapshot capture).

    Both only allocate long-lived objects, so a collection finds nothing to free, yet each one walks
    the whole, growing heap: with it on, collections cost as much as the work itself.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _record_id(rec: _Record) -> str:
    return rec.id


class _Nothing:
    """The effect of a command that found nothing to do (no hold expired): nothing to apply or record."""

    __slots__ = ()


_NOTHING = _Nothing()


def _make_backend(native: bool, network: Network, n_skus: int, caps: np.ndarray, is_open: np.ndarray,
                  capacity: np.ndarray) -> tuple[Any, Any]:
    from ._core import py_unit_vector

    xyz = np.array([py_unit_vector(float(a), float(b)) for a, b in zip(network.lat, network.lon)],
                   dtype=np.float64).reshape(len(network), 3)
    priority = np.ascontiguousarray(network.priority, dtype=np.int32)
    fixed = np.ascontiguousarray(network.fixed_cost, dtype=np.float64)
    if native:
        from ._core import Ledger, LocationIndex, Router

        native_ledger = Ledger(len(network), n_skus)
        router = Router(native_ledger, LocationIndex(xyz), xyz, caps, is_open, capacity, priority, fixed)
        return native_ledger, router
    from .reference import ReferenceLedger, ReferenceRouter

    reference_ledger = ReferenceLedger(len(network), n_skus)
    return reference_ledger, ReferenceRouter(reference_ledger, xyz, caps, is_open, capacity, priority, fixed)


Engine._no_effect = _NOTHING

# Every command type and its (decider, applier): the one switch every mutation passes.
_HANDLERS: dict[type, tuple[Callable[..., tuple[Any, Any]], Callable[..., Any]]] = {
    StockCommand: (Engine._decide_apply_only, Engine._apply_stock),
    StockEvents: (Engine._decide_apply_only, Engine._apply_events),
    Transfer: (Engine._decide_apply_only, Engine._apply_transfer),
    RouteOrder: (Engine._decide_route, Engine._apply_hold),
    ReservePlan: (Engine._decide_plan, Engine._apply_hold),
    EndReservation: (Engine._decide_end, Engine._apply_end),
    Reroute: (Engine._decide_reroute, Engine._apply_reroute),
    Expire: (Engine._decide_expire, Engine._apply_expire),
    UpsertLocations: (Engine._decide_apply_only, Engine._apply_upsert),
    SetLocationOpen: (Engine._decide_apply_only, Engine._apply_open),
    SetDailyCapacity: (Engine._decide_apply_only, Engine._apply_capacity),
    NewDay: (Engine._decide_apply_only, Engine._apply_new_day),
    RegisterSkus: (Engine._decide_apply_only, Engine._apply_skus),
    RegisterPolicy: (Engine._decide_apply_only, Engine._apply_policy),
    SetChannelRule: (Engine._decide_apply_only, Engine._apply_channel),
    CreateSale: (Engine._decide_create_sale, Engine._apply_create_sale),
    UpdateSale: (Engine._decide_update_sale, Engine._apply_update_sale),
    EndSale: (Engine._decide_end_sale, Engine._apply_end_sale),
    ClaimBatch: (Engine._decide_claims_elsewhere, Engine._apply_claims),
    EndClaim: (Engine._decide_end_claim, Engine._apply_end_claim),
    RouteBatch: (Engine._decide_claims_elsewhere, Engine._apply_route_batch),
    SetStoreRules: (Engine._decide_apply_only, Engine._apply_store_rules),
    ShipmentAction: (Engine._decide_action, Engine._apply_action),
    StoreDeadline: (Engine._decide_deadline, Engine._apply_deadline),
    ReturnLine: (Engine._decide_return, Engine._apply_return),
    ResolveException: (Engine._decide_resolve, Engine._apply_resolve),
    RegisterAttributionRule: (Engine._decide_apply_only, Engine._apply_attribution_rule),
    SetAttribution: (Engine._decide_apply_only, Engine._apply_attribution),
}
