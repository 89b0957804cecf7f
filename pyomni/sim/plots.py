"""Figures of simulation results, drawn with Matplotlib's object API (no pyplot, no global state).

Each function takes results and returns a :class:`matplotlib.figure.Figure`;
:func:`figure_png` renders one to PNG bytes with the Agg canvas, so nothing
here depends on a display or on the process-wide backend.

Examples
--------
>>> from pyomni.sim import preset, simulate
>>> r = simulate(preset("small", orders=80, stores=10, hours=24))
>>> figure_png(backlog_figure([r]))[:4]
b'\\x89PNG'
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from .results import SimulationResult

__all__ = ["comparison_figure", "store_load_figure", "flow_map_figure", "backlog_figure", "sweep_figure",
           "answer_time_figure", "settlement_figure", "figure_png", "COMPARED_METRICS", "REROUTE_REASONS",
           "yuan_axis_label"]

#: Why parcels were re-routed, in the order the answer-time figure stacks them.
REROUTE_REASONS = ("NOT_FOUND", "NO_STAFF", "DAMAGED", "OVER_CAPACITY", "TIMEOUT")

#: Metrics drawn in the policy comparison: key, label.
COMPARED_METRICS = (
    ("fill_rate", "fill rate"),
    ("split_rate", "parcels per order"),
    ("mean_km", "mean distance (km)"),
    ("p95_km", "p95 distance (km)"),
    ("cost_per_order", "cost per order (cost model)"),
    ("hours_to_clear", "hours to clear"),
)
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def figure_png(figure: Figure, *, dpi: int = 110) -> bytes:
    """Render ``figure`` to PNG bytes with the Agg canvas.

    Examples
    --------
    >>> figure_png(Figure(figsize=(1, 1)))[:4]
    b'\\x89PNG'
    """
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def comparison_figure(results: Sequence[SimulationResult]) -> Figure:
    """Bar charts of the headline metrics, one bar per policy.

    A backlog that never cleared has no "hours to clear"; its bar is drawn at
    the horizon and hatched.

    Examples
    --------
    >>> from pyomni.sim import preset, simulate
    >>> len(comparison_figure([simulate(preset("small", orders=50, stores=10, hours=24))]).axes)
    6
    """
    fig = Figure(figsize=(12, 6.5), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    names = [r.policy for r in results]
    for ax, (key, label) in zip(axes, COMPARED_METRICS, strict=True):
        values, hatches = [], []
        for r in results:
            value = r.metrics.get(key)
            missing = value is None
            if missing and key == "hours_to_clear":
                value = float(r.scenario.hours)
            values.append(np.nan if value is None else float(value))
            hatches.append("//" if missing else "")
        bars = ax.bar(names, values, color=_COLOURS[:len(names)])
        for bar, hatch, value in zip(bars, hatches, values, strict=True):
            bar.set_hatch(hatch)
            if np.isfinite(value):
                ax.annotate(f"{value:.3g}" + (" (not cleared)" if hatch else ""), (bar.get_x() + bar.get_width() / 2,
                            value), ha="center", va="bottom", fontsize=8)
        ax.set_title(label)
        ax.tick_params(axis="x", labelrotation=15)
    fig.suptitle(f"{results[0].scenario.name}: policies compared" if results else "no results")
    return fig


def store_load_figure(results: Sequence[SimulationResult]) -> Figure:
    """How evenly the work spread: per-store utilisation histogram and the sorted load curve.

    Examples
    --------
    >>> from pyomni.sim import preset, simulate
    >>> len(store_load_figure([simulate(preset("small", orders=50, stores=10, hours=24))]).axes)
    2
    """
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    hist_ax, curve_ax = fig.subplots(1, 2)
    for colour, r in zip(_COLOURS, results, strict=False):
        load = r.store_load
        mask = np.array([k == "store" for k in load.column("kind").to_pylist()], dtype=bool) & \
            load.column("ships").to_numpy(zero_copy_only=False)
        util = load.column("utilisation").to_numpy()[mask]
        if not len(util):
            continue
        hist_ax.hist(util, bins=np.linspace(0, max(1.05, float(util.max()) + 0.05), 30), histtype="step",
                     linewidth=1.8, color=colour, label=r.policy)
        curve_ax.plot(np.sort(util)[::-1], color=colour, label=r.policy)
    hist_ax.set_xlabel("parcels on the busiest day / daily capacity")
    hist_ax.set_ylabel("stores")
    hist_ax.set_title("store utilisation")
    curve_ax.set_xlabel("stores, busiest first")
    curve_ax.set_ylabel("utilisation")
    curve_ax.set_title("load curve (flat = evenly spread)")
    for ax in (hist_ax, curve_ax):
        ax.legend()
    return fig


def flow_map_figure(result: SimulationResult, *, sample: int = 400, seed: int = 0) -> Figure:
    """Stores and flows over China: locations sized by parcels picked, lines from store to customer.

    Plain longitude/latitude axes (no basemap): the real-city coordinates
    draw the outline of China's population on their own. Flows are a random
    sample of ``sample`` shipped parcels.

    Examples
    --------
    >>> from pyomni.sim import preset, simulate
    >>> flow_map_figure(simulate(preset("small", orders=50, stores=10, hours=24)), sample=20).axes[0].get_title()
    'small · greedy: where parcels ship from'
    """
    fig = Figure(figsize=(10, 7.5), layout="constrained")
    ax = fig.subplots()
    ships = result.shipments
    picked = ~np.isnan(ships.column("picked_h").to_numpy(zero_copy_only=False))
    idx = np.flatnonzero(picked)
    rng = np.random.default_rng(seed)
    if len(idx) > sample:
        idx = np.sort(rng.choice(idx, size=sample, replace=False))
    segments = np.stack([
        np.column_stack([ships.column("from_lon").to_numpy()[idx], ships.column("from_lat").to_numpy()[idx]]),
        np.column_stack([ships.column("to_lon").to_numpy()[idx], ships.column("to_lat").to_numpy()[idx]]),
    ], axis=1) if len(idx) else np.zeros((0, 2, 2))
    ax.add_collection(LineCollection(list(segments), colors="#d62728", linewidths=0.5, alpha=0.35, zorder=1))
    orders = result.orders
    ax.scatter(orders.column("lon").to_numpy(), orders.column("lat").to_numpy(), s=1, c="#bbbbbb", alpha=0.3,
               zorder=0, label="customers")
    load = result.store_load
    kinds = np.array(load.column("kind").to_pylist(), dtype=object)
    parcels = load.column("parcels").to_numpy().astype(np.float64)
    size = 8 + 400 * parcels / max(1.0, float(parcels.max()))
    ships_mask = load.column("ships").to_numpy(zero_copy_only=False)
    for kind, colour, marker in (("store", "#1f77b4", "o"), ("warehouse", "#2ca02c", "s"),
                                 ("dark_store", "#9467bd", "D")):
        mask = (kinds == kind) & ships_mask
        if mask.any():
            ax.scatter(load.column("lon").to_numpy()[mask], load.column("lat").to_numpy()[mask], s=size[mask],
                       c=colour, marker=marker, alpha=0.6, edgecolors="white", linewidths=0.5, zorder=2,
                       label=f"{kind} (size = parcels)")
    closed = (kinds == "store") & ~ships_mask
    if closed.any():
        ax.scatter(load.column("lon").to_numpy()[closed], load.column("lat").to_numpy()[closed], s=6, c="black",
                   marker="x", zorder=2, label="store, no ship-from-store")
    ax.set_xlim(73, 135)
    ax.set_ylim(18, 54)
    ax.set_aspect(1.2)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{result.scenario.name} · {result.policy}: where parcels ship from")
    return fig


def backlog_figure(results: Sequence[SimulationResult]) -> Figure:
    """Open orders over time per policy, with orders arriving and shipped per hour.

    Examples
    --------
    >>> from pyomni.sim import preset, simulate
    >>> len(backlog_figure([simulate(preset("small", orders=50, stores=10, hours=24))]).axes)
    2
    """
    fig = Figure(figsize=(12, 6.5), layout="constrained")
    backlog_ax, flow_ax = fig.subplots(2, 1, sharex=True)
    if results:
        series = results[0].series
        flow_ax.bar(series.column("hour").to_numpy(), series.column("arrived").to_numpy(), color="#cccccc",
                    label="orders arriving")
    for colour, r in zip(_COLOURS, results, strict=False):
        hours = r.series.column("hour").to_numpy()
        backlog_ax.plot(hours, r.series.column("backlog").to_numpy(), color=colour, label=r.policy, linewidth=1.8)
        flow_ax.plot(hours, r.series.column("shipped").to_numpy(), color=colour, label=f"shipped · {r.policy}")
    backlog_ax.set_ylabel("open orders")
    backlog_ax.set_title("backlog over time")
    flow_ax.set_ylabel("orders per hour")
    flow_ax.set_xlabel("hours from 00:00 of the first day")
    for ax in (backlog_ax, flow_ax):
        ax.legend()
        ax.grid(alpha=0.3)
    return fig


def sweep_figure(rows: Sequence[dict], metrics: Sequence[tuple[str, str]] = (
        ("fill_rate", "fill rate"), ("cost_per_order", "cost per order"), ("hours_to_clear", "hours to clear"))
) -> Figure:
    """Grouped bars of a sweep: one group per scenario, one bar per policy.

    ``rows`` are the sweep's table rows (``scenario`` label, ``policy`` and
    the metrics).

    Examples
    --------
    >>> rows = [{"scenario": "a", "policy": "greedy", "fill_rate": 0.9, "cost_per_order": 3, "hours_to_clear": 30}]
    >>> len(sweep_figure(rows).axes)
    3
    """
    labels = list(dict.fromkeys(r["scenario"] for r in rows))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    fig = Figure(figsize=(max(8.0, 1.1 * len(labels) + 4), 3.2 * len(metrics)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(metrics), 1, sharex=True))
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(policies))
    lookup = {(r["scenario"], r["policy"]): r for r in rows}
    for ax, (key, label) in zip(axes, metrics, strict=True):
        for j, (colour, policy) in enumerate(zip(_COLOURS, policies, strict=False)):
            values = [lookup.get((s, policy), {}).get(key) for s in labels]
            ax.bar(x + j * width - 0.4 + width / 2, [np.nan if v is None else v for v in values], width,
                   color=colour, label=policy)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    axes[-1].set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    fig.suptitle("what-if sweep")
    return fig


def answer_time_figure(results: Sequence[SimulationResult]) -> Figure:
    """How fast stores answered: the ECDF of answer times per policy, and the re-routes by reason.

    The ECDF runs over the parcels stores answered or let time out, in
    minutes of opening hours (the minutes the answer limit counts); a
    parcel that timed out never answers, so each curve levels off below 1 by
    the timed-out share. The answer limit is the dashed line.

    Examples
    --------
    >>> from pyomni.sim import preset, simulate
    >>> fig = answer_time_figure([simulate(preset("small", orders=80, stores=10, hours=24))])
    >>> [ax.get_xlabel() for ax in fig.axes]
    ['answer time (minutes of opening hours)', 're-routed parcels per 100 orders']
    """
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ecdf_ax, reason_ax = fig.subplots(1, 2, width_ratios=(1.6, 1))
    limit = results[0].scenario.answer_limit_minutes if results else 15.0
    right = limit * 1.25
    for colour, r in zip(_COLOURS, results, strict=False):
        ships = r.shipments
        store = np.array([k == "store" for k in ships.column("location_kind").to_pylist()], dtype=bool)
        outcome = np.array(ships.column("outcome").to_pylist(), dtype=object)
        answered = store & np.isin(outcome, ["accepted", "rejected"])
        judged = int((answered | (store & (outcome == "timed_out"))).sum())
        if not judged:
            continue
        minutes = np.sort(ships.column("answer_min").to_numpy(zero_copy_only=False)[answered])
        share = np.arange(1, len(minutes) + 1) / judged
        timed_out = float((store & (outcome == "timed_out")).sum()) / judged
        label = (f"{r.policy}: p95 {np.percentile(minutes, 95):.1f} min, {timed_out:.1%} timed out"
                 if len(minutes) else r.policy)
        ecdf_ax.step(np.r_[0.0, minutes, right], np.r_[0.0, share, share[-1] if len(share) else 0.0], where="post",
                     color=colour, linewidth=1.8, label=label)
    ecdf_ax.axvline(limit, color="#444444", linestyle="--", linewidth=1.2)
    ecdf_ax.annotate(f"answer limit {limit:g} min: silence times out and is re-routed", (limit, 0.04),
                     xytext=(-6, 0), textcoords="offset points", ha="right", fontsize=8, color="#444444")
    ecdf_ax.set_xlim(0, right)
    ecdf_ax.set_ylim(0, 1.02)
    ecdf_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ecdf_ax.set_xlabel("answer time (minutes of opening hours)")
    ecdf_ax.set_ylabel("store parcels answered within")
    ecdf_ax.set_title("how fast stores answer a new parcel")
    ecdf_ax.grid(alpha=0.3)
    ecdf_ax.legend(loc="center right", fontsize=8, title="store answers", title_fontsize=8)

    y = np.arange(len(results))
    left = np.zeros(len(results))
    reason_colours = ("#8c564b", "#9467bd", "#e377c2", "#bcbd22", "#7f7f7f")
    for reason, colour in zip(REROUTE_REASONS, reason_colours, strict=True):
        per_100 = []
        for r in results:
            live = sum(s != "CANCELLED" for s in r.orders.column("state").to_pylist())
            count = sum(x == reason for x in r.shipments.column("reject_reason").to_pylist())
            per_100.append(100.0 * count / live if live else 0.0)
        reason_ax.barh(y, per_100, left=left, color=colour, label=reason.lower().replace("_", " "))
        left += np.array(per_100)
    for yi, total in zip(y, left, strict=True):
        reason_ax.annotate(f"{total:.1f}", (total, yi), xytext=(3, 0), textcoords="offset points", va="center",
                           fontsize=8)
    reason_ax.set_yticks(y, [r.policy for r in results])
    reason_ax.invert_yaxis()
    reason_ax.set_xlim(0, max(1.0, float(left.max()) * 1.25) if len(left) else 1.0)
    reason_ax.set_xlabel("re-routed parcels per 100 orders")
    reason_ax.set_title("re-routes by reason")
    reason_ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
    return fig


def yuan_axis_label(cents: float) -> str:
    """An axis tick for an amount in cents: ``¥1.5M``, ``¥820k``, ``¥950``.

    Examples
    --------
    >>> yuan_axis_label(150_000_000), yuan_axis_label(82_000_000), yuan_axis_label(95_000), yuan_axis_label(-5e6)
    ('¥1.5M', '¥820k', '¥950', '-¥50k')
    """
    yuan = cents / 100.0
    sign, yuan = ("-" if yuan < 0 else ""), abs(yuan)
    if yuan >= 1e6:
        return f"{sign}¥{yuan / 1e6:.3g}M"
    if yuan >= 1e3:
        return f"{sign}¥{yuan / 1e3:.3g}k"
    return f"{sign}¥{yuan:.0f}"


def settlement_figure(results: Sequence[SimulationResult], *, top: int = 20) -> Figure:
    """Net settlement of the ``top`` stores per policy, under the scenario's attribution rule.

    Warehouses, HQ and the channels are left out (the report's table lists them): a warehouse's net would
    squash every store's bar.

    Examples
    --------
    >>> from pyomni.sim import preset, simulate
    >>> fig = settlement_figure([simulate(preset("small", orders=80, stores=10, hours=24))], top=5)
    >>> len(fig.axes), len(fig.axes[0].patches) <= 5
    (1, True)
    """
    n = max(1, len(results))
    fig = Figure(figsize=(max(7.0, 5.2 * n), 0.28 * top + 1.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    for colour, ax, r in zip(_COLOURS, axes, results, strict=False):
        table = r.settlement
        rows = [i for i, k in enumerate(table.column("kind").to_pylist()) if k == "store"][:top]
        party = table.column("party").to_pylist()
        city = table.column("city").to_pylist()
        net = table.column("net_cents").to_numpy()
        y = np.arange(len(rows))
        ax.barh(y, net[rows], color=colour)
        ax.set_yticks(y, [f"{party[i]} · {city[i]}" for i in rows], fontsize=8)
        ax.invert_yaxis()
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: yuan_axis_label(x)))
        ax.set_xlabel("net settlement (revenue + fees + coupons)")
        ax.set_title(f"{r.policy}: top {len(rows)} stores")
        ax.grid(axis="x", alpha=0.3)
        for i, k in enumerate(rows):
            ax.annotate(yuan_axis_label(float(net[k])), (float(net[k]), i), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=7)
        ax.set_xlim(0, float(net[rows].max()) * 1.2 if rows and net[rows].max() > 0 else 1.0)
    rule = results[0].metrics.get("attribution_rule", results[0].scenario.attribution) if results else ""
    fig.suptitle(f"who earned what: net per store under {rule}")
    return fig
