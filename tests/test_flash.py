"""Flash sales on both backends: life cycle, refusals, earmarks, pay-window expiry, parity and durability.

Most tests drive the engine through :class:`Checked`, which runs
``check_invariants()`` after every call, failed or not. The hand-written
cases use the city network of ``conftest`` (known distances: People's Square
-> Lujiazui ~7 km, -> Suzhou ~85 km, -> Hangzhou ~165 km); the property tests
use a demo network. ``Model`` below is an independent, dict-based model of one
sale written from the rules in :mod:`pyomni.flash`'s module text.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import numpy as np
import pytest
from conftest import SHANGHAI, Checked, FakeClock, make_city_net
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import pyomni
from pyomni import ReservationState, errors
from pyomni.flash import CLAIM_ERRORS, CLAIM_OK, Claim, FlashSale, SaleCounters, SaleState

HELD, CONFIRMED, RELEASED, EXPIRED = (ReservationState.HELD, ReservationState.CONFIRMED, ReservationState.RELEASED,
                                      ReservationState.EXPIRED)
A, B = "SKU-A", "SKU-B"
PEOPLE, PUDONG, XUHUI, SUZHOU, HANGZHOU = "SH-PEOPLE", "SH-PUDONG", "SH-XUHUI", "SZ-CENTRE", "HZ-WESTLAKE"


@pytest.fixture
def eng(make_engine) -> Checked:
    return Checked(make_engine())


def sale_of(clock: FakeClock, sale_id: str = "tee", *, skus=(A,), start: float = -60.0, end: float = 3600.0,
            quota: int = 10, stores=((PEOPLE, 3), (PUDONG, 3)), **kwargs) -> FlashSale:
    """A sale whose window is given relative to the fake clock's time."""
    return FlashSale(sale_id, tuple(skus), clock.now + start, clock.now + end, quota, tuple(stores), **kwargs)


def frozen(eng, sale_id: str = "tee") -> tuple:
    """What a refusal must leave untouched: the sale's counters and every stock cell."""
    return eng.sale_counters(sale_id), eng.stock_table().to_pydict()


def stock_up(eng, levels: dict[str, int], sku: str = A) -> None:
    for loc, n in levels.items():
        eng.set_stock(loc, sku, n)


def number(claim: Claim) -> int:
    return int(claim.id[1:])


# == 1. life cycle ==========================================================================
def test_a_sale_whose_window_began_is_active_and_listed(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    spec = sale_of(clock, title="tee drop")
    counters = eng.create_sale(spec)
    assert isinstance(counters, SaleCounters)
    assert (counters.sale_id, counters.state, counters.quota, counters.claimed, counters.confirmed,
            counters.released, counters.claims) == ("tee", SaleState.ACTIVE, 10, 0, 0, 0, 0)
    assert counters.remaining == 6                                 # min(10, 3 + 3)
    assert [(s.store, s.quota, s.claimed, s.remaining) for s in counters.stores] == [(PEOPLE, 3, 0, 3),
                                                                                      (PUDONG, 3, 0, 3)]
    assert eng.sale("tee") == spec and eng.sales() == [spec]
    assert eng.sale_counters("tee") == counters
    with pytest.raises(errors.DuplicateId):
        eng.create_sale(spec)


def test_a_scheduled_sale_starts_by_the_engine_clock(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    counters = eng.create_sale(sale_of(clock, start=100.0))
    assert counters.state is SaleState.SCHEDULED and counters.remaining == 0
    assert eng.available(A) == 10                                   # nothing earmarked before the start
    with pytest.raises(errors.SaleNotActive):
        eng.claim("tee", "m-1", A, store=PEOPLE)
    clock.advance(99.999)
    with pytest.raises(errors.SaleNotActive):
        eng.claim("tee", "m-1", A, store=PEOPLE)
    clock.advance(0.001)                                            # exactly starts_at: no explicit call
    c = eng.claim("tee", "m-1", A, store=PEOPLE)
    assert (c.store, c.qty, c.state) == (PEOPLE, 1, HELD)
    assert eng.sale_counters("tee").state is SaleState.ACTIVE
    assert eng.available(A) == 10 - 3 - 3                           # the earmark was taken at the start


def test_a_scheduled_sale_starts_on_expire_due(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 1})
    eng.create_sale(sale_of(clock, start=10.0))
    clock.advance(10)
    assert eng.expire_due() == []
    assert eng.sale_counters("tee").state is SaleState.ACTIVE
    assert eng.available(A) == 6 - 3 - 1


def test_claim_at_a_named_store(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, customer_limit=2, pay_window=300.0))
    c = eng.claim("tee", "m-1", A, 2, store=PUDONG)
    assert isinstance(c, Claim)
    assert (c.sale_id, c.customer, c.sku, c.store, c.qty, c.state) == ("tee", "m-1", A, PUDONG, 2, HELD)
    assert c.created_at == clock.now and c.expires_at == clock.now + 300.0
    assert eng.get_claim(c.id) == c
    assert eng.claims("tee") == [c] == eng.claims("tee", state=HELD)
    assert eng.claims("tee", state=CONFIRMED) == []
    counters = eng.sale_counters("tee")
    assert (counters.claimed, counters.claims, counters.remaining) == (2, 1, 4)
    assert [(s.claimed, s.remaining) for s in counters.stores] == [(0, 3), (2, 1)]
    # taken from the earmark: the store's reserved units do not change, nor does what other channels see
    assert eng.stock(PUDONG, A) == pyomni.StockLevel(PUDONG, A, 5, 3, 0)
    assert eng.available(A) == 4


def test_claim_without_earmark_holds_the_units_at_the_store(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, earmark=False, customer_limit=3))
    assert eng.available(A) == 10
    eng.claim("tee", "m-1", A, 3, store=PEOPLE)
    assert eng.stock(PEOPLE, A) == pyomni.StockLevel(PEOPLE, A, 5, 3, 0)
    assert eng.available(A) == 7


def test_claim_near_a_point_takes_the_nearest_store_with_quota_and_stock(make_engine, clock):
    eng = Checked(make_engine())
    stock_up(eng, {PEOPLE: 5, PUDONG: 0, SUZHOU: 5, HANGZHOU: 5})
    eng.create_sale(sale_of(clock, earmark=False, stores=((HANGZHOU, 3), (SUZHOU, 3), (PUDONG, 3), (PEOPLE, 1))))
    assert eng.claim("tee", "m-1", A, near=SHANGHAI).store == PEOPLE       # the nearest
    # People's Square is full, Lujiazui (next nearest) has quota but no stock: Suzhou, not Hangzhou
    assert eng.claim("tee", "m-2", A, near=SHANGHAI).store == SUZHOU
    eng.set_stock(PUDONG, A, 1)
    assert eng.claim("tee", "m-3", A, near=SHANGHAI).store == PUDONG
    assert eng.claim("tee", "m-4", A, near=(30.2741, 120.1551)).store == HANGZHOU
    # Lujiazui's one unit is held now: Suzhou again
    assert eng.claim_many("tee", ["m-5"], A, near=[SHANGHAI]).store_id(0) == SUZHOU


