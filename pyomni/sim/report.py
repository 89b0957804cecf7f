"""Write simulation results: metrics as JSON, tables as Parquet, and a self-contained HTML report.

Files written into the output directory:

* ``metrics.json`` -- the scenario, and per policy its metrics, unit
  accounting and optimiser calls;
* ``series.parquet`` (per hour), ``store_load.parquet`` (per location),
  ``orders.parquet`` (per order outcome), ``shipments.parquet`` (per parcel),
  each with a ``policy`` column;
* ``report.html`` -- one file with the PNG figures embedded as base64: the
  policy comparison, store load, a map of stores and flows per policy, and the
  backlog over time.

Examples
--------
>>> import tempfile
>>> from pyomni.sim import preset, simulate
>>> paths = write_report([simulate(preset("small", orders=50, stores=10, hours=24))], tempfile.mkdtemp())
>>> sorted(paths)[:3]
['html', 'metrics', 'orders']
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import Progress

from .. import errors
from .plots import backlog_figure, comparison_figure, figure_png, flow_map_figure, store_load_figure
from .results import SimulationResult

__all__ = ["write_report", "metrics_document", "render_html"]

#: Metrics shown in the HTML table and the CLI table, with their formats.
SUMMARY_METRICS = (
    ("fill_rate", "fill rate", "{:.1%}"),
    ("order_fill_rate", "orders filled", "{:.1%}"),
    ("split_rate", "parcels / order", "{:.3f}"),
    ("mean_km", "mean km", "{:.0f}"),
    ("p95_km", "p95 km", "{:.0f}"),
    ("total_cost", "total cost", "{:,.0f}"),
    ("cost_per_order", "cost / order", "{:.2f}"),
    ("fulfilment_cost_per_order", "fixed+distance / order", "{:.2f}"),
    ("hours_to_clear", "hours to clear", "{:.1f}"),
    ("mean_lead_time_h", "mean lead time h", "{:.1f}"),
    ("stockout_orders", "stock-out orders", "{:,}"),
    ("backlog_orders", "open at end", "{:,}"),
    ("warehouse_parcel_share", "from warehouses", "{:.1%}"),
    ("store_utilisation_p50", "store util. p50", "{:.2f}"),
    ("store_utilisation_p90", "store util. p90", "{:.2f}"),
    ("store_load_gini", "store load Gini", "{:.3f}"),
    ("optimiser_plan_share", "rounds on optimiser plan", "{:.0%}"),
    ("plan_cost_vs_greedy", "round cost vs greedy plan", "{:+.1%}"),
    ("max_gap", "worst gap to bound", "{:.2%}"),
    ("wall_time_s", "sim wall s", "{:.1f}"),
)


def format_metric(value: Any, fmt: str) -> str:
    """A metric for people: ``"-"`` when it does not exist.

    Examples
    --------
    >>> format_metric(0.987, "{:.1%}"), format_metric(None, "{:.1f}")
    ('98.7%', '-')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def metrics_document(results: Sequence[SimulationResult]) -> dict[str, Any]:
    """The JSON document of a comparison: scenario, and per policy metrics, stock accounting, solves.

    Examples
    --------
    >>> from pyomni.sim import preset, simulate
    >>> doc = metrics_document([simulate(preset("small", orders=50, stores=10, hours=24))])
    >>> list(doc["policies"])
    ['greedy']
    """
    _check_results(results)
    return {
        "scenario": results[0].scenario.as_dict(),
        "policies": {r.policy: {"metrics": r.metrics, "stock": r.stock, "solves": r.solves} for r in results},
    }


