"""The engine as a system of record: journal, snapshots, recovery, and what survives a crash.

A crash is simulated by copying the data directory while the engine is still
open -- the copy holds exactly what reached the operating system, as after a
``kill -9`` -- and opening the copy. The server-level kill -9 harness lives in
``tests/test_crash.py``; the journal's own file-layer faults in ``tests/test_journal.py``.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import FakeClock
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import pyomni
from pyomni import errors, journal, settlement
from pyomni.fulfilment import OpeningHours, ShipmentState, StoreRules
from pyomni.model import ReservationState

NET = pyomni.demo_network(stores=20, warehouses=1, skus=30, seed=5)
SKUS = list(NET.skus)
LOCS = list(NET.ids)


def order(oid: str, sku: str = "SKU-000001", qty: int = 1, near: int = 0) -> pyomni.Order:
    return pyomni.Order(oid, [(sku, qty)], destination=(float(NET.lat[near]), float(NET.lon[near])))


def fingerprint(eng: pyomni.Engine, request_ids=()) -> tuple:
    """Everything that must survive: cells, reservations, counters, loads, network and the window."""
    state = eng.state()
    # a cell counted down to all zeros is not carried into a snapshot: it is the same as no cell
    cells = sorted(c for c in zip(state.loc.tolist(), state.sku.tolist(), state.on_hand.tolist(),
                                  state.reserved.tolist(), state.safety.tolist()) if any(c[2:]))
    return (cells, eng.reservations(), state.seq, state.lsn, state.held.tolist(), state.confirmed.tolist(),
            state.is_open.tolist(), state.daily_capacity.tolist(), eng.network.ids, eng.skus,
            [eng.remembered(r) for r in request_ids],
            [(eng.sale_counters(x.id), eng.claims(x.id)) for x in eng.sales()],
            eng.shipments(open_only=False), eng.order_exceptions(None), eng.returns(), eng.store_seq,
            eng.settlement_facts().to_pylist(), eng.discrepancies().to_pylist(), eng.store_rules(LOCS[2]),
            eng.attribution_rule(channel="app"))


def crash_image(eng: pyomni.Engine, target: Path) -> Path:
    """What a kill -9 would leave: the data directory's files as they are now."""
    assert eng.directory is not None
    shutil.copytree(eng.directory, target, ignore=shutil.ignore_patterns(".lock"))
    return target


