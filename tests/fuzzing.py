"""Fuzzing the public API: every Engine method, the value classes and module functions, and every RPC.

Shared by ``tests/test_fuzz.py`` (a fixed, derandomised run in CI) and
``benchmarks/soak_fuzz.py`` (as many calls as you like). The rule under test
(issue 12): any bad input gets a typed :mod:`pyomni.errors` error and changes
nothing; over gRPC every failing call answers a status other than OK, UNKNOWN
or INTERNAL, with a ``google.rpc.ErrorInfo`` in its details.

The pieces:

* :func:`live_engine` -- a small engine with stock, one HELD and one CONFIRMED
  reservation, a running flash sale with one HELD claim, a scheduled sale, a
  channel rule and a second policy, on a fixed clock (native, plain-Python
  reference, or journaled on a temporary directory). Its ids are constants
  here (``RESERVATIONS``, ``CLAIMS``, ``SALES`` ...), so strategies can mix them in.
* :func:`engine_calls` -- a strategy of :class:`Call` values: a public method
  (found by introspection, so a new method is not skipped: :data:`SPECS` must
  name it or :data:`EXCLUDED` must say why not) with arguments drawn from
  valid ids and values and from :data:`BAD` (wrong types, None, bools,
  huge / negative / NaN / infinite numbers, empty and 16 KB strings, NUL,
  lone surrogates, lists for scalars and bare strings for sequences, unknown
  ids). Value objects (``Order``, ``FlashSale``, ...) are drawn as
  :class:`Build` recipes, made inside the call so their own checks count.
* :func:`rpc_calls` -- a strategy of :class:`RpcCall` values: every RPC of
  every service in ``pyomni.v1`` (from the generated descriptors), with a
  message built from the descriptor: each field of its wire type, numbers at
  and beyond the API's bounds, unknown enum numbers, huge strings, garbage and
  odd Arrow IPC streams in bytes fields, mixed with the live engine's ids.
* :class:`Checker` -- runs calls and checks each one: success or a typed error
  (a status with details), the state fingerprint unchanged after a failure
  (and after any query), invariants, and bounded messages. In ``collect`` mode
  (the soak) it records violations and goes on; otherwise it raises at the
  first one.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import inspect
import math
import random
import reprlib
import shutil
import signal
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import grpc
import hypothesis.strategies as st
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from conftest import CITY_LOCATIONS, SKUS, make_city_net
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message_factory
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import pyomni
from pyomni import (
    ChannelRule,
    FlashSale,
    Line,
    Location,
    LocationKind,
    Order,
    ReservationState,
    RoutingPolicy,
    errors,
)
from pyomni.feeds import ChannelFeed
from pyomni.fulfilment import ExceptionState, OpeningHours, RejectReason, StoreAction, StoreRules
from pyomni.settlement import SPLIT_361, AttributionRule
from pyomni.v1 import diagnostics_pb2, inventory_pb2, routing_pb2, selling_pb2, stores_pb2

# -- the live engine --------------------------------------------------------------------------------
NOW = 1_700_000_000.0
LOCATIONS = tuple(x[0] for x in CITY_LOCATIONS)
SHANGHAI = (31.2304, 121.4737)
#: ids the live engine holds (and some it does not), for strategies to mix in
RESERVATIONS = ("R0000000001", "R0000000002", "R0000000003", "R9999999999", "R1", "C0000000001")
CLAIMS = ("C0000000001", "C0000000002", "C0000000000", "C9999999999", "R0000000001", "C1")
SALES = ("flash-1", "flash-later", "nope")
CUSTOMERS = ("m-1", "m-2", "m-3")
CHANNELS = ("app", "tmall", "jd")
REQUEST_IDS = ("seen-before", "rq-1", "rq-2", "rq-3")
POLICY_KEYS = ("default", "default@1", "express", "express@1", "nope", "default@9")
EXPRESS = RoutingPolicy(name="express", max_splits=1, cost_per_km=0.05)
STORES = ("SH-PEOPLE", "SH-PUDONG")
#: store-side ids: o-live's (held), o-done's (shipped), o-paid's (confirmed, routed), o-rare's (rejected), others
SHIPMENTS = ("R0000000001-1", "R0000000002-1", "R0000000003-1", "R0000000004-1", "R0000000003-2", "R9999999999-1",
             "R1")
EXCEPTIONS = ("X0000000001", "X0000000002", "X9999999999", "X1")
RULE_KEYS = ("fulfiller@1", "fulfiller", "split-361@1", "split-361", "nope", "split-361@9")
DAYS = ("2023-11-15", "2023-11-16", "", "2023-02-30", "15/11/2023")


class FixedClock:
    """The engine's clock: still unless a ``tick`` call moves it (then the sweeper runs at once)."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Live:
    """An engine to fuzz, its clock and a scratch directory (for save / load / open / export)."""

    engine: pyomni.Engine
    clock: FixedClock
    tmp: Path
    kind: str
    opened: list[Any] = dataclasses.field(default_factory=list)

    def close(self) -> None:
        for x in self.opened:
            with contextlib.suppress(Exception):
                x.close()
        self.engine.close()


def stock_events() -> pa.Table:
    rows = []
    for i, loc in enumerate(LOCATIONS):
        for j, sku in enumerate(SKUS[:4]):
            rows.append((loc, sku, 10 + i + j, 1 if sku == "SKU-A" else None))
    rows.append(("SH-PEOPLE", "SKU-E", 2, None))
    loc, sku, qty, safety = zip(*rows)
    return pa.table({"location": loc, "sku": sku, "qty": pa.array(qty, pa.int64()),
                     "safety": pa.array(safety, pa.int64())})


def live_engine(kind: str = "native", tmp: Path | None = None) -> Live:
    """A fresh, deterministic engine holding every id the strategies expect (``kind``: native, reference or
    journal -- the last on ``tmp``, fsync ``never``)."""
    tmp = Path(tempfile.mkdtemp(prefix="pyomni-fuzz-")) if tmp is None else tmp
    clock = FixedClock()
    options: dict[str, Any] = {"clock": clock, "channels": {"tmall": ChannelRule(share=0.5, buffer=1)},
                               "reservation_ttl": 600.0}
    net = make_city_net()
    if kind == "journal":
        eng = pyomni.Engine.open(tmp / "journal", net, fsync="never", **options)
    else:
        eng = pyomni.Engine(net, native=kind == "native", **options)
    eng.apply_stock_events(stock_events())
    eng.receive("SH-PEOPLE", "SKU-C", 2, request_id="seen-before")
    eng.register_policy(EXPRESS)
    held = eng.route_order(Order("o-live", [("SKU-A", 2)], destination=SHANGHAI))
    done = eng.route_order(Order("o-done", [("SKU-B", 1)], destination=SHANGHAI))
    eng.confirm(done.reservation_id)
    eng.create_sale(FlashSale("flash-1", ("SKU-B", "SKU-D"), NOW - 60, NOW + 3600, 5,
                              (("SH-PEOPLE", 3), ("SH-PUDONG", 3)), customer_limit=2))
    eng.create_sale(FlashSale("flash-later", ("SKU-C",), NOW + 600, NOW + 7200, 4, (("SH-PEOPLE", 4),)))
    claim = eng.claim("flash-1", "m-1", "SKU-B", store="SH-PEOPLE")
    assert (held.reservation_id, done.reservation_id, claim.id) == (RESERVATIONS[0], RESERVATIONS[1], CLAIMS[0])
    # the store side: a second attribution rule, time limits round the clock (so ticks reach the deadlines),
    # a shipped shipment (returns possible), a paid one still to ship, and a rejection nobody else could take
    eng.register_attribution_rule(SPLIT_361)
    eng.set_attribution("tmall", SPLIT_361.key)
    eng.set_store_rules(None, StoreRules(hours=OpeningHours(0, 1440)))
    eng.ship_shipment(SHIPMENTS[1])
    paid = eng.route_order(Order("o-paid", [Line("SKU-C", 1, 1999)], destination=SHANGHAI, channel="tmall",
                                 coupon_cents=100))
    eng.confirm(paid.reservation_id)
    rare = eng.route_order(Order("o-rare", [("SKU-E", 1)], destination=SHANGHAI))
    rejection = eng.reject_shipment(SHIPMENTS[3], "other")
    assert (paid.reservation_id, rare.reservation_id) == (RESERVATIONS[2], "R0000000004")
    assert rejection.exception is not None and rejection.exception.id == EXCEPTIONS[0]
    return Live(eng, clock, tmp, kind)


# -- generators ----------------------------------------------------------------------------------------
class Gen:
    """A value generator: ``draw(rnd)`` makes one value from a seeded ``random.Random``.

    Hypothesis draws, per call, which call and a seed (two choices); the arguments are made from the seed by
    these generators, which mirror ``hypothesis.strategies`` (:class:`g`) at a few microseconds a value
    instead of ~15 µs per choice -- what lets a CI run make 100,000 calls in a bounded time. The same seed
    always makes the same call, so a failing example hypothesis reports replays exactly.
    """

    __slots__ = ("draw",)

    def __init__(self, draw: Callable[[random.Random], Any]) -> None:
        self.draw = draw

    def map(self, f: Callable[[Any], Any]) -> Gen:
        draw = self.draw
        return Gen(lambda r: f(draw(r)))


class g:  # noqa: N801 -- used like the strategies module it mirrors
    """The generators: the names and meanings of ``hypothesis.strategies`` (edges drawn more often)."""

    @staticmethod
    def just(value: Any) -> Gen:
        return Gen(lambda r: value)

    @staticmethod
    def none() -> Gen:
        return Gen(lambda r: None)

    @staticmethod
    def booleans() -> Gen:
        return Gen(lambda r: r.random() < 0.5)

    @staticmethod
    def sampled_from(values: Sequence[Any]) -> Gen:
        pool = tuple(values)
        return Gen(lambda r: pool[r.randrange(len(pool))])

    @staticmethod
    def integers(low: int, high: int) -> Gen:
        return Gen(lambda r: (low, high)[r.randrange(2)] if r.random() < 0.2 else r.randint(low, high))

    @staticmethod
    def floats(low: float, high: float) -> Gen:
        return Gen(lambda r: (low, high)[r.randrange(2)] if r.random() < 0.15 else r.uniform(low, high))

    @staticmethod
    def text(alphabet: str = "ab-1", min_size: int = 0, max_size: int = 6) -> Gen:
        return Gen(lambda r: "".join(r.choice(alphabet) for _ in range(r.randint(min_size, max_size))))

    @staticmethod
    def one_of(*gens: Any) -> Gen:
        options = tuple(gens[0]) if len(gens) == 1 and isinstance(gens[0], list) else gens
        return Gen(lambda r: options[r.randrange(len(options))].draw(r))

    @staticmethod
    def tuples(*gens: Gen) -> Gen:
        return Gen(lambda r: tuple(x.draw(r) for x in gens))

    @staticmethod
    def lists(gen: Gen, min_size: int = 0, max_size: int = 3, unique_by: Callable[[Any], Any] | None = None) -> Gen:
        def draw(r: random.Random) -> list[Any]:
            out = [gen.draw(r) for _ in range(r.randint(min_size, max_size))]
            if unique_by is not None:
                seen: dict[Any, Any] = {}
                for x in out:
                    seen.setdefault(unique_by(x), x)
                out = list(seen.values())
            return out
        return Gen(draw)

    @staticmethod
    def builds(fn: Callable[..., Any], *gens: Gen, **kwgens: Gen) -> Gen:
        return Gen(lambda r: fn(*(x.draw(r) for x in gens), **{k: x.draw(r) for k, x in kwgens.items()}))

    @staticmethod
    def fixed_dictionaries(required: dict[str, Gen], *, optional: dict[str, Gen] | None = None) -> Gen:
        opt = tuple((optional or {}).items())
        req = tuple(required.items())

        def draw(r: random.Random) -> dict[str, Any]:
            out = {k: x.draw(r) for k, x in req}
            for k, x in opt:
                if r.random() < 0.5:
                    out[k] = x.draw(r)
            return out
        return Gen(draw)