def write_report(results: Sequence[SimulationResult], out_dir: str | os.PathLike[str], *,
                 progress: bool | Progress = False, map_sample: int = 400) -> dict[str, Path]:
    """Write JSON, Parquet and HTML for ``results`` (one per policy, same scenario) into ``out_dir``.

    Parameters
    ----------
    results : sequence of SimulationResult
        Runs of the same scenario, one per policy.
    out_dir : path
        Created if missing; existing report files are overwritten.
    progress : bool or rich.progress.Progress
        Show a progress bar while figures are drawn.
    map_sample : int
        Parcels drawn as flow lines on each map.

    Returns
    -------
    dict of str to Path
        ``metrics``, ``series``, ``store_load``, ``orders``, ``shipments``, ``html``.

    Raises
    ------
    pyomni.errors.InvalidArgument
        No results, results of different scenarios, or a policy twice.
    """
    _check_results(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.json"}
    paths["metrics"].write_text(json.dumps(_json_ready(metrics_document(results)), indent=2, allow_nan=False))
    for name in ("series", "store_load", "orders", "shipments"):
        tables = [_with_policy(getattr(r, name), r.policy) for r in results]
        paths[name] = out / f"{name}.parquet"
        pq.write_table(pa.concat_tables(tables), paths[name])
    paths["html"] = out / "report.html"
    paths["html"].write_text(render_html(results, progress=progress, map_sample=map_sample), encoding="utf-8")
    return paths


def render_html(results: Sequence[SimulationResult], *, progress: bool | Progress = False,
                map_sample: int = 400) -> str:
    """The HTML report as a string, figures embedded as base64 PNGs.

    Examples
    --------
    >>> from pyomni.sim import preset, simulate
    >>> "data:image/png;base64," in render_html([simulate(preset("small", orders=50, stores=10, hours=24))])
    True
    """
    _check_results(results)
    scenario = results[0].scenario
    jobs: list[tuple[str, Any]] = [
        ("Policies compared", lambda: comparison_figure(results)),
        ("Backlog over time", lambda: backlog_figure(results)),
        ("Store load distribution", lambda: store_load_figure(results)),
    ]
    jobs += [(f"Map of stores and flows: {r.policy}", lambda r=r: flow_map_figure(r, sample=map_sample))
             for r in results]
    figures = []
    bar = Progress(transient=True) if progress is True else progress if isinstance(progress, Progress) else None
    if bar is not None and progress is True:
        bar.start()
    try:
        task = bar.add_task("drawing figures", total=len(jobs)) if bar is not None else None
        for title, draw in jobs:
            figures.append((title, base64.b64encode(figure_png(draw())).decode("ascii")))
            if bar is not None and task is not None:
                bar.advance(task)
    finally:
        if bar is not None and progress is True:
            bar.stop()

    head = "".join(f"<th>{html.escape(r.policy)}</th>" for r in results)
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td>"
        + "".join(f"<td>{html.escape(format_metric(r.metrics.get(key), fmt))}</td>" for r in results) + "</tr>"
        for key, label, fmt in SUMMARY_METRICS)
    params = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                     for k, v in scenario.as_dict().items() if k != "profile")
    images = "".join(f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" '
                     f'src="data:image/png;base64,{data}">' for title, data in figures)
    solves = "".join(_solve_rows(r) for r in results)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pyomni simulation: {html.escape(scenario.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1250px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 3px 9px; }}
td:not(:first-child) {{ text-align: right; }} img {{ max-width: 100%; }} .small {{ font-size: 85%; }}
</style></head><body>
<h1>Peak simulation: {html.escape(scenario.name)}</h1>
<p>{scenario.stores} stores ({scenario.shipping_stores} ship from store), {scenario.warehouses} warehouses,
{scenario.skus:,} SKUs, {scenario.orders:,} orders over {scenario.demand_hours} h, horizon {scenario.hours} h,
seed {scenario.seed}. Cancelled orders are left out of fill rates; costs are the engine's cost model
(<code>pyomni.policy</code>) as priced at decision time.</p>
<h2>Metrics</h2><table><tr><th>metric</th>{head}</tr>{rows}</table>
{images}
<h2>Optimiser calls</h2><table class="small"><tr><th>policy</th><th>hour</th><th>backlog</th><th>placed</th>
<th>status</th><th>objective</th><th>best bound</th><th>gap</th><th>seconds</th></tr>{solves}</table>
<h2>Scenario</h2><table class="small">{params}</table>
<p class="small">City data: GeoNames (CC BY 4.0); prefectures: cpca (MIT).</p>
</body></html>
"""


def _solve_rows(result: SimulationResult) -> str:
    return "".join(
        f"<tr><td>{html.escape(result.policy)}</td><td>{s['hour']:.2f}</td><td>{s['backlog']}</td>"
        f"<td>{s['placed']}</td><td>{html.escape(str(s['status']))}</td><td>{s['objective']:.1f}</td>"
        f"<td>{s['best_bound']:.1f}</td><td>{format_metric(s['gap'], '{:.3%}')}</td>"
        f"<td>{s['wall_time_s']:.2f}</td></tr>" for s in result.solves)


def _with_policy(table: pa.Table, policy: str) -> pa.Table:
    return table.add_column(0, "policy", pa.array([policy] * table.num_rows, pa.string()))


def _json_ready(value: Any) -> Any:
    """Plain JSON values: NumPy scalars unwrapped, NaN and infinities (a gap with no bound) as null."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _check_results(results: Sequence[SimulationResult]) -> None:
    if not results:
        raise errors.InvalidArgument("no results to report", field="results")
    scenario = results[0].scenario
    if any(r.scenario != scenario for r in results):
        raise errors.InvalidArgument("results come from different scenarios", field="results")
    policies = [r.policy for r in results]
    if len(set(policies)) != len(policies):
        raise errors.InvalidArgument(f"a policy appears twice: {policies}", field="results")
