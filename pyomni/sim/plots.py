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
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from .basemap import draw_basemap, nearest_province
from .results import SimulationResult

__all__ = ["comparison_figure", "store_load_figure", "flow_map_figure", "flow_difference_figure", "MapSource",
           "backlog_figure", "sweep_figure", "answer_time_figure", "settlement_figure", "figure_png",
           "COMPARED_METRICS", "REROUTE_REASONS", "yuan_axis_label"]

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
_FLOW = "#2c3e50"
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
    """The headline metrics, one dot per policy, each panel's axis fitted to the policies' spread.

    Dots, not bars: an axis that does not start at zero (stated under each
    panel that is zoomed) would make bar lengths lie. Each dot is labelled
    with its value and its difference from the first policy; which way is
    better is in the panel's title. A backlog that never cleared has no
    "hours to clear": its dot is hollow, at the horizon, labelled "not cleared".

    Examples
    --------
    >>> from pyomni.sim import preset, simulate
    >>> len(comparison_figure([simulate(preset("small", orders=50, stores=10, hours=24))]).axes)
    6
    """
    fig = Figure(figsize=(12, 1.2 + 1.45 * max(2, len(results)) * 2), layout="constrained")
    axes = fig.subplots(3, 2).ravel()
    names = [r.policy for r in results]
    y = np.arange(len(names))[::-1]
    for ax, (key, label) in zip(axes, COMPARED_METRICS, strict=True):
        values = np.array([np.nan if r.metrics.get(key) is None else float(r.metrics[key]) for r in results])
        missing = ~np.isfinite(values)
        if key == "hours_to_clear":
            values = np.where(missing, [float(r.scenario.hours) for r in results], values)
        for k, (value, gone) in enumerate(zip(values.tolist(), missing.tolist(), strict=True)):
            if not np.isfinite(value):
                continue
            colour = _COLOURS[k % len(_COLOURS)]
            ax.scatter([value], [y[k]], s=90, zorder=3, color="white" if gone else colour, edgecolors=colour,
                       linewidths=2)
            text = f"not cleared (> {value:,.0f} h)" if gone else _metric_text(key, value)
            if k and not gone and np.isfinite(values[0]) and not missing[0]:
                text += f"  ({_metric_text(key, value - values[0], signed=True)} vs {names[0]})"
            ax.annotate(text, (value, y[k]), xytext=(0, 9), textcoords="offset points", ha="center", fontsize=8.5)
        _fit_axis(ax, values[np.isfinite(values)], key)
        ax.set_yticks(y, names)
        ax.set_ylim(-0.7, len(names) - 0.3)
        ax.set_title(f"{label} ({_BETTER.get(key, '')})", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{results[0].scenario.name}: policies compared" if results else "no results")
    return fig


#: Which way each compared metric is better.
_BETTER = {"fill_rate": "higher is better", "split_rate": "lower is better", "mean_km": "lower is better",
           "p95_km": "lower is better", "cost_per_order": "lower is better", "hours_to_clear": "lower is better"}


def _metric_text(key: str, value: float, signed: bool = False) -> str:
    """A compared metric's value (or, ``signed``, a difference) as a label: 97.73 %, 1,887 km, 44.0 h."""
    sign = "+" if signed else ""
    if key == "fill_rate":
        return f"{100 * value:{sign}.2f} pp" if signed else f"{value:.2%}"
    if key in ("mean_km", "p95_km"):
        return f"{value:{sign},.0f} km"
    if key == "hours_to_clear":
        return f"{value:{sign},.1f} h"
    return f"{value:{sign},.3g}" if abs(value) < 1_000 else f"{value:{sign},.0f}"


def _fit_axis(ax: Axes, values: np.ndarray, key: str, *, vertical: bool = False, room: float = 0.6) -> None:
    """Fit the value axis (x, or y if ``vertical``) to ``values``, ``room`` times their spread beyond them for
    labels; state its start when it is not zero (fill rates end at 100 %)."""
    _value_formatter(ax.yaxis if vertical else ax.xaxis, key)
    if not len(values):
        return
    lo, hi = float(values.min()), float(values.max())
    spread = hi - lo if hi > lo else max(abs(hi) * 0.05, 1e-3)
    low, high = lo - room * spread, hi + room * spread
    if lo >= 0 and low <= 0.25 * lo:
        low = 0.0                        # close to zero anyway: start there
    if key == "fill_rate" and hi <= 1.0:
        high = min(high, 1.0 + 0.12 * spread)
    (ax.set_ylim if vertical else ax.set_xlim)(max(low, 0.0) if lo >= 0 else low, high)
    start = (ax.get_ylim if vertical else ax.get_xlim)()[0]
    if start <= 0:
        return
    note = f"axis starts at {_metric_text(key, start)}, not 0"
    if vertical:
        ax.annotate(note, (0.0, 1.0), xycoords="axes fraction", xytext=(3, -3), textcoords="offset points",
                    ha="left", va="top", fontsize=7.5, color="#a04000")
    else:
        ax.set_xlabel(note, fontsize=8, color="#a04000", loc="left")


def _value_formatter(axis: Axis, key: str) -> None:
    # percentages for rates, thousands separators from 1,000 up, matplotlib's own choice of decimals below
    if key == "fill_rate":
        axis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    else:
        def tick(v: float, _pos: object) -> str:
            locs = axis.get_majorticklocs()
            step = float(np.min(np.diff(locs))) if len(locs) > 1 else abs(v) or 1.0
            decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
            return f"{v:,.{decimals}f}"
        axis.set_major_formatter(FuncFormatter(tick))


def store_load_figure(results: Sequence[SimulationResult]) -> Figure:
    """How evenly the work spread: the distribution of store utilisation as stepped cumulative curves (one per
    policy, no overlapping bars), and the sorted load curve.

    Examples
    --------
    >>> from pyomni.sim import preset, simulate
    >>> len(store_load_figure([simulate(preset("small", orders=50, stores=10, hours=24))]).axes)
    2
    """
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    cdf_ax, curve_ax = fig.subplots(1, 2)
    for colour, r in zip(_COLOURS, results, strict=False):
        load = r.store_load
        mask = np.array([k == "store" for k in load.column("kind").to_pylist()], dtype=bool) & \
            load.column("ships").to_numpy(zero_copy_only=False)
        util = np.sort(load.column("utilisation").to_numpy()[mask])
        if not len(util):
            continue
        share = np.arange(1, len(util) + 1) / len(util)
        median = float(np.median(util))
        cdf_ax.step(np.concatenate([[0.0], util]), np.concatenate([[0.0], share]), where="post", color=colour,
                    linewidth=1.8, label=f"{r.policy} (median {median:.2f}, idle {np.mean(util == 0):.0%})")
        curve_ax.plot(np.arange(1, len(util) + 1), util[::-1], color=colour, label=r.policy, linewidth=1.6)
    cdf_ax.set_xlim(0, 1.0)
    cdf_ax.set_ylim(0, 1.0)
    cdf_ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    cdf_ax.set_xlabel("utilisation: parcels on the busiest day / daily capacity (1 = full)")
    cdf_ax.set_ylabel("share of shipping stores at or below")
    cdf_ax.set_title("store utilisation (a curve further right = busier stores)")
    curve_ax.set_xlabel("stores, busiest first")
    curve_ax.set_ylabel("utilisation")
    curve_ax.set_ylim(0, 1.02)
    curve_ax.set_title("load curve (flat = evenly spread)")
    for ax in (cdf_ax, curve_ax):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return fig


class MapSource(Protocol):
    """What the maps read: a simulation's result or one side of a replay (:class:`pyomni.replay.ReplayOutcome`).

    ``shipments`` has ``picked_h`` (null: not picked, left off the map), ``distance_km`` and ``from_lat, from_lon,
    to_lat, to_lon``; ``store_load`` has ``location, kind, lat, lon, ships, parcels, utilisation``.
    """

    @property
    def policy(self) -> str: ...

    @property
    def scenario(self) -> Any: ...         # anything with a ``name``

    @property
    def shipments(self) -> pa.Table: ...

    @property
    def store_load(self) -> pa.Table: ...


def flow_map_figure(result: MapSource, *, flows: int = 30) -> Figure:
    """Where parcels ship from, on a map of China's provinces with its main cities.

    Locations are sized by parcels picked and coloured by utilisation (their
    busiest day against daily capacity; squares are warehouses); the
    ``flows`` largest province-to-province flows of picked parcels are drawn
    as arcs from where the parcels left (the parcel-weighted centre of the
    province's shipping locations) to where they went (the centre of the
    customers they reached), width by parcels. The title says what share of
    parcels stayed in their own province.

    Examples
    --------
    >>> from pyomni.sim import preset, simulate
    >>> flow_map_figure(simulate(preset("small", orders=50, stores=10, hours=24))).axes[0].get_title()[:20]
    'small · greedy: wher'
    """
    fig = Figure(figsize=(11, 8.2), layout="constrained")
    ax = fig.subplots()
    draw_basemap(ax)
    flow = _province_flows(result)
    inside = flow.inside / flow.total if flow.total else 0.0
    _draw_flows(ax, flow, flows)
    _draw_locations(ax, fig, result)
    ax.set_title(f"{result.scenario.name} · {result.policy}: where parcels ship from — {flow.total:,} parcels, "
                 f"{inside:.0%} within their province")
    return fig


def flow_difference_figure(result: MapSource, base: MapSource, *, min_parcels: int = 20) -> Figure:
    """What ``result``'s policy changed against ``base``'s, on the map: provinces coloured by the change in
    mean distance of the parcels delivered to their customers (only those with ``min_parcels`` or more in
    both runs), locations by the change in parcels picked (triangles up: more, down: fewer; size by how
    many).

    Examples
    --------
    >>> from pyomni.sim import preset, compare_policies
    >>> r = compare_policies(preset("small", orders=50, stores=10, hours=24), ["greedy"])[0]
    >>> flow_difference_figure(r, r).axes[0].get_title()[:16]
    'small · greedy v'
    """
    a, b = _province_flows(result), _province_flows(base)
    # a province with few parcels in either run swings on a handful of them: left uncoloured
    delta = {c: a.km_to[c] - b.km_to[c] for c in sorted(set(a.km_to) & set(b.km_to))
             if min(a.count_to[c], b.count_to[c]) >= min_parcels}
    span = max([abs(v) for v in delta.values()] + [1.0])
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-span, vmax=span)
    cmap = colormaps["RdBu_r"]
    fig = Figure(figsize=(11, 8.2), layout="constrained")
    ax = fig.subplots()
    draw_basemap(ax, province_fill={c: cmap(norm(v)) for c, v in delta.items()})
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, shrink=0.6, pad=0.01,
                 label=f"change in mean km to the province's customers\n(uncoloured: under {min_parcels} parcels)")
    load_a, load_b = result.store_load, base.store_load
    parcels_b = dict(zip(load_b.column("location").to_pylist(), load_b.column("parcels").to_pylist(), strict=True))
    ids = load_a.column("location").to_pylist()
    change = np.array([p - parcels_b.get(x, 0) for x, p in zip(ids, load_a.column("parcels").to_pylist(),
                                                                strict=True)], dtype=np.float64)
    lon, lat = load_a.column("lon").to_numpy(), load_a.column("lat").to_numpy()
    big = max(1.0, float(np.abs(change).max()))
    handles = []
    for sign, marker, colour, word in ((1, "^", "#e67e22", "more"), (-1, "v", "#6c3483", "fewer")):
        mask = np.sign(change) == sign
        if mask.any():
            ax.scatter(lon[mask], lat[mask], s=12 + 260 * np.sqrt(np.abs(change[mask]) / big), c=colour,
                       marker=marker, alpha=0.85, edgecolors="black", linewidths=0.4, zorder=2)
            handles.append(Line2D([], [], marker=marker, linestyle="", markerfacecolor=colour, markeredgecolor="black",
                                  markersize=8, label=f"picks {word} (up to {np.abs(change[mask]).max():,.0f})"))
    ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.9, title="locations", title_fontsize=8)
    ax.set_title(f"{result.scenario.name} · {result.policy} vs {base.policy}: mean km {b.mean_km:,.0f} → "
                 f"{a.mean_km:,.0f}, {int(np.abs(change).sum()) // 2:,} parcels moved between locations")
    return fig