def workload(eng: pyomni.Engine, clock: FakeClock) -> list[str]:
    """One of every kind of command, each with a request id; returns the ids."""
    ids = []

    def rid(name: str) -> str:
        ids.append(name)
        return name

    for i, loc in enumerate(LOCS[:6]):
        eng.set_stock(loc, "SKU-000001", 5 + i, safety=1, request_id=rid(f"set-{i}"))
    eng.apply_stock_events(pa.table({"location": LOCS[:4], "sku": ["SKU-000002"] * 4,
                                     "event": ["receive"] * 4, "qty": [3, 3, 3, 3]}), request_id=rid("events-1"))
    eng.transfer(LOCS[0], LOCS[7], "SKU-000001", 2, request_id=rid("move-1"))
    eng.sell(LOCS[1], "SKU-000001", 1, request_id=rid("pos-1"))
    eng.return_item(LOCS[9], "SKU-000003", 2, request_id=rid("return-1"))
    a = eng.route_order(order("o-1", qty=2), request_id=rid("route-1"))
    b = eng.route_order(order("o-2", "SKU-000002", 2, near=3), request_id=rid("route-2"))
    eng.route_order(order("o-none", "SKU-000009", 1), request_id=rid("route-unfilled"))
    eng.confirm(a.reservation_id, request_id=rid("confirm-1"))
    eng.reroute(b.reservation_id, b.shipments[0].location, request_id=rid("reroute-1"))
    c = eng.route_order(order("o-3", qty=1, near=5), request_id=rid("route-3"), ttl=30)
    eng.reserve_plan(order("o-4", "SKU-000002", 1), [(LOCS[2], [("SKU-000002", 1)])], request_id=rid("plan-1"))
    eng.set_location_open(LOCS[5], False, request_id=rid("close-5"))
    eng.set_daily_capacity(LOCS[4], 40, request_id=rid("cap-4"))
    eng.register_skus(["SKU-NEW-1"], request_id=rid("skus-1"))
    eng.set_stock(LOCS[3], "SKU-NEW-1", 4, request_id=rid("set-new"))
    eng.register_policy(pyomni.RoutingPolicy(name="near", version=2, cost_per_km=0.2), request_id=rid("policy-1"))
    eng.set_channel_rule("tmall", pyomni.ChannelRule(share=0.5), request_id=rid("rule-1"))
    eng.upsert_locations([pyomni.Location("POP-UP", pyomni.LocationKind.STORE, 31.2, 121.5)],
                         request_id=rid("upsert-1"))
    eng.route_order(order("o-5", "SKU-NEW-1", 1), policy="near", request_id=rid("route-5"))
    eng.new_day(request_id=rid("day-1"))
    clock.advance(31)
    assert eng.expire_due() == [c.reservation_id]
    eng.release(eng.route_order(order("o-6", qty=1), request_id=rid("route-6")).reservation_id,
                request_id=rid("release-6"))
    # a batch in columns: one record for all of it, each order's request id remembered
    batch = eng.route_columns(["o-7", "o-8", "o-none-2"], [1, 2, 1],
                              ["SKU-000002", "SKU-000001", "SKU-000002", "SKU-000009"], [1, 1, 1, 1],
                              [float(NET.lat[x]) for x in (2, 4, 6)], [float(NET.lon[x]) for x in (2, 4, 6)],
                              request_ids=[rid("columns-7"), rid("columns-8"), rid("columns-none")])
    assert batch.held == 2 and not batch.errors
    # a flash sale: created, claimed (one and a batch), paid, cancelled, ended
    now = clock()
    eng.set_stock(LOCS[8], "SKU-000004", 6, request_id=rid("set-sale"))
    eng.create_sale(pyomni.FlashSale("s-1", ("SKU-000004",), now - 1, now + 600, 4, ((LOCS[8], 3), (LOCS[9], 2))),
                    request_id=rid("sale-1"))
    first = eng.claim("s-1", "m-1", "SKU-000004", store=LOCS[8], request_id=rid("claim-1"))
    eng.claim_many("s-1", ["m-2", "m-3"], "SKU-000004", near=[(float(NET.lat[8]), float(NET.lon[8]))] * 2,
                   request_ids=[rid("claim-2"), rid("claim-3")])
    eng.confirm_claim(first.id, request_id=rid("pay-1"))
    eng.release_claim("C0000000002", request_id=rid("cancel-2"))
    eng.update_sale(pyomni.FlashSale("s-1", ("SKU-000004",), now - 1, now + 900, 5, ((LOCS[8], 3), (LOCS[9], 3))),
                    request_id=rid("sale-update"))
    eng.end_sale("s-1", request_id=rid("sale-end"))
    # store operations: rules, attribution, the life cycle, a rejection, a timeout, not collected, a return
    eng.set_store_rules(None, StoreRules(OpeningHours(0, 1440), collect_days=1), request_id=rid("store-rules"))
    eng.set_store_rules(LOCS[2], StoreRules(OpeningHours(540, 1260), answer_s=600), request_id=rid("store-rules-2"))
    eng.register_attribution_rule(settlement.SPLIT_361, request_id=rid("attribution-1"))
    eng.set_attribution("app", "split-361", request_id=rid("attribution-app"))
    s1 = eng.route_order(pyomni.Order("o-s1", [pyomni.Line("SKU-000002", 1, 1999)], coupon_cents=150,
                                      destination=(float(NET.lat[1]), float(NET.lon[1]))),
                         ttl=7200, request_id=rid("route-s1"))
    eng.confirm(s1.reservation_id, request_id=rid("confirm-s1"))
    first_ship = eng.shipments(order_id="o-s1")[0].id
    eng.accept_shipment(first_ship, request_id=rid("accept-s1"))
    moved = eng.reject_shipment(first_ship, "NOT_FOUND", request_id=rid("reject-s1"))
    assert moved.new_shipments, moved
    second = moved.new_shipments[0].id
    eng.pack_shipment(second, request_id=rid("pack-s1"))
    eng.ship_shipment(second, request_id=rid("ship-s1"))
    eng.return_line(second, "SKU-000002", 1, location=LOCS[9], request_id=rid("return-s1"))
    eng.route_order(order("o-s2", "SKU-000002", 1, near=3), ttl=7200, request_id=rid("route-s2"))
    pick = eng.route_order(pyomni.Order("o-s3", [("SKU-000002", 1)], pickup_location=LOCS[3]), ttl=7200,
                           request_id=rid("route-s3"))
    eng.confirm(pick.reservation_id, request_id=rid("confirm-s3"))
    eng.ready_shipment(eng.shipments(order_id="o-s3")[0].id, request_id=rid("ready-s3"))
    clock.advance(901)                              # nobody answered o-s2: re-routed by the clock
    eng.expire_due()
    assert [s.state for s in eng.shipments(order_id="o-s2", open_only=False)][0] is ShipmentState.REJECTED
    due = eng.shipments(order_id="o-s3")[0].due_at
    clock.advance(due - clock() + 1)                # o-s3 was not collected by the end of the day
    eng.expire_due()
    assert eng.shipments(order_id="o-s3", open_only=False)[0].state is ShipmentState.NOT_COLLECTED
    return ids


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_new_directory_needs_a_network(tmp_path):
    with pytest.raises(errors.NotFound):
        pyomni.Engine.open(tmp_path / "nothing")
    with pyomni.Engine.open(tmp_path / "d", NET, fsync="never") as eng:
        assert eng.directory == tmp_path / "d" and eng.state().lsn == 0
    assert pyomni.Engine.open(tmp_path / "d").network.ids == NET.ids      # the network was made durable at once


