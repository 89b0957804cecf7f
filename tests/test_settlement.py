"""Revenue attribution and settlement (:mod:`pyomni.settlement`): the rounding rule, the rule's checks, hand-computed
settlements, property tests against a plain-Python reference, daily totals, and the Parquet writer."""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections import defaultdict
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyomni import errors
from pyomni import settlement as stl
from pyomni.settlement import (
    DAILY_SCHEMA,
    ENTRIES_SCHEMA,
    FACTS_SCHEMA,
    FULFILLER_TAKES_ALL,
    REGIONAL,
    SPLIT_361,
    AttributionRule,
    daily,
    settle,
    split_cents,
    split_cents_array,
    write_settlement,
)

DAY0 = datetime.date(2024, 11, 11)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def refused(cls, field, call, *args, **kwargs):
    with pytest.raises(errors.PyomniError) as info:
        call(*args, **kwargs)
    assert type(info.value) is cls, info.value
    assert info.value.field == field, (info.value.field, str(info.value))
    assert len(str(info.value)) <= 400
    return info.value


# -- facts tables by hand ---------------------------------------------------------------------------
def sale(fact, **kw):
    row = dict(fact=fact, kind="sale", day=DAY0, at=float(fact), order_id=f"o-{fact}", shipment_id=f"o-{fact}/1",
               line=0, sku="SKU-1", qty=1, gross_cents=1000, coupon_cents=0, fee_cents=0, channel="tmall",
               selling_store="", fulfilling_store="SH-0002", home_store="SH-0001", franchise=False,
               rule=FULFILLER_TAKES_ALL.key, sale_fact=-1, receiving_store="")
    row.update(kw)
    return row


def ret(fact, of, qty=1, **kw):
    """A return of ``qty`` units of the sale row ``of``."""
    row = dict(of, fact=fact, kind="return", qty=qty, gross_cents=0, coupon_cents=0, fee_cents=0,
               sale_fact=of["fact"], receiving_store=of["home_store"], at=float(fact))
    row.update(kw)
    return row


def facts_table(rows):
    return pa.Table.from_pylist(rows, schema=FACTS_SCHEMA)


def rules_of(*rules):
    return {r.key: r for r in rules}


def entry_list(entries, *columns):
    columns = columns or ("party", "entry", "amount_cents")
    return list(zip(*(entries.column(c).to_pylist() for c in columns)))


# -- split_cents ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("total", "weights", "parts"), [
    (999, [3000, 6000, 1000, 0], [300, 599, 100, 0]),   # remainders .7 .4 .9: home, then selling get a cent
    (10, [1, 1, 1], [4, 3, 3]),                          # ties: the earlier weight
    (2, [1, 1, 1], [1, 1, 0]),
    (1, [0, 1, 1], [0, 1, 0]),                            # a zero weight gets nothing, even in a tie
    (7, [0, 0, 5], [0, 0, 7]),
    (0, [1, 2, 3], [0, 0, 0]),
    (-10, [1, 1, 1], [-4, -3, -3]),                       # mirrored: the earlier weight wins ties in magnitude
    (-999, [3000, 6000, 1000, 0], [-300, -599, -100, 0]),
    (100, [1, 2], [33, 67]),
    (-(2**63 - 1), [1], [-(2**63 - 1)]),
])
def test_split_cents_examples(total, weights, parts):
    assert split_cents(total, weights) == parts
    assert split_cents_array(np.array([total]), np.array(weights)).tolist() == [parts]


@given(total=st.integers(-(10**12), 10**12), weights=st.lists(st.integers(0, 10_000), min_size=1, max_size=12))
def test_split_cents_is_exact_largest_remainder(total, weights):
    if sum(weights) == 0:
        weights = [*weights[:-1], 1]
    parts = split_cents(total, weights)
    whole = sum(weights)
    assert sum(parts) == total
    assert split_cents(-total, weights) == [-p for p in parts]
    quota = [Fraction(abs(total) * w, whole) for w in weights]
    got = [abs(p) for p in parts]
    for q, p, w in zip(quota, got, weights):
        assert q - 1 < p < q + 1 and p >= q.__floor__()   # floor or floor + 1
        assert w > 0 or p == 0
    # the cents left over went to the largest remainders, earlier first
    bumped = [i for i, (q, p) in enumerate(zip(quota, got)) if p > q.__floor__()]
    order = sorted(range(len(weights)), key=lambda i: (-(quota[i] - quota[i].__floor__()), i))
    assert bumped == sorted(order[:len(bumped)])


@given(data=st.data(), n=st.integers(0, 30), k=st.integers(1, 12), per_row=st.booleans())
def test_split_cents_array_equals_the_scalar_split(data, n, k, per_row):
    totals = np.array(data.draw(st.lists(st.integers(-(10**12), 10**12), min_size=n, max_size=n)), dtype=np.int64)
    row = st.lists(st.integers(0, 10_000), min_size=k, max_size=k).map(lambda w: w if sum(w) else [1] * k)
    if per_row:
        weights = np.array(data.draw(st.lists(row, min_size=n, max_size=n)) or np.empty((0, k)), dtype=np.int64)
    else:
        weights = np.array(data.draw(row), dtype=np.int64)
    got = split_cents_array(totals, weights)
    assert got.shape == (n, k) and got.dtype == np.int64
    for i in range(n):
        assert got[i].tolist() == split_cents(int(totals[i]), (weights[i] if per_row else weights).tolist())


