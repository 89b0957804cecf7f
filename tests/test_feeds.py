"""Per-channel available-to-sell feeds (pyomni.feeds): the published table equals the engine's own
per-channel availability after any sequence of events; resumes lose nothing; orders never take more than
the feed showed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyomni
from pyomni import errors

NET = pyomni.demo_network(stores=6, warehouses=1, skus=8, seed=4)
SKUS = list(NET.skus)
RULES = {"tmall": pyomni.ChannelRule(share=0.5, buffer=1), "jd": pyomni.ChannelRule(share=0.8)}

events = st.lists(st.tuples(st.sampled_from(["set", "sell", "receive", "hold", "sale"]),
                            st.integers(0, len(NET.ids) - 1), st.integers(0, len(SKUS) - 1), st.integers(0, 9)),
                  min_size=1, max_size=40)


def _apply(eng: pyomni.Engine, ev: tuple[str, int, int, int], t: list[float]) -> None:
    kind, loc, s, q = ev
    loc_id, sku = NET.ids[loc], SKUS[s]
    try:
        if kind == "set":
            eng.set_stock(loc_id, sku, q)
        elif kind == "sell":
            eng.sell(loc_id, sku, max(q, 1))
        elif kind == "receive":
            eng.receive(loc_id, sku, max(q, 1))
        elif kind == "hold":
            eng.route_order(pyomni.Order(f"o-{t[0]}", [(sku, max(q // 3, 1))], destination=(NET.lat[loc],
                                                                                          NET.lon[loc])))
        else:
            sale_id = f"s{t[0]}"
            eng.create_sale(pyomni.FlashSale(sale_id, (sku,), 0.0, 1e12, 5, ((loc_id, 3),)))
            eng.claim(sale_id, "m", sku, store=loc_id)
    except errors.PyomniError:
        pass                # a refused event (short stock, no route): the feed must still match the engine
    t[0] += 1


def _table(feed: pyomni.feeds.ChannelFeed) -> dict[tuple[str, str], int]:
    t = feed.table()
    return dict(zip(zip(t.column("sku").to_pylist(), t.column("location").to_pylist()),
                    t.column("available").to_pylist()))


@pytest.mark.parametrize("native", [True, False])
@settings(max_examples=40, deadline=None)
@given(evs=events)
def test_feed_equals_the_engines_channel_availability(native, evs):
    eng = pyomni.Engine(NET, channels=RULES, native=native, clock=lambda: 1000.0)
    feeds = {c: eng.channel_feed(c, scope="location", start=False) for c in ("tmall", "jd", None)}
    t = [0.0]
    for i, ev in enumerate(evs):
        _apply(eng, ev, t)
        if i % 7 == 0:
            for f in feeds.values():
                f.publish()
    for channel, f in feeds.items():
        f.publish()
        table = _table(f)
        for sku in SKUS:
            assert table[(sku, "")] == eng.available(sku, channel=channel)
            for loc in NET.ids:
                cell = eng.stock(loc, sku)
                if (sku, loc) in table:
                    assert table[(sku, loc)] == min(cell.available, eng.available(sku, channel=channel))
                else:
                    assert cell.on_hand == 0 and cell.reserved == 0
        f.close()


def test_follow_resumes_exactly_after_the_last_sequence():
    eng = pyomni.Engine(NET, channels=RULES)
    feed = eng.channel_feed("tmall", start=False)
    feed.publish()
    stream = feed.follow(timeout=0.05)
    first = next(stream)
    assert first.reset and first.last_sequence == feed.sequence
    seen: dict[str, int] = dict(zip(first.skus, first.values.tolist()))
    eng.set_stock(NET.ids[0], SKUS[1], 40)
    feed.publish()
    run = next(stream)
    assert not run.reset and run.skus == [SKUS[1]] and run.values.tolist() == [19]
    seen.update(zip(run.skus, run.values.tolist()))
    resume_at = run.last_sequence
    for i in range(5):                               # changes while disconnected
        eng.set_stock(NET.ids[1], SKUS[2 + i], 10 + i)
        feed.publish()
    missed = list(feed.follow(feed.epoch, resume_at, timeout=0.05))
    assert not any(r.reset for r in missed)
    assert [s for r in missed for s in r.skus] == SKUS[2:7]
    assert missed[0].first_sequence == resume_at + 1
    for r in missed:
        seen.update(zip(r.skus, r.values.tolist()))
    assert seen == {s: eng.available(s, channel="tmall") for s in SKUS}
    # another epoch (a restarted server) or a sequence the feed no longer keeps: a full table again
    assert next(feed.follow("not-this-one", 3, timeout=0.05)).reset
    feed.close()


def test_a_channels_orders_never_take_more_than_its_feed_showed():
    eng = pyomni.Engine(NET, channels=RULES)
    loc, sku = NET.ids[0], SKUS[0]
    eng.set_stock(loc, sku, 10)                      # tmall may sell floor(0.5 * 10) - 1 = 4
    feed = eng.channel_feed("tmall", start=False)
    feed.publish()
    eng.set_stock(loc, sku, 100)                     # now 49, but the channel was told 4
    order = pyomni.Order("big", [(sku, 10)], destination=(NET.lat[0], NET.lon[0]), channel="tmall")
    assert eng.route_order(order).status is pyomni.AllocationStatus.UNFULFILLABLE
    feed.publish()                                   # told 49: now it may
    assert eng.route_order(order).status is pyomni.AllocationStatus.ALLOCATED
    feed.close()                                     # no feed: the rule alone
    assert eng.route_order(pyomni.Order("big2", [(sku, 30)], destination=(NET.lat[0], NET.lon[0]),
                                        channel="tmall")).status is pyomni.AllocationStatus.ALLOCATED


def test_earmarks_leave_the_channel_feeds():
    t = [1000.0]
    eng = pyomni.Engine(NET, channels=RULES, clock=lambda: t[0])
    loc, sku = NET.ids[2], SKUS[3]
    eng.set_stock(loc, sku, 20)
    feed = eng.channel_feed(None, start=False)
    feed.publish()
    assert _table(feed)[(sku, "")] == 20
    eng.create_sale(pyomni.FlashSale("s", (sku,), 0.0, 2000.0, 50, ((loc, 8),)))
    feed.publish()
    assert _table(feed)[(sku, "")] == 12             # 8 earmarked for the sale
    t[0] = 2001.0
    eng.expire_due()                                 # the sale ended: the earmark returns
    feed.publish()
    assert _table(feed)[(sku, "")] == 20
    feed.close()


def test_bad_feed_arguments_are_typed_errors():
    eng = pyomni.Engine(NET)
    with pytest.raises(errors.InvalidArgument):
        eng.channel_feed("tmall", scope="planet")
    with pytest.raises(errors.InvalidArgument):
        eng.channel_feed("tmall", interval_ms=0)
    with pytest.raises(errors.InvalidArgument):
        eng.channel_feed("")



def test_the_readme_flash_sale_example_runs(capsys):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Flash sales and channel feeds"):]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md (flash sales)", "exec"), {})
    out = capsys.readouterr().out
    assert "CUSTOMER_LIMIT_REACHED" in out and "'sku': 'SKU-000000'" in out


def test_watch_streams_over_grpc_resume_after_a_disconnect():
    import time

    import grpc
    import pyarrow as pa

    from grpc_server import create_server
    from pyomni.v1 import selling_pb2, selling_pb2_grpc

    eng = pyomni.Engine(NET, channels=RULES)
    eng.apply_stock_events(pyomni.demo_stock(NET, seed=4))
    server, port = create_server("127.0.0.1:0", eng)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        feeds = selling_pb2_grpc.ChannelFeedServiceStub(channel)
        data = b"".join(c.data for c in feeds.ExportAvailability(selling_pb2.ExportAvailabilityRequest(channel="jd")))
        table = pa.ipc.open_stream(data).read_all()
        assert dict(zip(table.column("sku").to_pylist(), table.column("available").to_pylist())) == \
            {s: eng.available(s, channel="jd") for s in SKUS}
        watch = feeds.WatchAvailability(selling_pb2.WatchAvailabilityRequest(channel="jd"))
        first = next(watch)
        assert first.reset and len(first.skus) == len(SKUS)
        eng.set_stock(NET.ids[0], SKUS[2], 50)
        delta = next(watch)
        assert not delta.reset and list(delta.skus) == [SKUS[2]]
        assert list(delta.values) == [eng.available(SKUS[2], channel="jd")]
        watch.cancel()
        # disconnected: changes meanwhile come back on resume, from the next sequence on
        eng.set_stock(NET.ids[1], SKUS[3], 60)
        time.sleep(0.1)
        resumed = feeds.WatchAvailability(selling_pb2.WatchAvailabilityRequest(
            channel="jd", epoch=delta.epoch, after_sequence=delta.first_sequence + len(delta.skus) - 1))
        missed = next(resumed)
        assert not missed.reset and list(missed.skus) == [SKUS[3]]
        assert missed.first_sequence == delta.first_sequence + len(delta.skus)
        resumed.cancel()

        # a sale's counters, coalesced and resumable by sequence
        now = time.time()
        eng.set_stock(NET.ids[4], SKUS[5], 9)
        eng.create_sale(pyomni.FlashSale("w", (SKUS[5],), now - 1, now + 600, 5, ((NET.ids[4], 5),), customer_limit=3))
        sales = selling_pb2_grpc.FlashSaleServiceStub(channel)
        counters = sales.WatchFlashSale(selling_pb2.WatchFlashSaleRequest(sale_id="w", min_interval_ms=10))
        start = next(counters)
        assert (start.remaining, start.claimed) == (5, 0)
        eng.claim("w", "m-1", SKUS[5], 2, store=NET.ids[4])
        after = next(counters)
        assert (after.remaining, after.claimed) == (3, 2) and after.sequence > start.sequence
        counters.cancel()
        again = sales.WatchFlashSale(selling_pb2.WatchFlashSaleRequest(sale_id="w", after_sequence=after.sequence,
                                                                       min_interval_ms=10))
        eng.claim("w", "m-2", SKUS[5], 1, store=NET.ids[4])
        assert next(again).claimed == 3          # nothing repeated: the first message is the new change
        again.cancel()
    finally:
        channel.close()
        server.stop(None)


def test_sale_counters_arrive_at_once_after_a_quiet_spell():
    import time

    import grpc

    from grpc_server import create_server
    from pyomni.v1 import selling_pb2, selling_pb2_grpc

    eng = pyomni.Engine(NET)
    now = time.time()
    eng.set_stock(NET.ids[2], SKUS[1], 9)
    eng.create_sale(pyomni.FlashSale("q", (SKUS[1],), now - 1, now + 600, 5, ((NET.ids[2], 5),)))
    server, port = create_server("127.0.0.1:0", eng)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        sales = selling_pb2_grpc.FlashSaleServiceStub(channel)
        watch = sales.WatchFlashSale(selling_pb2.WatchFlashSaleRequest(sale_id="q", min_interval_ms=2000))
        assert next(watch).claimed == 0
        time.sleep(2.2)                                  # past the interval: nothing happening
        start = time.monotonic()
        eng.claim("q", "m-1", SKUS[1], store=NET.ids[2])
        assert next(watch).claimed == 1
        assert time.monotonic() - start < 0.5            # woken by the commit, not by a poll
        watch.cancel()
    finally:
        channel.close()
        server.stop(None)