def test_claim_near_skips_a_store_that_cannot_give_all_units(make_engine, clock):
    eng = Checked(make_engine())
    stock_up(eng, {PEOPLE: 1, PUDONG: 5})
    eng.create_sale(sale_of(clock, customer_limit=2))
    c = eng.claim("tee", "m-1", A, 2, near=SHANGHAI)
    assert c.store == PUDONG


def test_max_km_excludes_far_stores(make_engine, clock):
    stores = ((PEOPLE, 1), (PUDONG, 3), (SUZHOU, 3))
    for max_km, second in ((50.0, None), (100.0, SUZHOU), (0.0, SUZHOU)):
        eng = Checked(make_engine())
        stock_up(eng, {PEOPLE: 5, PUDONG: 0, SUZHOU: 5})
        eng.create_sale(sale_of(clock, earmark=False, stores=stores, max_km=max_km))
        assert eng.claim("tee", "m-1", A, near=SHANGHAI).store == PEOPLE
        if second is None:          # in reach: People's Square (full) and Lujiazui (no stock); Suzhou is too far
            before = frozen(eng)
            with pytest.raises(errors.InsufficientStock):
                eng.claim("tee", "m-2", A, near=SHANGHAI)
            assert frozen(eng) == before
        else:
            assert eng.claim("tee", "m-2", A, near=SHANGHAI).store == second


def test_confirm_takes_the_units_off_hand_and_keeps_the_quota_used(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, customer_limit=2, quota=3, stores=((PEOPLE, 2), (PUDONG, 2))))
    c = eng.claim("tee", "m-1", A, 2, store=PEOPLE)
    paid = eng.confirm_claim(c.id)
    assert paid == Claim(c.id, "tee", "m-1", A, PEOPLE, 2, CONFIRMED, c.created_at, c.expires_at)
    assert eng.get_claim(c.id).state is CONFIRMED
    assert eng.stock(PEOPLE, A) == pyomni.StockLevel(PEOPLE, A, 3, 0, 0)   # store full: its earmark went back
    counters = eng.sale_counters("tee")
    assert (counters.claimed, counters.confirmed, counters.released, counters.remaining) == (2, 2, 0, 1)
    assert counters.stores[0].claimed == 2
    with pytest.raises(errors.StoreQuotaExhausted):
        eng.claim("tee", "m-2", A, store=PEOPLE)
    with pytest.raises(errors.CustomerLimitReached):
        eng.claim("tee", "m-1", A, store=PUDONG)
    for again in (eng.confirm_claim, eng.release_claim):
        with pytest.raises(errors.ReservationNotHeld):
            again(c.id)


def test_release_gives_units_back_to_the_stock_and_all_three_quotas(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, earmark=False, quota=1, stores=((PEOPLE, 1), (PUDONG, 1)), customer_limit=1))
    start = eng.stock_table().to_pydict()
    c = eng.claim("tee", "m-1", A, store=PEOPLE)
    for customer, store, error in (("m-1", PUDONG, errors.CustomerLimitReached), ("m-2", PUDONG, errors.SoldOut),
                                   ("m-2", PEOPLE, errors.SoldOut)):
        with pytest.raises(error):
            eng.claim("tee", customer, A, store=store)
    released = eng.release_claim(c.id)
    assert released.state is RELEASED and eng.get_claim(c.id).state is RELEASED
    assert eng.stock_table().to_pydict() == start
    counters = eng.sale_counters("tee")
    assert (counters.claimed, counters.released, counters.claims, counters.remaining) == (0, 1, 1, 1)
    assert [s.claimed for s in counters.stores] == [0, 0]
    # global, store and customer quota all came back: the same customer, at the same store
    again = eng.claim("tee", "m-1", A, store=PEOPLE)
    assert number(again) > number(c) and again.state is HELD
    with pytest.raises(errors.ReservationNotHeld):
        eng.release_claim(c.id)


def test_a_retry_with_the_same_request_id_returns_the_same_claim_and_changes_nothing(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, customer_limit=2))
    c = eng.claim("tee", "m-1", A, store=PEOPLE, request_id="r-1")
    n = eng.claim("tee", "m-2", A, near=SHANGHAI, request_id="r-2")
    before = frozen(eng)
    clock.advance(5)
    assert eng.claim("tee", "m-1", A, store=PEOPLE, request_id="r-1") == c
    assert eng.claim("tee", "m-2", A, near=SHANGHAI, request_id="r-2") == n
    batch = eng.claim_many("tee", ["m-2", "m-1"], A, [1, 1], near=[SHANGHAI, SHANGHAI], stores=[None, PEOPLE],
                           request_ids=["r-2", "r-1"])
    assert list(batch) == [n, c] and batch.accepted == 2
    assert batch.claim.tolist() == [number(n), number(c)]
    assert frozen(eng) == before
    # also after the claim was paid: the retry gives the first answer, and still changes nothing
    eng.confirm_claim(c.id)
    paid = frozen(eng)
    assert eng.claim("tee", "m-1", A, store=PEOPLE, request_id="r-1") == c
    assert frozen(eng) == paid


def test_a_request_id_twice_in_one_batch_is_one_claim(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, customer_limit=3))
    r = eng.claim_many("tee", ["m-1", "m-1", "m-2"], A, [2, 2, 1], stores=[PEOPLE, PEOPLE, PUDONG],
                       request_ids=["r-x", "r-x", None])
    assert r.status.tolist() == [CLAIM_OK] * 3
    assert r.claim[0] == r.claim[1] != r.claim[2]
    assert r.get(0) == r.get(1) and r.store_id(0) == r.store_id(1) == PEOPLE
    counters = eng.sale_counters("tee")
    assert (counters.claimed, counters.claims) == (3, 2)
    assert eng.stock(PEOPLE, A).reserved == 3                        # one earmark, one claim of 2 taken from it
    assert eng.claim("tee", "m-1", A, 2, store=PEOPLE, request_id="r-x") == r.get(0)


def test_the_same_request_id_for_a_different_claim_is_refused(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, customer_limit=3))
    eng.claim("tee", "m-1", A, store=PEOPLE, request_id="r-1")
    eng.set_stock(XUHUI, A, 1, request_id="r-stock")
    before = frozen(eng)
    for kwargs in ({"customer": "m-2"}, {"qty": 2}, {"store": PUDONG}, {"near": SHANGHAI, "store": None}):
        args = {"customer": "m-1", "sku": A, "qty": 1, "store": PEOPLE} | kwargs
        with pytest.raises(errors.RequestIdReused):
            eng.claim("tee", request_id="r-1", **args)
    with pytest.raises(errors.RequestIdReused):             # a request id of another kind of command
        eng.claim("tee", "m-1", A, store=PEOPLE, request_id="r-stock")
    with pytest.raises(errors.RequestIdReused):             # ... and the other way round
        eng.set_stock(XUHUI, A, 1, request_id="r-1")
    r = eng.claim_many("tee", ["m-9"], A, stores=[PEOPLE], request_ids=["r-1"])
    assert r.accepted == 0 and isinstance(r.get(0), errors.RequestIdReused)
    assert frozen(eng) == before


