"""Bad input, on both backends: the exact typed error, its ``field``, and no state change.

Each case is a call on an engine that holds stock and one live reservation;
the test compares the stock table (cell order included), ``stats()``, the
reservations and the SKU catalogue before and after.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from conftest import SHANGHAI

import pyomni
from pyomni import MAX_EXCLUDED, MAX_LINES, MAX_QTY, ChannelRule, Line, Order, RoutingPolicy, errors

LOC, SKU = "SH-PEOPLE", "SKU-A"


@pytest.fixture
def live(make_engine):
    """An engine with stock and one HELD reservation, and that reservation's id."""
    eng = make_engine()
    for loc in ("SH-PEOPLE", "SH-PUDONG", "WH-JIADING", "BJ-DONGCHENG"):
        eng.set_stock(loc, "SKU-A", 10, safety=1)
        eng.set_stock(loc, "SKU-B", 5)
    eng.receive("SH-PEOPLE", "SKU-C", 2, request_id="seen-before")
    a = eng.route_order(Order("o-live", [("SKU-A", 2)], destination=SHANGHAI))
    assert a.ok
    return eng, a.reservation_id


def check_rejected(eng, snapshot, call, cls, field):
    before = snapshot(eng)
    skus = eng.skus
    with pytest.raises(errors.PyomniError) as info:
        call()
    assert type(info.value) is cls, info.value
    assert info.value.field == field
    assert isinstance(info.value.reason, str)
    assert snapshot(eng) == before
    assert eng.skus == skus
    eng.check_invariants()


def order(lines=((SKU, 1),), **kwargs) -> Order:
    kwargs.setdefault("destination", SHANGHAI)
    return Order(kwargs.pop("id", "o-new"), lines, **kwargs)


# -- quantities ---------------------------------------------------------------------------
#: command name -> (call(eng, q), field, zero allowed, negative allowed)
QTY_COMMANDS = {
    "set_stock": (lambda e, q: e.set_stock(LOC, SKU, q), "on_hand", True, False),
    "set_stock.safety": (lambda e, q: e.set_stock(LOC, SKU, 12, safety=q), "safety", True, False),
    "adjust_stock": (lambda e, q: e.adjust_stock(LOC, SKU, q), "delta", False, True),
    "receive": (lambda e, q: e.receive(LOC, SKU, q), "qty", False, False),
    "sell": (lambda e, q: e.sell(LOC, SKU, q), "qty", False, False),
    "return_item": (lambda e, q: e.return_item(LOC, SKU, q), "qty", False, False),
    "set_safety": (lambda e, q: e.set_safety(LOC, SKU, q), "safety", True, False),
    "transfer": (lambda e, q: e.transfer(LOC, "SH-PUDONG", SKU, q), "qty", False, False),
    "set_daily_capacity": (lambda e, q: e.set_daily_capacity(LOC, q), "capacity", True, False),
    "route_order": (lambda e, q: e.route_order(order([(SKU, 1), ("SKU-B", q)])), "lines[1].qty", False, False),
    "quote": (lambda e, q: e.quote(order([(SKU, q)])), "lines[0].qty", False, False),
    "find_pickup_locations": (lambda e, q: e.find_pickup_locations([(SKU, q)], SHANGHAI), "lines[0].qty",
                              False, False),
}
BAD_ANYWHERE = {
    "too_big": MAX_QTY + 1, "2**31": 2**31, "2**63": 2**63, "2**64": 2**64, "-2**63-1": -(2**63) - 1,
    "float": 2.0, "fraction": 2.5, "nan": math.nan, "inf": math.inf, "true": True, "false": False, "str": "3",
    "none": None, "np.float64": np.float64(3), "np.uint64_max": np.uint64(2**64 - 1),
}


def qty_cases():
    for name, (_, field, zero_ok, negative_ok) in QTY_COMMANDS.items():
        bad = dict(BAD_ANYWHERE)
        if field == "safety" and name == "set_stock.safety":
            del bad["none"]          # safety=None means "keep the cell's safety stock"
        if not zero_ok:
            bad["zero"] = 0
        if not negative_ok:
            bad["minus_one"] = -1
        else:
            bad["too_negative"] = -MAX_QTY - 1
        for label, q in bad.items():
            yield pytest.param(name, q, field, id=f"{name}-{label}")


@pytest.mark.parametrize(("command", "qty", "field"), list(qty_cases()))
def test_bad_quantities(live, snapshot, command, qty, field):
    eng, _ = live
    call = QTY_COMMANDS[command][0]
    check_rejected(eng, snapshot, lambda: call(eng, qty), errors.InvalidQuantity, field)


@pytest.mark.parametrize("command", list(QTY_COMMANDS))
def test_numpy_integers_are_accepted_as_quantities(live, command):
    eng, _ = live
    QTY_COMMANDS[command][0](eng, np.int64(1))
    eng.check_invariants()