@dataclass(frozen=True)
class _Flows:
    total: int                                   # picked parcels
    inside: int                                  # ... that stayed in their province
    pairs: dict[tuple[int, int], int]            # (from province, to province) -> parcels, across provinces
    origin: dict[int, tuple[float, float]]       # province -> parcel-weighted (lon, lat) of where parcels left
    target: dict[int, tuple[float, float]]       # province -> mean (lon, lat) of the customers they reached
    km_to: dict[int, float]                      # province -> mean km of the parcels delivered there
    count_to: dict[int, int]                     # province -> parcels delivered there
    mean_km: float


def _province_flows(result: MapSource) -> _Flows:
    ships = result.shipments
    picked = ~np.isnan(ships.column("picked_h").to_numpy(zero_copy_only=False))
    col = {c: ships.column(c).to_numpy()[picked] for c in ("from_lat", "from_lon", "to_lat", "to_lon")}
    km = ships.column("distance_km").to_numpy()[picked]
    src = nearest_province(col["from_lat"], col["from_lon"])
    dst = nearest_province(col["to_lat"], col["to_lon"])
    pairs: dict[tuple[int, int], int] = {}
    for f, t in zip(src.tolist(), dst.tolist(), strict=True):
        if f != t:
            pairs[(f, t)] = pairs.get((f, t), 0) + 1
    origin = {c: (float(col["from_lon"][src == c].mean()), float(col["from_lat"][src == c].mean()))
              for c in np.unique(src).tolist()}
    target = {c: (float(col["to_lon"][dst == c].mean()), float(col["to_lat"][dst == c].mean()))
              for c in np.unique(dst).tolist()}
    km_to = {c: float(km[dst == c].mean()) for c in np.unique(dst).tolist()}
    count_to = {c: int((dst == c).sum()) for c in np.unique(dst).tolist()}
    return _Flows(int(picked.sum()), int((src == dst).sum()), pairs, origin, target, km_to, count_to,
                  float(km.mean()) if len(km) else 0.0)


