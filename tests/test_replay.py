"""Replaying the recorded order stream: under the recorded policy it reproduces what happened exactly; under a
what-if it decides again and follows the order system's and stores' commands; the window and bad input."""

from __future__ import annotations

import base64
import io
import re
from collections import Counter

import pyarrow as pa
import pytest
from conftest import FakeClock
from matplotlib.image import imread
from test_durability import NET, workload

import pyomni
from pyomni import codec, errors
from pyomni.cli import main
from pyomni.journal import read_records
from pyomni.replay import parse_policy, parse_time, replay

START = 1_700_000_000.0


@pytest.fixture(scope="module")
def recorded_dir(tmp_path_factory):
    """A data directory whose journal holds one of every command (the durability tests' workload)."""
    d = tmp_path_factory.mktemp("recorded")
    clock = FakeClock(START)
    with pyomni.Engine.open(d, NET, fsync="never", clock=clock) as eng:
        workload(eng, clock)
    return d


def _same(a: pa.Table, b: pa.Table) -> bool:
    return a.to_pylist() == b.to_pylist()


def test_replay_under_the_recorded_policy_reproduces_what_happened(recorded_dir):
    r = replay(recorded_dir)
    assert r.window["snapshot_lsn"] == 0 and r.window["orders"] >= 10
    assert _same(r.recorded.orders, r.what_if.orders) and _same(r.recorded.shipments, r.what_if.shipments)
    assert r.recorded.metrics == r.what_if.metrics
    assert _same(r.recorded.store_load, r.what_if.store_load)
    assert r.skipped == {} and r.refused == {}
    # and it is what the engine itself recovers from the directory
    live = pyomni.Engine.load(recorded_dir)
    for oid, state in zip(r.recorded.orders.column("order_id").to_pylist(),
                          r.recorded.orders.column("state").to_pylist(), strict=True):
        held = [x for x in live.reservations() if x.order_id == oid]
        assert (held[-1].state.name if held else None) == state, oid


def test_a_what_if_policy_decides_again_and_follows_each_order(recorded_dir):
    far = replay(recorded_dir, policy=pyomni.RoutingPolicy(name="no-km", cost_per_km=0.0, low_stock_weight=0.0))
    assert far.what_if.policy == "what-if: policy no-km"
    assert far.what_if.metrics["orders"] == far.recorded.metrics["orders"]
    assert far.what_if.metrics["mean_km"] != far.recorded.metrics["mean_km"]
    # a confirmation goes to the what-if reservation of the same order, whatever its id
    assert far.what_if.metrics["confirmed_orders"] >= 1
    # every recorded command is applied, skipped (no what-if target) or refused: counted, never dropped
    recorded = Counter(type(codec.decode(p)[2]).__name__ for _, p in read_records(recorded_dir / "journal"))
    for kind, n in recorded.items():
        seen = far.applied.get(kind, 0) + far.skipped.get(kind, 0) + far.refused.get(kind, 0)
        if kind in ("Expire", "StoreDeadline"):        # the what-if runs its own clock: one Expire per record
            continue
        assert seen == n, kind
    assert far.skipped                                 # some store actions had no what-if shipment to act on


def test_the_window_starts_from_the_state_as_it_was(tmp_path):
    clock = FakeClock(START)
    with pyomni.Engine.open(tmp_path, NET, fsync="never", clock=clock) as eng:
        eng.apply_stock_events(pyomni.demo_stock(NET, seed=5))
        orders = pyomni.demo_orders(NET, 60, seed=6)
        for order in orders[:30]:
            eng.route_order(order, request_id=f"r-{order.id}")
        clock.advance(3_600)
        eng.save()                                     # a snapshot inside the journal
        for order in orders[30:]:
            clock.advance(60)
            eng.route_order(order, request_id=f"r-{order.id}")
    r = replay(tmp_path, start=START + 3_600 + 1)
    assert r.window["snapshot_lsn"] > 0 and r.window["orders"] == 30
    assert r.recorded.orders.column("order_id").to_pylist() == [o.id for o in orders[30:]]
    assert _same(r.recorded.shipments, r.what_if.shipments)
    late = replay(tmp_path, start=START + 3_600 + 15 * 60 + 1, end=START + 3_600 + 20 * 60)
    assert late.window["orders"] == 5
    # the state at the window's start held the first 45 orders' stock: same decisions as recorded
    assert _same(late.recorded.orders, late.what_if.orders)


def test_more_ship_from_store_stores_take_parcels(tmp_path):
    # a network where half the stores do not ship from store
    locs = [NET.location(i) for i in range(len(NET))]
    half = [pyomni.model.Location(**{**{f: getattr(x, f) for f in x.__slots__},
                                     "capabilities": pyomni.Capability.PICKUP})
            if x.kind == pyomni.LocationKind.STORE and i % 2 else x for i, x in enumerate(locs)]
    net = pyomni.Network.from_locations(half, skus=NET.skus)
    clock = FakeClock(START)
    with pyomni.Engine.open(tmp_path, net, fsync="never", clock=clock) as eng:
        eng.apply_stock_events(pyomni.demo_stock(net, seed=5))
        for order in pyomni.demo_orders(net, 80, seed=7):
            clock.advance(30)
            eng.route_order(order, request_id=f"r-{order.id}")
    dark = sum(1 for x in half if x.kind == pyomni.LocationKind.STORE and not x.capabilities & pyomni.Capability.SHIP)
    r = replay(tmp_path, add_ship_stores=dark)
    assert r.what_if.policy == f"what-if: +{dark} ship-from-store"
    assert r.what_if.metrics["stores_used"] > r.recorded.metrics["stores_used"]
    assert r.what_if.metrics["mean_km"] < r.recorded.metrics["mean_km"]
    with pytest.raises(errors.InvalidArgument, match="do not ship from store"):
        replay(tmp_path, add_ship_stores=len(net))


def test_bad_input_is_a_typed_error(recorded_dir, tmp_path):
    with pytest.raises(errors.NotFound, match="no snapshot"):
        replay(tmp_path)
    with pytest.raises(errors.NotFound, match="no journal record in the window"):
        replay(recorded_dir, start=START + 1e7)
    with pytest.raises(errors.InvalidArgument, match="ends before it starts"):
        replay(recorded_dir, start=START + 10, end=START)
    with pytest.raises(errors.NotFound):
        replay(recorded_dir, policy="no-such-policy")
    with pytest.raises(errors.InvalidArgument, match="unknown policy field"):
        parse_policy("name=x,speed=3")
    with pytest.raises(errors.InvalidArgument, match="ISO 8601"):
        parse_time("yesterday", "from")
    assert parse_time("2023-11-14T22:13:20+00:00", "from") == START


def test_replay_command_writes_a_report_with_maps(recorded_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["replay", "--data-dir", str(recorded_dir), "--policy", "name=cheap,cost_per_km=0.001",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "what-if: policy cheap" in printed and "report:" in printed
    html = (out / "report.html").read_text()
    titles = re.findall(r'<h2>([^<]*)</h2><img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert [t for t, _ in titles] == ["Map of stores and flows: recorded",
                                      "Map of stores and flows: what-if: policy cheap",
                                      "Map of the difference: what-if: policy cheap against recorded"]
    for _, data in titles:
        pixels = imread(io.BytesIO(base64.b64decode(data)))
        assert pixels.shape[0] > 300 and pixels[..., :3].std() > 0.05
    assert (out / "orders.parquet").exists() and (out / "metrics.json").exists()
    assert main(["replay", "--data-dir", str(recorded_dir), "--stores", "100", "--out", str(out)]) == 1
    assert '"field": "stores"' in capsys.readouterr().err