# -- unknown names --------------------------------------------------------------------------
UNKNOWN = [
    ("set_stock-sku", lambda e, r: e.set_stock(LOC, "SKU-Z", 1), errors.UnknownSku, "sku"),
    ("set_stock-location", lambda e, r: e.set_stock("XX", SKU, 1), errors.UnknownLocation, "location"),
    ("set_stock-location-none", lambda e, r: e.set_stock(None, SKU, 1), errors.UnknownLocation, "location"),
    ("set_stock-location-unhashable", lambda e, r: e.set_stock(["SH-PEOPLE"], SKU, 1), errors.UnknownLocation,
     "location"),
    ("receive-sku-case", lambda e, r: e.receive(LOC, "sku-a", 1), errors.UnknownSku, "sku"),
    ("sell-location", lambda e, r: e.sell("sh-people", SKU, 1), errors.UnknownLocation, "location"),
    ("transfer-sku", lambda e, r: e.transfer(LOC, "SH-PUDONG", "SKU-Z", 1), errors.UnknownSku, "sku"),
    ("stock", lambda e, r: e.stock(LOC, "SKU-Z"), errors.UnknownSku, "sku"),
    ("available-sku", lambda e, r: e.available("SKU-Z"), errors.UnknownSku, "sku"),
    ("available-location", lambda e, r: e.available(SKU, location="XX"), errors.UnknownLocation, "location"),
    ("availability", lambda e, r: e.availability("SKU-Z"), errors.UnknownSku, "sku"),
    ("available_near", lambda e, r: e.available_near("SKU-Z", SHANGHAI), errors.UnknownSku, "sku"),
    ("find_pickup", lambda e, r: e.find_pickup_locations([(SKU, 1), ("SKU-Z", 1)], SHANGHAI), errors.UnknownSku,
     "lines[1].sku"),
    ("set_location_open", lambda e, r: e.set_location_open("XX", False), errors.UnknownLocation, "location"),
    ("set_daily_capacity", lambda e, r: e.set_daily_capacity("XX", 3), errors.UnknownLocation, "location"),
    ("route-sku", lambda e, r: e.route_order(order([(SKU, 1), ("SKU-Z", 1)])), errors.UnknownSku, "lines[1].sku"),
    ("route-sku-none", lambda e, r: e.route_order(order([Line(None, 1)])), errors.UnknownSku, "lines[0].sku"),
    ("quote-sku", lambda e, r: e.quote(order([("SKU-Z", 1)])), errors.UnknownSku, "lines[0].sku"),
    ("route-pickup", lambda e, r: e.route_order(order(pickup_location="XX", destination=None)),
     errors.UnknownLocation, "pickup_location"),
    ("route-excluded", lambda e, r: e.route_order(order(excluded_locations=["SH-PUDONG", "XX"])),
     errors.UnknownLocation, "excluded_locations[1]"),
    ("route-policy", lambda e, r: e.route_order(order(), policy="nope"), errors.UnknownPolicy, "policy"),
    ("quote-policy", lambda e, r: e.quote(order(), policy="default@9"), errors.UnknownPolicy, "policy"),
    ("confirm", lambda e, r: e.confirm("R-none"), errors.UnknownReservation, "reservation_id"),
    ("release", lambda e, r: e.release(None), errors.UnknownReservation, "reservation_id"),
    ("reroute", lambda e, r: e.reroute("R-none", LOC), errors.UnknownReservation, "reservation_id"),
    ("reroute-location", lambda e, r: e.reroute(r, "XX"), errors.UnknownLocation, "rejected_by"),
    ("reservation", lambda e, r: e.reservation("R-none"), errors.UnknownReservation, "reservation_id"),
    ("events-sku", lambda e, r: e.apply_stock_events(pa.table({"location": [LOC, LOC], "sku": [SKU, "SKU-Z"],
                                                                "qty": [1, 1]})),
     errors.UnknownSku, "events[1].sku"),
    ("events-location", lambda e, r: e.apply_stock_events(pa.table({"location": ["XX"], "sku": [SKU], "qty": [1]})),
     errors.UnknownLocation, "events[0].location"),
]


@pytest.mark.parametrize(("call", "cls", "field"), [c[1:] for c in UNKNOWN], ids=[c[0] for c in UNKNOWN])
def test_unknown_names(live, snapshot, call, cls, field):
    eng, rid = live
    check_rejected(eng, snapshot, lambda: call(eng, rid), cls, field)


# -- coordinates --------------------------------------------------------------------------------
BAD_POINTS = {
    "nan-lat": (math.nan, 121.0), "nan-lon": (31.0, math.nan), "inf-lat": (math.inf, 121.0),
    "inf-lon": (31.0, -math.inf), "lat>90": (90.0001, 0.0), "lat<-90": (-91.0, 0.0), "lon>180": (0.0, 180.5),
    "lon<-180": (0.0, -181.0), "text": ("north", "east"), "none": (None, 121.0),
}
BAD_SHAPES = {"one": (31.0,), "three": (31.0, 121.0, 0.0), "empty": ()}


@pytest.mark.parametrize("point", list(BAD_POINTS.values()) + list(BAD_SHAPES.values()),
                         ids=list(BAD_POINTS) + list(BAD_SHAPES))
@pytest.mark.parametrize("verb", ["route_order", "quote"])
def test_bad_destinations(live, snapshot, point, verb):
    eng, _ = live
    check_rejected(eng, snapshot, lambda: getattr(eng, verb)(order(destination=point)),
                   errors.InvalidCoordinates, "destination")


def test_destination_must_be_a_pair_at_construction():
    with pytest.raises(errors.InvalidCoordinates) as info:
        Order("o", [(SKU, 1)], destination=5)
    assert info.value.field == "destination"


@pytest.mark.parametrize("point", list(BAD_POINTS.values()) + list(BAD_SHAPES.values()) + [None],
                         ids=list(BAD_POINTS) + list(BAD_SHAPES) + ["None"])