def test_every_kind_of_command_survives_close_and_reopen(tmp_path, clock):
    with pyomni.Engine.open(tmp_path, NET, clock=clock, reservation_ttl=600.0) as eng:
        ids = workload(eng, clock)
        before = fingerprint(eng, ids)
        eng.check_invariants()
    with pyomni.Engine.open(tmp_path, clock=clock) as again:
        assert fingerprint(again, ids) == before
        again.check_invariants()
        # counters carry on: the next reservation number follows the last one issued
        a = again.route_order(order("o-after", qty=1))
        assert a.reservation_id == f"R{before[2] + 1:010d}"


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_a_crash_image_holds_every_acknowledged_command(tmp_path, clock, fsync):
    eng = pyomni.Engine.open(tmp_path / "live", NET, clock=clock, reservation_ttl=600.0, fsync=fsync)
    ids = workload(eng, clock)
    expected = fingerprint(eng, ids)
    image = crash_image(eng, tmp_path / "crashed")            # no close(): as after kill -9
    recovered = pyomni.Engine.open(image, clock=clock)
    assert fingerprint(recovered, ids) == expected
    recovered.check_invariants()
    recovered.close()
    eng.close()


def test_replay_from_the_first_record_gives_the_identical_state(tmp_path, clock):
    """Replay applies recorded effects: a journal replayed into a fresh engine equals the live engine."""
    eng = pyomni.Engine.open(tmp_path / "live", NET, clock=clock, reservation_ttl=600.0, fsync="never")
    ids = workload(eng, clock)
    eng.close()
    snapshots = sorted((tmp_path / "live" / "snapshots").iterdir())
    assert [p.name for p in snapshots] == ["0" * 20]          # only the empty start: all state comes from replay
    assert fingerprint(pyomni.Engine.load(tmp_path / "live", clock=clock), ids) == fingerprint(eng, ids)
    # ... and from a snapshot taken part way, plus the records after it
    part = pyomni.Engine.open(tmp_path / "part", NET, clock=clock, reservation_ttl=600.0, fsync="never")
    for i in range(3):
        part.set_stock(LOCS[i], "SKU-000005", 2, request_id=f"p-{i}")
    part.save()
    ids2 = workload(part, clock)
    live = fingerprint(part, ids2)
    part.close()
    assert fingerprint(pyomni.Engine.load(tmp_path / "part", clock=clock), ids2) == live


