"""The engine's commands and their effects: typed, frozen values, one per kind of mutation.

Every mutation of an :class:`~pyomni.Engine` is one of these commands,
executed by one method (``Engine._execute``, TigerBeetle's ``commit``):
validate -> idempotency lookup -> stamp the clock -> decide -> apply ->
journal -> remember -> answer. A command is what the caller asked for; its
*effect* is what the engine decided (the locations and quantities held, the
reservation id, the ids that expired). The journal records both, and replay
applies the effect without deciding again, so a journal replays to the same
state whatever the routing code or policy does today.

A command doubles as its request's fingerprint: a retry with the same request
id must carry an equal command (AIP-155), also after a restart, which is why
commands hold only plain, exactly-encodable values (ids as strings, floats as
float64).

Commands whose application decides nothing (stock events, opening a
location, a new day, ...) have no separate effect (``None``): the command is
applied as it is, by the same function live and in replay.

Adding a command (flash-sale claims, store actions, ...):

1. a frozen dataclass here, with plain fields, and its effect type if it
   decides something; register both at the bottom with new codes (codes are
   on disk: never renumber);
2. in ``pyomni/engine.py`` a decider ``_decide_x(command, now) -> (effect,
   explanation)`` that reads the state and raises typed errors without
   changing anything, and an applier ``_apply_x(command, effect, now,
   request_id) -> answer`` that is the only code changing state and decides
   nothing (replay calls it with the recorded effect); an entry in
   ``_HANDLERS``; a thin public method that validates its arguments and calls
   ``self._execute(command, request_id)``;
3. the command in ``workload`` of ``tests/test_durability.py``, so that
   crash images, replay and snapshots are checked for it.

Examples
--------
>>> from pyomni.commands import StockCommand
>>> StockCommand(2, "SH-0001", "SKU-000001", 5, -1) == StockCommand(2, "SH-0001", "SKU-000001", 5, -1)
True
"""

from __future__ import annotations

from dataclasses import dataclass

from . import codec
from .flash import FlashSale
from .fulfilment import StoreRules
from .model import Location, Order, ShortLine
from .policy import ChannelRule, RoutingPolicy
from .settlement import AttributionRule

__all__ = [
    "Command", "StockCommand", "StockEvents", "Transfer", "RouteOrder", "ReservePlan", "EndReservation",
    "Reroute", "Expire", "UpsertLocations", "SetLocationOpen", "SetDailyCapacity", "NewDay", "RegisterSkus",
    "RegisterPolicy", "SetChannelRule", "CreateSale", "UpdateSale", "EndSale", "ClaimBatch", "EndClaim",
    "RouteBatch", "Hold", "Unfilled", "Rerouted", "Expired", "ShipmentPlan", "Earmark", "Claimed", "HeldBatch",
    "SetStoreRules", "ShipmentAction", "ReturnLine", "ResolveException", "RegisterAttributionRule", "SetAttribution",
    "StoreDeadline",
]


class Command:
    """Base of every command (a marker: the engine dispatches on the concrete type)."""

    __slots__ = ()


# -- stock ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StockCommand(Command):
    """One stock event on one cell: ``kind`` is an index into ``pyomni._core.EVENT_KINDS``."""

    kind: int
    location: str
    sku: str
    qty: int
    safety: int           #: -1 = leave safety as it is (``set`` only)


@dataclass(frozen=True, slots=True)
class StockEvents(Command):
    """A batch of stock events, all or nothing, as interned little-endian columns.

    ``loc``/``sku`` are int32 indices (locations and SKUs are append-only, so
    an index means the same thing forever), ``kind`` int8, ``qty``/``safety``
    int64. ``digest`` fingerprints the content, so that comparing a retry is cheap.
    """

    n: int
    loc: bytes
    sku: bytes
    kind: bytes
    qty: bytes
    safety: bytes
    digest: str


@dataclass(frozen=True, slots=True)
class Transfer(Command):
    """Move unreserved units of a SKU between two locations."""

    source: str
    destination: str
    sku: str
    qty: int


# -- routing and reservations ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RouteOrder(Command):
    """Decide where an order ships from and hold the units (effect: :class:`Hold` or :class:`Unfilled`)."""

    order: Order
    policy: str | RoutingPolicy | None   #: None = the engine's default; a registered key; or an unregistered policy
    ttl: float | None                    #: seconds the hold lives (None: the engine's default)


@dataclass(frozen=True, slots=True)
class ReservePlan(Command):
    """Hold exactly the plan an optimiser chose (effect: :class:`Hold` or :class:`Unfilled`)."""

    order: Order
    plan: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]
    policy: str | RoutingPolicy | None