@pytest.mark.parametrize("verb", ["available_near", "find_pickup_locations"])
def test_bad_search_points(live, snapshot, point, verb):
    eng, _ = live
    if verb == "available_near":
        def call():
            return eng.available_near(SKU, point)
    else:
        def call():
            return eng.find_pickup_locations([(SKU, 1)], point)
    check_rejected(eng, snapshot, call, errors.InvalidCoordinates, "near")


@pytest.mark.parametrize("radius", [0, -1.0, math.nan, math.inf, "5", True, None])
def test_bad_search_radius(live, snapshot, radius):
    eng, _ = live
    check_rejected(eng, snapshot, lambda: eng.available_near(SKU, SHANGHAI, radius_km=radius),
                   errors.InvalidArgument, "radius_km")
    check_rejected(eng, snapshot, lambda: eng.find_pickup_locations([(SKU, 1)], SHANGHAI, radius_km=radius),
                   errors.InvalidArgument, "radius_km")


@pytest.mark.parametrize("limit", [0, -1, 1001, 2.0, True, "3", None])
def test_bad_search_limit(live, snapshot, limit):
    eng, _ = live
    check_rejected(eng, snapshot, lambda: eng.available_near(SKU, SHANGHAI, limit=limit),
                   errors.InvalidArgument, "limit")
    check_rejected(eng, snapshot, lambda: eng.find_pickup_locations([(SKU, 1)], SHANGHAI, limit=limit),
                   errors.InvalidArgument, "limit")


# -- orders -------------------------------------------------------------------------------------
def many_lines(n: int) -> list[tuple[str, int]]:
    return [(f"SKU-{i}", 1) for i in range(n)]


ORDER_CASES = [
    ("empty", lambda: order([]), errors.InvalidOrder, "lines"),
    ("too-many-lines", lambda: order(many_lines(MAX_LINES + 1)), errors.InvalidOrder, "lines"),
    ("duplicate-lines", lambda: order([(SKU, 1), ("SKU-B", 1), (SKU, 2)]), errors.InvalidOrder, "lines"),
    ("duplicate-line-objects", lambda: order([Line(SKU, 1), Line(SKU, 1)]), errors.InvalidOrder, "lines"),
    ("line-too-short", lambda: order([(SKU, 1), (SKU,)]), errors.InvalidOrder, "lines[1]"),
    ("line-too-long", lambda: order([(SKU, 1, 2)]), errors.InvalidOrder, "lines[0]"),
    ("line-number", lambda: order([42]), errors.InvalidOrder, "lines[0]"),
    ("line-mapping-without-qty", lambda: order([{"sku": SKU}]), errors.InvalidOrder, "lines[0]"),
    ("lines-string", lambda: order("SKU-A"), errors.InvalidOrder, "lines"),
    ("lines-none", lambda: order(None), errors.InvalidOrder, "lines"),
    ("lines-number", lambda: order(3), errors.InvalidOrder, "lines"),
    ("id-empty", lambda: order(id=""), errors.InvalidOrder, "id"),
    ("id-number", lambda: order(id=17), errors.InvalidOrder, "id"),
    ("no-destination", lambda: order(destination=None), errors.InvalidOrder, "destination"),
    ("pickup-without-location", lambda: order(fulfilment="pickup"), errors.InvalidOrder, "pickup_location"),
    ("unknown-fulfilment", lambda: order(fulfilment="teleport"), errors.InvalidOrder, "fulfilment"),
    ("fulfilment-number", lambda: order(fulfilment=9), errors.InvalidOrder, "fulfilment"),
    ("pickup-at-warehouse", lambda: order(pickup_location="WH-JIADING", destination=None),
     errors.CapabilityMissing, "pickup_location"),
    ("max_splits-zero", lambda: order(max_splits=0), errors.InvalidOrder, "max_splits"),
    ("max_splits-negative", lambda: order(max_splits=-2), errors.InvalidOrder, "max_splits"),
    ("max_splits-too-many", lambda: order(max_splits=17), errors.InvalidOrder, "max_splits"),
    ("max_splits-float", lambda: order(max_splits=2.0), errors.InvalidOrder, "max_splits"),
    ("max_splits-bool", lambda: order(max_splits=True), errors.InvalidOrder, "max_splits"),
    ("max_splits-str", lambda: order(max_splits="2"), errors.InvalidOrder, "max_splits"),
    ("max_distance-zero", lambda: order(max_distance_km=0), errors.InvalidOrder, "max_distance_km"),
    ("max_distance-negative", lambda: order(max_distance_km=-5.0), errors.InvalidOrder, "max_distance_km"),
    ("max_distance-nan", lambda: order(max_distance_km=math.nan), errors.InvalidOrder, "max_distance_km"),
    ("max_distance-minus-inf", lambda: order(max_distance_km=-math.inf), errors.InvalidOrder, "max_distance_km"),
    ("max_distance-str", lambda: order(max_distance_km="10"), errors.InvalidOrder, "max_distance_km"),
    ("max_distance-bool", lambda: order(max_distance_km=True), errors.InvalidOrder, "max_distance_km"),
    ("too-many-excluded", lambda: order(excluded_locations=["SH-PUDONG"] * (MAX_EXCLUDED + 1)), errors.InvalidOrder,
     "excluded_locations"),
    ("excluded-not-a-sequence", lambda: order(excluded_locations=5), errors.InvalidOrder, "excluded_locations"),
    ("channel-empty", lambda: order(channel=""), errors.InvalidOrder, "channel"),
    ("channel-none", lambda: order(channel=None), errors.InvalidOrder, "channel"),
]