class Seeded:
    """Values of one of several generators, chosen by a seed that then makes the value (one hypothesis choice)."""

    def __init__(self, gens: Sequence[Gen]) -> None:
        self.gens = tuple(gens)

    def __call__(self, seed: int, position: int = 0) -> Any:
        # the position in the example's list mixes in: hypothesis draws small and repeated seeds often, and the
        # same seed at two places of an example still makes two different calls
        r = random.Random(seed * 1_000_003 + position)
        return self.gens[r.randrange(len(self.gens))].draw(r)


def seeds(n: int) -> st.SearchStrategy[list[int]]:
    """What a hypothesis example draws: ``n`` 64-bit seeds, one per call (hypothesis' bookkeeping, ~40 µs a
    choice, is paid once per call; a :class:`Seeded` maker turns each seed into its call)."""
    return st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n)


# -- values ------------------------------------------------------------------------------------------
HUGE = "x" * 16_384
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80


def _short(value: Any, limit: int) -> str:
    """A value for a report line (never fails, never long: the fuzzer's own, to depend on nothing it tests)."""
    try:
        text = _REPR.repr(value)
    except Exception:       # noqa: BLE001
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 1] + "…"


class Fresh:
    """A value made anew for each call (an iterator is used up by the first call that reads it)."""

    def __init__(self, make: Callable[[], Any], label: str) -> None:
        self.make = make
        self.label = label

    def __repr__(self) -> str:
        return f"Fresh({self.label})"


def _raising() -> Iterator[Any]:
    yield "SH-PEOPLE"
    raise RuntimeError("an iterator that fails half way")


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr refused")

    __hash__ = None      # type: ignore[assignment]


BAD_TEXT: tuple[Any, ...] = ("", HUGE, "a\x00b", "\ud800", "tab\there", "SH-PEOPLE\n", " ", "\u202e-rtl",
                             "C" + "9" * 40, "R" + "0" * 300, "ｓｋｕ")
# values whose repr fails (hypothesis prints the strategies it draws from) are made at call time: Fresh
BAD_NUMBERS: tuple[Any, ...] = (True, False, -1, 0, 2**31, 2**63, 2**64, -(2**63) - 1,
                                Fresh(lambda: 10**5000, "10**5000"), 1.5, math.nan,
                                math.inf, -math.inf, -0.0, 1e308, 5e-324, np.int64(-1), np.uint64(2**64 - 1),
                                np.float64(math.nan), np.bool_(True), np.float32(1.5), Decimal("1"),
                                Fraction(1, 3), complex(1, 1))
BAD_OBJECTS: tuple[Any, ...] = (None, b"bytes", bytearray(b"x"), [], [None], ["SH-PEOPLE"], (), {}, {"id": "x"},
                                {1, 2}, object(), Fresh(_BadRepr, "bad-repr"), np.array([1, 2]), np.zeros((2, 2)),
                                range(3),
                                Ellipsis, int, list(range(2000)),
                                Fresh(lambda: iter(["SH-PEOPLE", "SKU-A"]), "iter"),
                                Fresh(_raising, "raising-iter"))
#: Bad values of any kind, for any argument.
BAD: tuple[Any, ...] = BAD_TEXT + BAD_NUMBERS + BAD_OBJECTS

bad = g.sampled_from(BAD)


def mix(*valid: Gen, extra: Sequence[Any] = (), bad_share: int = 1) -> Gen:
    """Valid values (each strategy once) and, in ``bad_share`` slots, bad ones (with ``extra`` bad values)."""
    wrong = g.sampled_from(BAD + tuple(extra)) if extra else bad
    return g.one_of(*valid, *([wrong] * bad_share))


def pick(values: Sequence[Any]) -> Gen:
    return g.sampled_from(tuple(values))


@dataclasses.dataclass(frozen=True)
class Build:
    """A value object to construct at call time (its constructor's checks are part of the call)."""

    cls: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]

    def __repr__(self) -> str:
        parts = [_short(a, 48) for a in self.args]
        parts += [f"{k}={_short(v, 48)}" for k, v in self.kwargs]
        return f"{getattr(self.cls, '__name__', self.cls)}({', '.join(parts)})"


def build(cls: Callable[..., Any], *args: Gen, **kwargs: Gen
          ) -> Gen:
    """A :class:`Build` with positional ``args`` and, each present or not, keyword ``kwargs``."""
    return g.builds(lambda a, k: Build(cls, tuple(a), tuple(sorted(k.items()))), g.tuples(*args),
                     g.fixed_dictionaries({}, optional=kwargs))


def materialize(value: Any) -> Any:
    if type(value) is Build:
        return value.cls(*(materialize(a) for a in value.args), **{k: materialize(v) for k, v in value.kwargs})
    if type(value) is Fresh:
        return value.make()
    if type(value) is list:
        return [materialize(v) for v in value]
    if type(value) is tuple:
        return tuple(materialize(v) for v in value)
    return value


# strategies of argument kinds
location = mix(pick(LOCATIONS), pick(("XX", "sh-people", "WH-NOWHERE")))
shipment_id = mix(pick(SHIPMENTS), pick(SHIPMENTS[:4]))
exception_id = mix(pick(EXCEPTIONS), pick(EXCEPTIONS[:1]))
rule_key = mix(pick(RULE_KEYS), pick(RULE_KEYS[:4]))
note = mix(g.text(max_size=8), extra=(HUGE,))
reject_reason = g.one_of(pick(tuple(RejectReason)), pick(("not_found", "DAMAGED", "other", "timeout", 3, 7, 8, 0, 99)),
                         bad)
store_action = g.one_of(pick(tuple(StoreAction)), pick(("accept", "SHIP", "pack", 2, 7, 0, 99)), bad)
exception_state = g.one_of(g.none(), pick(tuple(ExceptionState)), pick(("open", "RESOLVED", 1, 2, 0, 9)), bad)
store_locations = g.one_of(g.lists(location, min_size=1, max_size=3), pick((["SH-PEOPLE"], list(STORES))),
                           g.just([]), g.just("SH-PEOPLE"), bad)
opening_hours = g.one_of(
    build(OpeningHours, open_minute=mix(g.integers(0, 1440)), close_minute=mix(g.integers(0, 1440)),
          utc_offset_minutes=mix(g.integers(-800, 900)),
          closed_weekdays=g.one_of(g.lists(mix(g.integers(0, 8)), max_size=3), g.just((1, 2, 3, 4, 5, 6, 7)), bad)),
    g.just(OpeningHours(0, 1440)), bad)
store_rules = g.one_of(
    g.none(), g.just(StoreRules()), g.just(StoreRules(hours=OpeningHours(0, 1440), answer_s=60.0)),
    build(StoreRules, hours=opening_hours, answer_s=mix(g.floats(-1, 1800)), pick_s=mix(g.floats(0.5, 7200)),
          same_day_answer_s=mix(g.floats(0.5, 600)), same_day_pick_s=mix(g.floats(0.5, 3600)),
          collect_days=mix(g.integers(0, 4)), return_days=mix(g.integers(-1, 31))),
    bad)
basis_points = mix(g.integers(0, 10_000), pick((0, 10_000, 5_000)))
attribution_rule = g.one_of(
    g.just(SPLIT_361), g.just(AttributionRule("r-ok", selling_bp=3000, fulfilling_bp=7000, fee_cents=50)),
    build(AttributionRule, mix(pick(("r-1", "split-361", "fulfiller", "a@b"))), version=mix(g.integers(0, 3)),
          selling_bp=basis_points, fulfilling_bp=basis_points, home_bp=basis_points, hq_bp=basis_points,
          fee_cents=mix(g.integers(-1, 1000)), coupon_hq_bp=basis_points, coupon_selling_bp=basis_points,
          franchise_coupon_hq_bp=g.one_of(g.none(), basis_points), home=mix(pick(("nearest", "region", "moon"))),
          regional_stores=g.one_of(g.just(()), g.just({31: "SH-PEOPLE"}), g.just({31: "NOPE"}), bad)),
    bad)
settlement_day = g.one_of(g.none(), pick(DAYS), g.just(datetime.date(2023, 11, 15)), bad)
store = mix(pick(STORES), pick(LOCATIONS))
sku = mix(pick(SKUS), pick(("SKU-Z", "sku-a")))
sale_sku = mix(pick(("SKU-B", "SKU-D")), pick(SKUS))
qty = mix(g.integers(-2, 12), g.integers(1, 3), pick((pyomni.MAX_QTY, pyomni.MAX_QTY + 1)))
signed = mix(g.integers(-12, 12), pick((-pyomni.MAX_QTY - 1, pyomni.MAX_QTY)))
count = mix(g.integers(0, 20), pick((0, 1, 2**31 - 1)))
request_id = g.one_of(g.none(), g.none(), pick(REQUEST_IDS), g.text("abc-", min_size=1, max_size=6), bad)
reservation_id = mix(pick(RESERVATIONS), pick(RESERVATIONS[:2]))
claim_ref = mix(pick(CLAIMS), pick(CLAIMS[:1]))
sale_id = mix(pick(SALES), pick(SALES[:1]))
customer = mix(pick(CUSTOMERS), g.text("mn-0123", min_size=1, max_size=5))
channel = mix(pick(CHANNELS), pick(CHANNELS[:2]))
policy = g.one_of(g.none(), g.none(), pick(POLICY_KEYS), g.just(EXPRESS), g.just(pyomni.DEFAULT_POLICY), bad)
seconds = mix(g.floats(0.5, 7200.0), pick((1, 60, 900)))
latitude = mix(g.floats(-90, 90), pick((SHANGHAI[0], 39.9, 23.1)), extra=(90.0001, -91))
longitude = mix(g.floats(-180, 180), pick((SHANGHAI[1], 116.4, 113.3)), extra=(180.5, -181))
point = g.one_of(g.tuples(latitude, longitude), pick((SHANGHAI, (39.9042, 116.4074))),
                  g.builds(lambda a, b: np.array([a, b]), g.floats(-90, 90), g.floats(-180, 180)), bad,
                  pick(((31.2,), (31.2, 121.5, 0.0), "31.2,121.5", [SHANGHAI])))
