"""Store operations: the values of a shipment's life in its store, and the store's clock.

Every shipment the engine routes goes to its location's *order feed* and lives
there as a :class:`StoreShipment`::

    delivery:  ROUTED -> ACCEPTED -> PICKED -> PACKED -> SHIPPED
    pickup:    ROUTED -> ACCEPTED -> PICKED -> READY_FOR_PICKUP -> COLLECTED | NOT_COLLECTED
    any time before it leaves:   -> REJECTED (a reason from :class:`RejectReason`), or
                                  -> CANCELLED (its reservation was released or expired)

A shipment follows the pickup path when its location is the order's pickup
store; every other shipment (a pickup order's units sent from elsewhere
included) is a parcel. A step may be skipped forward (a store may mark a
shipment PACKED without saying it was PICKED), never back. SHIPPED and
COLLECTED need the reservation CONFIRMED (paid): the goods leave only once
the order system has confirmed. Those two *fulfil* the shipment's lines: they
are credited to the stores by the order's attribution rule
(:mod:`pyomni.settlement`) and may be returned at any location afterwards.

Time limits (:class:`StoreRules`, per store, with a default for all): a
ROUTED shipment must be answered within ``answer_s`` (``same_day_answer_s``
for same-day orders) or it times out and is re-routed; an ACCEPTED one must be
packed (or made ready for pickup) within ``pick_s`` or it is flagged *late*
on the feed; a READY_FOR_PICKUP one not collected by the end of the store's
``collect_days``-th business day is NOT_COLLECTED and its units go back to the
shelf. Limits count only the store's opening hours (:class:`OpeningHours`): with
a 15-minute answer limit, a shipment routed five minutes before closing is due
ten minutes after the next opening. The deadlines run on the engine's clock
and fire as commands (``Expire``), so they survive a restart.

Examples
--------
>>> h = OpeningHours(open_minute=600, close_minute=1320)       # 10:00-22:00, China time
>>> import datetime as dt
>>> t = dt.datetime(2026, 11, 11, 21, 55, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()
>>> due = h.advance(t, 900)                                     # 15 minutes of opening time
>>> dt.datetime.fromtimestamp(due, dt.timezone(dt.timedelta(hours=8))).strftime("%m-%d %H:%M")
'11-12 10:10'
"""

from __future__ import annotations

import datetime as _dt
import enum
import math
from dataclasses import dataclass

from . import errors, validate
from .model import Fulfilment, Line, ShortLine

__all__ = [
    "ShipmentState", "RejectReason", "StoreAction", "OpeningHours", "StoreRules", "StoreShipment", "StoreEvent",
    "OrderException", "ExceptionState", "Rejection", "ReturnRecord", "DEFAULT_STORE_RULES", "TERMINAL",
]

_DAY = 86_400.0


class ShipmentState(enum.IntEnum):
    """Where a shipment is in its store (values are on the wire and on disk: never renumber)."""

    ROUTED = 1              #: the store has it and has not answered
    ACCEPTED = 2
    PICKED = 3
    PACKED = 4
    SHIPPED = 5             #: handed to the courier (terminal; fulfils the lines)
    READY_FOR_PICKUP = 6
    COLLECTED = 7           #: the customer took it (terminal; fulfils the lines)
    NOT_COLLECTED = 8       #: the collection deadline passed (terminal; the units went back to stock)
    REJECTED = 9            #: the store said no, or did not answer in time (terminal; the lines were re-routed)
    CANCELLED = 10          #: the reservation was released or expired (terminal)


#: states a shipment never leaves
TERMINAL = frozenset({ShipmentState.SHIPPED, ShipmentState.COLLECTED, ShipmentState.NOT_COLLECTED,
                      ShipmentState.REJECTED, ShipmentState.CANCELLED})


