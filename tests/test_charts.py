"""The simulation's charts and maps say what they show: fitted axes that state their start, not-cleared runs
drawn as such, the schedule marked on time axes, and maps on the packaged basemap with flows that add up."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.patches import FancyArrowPatch

from pyomni.demo import load_cities
from pyomni.sim import compare_policies, preset
from pyomni.sim.basemap import load_basemap, nearest_province, province_of
from pyomni.sim.plots import (
    _province_flows,
    backlog_figure,
    comparison_figure,
    flow_difference_figure,
    flow_map_figure,
    store_load_figure,
    sweep_figure,
)


@pytest.fixture(scope="module")
def results():
    return compare_policies(preset("small", stores=15, orders=300, hours=30, time_limit_s=1.0),
                            ["greedy", "micro_batch"])


def test_the_basemap_is_small_and_puts_cities_in_their_provinces():
    from importlib.resources import files
    assert files("pyomni.data").joinpath("cn_basemap.json").stat().st_size <= 1_000_000
    b = load_basemap()
    assert len(b.provinces) == 31 and len({p.code for p in b.provinces}) == 31
    # the 150 largest cities (their own prefecture seats, mostly: the table's codes are the nearest seat's, so
    # smaller towns near a border can carry the neighbour's, e.g. Chongqing's outer districts Sichuan's)
    cities = load_cities().slice(0, 150)
    lat, lon = cities.column("latitude").to_numpy(), cities.column("longitude").to_numpy()
    code = cities.column("province_code").to_numpy()
    found = province_of(lat, lon)
    assert (found == 0).sum() <= 3                       # islands and capes just off the simplified coast
    assert (found[found != 0] == code[found != 0]).mean() > 0.98
    near = nearest_province(lat, lon)
    assert (near != 0).all() and (near[found == 0] == code[found == 0]).all()


def test_comparison_axes_show_the_spread_and_say_where_they_start(results):
    fig = comparison_figure(results)
    fill = fig.axes[0]
    assert fill.get_title().startswith("fill rate (higher is better)")
    values = [r.metrics["fill_rate"] for r in results]
    left, right = fill.get_xlim()
    assert 0 < left < min(values) and max(values) < right <= 1.0 + 0.02
    assert fill.get_xlabel().startswith("axis starts at ") and fill.get_xlabel().endswith(", not 0")
    texts = [t.get_text() for t in fill.texts]
    assert f"{values[0]:.2%}" in texts and any("pp vs greedy" in t for t in texts)
    # a run that never cleared is a hollow dot at the horizon, labelled, not a missing one
    stuck = dataclasses.replace(results[1], metrics={**results[1].metrics, "hours_to_clear": None})
    hours = comparison_figure([results[0], stuck]).axes[5]
    assert any(t.get_text().startswith("not cleared (> 30 h)") for t in hours.texts)
    dots = [c for c in hours.collections if len(c.get_offsets())]
    assert tuple(dots[1].get_facecolor()[0]) == (1.0, 1.0, 1.0, 1.0)
    assert dots[1].get_offsets()[0][0] == pytest.approx(30.0)


def test_the_sweep_draws_a_backlog_that_never_cleared_as_a_hatched_bar():
    rows = [{"scenario": "a", "policy": "greedy", "fill_rate": 0.987, "cost_per_order": 3.0, "hours_to_clear": 41.0,
             "horizon_hours": 60},
            {"scenario": "b", "policy": "greedy", "fill_rate": 0.997, "cost_per_order": 2.5, "hours_to_clear": None,
             "horizon_hours": 60}]
    fill, cost, hours = sweep_figure(rows).axes
    bottom, top = fill.get_ylim()
    assert 0.9 < bottom < 0.987 and top <= 1.0 + 0.01                  # 98.7 % and 99.7 % look different
    bars = [p for p in hours.patches if p.get_height() > 0]
    assert [round(b.get_height()) for b in bars] == [41, 60]
    assert bars[0].get_hatch() is None and bars[1].get_hatch() == "///"
    assert any(t.get_text() == "not cleared in 60 h" for t in hours.texts)


def test_time_axes_mark_the_cut_off_replenishment_and_the_end_of_demand(results):
    top, bottom = backlog_figure(results).axes
    s = results[0].scenario
    marked = sorted({round(line.get_xdata()[0], 6) for line in top.get_lines() if line.get_linestyle() == "--"})
    expected = sorted({float(d * 24 + h) for d in range(s.hours // 24 + 1)
                       for h in (s.cutoff_hour, *s.replenish_hours) if d * 24 + h <= s.hours})
    assert marked == expected
    labels = {t.get_text() for t in top.texts}
    assert f"{s.cutoff_hour:02d}:00 cut-off" in labels and "no new orders" in labels
    assert bottom.get_xticklabels()[1].get_text() == "day 1\n06:00"


def test_utilisation_distributions_are_curves_not_overlapping_bars(results):
    cdf, curve = store_load_figure(results).axes
    assert not cdf.patches and len(cdf.get_lines()) == len(results)
    for line in cdf.get_lines():
        y = line.get_ydata()
        assert y[-1] == pytest.approx(1.0) and np.all(np.diff(y) >= 0)


def test_the_map_is_drawn_on_the_basemap_with_flows_that_add_up(results):
    r = results[0]
    fig = flow_map_figure(r, flows=10)
    ax = fig.axes[0]
    polys = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert sum(len(c.get_paths()) for c in polys) >= 31                       # provinces and neighbours
    flow = _province_flows(r)
    picked = int(np.isfinite(r.shipments.column("picked_h").to_numpy(zero_copy_only=False)).sum())
    assert flow.total == picked == flow.inside + sum(flow.pairs.values())
    arcs = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arcs) == min(10, len(flow.pairs))
    widths = sorted((p.get_linewidth() for p in arcs), reverse=True)
    assert widths[0] == pytest.approx(5.6)                                    # the largest flow is the widest
    assert f"{flow.inside / flow.total:.0%} within their province" in ax.get_title()
    assert fig.axes[1].get_ylabel().startswith("utilisation")                # the colour key


def test_the_difference_map_shows_what_moved(results):
    a, b = results[1], results[0]
    fig = flow_difference_figure(a, b, min_parcels=1)
    ax = fig.axes[0]
    assert ax.get_title().startswith(f"{a.scenario.name} · {a.policy} vs {b.policy}")
    moved = dict(zip(a.store_load.column("location").to_pylist(), a.store_load.column("parcels").to_pylist(),
                     strict=True))
    before = dict(zip(b.store_load.column("location").to_pylist(), b.store_load.column("parcels").to_pylist(),
                      strict=True))
    changed = sum(1 for k in moved if moved[k] != before.get(k, 0))
    marks = sum(len(c.get_offsets()) for c in ax.collections if not isinstance(c, PolyCollection))
    cities = len([t for t in ax.texts])
    assert marks - cities == changed                     # one triangle per location whose load changed
    same = flow_difference_figure(b, b)
    assert "0 parcels moved" in same.axes[0].get_title()