def test_split_cents_takes_any_weights_in_python_integers():
    # an order's coupon spread over lines by gross: weights far beyond basis points, products beyond int64
    assert split_cents(10**6, [3 * 10**9, 10**10]) == [230_769, 769_231]
    assert split_cents(10**12, [10**10, 10**10, 10**10]) == [333_333_333_334, 333_333_333_333, 333_333_333_333]
    refused(errors.InvalidArgument, "totals", split_cents_array, [10**12], [10**10, 10**10, 10**10])


def test_split_cents_array_accepts_lists_and_unsigned():
    assert split_cents_array([5, -5], [1, 1]).tolist() == [[3, 2], [-3, -2]]
    assert split_cents_array(np.array([5], np.uint32), np.array([[1, 1]], np.uint8)).tolist() == [[3, 2]]
    assert split_cents_array([], [1, 2]).shape == (0, 2)


@pytest.mark.parametrize(("total", "weights", "field"), [
    (1.5, [1], "total"), (True, [1], "total"), ("3", [1], "total"), (2**63, [1], "total"),
    (1, [], "weights"), (1, [0, 0], "weights"), (1, "12", "weights"), (1, None, "weights"),
    (1, [1, -1], "weights[1]"), (1, [1.0], "weights[0]"), (1, [2**63], "weights[0]"),
])
def test_split_cents_refuses(total, weights, field):
    refused(errors.InvalidArgument, field, split_cents, total, weights)


@pytest.mark.parametrize(("totals", "weights", "field"), [
    (np.array([1.0]), [1], "totals"), (np.array([[1]]), [1], "totals"), (["a"], [1], "totals"),
    (np.array([2**62]), [2, 2], "totals"), (np.array([-(2**62)]), [2, 2], "totals"),
    (np.array([2**63], np.uint64), [1], "totals"),
    ([1], np.array([1.0]), "weights"), ([1], np.array([[1, 2], [3, 4]]), "weights"), ([1], [[[1]]], "weights"),
    ([1], [-1, 2], "weights"), ([1], [0, 0], "weights"), ([1, 2], [[1], [0]], "weights"), ([1], [], "weights"),
    ([1], [2**62, 2**62], "weights"), ([1], np.array([2**63], np.uint64), "weights"),
    (np.array([10**15]), [10**4, 10**4], "totals"),     # |total| * sum(weights) does not fit in int64
])
def test_split_cents_array_refuses(totals, weights, field):
    refused(errors.InvalidArgument, field, split_cents_array, totals, weights)


# -- AttributionRule ----------------------------------------------------------------------------------
def test_rule_defaults_key_and_presets():
    rule = AttributionRule("fulfiller")
    assert rule == FULFILLER_TAKES_ALL and rule.key == "fulfiller@1"
    assert rule.revenue_bp == (0, 10_000, 0, 0) and rule.coupon_bp == (10_000, 0, 0, 0)
    assert rule.franchise_coupon_bp == rule.coupon_bp and rule.fee_cents == 0
    assert AttributionRule("x", version=7).key == "x@7"
    assert SPLIT_361.key == "split-361@1" and SPLIT_361.revenue_bp == (3000, 6000, 1000, 0)
    assert REGIONAL.key == "regional@1" and REGIONAL.revenue_bp == (0, 0, 10_000, 0) and REGIONAL.home == "region"


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"name": ""}, "name"), ({"name": "a@b"}, "name"), ({"name": 3}, "name"), ({"name": "x" * 129}, "name"),
    ({"name": "a\x00"}, "name"),
    ({"version": 0}, "version"), ({"version": True}, "version"), ({"version": 1.0}, "version"),
    ({"selling_bp": -1, "fulfilling_bp": 10_001}, "selling_bp"), ({"fulfilling_bp": 10_001}, "fulfilling_bp"),
    ({"home_bp": "10"}, "home_bp"), ({"hq_bp": 1.5}, "hq_bp"),
    ({"selling_bp": 3000}, "hq_bp"),                       # sums to 13000: named by the balancing HQ share
    ({"fulfilling_bp": 5000}, "hq_bp"),
    ({"coupon_selling_bp": 100}, "coupon_hq_bp"), ({"coupon_hq_bp": 0}, "coupon_hq_bp"),
    ({"coupon_home_bp": -1}, "coupon_home_bp"), ({"coupon_fulfilling_bp": None}, "coupon_fulfilling_bp"),
    ({"franchise_coupon_fulfilling_bp": 5000}, "franchise_coupon_hq_bp"),
    ({"franchise_coupon_selling_bp": 10_001}, "franchise_coupon_selling_bp"),
    ({"franchise_coupon_home_bp": True}, "franchise_coupon_home_bp"),
    ({"fee_cents": -1}, "fee_cents"), ({"fee_cents": 10**9 + 1}, "fee_cents"), ({"fee_cents": 1.0}, "fee_cents"),
    ({"home": "closest"}, "home"), ({"home": None}, "home"),
    ({"regional_stores": "SH"}, "regional_stores"), ({"regional_stores": 31}, "regional_stores"),
    ({"regional_stores": {-1: "SH-0001"}}, "regional_stores"), ({"regional_stores": {"31": "SH"}}, "regional_stores"),
    ({"regional_stores": [(31,)]}, "regional_stores"), ({"regional_stores": [(31, "SH", 1)]}, "regional_stores"),
    ({"regional_stores": {31: ""}}, "regional_stores[31]"), ({"regional_stores": {31: 5}}, "regional_stores[31]"),
])
def test_rule_refuses_each_bad_field(kwargs, field):
    kwargs = {"name": "r", **kwargs}
    refused(errors.InvalidArgument, field, AttributionRule, **kwargs)