def test_a_request_id_twice_in_one_batch_for_different_claims_is_refused(eng, clock):
    """The second copy names another customer: it must not be answered with the first copy's claim."""
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock))
    r = eng.claim_many("tee", ["m-1", "m-2"], A, stores=[PEOPLE, PEOPLE], request_ids=["r-x", "r-x"])
    assert r.status[0] == CLAIM_OK
    assert isinstance(r.get(1), errors.RequestIdReused), r.get(1)


def test_a_retry_after_the_sale_ended_still_returns_the_claim(eng, clock):
    """A client that lost the answer of a claim made just before the end learns it on a retry."""
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, end=60.0))
    c = eng.claim("tee", "m-1", A, store=PEOPLE, request_id="r-1")
    clock.advance(60)
    assert eng.claim("tee", "m-1", A, store=PEOPLE, request_id="r-1") == c


# == 2. refusals: the exact error, and nothing changed ======================================
def refused(eng, error, *args, sale_id: str = "tee", **kwargs):
    before = frozen(eng, sale_id)
    with pytest.raises(error) as info:
        eng.claim(*args, **kwargs)
    assert type(info.value) is error
    assert frozen(eng, sale_id) == before
    return info.value


def test_claims_before_the_start_are_refused(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, start=30.0))
    refused(eng, errors.SaleNotActive, "tee", "m-1", A, store=PEOPLE)
    refused(eng, errors.SaleNotActive, "tee", "m-1", A, near=SHANGHAI)
    with pytest.raises(errors.SaleNotActive):
        eng.claim_many("tee", ["m-1", "m-2"], A, stores=[PEOPLE, PUDONG])


def test_claims_at_and_after_the_end_are_refused(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, end=60.0))
    c = eng.claim("tee", "m-1", A, store=PEOPLE)
    assert eng.available(A) == 4
    clock.advance(60)                                       # exactly ends_at: the window is [start, end)
    with pytest.raises(errors.SaleNotActive):
        eng.claim("tee", "m-2", A, store=PEOPLE)
    counters = eng.sale_counters("tee")
    assert counters.state is SaleState.ENDED and counters.remaining == 0 and counters.claimed == 1
    assert eng.available(A) == 9                            # the earmark went back with the end; the claim holds
    assert eng.get_claim(c.id).state is HELD
    clock.advance(1)
    refused(eng, errors.SaleNotActive, "tee", "m-2", A, store=PUDONG)
    refused(eng, errors.SaleNotActive, "tee", "m-3", A, near=SHANGHAI)
    assert eng.confirm_claim(c.id).state is CONFIRMED        # a held claim can still be paid


def test_claims_after_end_sale_are_refused(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock))
    eng.claim("tee", "m-1", A, store=PEOPLE)
    counters = eng.end_sale("tee")
    assert counters.state is SaleState.ENDED and counters.remaining == 0
    refused(eng, errors.SaleNotActive, "tee", "m-2", A, store=PEOPLE)
    with pytest.raises(errors.FailedPrecondition):
        eng.end_sale("tee")


def test_sold_out(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, quota=3, customer_limit=2))
    eng.claim("tee", "m-1", A, 2, store=PEOPLE)
    refused(eng, errors.SoldOut, "tee", "m-2", A, 2, store=PUDONG)
    eng.claim("tee", "m-2", A, 1, store=PUDONG)
    assert eng.sale_counters("tee").remaining == 0
    refused(eng, errors.SoldOut, "tee", "m-3", A, store=PUDONG)
    refused(eng, errors.SoldOut, "tee", "m-3", A, near=SHANGHAI)


def test_store_quota_exhausted(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, stores=((PEOPLE, 1), (PUDONG, 0))))
    refused(eng, errors.StoreQuotaExhausted, "tee", "m-1", A, store=PUDONG)
    eng.claim("tee", "m-1", A, store=PEOPLE)
    refused(eng, errors.StoreQuotaExhausted, "tee", "m-2", A, store=PEOPLE)
    refused(eng, errors.StoreQuotaExhausted, "tee", "m-2", A, near=SHANGHAI)   # no store has quota left


def test_customer_limit_reached(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, customer_limit=2))
    refused(eng, errors.CustomerLimitReached, "tee", "m-1", A, 3, store=PEOPLE)
    eng.claim("tee", "m-1", A, 1, store=PEOPLE)
    refused(eng, errors.CustomerLimitReached, "tee", "m-1", A, 2, store=PUDONG)
    eng.claim("tee", "m-1", A, 1, store=PUDONG)
    refused(eng, errors.CustomerLimitReached, "tee", "m-1", A, 1, near=SHANGHAI)
    eng.claim("tee", "m-2", A, 1, store=PUDONG)             # another customer is not limited by m-1


def test_insufficient_stock_with_store_quota_left(eng, clock):
    stock_up(eng, {PEOPLE: 1, PUDONG: 0})
    eng.create_sale(sale_of(clock, customer_limit=3))
    refused(eng, errors.InsufficientStock, "tee", "m-1", A, 2, store=PEOPLE)
    refused(eng, errors.InsufficientStock, "tee", "m-1", A, 1, store=PUDONG)
    refused(eng, errors.InsufficientStock, "tee", "m-1", A, 2, near=SHANGHAI)
    eng.claim("tee", "m-1", A, 1, store=PEOPLE)
    refused(eng, errors.InsufficientStock, "tee", "m-2", A, 1, store=PEOPLE)
    assert eng.sale_counters("tee").stores[0].remaining == 2


def test_bad_input_is_refused(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock))
    with pytest.raises(errors.UnknownSale):
        eng.claim("nope", "m-1", A, store=PEOPLE)
    for sku in (B, "SKU-NOT-THERE"):
        assert refused(eng, errors.UnknownSku, "tee", "m-1", sku, store=PEOPLE).field == "sku"
    for store in (XUHUI, "NOWHERE"):
        assert refused(eng, errors.UnknownLocation, "tee", "m-1", A, store=store).field == "store"
    for qty in (0, -1, pyomni.MAX_QTY + 1):
        assert refused(eng, errors.InvalidQuantity, "tee", "m-1", A, qty, store=PEOPLE).field == "qty"
    refused(eng, errors.InvalidArgument, "tee", "", A, store=PEOPLE)
    refused(eng, errors.InvalidCoordinates, "tee", "m-1", A, near=(91.0, 0.0))
    with pytest.raises(errors.InvalidArgument):
        eng.claim("tee", "m-1", A, store=PEOPLE, near=SHANGHAI)
    with pytest.raises(errors.InvalidArgument):
        eng.claim("tee", "m-1", A)
    for bad in ("C1", "R0000000001", "C0000000099", 7):
        with pytest.raises(errors.UnknownClaim):
            eng.get_claim(bad)
        with pytest.raises(errors.UnknownClaim):
            eng.confirm_claim(bad)
    for call in (lambda: eng.sale("nope"), lambda: eng.sale_counters("nope"), lambda: eng.end_sale("nope"),
                 lambda: eng.claims("nope"), lambda: eng.claim_many("nope", ["m-1"], A, stores=[PEOPLE])):
        with pytest.raises(errors.UnknownSale):
            call()
    assert eng.sale_counters("tee").claims == 0