@pytest.mark.parametrize(("make", "cls", "field"), [c[1:] for c in ORDER_CASES], ids=[c[0] for c in ORDER_CASES])
@pytest.mark.parametrize("verb", ["route_order", "quote"])
def test_bad_orders(live, snapshot, make, cls, field, verb):
    eng, _ = live
    check_rejected(eng, snapshot, lambda: getattr(eng, verb)(make()), cls, field)


@pytest.mark.parametrize("verb", ["route_order", "quote"])
@pytest.mark.parametrize("obj", ["o-1", None, {"id": "o-1"}])
def test_not_an_order(live, snapshot, verb, obj):
    eng, _ = live
    check_rejected(eng, snapshot, lambda: getattr(eng, verb)(obj), errors.InvalidOrder, "order")


def test_duplicate_live_order_id(live, snapshot):
    eng, _ = live
    check_rejected(eng, snapshot, lambda: eng.route_order(order(id="o-live")), errors.DuplicateId, "id")


def test_a_bad_line_after_good_ones_still_changes_nothing(live, snapshot):
    # validation finishes before anything is held: the good first lines are not reserved
    eng, _ = live
    lines = [("SKU-A", 1), ("SKU-B", 1), ("SKU-C", 0)]
    check_rejected(eng, snapshot, lambda: eng.route_order(order(lines)), errors.InvalidQuantity, "lines[2].qty")


BASKET_CASES = [
    ("empty", [], errors.InvalidOrder, "lines"),
    ("too-many", many_lines(MAX_LINES + 1), errors.InvalidOrder, "lines"),
    ("repeated-sku", [(SKU, 1), (SKU, 2)], errors.InvalidOrder, "lines"),
    ("malformed", [(SKU,)], errors.InvalidOrder, "lines[0]"),
]


@pytest.mark.parametrize(("basket", "cls", "field"), [c[1:] for c in BASKET_CASES], ids=[c[0] for c in BASKET_CASES])
def test_bad_pickup_baskets(live, snapshot, basket, cls, field):
    eng, _ = live
    check_rejected(eng, snapshot, lambda: eng.find_pickup_locations(basket, SHANGHAI), cls, field)


# -- other commands --------------------------------------------------------------------------------
OTHER = [
    ("transfer-same-location", lambda e, r: e.transfer(LOC, LOC, SKU, 1), errors.InvalidArgument, "destination"),
    ("reroute-not-a-fulfiller", lambda e, r: e.reroute(r, "GZ-TIANHE"), errors.InvalidArgument, "rejected_by"),
    ("route-ttl", lambda e, r: e.route_order(order(), ttl=-1), errors.InvalidArgument, "ttl"),
    ("request-id-empty", lambda e, r: e.receive(LOC, SKU, 1, request_id=""), errors.InvalidArgument, "request_id"),
    ("request-id-number", lambda e, r: e.confirm(r, request_id=5), errors.InvalidArgument, "request_id"),
    ("request-id-reused", lambda e, r: e.sell(LOC, SKU, 1, request_id="seen-before"), errors.RequestIdReused,
     "request_id"),
    ("channel-rule-channel", lambda e, r: e.set_channel_rule("", ChannelRule()), errors.InvalidArgument, "channel"),
    ("channel-rule-rule", lambda e, r: e.set_channel_rule("app", 0.5), errors.InvalidArgument, "rule"),
    ("register-policy", lambda e, r: e.register_policy({"name": "x"}), errors.InvalidArgument, "policy"),
    ("register-skus-known", lambda e, r: e.register_skus(["SKU-NEW", SKU]), errors.DuplicateId, "skus[1]"),
    ("register-skus-repeated", lambda e, r: e.register_skus(["SKU-N", "SKU-M", "SKU-N"]), errors.DuplicateId,
     "skus[2]"),
    ("register-skus-empty-id", lambda e, r: e.register_skus(["SKU-N", ""]), errors.InvalidArgument, "skus[1]"),
    ("events-unknown-kind", lambda e, r: e.apply_stock_events(
        pa.table({"location": [LOC], "sku": [SKU], "event": ["steal"], "qty": [1]})), errors.InvalidArgument,
     "events[0].event"),
    ("events-float-qty", lambda e, r: e.apply_stock_events(
        pa.table({"location": [LOC], "sku": [SKU], "qty": [1.5]})), errors.InvalidArgument, "qty"),
    ("events-uint64-qty", lambda e, r: e.apply_stock_events(
        pa.table({"location": [LOC], "sku": [SKU], "qty": pa.array([2**63], pa.uint64())})),
     errors.InvalidArgument, "qty"),
    ("events-huge-qty", lambda e, r: e.apply_stock_events(
        pa.table({"location": [LOC, LOC], "sku": [SKU, SKU], "event": ["receive", "adjust"],
                  "qty": [1, 2**63 - 1]})), errors.InvalidQuantity, "events[1]"),
    ("events-negative-safety", lambda e, r: e.apply_stock_events(
        pa.table({"location": [LOC], "sku": [SKU], "qty": [1], "safety": [-5]})), errors.InvalidQuantity,
     "events[0].safety"),
    ("events-missing-column", lambda e, r: e.apply_stock_events(pa.table({"location": [LOC], "qty": [1]})),
     errors.InvalidArgument, "sku"),
    ("events-not-a-table", lambda e, r: e.apply_stock_events(None), errors.InvalidArgument, "source"),
]