def test_rule_refuses_a_province_twice():
    refused(errors.DuplicateId, "regional_stores", AttributionRule, "r",
            regional_stores=((31, "SH-0001"), (31, "SH-0002")))


def test_rule_regional_stores_normalised_hashable_by_value():
    a = AttributionRule("r", home="region", regional_stores={44: "GZ-0001", 31: "SH-0001", 11: "BJ-0001"})
    b = AttributionRule("r", home="region", regional_stores=[(11, "BJ-0001"), (31, "SH-0001"), (44, "GZ-0001")])
    c = AttributionRule("r", home="region", regional_stores=((np.int64(31), "SH-0001"), (11, "BJ-0001"),
                                                            (44, "GZ-0001")))
    assert a.regional_stores == ((11, "BJ-0001"), (31, "SH-0001"), (44, "GZ-0001"))
    assert a == b == c and hash(a) == hash(b) == hash(c) and len({a, b, c}) == 1
    assert type(c.regional_stores[1][0]) is int
    assert a.regional_store(31) == "SH-0001" and a.regional_store(32) is None
    assert a != dataclasses.replace(a, regional_stores={31: "SH-0009"})
    assert dataclasses.replace(a, regional_stores={31: "SH-0009"}).regional_stores == ((31, "SH-0009"),)


def test_rule_is_frozen_compares_by_value_and_rebuilds_from_as_dict():
    rule = AttributionRule("s", version=2, selling_bp=2500, fulfilling_bp=2500, home_bp=2500, hq_bp=2500,
                           fee_cents=700, coupon_hq_bp=4000, coupon_selling_bp=3000, coupon_fulfilling_bp=2000,
                           coupon_home_bp=1000, franchise_coupon_hq_bp=5000, franchise_coupon_fulfilling_bp=5000)
    assert rule.franchise_coupon_bp == (5000, 0, 5000, 0)
    assert rule.franchise_coupon_selling_bp == 0 and rule.franchise_coupon_home_bp == 0   # left None -> 0
    assert AttributionRule(**rule.as_dict()) == rule and hash(AttributionRule(**rule.as_dict())) == hash(rule)
    assert rule != dataclasses.replace(rule, fee_cents=701)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.fee_cents = 1  # type: ignore[misc]
    assert not hasattr(rule, "__dict__")                     # slots
    assert AttributionRule("n", version=np.int64(3)).version == 3


# -- settle by hand ----------------------------------------------------------------------------------
def test_split_361_of_999_cents_sold_online():
    facts = facts_table([sale(1, gross_cents=999, rule=SPLIT_361.key)])
    entries = settle(facts, rules_of(SPLIT_361))
    assert entries.schema == ENTRIES_SCHEMA
    assert entry_list(entries) == [("channel:tmall", "revenue", 300), ("SH-0002", "revenue", 599),
                                   ("SH-0001", "revenue", 100)]
    assert set(entries.column("is_return").to_pylist()) == {False}
    assert entry_list(entries, "day", "order_id", "shipment_id", "line", "fact")[0] == (DAY0, "o-1", "o-1/1", 0, 1)


def test_a_store_sale_credits_the_selling_store_and_keeps_roles_apart():
    facts = facts_table([sale(1, gross_cents=1000, selling_store="SH-0001", rule=SPLIT_361.key)])
    assert entry_list(settle(facts, rules_of(SPLIT_361))) == [
        ("SH-0001", "revenue", 300), ("SH-0002", "revenue", 600), ("SH-0001", "revenue", 100)]


def test_fee_is_paid_by_hq_to_the_fulfilling_store():
    facts = facts_table([sale(1, gross_cents=5000, fee_cents=800)])
    entries = settle(facts, rules_of(FULFILLER_TAKES_ALL))
    assert entry_list(entries) == [("SH-0002", "revenue", 5000), ("SH-0002", "fee", 800), ("HQ", "fee", -800)]
    assert pc.sum(entries.column("amount_cents")).as_py() == 5000


def test_coupon_shares_switch_for_a_franchise_fulfiller():
    rule = AttributionRule("co", coupon_hq_bp=7000, coupon_selling_bp=3000,
                           franchise_coupon_hq_bp=5000, franchise_coupon_fulfilling_bp=5000)
    direct = sale(1, gross_cents=2000, coupon_cents=301, rule=rule.key, selling_store="SH-0003")
    franchised = sale(2, gross_cents=2000, coupon_cents=301, rule=rule.key, franchise=True)
    entries = settle(facts_table([direct, franchised]), rules_of(rule))
    coupons = entry_list(entries.filter(pc.equal(entries.column("entry"), "coupon")), "fact", "party", "amount_cents")
    # direct: 301 * 70 % = 210.7, * 30 % = 90.3 -> -211 HQ, -90 seller; franchise: 150.5 each, HQ first -> -151, -150
    assert coupons == [(1, "HQ", -211), (1, "SH-0003", -90), (2, "HQ", -151), (2, "SH-0002", -150)]
    for fact in (1, 2):
        mine = entries.filter(pc.equal(entries.column("fact"), fact))
        assert pc.sum(mine.column("amount_cents")).as_py() == 2000 - 301