flag = mix(g.booleans(), extra=(1, 0, "yes", "false"))
state = g.one_of(g.none(), pick(tuple(ReservationState)), bad, pick(("HELD", "held", 1, 5, 0)))
price = mix(g.integers(0, 5000), pick((0, 10**12, 10**12 + 1, -1)))
line = g.one_of(g.tuples(sku, qty), g.builds(Line, sku, qty), g.builds(Line, sku, qty, price),
                 g.fixed_dictionaries({"sku": sku, "qty": qty}, optional={"unit_price_cents": price}),
                 bad, pick((("SKU-A",), ("SKU-A", 1, 2), "AB", {"sku": "SKU-A"})))
lines = g.one_of(g.lists(line, min_size=1, max_size=3), g.lists(g.tuples(pick(SKUS), g.integers(1, 3)),
                                                                   min_size=1, max_size=3, unique_by=lambda x: x[0]),
                  bad, g.just([("SKU-A", 1)] * 65))
fulfilment = g.one_of(pick(tuple(pyomni.Fulfilment)), pick(("delivery", "PICKUP", "same-day", 2, 9, "teleport")),
                       bad)
excluded = g.one_of(g.lists(location, max_size=3), g.just(("SH-PUDONG",) * 1025), bad)
order = build(Order, mix(pick(("o-1", "o-2", "o-live", "o-done")), g.text("op-9", min_size=1, max_size=5)),
              lines, destination=point, pickup_location=location, fulfilment=fulfilment, channel=channel,
              max_splits=mix(g.integers(0, 17), extra=(2.0,)),
              max_distance_km=mix(g.floats(0, 5000), extra=(math.inf,)), excluded_locations=excluded,
              coupon_cents=price, attribution=g.one_of(g.none(), rule_key),
              selling_store=g.one_of(g.none(), location))
plain_order = g.builds(lambda i, ls: Order(i, ls, destination=SHANGHAI), pick(("o-1", "o-2", "o-3")),
                        g.lists(g.tuples(pick(SKUS), g.integers(1, 3)), min_size=1, max_size=3,
                                 unique_by=lambda x: x[0]))
any_order = g.one_of(order, plain_order, plain_order, bad)
plan = g.one_of(
    g.lists(g.tuples(location, g.lists(g.tuples(sku, qty), min_size=1, max_size=2)), min_size=1, max_size=3),
    pick(([("SH-PEOPLE", [("SKU-A", 1)])], [("SH-PEOPLE", [Line("SKU-A", 1)])], [("SH-PEOPLE", [])],
          [("SH-PEOPLE", "SKU-A")], [("SH-PEOPLE",)], [], "SH-PEOPLE", [("SH-PEOPLE", [("SKU-A",)])])),
    bad)
channel_rule = g.one_of(g.none(), build(ChannelRule, share=mix(g.floats(0, 1.5)), buffer=count), bad)
routing_policy = g.one_of(
    build(RoutingPolicy, name=mix(pick(("express", "eco", "default"))), version=mix(g.integers(0, 3)),
          cost_per_km=mix(g.floats(0, 1)), circuity=mix(g.floats(0.5, 2)), split_penalty=mix(g.floats(0, 10)),
          low_stock_weight=mix(g.floats(0, 5)), load_weight=mix(g.floats(0, 5)),
          priority_weight=mix(g.floats(0, 5)), max_splits=mix(g.integers(0, 17)),
          max_distance_km=mix(g.floats(0, 3000), extra=(math.inf,)),
          same_day_max_km=mix(g.floats(0, 100)), plan_objective=mix(pick(("cheapest", "fewest_shipments"))),
          exact_plans=mix(pick((True, False)))),
    g.just(EXPRESS), bad)
store_quotas = g.one_of(g.lists(g.tuples(store, mix(g.integers(0, 5))), min_size=1, max_size=3),
                         g.just({"SH-PEOPLE": 2}), bad)
window_time = mix(g.floats(NOW - 7200, NOW + 7200), pick((NOW - 60, NOW + 3600, NOW + 600, 0.0)))
flash_sale = g.one_of(
    build(FlashSale, mix(pick(SALES), pick(("flash-new", "flash-2"))),
          g.one_of(g.lists(sale_sku, min_size=1, max_size=2), pick((("SKU-B", "SKU-D"), ("SKU-C",))), bad),
          window_time, window_time, mix(g.integers(0, 10)), store_quotas,
          customer_limit=mix(g.integers(0, 3)), pay_window=mix(g.floats(-1, 1000)), earmark=flag,
          max_km=mix(g.floats(-1, 100)), title=mix(g.text(max_size=8), extra=(HUGE * 2,))),
    g.builds(lambda sid, stores_: FlashSale(sid, ("SKU-B", "SKU-D"), NOW - 60, NOW + 4000, 6, stores_,
                                              customer_limit=3),
              pick(SALES), pick(((("SH-PEOPLE", 3), ("SH-PUDONG", 3)), (("SH-PEOPLE", 4), ("SH-PUDONG", 3),
                                                                        ("SH-XUHUI", 2))))),
    bad)
location_obj = g.one_of(
    build(Location, mix(pick(LOCATIONS), pick(("NEW-1", "NEW-2"))),
          g.one_of(pick(tuple(LocationKind)), pick(("store", "warehouse", 9)), bad), latitude, longitude,
          province_code=mix(g.integers(-1, 40)), prefecture_code=mix(g.integers(0, 10)),
          city=mix(g.text(max_size=6)), capabilities=mix(pick((1, 3, 7, "ship|pickup", ["ship"], 8, "fly"))),
          daily_capacity=mix(g.integers(-1, 300)), fixed_cost=mix(g.floats(-1, 20)),
          priority=mix(g.integers(-1, 1001)), franchise=flag, is_open=flag),
    bad)
locations_arg = g.one_of(g.lists(location_obj, min_size=1, max_size=2), bad,
                          g.just([Location("NEW-1", LocationKind.STORE, 31.0, 121.0)] * 2))


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


#: Event tables: valid ones and every way a table can be wrong.
EVENT_TABLES: tuple[pa.Table, ...] = (
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "qty": [3]}),
    pa.table({"location": ["SH-PEOPLE", "WH-JIADING"], "sku": ["SKU-B", "SKU-C"], "event": ["receive", "SALE"],
              "qty": [2, 1]}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "event": ["set"], "qty": [0], "safety": [0]}),
    pa.table({"location": pa.array([], pa.string()), "sku": pa.array([], pa.string()),
              "qty": pa.array([], pa.int64())}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "qty": [1.5]}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "qty": ["3"]}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "qty": ["three"]}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "qty": pa.array([2**63], pa.uint64())}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "event": ["adjust"], "qty": [2**63 - 1]}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "event": ["sale"], "qty": [10**6]}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "qty": [-5]}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "qty": [1], "safety": [-1]}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "event": ["steal"], "qty": [1]}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "event": [HUGE], "qty": [1]}),
    pa.table({"location": [HUGE], "sku": ["SKU-A"], "qty": [1]}),
    pa.table({"location": ["SH-PEOPLE"], "sku": [None], "qty": [1]}),
    pa.table({"location": [""], "sku": ["SKU-A"], "qty": [1]}),
    pa.table({"location": ["SH-PEOPLE"], "qty": [1]}),
    pa.table({"location": [1], "sku": [2], "qty": [1]}),
    pa.table({"location": pa.array([b"SH-PEOPLE"], pa.binary()), "sku": ["SKU-A"], "qty": [1]}),
    pa.table({"location": pa.array([b"\xff\xfe"], pa.binary()), "sku": ["SKU-A"], "qty": [1]}),
    pa.table({"location": pa.array(["SH-PEOPLE"]).dictionary_encode(), "sku": pa.array(["SKU-A"], pa.large_string()),
              "qty": pa.array([1], pa.int8())}),
    pa.table({"location": [["SH-PEOPLE"]], "sku": ["SKU-A"], "qty": [1]}),
    pa.table({"location": [{"a": 1}], "sku": ["SKU-A"], "qty": [1]}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "qty": [None]}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "qty": pa.array([1], pa.float16())}
             if hasattr(pa, "float16") else {"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "qty": [1]}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "qty": pa.array([1], pa.decimal128(5, 2))}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "qty": pa.array([True])}),
    pa.table({"location": ["SH-PEOPLE"], "sku": ["SKU-A"], "qty": pa.array([1], pa.timestamp("s"))}),
    pa.Table.from_arrays([pa.array(["SH-PEOPLE"]), pa.array(["SKU-A"]), pa.array([1]), pa.array([2])],
                         names=["location", "sku", "qty", "qty"]),
    pa.table({"location": ["SH-PEOPLE"] * 3, "sku": ["SKU-A", "SKU-Z", "SKU-A"], "qty": [1, 1, 1]}),
)
ARROW_IPC: tuple[bytes, ...] = tuple(_ipc(t) for t in EVENT_TABLES[:12]) + (
    b"", b"\x00not arrow" * 5, b"\xff" * 64, _ipc(EVENT_TABLES[0])[:40], _ipc(EVENT_TABLES[0]) + b"trailing",
    _ipc(pa.table({"x": [1]})), _ipc(EVENT_TABLES[13]), _ipc(EVENT_TABLES[18]), _ipc(EVENT_TABLES[28]),
    _ipc(EVENT_TABLES[29]), _ipc(EVENT_TABLES[20]), _ipc(EVENT_TABLES[22]))


@dataclasses.dataclass(frozen=True)
class TmpPath:
    """A path under the call's scratch directory (made at call time)."""

    name: str
    make: str = ""            # "", "dir", "file", "parquet", "csv", "garbage"

    def resolve(self, root: Path) -> Path:
        p = root / self.name
        if self.make == "dir":
            p.mkdir(parents=True, exist_ok=True)
        elif self.make == "file":
            p.write_text("not a directory")
        elif self.make == "parquet":
            pq.write_table(EVENT_TABLES[1], p)
        elif self.make == "csv":
            p.write_text("location,sku,qty\nSH-PEOPLE,SKU-A,2\nSH-PEOPLE,SKU-Z,x\n")
        elif self.make == "garbage":
            p.write_bytes(b"\x00\x01garbage" * 10)
        return p


def _frame(table: pa.Table) -> Any:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return table
    return table.to_pandas()


event_source = g.one_of(
    pick(EVENT_TABLES), pick(EVENT_TABLES[:3]), g.builds(lambda t: t.to_batches()[0] if t.num_rows else t,
                                                          pick(EVENT_TABLES[:3])),
    g.builds(_frame, pick(EVENT_TABLES[:5])),
    pick((TmpPath("ev.parquet", "parquet"), TmpPath("ev.csv", "csv"), TmpPath("ev.arrow", "garbage"),
          TmpPath("ev.parquet", "garbage"), TmpPath("missing.parquet"), TmpPath("adir.parquet", "dir"),
          TmpPath("ev.txt", "file"), "/nonexistent/x.parquet", "a\x00b.parquet", HUGE + ".csv")),
    bad)
directory = g.one_of(pick((TmpPath("snap-a", "dir"), TmpPath("snap-b"), TmpPath("afile", "file"),
                            TmpPath("deep/er/dir"), "", "a\x00b", HUGE, "/proc/pyomni-fuzz")), bad)