@pytest.mark.parametrize(("call", "cls", "field"), [c[1:] for c in OTHER], ids=[c[0] for c in OTHER])
def test_other_bad_requests(live, snapshot, call, cls, field):
    eng, rid = live
    check_rejected(eng, snapshot, lambda: call(eng, rid), cls, field)


# -- construction ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ttl", [0, -5, math.nan, math.inf, "60"])
def test_engine_reservation_ttl(backend, city_net, ttl):
    with pytest.raises(errors.InvalidArgument) as info:
        pyomni.Engine(city_net, native=backend, reservation_ttl=ttl)
    assert info.value.field == "reservation_ttl"


def test_engine_needs_a_network(backend):
    with pytest.raises(errors.InvalidArgument) as info:
        pyomni.Engine([("SH-1", 31.0, 121.0)], native=backend)
    assert info.value.field == "network"


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"name": ""}, "name"), ({"name": "a@b"}, "name"), ({"version": 0}, "version"), ({"version": True}, "version"),
    ({"cost_per_km": -1}, "cost_per_km"), ({"cost_per_km": math.nan}, "cost_per_km"),
    ({"split_penalty": math.inf}, "split_penalty"), ({"circuity": 0.9}, "circuity"),
    ({"max_splits": 0}, "max_splits"), ({"max_splits": 17}, "max_splits"),
    ({"max_distance_km": 0}, "max_distance_km"), ({"same_day_max_km": math.nan}, "same_day_max_km"),
])
def test_bad_routing_policies(kwargs, field):
    with pytest.raises(errors.InvalidArgument) as info:
        RoutingPolicy(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"share": 0}, "share"), ({"share": 1.5}, "share"), ({"share": math.nan}, "share"),
    ({"buffer": -1}, "buffer"), ({"buffer": 1.5}, "buffer"),
])
def test_bad_channel_rules(kwargs, field):
    with pytest.raises(errors.InvalidArgument) as info:
        ChannelRule(**kwargs)
    assert info.value.field == field


# -- arguments of the wrong type are typed errors too (never a bare TypeError or OSError) ------------
WRONG_TYPES = [
    ("events-missing-file", lambda e: e.apply_stock_events("/nonexistent/stock.parquet"), errors.InvalidArgument,
     "source"),
    ("events-a-directory", lambda e: e.apply_stock_events("/"), errors.InvalidArgument, "source"),
    ("register-an-int", lambda e: e.register_skus(5), errors.InvalidArgument, "skus"),
    ("register-a-string", lambda e: e.register_skus("XYZ"), errors.InvalidArgument, "skus"),
    ("channel-a-list", lambda e: e.available(SKU, channel=[1]), errors.InvalidArgument, "channel"),
    ("limit-a-string", lambda e: e.reservations(limit="x"), errors.InvalidArgument, "limit"),
    ("limit-negative", lambda e: e.reservations(limit=-1), errors.InvalidArgument, "limit"),
    ("after-a-float", lambda e: e.reservations(after=1.5), errors.InvalidArgument, "after"),
    ("state-a-string", lambda e: e.reservations(state="HELD"), errors.InvalidArgument, "state"),
    ("basket-an-int", lambda e: e.find_pickup_locations(5, SHANGHAI), errors.InvalidOrder, "lines"),
    ("basket-a-string", lambda e: e.find_pickup_locations("SKU-A", SHANGHAI), errors.InvalidOrder, "lines"),
]


@pytest.mark.parametrize(("call", "cls", "field"), [c[1:] for c in WRONG_TYPES], ids=[c[0] for c in WRONG_TYPES])
def test_arguments_of_the_wrong_type(live, snapshot, call, cls, field):
    eng, _ = live
    check_rejected(eng, snapshot, lambda: call(eng), cls, field)


def test_a_page_of_nothing_is_empty(live):
    eng, _ = live
    assert eng.reservations(limit=0) == [] and len(eng.reservations(limit=1)) == 1


def test_a_negative_safety_in_an_event_is_refused_like_set_stock(live, snapshot):
    eng, _ = live
    table = pa.table({"location": [LOC, LOC], "sku": [SKU, SKU], "event": ["set", "set"], "qty": [3, 4],
                      "safety": [1, -1]})
    check_rejected(eng, snapshot, lambda: eng.apply_stock_events(table), errors.InvalidQuantity, "events[1].safety")
    check_rejected(eng, snapshot, lambda: eng.set_stock(LOC, SKU, 3, safety=-1), errors.InvalidQuantity, "safety")


# -- issue 12: the classes of bug the fuzzer (tests/test_fuzz.py) found, one regression test each -------------
HUGE = "x" * 16_384