def test_a_franchise_fulfiller_without_franchise_shares_uses_the_direct_ones():
    facts = facts_table([sale(1, coupon_cents=100, franchise=True)])
    assert entry_list(settle(facts, rules_of(FULFILLER_TAKES_ALL))) == [
        ("SH-0002", "revenue", 1000), ("HQ", "coupon", -100)]


def test_everything_to_the_regional_store():
    rule = AttributionRule("regional", fulfilling_bp=0, home_bp=10_000, home="region", regional_stores={31: "SH-0009"},
                           fee_cents=500, coupon_hq_bp=0, coupon_home_bp=10_000)
    facts = facts_table([sale(1, gross_cents=12_345, coupon_cents=345, fee_cents=500, home_store="SH-0009",
                              rule=rule.key)])
    assert entry_list(settle(facts, rules_of(rule))) == [
        ("SH-0009", "revenue", 12_345), ("SH-0002", "fee", 500), ("HQ", "fee", -500), ("SH-0009", "coupon", -345)]
    facts = facts_table([sale(1, gross_cents=999, rule=REGIONAL.key, home_store="SH-0009")])
    assert entry_list(settle(facts, rules_of(REGIONAL))) == [("SH-0009", "revenue", 999)]


def test_returns_reverse_in_proportion_and_exactly():
    rule = AttributionRule("co", coupon_hq_bp=5000, coupon_fulfilling_bp=5000)
    s = sale(1, qty=3, gross_cents=1000, coupon_cents=301, fee_cents=100, rule=rule.key)
    day1 = DAY0 + datetime.timedelta(days=1)
    rows = [s, ret(5, s, day=day1), ret(7, s, day=day1), ret(9, s, day=day1 + datetime.timedelta(days=1))]
    entries = settle(facts_table(rows), rules_of(rule))
    by_fact = defaultdict(list)
    for fact, party, entry, amount, is_return in entry_list(entries, "fact", "party", "entry", "amount_cents",
                                                             "is_return"):
        by_fact[fact].append((party, entry, amount))
        assert is_return == (fact != 1)
    assert by_fact[1] == [("SH-0002", "revenue", 1000), ("SH-0002", "fee", 100), ("HQ", "fee", -100),
                          ("HQ", "coupon", -151), ("SH-0002", "coupon", -150)]
    # 1000: -333, -333, -334; 100: -33, -33, -34; -100: floor(-33.3) = -34 -> +34, +33, +33; -151: +51, +50, +50
    assert by_fact[5] == [("SH-0002", "revenue", -333), ("SH-0002", "fee", -33), ("HQ", "fee", 34),
                          ("HQ", "coupon", 51), ("SH-0002", "coupon", 50)]
    assert by_fact[7] == [("SH-0002", "revenue", -333), ("SH-0002", "fee", -33), ("HQ", "fee", 33),
                          ("HQ", "coupon", 50), ("SH-0002", "coupon", 50)]
    assert by_fact[9] == [("SH-0002", "revenue", -334), ("SH-0002", "fee", -34), ("HQ", "fee", 33),
                          ("HQ", "coupon", 50), ("SH-0002", "coupon", 50)]
    assert pc.sum(entries.column("amount_cents")).as_py() == 0
    booked = dict(zip(entries.column("fact").to_pylist(), entries.column("day").to_pylist()))
    assert booked == {1: DAY0, 5: day1, 7: day1, 9: day1 + datetime.timedelta(days=1)}
    assert set(entries.column("order_id").to_pylist()) == {"o-1"}


def test_a_two_unit_return_then_a_one_unit_return():
    s = sale(1, qty=3, gross_cents=100)
    entries = settle(facts_table([ret(3, s, qty=1), s, ret(2, s, qty=2)]), rules_of(FULFILLER_TAKES_ALL))
    assert entry_list(entries, "fact", "amount_cents") == [(1, 100), (2, -66), (3, -34)]  # by fact, not by row


def test_entries_come_in_fact_order_and_ignore_column_order_and_extra_columns():
    rows = [sale(30, gross_cents=3), sale(10, gross_cents=1), sale(20, gross_cents=2)]
    facts = facts_table(rows)
    facts = facts.select(list(reversed(facts.column_names))).append_column("note", pa.array(["a", "b", "c"]))
    entries = settle(facts, rules_of(FULFILLER_TAKES_ALL))
    assert entry_list(entries, "fact", "amount_cents") == [(10, 1), (20, 2), (30, 3)]


def test_zero_amounts_are_left_out_and_an_empty_table_settles_to_nothing():
    facts = facts_table([sale(1, gross_cents=0), sale(2, gross_cents=1, rule=SPLIT_361.key)])
    assert entry_list(settle(facts, rules_of(FULFILLER_TAKES_ALL, SPLIT_361))) == [("SH-0002", "revenue", 1)]
    empty = settle(FACTS_SCHEMA.empty_table(), {})
    assert empty.num_rows == 0 and empty.schema == ENTRIES_SCHEMA
    assert daily(empty).num_rows == 0 and daily(empty).schema == DAILY_SCHEMA


