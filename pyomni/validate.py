"""The checks every public entry point runs on its arguments: one home for "is this input acceptable".

The rule of the API: any bad input gets a typed :mod:`pyomni.errors` error
naming the offending argument (``field``) and changes nothing -- never a bare
``TypeError``, ``ValueError``, ``KeyError``, ``OverflowError`` or
``UnicodeError`` from deeper down. Each function here checks one *kind* of
argument and returns it normalised (plain ``str``, ``int``, ``float``,
``bool``, a tuple), or raises:

* identifiers (:func:`identifier`, :func:`request_id`): non-empty text of at
  most :data:`MAX_ID_CHARS` characters, encodable as UTF-8 (a lone surrogate
  cannot go into the journal, a snapshot, an Arrow table or a protobuf) and free
  of control characters (C0, DEL, C1); free text (:func:`text`) need only be
  encodable and bounded;
* :func:`flag` -- a ``bool`` (``1`` or ``"yes"`` are refused, not coerced);
* :func:`integer` and :func:`quantity` -- ``int`` or a NumPy integer in a range
  (``bool``, ``float`` and ``str`` refused);
* :func:`number`, :func:`seconds`, :func:`timeout` -- finite real numbers in a range;
* :func:`point` / :func:`lat_lon` -- a ``(lat, lon)`` pair in degrees;
* :func:`member` -- a value of an enum (the member, or its name where the API takes names);
* :func:`choice` -- one of a few strings;
* :func:`sequence` and :func:`identifiers` -- sequences, refusing a bare ``str``
  (which would otherwise iterate into characters).

Lookups of existing names (a location, a SKU, a reservation) are not checked
here: a lookup either finds the name or raises the ``NotFound`` class that says
so. Messages never echo more than a bounded prefix of the caller's input:
:func:`shown` renders a value for a message.

The common, valid case costs a few type checks: the hot paths (routing,
claims) call these functions, or test ``type(x) is int``-style first and call
them only when something looks wrong.

Examples
--------
>>> from pyomni import validate, errors
>>> validate.quantity(3, "qty")
3
>>> try:
...     validate.quantity(True, "qty")
... except errors.InvalidQuantity as exc:
...     print(exc.field, "|", exc)
qty | qty must be an integer, got True
>>> validate.shown("x" * 1000)[:12], len(validate.shown("x" * 1000)) <= validate.SHOWN_CHARS
("'xxxxxxxxxxx", True)
"""

from __future__ import annotations

import enum
import math
import os
import re
import reprlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from . import errors

__all__ = [
    "MAX_QTY", "MAX_ID_CHARS", "MAX_TEXT_CHARS", "SHOWN_CHARS", "MAX_TIMEOUT",
    "shown", "identifier", "is_identifier", "are_identifiers", "optional_identifier", "request_id", "text", "flag",
    "optional_flag", "integer",
    "quantity", "number", "seconds", "timeout", "lat_lon", "point", "member", "choice", "sequence",
    "identifiers", "instance", "mapping", "callable_", "path", "MAX_PATH_CHARS",
]

#: Largest quantity one stock cell, event or order line may hold (fits int32 with headroom).
MAX_QTY = 1_000_000_000
#: Most characters of an identifier (location, SKU, order, request, channel, customer ...).
MAX_ID_CHARS = 256
#: Most characters of free text (a sale's title, a city's name).
MAX_TEXT_CHARS = 4096
#: Most characters of a caller's value echoed in an error message.
SHOWN_CHARS = 64
#: Most characters of a file system path.
MAX_PATH_CHARS = 4096
#: Longest wait a timeout may ask for, in seconds (what ``threading`` can wait, capped at a day).
MAX_TIMEOUT = min(86_400.0, threading.TIMEOUT_MAX)

_E = TypeVar("_E", bound=enum.Enum)
# C0 controls, DEL, C1 controls and lone surrogates (which no UTF-8 encoder takes)
_BAD_ID_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")

_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxtuple = _REPR.maxlist = _REPR.maxarray = _REPR.maxdict = 4
_REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = 4
_REPR.maxstring = _REPR.maxother = SHOWN_CHARS
_REPR.maxlong = 40