def test_answers_replay_left_unbuilt_reach_the_next_snapshot_intact(tmp_path, clock):
    with pyomni.Engine.open(tmp_path, NET, clock=clock, reservation_ttl=600.0, fsync="never") as eng:
        ids = workload(eng, clock)
        expected = fingerprint(eng, ids)
    with pyomni.Engine.open(tmp_path, clock=clock) as replayed:     # answers rebuilt lazily by the replay
        replayed.save()                                              # ... and built for the snapshot
    with pyomni.Engine.open(tmp_path, clock=clock) as again:        # now from that snapshot alone
        newest = max(int(p.name) for p in (tmp_path / "snapshots").iterdir() if p.name.isdigit())
        assert newest == expected[3]                                 # nothing left to replay after it
        assert fingerprint(again, ids) == expected


def test_replay_does_not_decide_again(tmp_path, clock, monkeypatch):
    """Change the router after the fact: recovery still gives the recorded plan."""
    eng = pyomni.Engine.open(tmp_path / "live", NET, clock=clock, fsync="always")
    for loc in LOCS[:5]:
        eng.set_stock(loc, "SKU-000001", 3)
    a = eng.route_order(order("o-1", near=4), request_id="r-1")
    image = crash_image(eng, tmp_path / "crashed")

    def refuse(*args, **kwargs):
        raise AssertionError("replay must not route")

    monkeypatch.setattr(pyomni.Engine, "_decide", refuse)
    recovered = pyomni.Engine.open(image, clock=clock)
    assert recovered.reservation(a.reservation_id).shipments == a.shipments
    assert recovered.remembered("r-1") == a
    recovered.close()
    eng.close()


def test_ids_are_never_reissued_and_retries_return_the_first_answer_after_a_crash(tmp_path, clock):
    eng = pyomni.Engine.open(tmp_path / "live", NET, clock=clock, fsync="always")
    for loc in LOCS:
        eng.set_stock(loc, "SKU-000001", 4)
    answers = {f"req-{i}": eng.route_order(order(f"o-{i}", near=i % 20), request_id=f"req-{i}") for i in range(20)}
    image = crash_image(eng, tmp_path / "crashed")
    eng.close()
    recovered = pyomni.Engine.open(image, clock=clock)
    before = fingerprint(recovered)
    for rid, first in answers.items():
        again = recovered.route_order(order(f"o-{rid[4:]}", near=int(rid[4:]) % 20), request_id=rid)
        assert again == first and again.reservation_id == first.reservation_id
    assert fingerprint(recovered) == before                      # the retries changed nothing
    with pytest.raises(errors.RequestIdReused):
        recovered.route_order(order("o-other"), request_id="req-3")
    new = recovered.route_order(order("o-new"), request_id="req-new")
    issued = {a.reservation_id for a in answers.values()}
    assert new.reservation_id not in issued and new.reservation_id > max(issued)
    recovered.close()


