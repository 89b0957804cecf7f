"""Per-channel available-to-sell feeds: what a marketplace connector (Tmall, JD, WeChat) publishes.

A :class:`ChannelFeed` publishes one channel's available-to-sell -- its
:class:`~pyomni.ChannelRule` share and buffer applied to the network's
available stock, which already leaves out flash-sale earmarks and held units
-- per SKU (``scope="network"``) and, with ``scope="location"``, per location
too (a location's value is what it has free, capped by the channel's network
value). A first sync reads the whole table (:meth:`ChannelFeed.table`, Arrow;
:meth:`ChannelFeed.export` writes Parquet); after that the connector follows
:meth:`ChannelFeed.follow`: runs of deltas ``(sku, location, value)``, each
entry with its own sequence number, resumable after a disconnect from the last
``(epoch, sequence)`` received.

How it works. The ledger counts every cell change and remembers, per SKU, the
count of its last one (``Ledger.changed_skus``), so the feed's publisher asks
"which SKUs changed since I last looked" without scanning cells; it wakes when
the engine commits a record, waits out the rest of its ``interval`` (that is
the coalescing: at most one update per SKU per interval) and publishes the
values that differ from the last ones published.

The promise to the channel: **its orders never take more than the feed
showed it.** While a network-scope feed runs, the engine checks a channel's
order lines against the smaller of the rule's current limit and the value
last published for that SKU, so a rise in stock is sold only once the channel
has been told about it, and a fall is published within one interval.

Examples
--------
>>> import pyomni
>>> net = pyomni.demo_network(stores=4, warehouses=0, skus=3, seed=2)
>>> eng = pyomni.Engine(net, channels={"tmall": pyomni.ChannelRule(share=0.5)})
>>> _ = eng.set_stock(net.ids[0], "SKU-000001", 10)
>>> feed = eng.channel_feed("tmall", start=False)    # start=True (default): a thread publishes
>>> feed.publish()                                   # the first look: every SKU
3
>>> _ = eng.sell(net.ids[0], "SKU-000001", 4)
>>> feed.publish(), feed.table().to_pylist()[1]
(1, {'sku': 'SKU-000001', 'location': '', 'available': 3, 'sequence': 4})
>>> feed.close()
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from . import errors, validate
from .validate import shown

__all__ = ["ChannelFeed", "Deltas"]

SCOPES = ("network", "location")


class Deltas(NamedTuple):
    """A run of feed entries: entry ``i`` has sequence ``first_sequence + i``.

    ``location`` is "" for a network-wide value. ``reset`` marks a full table
    (the first message of a follow, or a resume the feed could not serve),
    as of sequence ``first_sequence``.
    """

    epoch: str
    first_sequence: int
    reset: bool
    skus: list[str]
    locations: list[str]
    values: np.ndarray
    as_of: float
    published_at: float       #: monotonic clock of the publish (for latency measurements)

    @property
    def last_sequence(self) -> int:
        """The sequence to resume after."""
        return self.first_sequence if self.reset else self.first_sequence + len(self.skus) - 1


class ChannelFeed:
    """One channel's published available-to-sell (see the module's text). Made by :meth:`Engine.channel_feed`."""

    def __init__(self, engine: Any, channel: str | None, *, scope: str = "network", interval_ms: float = 20.0,
                 keep: int = 1_000_000, start: bool = True) -> None:
        channel = validate.optional_identifier(channel, "channel")
        scope = validate.choice(scope, "scope", SCOPES)
        interval_ms = validate.number(interval_ms, "interval_ms", low=0.0, high=60_000.0, low_open=True)
        keep = validate.integer(keep, "keep", low=1, high=1 << 40)
        start = validate.flag(start, "start")
        self.channel = channel
        self.scope = scope
        self.interval = float(interval_ms) / 1000.0
        self.epoch = uuid.uuid4().hex[:16]
        self._engine = engine
        self._keep = keep
        self._cond = threading.Condition()
        self._runs: collections.deque[Deltas] = collections.deque()
        self._kept = 0                                # entries in _runs
        self._seq = 0                                 # last sequence published
        self._version = 0                             # ledger version last looked at
        self._rule: Any = ()                          # the rule the values were computed with
        self._values = np.full(0, -1, dtype=np.int64)           # per SKU: last published network value
        self._loc_values: dict[tuple[int, int], int] = {}        # (loc, sku) -> last published
        self._seq_of = np.zeros(0, dtype=np.int64)               # per SKU: sequence of its last network entry
        self._closed = False
        self._thread: threading.Thread | None = None
        if start:
            self.publish()                            # the table is there as soon as the feed is
            self._thread = threading.Thread(target=self._run, name=f"pyomni-feed-{channel or 'all'}", daemon=True)
            self._thread.start()

    # -- publishing --------------------------------------------------------------------------
    def publish(self) -> int:
        """Publish what changed since the last look now; returns how many entries (also called by the thread)."""
        eng = self._engine
        with eng._lock:
            ledger = eng._ledger
            rule = eng._channels.get(self.channel) if self.channel is not None else None
            n_skus = ledger.n_skus
            full = rule is not self._rule or len(self._values) != n_skus
            if full:
                skus = np.arange(n_skus, dtype=np.int32)
                version = ledger.version
            else:
                skus, version = ledger.changed_skus(self._version)
            avail = ledger.sku_available_array()[skus] if len(skus) else np.zeros(0, dtype=np.int64)
            if rule is not None:
                avail = np.maximum(0, np.floor(rule.share * avail).astype(np.int64) - rule.buffer)
            cells = [ledger.sku_cells(int(s)) for s in skus] if self.scope == "location" else []
            as_of = float(eng._clock())
            if len(self._values) != n_skus:
                grown = np.full(n_skus, -1, dtype=np.int64)
                grown[:len(self._values)] = self._values
                self._values = grown
                seq_of = np.zeros(n_skus, dtype=np.int64)
                seq_of[:len(self._seq_of)] = self._seq_of
                self._seq_of = seq_of
            moved = avail != self._values[skus]
            net_skus = skus[moved]
            net_vals = avail[moved]
            self._values[net_skus] = net_vals
            if self.channel is not None and self.scope == "network":
                eng._feed_shown[self.channel] = self._values      # what the channel was told: the engine caps by it
            self._rule, self._version = rule, version
        sku_ids, loc_ids = eng._sku_ids, eng._loc_ids
        names = [sku_ids[s] for s in net_skus.tolist()]
        locs = [""] * len(names)
        values = [net_vals]
        for s, cap, (loc, on_hand, reserved, safety) in zip(skus.tolist(), avail.tolist(), cells):
            free = np.minimum(np.maximum(on_hand.astype(np.int64) - reserved - safety, 0), cap)
            last = self._loc_values
            for lo, v in zip(loc.tolist(), free.tolist()):
                if last.get((lo, s)) != v:
                    last[(lo, s)] = v
                    names.append(sku_ids[s])
                    locs.append(loc_ids[lo])
                    values.append(np.array([v], dtype=np.int64))
        if not names:
            return 0
        run_values = np.concatenate(values)
        with self._cond:
            first = self._seq + 1
            self._seq += len(names)
            self._seq_of[net_skus] = np.arange(first, first + len(net_skus))
            run = Deltas(self.epoch, first, False, names, locs, run_values, as_of, time.monotonic())
            self._runs.append(run)
            self._kept += len(names)
            while self._kept > self._keep and len(self._runs) > 1:
                self._kept -= len(self._runs.popleft().skus)
            self._cond.notify_all()
        return len(names)

    def _run(self) -> None:
        changed = self._engine._changed
        while not self._closed:
            changed.wait(1.0)
            if self._closed:
                return
            changed.clear()
            started = time.monotonic()
            try:
                self.publish()
            except errors.PyomniError:
                pass            # the engine stopped (closed or failed): nothing more will change
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def close(self) -> None:
        """Stop publishing (followers see the end of the feed)."""
        self._closed = True
        with self._cond:
            self._cond.notify_all()
        eng = self._engine
        if eng._feed_shown.get(self.channel) is self._values:
            with eng._lock:
                eng._feed_shown.pop(self.channel, None)
        if self._thread is not None:
            self._engine._changed.set()
            self._thread.join(timeout=5)

    # -- reading -----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def sequence(self) -> int:
        """The last sequence published."""
        return self._seq

    def table(self) -> pa.Table:
        """The whole published table: ``sku, location ("" = network), available, sequence``."""
        return self._table_at()[0]

    def _table_at(self) -> tuple[pa.Table, int]:
        with self._cond:
            values, seq_of, loc_values, seq = self._values.copy(), self._seq_of.copy(), dict(self._loc_values), \
                self._seq
        sku_ids, loc_ids = self._engine._sku_ids, self._engine._loc_ids
        known = np.flatnonzero(values >= 0)
        skus = [sku_ids[s] for s in known.tolist()]
        locs = [""] * len(skus)
        avail = values[known].tolist()
        seqs = seq_of[known].tolist()
        for (lo, s), v in sorted(loc_values.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            skus.append(sku_ids[s])
            locs.append(loc_ids[lo])
            avail.append(v)
            seqs.append(seq)
        table = pa.table({"sku": pa.array(skus, pa.string()), "location": pa.array(locs, pa.string()),
                          "available": pa.array(avail, pa.int64()), "sequence": pa.array(seqs, pa.int64())})
        return table, seq

    def export(self, path: str | Path) -> int:
        """Write :meth:`table` as a Parquet file (the first sync of a connector); returns the sequence it is as of."""
        import pyarrow.parquet as pq

        target = validate.path(path, "path")
        table, seq = self._table_at()
        try:
            pq.write_table(table, str(target))
        except OSError as exc:      # no such directory, no permission, disk full: the caller's path
            raise errors.InvalidArgument(f"cannot write {shown(str(target), 200)}: {str(exc)[:200]}",
                                         field="path") from None
        return seq

    def follow(self, epoch: str | None = None, after: int = 0, *, timeout: float | None = None) -> Iterator[Deltas]:
        """Deltas after ``(epoch, after)``, waiting for new ones; starts with a full table (``reset``) when
        ``epoch`` is None, not this feed's, or older than what the feed still keeps.

        Stops when the feed closes, or after ``timeout`` seconds without news.
        """
        if epoch is not None:
            validate.instance(epoch, str, "epoch", "a feed epoch (a string) or None")
        after = validate.integer(after, "after", low=-(2**63), high=2**63 - 1)
        timeout = validate.timeout(timeout)
        resume = epoch == self.epoch and after >= 0
        with self._cond:
            oldest = self._runs[0].first_sequence if self._runs else self._seq + 1
            if not resume or after + 1 < oldest or after > self._seq:
                resume = False
        if not resume:
            table, after = self._table_at()
            yield Deltas(self.epoch, after, True, table.column("sku").to_pylist(), table.column("location").to_pylist(),
                         table.column("available").to_numpy(), float(self._engine._clock()), time.monotonic())
        while not self._closed:
            with self._cond:
                runs = [r for r in self._runs if r.first_sequence + len(r.skus) - 1 > after]
                if not runs:
                    if not self._cond.wait(timeout) and timeout is not None:
                        return
                    continue
            for r in runs:
                skip = max(0, after + 1 - r.first_sequence)
                if skip:
                    r = r._replace(first_sequence=r.first_sequence + skip, skus=r.skus[skip:],
                                   locations=r.locations[skip:], values=r.values[skip:])
                yield r
                after = r.first_sequence + len(r.skus) - 1