def test_messages_show_a_bounded_prefix_of_the_input(live, snapshot):
    # a 16 KB id, a list of a thousand entries or an int of 5,000 digits used to be echoed whole (or, for the
    # int, to raise ValueError while the message was formatted)
    eng, rid = live
    calls = [lambda: eng.set_stock(HUGE, SKU, 1), lambda: eng.confirm(HUGE), lambda: eng.get_claim(HUGE),
             lambda: eng.set_stock(LOC, SKU, list(range(1000))), lambda: eng.set_stock(LOC, SKU, 10**5000),
             lambda: eng.receive(LOC, SKU, HUGE), lambda: eng.available_near(SKU, HUGE),
             lambda: eng.apply_stock_events(pa.table({"location": [LOC], "sku": [SKU], "event": [HUGE], "qty": [1]})),
             lambda: eng.route_order(order([(HUGE, 1)])), lambda: eng.reserve_plan(order(), [(LOC, [(SKU, HUGE)])])]
    for call in calls:
        before = snapshot(eng)
        with pytest.raises(errors.PyomniError) as info:
            call()
        assert len(str(info.value)) <= 300, str(info.value)[:100]
        assert snapshot(eng) == before


@pytest.mark.parametrize("call", [
    lambda e: e.remembered([1]),
    lambda e: e.remembered(bytearray(b"x")),
    lambda e: e.wait_for_commit("x", 0),
    lambda e: e.wait_for_commit(10**30, 0),
    lambda e: e.wait_durable("1"),
    lambda e: e.wait_durable(10**5000),
    lambda e: e.claims("tee", state="HELD"),
    lambda e: e.claims("tee", state=1.5),
], ids=["remembered-list", "remembered-bytearray", "wait-str", "wait-huge", "durable-str", "durable-huge",
        "claims-state-str", "claims-state-float"])
def test_wrong_types_in_lookups_and_waits_are_invalid_arguments(live, snapshot, call):
    eng, _ = live
    before = snapshot(eng)
    with pytest.raises(errors.InvalidArgument):
        call(eng)
    assert snapshot(eng) == before


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -1, 1e300, "1", True])
def test_a_timeout_that_cannot_be_waited_is_refused_not_waited(live, timeout):
    # NaN and inf used to raise ValueError / OverflowError from threading, 1e300 to wait for ever
    eng, _ = live
    with pytest.raises(errors.InvalidArgument) as info:
        eng.wait_for_commit(eng.lsn, timeout)
    assert info.value.field == "timeout"
    feed = eng.channel_feed(None, start=False)
    try:
        with pytest.raises(errors.InvalidArgument):
            next(feed.follow(None, 0, timeout=timeout))
        with pytest.raises(errors.InvalidArgument) as info:
            next(feed.follow(None, "5"))
        assert info.value.field == "after"
    finally:
        feed.close()


@pytest.mark.parametrize("call", [
    lambda e: e.route_orders("o-1"),
    lambda e: e.route_orders(5),
    lambda e: e.route_orders([order()], request_ids="rq"),
    lambda e: e.route_orders([order()], ttls=5.0),
    lambda e: e.route_columns("ab", [1, 1], [SKU, SKU], [1, 1], [31.2, 31.2], [121.4, 121.4]),
    lambda e: e.route_columns(["a"], [1], SKU, [1], [31.2], [121.4]),
    lambda e: e.route_columns(None, [], [], [], [], []),
    lambda e: e.claim_many("tee", "m-1", "SKU-A"),
    lambda e: e.claim_many("tee", None, "SKU-A"),
    lambda e: e.claim_many("tee", ["m-1"], "SKU-A", 1),
    lambda e: e.claim_many("tee", ["m-1"], "SKU-A", near=5),
    lambda e: e.claim_many("tee", ["m-1"], "SKU-A", stores="SH-PEOPLE"),
    lambda e: e.claim_many("tee", ["m-1"], "SKU-A", stores=["SH-PEOPLE"], request_ids="r"),
    lambda e: e.claim_many("tee", ["m-1"], "SKU-A", stores=["SH-PEOPLE"], wait="yes"),
    lambda e: e.upsert_locations(None),
    lambda e: pyomni.Network.from_locations(None),
    lambda e: pyomni.Network.from_records(5),
], ids=["orders-str", "orders-int", "route-request_ids-str", "route-ttls-float", "columns-ids-str",
        "columns-skus-str", "columns-none", "customers-str", "customers-none", "qtys-int", "near-int", "stores-str",
        "request_ids-str", "wait-str", "upsert-none", "from_locations-none", "from_records-int"])
def test_a_bare_string_or_a_scalar_where_a_sequence_goes(live, snapshot, call):
    # len() of an int or None used to raise TypeError; a bare string iterated into one-character ids
    eng, _ = live
    before = snapshot(eng)
    with pytest.raises(errors.InvalidArgument):
        call(eng)
    assert snapshot(eng) == before


def test_unhashable_entries_in_batch_columns_are_that_rows_refusal(live, clock):
    eng, _ = live
    eng.create_sale(pyomni.FlashSale("tee", ("SKU-A",), clock.now - 1, clock.now + 600, 5, (("SH-PEOPLE", 3),)))
    r = eng.claim_many("tee", ["m-1", "m-2", ["m"]], [["SKU-A"], "SKU-A", "SKU-A"],
                       stores=["SH-PEOPLE", ["SH-PEOPLE"], "SH-PEOPLE"], request_ids=[None, None, {}])
    assert [type(r.get(i)) for i in range(3)] == [errors.UnknownSku, errors.UnknownLocation, errors.InvalidArgument]
    res = eng.route_columns(["c-1", "c-2"], [1, 1], [SKU, SKU], [1, 1], [31.2, 31.2], [121.4, 121.4],
                            channels=["app", ["app"]], request_ids=[["r"], None])
    assert type(res.errors[0]) is errors.InvalidArgument and type(res.errors[1]) is errors.InvalidOrder
    eng.check_invariants()