@dataclass(frozen=True, slots=True)
class EndReservation(Command):
    """Confirm or release a HELD reservation (``state`` is the ``ReservationState`` value it moves to)."""

    reservation_id: str
    state: int


@dataclass(frozen=True, slots=True)
class Reroute(Command):
    """Re-route the shipment a location rejected (effect: :class:`Rerouted`)."""

    reservation_id: str
    rejected_by: str
    policy: str | RoutingPolicy | None   #: None = the reservation's own policy


@dataclass(frozen=True, slots=True)
class Expire(Command):
    """Expire every HELD reservation due at the command's time (effect: :class:`Expired`)."""


# -- the network, the catalogue and configuration -------------------------------------------
@dataclass(frozen=True, slots=True)
class UpsertLocations(Command):
    """Add or replace locations (matched by id)."""

    locations: tuple[Location, ...]


@dataclass(frozen=True, slots=True)
class SetLocationOpen(Command):
    """Open or close a location for online orders."""

    location: str
    is_open: bool


@dataclass(frozen=True, slots=True)
class SetDailyCapacity(Command):
    """Change a location's daily shipment capacity (0 = unlimited)."""

    location: str
    capacity: int


@dataclass(frozen=True, slots=True)
class NewDay(Command):
    """Start a new business day: confirmed shipments stop counting toward capacity."""


@dataclass(frozen=True, slots=True)
class RegisterSkus(Command):
    """Append SKUs to the catalogue."""

    skus: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RegisterPolicy(Command):
    """Make a routing policy selectable by its key and name."""

    policy: RoutingPolicy


@dataclass(frozen=True, slots=True)
class SetChannelRule(Command):
    """Set (or with ``None`` remove) a channel's selling limit."""

    channel: str
    rule: ChannelRule | None


@dataclass(frozen=True, slots=True)
class RouteBatch(Command):
    """Delivery orders routed in one native pass, as little-endian columns (effect: :class:`HeldBatch`).

    The journal holds the orders decided: every one held, and those refused that carry a request id.
    Order ``i`` has ``line_counts[i]`` (int32) lines of ``sku`` (interned int32) and ``qty`` (int32), and
    goes to ``lat[i]``/``lon[i]`` (float64).
    """

    order_ids: tuple[str, ...]
    request_ids: tuple[str | None, ...]
    channels: tuple[str, ...]
    line_counts: bytes
    sku: bytes
    qty: bytes
    lat: bytes
    lon: bytes
    policy: str | RoutingPolicy | None
    ttl: float | None


# -- flash sales -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CreateSale(Command):
    """Create a flash sale (effect: :class:`Earmark` if it starts at once, else none)."""

    sale: FlashSale


@dataclass(frozen=True, slots=True)
class UpdateSale(Command):
    """Replace a sale's definition: window, quotas, limit, pay window, stores added (same SKUs)."""

    sale: FlashSale


@dataclass(frozen=True, slots=True)
class EndSale(Command):
    """End a sale now: no more claims, its earmark goes back; held claims can still be paid."""

    sale_id: str


@dataclass(frozen=True, slots=True)
class ClaimBatch(Command):
    """Claims in one sale, as little-endian columns (effect: :class:`Claimed`).

    The journal holds only the claims that were accepted, so every row of a
    recorded batch is one new claim, numbered in order after the last one.
    ``sku`` and ``store`` are int32 positions in the sale's definition (store
    -1: the nearest store to ``lat``/``lon``, float64, NaN otherwise); ``qty``
    int32.
    """

    sale_id: str
    request_ids: tuple[str | None, ...]
    customers: tuple[str, ...]
    sku: bytes
    store: bytes
    lat: bytes
    lon: bytes
    qty: bytes


@dataclass(frozen=True, slots=True)
class EndClaim(Command):
    """Confirm (paid) or release a HELD claim; ``state`` is a ReservationState value."""

    claim_id: str
    state: int


# -- store operations ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SetStoreRules(Command):
    """Set (or with ``None`` remove) a store's time limits and opening hours; location "" is the default."""

    location: str
    rules: StoreRules | None


@dataclass(frozen=True, slots=True)
class ShipmentAction(Command):
    """A store's action on one shipment (``action`` a StoreAction value; ``reason`` a RejectReason value for
    REJECT, else 0). A rejection's effect is :class:`Rerouted` (``shipments`` None: nothing could take the lines,
    an order exception is raised)."""

    shipment_id: str
    action: int
    reason: int
    note: str


@dataclass(frozen=True, slots=True)
class ReturnLine(Command):
    """Units of a fulfilled shipment's line handed back at ``location`` (restocked there)."""

    shipment_id: str
    sku: str
    qty: int
    location: str