def test_chunked_facts_settle_like_one_chunk():
    rows = [sale(i, gross_cents=100 + i, rule=SPLIT_361.key, qty=2) for i in range(10)]
    rows += [ret(10 + i, rows[i]) for i in range(0, 10, 3)]
    whole = facts_table(rows)
    chunked = pa.concat_tables([whole.slice(0, 4), whole.slice(4, 5), whole.slice(9)])
    assert settle(chunked, rules_of(SPLIT_361)).equals(settle(whole, rules_of(SPLIT_361)))


# -- settle refuses -----------------------------------------------------------------------------------------
S = sale(1, qty=2)


@pytest.mark.parametrize(("rows", "field", "cls"), [
    ([S, ret(2, S, qty=2), ret(3, S, qty=1)], "qty", errors.InvalidArgument),     # 3 units of a 2-unit sale back
    ([S, ret(2, S, qty=3)], "qty", errors.InvalidArgument),
    ([S, ret(2, S, sale_fact=99)], "sale_fact", errors.InvalidArgument),           # no such fact
    ([S, ret(2, S), ret(3, S, sale_fact=2)], "sale_fact", errors.InvalidArgument),  # names a return
    ([ret(0, S), S], "sale_fact", errors.InvalidArgument),                         # before its sale
    ([ret(2, S)], "sale_fact", errors.InvalidArgument),                            # no sales at all
    ([S, sale(1)], "fact", errors.DuplicateId),
    ([S, dict(S, fact=2, kind="refund")], "kind", errors.InvalidArgument),
    ([dict(S, qty=0)], "qty", errors.InvalidArgument), ([dict(S, qty=10**9 + 1)], "qty", errors.InvalidArgument),
    ([dict(S, gross_cents=-1)], "gross_cents", errors.InvalidArgument),
    ([dict(S, gross_cents=stl.MAX_GROSS_CENTS + 1)], "gross_cents", errors.InvalidArgument),
    ([dict(S, coupon_cents=-1)], "coupon_cents", errors.InvalidArgument),
    ([dict(S, coupon_cents=2**62)], "coupon_cents", errors.InvalidArgument),
    ([dict(S, fee_cents=-5)], "fee_cents", errors.InvalidArgument),
    ([S, ret(2, S, gross_cents=10)], "gross_cents", errors.InvalidArgument),
    ([S, ret(2, S, coupon_cents=10)], "coupon_cents", errors.InvalidArgument),
    ([S, ret(2, S, fee_cents=10)], "fee_cents", errors.InvalidArgument),
    ([dict(S, rule="nope@1")], "rule", errors.InvalidArgument),
    ([S, ret(2, S, rule="nope@1")], "rule", errors.InvalidArgument),
    ([dict(S, fulfilling_store="")], "fulfilling_store", errors.InvalidArgument),
    ([dict(S, rule=SPLIT_361.key, home_store="")], "home_store", errors.InvalidArgument),
    ([dict(S, rule=SPLIT_361.key, channel="")], "channel", errors.InvalidArgument),
])
def test_settle_refuses_bad_facts(rows, field, cls):
    err = refused(cls, field, settle, facts_table(rows), rules_of(FULFILLER_TAKES_ALL, SPLIT_361))
    assert "fact" in str(err)


def test_settle_refuses_with_the_offending_fact_named():
    rows = [sale(i, qty=2) for i in range(5)] + [ret(10, sale(3, qty=2), qty=2), ret(11, sale(3, qty=2), qty=1)]
    err = refused(errors.InvalidArgument, "qty", settle, facts_table(rows), rules_of(FULFILLER_TAKES_ALL))
    assert "fact 11" in str(err) and "sale fact 3" in str(err)
    err = refused(errors.InvalidArgument, "rule", settle, facts_table([sale(1, rule="gone@3")]), {})
    assert "gone@3" in str(err)


def test_an_empty_home_store_is_fine_when_the_home_role_is_owed_nothing():
    entries = settle(facts_table([sale(1, home_store="", channel="")]), rules_of(FULFILLER_TAKES_ALL))
    assert entry_list(entries) == [("SH-0002", "revenue", 1000)]


@pytest.mark.parametrize(("change", "field"), [
    (lambda t: t.drop_columns(["qty"]), "qty"),
    (lambda t: t.set_column(t.schema.get_field_index("qty"), "qty", t.column("qty").cast(pa.int32())), "qty"),
    (lambda t: t.set_column(t.schema.get_field_index("day"), "day", pa.array([0], pa.int32())), "day"),
    (lambda t: t.set_column(t.schema.get_field_index("channel"), "channel", pa.array([None], pa.string())),
     "channel"),
])
def test_settle_refuses_bad_columns(change, field):
    refused(errors.InvalidArgument, field, settle, change(facts_table([S])), rules_of(FULFILLER_TAKES_ALL))


def test_settle_refuses_bad_arguments():
    refused(errors.InvalidArgument, "facts", settle, [S], rules_of(FULFILLER_TAKES_ALL))
    refused(errors.InvalidArgument, "rules", settle, facts_table([S]), [FULFILLER_TAKES_ALL])
    refused(errors.InvalidArgument, "rules", settle, facts_table([S]), {"other@1": FULFILLER_TAKES_ALL})
    refused(errors.InvalidArgument, "rules['fulfiller@1']", settle, facts_table([S]), {"fulfiller@1": "rule"})