@pytest.mark.parametrize("bad", ["\ud800", "a\x00b", "bell\x07", "x" * 300])
def test_new_ids_must_be_text_every_store_and_record_can_hold(live, snapshot, bad):
    # a lone surrogate registered as a SKU broke stock_table() (Arrow) for good, and in a request id or an order
    # id made the journal record unencodable after the command was applied
    eng, rid = live
    for call, cls, field in [(lambda: eng.register_skus([bad]), errors.InvalidArgument, "skus[0]"),
                             (lambda: eng.sell(LOC, SKU, 1, request_id=bad), errors.InvalidArgument, "request_id"),
                             (lambda: eng.route_order(order(id=bad)), errors.InvalidOrder, "id"),
                             (lambda: eng.route_order(order(channel=bad)), errors.InvalidOrder, "channel"),
                             (lambda: eng.set_channel_rule(bad, ChannelRule()), errors.InvalidArgument, "channel"),
                             (lambda: eng.upsert_locations([pyomni.Location(bad, pyomni.LocationKind.STORE, 31.0,
                                                                           121.0)]),
                              errors.InvalidArgument, "locations[0].id")]:
        check_rejected(eng, snapshot, call, cls, field)
    eng.stock_table()


def test_a_journaled_engine_records_what_it_applied(tmp_path, city_net, clock):
    # kinds and capabilities given as names were recorded as names, and a replay could not rebuild them; a record
    # the journal cannot hold now stops the engine (StorageFailed) instead of leaving memory ahead of the disk
    eng = pyomni.Engine.open(tmp_path, city_net, clock=clock, fsync="always")
    eng.upsert_locations([pyomni.Location("NEW-1", "warehouse", 31.0, 121.0, capabilities="ship")])
    eng.register_skus(["SKU-Ω"])
    eng.close()
    again = pyomni.Engine.load(tmp_path, clock=clock)
    assert again.network.location("NEW-1").kind is pyomni.LocationKind.WAREHOUSE and "SKU-Ω" in again.skus
    from pyomni.commands import RegisterSkus
    eng = pyomni.Engine.open(tmp_path, clock=clock, fsync="always")
    with pytest.raises(errors.StorageFailed):
        eng._execute(RegisterSkus(("\ud800",)))      # past the public checks: what a bug would do
    assert eng.storage_failure is not None
    eng.close()
    assert "\ud800" not in pyomni.Engine.load(tmp_path, clock=clock).skus


def test_codec_refuses_what_it_cannot_encode_with_a_typed_error():
    from pyomni import codec
    for value in (2**70, "\ud800", object()):
        with pytest.raises(errors.InvalidArgument):
            codec.encode(value)


@pytest.mark.parametrize(("call", "cls"), [
    (lambda e, d: e.save(5), errors.InvalidArgument),
    (lambda e, d: e.save("a\x00b"), errors.InvalidArgument),
    (lambda e, d: e.save(d / ("n" * 300)), errors.StorageFailed),
    (lambda e, d: pyomni.Engine.load(True), errors.InvalidArgument),
    (lambda e, d: pyomni.Engine.load(d / ("n" * 300)), errors.StorageFailed),
    (lambda e, d: pyomni.Engine.open(d / ("n" * 300), e.network), errors.StorageFailed),
    (lambda e, d: pyomni.Engine.open(d / "x", e.network, bogus=1), errors.InvalidArgument),
    (lambda e, d: pyomni.Engine.open(d / "x", e.network, interval_ms=1e300), errors.InvalidArgument),
    (lambda e, d: pyomni.Engine.open(d / "x", e.network, segment_bytes=2.5), errors.InvalidArgument),
    (lambda e, d: pyomni.Engine.open(d / "x", "network"), errors.InvalidArgument),
], ids=["save-int", "save-nul", "save-name-too-long", "load-bool", "load-name-too-long", "open-name-too-long",
        "open-unknown-option", "open-interval", "open-segment", "open-network-str"])
def test_directories_and_options(live, tmp_path, call, cls):
    # Path(5) raised TypeError, a NUL ValueError, a 300-character name OSError; an unknown option TypeError
    eng, _ = live
    with pytest.raises(errors.PyomniError) as info:
        call(eng, tmp_path)
    assert type(info.value) is cls
    assert len(str(info.value)) <= 500


def test_a_feed_exports_only_to_a_path(live, tmp_path):
    eng, _ = live
    feed = eng.channel_feed(None, start=False)
    try:
        for bad in (None, 5, "a\x00b"):
            with pytest.raises(errors.InvalidArgument):
                feed.export(bad)           # None used to write a file named "None" in the working directory
        with pytest.raises(errors.InvalidArgument) as info:
            feed.export(tmp_path / "no" / "such" / "dir.parquet")
        assert info.value.field == "path"
    finally:
        feed.close()


