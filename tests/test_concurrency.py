"""Many threads against one native engine: no oversell, no lost or doubled update.

The engine serialises commands behind one lock while the native hot loops
release the GIL; these tests make threads race for the last units and for the
same reservations, then check totals and ``check_invariants()``.
"""

from __future__ import annotations

import random
import sys
import threading
from collections import Counter

import pytest
from conftest import SHANGHAI, make_city_net

import pyomni
from pyomni import AllocationStatus, Order, ReservationState, errors

N_THREADS = 8
ORDERS_PER_THREAD = 200
LAST_UNITS = {"SH-PEOPLE": 4, "SH-PUDONG": 3, "HZ-WESTLAKE": 2, "BJ-DONGCHENG": 3}   # 12 units of SKU-A
DESTINATIONS = [SHANGHAI, (31.2215, 121.5447), (30.2741, 120.1551), (39.9042, 116.4074), (35.0, 118.0)]


def run_threads(n: int, target) -> list:
    """Start ``n`` threads on ``target(i)`` at once; return their results, re-raising the first failure."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    failures: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as exc:      # noqa: BLE001 - reported to the main thread below
            failures.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a thread hung"
    if failures:
        raise failures[0]
    return results


@pytest.fixture(autouse=True)
def frequent_thread_switches():
    # switch threads every microsecond instead of every 5 ms, so races get their chance
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.fixture
def eng() -> pyomni.Engine:
    eng = pyomni.Engine(make_city_net(), native=True)
    for loc, qty in LAST_UNITS.items():
        eng.set_stock(loc, "SKU-A", qty, safety=1)       # one unit each kept for walk-ins: never sold online
    for loc in ("SH-PEOPLE", "WH-JIADING", "WH-BEIJING"):
        eng.set_stock(loc, "SKU-B", 10_000)
    return eng


def test_threads_racing_for_the_last_units_never_oversell(eng):
    online = sum(LAST_UNITS.values()) - len(LAST_UNITS)      # safety stock is not for sale online
    assert eng.available("SKU-A") == online

    def shopper(t: int) -> list[pyomni.Allocation]:
        rng = random.Random(t)
        out = []
        for i in range(ORDERS_PER_THREAD):
            qty = 1 if rng.random() < 0.8 else 2
            order = Order(f"t{t}-o{i}", [("SKU-A", qty)], destination=rng.choice(DESTINATIONS))
            out.append(eng.route_order(order))
        return out

    answers = [a for per_thread in run_threads(N_THREADS, shopper) for a in per_thread]
    assert len(answers) == N_THREADS * ORDERS_PER_THREAD
    allocated = [a for a in answers if a.status is AllocationStatus.ALLOCATED]
    assert all(a.status in (AllocationStatus.ALLOCATED, AllocationStatus.UNFULFILLABLE) for a in answers)
    units = sum(line.qty for a in allocated for s in a.shipments for line in s.lines)
    # demand far exceeds supply: every sellable unit goes, and not one more
    assert units == online
    table = eng.stock_table().to_pylist()
    assert sum(r["reserved"] for r in table if r["sku"] == "SKU-A") == online
    for r in table:
        assert r["on_hand"] - r["reserved"] - r["safety"] >= 0      # no hold reaches into safety stock
    assert eng.available("SKU-A") == 0
    # every ALLOCATED answer has its own HELD reservation holding exactly what it says
    ids = [a.reservation_id for a in allocated]
    assert all(ids) and len(set(ids)) == len(ids)
    for a in allocated:
        r = eng.reservation(a.reservation_id)
        assert r.state is ReservationState.HELD and r.shipments == a.shipments and r.order_id == a.order_id
    assert len(eng.reservations(ReservationState.HELD)) == len(allocated)
    for a in answers:
        if a.status is AllocationStatus.UNFULFILLABLE:
            assert a.reservation_id is None and a.short_lines
    eng.check_invariants()


def test_concurrent_confirm_and_release_while_others_route(eng):
    # 240 reservations of SKU-B to settle, while shoppers keep routing SKU-A and SKU-B
    pending = [eng.route_order(Order(f"pre-{i}", [("SKU-B", 1 + i % 3)], destination=SHANGHAI))
               for i in range(240)]
    assert all(a.ok for a in pending)
    held_before = sum(r["reserved"] for r in eng.stock_table().to_pylist() if r["sku"] == "SKU-B")
    on_hand_before = sum(r["on_hand"] for r in eng.stock_table().to_pylist() if r["sku"] == "SKU-B")
    to_confirm = {a.reservation_id: a for a in pending[0::2]}
    to_release = {a.reservation_id: a for a in pending[1::2]}

    def settle(verb, rid):
        try:
            return rid, verb, verb(rid).state
        except errors.ReservationNotHeld:
            return rid, verb, None            # someone else settled it first

    def worker(t: int):
        rng = random.Random(100 + t)
        if t < 3:           # settle a third of the reservations each, in a random order
            mine = [a.reservation_id for k, a in enumerate(pending) if k % 3 == t]
            rng.shuffle(mine)
            return [settle(eng.confirm if rid in to_confirm else eng.release, rid) for rid in mine]
        if t < 5:           # and race them with releases: exactly one settlement per reservation may win
            return [settle(eng.release, a.reservation_id) for a in rng.sample(pending, 60)]
        answers = []
        for i in range(ORDERS_PER_THREAD):
            sku = "SKU-A" if i % 4 == 0 else "SKU-B"
            answers.append(eng.route_order(Order(f"w{t}-{i}", [(sku, 1)], destination=rng.choice(DESTINATIONS))))
            if i % 10 == 0:
                eng.receive("WH-JIADING", "SKU-C", 1)
        return answers

    results = run_threads(N_THREADS, worker)
    attempts = [x for r in results[:5] for x in r]
    winners = Counter(rid for rid, _, state in attempts if state is not None)
    assert set(winners) == set(to_confirm) | set(to_release)      # every reservation was settled ...
    assert all(n == 1 for n in winners.values())                   # ... exactly once
    states = {a.reservation_id: eng.reservation(a.reservation_id).state for a in pending}
    for rid, verb, state in attempts:
        if state is not None:
            assert states[rid] is state
            assert state is (ReservationState.CONFIRMED if verb == eng.confirm else ReservationState.RELEASED)
    confirmed_units = sum(line.qty for rid, a in to_confirm.items() if states[rid] is ReservationState.CONFIRMED
                          for s in a.shipments for line in s.lines)
    new = [a for r in results[5:] for a in r if a.ok]
    new_b = [a for a in new if a.shipments[0].lines[0].sku == "SKU-B"]
    table = eng.stock_table().to_pylist()
    on_hand_b = sum(r["on_hand"] for r in table if r["sku"] == "SKU-B")
    reserved_b = sum(r["reserved"] for r in table if r["sku"] == "SKU-B")
    assert held_before > 0
    assert on_hand_b == on_hand_before - confirmed_units        # only confirmations took stock out
    assert reserved_b == len(new_b)                             # only the new holds remain
    assert eng.stock("WH-JIADING", "SKU-C").on_hand == 3 * 20   # no lost update
    assert eng.stats()["reservations"]["HELD"] == len(new)
    eng.check_invariants()


def test_concurrent_retries_of_one_request_make_one_reservation(eng):
    order = Order("retry-me", [("SKU-B", 2)], destination=SHANGHAI)
    answers = run_threads(N_THREADS, lambda t: [eng.route_order(order, request_id="req-1") for _ in range(25)])
    flat = [a for per_thread in answers for a in per_thread]
    assert len({a.reservation_id for a in flat}) == 1
    assert all(a == flat[0] for a in flat)
    assert len(eng.reservations()) == 1
    assert sum(r["reserved"] for r in eng.stock_table().to_pylist()) == 2
    eng.check_invariants()


def test_concurrent_stock_commands_lose_no_update(eng):
    def clerk(t: int) -> None:
        for _ in range(300):
            if t % 2:
                eng.receive("SH-PUDONG", "SKU-D", 2)
            else:
                eng.transfer("WH-BEIJING", "SH-PUDONG", "SKU-B", 1)
                eng.transfer("SH-PUDONG", "WH-BEIJING", "SKU-B", 1)

    run_threads(N_THREADS, clerk)
    assert eng.stock("SH-PUDONG", "SKU-D").on_hand == 2 * 300 * (N_THREADS // 2)
    assert eng.stock("WH-BEIJING", "SKU-B").on_hand == 10_000
    assert eng.stock("SH-PUDONG", "SKU-B").on_hand == 0
    eng.check_invariants()