# -- messages ---------------------------------------------------------------------------------
def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters (with an ellipsis).

    Safe for anything a caller may pass: a 16 KB string, a huge list, an int of
    ten thousand digits, an object whose ``repr`` raises.

    >>> shown("SH-0001")
    "'SH-0001'"
    >>> len(shown(list(range(10**6)))) <= SHOWN_CHARS
    True
    """
    if type(value) is int and not -(10**40) < value < 10**40:
        text = f"<int of {value.bit_length()} bits>"       # str() of a huge int is slow or refused
    else:
        try:
            text = _REPR.repr(value)
        except Exception:       # a __repr__ that raises, an int too long to print: describe, never fail
            text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -- text -------------------------------------------------------------------------------------
def identifier(value: Any, field: str, *, error: type[errors.PyomniError] = errors.InvalidArgument,
               max_chars: int = MAX_ID_CHARS) -> str:
    """A name the engine keeps (a new SKU, an order id, a channel, a customer): a plain ``str``.

    Non-empty, at most ``max_chars`` characters, no control characters, and
    encodable as UTF-8. Raises ``error`` (``InvalidArgument`` by default).

    >>> identifier("SKU-1", "sku")
    'SKU-1'
    >>> identifier("上海-01", "location")
    '上海-01'
    """
    if type(value) is str and 0 < len(value) <= max_chars and value.isascii() and value.isprintable():
        return value        # the common case: short printable ASCII
    if not isinstance(value, str) or not value or len(value) > max_chars:
        raise error(f"{field} must be a non-empty string of at most {max_chars} characters, got {shown(value)}",
                    field=field)
    bad = _BAD_ID_CHAR.search(value)
    if bad is not None:
        raise error(f"{field} must not contain control characters or lone surrogates (got {bad.group()!r} at "
                    f"{bad.start()}): {shown(value)}", field=field)
    return str(value)       # plain str, not a subclass such as numpy.str_


def is_identifier(value: Any, max_chars: int = MAX_ID_CHARS) -> bool:
    """Whether ``value`` passes :func:`identifier`: for columns of a batch, whose bad entries are refused one
    by one while the others go on.

    >>> is_identifier("m-1"), is_identifier(""), is_identifier("a\\x00b")
    (True, False, False)
    """
    if type(value) is str and 0 < len(value) <= max_chars and value.isascii() and value.isprintable():
        return True
    return isinstance(value, str) and 0 < len(value) <= max_chars and _BAD_ID_CHAR.search(value) is None


def are_identifiers(values: Sequence[Any], max_chars: int | None = MAX_ID_CHARS, *,
                    skip_empty: bool = False) -> bool:
    """Whether every entry passes :func:`is_identifier`, checked at C speed on the entries joined, so a hot
    batch path looks once and entry by entry only when this says no. With ``skip_empty``, None and "" entries
    are passed over (they mean "none" in those columns); ``max_chars=None`` leaves the lengths to the caller.

    >>> are_identifiers(["m-1", "m-2"]), are_identifiers(["m-1", None]), are_identifiers(["m-1", "a\\x00"])
    (True, False, False)
    >>> are_identifiers(["m-1", None, ""], skip_empty=True)
    True
    """
    try:
        items = list(filter(None, values)) if skip_empty else values
        joined = "".join(items)
    except (TypeError, ValueError):     # an entry is not text (or an array, whose truth is ambiguous)
        return False
    if not (joined.isascii() and joined.isprintable()) and _BAD_ID_CHAR.search(joined) is not None:
        return False
    if skip_empty:
        if len(items) != len(values) and len(items) != len(values) - values.count(None) - values.count(""):
            return False                # a falsy entry that is neither None nor "" (0, False, []): not text
    elif "" in items:
        return False
    return max_chars is None or max(map(len, items), default=0) <= max_chars


def optional_identifier(value: Any, field: str, *, error: type[errors.PyomniError] = errors.InvalidArgument,
                        max_chars: int = MAX_ID_CHARS) -> str | None:
    """``None``, or an :func:`identifier`."""
    return None if value is None else identifier(value, field, error=error, max_chars=max_chars)


def request_id(value: Any, field: str = "request_id") -> str | None:
    """An idempotency key (AIP-155): ``None`` (not retryable) or an :func:`identifier`.

    >>> request_id("take-1"), request_id(None)
    ('take-1', None)
    """
    if value is None or (type(value) is str and 0 < len(value) <= MAX_ID_CHARS and value.isascii()
                         and value.isprintable()):
        return value
    return identifier(value, field)


def text(value: Any, field: str, *, max_chars: int = MAX_TEXT_CHARS,
         error: type[errors.PyomniError] = errors.InvalidArgument) -> str:
    """Free text (a title, a city): a ``str`` of at most ``max_chars`` characters, encodable as UTF-8 (may be empty).

    >>> text("Double 11 tees", "title")
    'Double 11 tees'
    """
    if type(value) is str and len(value) <= max_chars and (value.isascii() or _SURROGATE.search(value) is None):
        return value
    if not isinstance(value, str) or len(value) > max_chars:
        raise error(f"{field} must be a string of at most {max_chars} characters, got {shown(value)}", field=field)
    if _SURROGATE.search(value) is not None:
        raise error(f"{field} must be valid Unicode text (it holds a lone surrogate): {shown(value)}", field=field)
    return str(value)


# -- scalars ----------------------------------------------------------------------------------
def flag(value: Any, field: str, *, error: type[errors.PyomniError] = errors.InvalidArgument) -> bool:
    """A ``bool`` (or ``numpy.bool_``); ``1``, ``"yes"`` or ``None`` are refused, not coerced.

    >>> flag(True, "is_open")
    True
    """
    if value is True or value is False:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise error(f"{field} must be a bool, got {shown(value)}", field=field)


def optional_flag(value: Any, field: str) -> bool | None:
    """``None``, or a :func:`flag`."""
    return None if value is None else flag(value, field)


def integer(value: Any, field: str, *, low: int | None = None, high: int | None = None,
            error: type[errors.PyomniError] = errors.InvalidArgument) -> int:
    """An ``int`` (or NumPy integer) in ``low..high`` (either bound may be None); ``bool``, ``float`` and
    ``str`` are refused.

    >>> integer(5, "limit", low=1, high=1000)
    5
    """
    if type(value) is not int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise error(f"{field} must be an integer, got {shown(value)}", field=field)
        value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (f"in {low}..{high}" if low is not None and high is not None
                  else f">= {low}" if low is not None else f"<= {high}")
        raise error(f"{field} must be {bounds}, got {shown(value)}", field=field)
    return value


def quantity(value: Any, field: str, *, allow_zero: bool = False, allow_negative: bool = False) -> int:
    """A count of units: an integer in ``1..MAX_QTY`` (``0..`` with ``allow_zero``, ``-MAX_QTY..`` with
    ``allow_negative``, which never allows 0); raises :class:`~pyomni.errors.InvalidQuantity`.

    >>> quantity(-4, "delta", allow_negative=True)
    -4
    """
    if type(value) is int:
        q = value
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise errors.InvalidQuantity(f"{field} must be an integer, got {shown(value)}", field=field)
    else:
        q = int(value)
    lo = -MAX_QTY if allow_negative else (0 if allow_zero else 1)
    if q < lo or q > MAX_QTY or (q == 0 and not allow_zero):
        raise errors.InvalidQuantity(f"{field} = {shown(q)} is out of range [{lo}, {MAX_QTY}]"
                                     + ("" if allow_zero else " (and must not be 0)"), field=field)
    return q


def _real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def number(value: Any, field: str, *, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
           high_open: bool = False, allow_inf: bool = False,
           error: type[errors.PyomniError] = errors.InvalidArgument) -> float:
    """A real number (``int``, ``float`` or NumPy) as a ``float``: not NaN, finite unless ``allow_inf``,
    in ``[low, high]`` (``low_open`` / ``high_open`` make a bound exclusive).

    >>> number(2, "radius_km", low=0, low_open=True)
    2.0
    """
    if not _real(value):
        raise error(f"{field} must be a number, got {shown(value)}", field=field)
    try:
        x = float(value)
    except OverflowError:           # an int beyond float's range
        raise error(f"{field} is out of range, got {shown(value)}", field=field) from None
    if math.isnan(x) or (not allow_inf and math.isinf(x)):
        raise error(f"{field} must be a finite number, got {x}", field=field)
    if x < low or x > high or (low_open and x == low) or (high_open and x == high):
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise error(f"{field} must be in {lo}{low}, {high}{hi}, got {x}", field=field)
    return x


def seconds(value: Any, field: str) -> float:
    """A positive, finite number of seconds.

    >>> seconds(900, "reservation_ttl")
    900.0
    """
    if type(value) is float and 0.0 < value < math.inf:
        return value
    return number(value, field, low=0.0, low_open=True, error=errors.InvalidArgument)


def timeout(value: Any, field: str = "timeout") -> float | None:
    """``None`` (wait as long as it takes) or seconds in ``0..MAX_TIMEOUT``.

    >>> timeout(0.5), timeout(None)
    (0.5, None)
    """
    return None if value is None else number(value, field, low=0.0, high=MAX_TIMEOUT)


def lat_lon(lat: Any, lon: Any, field: str = "destination") -> tuple[float, float]:
    """``(lat, lon)`` as floats in degrees, or :class:`~pyomni.errors.InvalidCoordinates`.

    >>> lat_lon(31.2, 121.5)
    (31.2, 121.5)
    """
    if type(lat) is float and type(lon) is float and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
        return lat, lon         # NaN fails the comparisons
    if not (_real(lat) and _real(lon)):
        raise errors.InvalidCoordinates(f"coordinates must be numbers, got {shown(lat)}, {shown(lon)}", field=field)
    try:
        lat_f, lon_f = float(lat), float(lon)
    except OverflowError:
        raise errors.InvalidCoordinates(f"coordinates out of range: {shown(lat)}, {shown(lon)}", field=field) from None
    if not (math.isfinite(lat_f) and math.isfinite(lon_f)):
        raise errors.InvalidCoordinates(f"coordinates must be finite, got {lat_f}, {lon_f}", field=field)
    if not (-90.0 <= lat_f <= 90.0 and -180.0 <= lon_f <= 180.0):
        raise errors.InvalidCoordinates(f"coordinates out of range: {lat_f}, {lon_f}", field=field)
    return lat_f, lon_f


def point(value: Any, field: str = "near") -> tuple[float, float]:
    """A ``(lat, lon)`` pair (a sequence or a NumPy array of two numbers), or
    :class:`~pyomni.errors.InvalidCoordinates`.

    >>> point((31.2, 121.5))
    (31.2, 121.5)
    """
    if isinstance(value, np.ndarray) and value.shape == (2,):
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise errors.InvalidCoordinates(f"{field} must be a (lat, lon) pair, got {shown(value)}", field=field)
    return lat_lon(value[0], value[1], field)


# -- choices ----------------------------------------------------------------------------------
def member(value: Any, field: str, enum_cls: type[_E], *, by_name: bool = False, by_value: bool = False,
           error: type[errors.PyomniError] = errors.InvalidArgument) -> _E:
    """A member of ``enum_cls``: the member itself, or (``by_name``) its name in any case, or
    (``by_value``) its value; anything else is refused with the list of valid names.

    >>> from pyomni.model import ReservationState
    >>> member("held", "state", ReservationState, by_name=True)
    <ReservationState.HELD: 1>
    """
    if isinstance(value, enum_cls):
        return value
    if by_name and isinstance(value, str) and len(value) <= 64:
        found = enum_cls.__members__.get(value.strip().upper().replace("-", "_"))
        if found is not None:
            return found
    if by_value and isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        try:
            return enum_cls(value)
        except (ValueError, TypeError):
            pass
    names = ", ".join(enum_cls.__members__)
    raise error(f"{field} must be one of {enum_cls.__name__} ({names}), got {shown(value)}", field=field)


def choice(value: Any, field: str, options: Sequence[str],
           error: type[errors.PyomniError] = errors.InvalidArgument) -> str:
    """One of a few strings.

    >>> choice("network", "scope", ("network", "location"))
    'network'
    """
    if type(value) is str and value in options:
        return value
    raise error(f"{field} must be one of {', '.join(options)}, got {shown(value)}", field=field)


# -- collections --------------------------------------------------------------------------------
def sequence(value: Any, field: str, *, error: type[errors.PyomniError] = errors.InvalidArgument,
             max_len: int | None = None, what: str = "a sequence") -> Sequence[Any]:
    """A sized sequence (list, tuple, NumPy array, or any iterable, made a tuple); a bare ``str`` or
    ``bytes``, a mapping, a scalar or ``None`` are refused.

    >>> sequence(["a", "b"], "skus")
    ['a', 'b']
    """
    out: Any
    if type(value) is list or type(value) is tuple or isinstance(value, np.ndarray):
        out = value
    elif isinstance(value, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(value, Iterable):
        raise error(f"{field} must be {what}, got {shown(value)}", field=field)
    elif isinstance(value, Sequence):
        out = value
    else:
        try:
            out = tuple(value)
        except errors.PyomniError:
            raise
        except Exception as exc:  # a generator that raises, an iterator of the wrong kind
            raise error(f"{field} could not be read as {what}: {type(exc).__name__}", field=field) from None
    if isinstance(out, np.ndarray) and out.ndim != 1:
        raise error(f"{field} must be one-dimensional, got shape {out.shape}", field=field)
    if max_len is not None and len(out) > max_len:
        raise error(f"{field} has {len(out)} entries; at most {max_len}", field=field)
    return out


def identifiers(value: Any, field: str, *, error: type[errors.PyomniError] = errors.InvalidArgument,
                max_len: int | None = None, max_chars: int = MAX_ID_CHARS) -> tuple[str, ...]:
    """A sequence of :func:`identifier` (a bare ``str`` is refused: it is one id, not several).

    >>> identifiers(["SKU-1", "SKU-2"], "skus")
    ('SKU-1', 'SKU-2')
    """
    items = sequence(value, field, error=error, max_len=max_len, what="a sequence of ids")
    return tuple(identifier(x, f"{field}[{i}]", error=error, max_chars=max_chars) for i, x in enumerate(items))


def instance(value: Any, cls: type | tuple[type, ...], field: str, what: str,
             error: type[errors.PyomniError] = errors.InvalidArgument) -> Any:
    """``value`` if it is an instance of ``cls``; otherwise ``error`` saying it must be ``what``.

    >>> instance(3, int, "n", "an int")
    3
    """
    if isinstance(value, cls):
        return value
    raise error(f"{field} must be {what}, got {shown(value)}", field=field)


def mapping(value: Any, field: str, *, error: type[errors.PyomniError] = errors.InvalidArgument) -> Mapping[Any, Any]:
    """A mapping (``None`` is an empty one).

    >>> dict(mapping(None, "channels"))
    {}
    """
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return value
    raise error(f"{field} must be a mapping, got {shown(value)}", field=field)


def callable_(value: Any, field: str) -> Any:
    """A callable (a clock).

    >>> callable_(len, "clock") is len
    True
    """
    if callable(value):
        return value
    raise errors.InvalidArgument(f"{field} must be callable, got {shown(value)}", field=field)


def path(value: Any, field: str) -> Path:
    """A file system path (``str`` or ``os.PathLike`` of text): non-empty, no NUL, at most
    :data:`MAX_PATH_CHARS` characters.

    >>> path("/tmp/pyomni", "directory").name
    'pyomni'
    """
    try:
        text_ = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    except TypeError:
        text_ = None
    if not isinstance(text_, str) or not text_ or len(text_) > MAX_PATH_CHARS or "\x00" in text_:
        raise errors.InvalidArgument(f"{field} must be a path (a non-empty str or os.PathLike of at most "
                                     f"{MAX_PATH_CHARS} characters, without NUL), got {shown(value)}", field=field)
    return Path(text_)