# -- properties against a plain-Python reference -------------------------------------------------------
def reference_settle(rows, rules):
    """The settlement, one fact at a time in fact order, in Python ints (the spec, written out)."""
    out, sales, returned = [], {}, defaultdict(int)
    for row in sorted(rows, key=lambda r: r["fact"]):
        if row["kind"] == "sale":
            rule = rules[row["rule"]]
            seller = row["selling_store"] or "channel:" + row["channel"]
            fulfil, home = row["fulfilling_store"], row["home_store"]
            rev = split_cents(row["gross_cents"], rule.revenue_bp)
            shares = rule.franchise_coupon_bp if row["franchise"] else rule.coupon_bp
            cou = split_cents(-row["coupon_cents"], shares)
            slots = [(seller, "revenue", rev[0]), (fulfil, "revenue", rev[1]), (home, "revenue", rev[2]),
                     ("HQ", "revenue", rev[3]), (fulfil, "fee", row["fee_cents"]), ("HQ", "fee", -row["fee_cents"]),
                     ("HQ", "coupon", cou[0]), (seller, "coupon", cou[1]), (fulfil, "coupon", cou[2]),
                     (home, "coupon", cou[3])]
            sales[row["fact"]] = (row, slots)
            booked, is_return = slots, False
        else:
            origin, slots = sales[row["sale_fact"]]
            n, m, k = origin["qty"], returned[row["sale_fact"]], row["qty"]
            returned[row["sale_fact"]] += k
            booked = [(party, entry, -(a * (m + k) // n - a * m // n)) for party, entry, a in slots]
            is_return = True
        for party, entry, amount in booked:
            if amount:
                src = row if not is_return else sales[row["sale_fact"]][0]
                out.append((row["day"], party, src["order_id"], src["shipment_id"], src["line"], row["fact"], entry,
                            amount, is_return))
    return out


names = st.sampled_from(["SH-0001", "SH-0002", "BJ-0001", "GZ-0001"])
bp4 = st.lists(st.integers(0, 10_000), min_size=3, max_size=3).map(
    lambda cuts: tuple(b - a for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), 10_000])))


@st.composite
def attribution_rules(draw, name):
    revenue, coupon = draw(bp4), draw(bp4)
    franchise = draw(st.none() | bp4)
    kw = {} if franchise is None else dict(zip(("franchise_coupon_hq_bp", "franchise_coupon_selling_bp",
                                                "franchise_coupon_fulfilling_bp", "franchise_coupon_home_bp"),
                                               franchise))
    return AttributionRule(name, version=draw(st.integers(1, 3)), **dict(zip(
        ("selling_bp", "fulfilling_bp", "home_bp", "hq_bp"), revenue)), **dict(zip(
        ("coupon_hq_bp", "coupon_selling_bp", "coupon_fulfilling_bp", "coupon_home_bp"), coupon)), **kw)


@st.composite
def settlement_cases(draw, full_returns=False):
    """(rows, rules): random sales, each returned in random partial steps (all units if ``full_returns``), in a
    random interleaving that keeps each return after its sale and earlier steps first, with sparse fact ids."""
    rules = rules_of(*[draw(attribution_rules(f"r{i}")) for i in range(draw(st.integers(1, 3)))])
    n_sales = draw(st.integers(1, 12))
    big = st.integers(0, 10**7) | st.sampled_from([0, 1, 2, 3, 9_999, 10**12, stl.MAX_GROSS_CENTS])
    events = []          # (sale index, return step qty or None)
    sales = []
    for i in range(n_sales):
        qty = draw(st.integers(1, 7))
        gross = draw(big)
        sales.append(dict(kind="sale", day=DAY0 + datetime.timedelta(days=draw(st.integers(0, 3))), at=0.0,
                          order_id=f"o-{i // 2}", shipment_id=f"o-{i // 2}/{i % 2}", line=i % 3, sku=f"SKU-{i}",
                          qty=qty, gross_cents=gross, coupon_cents=draw(st.integers(0, gross) | big),
                          fee_cents=draw(st.integers(0, 5000)), channel=draw(st.sampled_from(["tmall", "jd"])),
                          selling_store=draw(st.just("") | names), fulfilling_store=draw(names),
                          home_store=draw(names), franchise=draw(st.booleans()),
                          rule=draw(st.sampled_from(sorted(rules))), sale_fact=-1, receiving_store=""))
        steps, left = [], qty
        while left and (full_returns or draw(st.booleans())):
            step = draw(st.integers(1, left))
            steps.append(step)
            left -= step
        events.append([(i, None)] + [(i, k) for k in steps])
    # interleave: repeatedly take the next event of a random sale
    order = []
    queues = [list(e) for e in events]
    while any(queues):
        live = [q for q in queues if q]
        order.append(live[draw(st.integers(0, len(live) - 1))].pop(0))
    gaps = draw(st.lists(st.integers(1, 5), min_size=len(order), max_size=len(order)))
    rows, sale_id = [], {}
    fact = draw(st.integers(0, 10**12))
    for (i, k), gap in zip(order, gaps):
        fact += gap
        if k is None:
            sale_id[i] = fact
            rows.append(dict(sales[i], fact=fact))
        else:
            rows.append(dict(sales[i], fact=fact, kind="return", qty=k, gross_cents=0, coupon_cents=0, fee_cents=0,
                             sale_fact=sale_id[i], day=sales[i]["day"] + datetime.timedelta(days=1 + k % 3),
                             receiving_store=draw(names)))
    perm = draw(st.permutations(range(len(rows))))
    return [rows[j] for j in perm], rules