open_directory = g.one_of(pick((TmpPath("open-a"), TmpPath("open-b", "dir"), TmpPath("open-file", "file"))),
                           bad)


@dataclasses.dataclass(frozen=True)
class SavedDir:
    """The directory of a snapshot saved once per run (for ``load``)."""

    def __repr__(self) -> str:
        return "SavedDir()"


load_directory = g.one_of(g.just(SavedDir()), directory)


def _columns(orders: list[tuple[str, list[tuple[str, int]], float, float]]) -> tuple[Any, ...]:
    ids = [o[0] for o in orders]
    counts = [len(o[1]) for o in orders]
    skus_ = [s for o in orders for s, _ in o[1]]
    qtys_ = [q for o in orders for _, q in o[1]]
    return ids, counts, skus_, qtys_, [o[2] for o in orders], [o[3] for o in orders]


column_order = g.tuples(mix(pick(("c-1", "c-2", "o-live")), g.text("cq", min_size=1, max_size=3), bad_share=1),
                         g.lists(g.tuples(sku, qty), min_size=0, max_size=3), latitude, longitude)
route_columns_args = g.one_of(
    g.builds(_columns, g.lists(column_order, min_size=0, max_size=4)),
    g.builds(lambda cols, i, v: cols[:i] + (v,) + cols[i + 1:],
              g.builds(_columns, g.lists(column_order, min_size=1, max_size=3)), g.integers(0, 5),
              g.one_of(bad, pick(([-1], [2**40], np.array([1.5]), [1, -1], np.array([2**63], dtype=np.uint64))))))


@dataclasses.dataclass(frozen=True)
class Call:
    """One call: ``method`` (an Engine method, or a key of :data:`MODULE_SPECS`) with keyword arguments."""

    method: str
    kwargs: tuple[tuple[str, Any], ...]

    def __repr__(self) -> str:
        return f"{self.method}({', '.join(f'{k}={_short(v, 80)}' for k, v in self.kwargs)})"


#: Optional parameters always passed (left out, the call would wait for ever, as it should)
ALWAYS = {("wait_for_commit", "timeout"), ("wait_store_events", "timeout")}


def call_of(target: Callable[..., Any], method: str, params: dict[str, Gen],
            ignore: Sequence[str] = ()) -> Gen:
    """Calls of ``method``: every parameter of ``target``'s signature drawn from ``params`` (required ones
    always, optional ones present or not), so a new parameter without a strategy fails here."""
    sig = inspect.signature(target)
    required: dict[str, Gen] = {}
    optional: dict[str, Gen] = {}
    for name, p in sig.parameters.items():
        if name in ("self", "cls") or name in ignore:
            continue
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            optional[name] = params[name]
            continue
        if name not in params:
            raise KeyError(f"no strategy for parameter {name!r} of {method}: add one to the fuzzer's SPECS")
        always = p.default is inspect.Parameter.empty or (method, name) in ALWAYS
        (required if always else optional)[name] = params[name]

    def make(req: dict[str, Any], opt: dict[str, Any]) -> Call:
        extra = opt.pop(next((n for n, p in sig.parameters.items() if p.kind is inspect.Parameter.VAR_KEYWORD), ""),
                        {})
        return Call(method, tuple(req.items()) + tuple(sorted(opt.items())) + tuple(sorted(extra.items())))
    return g.builds(make, g.fixed_dictionaries(required), g.fixed_dictionaries({}, optional=optional))


# -- what each Engine method takes ---------------------------------------------------------------
COMMON: dict[str, Gen] = {
    "location": location, "sku": sku, "request_id": request_id, "reservation_id": reservation_id,
    "sale_id": sale_id, "customer": customer, "claim": claim_ref, "policy": policy, "qty": qty,
    "channel": g.one_of(g.none(), channel), "limit": mix(g.integers(-1, 30), extra=(1001, 2.0)),
}


def spec(**params: Gen) -> dict[str, Gen]:
    return {**COMMON, **params}


#: method -> its parameters' strategies (the rest come from COMMON)
SPECS: dict[str, dict[str, Gen]] = {
    "set_stock": spec(on_hand=count, safety=g.one_of(g.none(), count)),
    "adjust_stock": spec(delta=signed),
    "receive": spec(), "sell": spec(), "return_item": spec(),
    "set_safety": spec(safety=count),
    "transfer": spec(source=location, destination=location),
    "apply_stock_events": spec(source=event_source),
    "route_order": spec(order=any_order, ttl=g.one_of(g.none(), seconds), explain=flag),
    "route_orders": spec(orders=g.one_of(g.lists(any_order, max_size=3), bad),
                         request_ids=g.one_of(g.none(), g.lists(request_id, max_size=3), bad),
                         policies=g.one_of(g.none(), g.lists(policy, max_size=3), bad),
                         ttls=g.one_of(g.none(), g.lists(g.one_of(g.none(), seconds), max_size=3), bad)),
    "route_columns": spec(),        # positional columns come together: see _route_columns_calls
    "quote": spec(order=any_order),
    "reserve_plan": spec(order=any_order, shipments=plan),
    "confirm": spec(), "release": spec(),
    "reroute": spec(rejected_by=location),
    "expire_due": spec(),
    "upsert_locations": spec(locations=locations_arg),
    "register_policy": spec(policy=routing_policy),
    "set_channel_rule": spec(channel=channel, rule=channel_rule),
    "register_skus": spec(skus=g.one_of(g.lists(mix(pick(SKUS), g.text("SKU-XY", min_size=1, max_size=8)),
                                                  max_size=3), bad)),
    "set_location_open": spec(is_open=flag),
    "set_daily_capacity": spec(capacity=count),
    "new_day": spec(),
    "reservation": spec(),
    "reservations": spec(state=state, after=g.one_of(g.none(), reservation_id),
                         limit=g.one_of(g.none(), COMMON["limit"])),
    "remembered": spec(request_id=mix(pick(REQUEST_IDS))),
    "stock": spec(), "availability": spec(),
    "available": spec(location=g.one_of(g.none(), location)),
    "available_near": spec(near=point, radius_km=mix(g.floats(0, 5000))),
    "find_pickup_locations": spec(lines=lines, near=point, radius_km=mix(g.floats(0, 5000))),
    "channel_feed": spec(scope=mix(pick(("network", "location"))), interval_ms=mix(g.floats(1, 100)),
                         start=flag),
    "stock_table": spec(), "stats": spec(), "state": spec(), "journal_stats": spec(), "check_invariants": spec(),
    "wait_for_commit": spec(after=mix(g.integers(-2, 40)),
                            timeout=g.one_of(pick((0, 0.0, 0.001)), pick((-1, math.nan, math.inf, 1e300, "1", True)))),
    "wait_durable": spec(lsn=mix(g.integers(-2, 40))),
    "policy": spec(key=policy),
    "create_sale": spec(sale=flash_sale), "update_sale": spec(sale=flash_sale), "end_sale": spec(),
    "sale": spec(), "sales": spec(), "sale_counters": spec(),
    "claim": spec(sku=sale_sku, store=g.one_of(g.none(), store), near=g.one_of(g.none(), point)),
    "claim_many": spec(customers=g.one_of(g.lists(customer, max_size=3), bad),
                       skus=g.one_of(sale_sku, g.lists(sale_sku, max_size=3)),
                       qtys=g.one_of(g.none(), g.lists(qty, max_size=3), bad,
                                      pick((np.array([1, 2]), np.array([1.5]), np.array([2**64 - 1], np.uint64)))),
                       stores=g.one_of(g.none(), g.lists(g.one_of(g.none(), g.just(""), store), max_size=3),
                                        bad),
                       near=g.one_of(g.none(), g.lists(point, max_size=3), bad, pick((np.zeros((1, 2)),))),
                       request_ids=g.one_of(g.none(), g.lists(request_id, max_size=3), bad), wait=flag),
    "confirm_claim": spec(), "release_claim": spec(), "get_claim": spec(),
    "claims": spec(state=state, after=g.one_of(g.none(), claim_ref), limit=COMMON["limit"]),
    "save": spec(directory=g.one_of(g.none(), directory)),
    "load": spec(directory=load_directory, clock=mix(g.just(FixedClock())), native=g.one_of(g.none(), flag)),
    "open": spec(directory=open_directory, network=g.one_of(g.none(), g.just(make_city_net()), bad),
                 fsync=mix(pick(("never", "interval", "always"))), interval_ms=mix(g.floats(0.5, 50)),
                 clock=mix(g.just(FixedClock())), native=g.one_of(g.none(), flag),
                 segment_bytes=mix(pick((4096, 1 << 20))),
                 options=g.one_of(g.just({}), g.just({"reservation_ttl": 60.0}), g.just({"bogus": 1}),
                                   g.just({"reservation_ttl": -1}), g.just({"channels": "tmall"}))),
    # the store side
    "set_store_rules": spec(location=g.one_of(g.none(), location), rules=store_rules),
    "store_rules": spec(location=g.one_of(g.none(), location)),
    "register_attribution_rule": spec(rule=attribution_rule),
    "set_attribution": spec(channel=g.one_of(g.none(), channel), rule=g.one_of(g.none(), rule_key)),
    "attribution_rule": spec(key=g.one_of(g.none(), rule_key)),
    "attribution_rules": spec(),
    "store_action": spec(shipment_id=shipment_id, action=store_action, reason=g.one_of(g.none(), reject_reason),
                         note=note),
    "accept_shipment": spec(shipment_id=shipment_id), "pick_shipment": spec(shipment_id=shipment_id),
    "pack_shipment": spec(shipment_id=shipment_id), "ship_shipment": spec(shipment_id=shipment_id),
    "ready_shipment": spec(shipment_id=shipment_id), "collect_shipment": spec(shipment_id=shipment_id),
    "reject_shipment": spec(shipment_id=shipment_id, reason=reject_reason, note=note),
    "return_line": spec(shipment_id=shipment_id, sku=mix(pick(("SKU-B", "SKU-C")), pick(SKUS))),
    "resolve_exception": spec(exception_id=exception_id, retry=flag, note=note),
    "shipment": spec(shipment_id=shipment_id),
    "shipments": spec(location=g.one_of(g.none(), location), open_only=flag,
                      order_id=g.one_of(g.none(), mix(pick(("o-live", "o-paid", "o-rare", "o-none")))),
                      after=g.one_of(g.none(), shipment_id)),
    "store_events": spec(locations=store_locations, after=mix(g.integers(0, 30), extra=(2**63,))),
    "wait_store_events": spec(locations=store_locations, after=mix(g.integers(0, 30), extra=(2**63,)),
                              timeout=g.one_of(pick((0, 0.0, 0.001)),
                                               pick((-1, math.nan, math.inf, 1e300, "1", True)))),
    "order_exceptions": spec(state=exception_state),
    "returns": spec(), "discrepancies": spec(), "settlement_facts": spec(),
    "settlement": spec(day=settlement_day, entries=flag),
}
#: Engine methods not fuzzed, and why.
EXCLUDED = {
    # ends the engine's life: every later call of the example would fail with FailedPrecondition
    # (closing, and calls on a closed engine, are covered by tests/test_durability.py)
    "close": "ends the engine",
}
#: Methods that only read: they must not change the state even when they succeed.
QUERIES = {"reservation", "reservations", "remembered", "stock", "availability", "available", "available_near",
           "find_pickup_locations", "quote", "stock_table", "stats", "state", "journal_stats", "check_invariants",
           "policy", "sale", "sales", "sale_counters", "get_claim", "claims", "save", "load", "wait_for_commit",
           "wait_durable", "Order", "Line", "FlashSale", "RoutingPolicy", "ChannelRule", "Location", "Engine",
           "demo_network", "demo_stock", "demo_orders", "Capability.parse", "Network.from_locations",
           "Network.from_records", "feed",
           "store_rules", "attribution_rule", "attribution_rules", "shipment", "shipments", "store_events",
           "wait_store_events", "order_exceptions", "returns", "discrepancies", "settlement_facts", "settlement"}