def test_a_batch_reports_each_claim_and_goes_on_past_refusals(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 1})
    eng.create_sale(sale_of(clock, customer_limit=1))
    r = eng.claim_many("tee", ["m-1", "m-1", "m-2", "m-3", "m-4", "m-5", "m-6"], [A, A, B, A, A, A, A],
                       [1, 1, 1, 0, 1, 1, 1], stores=[PEOPLE, PEOPLE, PEOPLE, PEOPLE, XUHUI, PUDONG, PUDONG])
    expected = [None, errors.CustomerLimitReached, errors.UnknownSku, errors.InvalidQuantity,
                errors.UnknownLocation, None, errors.InsufficientStock]
    assert len(r) == 7 and r.accepted == 2
    for i, want in enumerate(expected):
        got = r.get(i)
        if want is None:
            assert r.status[i] == CLAIM_OK and isinstance(got, Claim) and got.id == f"C{r.claim[i]:010d}"
            assert got.store == r.store_id(i)
        else:
            assert type(got) is want and CLAIM_ERRORS[int(r.status[i])] is want
            assert r.claim[i] == -1 and r.store[i] == -1 and r.store_id(i) is None
    assert [c.customer for c in eng.claims("tee")] == ["m-1", "m-5"]


def test_checks_come_in_order_customer_global_store_stock(make_engine, clock):
    eng = Checked(make_engine())
    stock_up(eng, {PEOPLE: 5, PUDONG: 0, SUZHOU: 0})
    eng.create_sale(sale_of(clock, quota=3, customer_limit=2, stores=((PEOPLE, 2), (PUDONG, 2), (SUZHOU, 0))))
    eng.claim("tee", "c-1", A, 2, store=PEOPLE)            # c-1 at its limit, 1 left in all, People's Square full
    cases = [
        ("c-1", 2, PUDONG, errors.CustomerLimitReached),   # customer, global, stock
        ("c-1", 1, PEOPLE, errors.CustomerLimitReached),   # customer, store
        ("c-1", 1, SUZHOU, errors.CustomerLimitReached),   # customer, store, stock
        ("c-2", 2, PEOPLE, errors.SoldOut),                # global, store
        ("c-2", 2, PUDONG, errors.SoldOut),                # global, stock
        ("c-2", 2, SUZHOU, errors.SoldOut),                # global, store, stock
        ("c-2", 1, PEOPLE, errors.StoreQuotaExhausted),    # store
        ("c-2", 1, SUZHOU, errors.StoreQuotaExhausted),    # store, stock
        ("c-2", 1, PUDONG, errors.InsufficientStock),      # stock
    ]
    for customer, qty, store, error in cases:
        refused(eng, error, "tee", customer, A, qty, store=store)
    r = eng.claim_many("tee", [c for c, *_ in cases], A, [q for _, q, *_ in cases], stores=[s for _, _, s, _ in cases])
    assert [type(x) for x in r] == [e for *_, e in cases]


# -- update_sale -----------------------------------------------------------------------------
def test_update_sale_changes_quotas_and_window_within_limits(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    spec = sale_of(clock, customer_limit=3)
    eng.create_sale(spec)
    eng.claim("tee", "m-1", A, 1, store=PEOPLE)
    assert eng.available(A) == 4
    stores = ((PEOPLE, 2), (PUDONG, 3))
    counters = eng.update_sale(dataclasses.replace(spec, stores=stores))
    assert [(s.quota, s.claimed) for s in counters.stores] == [(2, 1), (3, 0)]
    # the earmark never exceeds what the store may still give: one unit goes back
    assert eng.stock(PEOPLE, A).reserved == 2 and eng.available(A) == 5
    for bad, error in ((dict(stores=((PEOPLE, 0), (PUDONG, 3))), errors.InvalidArgument),
                       (dict(stores=((PUDONG, 3),)), errors.InvalidArgument),
                       (dict(skus=(B,)), errors.InvalidArgument),
                       (dict(earmark=False), errors.InvalidArgument),
                       (dict(starts_at=spec.starts_at + 1), errors.InvalidArgument)):
        before = frozen(eng)
        with pytest.raises(error):
            eng.update_sale(dataclasses.replace(spec, **({"stores": stores} | bad)))
        assert frozen(eng) == before
    eng.update_sale(dataclasses.replace(spec, stores=stores, ends_at=clock.now + 10))
    clock.advance(10)                                       # the new end, on the engine clock
    with pytest.raises(errors.SaleNotActive):
        eng.claim("tee", "m-2", A, store=PUDONG)
    assert eng.sale_counters("tee").state is SaleState.ENDED and eng.available(A) == 9
    with pytest.raises(errors.FailedPrecondition):
        eng.update_sale(dataclasses.replace(spec, stores=stores))


def test_lowering_the_customer_limit_below_a_holding_keeps_the_engine_consistent(make_engine, clock):
    """Either update_sale refuses (as it does for quotas below what is claimed) or the invariants accept it."""
    eng = make_engine()
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    spec = sale_of(clock, customer_limit=3)
    eng.create_sale(spec)
    eng.claim("tee", "m-1", A, 3, store=PEOPLE)
    before = frozen(eng)
    try:
        eng.update_sale(dataclasses.replace(spec, customer_limit=1))
    except errors.InvalidArgument:
        assert frozen(eng) == before
    else:
        with pytest.raises(errors.CustomerLimitReached):
            eng.claim("tee", "m-1", A, 1, store=PUDONG)
    eng.check_invariants()


# == 3. earmarks ===========================================================================
def test_the_earmark_holds_each_stores_quota_of_stock(eng, clock):
    eng.set_stock(PEOPLE, A, 5, safety=1)
    eng.set_stock(PUDONG, A, 2)
    eng.set_stock(HANGZHOU, A, 4)
    eng.set_stock(SUZHOU, A, 3)                             # not in the sale
    assert eng.available(A) == 13
    eng.create_sale(sale_of(clock, quota=20, stores=((PEOPLE, 10), (PUDONG, 4), (HANGZHOU, 3))))
    held = {PEOPLE: 4, PUDONG: 2, HANGZHOU: 3}              # min(store quota, available)
    for loc, n in held.items():
        assert eng.stock(loc, A).reserved == n
        assert eng.available(A, location=loc) == (1 if loc == HANGZHOU else 0)
    assert eng.available(A) == 13 - 9
    assert eng.sale_counters("tee").remaining == 9
    with pytest.raises(errors.InsufficientStock):           # the held units cannot be sold at the till
        eng.sell(PUDONG, A, 1)
    with pytest.raises(errors.InsufficientStock):
        eng.sell(HANGZHOU, A, 2)
    eng.sell(HANGZHOU, A, 1)                                # the unit above the store's quota
    eng.sell(PEOPLE, A, 1)                                  # the safety unit may go at the till
    with pytest.raises(errors.InsufficientStock):
        eng.sell(PEOPLE, A, 1)
    with pytest.raises(errors.StockReserved):               # nor can a stock take count them away
        eng.set_stock(PUDONG, A, 1)
    eng.sell(SUZHOU, A, 3)
    assert eng.sale_counters("tee").remaining == 9


def test_a_full_store_gives_its_earmark_back(eng, clock):
    for sku in (A, B):
        stock_up(eng, {PEOPLE: 5, PUDONG: 5}, sku)
    eng.create_sale(sale_of(clock, skus=(A, B), stores=((PEOPLE, 3), (PUDONG, 3))))
    assert (eng.available(A), eng.available(B)) == (4, 4)   # each SKU earmarked up to the store's quota
    eng.claim("tee", "m-1", A, store=PEOPLE)
    eng.claim("tee", "m-2", B, store=PEOPLE)
    assert (eng.available(A), eng.available(B)) == (4, 4)
    assert (eng.stock(PEOPLE, A).reserved, eng.stock(PEOPLE, B).reserved) == (3, 3)
    eng.claim("tee", "m-3", A, store=PEOPLE)                # People's Square is full: its leftover goes back
    assert (eng.stock(PEOPLE, A).reserved, eng.stock(PEOPLE, B).reserved) == (2, 1)
    assert (eng.available(A), eng.available(B)) == (3 + 2, 4 + 2)
    assert (eng.stock(PUDONG, A).reserved, eng.stock(PUDONG, B).reserved) == (3, 3)   # the other store keeps its


def test_the_sold_out_sale_gives_every_earmark_back(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, quota=2, stores=((PEOPLE, 2), (PUDONG, 2))))
    assert eng.available(A) == 6
    eng.claim("tee", "m-1", A, store=PEOPLE)
    assert eng.available(A) == 6
    eng.claim("tee", "m-2", A, store=PUDONG)               # the global quota is reached
    assert (eng.stock(PEOPLE, A).reserved, eng.stock(PUDONG, A).reserved) == (1, 1)
    assert eng.available(A) == 8
    assert eng.sale_counters("tee").remaining == 0