def test_holds_expire_after_a_restart_when_their_time_has_come(tmp_path, clock):
    eng = pyomni.Engine.open(tmp_path / "live", NET, clock=clock, reservation_ttl=60.0, fsync="always")
    eng.set_stock(LOCS[0], "SKU-000001", 3)
    a = eng.route_order(order("o-1", qty=2))
    image = crash_image(eng, tmp_path / "crashed")
    eng.close()
    clock.advance(61)
    recovered = pyomni.Engine.open(image, clock=clock)
    assert recovered.reservation(a.reservation_id).state is ReservationState.HELD   # queries never mutate
    assert recovered.expire_due() == [a.reservation_id]
    assert recovered.stock(LOCS[0], "SKU-000001").reserved == 0
    recovered.close()


def test_the_window_is_bounded_by_count_and_age_and_rebuilt_alike(tmp_path, clock):
    eng = pyomni.Engine.open(tmp_path, NET, clock=clock, fsync="never", max_request_ids=3, request_id_ttl=100.0)
    for i in range(4):
        eng.set_stock(LOCS[i], "SKU-000001", i + 1, request_id=f"r-{i}")
    assert eng.remembered("r-0") is None and eng.remembered("r-3").on_hand == 4     # count: oldest first
    clock.advance(101)
    eng.set_stock(LOCS[5], "SKU-000001", 9, request_id="r-late")
    assert [eng.remembered(f"r-{i}") for i in range(4)] == [None] * 4                # age
    window = [eng.remembered(r) for r in ("r-1", "r-2", "r-3", "r-late")]
    eng.close()
    again = pyomni.Engine.open(tmp_path, clock=clock)
    assert [again.remembered(r) for r in ("r-1", "r-2", "r-3", "r-late")] == window
    # a forgotten id is a new request: it runs again
    assert again.set_stock(LOCS[0], "SKU-000001", 7, request_id="r-0").on_hand == 7
    again.close()


def test_snapshots_retire_old_segments_and_recovery_uses_the_newest(tmp_path, clock):
    eng = pyomni.Engine.open(tmp_path, NET, clock=clock, fsync="always", segment_bytes=2048)
    for i in range(200):
        eng.set_stock(LOCS[i % 20], SKUS[i % 30], i % 7, request_id=f"s-{i}")
    segments = len(list((tmp_path / "journal").glob("*.seg")))
    assert segments >= 4
    eng.save()
    first = eng.state().lsn
    for i in range(50):
        eng.adjust_stock(LOCS[i % 20], SKUS[i % 30], 1)
    eng.save()
    kept = sorted(int(p.name) for p in (tmp_path / "snapshots").iterdir() if p.name.isdigit())
    assert kept == [first, eng.state().lsn]                     # the two newest
    assert len(list((tmp_path / "journal").glob("*.seg"))) < segments
    expected = fingerprint(eng)
    eng.close()
    assert fingerprint(pyomni.Engine.open(tmp_path, clock=clock)) == expected


