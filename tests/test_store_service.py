"""StoreService end to end: an in-process server on port 0 over an engine on a fake clock, called through
:class:`pyomni.Client`, raw stubs and the ``pyomni store`` / ``pyomni settle`` commands.

* the order feed (``WatchStoreOrders``): a routed shipment reaches its store's feed; every step of its life
  follows; a rejection re-routes it and the new store's feed gets it; a feed resumed from its last sequence
  number after a disconnect misses nothing and repeats nothing; resuming from 0 (or from a sequence the
  server never issued) is a reset; heartbeats come while nothing happens; a stopping server ends its feeds
  and a cancelled feed gives its server thread back;
* the steps, rejections, returns, order exceptions, store rules and attribution rules over the wire, with
  errors mapped to their status codes and ``ErrorInfo`` reasons;
* the settlement export comes back as the table :meth:`pyomni.Engine.settlement` gives;
* ``pyomni serve`` gives a new data directory the default store time limits (unless told not to);
* the CLI: ``store watch`` (a child process, stopped with Ctrl-C), ``store accept`` / ``reject``,
  ``settle --out`` and ``route`` with prices.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pyarrow.parquet as pq
import pytest
from conftest import SHANGHAI, FakeClock, make_city_net
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import pyomni
from grpc_server import ServerConfig, create_server
from grpc_server.server import _open_engine
from pyomni import Line, Order, errors
from pyomni.cli import main
from pyomni.fulfilment import ExceptionState, OpeningHours, RejectReason, ShipmentState, StoreRules
from pyomni.settlement import SPLIT_361, AttributionRule
from pyomni.v1 import stores_pb2, stores_pb2_grpc
from pyomni.wire import (
    attribution_rule_from_pb,
    attribution_rule_to_pb,
    order_from_pb,
    order_to_pb,
    store_rules_from_pb,
    store_rules_to_pb,
)

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

C = grpc.StatusCode
S = ShipmentState
PEOPLE, PUDONG = "SH-PEOPLE", "SH-PUDONG"
#: Every hour of every day: the tests' clock (06:13 in Shanghai) is outside the default opening hours.
ROUND_THE_CLOCK = OpeningHours(0, 1440)
DAY = "2023-11-15"                  # the fake clock's business day in China


@pytest.fixture
def served():
    """An engine on a fake clock, its server, a client, a raw stub, and the server's ``stopping`` event."""
    clock = FakeClock()
    eng = pyomni.Engine(make_city_net(), clock=clock)
    stopping = threading.Event()
    server, port = create_server("127.0.0.1:0", eng, workers=16, clock=clock, stopping=stopping)
    server.start()
    address = f"127.0.0.1:{port}"
    client = pyomni.Client(address, timeout=10)
    client.wait_ready()
    channel = grpc.insecure_channel(address)
    try:
        yield SimpleNamespace(eng=eng, clock=clock, client=client, address=address, channel=channel,
                              stub=stores_pb2_grpc.StoreServiceStub(channel), stopping=stopping)
    finally:
        client.close()
        channel.close()
        stopping.set()
        server.stop(0.5).wait(5)


class Reader:
    """A feed read on a thread of its own: its batches queue up for the test to take."""

    def __init__(self, feed: Any) -> None:
        self.feed = feed
        self.batches: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for batch in self.feed:
                self.batches.put(batch)
            self.batches.put(None)                      # the feed ended
        except errors.PyomniError as exc:
            self.batches.put(exc)

    def next(self, timeout: float = 10.0) -> Any:
        batch = self.batches.get(timeout=timeout)
        if isinstance(batch, Exception):
            raise batch
        return batch

    def events(self, n: int, timeout: float = 10.0) -> list[Any]:
        """The next ``n`` events (heartbeats skipped)."""
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            batch = self.next(max(0.01, deadline - time.monotonic()))
            assert batch is not None, "the feed ended"
            out.extend(batch.events)
        assert len(out) == n, out
        return out

    def close(self) -> None:
        self.feed.cancel()
        self.thread.join(5)
        assert not self.thread.is_alive()


def _route(eng: pyomni.Engine, order_id: str, sku: str, *, at: tuple[str, ...] = (PEOPLE,), qty: int = 1,
           price: int = 0, **order: Any) -> Any:
    """Stock ``qty`` of ``sku`` at the stores ``at`` only, and route an order for it from Shanghai."""
    for store in at:
        eng.set_stock(store, sku, eng.stock(store, sku).on_hand + qty)
    order.setdefault("destination", SHANGHAI)
    a = eng.route_order(Order(order_id, [Line(sku, qty, price)], **order))
    assert a.reservation_id is not None and a.shipments[0].location in at
    return a