#: How often each call comes, in slots of a draw (Engine methods 4, module functions 2 unless said here):
#: the slow ones (files, threads, new engines) less often
WEIGHTS = {"save": 1, "load": 1, "open": 1, "channel_feed": 2, "feed": 2, "demo_network": 1, "demo_stock": 1,
           "demo_orders": 1, "config": 1, "set_config": 1}


def engine_methods() -> list[str]:
    """Every public method of :class:`pyomni.Engine` (functions and class methods, not properties)."""
    out = []
    for name in dir(pyomni.Engine):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(pyomni.Engine, name)
        if isinstance(attr, (classmethod, staticmethod)) or inspect.isfunction(attr):
            out.append(name)
    return out


# -- module functions and value classes (what pyomni exports) --------------------------------------
small_network = g.sampled_from(("live", "demo"))
MODULE_SPECS: dict[str, tuple[Callable[..., Any], dict[str, Gen]]] = {
    "Order": (Order, {"id": mix(pick(("o-1",))), "lines": lines, "destination": point, "pickup_location": location,
                      "fulfilment": fulfilment, "channel": channel, "max_splits": mix(g.integers(0, 4)),
                      "max_distance_km": mix(g.floats(0, 100)), "excluded_locations": excluded,
                      "coupon_cents": price, "attribution": g.one_of(g.none(), rule_key),
                      "selling_store": g.one_of(g.none(), location)}),
    "Line": (Line, {"sku": sku, "qty": qty, "unit_price_cents": price}),
    "FlashSale": (FlashSale, {"id": mix(pick(SALES)), "skus": g.one_of(g.lists(sale_sku, max_size=2), bad),
                              "starts_at": window_time, "ends_at": window_time, "quota": mix(g.integers(0, 9)),
                              "stores": store_quotas, "customer_limit": mix(g.integers(0, 3)),
                              "pay_window": mix(g.floats(-1, 100)), "earmark": flag, "max_km": mix(g.floats(-1, 9)),
                              "title": mix(g.text(max_size=4))}),
    "RoutingPolicy": (RoutingPolicy, {"name": mix(pick(("p",))), "version": mix(g.integers(0, 3)),
                                      "cost_per_km": mix(g.floats(0, 1)), "circuity": mix(g.floats(0, 2)),
                                      "split_penalty": mix(g.floats(0, 1)), "low_stock_weight": mix(g.floats(0, 1)),
                                      "load_weight": mix(g.floats(0, 1)), "priority_weight": mix(g.floats(0, 1)),
                                      "max_splits": mix(g.integers(0, 17)), "max_distance_km": mix(g.floats(0, 9)),
                                      "same_day_max_km": mix(g.floats(0, 9)),
                                      "plan_objective": mix(pick(("cheapest", "fewest_shipments"))),
                                      "exact_plans": mix(pick((True, False)))}),
    "ChannelRule": (ChannelRule, {"share": mix(g.floats(0, 1.2)), "buffer": count}),
    "Location": (Location, {"id": mix(pick(("L-1",))), "kind": mix(pick(tuple(LocationKind))), "lat": latitude,
                            "lon": longitude, "province_code": count, "prefecture_code": count,
                            "city": mix(g.text(max_size=3)), "capabilities": mix(pick((1, 3))),
                            "daily_capacity": count, "fixed_cost": mix(g.floats(0, 9)), "priority": count,
                            "franchise": flag, "is_open": flag}),
    "Engine": (pyomni.Engine, {"network": g.one_of(g.just("live-network"), bad), "policy": routing_policy,
                               "clock": mix(g.just(FixedClock())), "reservation_ttl": seconds,
                               "channels": g.one_of(g.none(), g.just({"tmall": ChannelRule()}),
                                                     g.just({"": ChannelRule()}), g.just({"x": 0.5}), bad),
                               "native": g.one_of(g.none(), flag), "max_request_ids": count,
                               "request_id_ttl": seconds}),
    "demo_network": (pyomni.demo_network, {"stores": mix(g.integers(0, 6)), "warehouses": mix(g.integers(0, 2)),
                                           "skus": mix(g.integers(0, 5)), "dark_stores": mix(g.integers(0, 2)),
                                           "seed": mix(g.integers(0, 3))}),
    "demo_stock": (pyomni.demo_stock, {"network": g.one_of(small_network, bad), "density": mix(g.floats(0, 1.2)),
                                       "seed": mix(g.integers(0, 3))}),
    "demo_orders": (pyomni.demo_orders, {"network": g.one_of(small_network, bad), "n": mix(g.integers(0, 4)),
                                         "seed": mix(g.integers(0, 3)), "max_lines": mix(g.integers(0, 4))}),
    "set_config": (pyomni.set_config, {"native": g.one_of(g.none(), flag)}),
    "config": (pyomni.config, {}),
    "Capability.parse": (pyomni.Capability.parse, {"value": mix(pick((1, 7, "ship|pickup", ["ship"], "fly", 9)))}),
    "Network.from_locations": (pyomni.Network.from_locations, {"locations": locations_arg,
                                                               "skus": g.one_of(g.just(SKUS), bad)}),
    "Network.from_records": (pyomni.Network.from_records,
                             {"records": g.one_of(g.lists(g.fixed_dictionaries(
                                 {"id": location, "lat": latitude, "lon": longitude},
                                 optional={"kind": mix(pick(("store", "warehouse"))), "priority": count,
                                           "capabilities": mix(pick(("ship", 3)))}), max_size=2), bad),
                              "skus": g.one_of(g.just(SKUS), g.lists(sku, max_size=2), bad)}),
    # a live feed of the engine, then a follow / export / table on it with fuzzed arguments
    "feed": (lambda channel, epoch, after, timeout, path: None,
             {"channel": g.one_of(g.none(), channel), "epoch": g.one_of(g.none(), g.just("own"), bad),
              "after": mix(g.integers(-1, 5)),
              # never None: following a feed nobody publishes to would wait for ever (by design)
              "timeout": g.one_of(pick((0, 0.001)), pick((-1, math.nan, math.inf, 1e300, "1", True, [], b"1"))),
              "path": g.one_of(pick((TmpPath("feed.parquet"), TmpPath("nodir/feed.parquet"),
                                      TmpPath("fdir", "dir"))), bad)}),
}
#: What pyomni exports that is not fuzzed, and why.
MODULE_EXCLUDED = {
    "Engine": "fuzzed method by method (and its constructor as MODULE_SPECS['Engine'])",
    "Network": "not constructible directly (Network() is a TypeError by design); its from_* builders are fuzzed",
    "Client": "needs a server: the RPC fuzzer covers the service it talks to",
    "errors": "a module",
}


def exported_callables() -> list[str]:
    """Names in ``pyomni.__all__`` that take input: functions and classes, but not enums, constants or the
    answers the engine builds (:data:`ANSWER_TYPES`)."""
    out = []
    for name in pyomni.__all__:
        obj = getattr(pyomni, name)
        if not callable(obj) or (isinstance(obj, type) and issubclass(obj, int)) or name in ANSWER_TYPES:
            continue
        out.append(name)
    return out


#: Exported classes that are answers (the engine builds them; no public method takes one).
ANSWER_TYPES = {"Allocation", "Candidate", "CostBreakdown", "Explanation", "NearbyStock", "PickupOption",
                "Reservation", "Shipment", "ShortLine", "StockLevel", "Claim", "ClaimResults", "SaleCounters",
                "StoreCounters"}


def _route_columns_calls() -> Gen:
    names = ("order_ids", "line_counts", "skus", "qtys", "lat", "lon")
    return g.builds(lambda cols, kw: Call("route_columns", tuple(zip(names, cols)) + tuple(sorted(kw.items()))),
                     route_columns_args,
                     g.fixed_dictionaries({}, optional={
                         "channels": g.one_of(channel, g.lists(channel, max_size=3)),
                         "request_ids": g.one_of(g.lists(request_id, max_size=4), bad), "policy": policy,
                         "ttl": g.one_of(g.none(), seconds)}))


def engine_calls() -> Seeded:
    """The maker of calls of every public Engine method, module function and value class: seed -> call."""
    methods = engine_methods()
    unspecified = set(methods) - set(SPECS) - set(EXCLUDED)
    if unspecified:
        raise KeyError(f"Engine methods without a fuzzing spec: {sorted(unspecified)} (add them to SPECS, or to "
                       "EXCLUDED with the reason)")
    exported = set(exported_callables()) - set(MODULE_SPECS) - set(MODULE_EXCLUDED)
    if exported:
        raise KeyError(f"pyomni exports without a fuzzing spec: {sorted(exported)}")
    options = []
    for name in methods:
        if name in EXCLUDED:
            continue
        strategy = _route_columns_calls() if name == "route_columns" else \
            call_of(getattr(pyomni.Engine, name), name, SPECS[name])
        options += [strategy] * WEIGHTS.get(name, 4)
    for name, (target, params) in MODULE_SPECS.items():
        options += [call_of(target, name, params)] * WEIGHTS.get(name, 2)
    options.append(g.builds(lambda dt: Call("tick", (("seconds", dt),)), g.floats(0, 2000)))
    return Seeded(options)


# -- running calls ---------------------------------------------------------------------------------------
MAX_MESSAGE = 1000       # grpc_server.status.MAX_MESSAGE: what the service sends back at most


def fingerprint(eng: pyomni.Engine) -> tuple:
    """Everything observable about an engine's state, cheaply (arrays as bytes)."""
    s = eng.state()
    # a cell counted down to all zeros is the same as no cell, and a snapshot does not carry it (as in
    # tests/test_durability.py): compare the cells that hold something, and not the count of cells
    kept = (s.on_hand != 0) | (s.reserved != 0) | (s.safety != 0)
    cells = tuple(a[kept].tobytes() for a in (s.loc, s.sku, s.on_hand, s.reserved, s.safety))
    arrays = cells + tuple(a.tobytes() for a in (s.held, s.confirmed, s.capabilities, s.is_open, s.daily_capacity))
    stats = eng.stats()
    stats.pop("memory_bytes")
    stats.pop("bytes_per_cell")
    stats.pop("cells")
    sales = tuple(eng.sales())
    counters = tuple(eng.sale_counters(x.id) for x in sales)
    claims = tuple(tuple(eng.claims(x.id)) for x in sales)
    net = eng.network
    network = (net.ids, net.city, *(getattr(net, a).tobytes() for a in _NETWORK_ARRAYS))
    stores = (eng.store_seq, tuple(eng.shipments(open_only=False, limit=100_000)), tuple(eng.order_exceptions(None)),
              tuple(eng.returns()), eng.settlement_facts().num_rows, eng.discrepancies().num_rows,
              eng.store_rules(), tuple(eng.attribution_rules()))
    return (eng.lsn, s.seq, arrays, tuple(sorted(stats.items(), key=str)), tuple(eng.reservations()), eng.skus,
            eng.network.ids, sales, counters, claims, network, stores)