def test_a_damaged_newest_snapshot_falls_back_to_the_older_one_and_the_journal(tmp_path, clock, caplog):
    eng = pyomni.Engine.open(tmp_path, NET, clock=clock, fsync="never")
    eng.set_stock(LOCS[0], "SKU-000001", 5)
    eng.save()
    eng.set_stock(LOCS[1], "SKU-000001", 6)
    newest = eng.save()
    eng.set_stock(LOCS[2], "SKU-000001", 7)
    expected = fingerprint(eng)
    eng.close()
    cells = newest / "cells.arrow"
    data = bytearray(cells.read_bytes())
    data[len(data) // 2] ^= 0x40
    cells.write_bytes(bytes(data))
    recovered = pyomni.Engine.open(tmp_path, clock=clock)
    assert fingerprint(recovered) == expected
    assert any("damaged snapshot" in r.getMessage() for r in caplog.records)
    recovered.close()


def test_corruption_inside_the_journal_stops_the_start_naming_file_and_offset(tmp_path, clock):
    eng = pyomni.Engine.open(tmp_path, NET, clock=clock, fsync="never")
    for i in range(20):
        eng.set_stock(LOCS[i], "SKU-000001", i + 1)
    eng.close()
    (segment,) = (tmp_path / "journal").glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[len(data) // 3] ^= 0x01
    segment.write_bytes(bytes(data))
    with pytest.raises(errors.JournalCorrupt, match=segment.name) as caught:
        pyomni.Engine.open(tmp_path, clock=clock)
    assert re.search(rf"{segment.name}:\d+", str(caught.value))          # file:offset
    with pytest.raises(errors.JournalCorrupt):
        pyomni.Engine.load(tmp_path, clock=clock)


def test_a_journal_without_its_snapshot_is_refused(tmp_path, clock):
    eng = pyomni.Engine.open(tmp_path, NET, clock=clock, fsync="never")
    eng.set_stock(LOCS[0], "SKU-000001", 5)
    eng.close()
    shutil.rmtree(tmp_path / "snapshots")
    with pytest.raises(errors.JournalCorrupt):
        pyomni.Engine.open(tmp_path, NET, clock=clock)


@pytest.mark.parametrize("fail", ["write", "fdatasync"])
def test_a_failed_write_or_fsync_is_fatal_and_recovery_is_all_or_nothing(tmp_path, clock, monkeypatch, fail):
    eng = pyomni.Engine.open(tmp_path / "live", NET, clock=clock, fsync="always")
    eng.set_stock(LOCS[0], "SKU-000001", 5)
    before = fingerprint(eng)
    code = errno.ENOSPC if fail == "write" else errno.EIO

    def broken(*args, **kwargs):
        raise OSError(code, "injected")

    monkeypatch.setattr(journal.os, fail, broken)
    with pytest.raises(errors.StorageFailed):
        eng.route_order(order("o-1"), request_id="r-1")
    assert eng.storage_failure is not None
    with pytest.raises(errors.StorageFailed):                     # loud, and no further writes
        eng.set_stock(LOCS[1], "SKU-000001", 1)
    monkeypatch.undo()
    image = crash_image(eng, tmp_path / "crashed")
    recovered = pyomni.Engine.open(image, clock=clock)
    after = fingerprint(recovered)
    if fail == "write":                                          # nothing reached the disk
        assert after == before
    else:                                                        # written, not synced: wholly there or not at all
        assert after == before or (recovered.remembered("r-1") is not None and after[3] == before[3] + 1)
    recovered.check_invariants()
    recovered.close()


def test_a_batch_is_one_commit_and_fails_as_a_whole(tmp_path, clock, monkeypatch):
    eng = pyomni.Engine.open(tmp_path / "live", NET, clock=clock, fsync="always")
    for loc in LOCS:
        eng.set_stock(loc, "SKU-000001", 5)
    before = eng.journal_stats()["commits"]
    answers = eng.route_orders([order(f"b-{i}", near=i) for i in range(10)],
                               request_ids=[f"rb-{i}" for i in range(10)])
    assert all(a.reservation_id for a in answers)
    assert eng.journal_stats()["commits"] - before < 10          # the records of the batch share commits

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "injected")

    monkeypatch.setattr(journal.os, "fdatasync", broken)
    with pytest.raises(errors.StorageFailed):                   # not ten answers: nothing was acknowledged
        eng.route_orders([order(f"c-{i}", near=i) for i in range(10)], request_ids=[f"rc-{i}" for i in range(10)])
    monkeypatch.undo()
    recovered = pyomni.Engine.open(crash_image(eng, tmp_path / "crashed"), clock=clock)
    assert all(recovered.remembered(f"rb-{i}") == answers[i] for i in range(10))
    recovered.check_invariants()
    recovered.close()


# -- a crash at a random record boundary or inside a record ------------------------------------
class CrashAnywhere(RuleBasedStateMachine):
    """Random commands; at random moments a crash image cut at a random byte must recover exactly the
    state after the last record wholly before the cut."""

    def __init__(self):
        super().__init__()
        self.root = Path(tempfile.mkdtemp())
        self.clock = FakeClock()
        self.eng = pyomni.Engine.open(self.root / "live", NET, clock=self.clock, reservation_ttl=120.0,
                                      fsync="always")
        (self.segment,) = (self.root / "live" / "journal").glob("*.seg")
        self.states = {0: fingerprint(self.eng)}          # lsn -> state after it
        self.ends = {0: self.segment.stat().st_size}      # lsn -> byte where its record ends
        self.rids: list[str] = []
        self.crashes = 0

    def _record(self) -> None:
        lsn = self.eng.state().lsn
        self.states[lsn] = fingerprint(self.eng)
        self.ends[lsn] = self.segment.stat().st_size

    def _run(self, command) -> None:
        self.eng.expire_due()                    # due holds expire in a record of their own
        self._record()
        try:
            command()
        except errors.PyomniError:
            pass          # refused: it leaves no record, and the crash rule checks the state per record
        self._record()

    @initialize()
    def stock(self):
        self._run(lambda: self.eng.apply_stock_events(pa.table({
            "location": LOCS, "sku": ["SKU-000001"] * len(LOCS), "event": ["set"] * len(LOCS),
            "qty": [2] * len(LOCS)})))

    @rule(loc=st.integers(0, 19), qty=st.integers(0, 6))
    def set_stock(self, loc, qty):
        self._run(lambda: self.eng.set_stock(LOCS[loc], "SKU-000001", qty, request_id=f"set-{len(self.states)}"))

    @rule(near=st.integers(0, 19), qty=st.integers(1, 3))
    def route(self, near, qty):
        def go():
            a = self.eng.route_order(order(f"o-{len(self.states)}", qty=qty, near=near),
                                     request_id=f"route-{len(self.states)}")
            if a.reservation_id:
                self.rids.append(a.reservation_id)
        self._run(go)

    @rule(data=st.data(), confirm=st.booleans())
    def end(self, data, confirm):
        if self.rids:
            rid = data.draw(st.sampled_from(self.rids))
            self._run(lambda: (self.eng.confirm if confirm else self.eng.release)(rid))

    @rule(seconds=st.sampled_from([10.0, 130.0]))
    def time_passes(self, seconds):
        self.clock.advance(seconds)

    @rule(data=st.data())
    def crash(self, data):
        size = self.segment.stat().st_size
        cut = data.draw(st.integers(self.ends[0], size), label="cut")
        image = Path(tempfile.mkdtemp()) / "crashed"
        shutil.copytree(self.root / "live", image, ignore=shutil.ignore_patterns(".lock"))
        (seg,) = (image / "journal").glob("*.seg")
        with open(seg, "r+b") as f:
            f.truncate(cut)
        recovered = pyomni.Engine.open(image, clock=self.clock)
        lsn = recovered.state().lsn
        assert lsn == max(k for k, end in self.ends.items() if end <= cut)
        assert fingerprint(recovered) == self.states[lsn]
        recovered.check_invariants()
        recovered.close()
        shutil.rmtree(image.parent, ignore_errors=True)
        self.crashes += 1

    @invariant()
    def never_oversold(self):
        state = self.eng.state()
        assert (state.reserved >= 0).all() and (state.reserved <= state.on_hand).all()

    def teardown(self):
        self.eng.close()
        shutil.rmtree(self.root, ignore_errors=True)


TestCrashAnywhere = CrashAnywhere.TestCase
TestCrashAnywhere.settings = settings(max_examples=25, stateful_step_count=25, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])