def rows_of(entries):
    return list(zip(*(entries.column(f.name).to_pylist() for f in ENTRIES_SCHEMA)))


@PROPERTY
@given(case=settlement_cases())
def test_settle_equals_the_reference(case):
    rows, rules = case
    entries = settle(facts_table(rows), rules)
    assert entries.schema == ENTRIES_SCHEMA
    assert rows_of(entries) == reference_settle(rows, rules)


@PROPERTY
@given(case=settlement_cases())
def test_each_sale_nets_gross_minus_coupon_and_revenue_splits_whole(case):
    rows, rules = case
    entries = settle(facts_table(rows), rules).to_pylist()
    for row in rows:
        if row["kind"] != "sale":
            continue
        mine = [e for e in entries if e["fact"] == row["fact"]]
        assert not any(e["is_return"] for e in mine)
        assert sum(e["amount_cents"] for e in mine) == row["gross_cents"] - row["coupon_cents"]
        revenue = [e["amount_cents"] for e in mine if e["entry"] == "revenue"]
        assert sum(revenue) == row["gross_cents"]                              # 100 % of the line's revenue
        assert sorted(revenue) == sorted(p for p in split_cents(row["gross_cents"], rules[row["rule"]].revenue_bp)
                                         if p)
        assert sum(e["amount_cents"] for e in mine if e["entry"] == "fee") == 0
        assert all(e["amount_cents"] != 0 for e in mine)


@PROPERTY
@given(case=settlement_cases(full_returns=True))
def test_returning_every_unit_reverses_every_entry_to_zero(case):
    rows, rules = case
    entries = settle(facts_table(rows), rules)
    sale_of = {r["fact"]: (r["sale_fact"] if r["kind"] == "return" else r["fact"]) for r in rows}
    net = defaultdict(int)
    for e in entries.to_pylist():
        net[(sale_of[e["fact"]], e["party"], e["entry"])] += e["amount_cents"]
    assert set(net.values()) <= {0}
    per_party = defaultdict(int)
    for e in daily(entries).to_pylist():
        per_party[e["party"]] += e["net_cents"]
    assert set(per_party.values()) <= {0}


@PROPERTY
@given(case=settlement_cases(), extra=st.integers(1, 3), pick=st.integers(0, 100))
def test_returning_more_than_was_sold_or_an_unknown_sale_raises(case, extra, pick):
    rows, rules = case
    sales = [r for r in rows if r["kind"] == "sale"]
    target = sales[pick % len(sales)]
    back = sum(r["qty"] for r in rows if r["kind"] == "return" and r["sale_fact"] == target["fact"])
    last = max(r["fact"] for r in rows)
    over = dict(target, fact=last + 1, kind="return", qty=target["qty"] - back + extra, gross_cents=0,
                coupon_cents=0, fee_cents=0, sale_fact=target["fact"])
    refused(errors.InvalidArgument, "qty", settle, facts_table([*rows, over]), rules)
    missing = dict(over, qty=1, sale_fact=last + 2)
    refused(errors.InvalidArgument, "sale_fact", settle, facts_table([*rows, missing]), rules)


# -- daily ---------------------------------------------------------------------------------------------------
def test_daily_by_hand():
    rule = AttributionRule("d", selling_bp=5000, fulfilling_bp=5000, fee_cents=100)
    s1 = sale(1, gross_cents=1000, coupon_cents=100, fee_cents=100, selling_store="SH-0001",
              fulfilling_store="SH-0001", rule=rule.key)
    s2 = sale(2, gross_cents=500, rule=rule.key, qty=2)
    rows = [s1, s2, ret(3, s2, day=DAY0 + datetime.timedelta(days=1))]
    out = daily(settle(facts_table(rows), rules_of(rule)))
    assert out.schema == DAILY_SCHEMA
    columns = [f.name for f in DAILY_SCHEMA]
    assert [tuple(r[c] for c in columns) for r in out.to_pylist()] == [
        (DAY0, "HQ", 0, -100, -100, 0, -200, 1),
        (DAY0, "SH-0001", 1000, 100, 0, 0, 1100, 1),        # seller and fulfiller of s1: one sale, two roles
        (DAY0, "SH-0002", 250, 0, 0, 0, 250, 1),
        (DAY0, "channel:tmall", 250, 0, 0, 0, 250, 1),
        (DAY0 + datetime.timedelta(days=1), "SH-0002", 0, 0, 0, -125, -125, 0),
        (DAY0 + datetime.timedelta(days=1), "channel:tmall", 0, 0, 0, -125, -125, 0),
    ]