_NETWORK_ARRAYS = ("kind", "lat", "lon", "province_code", "prefecture_code", "capabilities", "daily_capacity",
                   "fixed_cost", "priority", "franchise", "is_open")


@dataclasses.dataclass
class Violation:
    what: str
    call: str
    detail: str

    def line(self) -> str:
        return f"{self.what}: {self.call}\n{self.detail}"


class ViolationError(AssertionError):
    pass


class CallHung(BaseException):
    """Raised in the main thread by the watchdog when one call takes longer than the checker allows."""


@contextlib.contextmanager
def watchdog(seconds: float | None) -> Iterator[None]:
    """Interrupt the main thread with :class:`CallHung` after ``seconds`` (a blocked lock wait included)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise CallHung(f"no answer in {seconds} s")
    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Checker:
    """Runs calls and checks the rule; counts calls and outcomes."""

    def __init__(self, *, collect: bool = False, saved: Path | None = None, call_seconds: float | None = 60.0) -> None:
        self.collect = collect
        self.call_seconds = call_seconds        # a call running longer is a violation (it hung)
        self.saved = saved             # a directory with a snapshot, for load()
        self.calls = 0
        self.rpcs = 0
        self.ok = 0
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.by_method: collections.Counter[str] = collections.Counter()
        self.violations: list[Violation] = []
        self._scratch = 0

    def violation(self, what: str, call: Any, detail: str) -> None:
        v = Violation(what, repr(call)[:2000], detail[:4000])
        self.violations.append(v)
        if not self.collect:
            raise ViolationError(v.line())

    # -- in process --------------------------------------------------------------------------------
    def run_engine(self, live: Live, calls: Sequence[Call]) -> None:
        eng = live.engine
        before: tuple | None = None
        for call in calls:
            if before is None:
                before = fingerprint(eng)
            self.calls += 1
            try:
                with watchdog(self.call_seconds):
                    result = self._invoke(live, call)
            except CallHung as exc:
                self.outcomes["hung"] += 1
                self.violation("hung", call, str(exc) + "\n" + "".join(traceback.format_tb(exc.__traceback__)[-6:]))
                before = None
                continue
            except errors.PyomniError as exc:
                self.outcomes[type(exc).__name__] += 1
                self.by_method[f"{call.method} {type(exc).__name__}"] += 1
                self._check_error(exc, call)
                after = fingerprint(eng)
                if after != before:
                    self.violation("state changed by a failed call", call, _diff(before, after))
                before = after
            except Exception as exc:        # noqa: BLE001 -- the rule: never anything but a PyomniError
                self.outcomes[f"untyped {type(exc).__name__}"] += 1
                self.by_method[f"{call.method} untyped"] += 1
                self.violation(f"untyped {type(exc).__name__}", call, traceback.format_exc())
                before = None
            else:
                self.ok += 1
                self.outcomes["ok"] += 1
                self.by_method[f"{call.method} ok"] += 1
                self._dispose(live, result)
                if call.method in QUERIES:
                    after = fingerprint(eng)
                    if after != before:
                        self.violation("state changed by a query", call, _diff(before, after))
                    before = after
                else:
                    before = None
            try:
                eng.check_invariants()
            except Exception:               # noqa: BLE001
                self.violation("invariant broken", call, traceback.format_exc())
                return

    def check_recovery(self, live: Live) -> None:
        """A journaled engine, closed and loaded again from its directory, is the engine it was (everything the
        calls did was recorded as it was applied, and replays)."""
        if live.kind != "journal":
            return
        before = fingerprint(live.engine)
        live.engine.close()
        try:
            again = pyomni.Engine.load(live.tmp / "journal", clock=FixedClock(live.clock.now))
        except Exception:           # noqa: BLE001
            self.violation("the journal does not recover", "Engine.load", traceback.format_exc())
            return
        after = fingerprint(again)
        if after != before:
            self.violation("the journal recovers another state", "Engine.load", _diff(before, after))

    def _check_error(self, exc: errors.PyomniError, call: Any) -> None:
        if isinstance(exc, errors.InvariantViolation):      # a bug by definition: never an answer to bad input
            self.violation("InvariantViolation raised", call, "".join(traceback.format_exception(exc))[-3000:])
        text = str(exc)
        if len(text) > MAX_MESSAGE:
            self.violation(f"message of {len(text)} characters", call, text[:300])
        if exc.field is not None and (not isinstance(exc.field, str) or len(exc.field) > 200):
            self.violation("unbounded field", call, repr(exc.field)[:300])
        if not isinstance(exc.reason, str) or not exc.reason:
            self.violation("no reason", call, repr(exc))

    def _resolve(self, live: Live, value: Any) -> Any:
        if type(value) is TmpPath:
            self._scratch += 1
            root = live.tmp / f"c{self._scratch}"
            root.mkdir(parents=True, exist_ok=True)
            return value.resolve(root)
        if type(value) is SavedDir:
            return self.saved if self.saved is not None else live.tmp / "never-saved"
        if isinstance(value, FixedClock):
            return FixedClock()
        if type(value) is str and value == "live-network":
            return live.engine.network
        return materialize(value)

    def _invoke(self, live: Live, call: Call) -> Any:
        eng = live.engine
        kwargs = {k: self._resolve(live, v) for k, v in call.kwargs}
        name = call.method
        if name == "tick":
            live.clock.now += kwargs["seconds"]
            return eng.expire_due()              # the sweeper: nothing is left due for the next call
        if name in ("demo_stock", "demo_orders") and type(kwargs.get("network")) is str \
                and kwargs["network"] in ("live", "demo"):
            kwargs["network"] = eng.network if kwargs["network"] == "live" else _DEMO_NET
        if name == "feed":
            return self._feed(live, **kwargs)
        if name == "set_config":
            saved = pyomni.config()["native"]
            try:
                return pyomni.set_config(**kwargs)
            finally:
                pyomni.set_config(native=saved)
        if name in MODULE_SPECS:
            return MODULE_SPECS[name][0](**kwargs)
        return getattr(eng, name)(**kwargs)

    def _feed(self, live: Live, channel: Any = None, epoch: Any = None, after: Any = 0, timeout: Any = 0,
              path: Any = None) -> Any:
        feed = live.engine.channel_feed(channel, start=False)
        try:
            feed.publish()
            if type(epoch) is str and epoch == "own":
                epoch = feed.epoch
            got = []
            for run in feed.follow(epoch, after, timeout=timeout):
                got.append(run)
                if len(got) >= 2:
                    break
            feed.table()
            if path is not None:
                feed.export(path)
            return got
        finally:
            feed.close()

    @staticmethod
    def _dispose(live: Live, result: Any) -> None:
        if isinstance(result, ChannelFeed):
            result.close()
        elif isinstance(result, pyomni.Engine) and result is not live.engine:
            result.close()

    # -- over gRPC ---------------------------------------------------------------------------------
    def run_rpcs(self, channel: grpc.Channel, live: Live, calls: Sequence[RpcCall]) -> None:
        eng = live.engine
        before: tuple | None = None
        for call in calls:
            if before is None:
                before = fingerprint(eng)
            self.rpcs += 1
            try:
                outcome, answered = call.invoke(channel)
            except Exception:               # noqa: BLE001 -- a client-side failure is a failure of the test
                self.violation("the call could not be made", call, traceback.format_exc())
                before = None
                continue
            failed = outcome.code is not None and not outcome.ours
            code = outcome.code.name if failed else "OK"    # type: ignore[union-attr]
            self.outcomes[f"rpc {code}"] += 1
            self.by_method[f"{call.method.name} {code}"] += 1
            if failed:
                problem = _status_problem(outcome)
                if problem:
                    self.violation(problem, call, outcome.describe())
                if _applied_before(call, outcome, answered) == 0:
                    after = fingerprint(eng)
                    if after != before:
                        self.violation("state changed by a failed RPC", call,
                                       _diff(before, after) + "\n" + outcome.describe())
                    before = after
                else:
                    before = None           # a stream's messages before the bad one stay applied
            elif call.mutates:
                before = None
            else:
                after = fingerprint(eng)
                if after != before:
                    self.violation("state changed by a read RPC", call, _diff(before, after))
                before = after
            try:
                eng.check_invariants()
            except Exception:               # noqa: BLE001
                self.violation("invariant broken", call, traceback.format_exc())
                return

    def check_server(self, channel: grpc.Channel, workers: int = 8, seconds: float = 3.0) -> None:
        """Every handler thread of the server comes back: ``workers`` concurrent Echo calls are answered within
        ``seconds`` (a call that ended -- by its deadline, say -- must not keep its thread)."""
        echo = channel.unary_unary("/pyomni.v1.DiagnosticsService/Echo",
                                   request_serializer=diagnostics_pb2.EchoRequest.SerializeToString,
                                   response_deserializer=diagnostics_pb2.EchoResponse.FromString)
        calls = [echo.future(diagnostics_pb2.EchoRequest(payload=b"ping"), timeout=seconds) for _ in range(workers)]
        for c in calls:
            try:
                c.result()
            except grpc.RpcError as exc:
                self.violation("the server's threads do not come back", f"Echo x {workers}",
                               f"{exc.code()} {exc.details()}")
                return

    def summary(self) -> str:
        lines = [f"{self.calls:,} engine calls, {self.rpcs:,} RPCs, {len(self.violations)} violations"]
        for what, n in sorted(self.outcomes.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {n:>9,}  {what}")
        return "\n".join(lines)


def _diff(a: tuple, b: tuple) -> str:
    names = ("lsn", "seq", "arrays", "stats", "reservations", "skus", "locations", "sales", "counters", "claims",
             "network", "stores")
    return "differs in: " + ", ".join(n for n, x, y in zip(names, a, b) if x != y)


_DEMO_NET = pyomni.demo_network(stores=4, warehouses=1, skus=3, seed=1)


# -- RPCs --------------------------------------------------------------------------------------------------
SERVICES = (inventory_pb2, routing_pb2, selling_pb2, diagnostics_pb2, stores_pb2)
#: RPCs that only read (the state must not change even when they succeed)
READ_RPCS = {"GetStock", "GetAvailability", "FindNearbyStock", "FindPickupLocations", "QuoteOrder", "GetReservation",
             "ListReservations", "GetFlashSale", "ListFlashSales", "GetClaim", "WatchFlashSale", "Echo",
             "ExportAvailability", "WatchAvailability", "WatchStoreOrders", "GetShipment", "ListShipments",
             "ListOrderExceptions", "GetStoreRules", "ExportSettlement"}
#: Streams that answer until the caller stops: how long to read, and how often to call them (they cost that)
WATCH_SECONDS = 0.05
RPC_WEIGHTS = {"WatchFlashSale": 1, "WatchAvailability": 1, "ExportAvailability": 2, "WatchStoreOrders": 1,
               "ExportSettlement": 2}


@dataclasses.dataclass(frozen=True)
class RpcMethod:
    service: str
    name: str
    path: str
    request: Any                  # the message class
    response: Any
    client_streaming: bool
    server_streaming: bool


def rpc_methods() -> list[RpcMethod]:
    """Every RPC of every service in ``pyomni.v1`` (from the generated descriptors)."""
    out = []
    for module in SERVICES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                out.append(RpcMethod(service.full_name, m.name, f"/{service.full_name}/{m.name}",
                                     message_factory.GetMessageClass(m.input_type),
                                     message_factory.GetMessageClass(m.output_type),
                                     m.client_streaming, m.server_streaming))
    return out


@dataclasses.dataclass
class Outcome:
    code: grpc.StatusCode | None          # None: OK
    details: str = ""
    trailers: Any = None
    status: Any = None                    # the parsed google.rpc.Status
    ours: bool = False                    # our own deadline or cancellation ended a stream we stopped reading
    error: str = ""

    def describe(self) -> str:
        return f"code={self.code} details={self.details[:300]!r} status={str(self.status)[:500]} {self.error}"


_FD = pb_descriptor.FieldDescriptor
_INT_BOUNDS = {_FD.TYPE_INT32: (-(2**31), 2**31 - 1), _FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
               _FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1), _FD.TYPE_INT64: (-(2**63), 2**63 - 1),
               _FD.TYPE_SINT64: (-(2**63), 2**63 - 1), _FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
               _FD.TYPE_UINT32: (0, 2**32 - 1), _FD.TYPE_FIXED32: (0, 2**32 - 1), _FD.TYPE_UINT64: (0, 2**64 - 1),
               _FD.TYPE_FIXED64: (0, 2**64 - 1)}
_FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 31.2304, 121.4737, 90.0, 180.0, -90.0, -180.0, 90.0001, 1e300, -1e300,
           5e-324, math.nan, math.inf, -math.inf, NOW, NOW + 600, NOW - 600)
_TOKENS = ("cHlvbW5pLnYxOlIwMDAwMDAwMDAx", "cHlvbW5pLnYxOmZsYXNoLTE=", "not base64!", "AAAA", "cHlvbW5pLnYxOg==",
           "cHlvbW5pLnYx" * 100)
#: string pools by field name (the rest get generic strings)
_STRING_POOLS: dict[str, tuple[str, ...]] = {
    "location": LOCATIONS, "store": STORES + LOCATIONS[2:4], "stores": STORES, "rejected_by": LOCATIONS,
    "pickup_location": LOCATIONS, "excluded_locations": LOCATIONS, "location_ids": LOCATIONS,
    "sku": SKUS, "skus": SKUS, "reservation_id": RESERVATIONS, "claim_id": CLAIMS, "sale_id": SALES,
    "customer": CUSTOMERS, "customers": CUSTOMERS, "request_id": REQUEST_IDS, "request_ids": REQUEST_IDS,
    "channel": CHANNELS, "channels": CHANNELS, "policy": POLICY_KEYS, "page_token": _TOKENS,
    "order_ids": ("c-1", "c-2", "o-live"), "epoch": ("", "0123456789abcdef"),
    "shipment_id": SHIPMENTS, "exception_id": EXCEPTIONS, "locations": STORES, "day": DAYS, "rule": RULE_KEYS,
    "attribution": RULE_KEYS, "selling_store": STORES, "home": ("nearest", "region"),
    "name": ("r-1", "r-2", "split-361", "fulfiller"),
}
#: strings any field may get: empty, huge, NUL, controls, odd Unicode (protobuf strings are valid UTF-8)
_ODD_STRINGS = ("", HUGE, "a\x00b", "\x1b[2J", "tab\t", "Ω≈ç√", "🛒" * 3, " ", "R" + "0" * 300, "C0000000001")
_BYTES = (b"", b"\x00" * 16, b"\xff" * 32, b"payload", bytes(range(256)))


def _string_pool(name: str, message: str) -> tuple[str, ...] | None:
    if name == "id":
        return {"FlashSale": SALES, "Location": ("NEW-1", "NEW-2") + LOCATIONS[:2], "Order": ("o-1", "o-2", "o-3")
                }.get(message, ("o-1", "o-live"))
    return _STRING_POOLS.get(name)


#: numbers a valid request would carry, by field name (the rest: small non-negative ones)
_VALID_NUMBERS: dict[str, Gen] = {
    "qty": g.integers(1, 3), "qtys": g.integers(1, 3), "quota": g.integers(1, 6), "customer_limit": g.integers(1, 3),
    "latitude": g.floats(31.1, 31.4), "longitude": g.floats(121.3, 121.6), "latitudes": g.floats(31.1, 31.4),
    "longitudes": g.floats(121.3, 121.6), "radius_km": g.floats(1, 100), "limit": g.integers(0, 20),
    "page_size": g.integers(0, 4), "ttl_seconds": g.floats(0, 600), "start_time": g.floats(NOW - 100, NOW),
    "end_time": g.floats(NOW + 100, NOW + 5000), "pay_window_seconds": g.floats(0, 900), "max_km": g.floats(0, 50),
    "max_splits": g.integers(0, 3), "max_distance_km": g.floats(0, 3000), "safety": g.integers(0, 3),
    "response_bytes": g.integers(0, 64), "after_sequence": g.integers(0, 5), "min_interval_ms": g.integers(0, 20),
    "daily_capacity": g.integers(0, 100), "fixed_cost": g.floats(0, 10), "priority": g.integers(0, 3),
    "province_code": g.integers(0, 40), "prefecture_code": g.integers(0, 9999), "line_counts": g.integers(1, 2),
    "heartbeat_seconds": g.floats(0.05, 1), "after_seq": g.integers(0, 12), "open_minute": g.integers(0, 600),
    "close_minute": g.integers(700, 1440), "utc_offset_minutes": g.integers(-60, 480),
    "closed_weekdays": g.integers(1, 7), "answer_seconds": g.floats(1, 900), "pick_seconds": g.floats(1, 7200),
    "same_day_answer_seconds": g.floats(1, 300), "same_day_pick_seconds": g.floats(1, 1800),
    "collect_days": g.integers(1, 3), "return_days": g.integers(0, 30), "fee_cents": g.integers(0, 500),
    "unit_price_cents": g.integers(0, 5000), "coupon_cents": g.integers(0, 100), "version": g.integers(0, 3),
}


def _valid_field(f: Any, depth: int) -> Gen:
    """A value a well-formed request would carry in field ``f``."""
    t = f.type
    if t == _FD.TYPE_MESSAGE:
        return valid_message(f.message_type, depth + 1)
    if t == _FD.TYPE_ENUM:
        return pick([v.number for v in f.enum_type.values])
    if t == _FD.TYPE_BOOL:
        return g.booleans()
    if t == _FD.TYPE_STRING:
        if f.name in ("request_id", "request_ids"):       # mostly new ones (a reused one is refused)
            return g.one_of(g.text("abcdef0123", min_size=6, max_size=8), g.text("abcdef0123", min_size=6,
                                                                                max_size=8), pick(REQUEST_IDS))
        pool = _string_pool(f.name, f.containing_type.name)
        return pick(pool) if pool else g.text("ab", max_size=3)
    if t == _FD.TYPE_BYTES:
        return pick(ARROW_IPC[:3]) if f.name == "arrow_ipc" else pick(_BYTES)
    return _VALID_NUMBERS.get(f.name, g.integers(0, 3) if t not in (_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT)
                              else g.floats(0, 10))


def _any_field(f: Any, depth: int) -> Gen:
    """Any value of field ``f``'s wire type: bounds, unknown enum numbers, odd strings, garbage bytes."""
    t = f.type
    if t == _FD.TYPE_MESSAGE:
        return message_of(f.message_type, depth + 1)
    if t == _FD.TYPE_ENUM:
        return g.one_of(pick([v.number for v in f.enum_type.values]), pick((99, -1, 2**31 - 1, -(2**31))))
    if t == _FD.TYPE_BOOL:
        return g.booleans()
    if t == _FD.TYPE_STRING:
        pool = _string_pool(f.name, f.containing_type.name)
        generic = g.one_of(pick(_ODD_STRINGS), g.text("ab-1", max_size=4))
        return g.one_of(pick(pool), generic) if pool else generic
    if t == _FD.TYPE_BYTES:
        return pick(ARROW_IPC) if f.name == "arrow_ipc" else pick(_BYTES)
    if t in (_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT):
        return g.one_of(pick(_FLOATS), g.floats(-200, 200))
    lo, hi = _INT_BOUNDS[t]
    edges = sorted(x for x in {lo, hi, 0, 1, -1, 2, pyomni.MAX_QTY, pyomni.MAX_QTY + 1, 2**31 - 1, 100_000,
                               -(2**31)} if lo <= x <= hi)
    return g.one_of(g.integers(max(lo, -3), min(hi, 12)), pick(edges))