@dataclass(frozen=True, slots=True)
class ResolveException(Command):
    """Close an order exception (``retry`` False: a person dealt with it) or route its lines again
    (``retry`` True; effect :class:`Rerouted`, ``shipments`` None if still nothing can take them)."""

    exception_id: str
    retry: bool
    note: str


@dataclass(frozen=True, slots=True)
class StoreDeadline(Command):
    """The clock's command for one shipment deadline that passed (each is its own command, so that a re-route
    sees the one before it): ``kind`` 0 = not answered in time (effect :class:`Rerouted`), 1 = pick limit passed
    (flagged late), 2 = not collected by the collection deadline."""

    shipment_id: str
    kind: int


@dataclass(frozen=True, slots=True)
class RegisterAttributionRule(Command):
    """Make an attribution rule selectable by its key and name."""

    rule: AttributionRule


@dataclass(frozen=True, slots=True)
class SetAttribution(Command):
    """Choose the attribution rule (a registered key) for a channel; channel "" is the default."""

    channel: str
    rule: str | None


# -- effects: what the engine decided ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ShipmentPlan:
    """One parcel as decided: location index, km, the five cost parts and the units per line.

    ``skus`` are the SKU indices the ``takes`` refer to; ``None`` means the
    order's own lines, in order (the usual case, so it costs no bytes).
    """

    loc: int
    km: float
    costs: tuple[float, float, float, float, float]
    takes: tuple[int, ...]
    skus: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """A new HELD reservation of these shipments.

    Its number is the next one (id ``R{seq:010d}``) and it expires at the
    command's time plus its ttl: both follow from the state and the command,
    so the record does not repeat them.
    """

    shipments: tuple[ShipmentPlan, ...]
    split_reason: int = 0      #: index into the split reasons ("", NO_SINGLE_LOCATION, CHEAPER)


@dataclass(frozen=True, slots=True)
class Unfilled:
    """The order could not be filled: nothing held; the short lines are the answer."""

    short: tuple[ShortLine, ...]


@dataclass(frozen=True, slots=True)
class Rerouted:
    """A rejected shipment replaced by ``shipments``, or (``shipments is None``) the reservation released."""

    rejected: int                                   #: location index that rejected
    shipments: tuple[ShipmentPlan, ...] | None
    short: tuple[ShortLine, ...] = ()
    split_reason: int = 0


@dataclass(frozen=True, slots=True)
class Expired:
    """What the clock did: the reservations and claims that expired, the sales that started and ended.

    ``claims`` are int64 claim numbers; ``started`` pairs a sale id with its
    earmark (int32 units per store and SKU, empty without one).
    """

    reservation_ids: tuple[str, ...]
    claims: bytes = b""
    started: tuple[tuple[str, bytes], ...] = ()
    ended: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Earmark:
    """The units a starting sale holds: int32 per (store, SKU) position, flat (empty: no earmark)."""

    pools: bytes


@dataclass(frozen=True, slots=True)
class HeldBatch:
    """What a :class:`RouteBatch` decided, per order: ``status`` (uint8: 0 held, 1 unfulfillable), the split
    reason (uint8), ``n_ship`` (int32); then per shipment of the held orders, in order: the location
    (int32), km and five cost parts (float64), and the units per line of its order (int32); the short
    lines of each unfulfillable order, in order (their reservation numbers follow from the state)."""

    status: bytes
    split: bytes
    n_ship: bytes
    ship_loc: bytes
    ship_km: bytes
    ship_cost: bytes
    take: bytes
    short: tuple[tuple[ShortLine, ...], ...]


@dataclass(frozen=True, slots=True)
class Claimed:
    """The store position each claim of a batch is held at (int32 per claim)."""

    store: bytes


# on-disk type codes (never renumber; the model's values use 1..19)
for _code, _cls in enumerate((StockCommand, StockEvents, Transfer, RouteOrder, ReservePlan, EndReservation,
                              Reroute, Expire, UpsertLocations, SetLocationOpen, SetDailyCapacity, NewDay,
                              RegisterSkus, RegisterPolicy, SetChannelRule, CreateSale, UpdateSale, EndSale,
                              ClaimBatch, EndClaim), start=20):
    codec.register(_code, _cls)
for _code, _cls in enumerate((RouteBatch, SetStoreRules, ShipmentAction, ReturnLine, ResolveException,
                              RegisterAttributionRule, SetAttribution, StoreDeadline), start=60):  # 20..39 full
    codec.register(_code, _cls)
for _code, _cls in enumerate((ShipmentPlan, Hold, Unfilled, Rerouted, Expired, Earmark, Claimed, HeldBatch),
                             start=40):
    codec.register(_code, _cls)
