"""Servicer of the store side: ``StoreService`` (order feeds, shipment steps, returns, exceptions, settlement).

Thin, like the others (``grpc_server.servicers``): decode, call the engine, encode; errors go through the
one status table (:mod:`grpc_server.status`). The one part that is more than translation is the order
feed, ``WatchStoreOrders``:

* it loops on :meth:`pyomni.Engine.wait_store_events` for the requested stores, which sleeps on those
  stores' events only (a busy engine does not wake every feed for every command) and answers only what
  is durable -- a store never acts on a shipment a crash would undo;
* a batch goes out as soon as events come (a reset batch, when the feed starts over, as it comes); after
  ``heartbeat_seconds`` without one, a heartbeat batch (no events, ``heartbeat`` set, the current
  ``last_seq``) tells the store terminal the feed is alive;
* it ends when the caller goes away, when the server begins to stop (``stopping``: the feeds end at
  once with UNAVAILABLE, so a shutdown does not wait out its grace for them and the terminals resume
  from their ``last_seq`` against the next server), or when the engine stops taking writes.

A feed holds one server thread while it is open (grpcio's synchronous server), mostly asleep: the server's
pool is sized for hundreds of feeds (see ``grpc_server.server.ServerConfig.workers``). The engine's wait
cannot be interrupted from outside, so a feed waits in slices of at most :data:`FEED_SLICE_S` and looks
in between whether its caller is still there: a feed that ended gives its thread back within that.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from pyomni import Engine, errors
from pyomni.fulfilment import ExceptionState, StoreShipment
from pyomni.v1 import stores_pb2, stores_pb2_grpc
from pyomni.wire import (
    attribution_rule_from_pb,
    attribution_rule_to_pb,
    order_exception_to_pb,
    reject_reason_from_pb,
    rejection_to_pb,
    return_record_to_pb,
    store_event_to_pb,
    store_rules_from_pb,
    store_rules_to_pb,
    store_shipment_to_pb,
)

from .selling import arrow_chunks
from .servicers import _decode_token, _encode_token, _page_size, _request_id, _rpc
from .status import abort_with

__all__ = ["StoreServicer", "DEFAULT_HEARTBEAT_S", "MIN_HEARTBEAT_S", "MAX_HEARTBEAT_S", "FEED_SLICE_S",
           "FEED_BATCH"]

#: Heartbeat interval of a feed that asks for none, and the bounds of one it asks for.
DEFAULT_HEARTBEAT_S = 5.0
MIN_HEARTBEAT_S = 0.05
MAX_HEARTBEAT_S = 300.0
#: Longest a feed sleeps before it looks whether its caller left or the server is stopping.
FEED_SLICE_S = 1.0
#: Most events in one feed batch (a reset is one batch, whatever its size).
FEED_BATCH = 1000


def _heartbeat(value: float) -> float:
    if value == 0:
        return DEFAULT_HEARTBEAT_S
    if not (math.isfinite(value) and MIN_HEARTBEAT_S <= value <= MAX_HEARTBEAT_S):
        raise errors.InvalidArgument(f"heartbeat_seconds must be 0 (= {DEFAULT_HEARTBEAT_S:g}) or in "
                                     f"{MIN_HEARTBEAT_S:g}..{MAX_HEARTBEAT_S:g}, got {value!r}",
                                     field="heartbeat_seconds")
    return float(value)


class StoreServicer(stores_pb2_grpc.StoreServiceServicer):
    """``pyomni.v1.StoreService`` over an :class:`~pyomni.Engine`.

    Parameters
    ----------
    engine : pyomni.Engine
    stopping : threading.Event, optional
        Set when the server begins to stop: open feeds end at once (UNAVAILABLE).
    clock : callable, optional
        The time ``seconds_left`` and ``server_time`` are computed from; it should be the engine's clock
        (``time.time``, as :meth:`pyomni.Engine.open` uses, by default).
    """

    def __init__(self, engine: Engine, *, stopping: threading.Event | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._stopping = stopping if stopping is not None else threading.Event()
        self._clock = clock

    def close(self) -> None:
        """End every open feed (as the server's ``stopping`` event does)."""
        self._stopping.set()

    # -- the order feed ------------------------------------------------------------------------------
    def WatchStoreOrders(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        eng = self._engine
        try:
            heartbeat = _heartbeat(request.heartbeat_seconds)
            locations = list(request.locations)
            after = request.after_seq
            started = False
            quiet_since = time.monotonic()
            while context.is_active():
                if self._stopping.is_set():
                    raise errors.Unavailable(f"the server is stopping; resume after sequence {after}",
                                             field="after_seq")
                failure = eng.storage_failure
                if failure is not None:
                    raise errors.Unavailable(f"the server stopped taking writes ({failure}); resume after "
                                             f"sequence {after} on the next one", field="after_seq")
                left = heartbeat - (time.monotonic() - quiet_since)
                if left <= 0:
                    yield stores_pb2.StoreFeedBatch(last_seq=after, heartbeat=True, server_time=self._clock())
                    quiet_since = time.monotonic()
                    continue
                if after == 0 and started and eng.store_seq == 0:
                    # the engine has had no store event yet, and a look from 0 is always a reset: sleep until
                    # something commits instead (an event there comes as a reset batch, the one way to ask)
                    eng.wait_for_commit(eng.lsn, timeout=min(left, FEED_SLICE_S))
                    continue
                got = eng.wait_store_events(locations, after, timeout=min(left, FEED_SLICE_S), limit=FEED_BATCH)
                started = True
                if got.events or got.reset:
                    now = self._clock()
                    batch = stores_pb2.StoreFeedBatch(last_seq=got.last_seq, reset=got.reset, server_time=now)
                    for e in got.events:
                        store_event_to_pb(e, now, batch.events.add())
                    yield batch
                    quiet_since = time.monotonic()
                # nothing for these stores up to last_seq: the next look starts there (a heartbeat says so too)
                after = got.last_seq
        except errors.PyomniError as exc:
            abort_with(context, exc)

    # -- a shipment's steps -------------------------------------------------------------------------
    def _step(self, step: Callable[..., StoreShipment], request: Any) -> Any:
        answer = step(request.shipment_id, request_id=_request_id(request.request_id))
        return store_shipment_to_pb(answer, self._clock())

    @_rpc
    def AcceptShipment(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._step(self._engine.accept_shipment, request)

    @_rpc
    def MarkPicked(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._step(self._engine.pick_shipment, request)

    @_rpc
    def MarkPacked(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._step(self._engine.pack_shipment, request)

    @_rpc
    def MarkShipped(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._step(self._engine.ship_shipment, request)

    @_rpc
    def MarkReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._step(self._engine.ready_shipment, request)

    @_rpc
    def MarkCollected(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._step(self._engine.collect_shipment, request)

    @_rpc
    def RejectShipment(self, request: Any, context: grpc.ServicerContext) -> Any:
        reason = reject_reason_from_pb(request.reason)
        answer = self._engine.reject_shipment(request.shipment_id, reason, note=request.note,
                                              request_id=_request_id(request.request_id))
        return rejection_to_pb(answer, self._clock())

    @_rpc
    def GetShipment(self, request: Any, context: grpc.ServicerContext) -> Any:
        return store_shipment_to_pb(self._engine.shipment(request.shipment_id), self._clock())

    @_rpc
    def ListShipments(self, request: Any, context: grpc.ServicerContext) -> Any:
        size = _page_size(request.page_size, 100)
        # one more than a page: whether it exists says if there is a next page
        found = self._engine.shipments(request.location or None, open_only=not request.include_closed,
                                       order_id=request.order_id or None, after=_decode_token(request.page_token),
                                       limit=size + 1)
        response = stores_pb2.ListShipmentsResponse()
        now = self._clock()
        for s in found[:size]:
            store_shipment_to_pb(s, now, response.shipments.add())
        if len(found) > size:
            response.next_page_token = _encode_token(found[size - 1].id)
        return response

    # -- returns and exceptions -----------------------------------------------------------------------
    @_rpc
    def ReturnLine(self, request: Any, context: grpc.ServicerContext) -> Any:
        record = self._engine.return_line(request.shipment_id, request.sku, request.qty, location=request.location,
                                          request_id=_request_id(request.request_id))
        return return_record_to_pb(record)

    @_rpc
    def ListOrderExceptions(self, request: Any, context: grpc.ServicerContext) -> Any:
        size = _page_size(request.page_size, 100)
        after = _decode_token(request.page_token)
        found = self._engine.order_exceptions(None if request.include_resolved else ExceptionState.OPEN)
        if after is not None:
            found = [x for x in found if x.id > after]                                   # id order
        response = stores_pb2.ListOrderExceptionsResponse()
        for x in found[:size]:
            order_exception_to_pb(x, response.exceptions.add())
        if len(found) > size:
            response.next_page_token = _encode_token(found[size - 1].id)
        return response

    @_rpc
    def ResolveOrderException(self, request: Any, context: grpc.ServicerContext) -> Any:
        done = self._engine.resolve_exception(request.exception_id, retry=request.retry, note=request.note,
                                              request_id=_request_id(request.request_id))
        return order_exception_to_pb(done)

    # -- configuration ----------------------------------------------------------------------------------
    @staticmethod
    def _rules_pb(location: str, rules: Any) -> Any:
        msg = stores_pb2.StoreRulesInEffect(location=location)
        if rules is not None:
            store_rules_to_pb(rules, msg.rules)
        return msg

    @_rpc
    def SetStoreRules(self, request: Any, context: grpc.ServicerContext) -> Any:
        rules = store_rules_from_pb(request.rules) if request.HasField("rules") else None
        now = self._engine.set_store_rules(request.location or None, rules, request_id=_request_id(request.request_id))
        return self._rules_pb(request.location, now)

    @_rpc
    def GetStoreRules(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._rules_pb(request.location, self._engine.store_rules(request.location or None))

    @_rpc
    def RegisterAttributionRule(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.HasField("rule"):
            raise errors.InvalidArgument("rule is required", field="rule")
        rule = attribution_rule_from_pb(request.rule)
        self._engine.register_attribution_rule(rule, request_id=_request_id(request.request_id))
        return attribution_rule_to_pb(self._engine.attribution_rule(rule.key))

    @_rpc
    def SetChannelAttribution(self, request: Any, context: grpc.ServicerContext) -> Any:
        channel = request.channel or None
        self._engine.set_attribution(channel, request.rule or None, request_id=_request_id(request.request_id))
        response = stores_pb2.ChannelAttribution(channel=request.channel)
        attribution_rule_to_pb(self._engine.attribution_rule(channel=channel), response.rule)
        return response

    # -- settlement ---------------------------------------------------------------------------------------
    def ExportSettlement(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            table = self._engine.settlement(day=request.day or None, entries=request.entries)
        except errors.PyomniError as exc:
            abort_with(context, exc)
        yield from arrow_chunks(table)