def _fields(desc: Any, depth: int, value_of: Callable[[Any, int], Gen], sizes: tuple[int, int]) -> dict[str, Gen]:
    fields: dict[str, Gen] = {}
    for f in desc.fields:
        if f.type == _FD.TYPE_MESSAGE and (depth >= 2 or f.message_type.GetOptions().map_entry):
            continue          # deep enough (and no map field is a request's)
        value = value_of(f, depth)
        if f.is_repeated:
            value = g.lists(value, min_size=sizes[0], max_size=sizes[1])
        fields[f.name] = value
    return fields


def _build_message(desc: Any, values: dict[str, Any]) -> Any:
    msg = message_factory.GetMessageClass(desc)()
    for name, v in values.items():
        f = desc.fields_by_name[name]
        if f.is_repeated:
            if f.type == _FD.TYPE_MESSAGE:
                for x in v:
                    getattr(msg, name).add().CopyFrom(x)
            else:
                getattr(msg, name).extend(v)
        elif f.type == _FD.TYPE_MESSAGE:
            getattr(msg, name).CopyFrom(v)
        else:
            setattr(msg, name, v)
    return msg


#: fields of which a well-formed request sets one at most
_EXCLUSIVE = {"ApplyStockEventsRequest": ("events", "arrow_ipc"), "ClaimUnitsRequest": ("store", "near"),
              "Order": ("destination", "pickup_location")}
_MESSAGES: dict[tuple[str, int, str], Gen] = {}


