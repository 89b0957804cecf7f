"""Servicers of the selling side: ``FlashSaleService`` and ``ChannelFeedService``.

Thin, like the others (``grpc_server.servicers``): decode, call the engine,
encode. Two things are more than translation, both about rate:

* ``ClaimCoalescer`` turns concurrent unary ``ClaimUnits`` calls into batches:
  the first caller to find nobody deciding becomes the leader, takes every
  claim waiting (up to ``max_batch``), makes one ``claim_many`` call per sale
  -- one lock acquisition, one native pass, one journal commit and fsync --
  answers them all, and hands the lead to a waiting caller if more arrived.
  Under a burst, a thousand members tapping at once cost a few fsyncs, not a
  thousand.
* The batch and stream calls carry claims as columns (packed repeated fields)
  straight into ``claim_many``'s arrays and back, with no message per claim.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np

from pyomni import Engine, errors
from pyomni.v1 import selling_pb2, selling_pb2_grpc
from pyomni.wire import (
    ARROW_CHUNK_BYTES,
    arrow_stream_bytes,
    claim_results_to_pb,
    claim_to_pb,
    flash_sale_from_pb,
    flash_sale_to_pb,
    optional_point,
    sale_counters_to_pb,
)

from .servicers import MAX_BATCH, _decode_token, _encode_token, _page_size, _request_id, _rpc, stream_batches
from .status import abort_with

__all__ = ["FlashSaleServicer", "ClaimCoalescer", "MAX_WATCH_INTERVAL_MS", "arrow_chunks"]

#: Longest coalescing interval a WatchFlashSale caller may ask for (a minute).
MAX_WATCH_INTERVAL_MS = 60_000

class _Waiter:
    __slots__ = ("item", "event", "result", "ready")

    def __init__(self, item: tuple) -> None:
        self.item = item
        self.event = threading.Event()    # set when the answer is ready, or to hand this caller the lead
        self.result: Any = None
        self.ready = False


class ClaimCoalescer:
    """Concurrent single claims, decided and made durable in batches (see the module's text).

    A leader decides one batch, waits for its fsync, answers it and hands the lead to the first caller
    that arrived meanwhile: each fsync carries everything that queued up during the one before.
    """

    def __init__(self, engine: Engine, *, max_batch: int = 2048) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[_Waiter] = []
        self._leading = False
        self.batches = 0            # for tests and metrics
        self.claims = 0

    def claim(self, sale_id: str, customer: str, sku: str, qty: int, store: str | None,
              near: tuple[float, float] | None, request_id: str | None) -> Any:
        """One claim's answer: a Claim, or the typed error it was refused with (returned, not raised)."""
        me = _Waiter((sale_id, customer, sku, qty, store, near, request_id))
        with self._lock:
            self._pending.append(me)
            lead = not self._leading
            self._leading = True
        while True:
            if lead:
                self._lead_once()
            me.event.wait()
            with self._lock:
                if me.ready:
                    return me.result
                me.event.clear()                  # woken to lead: my claim is first in line
                lead = True

    def _lead_once(self) -> None:
        with self._lock:
            batch = self._pending[:self._max_batch]
            del self._pending[:self._max_batch]
        decided = self._decide(batch)
        for ws, answers, lsn in decided:
            if lsn:
                try:
                    self._engine.wait_durable(lsn)
                except errors.PyomniError as exc:
                    answers = [exc] * len(ws)
            for w, a in zip(ws, answers):
                w.result = a
                w.ready = True
                w.event.set()
        # the lead passes on only now: what arrived during this batch's fsync makes the next batch (handing
        # it on before the fsync was measured slower: many one-claim batches, each paying a call's overhead)
        with self._lock:
            if self._pending:
                self._pending[0].event.set()
            else:
                self._leading = False

    def _decide(self, batch: list[_Waiter]) -> list[tuple[list[_Waiter], list[Any], int]]:
        by_sale: dict[str, list[_Waiter]] = {}
        for w in batch:
            by_sale.setdefault(w.item[0], []).append(w)
        out = []
        for sale_id, ws in by_sale.items():
            try:
                items = [w.item for w in ws]
                stores = [x[4] for x in items]
                near = [x[5] or (np.nan, np.nan) for x in items]
                results = self._engine.claim_many(
                    sale_id, [x[1] for x in items], [x[2] for x in items], [x[3] for x in items],
                    stores=stores if any(stores) else None, near=near if not all(stores) else None,
                    request_ids=[x[6] for x in items], wait=False)
                out.append((ws, [results.get(i) for i in range(len(ws))], results.lsn))
                self.batches += 1
                self.claims += len(ws)
            except errors.PyomniError as exc:           # the whole batch: unknown sale, not active, storage
                out.append((ws, [exc] * len(ws), 0))
        return out


class FlashSaleServicer(selling_pb2_grpc.FlashSaleServiceServicer):
    """``pyomni.v1.FlashSaleService`` over an :class:`~pyomni.Engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.coalescer = ClaimCoalescer(engine)

    def _sale_pb(self, counters: Any) -> Any:
        return flash_sale_to_pb(self._engine.sale(counters.sale_id), counters)

    @_rpc
    def CreateFlashSale(self, request: Any, context: grpc.ServicerContext) -> Any:
        sale = flash_sale_from_pb(request.sale)
        return self._sale_pb(self._engine.create_sale(sale, request_id=_request_id(request.request_id)))

    @_rpc
    def UpdateFlashSale(self, request: Any, context: grpc.ServicerContext) -> Any:
        sale = flash_sale_from_pb(request.sale)
        return self._sale_pb(self._engine.update_sale(sale, request_id=_request_id(request.request_id)))

    @_rpc
    def EndFlashSale(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._sale_pb(self._engine.end_sale(request.sale_id, request_id=_request_id(request.request_id)))

    @_rpc
    def GetFlashSale(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._sale_pb(self._engine.sale_counters(request.sale_id))

    @_rpc
    def ListFlashSales(self, request: Any, context: grpc.ServicerContext) -> Any:
        size = _page_size(request.page_size, 100)
        after = _decode_token(request.page_token)
        sales = self._engine.sales()
        start = 0
        if after is not None:
            ids = [s.id for s in sales]
            start = ids.index(after) + 1 if after in ids else len(ids)
        response = selling_pb2.ListFlashSalesResponse()
        for s in sales[start:start + size]:
            flash_sale_to_pb(s, self._engine.sale_counters(s.id), response.sales.add())
        if start + size < len(sales):
            response.next_page_token = _encode_token(sales[start + size - 1].id)
        return response

    @_rpc
    def ClaimUnits(self, request: Any, context: grpc.ServicerContext) -> Any:
        store = request.store or None
        near = optional_point(request, "near", "near")
        if (store is None) == (near is None):
            raise errors.InvalidArgument("give exactly one of store and near", field="store")
        answer = self.coalescer.claim(request.sale_id, request.customer, request.sku, request.qty or 1, store, near,
                                      _request_id(request.request_id))
        if isinstance(answer, errors.PyomniError):
            if answer.field and answer.field.startswith("claims["):
                answer.field = answer.field.split(".", 1)[1]
            raise answer
        return claim_to_pb(answer)

    def _batch(self, request: Any) -> Any:
        n = len(request.customers)
        if n > MAX_BATCH:
            raise errors.InvalidArgument(f"at most {MAX_BATCH:,} claims per message, got {n:,}", field="customers")
        skus = request.skus
        skus = skus[0] if len(skus) == 1 else list(skus)
        qtys = np.asarray(request.qtys, dtype=np.int64) if len(request.qtys) else None
        stores = list(request.stores) if len(request.stores) else None
        near = None
        if len(request.latitudes) or len(request.longitudes):
            if len(request.latitudes) != n or len(request.longitudes) != n:
                raise errors.InvalidArgument("latitudes and longitudes need one entry per claim", field="latitudes")
            near = np.column_stack([np.asarray(request.latitudes, dtype=np.float64),
                                    np.asarray(request.longitudes, dtype=np.float64)])
        elif stores is None or not all(stores):
            raise errors.InvalidArgument("claims without a store need latitudes and longitudes", field="stores")
        rids = list(request.request_ids) if len(request.request_ids) else None
        results = self._engine.claim_many(request.sale_id, list(request.customers), skus, qtys, stores=stores,
                                          near=near, request_ids=rids)
        return claim_results_to_pb(results, self._engine.lsn)

    @_rpc
    def ClaimUnitsBatch(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._batch(request)

    def ClaimUnitsStream(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        return stream_batches(self._batch, request_iterator, context)

    @_rpc
    def ConfirmClaim(self, request: Any, context: grpc.ServicerContext) -> Any:
        return claim_to_pb(self._engine.confirm_claim(request.claim_id, request_id=_request_id(request.request_id)))

    @_rpc
    def ReleaseClaim(self, request: Any, context: grpc.ServicerContext) -> Any:
        return claim_to_pb(self._engine.release_claim(request.claim_id, request_id=_request_id(request.request_id)))

    @_rpc
    def GetClaim(self, request: Any, context: grpc.ServicerContext) -> Any:
        return claim_to_pb(self._engine.get_claim(request.claim_id))

    def WatchFlashSale(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        if not 0 <= request.min_interval_ms <= MAX_WATCH_INTERVAL_MS:
            abort_with(context, errors.InvalidArgument(f"min_interval_ms must be in 0..{MAX_WATCH_INTERVAL_MS}",
                                                       field="min_interval_ms"))
        interval = (request.min_interval_ms or 100) / 1000.0
        last = request.after_sequence
        eng = self._engine
        ended = threading.Event()                   # the call is over (done, cancelled, deadline): stop waiting
        context.add_callback(ended.set)
        try:
            seen = -1
            while context.is_active():
                counters = eng.sale_counters(request.sale_id)
                if counters.lsn > last or (last == 0 and counters.lsn == 0):
                    last = max(counters.lsn, 1)
                    yield sale_counters_to_pb(counters)
                    if ended.wait(interval):        # coalescing: at most one message per interval
                        return
                # sleep until the engine commits anything (checked against this sale above), at most 1 s
                seen = eng.wait_for_commit(max(seen, eng.lsn), timeout=1.0)
        except errors.PyomniError as exc:
            abort_with(context, exc)



def arrow_chunks(table: Any, *, epoch: str = "", sequence: int = 0) -> Iterator[Any]:
    """A table as ``ArrowChunk`` messages: one Arrow IPC stream cut into pieces of at most 4 MiB (an empty
    table is still one chunk, holding its schema)."""
    data = arrow_stream_bytes(table)
    step = ARROW_CHUNK_BYTES
    for i in range(0, max(len(data), 1), step):
        yield selling_pb2.ArrowChunk(data=data[i:i + step], epoch=epoch, sequence=sequence)


_SCOPES = {0: "network", 1: "network", 2: "location"}


class ChannelFeedServicer(selling_pb2_grpc.ChannelFeedServiceServicer):
    """``pyomni.v1.ChannelFeedService``: one :class:`~pyomni.feeds.ChannelFeed` per (channel, scope), started
    by its first subscriber and shared by all."""

    def __init__(self, engine: Engine, *, interval_ms: float = 20.0) -> None:
        self._engine = engine
        self._interval_ms = interval_ms
        self._feeds: dict[tuple[str | None, str], Any] = {}
        self._lock = threading.Lock()

    def _feed(self, request: Any) -> Any:
        scope = _SCOPES.get(request.scope)
        if scope is None:
            raise errors.InvalidArgument("unknown scope", field="scope")
        key = (request.channel or None, scope)
        with self._lock:
            feed = self._feeds.get(key)
            if feed is None:
                feed = self._feeds[key] = self._engine.channel_feed(key[0], scope=scope,
                                                                    interval_ms=self._interval_ms)
                feed.publish()
            return feed

    def close(self) -> None:
        with self._lock:
            for feed in self._feeds.values():
                feed.close()
            self._feeds.clear()

    def ExportAvailability(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            feed = self._feed(request)
        except errors.PyomniError as exc:
            abort_with(context, exc)
        table, seq = feed._table_at()
        yield from arrow_chunks(table, epoch=feed.epoch, sequence=seq)

    def WatchAvailability(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            feed = self._feed(request)
        except errors.PyomniError as exc:
            abort_with(context, exc)
        for run in _follow_while(feed, request, context):
            msg = selling_pb2.AvailabilityDeltas(epoch=run.epoch, first_sequence=run.first_sequence, reset=run.reset,
                                                 as_of=run.as_of)
            msg.skus.extend(run.skus)
            msg.locations.extend(run.locations)
            msg.values.extend(run.values.tolist())
            yield msg


def _follow_while(feed: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
    """The feed's runs while the caller is connected (checked at least once a second)."""
    epoch, after = request.epoch or None, request.after_sequence
    while context.is_active() and not feed.closed:
        for run in feed.follow(epoch, after, timeout=1.0):
            yield run
            epoch, after = run.epoch, run.last_sequence
            if not context.is_active():
                return