def test_what_a_command_makes_due_is_done_at_once(live, snapshot, clock):
    # a sale moved to start in the past, or a hold with a tiny ttl, used to wait for the next command -- which
    # then changed the state first, even when it failed (and a query saw a SCHEDULED sale whose window was open)
    eng, _ = live
    eng.create_sale(pyomni.FlashSale("later", ("SKU-B",), clock.now + 600, clock.now + 900, 3, (("SH-PEOPLE", 2),)))
    eng.update_sale(pyomni.FlashSale("later", ("SKU-B",), clock.now - 1, clock.now + 900, 3, (("SH-PEOPLE", 2),)))
    assert eng.sale_counters("later").state is pyomni.SaleState.ACTIVE
    a = eng.route_order(order(id="o-brief"), ttl=5e-324)
    assert eng.reservation(a.reservation_id).state is pyomni.ReservationState.EXPIRED
    check_rejected(eng, snapshot, lambda: eng.set_stock("XX", SKU, 1), errors.UnknownLocation, "location")


def test_route_columns_refuses_line_counts_that_do_not_add_up(live, snapshot):
    # a negative count made np.repeat raise ValueError
    eng, _ = live
    check_rejected(eng, snapshot, lambda: eng.route_columns(["a", "b"], [-1, 2], [SKU], [1], [31.2, 31.2],
                                                            [121.4, 121.4]), errors.InvalidArgument, "line_counts")
    check_rejected(eng, snapshot, lambda: eng.route_columns(["a"], [2**40], [SKU], [1], [31.2], [121.4]),
                   errors.InvalidArgument, "line_counts")


@pytest.mark.parametrize(("make", "field"), [
    (lambda: RoutingPolicy(split_penalty=10**5000), "split_penalty"),     # was OverflowError
    (lambda: RoutingPolicy(cost_per_km=True), "cost_per_km"),
    (lambda: RoutingPolicy(version=2**64), "version"),                     # unencodable in the journal
    (lambda: RoutingPolicy(name="a\x00"), "name"),
    (lambda: ChannelRule(share=True), "share"),
    (lambda: ChannelRule(buffer=2**70), "buffer"),
    (lambda: pyomni.FlashSale("s", ("SKU-A", 5), 0.0, 1.0, 1, (("SH-PEOPLE", 1),)), "skus[1]"),
    (lambda: pyomni.FlashSale("s", ("SKU-A",), 0.0, 1.0, 1, (("SH-PEOPLE", 1),), title="\ud800"), "title"),
    (lambda: pyomni.FlashSale("s", ("SKU-A",), 0.0, 1.0, 1, (("SH-PEOPLE", 1),), earmark=1), "earmark"),
    (lambda: pyomni.Capability.parse(1.5), "capabilities"),                # was TypeError
    (lambda: pyomni.Capability.parse(["ship", 5]), "capabilities"),
    (lambda: pyomni.Engine(pyomni.demo_network(stores=2, warehouses=0, skus=1), channels="tmall"), "channels"),
    (lambda: pyomni.Engine(pyomni.demo_network(stores=2, warehouses=0, skus=1), clock=5), "clock"),
    (lambda: pyomni.set_config(native="yes"), "native"),
    (lambda: pyomni.demo_network(stores=10**12), "stores"),               # was MemoryError
    (lambda: pyomni.demo_stock(pyomni.demo_network(stores=2, warehouses=0, skus=1), density=True), "density"),
    (lambda: pyomni.Network.from_records([{"id": "a\x00", "lat": 1, "lon": 1}]), "locations[0].id"),
    (lambda: pyomni.Network.from_records([{"id": "A", "lat": 1, "lon": 1}], skus=["\ud800"]), "skus[0]"),
], ids=["policy-huge", "policy-bool", "policy-version", "policy-name", "rule-bool", "rule-huge", "sale-sku",
        "sale-title", "sale-earmark", "capability-float", "capability-int", "engine-channels", "engine-clock",
        "set_config", "demo-stores", "demo-density", "network-id", "network-sku"])
def test_value_classes_and_module_functions(make, field):
    with pytest.raises(errors.InvalidArgument) as info:
        make()
    assert info.value.field == field


@pytest.mark.parametrize(("make", "cls", "field"), [
    (lambda: Order("o", "AB", destination=SHANGHAI), errors.InvalidOrder, "lines"),
    (lambda: Order("o", ["AB"], destination=SHANGHAI), errors.InvalidOrder, "lines[0]"),
    (lambda: Order("o", [(SKU, 1)], destination="31,121"), errors.InvalidCoordinates, "destination"),
    (lambda: Order("o", [(SKU, 1)], destination=SHANGHAI, fulfilment=True), errors.InvalidOrder, "fulfilment"),
    (lambda: Order("o", [(SKU, 1)], destination=SHANGHAI, fulfilment=2.0), errors.InvalidOrder, "fulfilment"),
    (lambda: Order("o", {SKU: 1}, destination=SHANGHAI), errors.InvalidOrder, "lines"),
])
def test_orders_refuse_what_would_iterate_into_nonsense(make, cls, field):
    # a two-character string line unpacked into a SKU and a quantity; a string destination into two characters
    with pytest.raises(cls) as info:
        make()
    assert info.value.field == field


def test_read_stock_events_refuses_a_repeated_column():
    # Table.column(name) raised KeyError for a name the table has twice
    table = pa.Table.from_arrays([pa.array([LOC]), pa.array([SKU]), pa.array([1]), pa.array([2])],
                                 names=["location", "sku", "qty", "qty"])
    with pytest.raises(errors.InvalidArgument) as info:
        pyomni.io.read_stock_events(table)
    assert info.value.field == "qty"