class RejectReason(enum.IntEnum):
    """Why a store gave a shipment back, and what that does to its stock (never renumber).

    ``NOT_FOUND``: the units are not on the shelf: at a store the cells' on-hand drops to what other
    orders already hold there (0 unless someone else holds units), at a warehouse or dark store by the
    parcel's units (its cycle count finds the rest); either way the difference is recorded as an
    inventory discrepancy. ``DAMAGED``: the shipment's units are written off (on-hand minus the units, recorded as a
    discrepancy). The others change no stock: the units are free to sell again. ``TIMEOUT`` comes only from
    the clock. Every reason excludes the store from the order for good and re-routes the lines.
    """

    NOT_FOUND = 1
    DAMAGED = 2
    NO_STAFF = 3
    STORE_CLOSED = 4
    OVER_CAPACITY = 5
    OTHER = 6
    TIMEOUT = 7             #: nobody answered within the store's answer limit
    ORDER_SYSTEM = 8        #: the order system re-routed it (``Engine.reroute``)


class StoreAction(enum.IntEnum):
    """What store staff do to a shipment (never renumber)."""

    ACCEPT = 1
    PICK = 2
    PACK = 3
    SHIP = 4
    READY = 5
    COLLECT = 6
    REJECT = 7


class ExceptionState(enum.IntEnum):
    """An order exception's state."""

    OPEN = 1
    RESOLVED = 2


_NOON_OFFSET_LIMIT = 14 * 60      # UTC offsets run from -12:00 to +14:00


@dataclass(frozen=True, slots=True)
class OpeningHours:
    """A store's daily opening time in local minutes since midnight, its UTC offset and closed weekdays.

    ``open_minute=0, close_minute=1440`` is open round the clock. Weekdays are ISO (1 Monday .. 7 Sunday),
    in the store's local calendar.
    """

    open_minute: int = 600
    close_minute: int = 1320
    utc_offset_minutes: int = 480           #: China Standard Time
    closed_weekdays: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        validate.integer(self.open_minute, "open_minute", low=0, high=1439)
        validate.integer(self.close_minute, "close_minute", low=1, high=1440)
        if self.close_minute <= self.open_minute:
            raise errors.InvalidArgument(f"close_minute {self.close_minute} must be after open_minute "
                                         f"{self.open_minute}", field="close_minute")
        validate.integer(self.utc_offset_minutes, "utc_offset_minutes", low=-12 * 60, high=_NOON_OFFSET_LIMIT)
        days = validate.sequence(self.closed_weekdays, "closed_weekdays", what="a sequence of ISO weekdays")
        norm = tuple(sorted({validate.integer(d, "closed_weekdays", low=1, high=7) for d in days}))
        if len(norm) == 7:
            raise errors.InvalidArgument("a store must open on at least one weekday", field="closed_weekdays")
        object.__setattr__(self, "closed_weekdays", norm)

    @property
    def tz(self) -> _dt.timezone:
        return _dt.timezone(_dt.timedelta(minutes=self.utc_offset_minutes))

    def business_day(self, at: float) -> _dt.date:
        """The local calendar date of the engine time ``at``."""
        return _dt.datetime.fromtimestamp(at, self.tz).date()

    def _windows(self, at: float):                    # noqa: ANN202 -- a generator of (start, end) seconds
        """Opening windows (start, end) in engine seconds, from the one containing or following ``at``."""
        offset = self.utc_offset_minutes * 60.0
        day0 = math.floor((at + offset) / _DAY)       # local day number of ``at``
        day = day0
        while True:
            weekday = (day + 3) % 7 + 1               # day 0 (1970-01-01) was a Thursday
            if weekday not in self.closed_weekdays:
                start = day * _DAY - offset + self.open_minute * 60.0
                end = day * _DAY - offset + self.close_minute * 60.0
                if end > at:
                    yield max(start, at), end
            day += 1

    def advance(self, at: float, seconds: float) -> float:
        """The engine time at which ``seconds`` of opening time have passed since ``at``.

        A limit that starts outside opening hours starts counting at the next opening.
        """
        left = float(seconds)
        for start, end in self._windows(at):
            if left <= end - start:
                return start + left
            left -= end - start
        raise AssertionError("unreachable")           # pragma: no cover -- _windows never ends

    def closing_after(self, at: float, business_days: int) -> float:
        """Closing time of the ``business_days``-th opening day from ``at`` (1 = the day of ``at``, or the next
        opening day if the store is closed then)."""
        n = 0
        for _, end in self._windows(at):
            n += 1
            if n >= business_days:
                return end
        raise AssertionError("unreachable")           # pragma: no cover

    def is_open(self, at: float) -> bool:
        start, _ = next(self._windows(at))
        return start <= at


