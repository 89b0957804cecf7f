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

from .results import SimulationResult

__all__ = ["comparison_figure", "store_load_figure", "flow_map_figure", "backlog_figure", "sweep_figure",
           "figure_png", "COMPARED_METRICS"]

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