def _sid(eng: pyomni.Engine, order_id: str) -> str:
    """The id of an order's newest shipment (its only one, unless it was re-routed)."""
    return eng.shipments(order_id=order_id, open_only=False)[-1].id


def _status(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str, str]:
    st = rpc_status.from_call(exc)
    assert st is not None
    for d in st.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            return exc.code(), info.reason, info.metadata.get("field", "")
    raise AssertionError(f"no ErrorInfo in {st}")


def _fails(call: Any, *args: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        answer = call(*args, timeout=10, **kwargs)
        if hasattr(answer, "__next__"):
            next(answer)
    return _status(caught.value)


# -- the order feed --------------------------------------------------------------------------------
def test_a_feed_sees_a_routed_shipment(served):
    eng, client = served.eng, served.client
    _route(eng, "o-0", "SKU-A", at=(PUDONG,))          # another store's: the engine has store events
    feed = Reader(client.watch_store_orders([PEOPLE]))
    first = feed.next()
    assert first.reset and first.events == () and not first.heartbeat and first.last_seq == eng.store_seq
    a = _route(eng, "o-1", "SKU-A", qty=2)
    (event,) = feed.events(1)
    sid = _sid(eng, "o-1")
    assert (event.kind, event.location, event.shipment.id, event.seq) == ("ROUTED", PEOPLE, sid, eng.store_seq)
    assert event.shipment == eng.shipment(sid)
    assert event.shipment.reservation_id == a.reservation_id and event.shipment.lines == (Line("SKU-A", 2),)
    feed.close()


def test_a_feed_on_an_engine_without_store_events_waits_for_the_first(served):
    eng, client = served.eng, served.client
    assert eng.store_seq == 0
    feed = Reader(client.watch_store_orders([PEOPLE], heartbeat=0.1))
    first = feed.next()
    assert first.reset and first.events == () and first.last_seq == 0
    time.sleep(0.35)
    quiet = [feed.next(0) for _ in range(feed.batches.qsize())]
    assert 1 <= len(quiet) <= 5 and all(b.heartbeat for b in quiet)     # heartbeats, no stream of resets
    _route(eng, "o-1", "SKU-A")
    (event,) = feed.events(1)
    # "after 0" is always a reset in the engine, so the first event of its life comes as one
    assert event.kind in ("RESET", "ROUTED") and event.shipment.id == _sid(eng, "o-1")
    feed.close()


def test_accept_pick_pack_ship_after_confirm(served):
    eng, client = served.eng, served.client
    a = _route(eng, "o-1", "SKU-A")
    sid = _sid(eng, "o-1")
    feed = Reader(client.watch_store_orders(PEOPLE))
    reset = feed.next()
    assert reset.reset and [(e.kind, e.shipment.id) for e in reset.events] == [("RESET", sid)]
    accepted = client.accept_shipment(sid, request_id="acc-1")
    assert accepted.state is S.ACCEPTED
    assert client.accept_shipment(sid, request_id="acc-1") == accepted        # a retry answers as the first time
    assert client.pick_shipment(sid).state is S.PICKED
    assert client.pack_shipment(sid).state is S.PACKED
    with pytest.raises(errors.ShipmentStateConflict):                         # not paid yet: the goods stay
        client.ship_shipment(sid)
    client.confirm(a.reservation_id)
    shipped = client.ship_shipment(sid)
    assert shipped.state is S.SHIPPED and shipped == eng.shipment(sid)
    assert [e.kind for e in feed.events(4)] == ["ACCEPTED", "PICKED", "PACKED", "SHIPPED"]
    assert client.list_shipments(PEOPLE) == []
    assert client.list_shipments(PEOPLE, include_closed=True) == [shipped]
    feed.close()


def test_the_pickup_path_ready_then_collected(served):
    eng, client = served.eng, served.client
    a = _route(eng, "o-p", "SKU-B", destination=None, pickup_location=PEOPLE)
    sid = _sid(eng, "o-p")
    assert client.shipment(sid).pickup
    assert client.ready_shipment(sid).state is S.READY_FOR_PICKUP
    with pytest.raises(errors.ShipmentStateConflict):
        client.collect_shipment(sid)
    client.confirm(a.reservation_id)
    assert client.collect_shipment(sid).state is S.COLLECTED


def test_a_rejection_reroutes_and_the_new_stores_feed_gets_it(served):
    eng, client = served.eng, served.client
    _route(eng, "o-1", "SKU-B", at=(PEOPLE, PUDONG))
    (first,) = eng.shipments(order_id="o-1")
    other = PUDONG if first.location == PEOPLE else PEOPLE
    feed = Reader(client.watch_store_orders([other]))
    assert feed.next().reset
    rejection = client.reject_shipment(first.id, "no_staff", note="two people off sick")
    assert rejection.shipment.state is S.REJECTED and rejection.shipment.reason is RejectReason.NO_STAFF
    assert rejection.shipment.note == "two people off sick" and rejection.exception is None
    assert rejection.discrepancies == ()
    (moved,) = rejection.new_shipments
    assert moved.location == other and moved.state is S.ROUTED
    (event,) = feed.events(1)
    assert (event.kind, event.shipment) == ("ROUTED", moved)
    assert rejection.shipment == eng.shipment(first.id) and moved == eng.shipment(moved.id)
    feed.close()


def test_a_damaged_rejection_with_nowhere_else_raises_an_order_exception(served):
    eng, client = served.eng, served.client
    _route(eng, "o-1", "SKU-C", qty=2)
    sid = _sid(eng, "o-1")
    rejection = client.reject_shipment(sid, RejectReason.DAMAGED)
    assert rejection.new_shipments == () and rejection.discrepancies == ((PEOPLE, "SKU-C", 2),)
    exc = rejection.exception
    assert exc is not None and exc.state is ExceptionState.OPEN and exc.shipment_id == sid
    assert client.order_exceptions() == [exc] == eng.order_exceptions()
    done = client.resolve_exception(exc.id, note="refunded the customer")
    assert done.state is ExceptionState.RESOLVED and done.resolution == "refunded the customer"
    assert done.resolved_at == served.clock.now
    assert client.order_exceptions() == []
    assert client.order_exceptions(include_resolved=True) == [done]


def test_resuming_after_a_disconnect_misses_nothing_and_repeats_nothing(served):
    eng, client = served.eng, served.client
    feed = Reader(client.watch_store_orders([PEOPLE, PUDONG]))
    assert feed.next().reset
    for i in range(3):
        _route(eng, f"o-{i}", "SKU-A")
    client.accept_shipment(_sid(eng, "o-0"))
    seen = feed.events(4)
    last = seen[-1].seq
    feed.close()
    # while the terminal is away: steps, a rejection that moves one order to the other store, new orders
    client.pick_shipment(_sid(eng, "o-0"))
    eng.set_stock(PUDONG, "SKU-A", 5)
    client.reject_shipment(_sid(eng, "o-1"), "over_capacity")
    for i in range(3, 5):
        _route(eng, f"o-{i}", "SKU-A", at=(PEOPLE, PUDONG))
    expected = [(e.seq, e.location, e.kind, e.shipment) for e in eng.store_events([PEOPLE, PUDONG], last).events]
    assert len(expected) >= 5
    feed = Reader(client.watch_store_orders([PEOPLE, PUDONG], after_seq=last, heartbeat=0.2))
    got = feed.events(len(expected))
    assert [(e.seq, e.location, e.kind, e.shipment) for e in got] == expected
    assert all(a.seq < b.seq for a, b in zip(got, got[1:])) and got[0].seq > last
    quiet = feed.next()                                         # nothing more: the next batch is a heartbeat
    assert quiet.heartbeat and quiet.events == () and quiet.last_seq == eng.store_seq
    feed.close()


def test_resuming_from_0_or_from_a_sequence_never_issued_is_a_reset(served):
    eng, client = served.eng, served.client
    _route(eng, "o-1", "SKU-A")
    _route(eng, "o-2", "SKU-B")
    client.accept_shipment(_sid(eng, "o-2"))
    open_now = eng.shipments(PEOPLE)
    for after in (0, eng.store_seq + 100):             # 0, or a sequence of another server's life
        with client.watch_store_orders([PEOPLE], after_seq=after) as feed:
            batch = next(feed)
        assert batch.reset and batch.last_seq == eng.store_seq
        assert [e.kind for e in batch.events] == ["RESET", "RESET"]
        assert [e.shipment for e in batch.events] == open_now
        assert {e.seq for e in batch.events} == {eng.store_seq}


def test_heartbeats_come_while_nothing_happens(served):
    eng, client = served.eng, served.client
    _route(eng, "o-1", "SKU-A", at=(PUDONG,))               # another store's event: not this feed's
    start = time.monotonic()
    with client.watch_store_orders([PEOPLE], heartbeat=0.1) as feed:
        assert next(feed).reset
        beats = [next(feed), next(feed)]
    assert time.monotonic() - start >= 0.19
    for beat in beats:
        assert beat.heartbeat and beat.events == () and not beat.reset
        assert beat.last_seq == eng.store_seq and beat.server_time == served.clock.now


def test_seconds_left_count_down_by_the_servers_clock(served):
    eng, client, clock = served.eng, served.client, served.clock
    client.set_store_rules(None, StoreRules(hours=ROUND_THE_CLOCK, answer_s=900.0))
    _route(eng, "o-1", "SKU-A")
    sid = _sid(eng, "o-1")
    msg = served.stub.GetShipment(stores_pb2.GetShipmentRequest(shipment_id=sid), timeout=10)
    assert msg.due_at == clock.now + 900 and msg.seconds_left == 900.0
    clock.advance(100)
    assert served.stub.GetShipment(stores_pb2.GetShipmentRequest(shipment_id=sid), timeout=10).seconds_left == 800
    with client.watch_store_orders([PEOPLE]) as feed:
        batch = next(feed)
    assert batch.seconds_left(batch.events[0]) == 800.0
    client.accept_shipment(sid)                         # the pick limit (default 2 h) replaces the answer limit
    assert client.shipment(sid).due_at == clock.now + 7200


def test_a_shipment_nobody_answers_times_out_and_moves_to_the_next_stores_feed(served):
    eng, client, clock = served.eng, served.client, served.clock
    client.set_store_rules(None, StoreRules(hours=ROUND_THE_CLOCK, answer_s=60.0))
    _route(eng, "o-1", "SKU-A", at=(PEOPLE, PUDONG))
    (first,) = eng.shipments(order_id="o-1")
    other = PUDONG if first.location == PEOPLE else PEOPLE
    feed = Reader(client.watch_store_orders([PEOPLE, PUDONG]))
    assert len(feed.next().events) == 1                 # the reset: the one open shipment
    clock.advance(61)
    eng.expire_due()                                    # what the server's sweeper does every second
    rejected, routed = feed.events(2)
    assert (rejected.kind, rejected.shipment.id, rejected.shipment.reason) == ("REJECTED", first.id,
                                                                                RejectReason.TIMEOUT)
    assert (routed.kind, routed.location) == ("ROUTED", other)
    feed.close()


def test_a_stopping_server_ends_its_feeds_at_once(served):
    feed = Reader(served.client.watch_store_orders([PEOPLE], heartbeat=300))
    assert feed.next().reset
    served.stopping.set()
    with pytest.raises(errors.Unavailable) as caught:
        feed.next(timeout=5)
    assert caught.value.field == "after_seq"


def test_a_cancelled_feed_gives_its_thread_back(tmp_path):
    eng = pyomni.Engine(make_city_net(), clock=FakeClock())
    server, port = create_server("127.0.0.1:0", eng, workers=4)
    server.start()
    try:
        with pyomni.Client(f"127.0.0.1:{port}", timeout=10) as client:
            feeds = [client.watch_store_orders([PEOPLE], heartbeat=300) for _ in range(4)]
            for f in feeds:
                assert next(f).reset
                f.cancel()
            start = time.monotonic()
            with ThreadPoolExecutor(4) as pool:         # four calls at once need all four threads back
                assert list(pool.map(lambda _: client.echo(b"x", timeout=5), range(4))) == [b"x"] * 4
            assert time.monotonic() - start < 4
    finally:
        server.stop(0.5).wait(5)


# -- errors ------------------------------------------------------------------------------------------
def test_errors_map_to_their_codes_and_reasons(served):
    eng, stub, client = served.eng, served.stub, served.client
    a = _route(eng, "o-1", "SKU-A")
    sid = _sid(eng, "o-1")
    unknown = "R0000000099-1"
    checks = [
        (stub.GetShipment, stores_pb2.GetShipmentRequest(shipment_id=unknown),
         (C.NOT_FOUND, "UNKNOWN_SHIPMENT", "shipment_id")),
        (stub.MarkShipped, stores_pb2.MarkShippedRequest(shipment_id=sid),
         (C.FAILED_PRECONDITION, "SHIPMENT_STATE", "shipment_id")),
        (stub.MarkReady, stores_pb2.MarkReadyRequest(shipment_id=sid),      # not a step of a delivery
         (C.FAILED_PRECONDITION, "SHIPMENT_STATE", "action")),
        (stub.RejectShipment, stores_pb2.RejectShipmentRequest(shipment_id=sid),
         (C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "reason")),
        (stub.RejectShipment,
         stores_pb2.RejectShipmentRequest(shipment_id=sid, reason=stores_pb2.REJECT_REASON_TIMEOUT),
         (C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "reason")),
        (stub.RejectShipment, stores_pb2.RejectShipmentRequest(shipment_id=sid, reason=42),
         (C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "reason")),
        (stub.ReturnLine, stores_pb2.ReturnLineRequest(shipment_id=sid, sku="SKU-A", qty=1, location=PEOPLE),
         (C.FAILED_PRECONDITION, "RETURN_NOT_ALLOWED", "shipment_id")),
        (stub.ResolveOrderException, stores_pb2.ResolveOrderExceptionRequest(exception_id="X0000000009"),
         (C.NOT_FOUND, "UNKNOWN_ORDER_EXCEPTION", "exception_id")),
        (stub.SetChannelAttribution, stores_pb2.SetChannelAttributionRequest(channel="tmall", rule="nope@1"),
         (C.NOT_FOUND, "UNKNOWN_ATTRIBUTION_RULE", "rule")),
        (stub.ListShipments, stores_pb2.ListShipmentsRequest(page_token="not ours"),
         (C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "page_token")),
        (stub.GetStoreRules, stores_pb2.GetStoreRulesRequest(location="XX-NOWHERE"),
         (C.NOT_FOUND, "UNKNOWN_LOCATION", "location")),
        (stub.SetStoreRules, stores_pb2.SetStoreRulesRequest(rules=stores_pb2.StoreRules(
            hours=stores_pb2.OpeningHours(open_minute=600, close_minute=540))),
         (C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "rules.hours.close_minute")),
        (stub.RegisterAttributionRule, stores_pb2.RegisterAttributionRuleRequest(rule=stores_pb2.AttributionRule(
            name="bad", selling_bp=5000, fulfilling_bp=6000, coupon_hq_bp=10000)),
         (C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "rule.hq_bp")),
        (stub.ExportSettlement, stores_pb2.ExportSettlementRequest(day="11/11/2026"),
         (C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "day")),
        (stub.WatchStoreOrders, stores_pb2.WatchStoreOrdersRequest(locations=[PEOPLE], heartbeat_seconds=0.01),
         (C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "heartbeat_seconds")),
        (stub.WatchStoreOrders, stores_pb2.WatchStoreOrdersRequest(),
         (C.INVALID_ARGUMENT, "INVALID_ARGUMENT", "locations")),
        (stub.WatchStoreOrders, stores_pb2.WatchStoreOrdersRequest(locations=["XX-NOWHERE"]),
         (C.NOT_FOUND, "UNKNOWN_LOCATION", "locations")),
    ]
    lsn = eng.lsn
    for call, request, expected in checks:
        assert _fails(call, request) == expected, (call, request)
    assert eng.lsn == lsn                               # nothing that failed changed anything
    # the client raises the same classes
    with pytest.raises(errors.UnknownShipment):
        client.accept_shipment(unknown)
    with pytest.raises(errors.InvalidArgument):
        client.reject_shipment(sid, "teleported")
    with pytest.raises(errors.ReturnNotAllowed):
        client.return_line(sid, "SKU-A", 1, location=PEOPLE)
    with pytest.raises(errors.UnknownLocation):
        next(client.watch_store_orders(["XX-NOWHERE"]))
    client.confirm(a.reservation_id)
    client.ship_shipment(sid)
    with pytest.raises(errors.ReturnNotAllowed) as caught:
        client.return_line(sid, "SKU-A", 2, location=PUDONG)
    assert caught.value.field == "qty"


# -- values over the wire ---------------------------------------------------------------------------
def test_the_wire_enums_are_the_python_values():
    for enum_cls, pb_enum, prefix in ((ShipmentState, stores_pb2.ShipmentState, "SHIPMENT_STATE_"),
                                      (RejectReason, stores_pb2.RejectReason, "REJECT_REASON_"),
                                      (ExceptionState, stores_pb2.ExceptionState, "EXCEPTION_STATE_")):
        assert {m.name: int(m) for m in enum_cls} == {n[len(prefix):]: v for n, v in pb_enum.items() if v}


def test_priced_orders_rules_and_store_rules_round_trip_on_the_wire():
    order = Order("o-1", [Line("SKU-A", 2, 1999), Line("SKU-B", 1, 0)], destination=SHANGHAI, channel="tmall",
                  coupon_cents=300, attribution="split-361@1", selling_store=PEOPLE)
    assert order_from_pb(order_to_pb(order)) == order
    plain = Order("o-2", [("SKU-A", 1)], pickup_location=PEOPLE)
    assert order_from_pb(order_to_pb(plain)) == plain
    rules = (StoreRules(), StoreRules(hours=OpeningHours(0, 1440, 0, (6, 7)), answer_s=60.0, return_days=0),
             StoreRules(hours=OpeningHours(540, 1260, -300), collect_days=7, same_day_pick_s=600.0))
    for r in rules:
        assert store_rules_from_pb(store_rules_to_pb(r)) == r
    assert store_rules_from_pb(stores_pb2.StoreRules()) == StoreRules()       # all defaults
    for rule in (SPLIT_361, AttributionRule("f", fee_cents=250, franchise_coupon_hq_bp=5000,
                                            franchise_coupon_fulfilling_bp=5000),
                 AttributionRule("reg", version=3, fulfilling_bp=0, home_bp=10000, home="region",
                                 regional_stores={31: PEOPLE, 44: "GZ-TIANHE"})):
        msg = attribution_rule_to_pb(rule)
        assert msg.key == rule.key and attribution_rule_from_pb(msg) == rule


def test_store_rules_and_attribution_over_the_service(served):
    eng, client = served.eng, served.client
    assert client.store_rules() is None and client.store_rules(PEOPLE) is None    # a fresh engine: no limits
    default = StoreRules(hours=OpeningHours(540, 1260, 480, (7,)), answer_s=600.0, return_days=0)
    assert client.set_store_rules(None, default) == default == eng.store_rules()
    assert client.store_rules(PEOPLE) == default                                  # the default is in force there
    own = StoreRules(hours=ROUND_THE_CLOCK, answer_s=120.0)
    assert client.set_store_rules(PEOPLE, own) == own == eng.store_rules(PEOPLE)
    assert client.set_store_rules(PEOPLE, None) == default                        # removed: back to the default
    assert client.set_store_rules(None, None) is None and client.store_rules(PEOPLE) is None
    rule = AttributionRule("split-361", version=2, selling_bp=3000, fulfilling_bp=6000, home_bp=1000, fee_cents=100)
    assert client.register_attribution_rule(rule) == rule
    assert client.set_attribution("tmall", "split-361") == rule                   # a name: its newest version
    assert eng.attribution_rule(channel="tmall") == rule
    assert client.set_attribution("tmall", None) == eng.attribution_rule("fulfiller")   # back to the default
    assert client.set_attribution(None, rule.key) == rule == eng.attribution_rule(channel="jd")


def test_list_shipments_pages_through_every_shipment(served):
    eng, client = served.eng, served.client
    for i in range(7):
        _route(eng, f"o-{i}", "SKU-D", at=(PEOPLE, PUDONG))
    assert client.list_shipments(page_size=2) == eng.shipments()
    assert client.list_shipments(PEOPLE, page_size=3) == eng.shipments(PEOPLE)
    assert [s.order_id for s in client.list_shipments(order_id="o-3")] == ["o-3"]
    first = served.stub.ListShipments(stores_pb2.ListShipmentsRequest(page_size=7), timeout=10)
    assert len(first.shipments) == 7 and not first.next_page_token


# -- settlement ---------------------------------------------------------------------------------------
def _sell_and_return(eng: pyomni.Engine, client: pyomni.Client) -> None:
    """Priced orders over the wire, shipped (one under the 3-6-1 rule), and a unit of one returned."""
    client.register_attribution_rule(SPLIT_361)
    client.set_attribution("tmall", SPLIT_361.key)
    for i, (channel, price) in enumerate((("tmall", 1999), ("app", 4550))):
        eng.set_stock(PEOPLE, "SKU-A", eng.stock(PEOPLE, "SKU-A").on_hand + 3)
        a = client.route_order(Order(f"paid-{i}", [Line("SKU-A", 3, price)], destination=SHANGHAI,
                                     channel=channel, coupon_cents=300, selling_store=PUDONG if i else None))
        client.confirm(a.reservation_id)
        client.ship_shipment(_sid(eng, f"paid-{i}"))
    record = client.return_line(_sid(eng, "paid-0"), "SKU-A", 1, location=PUDONG)
    assert (record.qty, record.location, record.restocked) == (1, PUDONG, True) and record in eng.returns()


def test_the_settlement_export_is_the_engines_settlement(served):
    eng, client = served.eng, served.client
    empty = client.export_settlement()
    assert empty.num_rows == 0 and empty.schema == eng.settlement().schema
    _sell_and_return(eng, client)
    facts = eng.settlement_facts()
    assert facts.column("gross_cents").to_pylist() == [3 * 1999, 3 * 4550, 0]
    daily = client.export_settlement()
    assert daily.num_rows > 0 and daily.equals(eng.settlement())
    assert client.export_settlement(entries=True).equals(eng.settlement(entries=True))
    assert client.export_settlement(DAY).equals(eng.settlement(day=DAY))
    assert client.export_settlement("2023-11-16").num_rows == 0


# -- pyomni serve -----------------------------------------------------------------------------------------
def test_serve_sets_the_default_store_rules_on_a_new_data_directory_only(tmp_path):
    small = {"stores": 4, "warehouses": 1, "skus": 3, "seed": 1, "fsync": "never"}
    eng = _open_engine(ServerConfig(data_dir=str(tmp_path / "a"), **small))
    assert eng.store_rules() == StoreRules()            # 15-minute answers, 10:00-22:00 China time
    eng.set_store_rules(None, StoreRules(answer_s=300.0))
    eng.close()
    again = _open_engine(ServerConfig(data_dir=str(tmp_path / "a"), store_limits=False, **small))
    assert again.store_rules() == StoreRules(answer_s=300.0)          # an existing directory keeps its own
    again.close()
    bare = _open_engine(ServerConfig(data_dir=str(tmp_path / "b"), store_limits=False, **small))
    assert bare.store_rules() is None
    bare.close()


def test_serve_takes_no_store_limits_and_many_workers():
    import argparse

    from pyomni.service_cli import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--no-store-limits"])
    assert args.no_store_limits and args.workers >= 512 and ServerConfig().workers >= 512


# -- the command line -----------------------------------------------------------------------------------
def _lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_cli_store_watch_prints_each_event_as_it_comes_and_ends_on_ctrl_c(served, as_json):
    eng = served.eng
    _route(eng, "o-1", "SKU-A", qty=2)
    cmd = [sys.executable, "-m", "pyomni.cli", "store", "watch", PEOPLE, "--address", served.address,
           "--heartbeat", "0.2", *(["--json"] if as_json else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = _lines_of(proc)
        first = lines.get(timeout=60)                   # the reset: the open shipment
        _route(eng, "o-2", "SKU-B")
        second = lines.get(timeout=20)
        proc.send_signal(signal.SIGINT)                 # Ctrl-C
        assert proc.wait(20) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    s1, s2 = _sid(eng, "o-1"), _sid(eng, "o-2")
    if as_json:
        a, b = json.loads(first), json.loads(second)
        assert (a["kind"], a["shipment_id"], a["lines"], a["reset"]) == ("RESET", s1, [{"sku": "SKU-A", "qty": 2}],
                                                                         True)
        assert (b["kind"], b["shipment_id"], b["seq"], b["location"]) == ("ROUTED", s2, eng.store_seq, PEOPLE)
        assert b["seconds_left"] is None and b["state"] == "ROUTED"
    else:
        assert first.split() == [str(eng.store_seq - 1), PEOPLE, "RESET", s1, "SKU-A:2", "-"]
        assert second.split() == [str(eng.store_seq), PEOPLE, "ROUTED", s2, "SKU-B:1", "-"]


def test_cli_store_accept_and_reject(served, capsys):
    eng = served.eng
    _route(eng, "o-1", "SKU-A")
    _route(eng, "o-2", "SKU-B")
    calling = ["--address", served.address]
    capsys.readouterr()
    assert main(["store", "accept", _sid(eng, "o-1"), *calling]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "ACCEPTED"
    assert main(["store", "reject", _sid(eng, "o-2"), "--reason", "not_found", "--note", "shelf empty",
                 *calling]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["shipment"]["state"] == "REJECTED" and answer["shipment"]["reason"] == "NOT_FOUND"
    assert answer["exception"]["state"] == "OPEN"                   # SKU-B is nowhere else
    assert main(["store", "exceptions", *calling]) == 0
    assert [x["id"] for x in json.loads(capsys.readouterr().out)] == [answer["exception"]["id"]]
    assert main(["store", "list", PEOPLE, *calling]) == 0
    assert [s["state"] for s in json.loads(capsys.readouterr().out)] == ["ACCEPTED"]
    assert main(["store", "accept", "R0000000099-1", *calling]) == 1
    assert json.loads(capsys.readouterr().err)["error"] == "UNKNOWN_SHIPMENT"
    with pytest.raises(SystemExit):                                 # a store cannot claim a timeout
        main(["store", "reject", _sid(eng, "o-1"), "--reason", "timeout", *calling])


@pytest.mark.parametrize("entries", [False, True], ids=["daily", "entries"])
def test_cli_settle_writes_the_settlement_as_parquet(served, capsys, tmp_path, entries):
    eng, client = served.eng, served.client
    _sell_and_return(eng, client)
    out = tmp_path / "settlement.parquet"
    capsys.readouterr()
    assert main(["settle", "--day", DAY, "--out", str(out), *(["--entries"] if entries else []),
                 "--address", served.address]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(out)
    assert pq.read_table(out).equals(eng.settlement(day=DAY, entries=entries))
    assert [p.name for p in Path(tmp_path).iterdir()] == ["settlement.parquet"]     # written atomically


def test_cli_route_carries_prices_and_a_coupon(served, capsys):
    eng = served.eng
    eng.set_stock(PEOPLE, "SKU-A", 5)
    capsys.readouterr()
    assert main(["route", "o-cli", "--line", "SKU-A:2:1999", "--coupon", "500", "--to", "31.2304,121.4737",
                 "--confirm", "--address", served.address]) == 0
    served.client.ship_shipment(_sid(eng, "o-cli"))
    (fact,) = eng.settlement_facts().to_pylist()
    assert (fact["qty"], fact["gross_cents"], fact["coupon_cents"]) == (2, 3998, 500)


# -- the README's store story, as a user runs it -------------------------------------------------------------
def _readme_store_commands() -> list[list[str]]:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("\n## Store operations")
    section = text[start:text.index("\n## ", start + 1)]
    out = []
    for block in section.split("```bash")[1:]:
        for line in block.split("```")[0].strip().splitlines():
            command = line.partition("  #")[0].split()
            assert command[0] == "pyomni"
            out.append(command[1:])
    return out


def test_the_readme_store_story_runs_on_a_new_server(tmp_path, capsys):
    from grpc_server.launch import ServerProcess

    watch, *steps = _readme_store_commands()
    assert watch[:2] == ["store", "watch"]
    with ServerProcess(tmp_path / "data", ["--fsync", "never", "--snapshot-every", "0"]) as server:
        calling = ["--address", server.address]
        proc = subprocess.Popen([sys.executable, "-m", "pyomni.cli", *watch, *calling], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            lines = _lines_of(proc)
            time.sleep(2.0)                                     # the tablet is subscribed before the orders come
            answers = []
            for argv in steps:
                argv = [x.replace("settlement.parquet", str(tmp_path / "settlement.parquet")) for x in argv]
                assert main([*argv, *calling]) == 0, argv
                answers.append(capsys.readouterr().out)
            seen = []
            deadline = time.time() + 30
            while len(seen) < 6 and time.time() < deadline:
                with contextlib.suppress(queue.Empty):          # nothing yet: look again until the deadline
                    seen.append(lines.get(timeout=1).split())
            proc.send_signal(signal.SIGINT)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # a feed from 0 starts with a reset: on a new server, the first shipment comes as the reset's RESET
    assert [x[2] for x in seen] == ["RESET", "ACCEPTED", "PACKED", "SHIPPED", "ROUTED", "REJECTED"]
    assert seen[1][1:5] == ["SH-0039", "ACCEPTED", "R0000000001-1", "SKU-000002:1"]
    # the pick limit is two hours of the store's opening time: 7200 s while it is open, more when the story
    # runs while the store is closed (the server runs on the real clock)
    assert re.fullmatch(r"\d+s", seen[1][5]) and 7_190 <= int(seen[1][5][:-1]) <= 7_200 + 86_400
    rejection = json.loads(answers[[a[:2] for a in steps].index(["store", "reject"])])
    assert rejection["new_shipments"] and rejection["new_shipments"][0]["location"] != "SH-0039"
    daily = pq.read_table(tmp_path / "settlement.parquet")
    assert sum(daily.column("net_cents").to_pylist()) == 19_900 - 1_000       # T-1 shipped; T-2 not yet