def valid_message(desc: Any, depth: int = 0) -> Gen:
    """Well-formed messages of type ``desc``: every field a value a real caller would send (ids of the live
    engine, quantities and coordinates in range), for the call to reach past the first check."""
    key = (desc.full_name, depth, "valid")
    if key not in _MESSAGES:
        fields = _fields(desc, depth, _valid_field, (1, 2))
        template = _TEMPLATES.get(desc.name)
        exclusive = _EXCLUSIVE.get(desc.name, ())

        def draw(r: random.Random) -> dict[str, Any]:
            values = {k: x.draw(r) for k, x in fields.items() if r.random() < 0.95}
            if template is not None:
                values.update(template.draw(r))
            if exclusive and all(k in values for k in exclusive):
                del values[exclusive[r.randrange(len(exclusive))]]
            return values
        _MESSAGES[key] = Gen(lambda r: _build_message(desc, draw(r)))
    return _MESSAGES[key]


def message_of(desc: Any, depth: int = 0) -> Gen:
    """Messages of type ``desc``: well-formed ones, well-formed ones with a few fields replaced by any value of
    their wire type, and ones of any values at all (depth-limited)."""
    key = (desc.full_name, depth, "any")
    if key not in _MESSAGES:
        fields = _fields(desc, depth, _any_field, (0, 3))
        good = _fields(desc, depth, _valid_field, (1, 2))
        template = _TEMPLATES.get(desc.name)

        def mutated(r: random.Random) -> dict[str, Any]:
            values = {k: x.draw(r) for k, x in good.items() if r.random() < 0.9}
            if template is not None:
                values.update(template.draw(r))
            for k, x in fields.items():
                roll = r.random()
                if roll < 0.12:
                    values[k] = x.draw(r)
                elif roll < 0.18:
                    values.pop(k, None)
            return values

        def anything(r: random.Random) -> dict[str, Any]:
            return {k: x.draw(r) for k, x in fields.items() if r.random() < 0.5}
        valid = valid_message(desc, depth)
        _MESSAGES[key] = Gen(lambda r: valid.draw(r) if (roll := r.random()) < 0.3 else
                             _build_message(desc, mutated(r) if roll < 0.8 else anything(r)))
    return _MESSAGES[key]


def _column_request(r: random.Random) -> dict[str, Any]:
    """Consistent columns of a RouteOrderColumnsRequest (``line_counts`` adding up to the lines)."""
    n = r.randint(1, 4)
    counts = [r.randint(1, 2) for _ in range(n)]
    return {"order_ids": [f"c-{r.randint(1, 6)}" for _ in range(n)], "line_counts": counts,
            "skus": [r.choice(SKUS) for _ in range(sum(counts))], "qtys": [r.randint(1, 3) for _ in range(sum(counts))],
            "latitudes": [31.2 + r.random() / 10 for _ in range(n)], "longitudes": [121.4 + r.random() / 10
                                                                                   for _ in range(n)],
            "channels": [r.choice(CHANNELS)] * (r.randint(0, 1))}


def _claims_request(r: random.Random) -> dict[str, Any]:
    """Consistent columns of a ClaimUnitsBatchRequest."""
    n = r.randint(1, 4)
    out: dict[str, Any] = {"sale_id": r.choice(SALES[:1] * 3 + SALES), "customers": [r.choice(CUSTOMERS) for _ in
                                                                                    range(n)],
                           "skus": [r.choice(("SKU-B", "SKU-D"))] * (1 if r.random() < 0.5 else n)}
    if r.random() < 0.5:
        out["stores"] = [r.choice(STORES) for _ in range(n)]
    else:
        out["latitudes"] = [31.2 + r.random() / 10 for _ in range(n)]
        out["longitudes"] = [121.4 + r.random() / 10 for _ in range(n)]
    if r.random() < 0.5:
        out["qtys"] = [r.randint(1, 2) for _ in range(n)]
    if r.random() < 0.3:
        out["request_ids"] = [r.choice(REQUEST_IDS) for _ in range(n)]
    return out


def _sale_message(r: random.Random) -> dict[str, Any]:
    """A FlashSale's window, stores and SKUs as a valid sale has them."""
    stores = [selling_pb2.StoreQuota(store=s, quota=r.randint(1, 4)) for s in STORES[:r.randint(1, 2)]]
    return {"skus": ["SKU-B", "SKU-D"] if r.random() < 0.7 else ["SKU-C"], "stores": stores}


def _rule_message(r: random.Random) -> dict[str, Any]:
    """An AttributionRule's shares as a valid rule has them (each group sums to 10000)."""
    revenue = r.choice(((0, 10_000, 0, 0), (3000, 6000, 1000, 0), (2500, 2500, 2500, 2500)))
    coupon = r.choice(((10_000, 0, 0, 0), (5000, 0, 5000, 0)))
    out = dict(zip(("selling_bp", "fulfilling_bp", "home_bp", "hq_bp"), revenue))
    out.update(zip(("coupon_hq_bp", "coupon_selling_bp", "coupon_fulfilling_bp", "coupon_home_bp"), coupon))
    out.update(zip(("franchise_coupon_hq_bp", "franchise_coupon_selling_bp", "franchise_coupon_fulfilling_bp",
                    "franchise_coupon_home_bp"), (10_000, 0, 0, 0)))
    out["home"], out["regional_stores"] = "nearest", []
    return out


#: hand-made parts of messages whose fields must agree with each other
_TEMPLATES: dict[str, Gen] = {"RouteOrderColumnsRequest": Gen(_column_request),
                              "ClaimUnitsBatchRequest": Gen(_claims_request), "FlashSale": Gen(_sale_message),
                              "AttributionRule": Gen(_rule_message)}


@dataclasses.dataclass(frozen=True)
class RpcCall:
    """One RPC: the method and its messages (one, or 0-3 for a client stream)."""

    method: RpcMethod
    messages: tuple[Any, ...]

    @property
    def mutates(self) -> bool:
        return self.method.name not in READ_RPCS

    def __repr__(self) -> str:
        shown = [_short(str(m).replace("\n", " "), 300) for m in self.messages]
        return f"{self.method.name}({', '.join(shown)})"

    def invoke(self, channel: grpc.Channel) -> tuple[Outcome, int]:
        """The outcome and how many messages were answered (applied) before it."""
        m = self.method
        ser, de = m.request.SerializeToString, m.response.FromString
        answered = 0
        try:
            if not m.client_streaming and not m.server_streaming:
                channel.unary_unary(m.path, request_serializer=ser, response_deserializer=de)(
                    self.messages[0], timeout=20)
            elif m.client_streaming and not m.server_streaming:
                channel.stream_unary(m.path, request_serializer=ser, response_deserializer=de)(
                    iter(self.messages), timeout=20)
            elif not m.client_streaming:
                stream = channel.unary_stream(m.path, request_serializer=ser, response_deserializer=de)(
                    self.messages[0], timeout=WATCH_SECONDS if m.name.startswith("Watch") else 20)
                for _ in stream:
                    answered += 1
                    if answered >= 2:
                        stream.cancel()
                        return Outcome(None, ours=True), answered
            else:
                stream = channel.stream_stream(m.path, request_serializer=ser, response_deserializer=de)(
                    iter(self.messages), timeout=20)
                for _ in stream:
                    answered += 1
        except grpc.RpcError as exc:
            code = exc.code()
            ours = (code is grpc.StatusCode.DEADLINE_EXCEEDED and m.name.startswith("Watch")) or \
                (code is grpc.StatusCode.CANCELLED and answered >= 2)
            try:
                status = rpc_status.from_call(exc)
            except Exception as parse:     # noqa: BLE001
                status, err = None, f"unparsable status: {parse!r}"
            else:
                err = ""
            return Outcome(code, exc.details() or "", exc.trailing_metadata(), status, ours, err), answered
        return Outcome(None), answered


def _applied_before(call: RpcCall, outcome: Outcome, answered: int) -> int:
    """How many of a call's messages were applied before it failed: a bidirectional stream answered them; a
    client stream (StreamStockEvents) names the failed batch in the ErrorInfo's field (``batches[k]...``)."""
    if not call.method.client_streaming:
        return 0
    if call.method.server_streaming:
        return answered
    for d in outcome.status.details if outcome.status is not None else ():
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            where = info.metadata.get("field", "")
            if where.startswith("batches["):
                return int(where[len("batches["):where.index("]")])
    return 0


def _status_problem(outcome: Outcome) -> str:
    """What is wrong with a failing call's status, or ''."""
    if outcome.code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
        return f"status {outcome.code.name}"
    if outcome.status is None:
        return "no google.rpc.Status in the trailers " + outcome.error
    infos = []
    for d in outcome.status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            infos.append(info)
    if not infos or not infos[0].reason:
        return "no ErrorInfo with a reason in the status details"
    if len(outcome.status.message) > MAX_MESSAGE or len(infos[0].metadata.get("field", "")) > 200:
        return "unbounded status message or field"
    if outcome.status.code != outcome.code.value[0]:
        return "the status details disagree with the call's code"
    return ""


def rpc_call_of(m: RpcMethod) -> Gen:
    msg = message_of(m.request.DESCRIPTOR)
    messages = g.lists(msg, min_size=0, max_size=3) if m.client_streaming else g.lists(msg, min_size=1,
                                                                                         max_size=1)
    return g.builds(lambda ms: RpcCall(m, tuple(ms)), messages)


def rpc_calls() -> Seeded:
    """The maker of calls of every RPC of every pyomni.v1 service: seed -> call."""
    options = []
    for m in rpc_methods():
        options += [rpc_call_of(m)] * RPC_WEIGHTS.get(m.name, 4)
    return Seeded(options)


class EngineSlot:
    """What the server serves: forwards every attribute to the engine of the current example, so one server
    (built once: ~0.2 s) serves a fresh engine per example."""

    def __init__(self) -> None:
        self.target: pyomni.Engine | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


@contextlib.contextmanager
def served(workers: int = 8) -> Iterator[tuple[EngineSlot, grpc.Channel]]:
    """An in-process server on port 0 over an :class:`EngineSlot`, and a channel to it."""
    from grpc_server import create_server

    slot = EngineSlot()
    server, port = create_server("127.0.0.1:0", slot, workers=workers)      # type: ignore[arg-type]
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)])
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield slot, channel
    finally:
        channel.close()
        # a grace returns at once (grpcio cancels what is left after it), and the wait is bounded: stop(None)
        # waits for the server's shutdown without a limit, and a client-stream message grpcio could not decode
        # holds that up for ever (grpcio 1.8x; see test_the_server_answers_undecodable_bytes_with_invalid_argument)
        server.stop(grace=0.5).wait(timeout=3)


def saved_snapshot(root: Path) -> Path:
    """A directory holding a snapshot of a live engine (for ``load``)."""
    live = live_engine("native", root / "proto")
    try:
        live.engine.save(root / "saved")
    finally:
        live.close()
    return root / "saved"


def fresh_tmp(parent: Path, n: int) -> Path:
    p = parent / f"ex{n}"
    shutil.rmtree(p, ignore_errors=True)
    p.mkdir(parents=True)
    return p


__all__ = ["Live", "live_engine", "engine_calls", "rpc_calls", "rpc_methods", "engine_methods", "Checker",
           "served", "saved_snapshot", "fresh_tmp", "SPECS", "EXCLUDED", "MODULE_SPECS"]