def test_end_sale_gives_the_earmark_back_and_held_claims_stay(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, customer_limit=2))
    c = eng.claim("tee", "m-1", A, 2, store=PEOPLE)
    assert eng.available(A) == 4
    eng.end_sale("tee")
    assert eng.available(A) == 8
    assert (eng.stock(PEOPLE, A).reserved, eng.stock(PUDONG, A).reserved) == (2, 0)
    # after the end a released unit goes back to the stock, not to an earmark
    eng.release_claim(c.id)
    assert eng.available(A) == 10 and eng.stock(PEOPLE, A).reserved == 0
    assert eng.sale_counters("tee").claimed == 0


def test_a_release_while_the_sale_runs_goes_back_to_the_earmark(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, customer_limit=3))
    c = eng.claim("tee", "m-1", A, 2, store=PEOPLE)
    before = (eng.available(A), eng.stock(PEOPLE, A))
    eng.release_claim(c.id)
    assert (eng.available(A), eng.stock(PEOPLE, A)) == before == (4, pyomni.StockLevel(PEOPLE, A, 5, 3, 0))
    # ... also after the store filled up and gave its earmark back
    full = eng.claim("tee", "m-2", A, 3, store=PEOPLE)
    assert eng.stock(PEOPLE, A).reserved == 3 and eng.available(A) == 4
    eng.release_claim(full.id)
    assert eng.stock(PEOPLE, A).reserved == 3 and eng.available(A) == 4
    assert eng.sale_counters("tee").stores[0].available == 3
    eng.end_sale("tee")
    assert eng.available(A) == 10


def test_without_earmark_nothing_is_held_until_a_claim(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, earmark=False, customer_limit=2))
    assert eng.available(A) == 10 and eng.stock(PEOPLE, A).reserved == 0
    eng.sell(PEOPLE, A, 4)                                  # the shop floor may sell the sale's stock away
    with pytest.raises(errors.InsufficientStock):
        eng.claim("tee", "m-1", A, 2, store=PEOPLE)
    c = eng.claim("tee", "m-1", A, 1, store=PEOPLE)
    assert eng.stock(PEOPLE, A).reserved == 1 and eng.available(A) == 5
    with pytest.raises(errors.InsufficientStock):
        eng.sell(PEOPLE, A, 1)
    eng.release_claim(c.id)
    assert eng.stock(PEOPLE, A).reserved == 0 and eng.available(A) == 6


# == 4. pay-window expiry ==================================================================
@pytest.mark.parametrize("earmark", [True, False])
def test_unpaid_claims_expire_at_the_end_of_their_pay_window(eng, clock, earmark):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, pay_window=60.0, earmark=earmark, customer_limit=2, quota=6))
    c1 = eng.claim("tee", "m-1", A, 2, store=PEOPLE)
    clock.advance(30)
    c2 = eng.claim("tee", "m-2", A, 1, store=PUDONG)
    c3 = eng.claim("tee", "m-3", A, 1, store=PUDONG)
    eng.confirm_claim(c3.id)
    clock.advance(29.5)
    assert eng.expire_due() == []
    clock.advance(0.5)                                      # created + pay_window: c1 is due
    counted = eng.sale_counters("tee")
    assert eng.expire_due() == [c1.id]
    assert eng.get_claim(c1.id).state is EXPIRED and eng.get_claim(c2.id).state is HELD
    counters = eng.sale_counters("tee")
    assert (counters.claimed, counters.released, counters.confirmed) == (2, 2, 1)
    assert [s.claimed for s in counters.stores] == [0, 2] and counters.remaining == counted.remaining + 2
    assert eng.stock(PEOPLE, A) == pyomni.StockLevel(PEOPLE, A, 5, 3 if earmark else 0, 0)
    eng.claim("tee", "m-1", A, 2, store=PEOPLE)             # m-1's limit came back too
    # c2 expires implicitly, before the next command
    clock.advance(30)
    eng.set_stock(XUHUI, A, 1)
    assert eng.get_claim(c2.id).state is EXPIRED
    assert eng.get_claim(c3.id).state is CONFIRMED
    clock.advance(10_000)                                   # far past every window and the sale's end
    eng.expire_due()
    assert eng.get_claim(c3.id).state is CONFIRMED
    assert eng.sale_counters("tee").confirmed == 1 and eng.sale_counters("tee").claimed == 1
    assert eng.stock(PEOPLE, A) == pyomni.StockLevel(PEOPLE, A, 5, 0, 0)
    assert eng.stock(PUDONG, A) == pyomni.StockLevel(PUDONG, A, 4, 0, 0)
    assert sum(eng.stock_table().to_pydict()["reserved"]) == 0
    with pytest.raises(errors.ReservationNotHeld):
        eng.confirm_claim(c2.id)