def _draw_flows(ax: Axes, flow: _Flows, top: int) -> None:
    biggest = sorted(flow.pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    if not biggest:
        return
    most = biggest[0][1]
    for (f, t), n in biggest:
        ax.add_patch(FancyArrowPatch(flow.origin[f], flow.target[t], connectionstyle="arc3,rad=0.18",
                                     arrowstyle="-|>,head_length=4,head_width=2.5", mutation_scale=1,
                                     linewidth=0.6 + 5.0 * n / most, color=_FLOW, alpha=0.6, zorder=1.5))
    handles = [Line2D([], [], color=_FLOW, alpha=0.6, linewidth=0.6 + 5.0 * v / most, label=f"{v:,.0f} parcels")
               for v in sorted({most, max(1, round(most / 4))}, reverse=True)]
    legend = ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.9,
                       title=f"largest {len(biggest)} flows between provinces", title_fontsize=8)
    ax.add_artist(legend)


def _draw_locations(ax: Axes, fig: Figure, result: MapSource) -> None:
    load = result.store_load
    kinds = np.array(load.column("kind").to_pylist(), dtype=object)
    parcels = load.column("parcels").to_numpy().astype(np.float64)
    util = load.column("utilisation").to_numpy()
    ships = load.column("ships").to_numpy(zero_copy_only=False)
    lon, lat = load.column("lon").to_numpy(), load.column("lat").to_numpy()
    most = max(1.0, float(parcels.max()))

    def size(n: np.ndarray | float) -> np.ndarray | float:
        return 6 + 260 * np.sqrt(np.asarray(n) / most)

    norm = Normalize(0.0, 1.0)
    mappable = None
    for kind, marker in (("store", "o"), ("warehouse", "s"), ("dark_store", "D")):
        mask = (kinds == kind) & ships
        if mask.any():
            mappable = ax.scatter(lon[mask], lat[mask], s=size(parcels[mask]), c=util[mask], cmap="YlOrRd",
                                  norm=norm, marker=marker, alpha=0.85, edgecolors="black" if kind != "store"
                                  else "#555555", linewidths=0.8 if kind != "store" else 0.4, zorder=2)
    closed = (kinds == "store") & ~ships
    handles = [Line2D([], [], marker="o", linestyle="", markerfacecolor="#888888", markeredgecolor="#555555",
                      markersize=math.sqrt(float(size(v))), label=f"{v:,.0f} parcels")
               for v in sorted({most, max(1.0, round(most / 4)), max(1.0, round(most / 20))}, reverse=True)]
    handles.append(Line2D([], [], marker="s", linestyle="", markerfacecolor="#888888", markeredgecolor="black",
                          markersize=7, label="warehouse"))
    if closed.any():
        ax.scatter(lon[closed], lat[closed], s=5, c="#555555", marker="x", linewidths=0.6, zorder=2)
        handles.append(Line2D([], [], marker="x", linestyle="", color="#555555", label="store, no ship-from-store"))
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9, labelspacing=1.1,
              title="locations (size = parcels picked)", title_fontsize=8)
    if mappable is not None:
        fig.colorbar(mappable, ax=ax, shrink=0.6, pad=0.01, label="utilisation (busiest day / daily capacity)")


