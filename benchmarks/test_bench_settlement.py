"""Settlement benchmarks: revenue attribution of one million fulfilled lines (:mod:`pyomni.settlement`).

Group ``settlement``
    ``settle`` + ``daily`` of a synthetic facts table: 1,000,000 sale lines of
    ≈500,000 orders over 30 business days (400 stores, ≈30 % franchises; 60 % of
    orders sold online through 3 channels, the rest by a store; unit prices of
    ¥5–¥2,000 ending in .00/.90/9.00; a third of the lines carrying a coupon; a
    parcel fee on the first line of each parcel) under 3 rules (fulfiller takes all,
    a 30/60/10 split with franchise coupon shares and a fee, everything to the
    regional store), plus ≈5 % returns (partial and full, some sales returned in
    two steps), in fact order.

    The baseline (``test_settle_daily_pandas``, run second so that its row carries
    the ratio) is a plain pandas implementation of the same rules: per role, shares
    in integer pandas columns (largest remainder), returns merged onto their sales
    and reversed with the same floor formula, concatenated and grouped by
    ``(day, party)``. Both must give identical daily totals (asserted, column by
    column); ``extra_info`` holds both medians and ``pandas_over_pyomni_median``.

Data is built once per module, outside the timed region; timings are recorded, never asserted.
"""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pyomni import settlement as st

FACTS_SEED = 23
N_SALE_LINES = 1_000_000
N_STORES = 400
N_DAYS = 30
RETURN_SHARE = 0.05
ROUNDS = {"pyomni": 5, "pandas": 2}
FIRST_DAY = datetime.date(2024, 11, 1)

SPLIT_WITH_FEE = st.AttributionRule(
    "split-361", version=2, selling_bp=3000, fulfilling_bp=6000, home_bp=1000, fee_cents=600,
    coupon_hq_bp=8000, coupon_selling_bp=2000,
    franchise_coupon_hq_bp=5000, franchise_coupon_fulfilling_bp=4000, franchise_coupon_home_bp=1000)
RULES = {r.key: r for r in (st.FULFILLER_TAKES_ALL, SPLIT_WITH_FEE, st.REGIONAL)}
DAILY_COLUMNS = [f.name for f in st.DAILY_SCHEMA]

# medians measured so far in this run (pyomni runs first), so the baseline's row can carry the ratio
_medians: dict[str, float] = {}
_daily: dict[str, pd.DataFrame] = {}