def test_expiry_returns_exactly_the_expired_units(eng, clock):
    stock_up(eng, {PEOPLE: 5, PUDONG: 5})
    eng.create_sale(sale_of(clock, pay_window=100.0, earmark=False, customer_limit=3,
                            stores=((PEOPLE, 5), (PUDONG, 5))))
    c = [eng.claim("tee", f"m-{i}", A, 1 + i % 2, store=(PEOPLE, PUDONG)[i % 2]) for i in range(3)]
    clock.advance(50)
    late = eng.claim("tee", "m-9", A, 2, store=PEOPLE)
    clock.advance(50)
    expired = eng.expire_due()
    assert sorted(expired) == sorted(x.id for x in c)
    assert eng.stock(PEOPLE, A).reserved == 2 and eng.stock(PUDONG, A).reserved == 0
    assert eng.sale_counters("tee").claimed == 2 and eng.sale_counters("tee").released == 4
    assert [x.id for x in eng.claims("tee", state=EXPIRED)] == [x.id for x in c]
    assert eng.claims("tee", state=HELD) == [late]


# == 5. native vs reference ================================================================
PNET = pyomni.demo_network(stores=8, warehouses=0, skus=3, seed=3)
PSTORES = list(PNET.ids)
PSKUS = list(PNET.skus)
T0 = 1_000_000.0


@st.composite
def flash_cases(draw):
    n_st = draw(st.integers(2, 8))
    stores = draw(st.permutations(PSTORES))[:n_st]
    skus = draw(st.lists(st.sampled_from(PSKUS), min_size=1, max_size=3, unique=True))
    quotas = draw(st.lists(st.integers(0, 5), min_size=n_st, max_size=n_st))
    stock = draw(st.lists(st.integers(0, 6), min_size=n_st * len(skus), max_size=n_st * len(skus)))
    sale = FlashSale("p", tuple(skus), T0 - 1, T0 + 10_000, draw(st.integers(1, 20)), tuple(zip(stores, quotas)),
                     customer_limit=draw(st.integers(1, 3)), earmark=draw(st.booleans()),
                     max_km=draw(st.sampled_from([0.0, 300.0, 800.0, 1500.0])))
    claim = st.tuples(st.integers(0, 5), st.sampled_from(skus), st.one_of(st.none(), st.sampled_from(stores)),
                      st.tuples(st.floats(18, 45), st.floats(100, 128)), st.integers(1, 3),
                      st.one_of(st.none(), st.integers(0, 8)))
    batches = draw(st.lists(st.tuples(st.lists(claim, min_size=1, max_size=12),
                                      st.lists(st.integers(0, 100), max_size=3)), min_size=1, max_size=4))
    return sale, stock, batches


def run_case(native: bool, sale: FlashSale, stock: list[int], batches) -> list:
    eng = pyomni.Engine(PNET, clock=lambda: T0, native=native)
    skus, stores = sale.skus, [s for s, _ in sale.stores]
    for i, loc in enumerate(stores):
        for j, sku in enumerate(skus):
            if stock[i * len(skus) + j]:
                eng.set_stock(loc, sku, stock[i * len(skus) + j])
    seen = [eng.create_sale(sale), eng.stock_table().to_pydict()]
    for claims, releases in batches:
        r = eng.claim_many("p", [f"cu-{c[0]}" for c in claims], [c[1] for c in claims], [c[4] for c in claims],
                           stores=[c[2] for c in claims], near=[c[3] for c in claims],
                           request_ids=[None if c[5] is None else f"rq-{c[5]}" for c in claims])
        seen.append((r.status.tolist(), r.claim.tolist(), r.store.tolist(), r.expires_at.tolist(), len(r)))
        held = [c.id for c in eng.claims("p", state=HELD)]
        for k in releases:
            if held:
                eng.release_claim(held.pop(k % len(held)))
        seen += [eng.sale_counters("p"), eng.stock_table().to_pydict(), eng.claims("p")]
        eng.check_invariants()
    return seen


def same(a, b) -> bool:
    """Equal, NaN equal to NaN (the expiry times of refused claims)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flash_cases())
def test_native_and_reference_claim_passes_agree(case):
    sale, stock, batches = case
    native, reference = run_case(True, sale, stock, batches), run_case(False, sale, stock, batches)
    assert len(native) == len(reference)
    for x, y in zip(native, reference):
        assert same(x, y), (x, y)


# == 6. a state machine against an independent model =======================================
MSTORES = (PEOPLE, PUDONG, HANGZHOU)
MSKUS = (A, B)
PAY = 100.0


class Model:
    """One sale, written from pyomni.flash's rules: counters, per-cell ledger, earmark pools."""

    def __init__(self, quotas, quota, limit, earmark, on_hand, safety) -> None:
        self.store_quota = dict(zip(MSTORES, quotas))
        self.quota, self.limit, self.earmark = quota, limit, earmark
        cells = [(s, j) for s in MSTORES for j in MSKUS]
        self.on_hand = dict(zip(cells, on_hand))
        self.safety = dict(zip(cells, safety))
        self.reserved = dict.fromkeys(cells, 0)
        self.pool = dict.fromkeys(cells, 0)
        self.active = True
        self.claimed = self.confirmed = self.released = 0
        self.store_claimed = dict.fromkeys(MSTORES, 0)
        self.cust: dict[str, int] = defaultdict(int)
        self.claims: dict[str, dict] = {}
        if earmark:
            for k in cells:
                self.pool[k] = min(self.store_quota[k[0]], self.free(k))
                self.reserved[k] += self.pool[k]

    @property
    def earmarking(self) -> bool:
        return self.earmark and self.active

    def free(self, k) -> int:
        return max(0, self.on_hand[k] - self.reserved[k] - self.safety[k])

    def give_back(self, k) -> None:
        self.reserved[k] -= self.pool[k]
        self.pool[k] = 0

    def refusal(self, customer, sku, store, q):
        if not self.active:
            return errors.SaleNotActive
        if self.cust[customer] + q > self.limit:
            return errors.CustomerLimitReached
        if self.claimed + q > self.quota:
            return errors.SoldOut
        if self.store_claimed[store] + q > self.store_quota[store]:
            return errors.StoreQuotaExhausted
        if self.pool[store, sku] + self.free((store, sku)) < q:
            return errors.InsufficientStock
        return None

    def claim(self, cid, customer, sku, store, q, now) -> None:
        k = (store, sku)
        take = min(self.pool[k], q)
        self.pool[k] -= take
        self.reserved[k] += q - take
        self.store_claimed[store] += q
        self.claimed += q
        self.cust[customer] += q
        self.claims[cid] = {"customer": customer, "sku": sku, "store": store, "qty": q, "state": HELD,
                            "expires": now + PAY}
        if self.earmarking:
            if self.store_claimed[store] >= self.store_quota[store]:
                for j in MSKUS:
                    self.give_back((store, j))
            if self.claimed >= self.quota:
                for kk in self.pool:
                    self.give_back(kk)

    def end_claim(self, cid, state) -> None:
        c = self.claims[cid]
        k, q = (c["store"], c["sku"]), c["qty"]
        c["state"] = state
        if state is CONFIRMED:
            self.on_hand[k] -= q
            self.reserved[k] -= q
            self.confirmed += q
            return
        self.store_claimed[c["store"]] -= q
        self.claimed -= q
        self.cust[c["customer"]] -= q
        self.released += q
        if self.earmarking:
            self.pool[k] += q
        else:
            self.reserved[k] -= q

    def end(self) -> None:
        for k in self.pool:
            self.give_back(k)
        self.active = False

    def held(self) -> list[str]:
        return sorted(cid for cid, c in self.claims.items() if c["state"] is HELD)

    def remaining(self) -> int:
        if not self.active:
            return 0
        give = 0
        for s in MSTORES:
            left = max(self.store_quota[s] - self.store_claimed[s], 0)
            give += min(left, sum(self.pool[s, j] + self.free((s, j)) for j in MSKUS))
        return max(0, min(self.quota - self.claimed, give))