@PROPERTY
@given(case=settlement_cases(), seed=st.integers(0, 2**32 - 1))
def test_daily_sums_equal_the_entries_in_any_order(case, seed):
    rows, rules = case
    entries = settle(facts_table(rows), rules)
    out = daily(entries)
    expected = defaultdict(lambda: [0, 0, 0, 0, 0, set()])
    for e in entries.to_pylist():
        acc = expected[(e["day"], e["party"])]
        if e["is_return"]:
            acc[3] += e["amount_cents"]
        else:
            acc[("revenue", "fee", "coupon").index(e["entry"])] += e["amount_cents"]
            acc[5].add(e["fact"])
        acc[4] += e["amount_cents"]
    assert [(r["day"], r["party"]) for r in out.to_pylist()] == sorted(expected)
    for r in out.to_pylist():
        acc = expected[(r["day"], r["party"])]
        assert [r["revenue_cents"], r["fee_cents"], r["coupon_cents"], r["returns_cents"], r["net_cents"]] == acc[:5]
        assert r["sales"] == len(acc[5])
        assert r["revenue_cents"] + r["fee_cents"] + r["coupon_cents"] + r["returns_cents"] == r["net_cents"]
    # shuffled, or two copies concatenated: the sort path gives the same answer as the fast one
    shuffled = entries.take(np.random.default_rng(seed).permutation(entries.num_rows))
    assert daily(shuffled).equals(out)
    doubled = daily(pa.concat_tables([entries, entries]))
    assert doubled.column("sales").equals(out.column("sales"))
    tripled = daily(pa.concat_tables([entries] * 3).sort_by("fact"))         # sorted, but runs of up to 30
    assert tripled.column("sales").equals(out.column("sales"))
    assert (pc.sum(doubled.column("net_cents")).as_py() or 0) == 2 * (pc.sum(out.column("net_cents")).as_py() or 0)


def test_daily_counts_a_sale_with_many_entries_for_one_party_once():
    rule = AttributionRule("all", selling_bp=2500, fulfilling_bp=2500, home_bp=2500, hq_bp=2500, coupon_hq_bp=2500,
                           coupon_selling_bp=2500, coupon_fulfilling_bp=2500, coupon_home_bp=2500)
    one = "SH-0001"
    facts = facts_table([sale(1, selling_store=one, fulfilling_store=one, home_store=one, coupon_cents=40,
                              fee_cents=10, rule=rule.key)])
    out = daily(settle(facts, rules_of(rule))).to_pylist()
    # HQ: a quarter of revenue less the fee and its coupon share; the store holds the other three roles
    assert [(r["party"], r["sales"], r["net_cents"]) for r in out] == [("HQ", 1, 250 - 10 - 10),
                                                                        (one, 1, 750 + 10 - 30)]


def test_daily_refuses_what_is_not_entries():
    refused(errors.InvalidArgument, "entries", daily, [1, 2])
    refused(errors.InvalidArgument, "amount_cents", daily, ENTRIES_SCHEMA.empty_table().drop_columns(["amount_cents"]))


# -- write_settlement ---------------------------------------------------------------------------------------
@pytest.fixture
def settled():
    s = sale(1, gross_cents=999, qty=2, rule=SPLIT_361.key, fee_cents=50, coupon_cents=9)
    entries = settle(facts_table([s, ret(2, s)]), rules_of(SPLIT_361))
    return entries, daily(entries)


def test_write_settlement_round_trips(tmp_path, settled):
    for table, name in zip(settled, ("entries.parquet", "daily.parquet")):
        path = write_settlement(table, tmp_path / name)
        assert path == tmp_path / name
        back = pq.read_table(path)
        assert back.schema == table.schema and back.equals(table)
    assert sorted(os.listdir(tmp_path)) == ["daily.parquet", "entries.parquet"]   # no temporary file left


def test_write_settlement_replaces_an_existing_file(tmp_path, settled):
    entries, day = settled
    path = tmp_path / "out.parquet"
    write_settlement(entries, str(path))
    write_settlement(day, path)
    assert pq.read_table(path).equals(day)
    assert os.listdir(tmp_path) == ["out.parquet"]


def test_write_settlement_refuses_and_leaves_nothing_behind(tmp_path, settled):
    entries, _ = settled
    refused(errors.InvalidArgument, "path", write_settlement, entries, tmp_path / "missing" / "x.parquet")
    (tmp_path / "a-directory").mkdir()
    refused(errors.InvalidArgument, "path", write_settlement, entries, tmp_path / "a-directory")
    assert os.listdir(tmp_path) == ["a-directory"] and os.listdir(tmp_path / "a-directory") == []
    refused(errors.InvalidArgument, "path", write_settlement, entries, "")
    refused(errors.InvalidArgument, "path", write_settlement, entries, None)
    refused(errors.InvalidArgument, "entries_or_daily", write_settlement, entries.to_pandas(), tmp_path / "x.parquet")
    refused(errors.InvalidArgument, "entries_or_daily", write_settlement, entries.drop_columns(["party"]),
            tmp_path / "x.parquet")
    refused(errors.InvalidArgument, "entries_or_daily", write_settlement, pa.table({"a": [1]}), tmp_path / "x.parquet")
    assert os.listdir(tmp_path) == ["a-directory"]


def test_module_constants_are_consistent():
    assert stl.ENTRY_KINDS == ("revenue", "fee", "coupon") and stl.FACT_KINDS == ("sale", "return")
    assert set(stl.__all__) <= set(dir(stl))
    assert [f.name for f in FACTS_SCHEMA][:4] == ["fact", "kind", "day", "at"]