def backlog_figure(results: Sequence[SimulationResult]) -> Figure:
    """Open orders over time per policy, with orders arriving and shipped per hour; each day's carrier
    cut-off, replenishment and the end of demand are marked.

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
        flow_ax.bar(series.column("hour").to_numpy(), series.column("arrived").to_numpy(), width=0.9,
                    align="edge", color="#cccccc", label="orders arriving")
    for colour, r in zip(_COLOURS, results, strict=False):
        hours = r.series.column("hour").to_numpy()
        backlog_ax.plot(hours, r.series.column("backlog").to_numpy(), color=colour, label=r.policy, linewidth=1.8)
        flow_ax.plot(hours + 0.5, r.series.column("shipped").to_numpy(), color=colour, label=f"shipped · {r.policy}")
    if results:
        _mark_schedule(backlog_ax, flow_ax, results[0].scenario)
    backlog_ax.set_ylabel("open orders")
    backlog_ax.set_title("backlog over time")
    flow_ax.set_ylabel("orders per hour")
    flow_ax.set_xlabel("simulated time (day and hour)")
    for ax in (backlog_ax, flow_ax):
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0))
        ax.grid(axis="y", alpha=0.3)
    return fig


def _mark_schedule(top: Axes, bottom: Axes, scenario) -> None:
    hours = scenario.hours
    for day in range(hours // 24 + 1):
        for hour, colour, text in ((scenario.cutoff_hour, "#8e44ad", f"{scenario.cutoff_hour:02d}:00 cut-off"),
                                   *((h, "#27ae60", f"{h:02d}:00 replenishment") for h in scenario.replenish_hours)):
            at = day * 24 + hour
            if at > hours:
                continue
            for ax in (top, bottom):
                ax.axvline(at, color=colour, linewidth=1.0, linestyle="--", alpha=0.8, zorder=0)
            top.annotate(text, (at, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                         textcoords="offset points", rotation=90, va="top", fontsize=7, color=colour)
    if scenario.demand_hours < hours:
        for ax in (top, bottom):
            ax.axvspan(scenario.demand_hours, hours, color="#f4f4f4", zorder=-1)
        top.annotate("no new orders", (scenario.demand_hours + 0.5, 0.5), xycoords=("data", "axes fraction"),
                     fontsize=8, color="#777777")
    bottom.set_xlim(0, hours)
    bottom.set_xticks(np.arange(0, hours + 1, 6))
    bottom.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"day {int(v) // 24 + 1}\n{int(v) % 24:02d}:00"))


def sweep_figure(rows: Sequence[dict], metrics: Sequence[tuple[str, str]] = (
        ("fill_rate", "fill rate"), ("cost_per_order", "cost per order"), ("hours_to_clear", "hours to clear"))
) -> Figure:
    """A sweep: one group per scenario, one mark per policy, each labelled with its value.

    ``rows`` are the sweep's table rows (``scenario`` label, ``policy`` and
    the metrics). Fill rate and cost are dots on an axis fitted to their
    spread (its start stated when it is not zero); hours to clear are bars
    from zero, and a run whose backlog never cleared draws a hatched bar up to
    its horizon labelled "not cleared" -- not a missing bar, which would read
    as zero hours.

    Examples
    --------
    >>> rows = [{"scenario": "a", "policy": "greedy", "fill_rate": 0.9, "cost_per_order": 3, "hours_to_clear": 30}]
    >>> len(sweep_figure(rows).axes)
    3
    """
    labels = list(dict.fromkeys(r["scenario"] for r in rows))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    fig = Figure(figsize=(max(8.0, 1.25 * len(labels) * max(1, len(policies)) ** 0.5 + 4), 3.3 * len(metrics)),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(metrics), 1, sharex=True))
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(policies))
    lookup = {(r["scenario"], r["policy"]): r for r in rows}
    for ax, (key, label) in zip(axes, metrics, strict=True):
        shown = []
        for j, (colour, policy) in enumerate(zip(_COLOURS, policies, strict=False)):
            at = x + j * width - 0.4 + width / 2
            for xi, scenario in zip(at.tolist(), labels, strict=True):
                row = lookup.get((scenario, policy))
                if row is None:
                    continue
                value = row.get(key)
                if key == "hours_to_clear":
                    if value is None:
                        horizon = float(row.get("horizon_hours") or row.get("hours") or 0.0)
                        ax.bar(xi, horizon, width * 0.92, color="white", edgecolor=colour, hatch="///", linewidth=1.2)
                        ax.annotate(f"not cleared in {horizon:.0f} h", (xi, horizon / 2), ha="center", va="center",
                                    rotation=90, fontsize=7.5, color="#a04000",
                                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0})
                        continue
                    ax.bar(xi, value, width * 0.92, color=colour)
                    ax.annotate(f"{value:.0f}", (xi, value), xytext=(0, 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=7)
                elif value is not None:
                    ax.scatter([xi], [value], color=colour, s=45, zorder=3)
                    ax.annotate(_metric_text(key, float(value)), (xi, value), xytext=(0, 6), textcoords="offset points",
                                ha="center", fontsize=7)
                    shown.append(float(value))
        if key == "hours_to_clear":
            ax.set_ylim(0, ax.get_ylim()[1] * 1.08)
        else:
            _fit_axis(ax, np.array(shown), key, vertical=True)
        ax.set_ylabel(f"{label}\n({_BETTER.get(key, '')})" if key in _BETTER else label)
        ax.grid(axis="y", alpha=0.3)
    handles: list[Artist] = [Line2D([], [], marker="s", linestyle="", color=c, markersize=9, label=p)
                             for c, p in zip(_COLOURS, policies, strict=False)]
    handles.append(Patch(facecolor="white", edgecolor="#555555", hatch="///",
                         label="backlog not cleared by the horizon"))
    axes[0].legend(handles=handles, fontsize=8, loc="best")
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