class FlashMachine(RuleBasedStateMachine):
    NATIVE = True

    def __init__(self) -> None:
        super().__init__()
        self.eng = None
        self.now = [T0]

    @initialize(quotas=st.lists(st.integers(0, 6), min_size=3, max_size=3), quota=st.integers(1, 12),
                limit=st.integers(1, 3), earmark=st.booleans(),
                on_hand=st.lists(st.integers(0, 6), min_size=6, max_size=6),
                safety=st.lists(st.integers(0, 1), min_size=6, max_size=6))
    def start(self, quotas, quota, limit, earmark, on_hand, safety) -> None:
        self.eng = pyomni.Engine(make_city_net(), clock=lambda: self.now[0], native=self.NATIVE)
        for (s, j), n, k in zip([(s, j) for s in MSTORES for j in MSKUS], on_hand, safety):
            self.eng.set_stock(s, j, n, safety=k)
        self.end_at = T0 + 30 * PAY                          # the clock may reach it: the sale ends by itself
        self.eng.create_sale(FlashSale("m", MSKUS, T0, self.end_at, quota, tuple(zip(MSTORES, quotas)),
                                       customer_limit=limit, pay_window=PAY, earmark=earmark))
        self.model = Model(quotas, quota, limit, earmark, on_hand, safety)

    @rule(customer=st.integers(0, 3), sku=st.sampled_from(MSKUS), store=st.sampled_from(MSTORES),
          qty=st.integers(1, 3))
    def claim(self, customer, sku, store, qty) -> None:
        name = f"cu-{customer}"
        want = self.model.refusal(name, sku, store, qty)
        if want is not None:
            with pytest.raises(want) as info:
                self.eng.claim("m", name, sku, qty, store=store)
            assert type(info.value) is want
            return
        c = self.eng.claim("m", name, sku, qty, store=store)
        assert (c.customer, c.sku, c.store, c.qty, c.state, c.expires_at) == (name, sku, store, qty, HELD,
                                                                              self.now[0] + PAY)
        assert c.id not in self.model.claims
        self.model.claim(c.id, name, sku, store, qty, self.now[0])

    @precondition(lambda self: self.eng is not None and self.model.held())
    @rule(pick=st.integers(0, 1000))
    def release(self, pick) -> None:
        held = self.model.held()
        cid = held[pick % len(held)]
        assert self.eng.release_claim(cid).state is RELEASED
        self.model.end_claim(cid, RELEASED)

    @precondition(lambda self: self.eng is not None and self.model.held())
    @rule(pick=st.integers(0, 1000))
    def confirm(self, pick) -> None:
        held = self.model.held()
        cid = held[pick % len(held)]
        assert self.eng.confirm_claim(cid).state is CONFIRMED
        self.model.end_claim(cid, CONFIRMED)

    @rule(store=st.sampled_from(MSTORES), sku=st.sampled_from(MSKUS), n=st.integers(1, 5))
    def receive(self, store, sku, n) -> None:
        self.eng.receive(store, sku, n)
        self.model.on_hand[store, sku] += n

    @rule(store=st.sampled_from(MSTORES), sku=st.sampled_from(MSKUS), n=st.integers(1, 4))
    def walk_in(self, store, sku, n) -> None:
        k = (store, sku)
        if n <= self.model.on_hand[k] - self.model.reserved[k]:
            self.eng.sell(store, sku, n)
            self.model.on_hand[k] -= n
        else:
            with pytest.raises(errors.InsufficientStock):
                self.eng.sell(store, sku, n)

    @rule(dt=st.sampled_from([PAY / 2, PAY, PAY + 1]))
    def time_passes(self, dt) -> None:
        self.now[0] += dt
        now = self.now[0]
        due = sorted(cid for cid in self.model.held() if self.model.claims[cid]["expires"] <= now)
        expired = self.eng.expire_due()
        assert sorted(expired) == due
        for cid in due:
            self.model.end_claim(cid, EXPIRED)
        if self.model.active and now >= self.end_at:
            self.model.end()
        for cid in due:
            assert self.eng.get_claim(cid).state is EXPIRED

    @precondition(lambda self: self.eng is not None and len(self.model.claims) >= 4)   # not before a few claims
    @rule()
    def end_sale(self) -> None:
        if self.model.active:
            assert self.eng.end_sale("m").state is SaleState.ENDED
            self.model.end()
        else:
            with pytest.raises(errors.FailedPrecondition):
                self.eng.end_sale("m")

    @invariant()
    def agrees_with_the_model(self) -> None:
        if self.eng is None:
            return
        m = self.model
        c = self.eng.sale_counters("m")
        assert (c.state is SaleState.ACTIVE) == m.active
        assert (c.claimed, c.confirmed, c.released, c.claims) == (m.claimed, m.confirmed, m.released,
                                                                 len(m.claims))
        assert [s.claimed for s in c.stores] == [m.store_claimed[s] for s in MSTORES]
        assert c.remaining == m.remaining()
        assert c.claimed <= m.quota
        per_customer: dict[str, int] = defaultdict(int)
        for claim in self.eng.claims("m"):
            assert claim.state is m.claims[claim.id]["state"]
            if claim.state in (HELD, CONFIRMED):
                per_customer[claim.customer] += claim.qty
        assert all(v <= m.limit for v in per_customer.values())
        assert dict(per_customer) == {k: v for k, v in m.cust.items() if v}
        for s in MSTORES:
            for j in MSKUS:
                level = self.eng.stock(s, j)
                assert (level.on_hand, level.reserved) == (m.on_hand[s, j], m.reserved[s, j]), (s, j)
        self.eng.check_invariants()