# -- the operator's tools: pyomni journal verify | dump | truncate ------------------------------
def _damaged_directory(tmp_path: Path, clock: FakeClock) -> tuple[Path, Path]:
    eng = pyomni.Engine.open(tmp_path, NET, clock=clock, fsync="never")
    for i in range(10):
        eng.set_stock(LOCS[i], "SKU-000001", i + 1, request_id=f"t-{i}")
    eng.close()
    (segment,) = (tmp_path / "journal").glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x10
    segment.write_bytes(bytes(data))
    return tmp_path, segment


def test_journal_verify_says_whether_a_directory_recovers(tmp_path, clock, capsys):
    from pyomni.cli import main

    with pyomni.Engine.open(tmp_path / "good", NET, clock=clock, fsync="never") as eng:
        eng.set_stock(LOCS[0], "SKU-000001", 3)
    assert main(["journal", "verify", str(tmp_path / "good")]) == 0
    assert "recovers: yes" in capsys.readouterr().out
    root, segment = _damaged_directory(tmp_path / "bad", clock)
    assert main(["journal", "verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert "bad_checksum" in out and f"--segment {segment.name} --offset" in out and "recovers: NO" in out
    assert main(["journal", "verify", str(root), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["journal"]["problem"]["file"] == segment.name and not report["recovers"]
    assert main(["journal", "dump", str(tmp_path / "good"), "--limit", "1"]) == 0
    assert "StockCommand" in capsys.readouterr().out


def test_journal_truncate_cuts_at_the_damage_after_confirmation(tmp_path, clock, capsys):
    from pyomni.cli import main

    root, segment = _damaged_directory(tmp_path, clock)
    main(["journal", "verify", str(root), "--json"])
    problem = json.loads(capsys.readouterr().out)["journal"]["problem"]
    cut = ["journal", "truncate", str(root), "--segment", problem["file"], "--offset", str(problem["offset"])]
    assert main(cut) == 1                                          # refuses without --yes
    assert "--yes" in capsys.readouterr().err
    assert main([*cut, "--yes"]) == 0
    recovered = pyomni.Engine.open(root, clock=clock)
    lsn = recovered.state().lsn
    assert 0 < lsn < 10
    assert [recovered.remembered(f"t-{i}") is not None for i in range(10)] == [i < lsn for i in range(10)]
    recovered.close()


def test_journal_truncate_refuses_to_cut_below_a_snapshot(tmp_path, clock, capsys):
    from pyomni.cli import main

    eng = pyomni.Engine.open(tmp_path, NET, clock=clock, fsync="never")
    for i in range(5):
        eng.set_stock(LOCS[i], "SKU-000001", i + 1)
    eng.save()
    eng.close()
    (segment,) = (tmp_path / "journal").glob("*.seg")
    assert main(["journal", "truncate", str(tmp_path), "--segment", segment.name, "--offset", "16", "--yes"]) == 1
    assert "move them out" in capsys.readouterr().err


def test_a_clean_exit_without_close_loses_nothing_even_with_fsync_never(tmp_path):
    """The writer is a daemon thread; journals still open at interpreter exit are flushed first."""
    import subprocess
    import sys

    script = f"""
import pyomni
net = pyomni.demo_network(stores=20, warehouses=1, skus=30, seed=5)
eng = pyomni.Engine.open({str(tmp_path)!r}, net, fsync="never")
for i in range(2000):
    eng.set_stock(net.ids[i % 21], "SKU-000001", i % 9 + 1, request_id=f"x-{{i}}")
"""                                                                  # no close(): the program just ends
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    with pyomni.Engine.open(tmp_path) as eng:
        assert eng.state().lsn == 2000 and eng.remembered("x-1999").on_hand == 1999 % 9 + 1


def test_an_existing_directory_keeps_its_configuration_and_says_so(tmp_path, clock, caplog):
    with pyomni.Engine.open(tmp_path, NET, clock=clock, reservation_ttl=60.0, fsync="never"):
        pass                         # a new directory, made durable as it opens
    with pyomni.Engine.open(tmp_path, NET, clock=clock, reservation_ttl=999.0) as eng:
        eng.set_stock(LOCS[0], "SKU-000001", 2)
        assert eng.route_order(order("o-1")).expires_at == clock.now + 60.0
    assert any("existing data directory" in r.getMessage() and r.ignored == ["network", "reservation_ttl"]
               for r in caplog.records)
