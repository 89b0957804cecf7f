"""Compact, typed binary encoding of pyomni values: the journal's and the snapshots' record format.

MessagePack (a kept library, C-accelerated) carries plain values; each pyomni
value type is one MessagePack *extension* whose payload is its fields in
declaration order, so a record holds no field names and no class paths.
Decoding builds only the types registered here -- unlike pickle, a damaged or
hostile file cannot make the decoder run code -- and gives back values equal
to the ones encoded (floats are float64, enums come back as enums), which is
what idempotent retries after a restart compare.

The type codes are part of the on-disk format: never renumber one; add new
types with new codes.

Examples
--------
>>> from pyomni.model import Line, Order
>>> o = Order("o-1", [Line("SKU-1", 2)], destination=(31.2, 121.5))
>>> decode(encode(o)) == o
True
>>> len(encode(o)) < 56
True
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any

import msgpack

from . import errors
from .flash import Claim, FlashSale, SaleCounters, SaleState, StoreCounters
from .fulfilment import (
    ExceptionState,
    OpeningHours,
    OrderException,
    Rejection,
    RejectReason,
    ReturnRecord,
    ShipmentState,
    StoreRules,
    StoreShipment,
)
from .model import (
    Allocation,
    AllocationStatus,
    Candidate,
    Capability,
    CostBreakdown,
    Explanation,
    Fulfilment,
    Line,
    Location,
    LocationKind,
    Order,
    Reservation,
    ReservationState,
    Shipment,
    ShortLine,
    StockLevel,
)
from .policy import ChannelRule, RoutingPolicy
from .settlement import AttributionRule

__all__ = ["encode", "decode", "register"]

_ENCODERS: dict[type, tuple[int, Callable[[Any], tuple]]] = {}
_DECODERS: dict[int, Callable[[tuple], Any]] = {}


def register(code: int, cls: type, to_fields: Callable[[Any], tuple] | None = None,
             from_fields: Callable[[tuple], Any] | None = None) -> None:
    """Register a type under a fixed extension code (0..127); dataclasses need no functions."""
    if code in _DECODERS:
        raise errors.InvalidArgument(f"codec type code {code} is taken", field="code")
    if to_fields is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.init)
        if len(names) == 1:
            to_fields = _one_field(names[0])
        elif names:
            to_fields = operator.attrgetter(*names)      # a tuple of the fields, gathered in C
        else:
            to_fields = _no_fields
    _ENCODERS[cls] = (code, to_fields)
    _DECODERS[code] = from_fields or (lambda f: cls(*f))


def _one_field(name: str) -> Callable[[Any], tuple]:
    get = operator.attrgetter(name)
    return lambda obj: (get(obj),)


def _no_fields(obj: Any) -> tuple:
    return ()


def _default(obj: Any) -> Any:
    entry = _ENCODERS.get(type(obj))
    if entry is None:
        if hasattr(obj, "item") and hasattr(obj, "dtype"):     # a NumPy scalar
            return obj.item()
        raise errors.InvalidArgument(f"cannot encode a {type(obj).__name__}", field="value")
    code, to_fields = entry
    return msgpack.ExtType(code, msgpack.packb(to_fields(obj), default=_default, use_bin_type=True))


def _ext_hook(code: int, data: bytes) -> Any:
    build = _DECODERS.get(code)
    if build is None:
        raise errors.JournalCorrupt(f"unknown record type code {code}")
    return build(msgpack.unpackb(data, ext_hook=_ext_hook, use_list=False, raw=False, strict_map_key=False))


def encode(value: Any) -> bytes:
    """``value`` (plain values, tuples, dicts and registered pyomni types, nested) as bytes.

    Raises :class:`~pyomni.errors.InvalidArgument` for a value no record can hold (an int beyond 64 bits, a
    string with a lone surrogate, an unregistered type).
    """
    try:
        return msgpack.packb(value, default=_default, use_bin_type=True)
    except errors.PyomniError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:     # UnicodeEncodeError is a ValueError
        raise errors.InvalidArgument(f"cannot encode a record: {type(exc).__name__}: {str(exc)[:200]}",
                                     field="value") from None


def decode(data: bytes | memoryview) -> Any:
    """The value :func:`encode` wrote; sequences come back as tuples.

    Raises :class:`~pyomni.errors.JournalCorrupt` if the bytes are not such a value.
    """
    try:
        return msgpack.unpackb(data, ext_hook=_ext_hook, use_list=False, raw=False, strict_map_key=False)
    except errors.PyomniError:
        raise
    except Exception as exc:   # msgpack raises several of its own and ValueError/TypeError from constructors
        raise errors.JournalCorrupt(f"undecodable record: {exc}") from None


def _explanation_fields(e: Explanation) -> tuple:
    return tuple(e._get(i) for i in range(len(Explanation._FIELDS)))


# -- the registered types (codes are on disk: never renumber) ------------------------
register(1, Line)
register(2, Order)
register(3, CostBreakdown)
register(4, Shipment)
register(5, ShortLine)
register(6, Candidate)
register(7, Explanation, _explanation_fields, lambda f: Explanation(*f))
register(8, Allocation, from_fields=lambda f: Allocation(f[0], AllocationStatus(f[1]), *f[2:]))
register(9, Reservation, from_fields=lambda f: Reservation(f[0], f[1], f[2], f[3], ReservationState(f[4]), *f[5:]))
register(10, StockLevel)
register(11, Location, from_fields=lambda f: Location(f[0], LocationKind(f[1]), f[2], f[3], f[4], f[5], f[6],
                                                       Capability(f[7]), *f[8:]))
register(12, ChannelRule)
register(13, RoutingPolicy)
register(14, FlashSale)
register(15, Claim, from_fields=lambda f: Claim(f[0], f[1], f[2], f[3], f[4], f[5], ReservationState(f[6]), f[7], f[8]))
register(16, StoreCounters)
register(17, SaleCounters, from_fields=lambda f: SaleCounters(f[0], SaleState(f[1]), *f[2:]))
register(18, OpeningHours)
register(19, StoreRules)
# 20..39 and 60.. are the commands' and effects' (pyomni.commands); store values go on from 90
register(90, StoreShipment, from_fields=lambda f: StoreShipment(
    f[0], f[1], f[2], f[3], ShipmentState(f[4]), f[5], Fulfilment(f[6]), f[7], f[8], f[9], f[10], f[11], f[12],
    None if f[13] is None else RejectReason(f[13]), *f[14:]))
register(91, OrderException, from_fields=lambda f: OrderException(f[0], f[1], f[2], f[3], f[4], f[5], f[6],
                                                                   ExceptionState(f[7]), f[8], f[9]))
register(92, Rejection)
register(93, ReturnRecord)
register(94, AttributionRule)