class ReferenceFlashMachine(FlashMachine):
    NATIVE = False


_MACHINE_SETTINGS = settings(max_examples=150, stateful_step_count=40, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])
TestFlashMachineNative = FlashMachine.TestCase
TestFlashMachineNative.settings = _MACHINE_SETTINGS
TestFlashMachineReference = ReferenceFlashMachine.TestCase
TestFlashMachineReference.settings = _MACHINE_SETTINGS


# == 7. durability =========================================================================
def observed(eng, claims) -> tuple:
    return eng.sale_counters("tee"), eng.stock_table().to_pydict(), [eng.get_claim(c.id) for c in claims]


def test_sales_and_claims_survive_replay_and_snapshots(tmp_path, clock, backend):
    net = make_city_net()

    def reopen():
        return pyomni.Engine.open(tmp_path, net, clock=clock, fsync="always", native=backend)

    eng = reopen()
    stock_up(eng, {PEOPLE: 5, PUDONG: 5, HANGZHOU: 5})
    spec = sale_of(clock, customer_limit=2, pay_window=600.0, stores=((PEOPLE, 3), (PUDONG, 3), (HANGZHOU, 3)))
    eng.create_sale(spec)
    c1 = eng.claim("tee", "m-1", A, store=PEOPLE, request_id="r-1")
    c2 = eng.claim("tee", "m-2", A, 2, store=PUDONG, request_id="r-2")
    c3 = eng.claim("tee", "m-3", A, near=(30.3, 120.2))
    batch = eng.claim_many("tee", ["m-4", "m-5"], A, [1, 2], stores=[PEOPLE, HANGZHOU], request_ids=["r-4", None])
    c4, c5 = list(batch)
    eng.confirm_claim(c1.id)
    eng.release_claim(c2.id)
    claims = [c1, c2, c3, c4, c5]
    before = observed(eng, claims)
    eng.close()

    eng = reopen()                                           # replay of the journal alone
    assert observed(eng, claims) == before
    eng.check_invariants()
    assert eng.sales() == [spec]
    for rid, first, args in (("r-1", c1, ("m-1", A, 1, PEOPLE)), ("r-2", c2, ("m-2", A, 2, PUDONG)),
                             ("r-4", c4, ("m-4", A, 1, PEOPLE))):
        assert eng.claim("tee", *args[:3], store=args[3], request_id=rid) == first
    with pytest.raises(errors.RequestIdReused):
        eng.claim("tee", "m-9", A, store=PEOPLE, request_id="r-1")
    assert observed(eng, claims) == before                  # retries changed nothing
    eng.save()
    clock.advance(60)
    c6 = eng.claim("tee", "m-6", A, store=PUDONG, request_id="r-6")   # after the snapshot: the tail
    assert number(c6) > max(number(c) for c in claims)
    claims.append(c6)
    before = observed(eng, claims)
    eng.close()

    eng = reopen()                                           # snapshot + tail
    assert observed(eng, claims) == before
    eng.check_invariants()
    assert eng.claim("tee", "m-6", A, store=PUDONG, request_id="r-6") == c6
    assert eng.claim("tee", "m-2", A, 2, store=PUDONG, request_id="r-2") == c2
    eng.save()
    eng.close()

    eng = reopen()                                           # snapshot alone
    assert observed(eng, claims) == before
    held = {c.id for c in eng.claims("tee", state=HELD)}
    assert held == {c3.id, c4.id, c5.id, c6.id}
    reserved = {loc: eng.stock(loc, A).reserved for loc in (PEOPLE, PUDONG, HANGZHOU)}
    clock.advance(545)                                      # c3..c5 are due (600 s after their creation)
    assert sorted(eng.expire_due()) == sorted([c3.id, c4.id, c5.id])
    for c in (c3, c4, c5):
        assert eng.get_claim(c.id).state is EXPIRED
    counters = eng.sale_counters("tee")
    assert counters.claimed == 1 + 1 and counters.released == 2 + 1 + 1 + 2
    # with the earmark running, expired units go back to the stores' pools: still reserved
    assert {loc: eng.stock(loc, A).reserved for loc in (PEOPLE, PUDONG, HANGZHOU)} == reserved
    c7 = eng.claim("tee", "m-7", A, store=PEOPLE)
    assert number(c7) > max(number(c) for c in claims)
    eng.end_sale("tee")
    after_end = observed(eng, claims + [c7])
    eng.close()

    eng = reopen()
    assert observed(eng, claims + [c7]) == after_end
    assert sum(eng.stock_table().to_pydict()["reserved"]) == 2     # c6 and c7 only: the earmark is gone
    clock.advance(1000)
    assert sorted(eng.expire_due()) == sorted([c6.id, c7.id])
    assert sum(eng.stock_table().to_pydict()["reserved"]) == 0
    assert eng.stock(PEOPLE, A).on_hand == 4 and eng.stock(PUDONG, A).on_hand == 5
    eng.check_invariants()
    eng.close()


def test_a_scheduled_sale_starts_after_a_reopen(tmp_path, clock, backend):
    net = make_city_net()
    with pyomni.Engine.open(tmp_path, net, clock=clock, fsync="always", native=backend) as eng:
        stock_up(eng, {PEOPLE: 5, PUDONG: 5})
        eng.create_sale(sale_of(clock, start=100.0))
        eng.save()
    clock.advance(100)
    with pyomni.Engine.open(tmp_path, clock=clock, native=backend) as eng:
        assert eng.sale_counters("tee").state is SaleState.SCHEDULED
        c = eng.claim("tee", "m-1", A, store=PEOPLE)
        assert c.store == PEOPLE and eng.available(A) == 4
    with pyomni.Engine.open(tmp_path, clock=clock, native=backend) as eng:
        assert eng.sale_counters("tee").state is SaleState.ACTIVE and eng.available(A) == 4
        assert eng.get_claim(c.id) == c
        eng.check_invariants()


def test_claim_batches_write_one_record(tmp_path, clock):
    with pyomni.Engine.open(tmp_path, make_city_net(), clock=clock, fsync="always") as eng:
        stock_up(eng, {PEOPLE: 5, PUDONG: 5})
        eng.create_sale(sale_of(clock, customer_limit=1))
        lsn = eng.lsn
        r = eng.claim_many("tee", [f"m-{i}" for i in range(8)], A, stores=[PEOPLE, PUDONG] * 4)
        assert r.accepted == 6 and eng.lsn == lsn + 1
        eng.claim_many("tee", ["m-0"], A, stores=[PEOPLE])   # all refused: nothing to record
        assert eng.lsn == lsn + 1
        assert np.array_equal(r.status == CLAIM_OK, np.array([True] * 6 + [False] * 2))