def _strings(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def build_facts(n_lines: int, seed: int) -> pa.Table:
    """A facts table of ``n_lines`` sale lines plus ≈5 % returns, in fact (time) order."""
    rng = np.random.default_rng(seed)
    # orders of 1-3 lines, one parcel each
    lines_per_order = rng.choice([1, 2, 3], size=n_lines, p=[0.55, 0.3, 0.15])
    order_of_line = np.repeat(np.arange(n_lines), lines_per_order)[:n_lines]
    n_orders = int(order_of_line[-1]) + 1
    first = np.r_[True, order_of_line[1:] != order_of_line[:-1]]
    line_no = np.arange(n_lines) - np.maximum.accumulate(np.where(first, np.arange(n_lines), 0))

    stores = pa.array([f"{p}-{i:04d}" for i, p in zip(range(N_STORES), np.resize(
        ["SH", "BJ", "GZ", "SZ", "HZ", "CD", "WH", "NJ"], N_STORES))], pa.string())
    is_franchise = rng.random(N_STORES) < 0.3
    channels = pa.array(["tmall", "jd", "app", "pos"], pa.string())
    # per order: channel (pos = sold in a store), selling/fulfilling/home store, rule, time
    o_channel = rng.choice(4, size=n_orders, p=[0.3, 0.2, 0.1, 0.4])
    o_home = rng.integers(0, N_STORES, n_orders)
    o_fulfil = np.where(rng.random(n_orders) < 0.5, o_home, rng.integers(0, N_STORES, n_orders))
    o_sell = np.where(rng.random(n_orders) < 0.7, o_home, rng.integers(0, N_STORES, n_orders))
    o_rule = rng.choice(3, size=n_orders, p=[0.4, 0.45, 0.15])
    o_at = np.sort(rng.uniform(0, N_DAYS * 86_400.0, n_orders))

    qty = rng.choice([1, 2, 3, 4, 5], size=n_lines, p=[0.8, 0.12, 0.04, 0.02, 0.02]).astype(np.int64)
    yuan = np.clip(np.round(np.exp(rng.normal(4.6, 0.9, n_lines))), 5, 2000).astype(np.int64)
    price = yuan * 100 - rng.choice([0, 10, 100], size=n_lines)     # 199.00, 199.90, 198.00-style
    gross = price * qty
    coupon = np.where(rng.random(n_lines) < 1 / 3, np.minimum(gross // 3, rng.choice([500, 1000, 2000, 5000],
                                                                                      size=n_lines)), 0)
    rule_keys = list(RULES)
    fee = np.where(first, np.array([RULES[k].fee_cents for k in rule_keys])[o_rule[order_of_line]], 0)

    # returns: 5 % of the lines; a multi-unit line comes back in one or two steps
    returned = np.sort(rng.choice(n_lines, size=int(n_lines * RETURN_SHARE), replace=False))
    first_qty = np.where(qty[returned] > 1, rng.integers(1, qty[returned] + 1), 1)
    second = returned[first_qty < qty[returned]]
    second_qty = (qty[returned] - first_qty)[first_qty < qty[returned]]
    keep_second = rng.random(len(second)) < 0.5
    second, second_qty = second[keep_second], second_qty[keep_second]

    line_at = o_at[order_of_line] + 3600.0
    r1_at = line_at[returned] + rng.uniform(86_400, 14 * 86_400, len(returned))
    r2_at = r1_at[np.searchsorted(returned, second)] + rng.uniform(3600, 7 * 86_400, len(second))
    # event rows: every sale line, then the returns; fact ids in time order
    src = np.concatenate([np.arange(n_lines), returned, second])
    at = np.concatenate([line_at, r1_at, r2_at])
    is_ret = np.r_[np.zeros(n_lines, bool), np.ones(len(returned) + len(second), bool)]
    ev_qty = np.concatenate([qty, first_qty, second_qty])
    time_order = np.argsort(at, kind="stable")
    fact_of_event = np.empty(len(at), np.int64)
    fact_of_event[time_order] = np.arange(len(at))
    sale_fact = np.where(is_ret, fact_of_event[src], -1)

    ev = time_order                     # rows in fact order
    s = src[ev]
    o = order_of_line[s]
    day = (at[ev] // 86_400).astype(np.int32) + (FIRST_DAY - datetime.date(1970, 1, 1)).days
    zero = np.zeros(len(ev), np.int64)
    ret = is_ret[ev]
    channel = o_channel[o]
    selling = pc.if_else(pa.array(channel == 3), stores.take(pa.array(o_sell[o])), "")
    return pa.Table.from_arrays([
        pa.array(np.arange(len(ev), dtype=np.int64)),
        pa.array(np.where(ret, "return", "sale")),
        pa.array(day).cast(pa.date32()),
        pa.array(at[ev]),
        _strings("o-", o),
        pc.binary_join_element_wise(_strings("o-", o), "1", "/"),
        pa.array(line_no[s].astype(np.int32)),
        _strings("SKU-", rng.integers(0, 100_000, len(ev))),
        pa.array(ev_qty[ev]),
        pa.array(np.where(ret, zero, gross[s])),
        pa.array(np.where(ret, zero, coupon[s])),
        pa.array(np.where(ret, zero, fee[s])),
        channels.take(pa.array(channel)),
        selling,
        stores.take(pa.array(o_fulfil[o])),
        stores.take(pa.array(o_home[o])),
        pa.array(is_franchise[o_fulfil[o]]),
        pa.array(np.array(rule_keys)[o_rule[o]]),
        pa.array(sale_fact[ev]),
        pc.if_else(pa.array(ret), stores.take(pa.array(o_home[o])), ""),
    ], schema=st.FACTS_SCHEMA)


# -- the baseline: plain pandas --------------------------------------------------------------------
def _pandas_split(total: pd.Series, weights: list[pd.Series]) -> list[pd.Series]:
    """Largest-remainder split in integer pandas columns (ties to the earlier weight; negatives mirrored)."""
    whole = sum(weights)
    magnitude = total.abs()
    parts = [magnitude * w // whole for w in weights]
    rest = [magnitude * w % whole for w in weights]
    short = magnitude - sum(parts)
    out = []
    for j, part in enumerate(parts):
        rank = sum((rest[i] >= rest[j]) if i < j else (rest[i] > rest[j]) for i in range(len(parts)) if i != j)
        part = part + (rank < short).astype("int64")
        out.append(part.where(total >= 0, -part))
    return out


def pandas_settle_daily(facts: pd.DataFrame, rules: dict[str, st.AttributionRule]) -> pd.DataFrame:
    """The same settlement in pandas: per role, concat, groupby(day, party).sum()."""
    sales = facts[facts["kind"] == "sale"]
    returns = facts[facts["kind"] == "return"]

    def rule_column(attr: str, index: int) -> pd.Series:
        return sales["rule"].map({k: getattr(r, attr)[index] for k, r in rules.items()}).astype("int64")

    selling = sales["selling_store"].where(sales["selling_store"] != "", "channel:" + sales["channel"])
    parties = {"selling": selling, "fulfilling": sales["fulfilling_store"], "home": sales["home_store"],
               "hq": pd.Series("HQ", index=sales.index)}
    revenue = _pandas_split(sales["gross_cents"], [rule_column("revenue_bp", i) for i in range(4)])
    coupon_w = [rule_column("coupon_bp", i).where(~sales["franchise"], rule_column("franchise_coupon_bp", i))
                for i in range(4)]
    coupon = _pandas_split(-sales["coupon_cents"], coupon_w)
    slots = [("revenue", role, amount) for role, amount in zip(("selling", "fulfilling", "home", "hq"), revenue)]
    slots += [("fee", "fulfilling", sales["fee_cents"]), ("fee", "hq", -sales["fee_cents"])]
    slots += [("coupon", role, amount) for role, amount in zip(("hq", "selling", "fulfilling", "home"), coupon)]

    # returns: units of the same sale returned before, then the floor formula on each slot
    ret = returns[["fact", "day", "qty", "sale_fact"]].sort_values("fact")
    ret["before"] = ret.groupby("sale_fact")["qty"].cumsum() - ret["qty"]
    ret = ret.merge(sales[["fact", "qty"]].rename(columns={"fact": "sale_fact", "qty": "n"}), on="sale_fact")
    frames = []
    for entry, role, amount in slots:
        frames.append(pd.DataFrame({"day": sales["day"], "party": parties[role], "entry": entry,
                                    "amount": amount, "fact": sales["fact"], "is_return": False}))
        per_sale = pd.DataFrame({"sale_fact": sales["fact"], "a": amount, "party": parties[role]})
        r = ret.merge(per_sale, on="sale_fact")
        after = r["before"] + r["qty"]
        reversal = -(r["a"] * after // r["n"] - r["a"] * r["before"] // r["n"])
        frames.append(pd.DataFrame({"day": r["day"], "party": r["party"], "entry": entry, "amount": reversal,
                                    "fact": r["fact"], "is_return": True}))
    entries = pd.concat(frames, ignore_index=True)
    entries = entries[entries["amount"] != 0]
    for entry in ("revenue", "fee", "coupon"):
        entries[f"{entry}_cents"] = entries["amount"].where((entries["entry"] == entry) & ~entries["is_return"], 0)
    entries["returns_cents"] = entries["amount"].where(entries["is_return"], 0)
    entries["net_cents"] = entries["amount"]
    entries["sale"] = entries["fact"].where(~entries["is_return"])
    grouped = entries.groupby(["day", "party"], sort=True)
    out = grouped[["revenue_cents", "fee_cents", "coupon_cents", "returns_cents", "net_cents"]].sum()
    out["sales"] = grouped["sale"].nunique()
    return out.reset_index()[DAILY_COLUMNS]


# -- the benchmarks ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def facts() -> pa.Table:
    return build_facts(N_SALE_LINES, FACTS_SEED)


@pytest.fixture(scope="module")
def facts_frame(facts: pa.Table) -> pd.DataFrame:
    return facts.to_pandas()


def _settle_daily(facts: pa.Table) -> pa.Table:
    return st.daily(st.settle(facts, RULES))


def _as_frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas().sort_values(["day", "party"], ignore_index=True)[DAILY_COLUMNS]


def _record(benchmark, impl: str, facts: pa.Table, result: pd.DataFrame) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        median = float(stats.stats.median)
        _medians[impl] = median
        benchmark.extra_info["median_s"] = round(median, 4)
        benchmark.extra_info["lines_per_s"] = round(N_SALE_LINES / median)
        if impl == "pandas" and "pyomni" in _medians:
            benchmark.extra_info["pyomni_median_s"] = round(_medians["pyomni"], 4)
            benchmark.extra_info["pandas_over_pyomni_median"] = round(median / _medians["pyomni"], 2)
    benchmark.extra_info["sale_lines"] = N_SALE_LINES
    benchmark.extra_info["returns"] = facts.num_rows - N_SALE_LINES
    benchmark.extra_info["daily_rows"] = len(result)


def _check_totals(facts: pa.Table, daily: pd.DataFrame) -> None:
    """Totals that hold whatever the split: net = gross - coupon of the sales not returned, fee nets to 0."""
    sales = facts.filter(pc.equal(facts.column("kind"), "sale"))
    assert int(daily["fee_cents"].sum()) == 0
    assert int(daily["revenue_cents"].sum()) == pc.sum(sales.column("gross_cents")).as_py()
    assert int(daily["coupon_cents"].sum()) == -pc.sum(sales.column("coupon_cents")).as_py()
    assert (daily["revenue_cents"] + daily["fee_cents"] + daily["coupon_cents"] + daily["returns_cents"]
            == daily["net_cents"]).all()


@pytest.mark.benchmark(group="settlement")
def test_settle_daily_pyomni(benchmark, facts: pa.Table) -> None:
    results = []
    benchmark.pedantic(lambda: results.append(_settle_daily(facts)), rounds=ROUNDS["pyomni"], iterations=1,
                       warmup_rounds=0)
    daily = _as_frame(results[-1])
    assert all(_as_frame(r).equals(daily) for r in results[:-1])
    _check_totals(facts, daily)
    _daily["pyomni"] = daily
    _record(benchmark, "pyomni", facts, daily)


@pytest.mark.benchmark(group="settlement")
def test_settle_daily_pandas(benchmark, facts: pa.Table, facts_frame: pd.DataFrame) -> None:
    results = []
    benchmark.pedantic(lambda: results.append(pandas_settle_daily(facts_frame, RULES)), rounds=ROUNDS["pandas"],
                       iterations=1, warmup_rounds=0)
    daily = _as_frame(pa.Table.from_pandas(results[-1], schema=st.DAILY_SCHEMA, preserve_index=False))
    expected = _daily.get("pyomni")
    if expected is None:        # run alone (-k pandas): settle outside the timed region
        expected = _as_frame(_settle_daily(facts))
    pd.testing.assert_frame_equal(daily, expected, check_exact=True)
    _check_totals(facts, daily)
    _record(benchmark, "pandas", facts, daily)