@dataclass(frozen=True, slots=True)
class StoreRules:
    """A store's time limits (seconds of opening time) and its opening hours.

    Parameters
    ----------
    hours : OpeningHours
    answer_s : float
        Accept or reject a new shipment within this (default 15 minutes); else it times out and is re-routed.
    pick_s : float
        Pack (or make ready for pickup) an accepted shipment within this; else it is flagged late.
    same_day_answer_s, same_day_pick_s : float
        The same for same-day orders.
    collect_days : int
        A shipment ready for pickup waits until the close of this many business days (the day it became ready
        counts as the first), then is NOT_COLLECTED.
    return_days : int
        Calendar days after fulfilment within which a line may be returned.
    """

    hours: OpeningHours = OpeningHours()
    answer_s: float = 900.0
    pick_s: float = 7200.0
    same_day_answer_s: float = 300.0
    same_day_pick_s: float = 1800.0
    collect_days: int = 3
    return_days: int = 30

    def __post_init__(self) -> None:
        validate.instance(self.hours, OpeningHours, "hours", "an OpeningHours")
        for name in ("answer_s", "pick_s", "same_day_answer_s", "same_day_pick_s"):
            value = validate.seconds(getattr(self, name), name)
            if value <= 0:
                raise errors.InvalidArgument(f"{name} must be positive", field=name)
            object.__setattr__(self, name, float(value))
        validate.integer(self.collect_days, "collect_days", low=1, high=366)
        validate.integer(self.return_days, "return_days", low=0, high=3660)

    def answer_limit(self, fulfilment: Fulfilment) -> float:
        return self.same_day_answer_s if fulfilment is Fulfilment.SAME_DAY else self.answer_s

    def pick_limit(self, fulfilment: Fulfilment) -> float:
        return self.same_day_pick_s if fulfilment is Fulfilment.SAME_DAY else self.pick_s


DEFAULT_STORE_RULES = StoreRules()


@dataclass(frozen=True, slots=True)
class StoreShipment:
    """One shipment as its store sees it.

    ``id`` is ``"<reservation id>-<n>"`` (n counts the reservation's shipments, re-routed ones included).
    ``due_at`` is the deadline of the current step (None once terminal or after the pick step);
    ``late`` says the pick limit passed; ``pickup`` says it follows the pickup path.
    """

    id: str
    reservation_id: str
    order_id: str
    location: str
    state: ShipmentState
    pickup: bool
    fulfilment: Fulfilment
    channel: str
    lines: tuple[Line, ...]
    created_at: float
    updated_at: float
    due_at: float | None
    late: bool = False
    reason: RejectReason | None = None
    note: str = ""
    destination: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """One change on a store's feed: ``seq`` orders every store event of the engine (a feed resumes after one).

    ``kind`` is the shipment's new state's name, ``"LATE"`` for a missed pick limit, or ``"RESET"`` when a
    feed resumed from a sequence number older than the engine still keeps: then the feed sends every open
    shipment of its stores once, as ``RESET`` events with the current sequence number, and goes on.
    """

    seq: int
    location: str
    kind: str
    shipment: StoreShipment


@dataclass(frozen=True, slots=True)
class OrderException:
    """Lines a re-route could not place: for a person to resolve (nothing is dropped silently)."""

    id: str
    order_id: str
    reservation_id: str
    shipment_id: str
    lines: tuple[ShortLine, ...]
    reason: str
    created_at: float
    state: ExceptionState = ExceptionState.OPEN
    resolution: str = ""
    resolved_at: float | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """The answer to a rejection: the shipment as it ended, and where its lines went.

    ``new_shipments`` are the shipments that now carry the lines; if none could, ``exception`` names the
    :class:`OrderException` raised for a person.
    """

    shipment: StoreShipment
    new_shipments: tuple[StoreShipment, ...]
    exception: OrderException | None
    discrepancies: tuple[tuple[str, str, int], ...] = ()    #: (location, SKU, units written off)


@dataclass(frozen=True, slots=True)
class ReturnRecord:
    """A return of fulfilled units of one line, booked against the original sale."""

    id: str
    shipment_id: str
    order_id: str
    sku: str
    qty: int
    location: str
    at: float
    restocked: bool
