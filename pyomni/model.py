"""Value objects of the public API.

These are plain, immutable data: what callers pass in (:class:`Order`,
:class:`Line`) and what the engine answers (:class:`Allocation`,
:class:`Reservation`, :class:`StockLevel`, ...). The engine keeps its state in
native arrays; these objects are built only at the boundary.

Examples
--------
>>> from pyomni import Order, Line
>>> order = Order("o-1", [Line("SKU-1", 2)], destination=(31.23, 121.47))
>>> order.lines[0].qty
2
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import errors, validate
from .validate import MAX_QTY

__all__ = [
    "LocationKind",
    "Capability",
    "Fulfilment",
    "ReservationState",
    "AllocationStatus",
    "Location",
    "Line",
    "Order",
    "CostBreakdown",
    "Shipment",
    "ShortLine",
    "Candidate",
    "Explanation",
    "Allocation",
    "Reservation",
    "StockLevel",
    "NearbyStock",
    "PickupOption",
    "MAX_QTY",
    "MAX_LINES",
    "MAX_EXCLUDED",
    "validate_lat_lon",
    "validate_point",
]

#: Largest number of lines in one order.
MAX_LINES = 64
#: Largest number of locations one order may exclude explicitly (re-routes add more, without limit).
MAX_EXCLUDED = 1024


class LocationKind(enum.IntEnum):
    """What a location is."""

    STORE = 1
    WAREHOUSE = 2
    DARK_STORE = 3


class Capability(enum.IntFlag):
    """What a location can do for online orders (a bit mask)."""

    NONE = 0
    SHIP = 1  #: ships parcels to customers
    PICKUP = 2  #: customers collect orders there (click-and-collect)
    SAME_DAY = 4  #: same-day courier delivery

    @classmethod
    def parse(cls, value: Capability | int | str | Iterable[str]) -> Capability:
        """Accept a mask, ``"ship|pickup"`` or ``["ship", "pickup"]``.

        >>> Capability.parse("ship|pickup") == Capability.SHIP | Capability.PICKUP
        True
        """
        if isinstance(value, (int, Capability)) and not isinstance(value, bool):
            mask = int(value)
            if mask < 0 or mask > 7:
                raise errors.InvalidArgument(f"capability mask {validate.shown(mask)} out of range",
                                             field="capabilities")
            return cls(mask)
        if isinstance(value, str):
            names: Iterable[Any] = value.replace(",", "|").split("|")
        elif isinstance(value, (list, tuple, set, frozenset)):
            names = value
        else:
            raise errors.InvalidArgument(f"capabilities must be a mask or capability names, got "
                                         f"{validate.shown(value)}", field="capabilities")
        mask = cls.NONE
        for name in names:
            if not isinstance(name, str):
                raise errors.InvalidArgument(f"unknown capability {validate.shown(name)}", field="capabilities")
            key = name.strip().upper().replace("-", "_")
            if not key:
                continue
            found = cls.__members__.get(key)
            if found is None:
                raise errors.InvalidArgument(f"unknown capability {validate.shown(name)} (expected "
                                             f"{', '.join(n.lower() for n in cls.__members__)})",
                                             field="capabilities")
            mask |= found
        return mask


class Fulfilment(enum.IntEnum):
    """How the customer receives the order."""

    DELIVERY = 1  #: parcel to an address; fulfilling locations need SHIP
    PICKUP = 2  #: collect at a store; that store needs PICKUP, others need SHIP
    SAME_DAY = 3  #: courier the same day; needs SAME_DAY and a short distance


class ReservationState(enum.IntEnum):
    """Life cycle of a reservation: HELD -> CONFIRMED | RELEASED | EXPIRED."""

    HELD = 1
    CONFIRMED = 2
    RELEASED = 3
    EXPIRED = 4


class AllocationStatus(enum.IntEnum):
    """Outcome of a routing decision."""

    ALLOCATED = 1  #: stock is held under ``reservation_id``
    QUOTED = 2  #: a plan was found; nothing was held (``quote``)
    UNFULFILLABLE = 3  #: no plan within the constraints; see ``short_lines``


def validate_point(point: object, field: str = "near") -> tuple[float, float]:
    """Validate a ``(lat, lon)`` pair; raise :class:`~pyomni.errors.InvalidCoordinates` otherwise
    (:func:`pyomni.validate.point`).

    >>> validate_point((31.2, 121.5))
    (31.2, 121.5)
    """
    return validate.point(point, field)


def validate_lat_lon(lat: float, lon: float, field: str = "destination") -> tuple[float, float]:
    """Return ``(lat, lon)`` as floats or raise :class:`~pyomni.errors.InvalidCoordinates`
    (:func:`pyomni.validate.lat_lon`).

    >>> validate_lat_lon(31.2, 121.5)
    (31.2, 121.5)
    """
    return validate.lat_lon(lat, lon, field)


@dataclass(frozen=True, slots=True)
class Location:
    """One store, warehouse or dark store of the network.

    Parameters
    ----------
    id : str
        External id, unique in the network (``"SH-0042"``).
    kind : LocationKind
    lat, lon : float
        WGS-84 degrees.
    province_code, prefecture_code : int
        Administrative codes (``31``, ``310100`` for Shanghai); 0 if unknown.
    city : str
    capabilities : Capability
    daily_capacity : int
        Online shipments the location can handle per day; 0 means unlimited.
    fixed_cost : float
        Cost of one shipment from here, in the cost model's currency.
    priority : int
        0 is most preferred; each step adds ``policy.priority_weight`` to the cost.
    franchise : bool
    is_open : bool
    """

    id: str
    kind: LocationKind
    lat: float
    lon: float
    province_code: int = 0
    prefecture_code: int = 0
    city: str = ""
    capabilities: Capability = Capability.SHIP | Capability.PICKUP
    daily_capacity: int = 0
    fixed_cost: float = 8.0
    priority: int = 0
    franchise: bool = False
    is_open: bool = True


@dataclass(frozen=True, slots=True)
class Line:
    """One order line: a SKU, a positive quantity and (for settlement) the unit price in integer cents."""

    sku: str
    qty: int
    unit_price_cents: int = 0


def _as_line(obj: Line | tuple[str, int] | Mapping[str, object], i: int) -> Line:
    if type(obj) is Line:
        return obj
    if isinstance(obj, Mapping):
        if "sku" not in obj or "qty" not in obj:
            raise errors.InvalidOrder(f"line {i} needs 'sku' and 'qty', got {validate.shown(obj)}",
                                      field=f"lines[{i}]")
        return Line(obj["sku"], obj["qty"], obj.get("unit_price_cents", 0))  # type: ignore[arg-type]
    if isinstance(obj, Line):
        return Line(obj.sku, obj.qty, obj.unit_price_cents)
    # a two-character string would unpack into a SKU and a quantity: a line is never text
    if isinstance(obj, (str, bytes)) or not isinstance(obj, (Sequence, np.ndarray)) or len(obj) != 2:
        raise errors.InvalidOrder(f"line {i} must be Line(sku, qty) or (sku, qty), got {validate.shown(obj)}",
                                  field=f"lines[{i}]")
    sku, qty = obj
    return Line(sku, qty)


@dataclass(frozen=True, slots=True)
class Order:
    """An order to route.

    Parameters
    ----------
    id : str
        Order id, unique among live reservations.
    lines : sequence of Line or (sku, qty)
    destination : (lat, lon), optional
        Delivery address. Required unless ``pickup_location`` is given.
    pickup_location : str, optional
        Store where the customer collects (click-and-collect).
    fulfilment : Fulfilment
        Defaults to PICKUP when ``pickup_location`` is set, else DELIVERY.
    channel : str
        Sales channel (``"app"``, ``"tmall"`` ...); channel rules bound what it may sell.
    max_splits : int, optional
        Most shipments the order may be split into (defaults to the policy's).
    max_distance_km : float, optional
        Farthest fulfilling location allowed (defaults to the policy's).
    excluded_locations : sequence of str
        Locations that must not fulfil this order.
    coupon_cents : int
        E-coupon discount on the whole order, in cents (at most the lines' total price); its cost is shared
        by the attribution rule.
    attribution : str, optional
        Key or name of the attribution rule that credits this order's revenue (default: its channel's rule).
    selling_store : str, optional
        The store that sold it (an in-store "endless aisle" order); None for an online channel.

    Examples
    --------
    >>> Order("o-2", [("SKU-1", 1), ("SKU-2", 3)], pickup_location="SH-0001").fulfilment
    <Fulfilment.PICKUP: 2>
    """

    id: str
    lines: tuple[Line, ...]
    destination: tuple[float, float] | None = None
    pickup_location: str | None = None
    fulfilment: Fulfilment | None = None
    channel: str = "app"
    max_splits: int | None = None
    max_distance_km: float | None = None
    excluded_locations: tuple[str, ...] = ()
    coupon_cents: int = 0
    attribution: str | None = None
    selling_store: str | None = None

    def __post_init__(self) -> None:
        # Normalise cheap-to-fix shapes so that orders compare and hash by value
        # (idempotent retries compare the order they carry).
        lines = self.lines
        if type(lines) is not tuple or not all(type(x) is Line for x in lines):
            given = validate.sequence(lines, "lines", error=errors.InvalidOrder, what="a sequence of Line")
            object.__setattr__(self, "lines", tuple(_as_line(x, i) for i, x in enumerate(given)))
        if self.destination is not None and type(self.destination) is not tuple:
            if isinstance(self.destination, (str, bytes)) or not isinstance(self.destination,
                                                                            (Sequence, np.ndarray)):
                raise errors.InvalidCoordinates(f"destination must be (lat, lon), got "
                                                f"{validate.shown(self.destination)}", field="destination")
            object.__setattr__(self, "destination", tuple(self.destination))
        excluded = self.excluded_locations
        if type(excluded) is not tuple:
            if isinstance(excluded, str):
                object.__setattr__(self, "excluded_locations", (excluded,))
            else:
                ids = validate.sequence(excluded, "excluded_locations", error=errors.InvalidOrder,
                                        what="a sequence of location ids")
                object.__setattr__(self, "excluded_locations", tuple(ids))
        if self.fulfilment is None:
            object.__setattr__(self, "fulfilment",
                               Fulfilment.PICKUP if self.pickup_location is not None else Fulfilment.DELIVERY)
        elif type(self.fulfilment) is not Fulfilment:
            object.__setattr__(self, "fulfilment", validate.member(self.fulfilment, "fulfilment", Fulfilment,
                                                                   by_name=True, by_value=True,
                                                                   error=errors.InvalidOrder))


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """The parts of one shipment's cost under the routing policy."""

    fixed: float  #: the location's per-shipment cost (plus the split penalty after the first)
    distance: float  #: cost_per_km x circuity x great-circle km
    low_stock: float  #: penalty for taking a large share of what the location has
    load: float  #: penalty for the location's load against its daily capacity
    priority: float  #: penalty for a less preferred location

    @property
    def total(self) -> float:
        """Sum of the parts."""
        return self.fixed + self.distance + self.low_stock + self.load + self.priority


@dataclass(frozen=True, slots=True)
class Shipment:
    """Part of an allocation: the lines one location sends."""

    location: str
    lines: tuple[Line, ...]
    distance_km: float
    cost: CostBreakdown


@dataclass(frozen=True, slots=True)
class ShortLine:
    """A line that could not be covered, with what the order could get of it."""

    sku: str
    requested: int
    allocatable: int
    reason: str  #: ``NO_STOCK``, ``CHANNEL_LIMIT`` or ``CONSTRAINTS`` (distance, capability, splits ...)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A location that could have filled the whole order, and its cost."""

    location: str
    cost: float
    distance_km: float


class Explanation:
    """Why the router decided as it did.

    ``considered`` counts locations whose stock was looked at; locations the
    spatial search never reached could not have won (their lower-bound cost
    exceeded the winner's). ``rejected`` counts the considered locations per
    reason (``NO_STOCK``, ``CAPACITY``, ``CAPABILITY``, ``DISTANCE``,
    ``CLOSED``, ``EXCLUDED``). ``runners_up`` are the next-cheapest single
    locations that could fill everything, among those examined. ``strategy``
    says how candidates were found: ``spatial`` (a cheapest-first walk of the
    rarest SKU's tree with early stop), ``sku_scan`` (the few locations holding
    the rarest SKU) or ``none`` (no search: a channel limit answered first).

    ``optimal`` is True when the plan is proven the cheapest of all plans that
    send each line from one location, within the order's parcel limit (with a
    fewest-shipments policy: the cheapest of those with the fewest parcels).
    It is False when the greedy heuristic decided: orders of more than
    ``EXACT_LINES`` (6) lines, or a greedy plan that splits a line's units and
    beats every whole-line plan. ``next_best_cost`` is the cost of the cheapest
    other plan the search priced (None if it priced none): for a split, the best
    other partition of the lines, the greedy plan or the single location; for a
    single location, the runner-up. ``lower_bound`` is a cost no plan can go
    under: the plan's own cost when ``optimal``, else the dearest of the
    cheapest parcels any one line needs (a bound that splits of a line's units
    respect too). Recorded answers (a retry) carry neither.

    The parts are built on first access: most callers never read them, and a
    routing decision should not pay for objects nobody looks at.

    Examples
    --------
    >>> e = Explanation("spatial", 12, {"NO_STOCK": 3}, (), False, "", "default@1")
    >>> e.considered, e.rejected
    (12, {'NO_STOCK': 3})
    """

    __slots__ = ("_parts", "_build")
    _parts: tuple[Any, ...] | None
    _build: Any
    _FIELDS = ("strategy", "considered", "rejected", "runners_up", "split", "split_reason", "policy", "optimal",
               "next_best_cost", "lower_bound")

    def __init__(self, strategy: str = "", considered: int = 0, rejected: Mapping[str, int] | None = None,
                 runners_up: tuple[Candidate, ...] = (), split: bool = False, split_reason: str = "",
                 policy: str = "", optimal: bool = False, next_best_cost: float | None = None,
                 lower_bound: float | None = None, *, _build: Any = None) -> None:
        # ``_build`` (internal): a callable returning the ten parts, called once on first access
        setattr_ = object.__setattr__          # immutable from outside; __setattr__ below refuses
        setattr_(self, "_build", _build)
        setattr_(self, "_parts", None if _build is not None else (
            strategy, considered, dict(rejected or {}), tuple(runners_up), split, split_reason, policy, optimal,
            next_best_cost, lower_bound))

    def _get(self, i: int) -> Any:
        parts = self._parts
        if parts is None:
            parts = self._build()
            object.__setattr__(self, "_parts", parts)
            object.__setattr__(self, "_build", None)
        return parts[i]

    @property
    def strategy(self) -> str:
        """``spatial``, ``sku_scan`` or ``none``."""
        return self._get(0)

    @property
    def considered(self) -> int:
        """Locations whose stock was examined."""
        return self._get(1)

    @property
    def rejected(self) -> Mapping[str, int]:
        """Examined locations rejected, per reason."""
        return self._get(2)

    @property
    def runners_up(self) -> tuple[Candidate, ...]:
        """Next-cheapest single locations among those examined."""
        return self._get(3)

    @property
    def split(self) -> bool:
        """True when the order ships in more than one parcel."""
        return self._get(4)

    @property
    def split_reason(self) -> str:
        """``""``, ``"NO_SINGLE_LOCATION"`` or ``"CHEAPER"``."""
        return self._get(5)

    @property
    def policy(self) -> str:
        """Key of the routing policy used."""
        return self._get(6)

    @property
    def optimal(self) -> bool:
        """The plan is proven the cheapest plan that keeps each line whole (see the class docstring)."""
        return self._get(7)

    @property
    def next_best_cost(self) -> float | None:
        """Cost of the cheapest other plan the search priced, or None."""
        return self._get(8)

    @property
    def lower_bound(self) -> float | None:
        """No plan costs less than this (the plan's cost when optimal), or None when not computed."""
        return self._get(9)

    def as_dict(self) -> dict[str, Any]:
        """The parts as a plain dict."""
        return {name: self._get(i) for i, name in enumerate(self._FIELDS)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Explanation):
            return NotImplemented
        return all(self._get(i) == other._get(i) for i in range(len(self._FIELDS)))

    def __hash__(self) -> int:
        return hash((self.strategy, self.considered, self.split, self.split_reason, self.policy))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Explanation is immutable; cannot set {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:   # pickled built (process pools)
        return (Explanation, tuple(self._get(i) for i in range(len(self._FIELDS))))

    def __repr__(self) -> str:
        return "Explanation(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"


@dataclass(frozen=True, slots=True)
class Allocation:
    """The answer to a routing request."""

    order_id: str
    status: AllocationStatus
    reservation_id: str | None
    shipments: tuple[Shipment, ...]
    total_cost: float
    short_lines: tuple[ShortLine, ...]
    #: why (diagnostics, not part of the decision: two answers that decide alike compare equal, so a retry
    #: answered from the idempotency window -- which keeps the recorded explanation -- equals the first answer)
    explanation: Explanation = field(compare=False)
    expires_at: float | None = None

    @property
    def ok(self) -> bool:
        """True when a plan covering every line was found."""
        return self.status != AllocationStatus.UNFULFILLABLE


@dataclass(frozen=True, slots=True)
class Reservation:
    """A hold of stock for an order, as seen from outside."""

    id: str
    request_id: str | None
    order_id: str
    channel: str
    state: ReservationState
    shipments: tuple[Shipment, ...]
    created_at: float
    expires_at: float
    excluded_locations: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class StockLevel:
    """One stock cell. ``available`` is what online channels may sell."""

    location: str
    sku: str
    on_hand: int
    reserved: int
    safety: int

    @property
    def available(self) -> int:
        """on_hand - reserved - safety, never below 0."""
        return max(0, self.on_hand - self.reserved - self.safety)


@dataclass(frozen=True, slots=True)
class NearbyStock:
    """A location near a point with stock of a SKU (store locator)."""

    location: str
    distance_km: float
    available: int


@dataclass(frozen=True, slots=True)
class PickupOption:
    """A pickup location that can fill a whole basket from its own stock."""

    location: str
    distance_km: float
