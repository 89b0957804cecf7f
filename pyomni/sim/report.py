"""Write simulation results: metrics as JSON, tables as Parquet, and a self-contained HTML report.

Files written into the output directory:

* ``metrics.json`` -- the scenario, and per policy its metrics, unit
  accounting and optimiser calls;
* ``series.parquet`` (per hour), ``store_load.parquet`` (per location),
  ``orders.parquet`` (per order outcome), ``shipments.parquet`` (per parcel,
  re-routed ones included), ``settlement.parquet`` (per party: who earned
  what under the scenario's attribution rule), each with a ``policy`` column;
* ``report.html`` -- one file with the PNG figures embedded as base64: the
  policy comparison, store load, a map of stores and flows per policy, the
  backlog over time, store operations (re-routes, answer times) and the
  settlement by store.

Examples
--------
>>> import tempfile
>>> from pyomni.sim import preset, simulate
>>> paths = write_report([simulate(preset("small", orders=50, stores=10, hours=24))], tempfile.mkdtemp())
>>> sorted(paths)
['html', 'metrics', 'orders', 'series', 'settlement', 'shipments', 'store_load']
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import Progress

from .. import errors
from .plots import (
    answer_time_figure,
    backlog_figure,
    comparison_figure,
    figure_png,
    flow_difference_figure,
    flow_map_figure,
    settlement_figure,
    store_load_figure,
)
from .results import SimulationResult

__all__ = ["write_report", "metrics_document", "render_html", "format_metric", "format_yuan", "SUMMARY_METRICS",
           "STORE_METRICS", "SETTLEMENT_TOP"]


def format_yuan(cents: int) -> str:
    """Integer cents as yuan with thousands separators, exactly: ``-¥16,167.09``.

    Examples
    --------
    >>> format_yuan(123456789), format_yuan(-1616709), format_yuan(5)
    ('¥1,234,567.89', '-¥16,167.09', '¥0.05')
    """
    yuan, fen = divmod(abs(int(cents)), 100)
    return f"{'-' if cents < 0 else ''}¥{yuan:,}.{fen:02d}"


Format = str | Callable[[Any], str]

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
    ("backorder_expired_orders", "  no plan in time", "{:,}"),
    ("backlog_orders", "open at end", "{:,}"),
    ("warehouse_parcel_share", "from warehouses", "{:.1%}"),
    ("store_utilisation_p50", "store util. p50", "{:.2f}"),
    ("store_utilisation_p90", "store util. p90", "{:.2f}"),
    ("store_load_gini", "store load Gini", "{:.3f}"),
    ("optimiser_plan_share", "rounds on optimiser plan", "{:.0%}"),
    ("plan_cost_vs_greedy", "round cost vs greedy plan", "{:+.1%}"),
    ("max_gap", "worst gap to bound", "{:.2%}"),
    ("reroutes_per_100_orders", "re-routes / 100 orders", "{:.1f}"),
    ("answer_p95_min", "store answer p95 min", "{:.1f}"),
    ("settlement_total_cents", "settled (price - coupons)", format_yuan),
    ("wall_time_s", "sim wall s", "{:.1f}"),
)

#: The store-operations table: how often parcels went elsewhere, and how fast stores answered.
STORE_METRICS: tuple[tuple[str, str, Format], ...] = (
    ("reroutes_per_100_orders", "re-routes / 100 orders", "{:.1f}"),
    ("orders_rerouted_share", "orders re-routed", "{:.1%}"),
    ("rejected_share", "store parcels rejected", "{:.1%}"),
    ("timed_out_share", "store parcels timed out", "{:.1%}"),
    ("answer_p50_min", "store answer p50 min", "{:.1f}"),
    ("answer_p95_min", "store answer p95 min", "{:.1f}"),
    ("late_share", "accepted parcels picked late", "{:.1%}"),
    ("refunded_orders", "orders refunded (no location left)", "{:,}"),
)
#: Stores listed by name in the settlement table (the others are summed in one row).
SETTLEMENT_TOP = 15


#: What a metric that does not exist means, where "-" (not applicable) would mislead.
MISSING_TEXT = {"hours_to_clear": "not cleared"}


def format_metric(value: Any, fmt: Format, missing: str = "-") -> str:
    """A metric for people: ``missing`` when it does not exist; ``fmt`` a format string or a function.

    Examples
    --------
    >>> format_metric(0.987, "{:.1%}"), format_metric(None, "{:.1f}"), format_metric(150, format_yuan)
    ('98.7%', '-', '¥1.50')
    >>> format_metric(None, "{:.1f}", MISSING_TEXT["hours_to_clear"])
    'not cleared'
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return fmt(value) if callable(fmt) else fmt.format(value)


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
                 progress: bool | Progress = False, map_flows: int = 30) -> dict[str, Path]:
    """Write JSON, Parquet and HTML for ``results`` (one per policy, same scenario) into ``out_dir``.

    Parameters
    ----------
    results : sequence of SimulationResult
        Runs of the same scenario, one per policy.
    out_dir : path
        Created if missing; existing report files are overwritten.
    progress : bool or rich.progress.Progress
        Show a progress bar while figures are drawn.
    map_flows : int
        Province-to-province flows drawn on each map (the largest).

    Returns
    -------
    dict of str to Path
        ``metrics``, ``series``, ``store_load``, ``orders``, ``shipments``, ``settlement``, ``html``.

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
    for name in ("series", "store_load", "orders", "shipments", "settlement"):
        tables = [_with_policy(getattr(r, name), r.policy) for r in results]
        paths[name] = out / f"{name}.parquet"
        pq.write_table(pa.concat_tables(tables), paths[name])
    paths["html"] = out / "report.html"
    paths["html"].write_text(render_html(results, progress=progress, map_flows=map_flows), encoding="utf-8")
    return paths


def render_html(results: Sequence[SimulationResult], *, progress: bool | Progress = False,
                map_flows: int = 30) -> str:
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
    jobs += [(f"Map of stores and flows: {r.policy}", lambda r=r: flow_map_figure(r, flows=map_flows))
             for r in results]
    jobs += [(f"Map of the difference: {r.policy} against {results[0].policy}",
              lambda r=r: flow_difference_figure(r, results[0])) for r in results[1:]]
    store_jobs: list[tuple[str, Any]] = [
        ("Answer times and re-routes", lambda: answer_time_figure(results)),
        ("Net settlement per store", lambda: settlement_figure(results)),
    ]
    figures = []
    bar = Progress(transient=True) if progress is True else progress if isinstance(progress, Progress) else None
    if bar is not None and progress is True:
        bar.start()
    try:
        task = bar.add_task("drawing figures", total=len(jobs) + len(store_jobs)) if bar is not None else None
        for title, draw in jobs + store_jobs:
            figures.append((title, base64.b64encode(figure_png(draw())).decode("ascii")))
            if bar is not None and task is not None:
                bar.advance(task)
    finally:
        if bar is not None and progress is True:
            bar.stop()

    def image(title: str, data: str, level: int = 2) -> str:
        return (f'<h{level}>{html.escape(title)}</h{level}><img alt="{html.escape(title)}" '
                f'src="data:image/png;base64,{data}">')

    head = "".join(f"<th>{html.escape(r.policy)}</th>" for r in results)
    rows = _metric_rows(results, SUMMARY_METRICS)
    params = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(scenario_value(k, v))}</td></tr>"
                     for k, v in scenario.as_dict().items() if k != "profile")
    images = "".join(image(title, data) for title, data in figures[:len(jobs)])
    answer_image, settlement_image = (image(title, data, 3) for title, data in figures[len(jobs):])
    store_rows = _metric_rows(results, STORE_METRICS)
    settlement_tables = "".join(_settlement_table(r, len(results) > 1) for r in results)
    rule = html.escape(str(results[0].metrics.get("attribution_rule", scenario.attribution)))
    solves = "".join(_solve_rows(r) for r in results)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pyomni simulation: {html.escape(scenario.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1250px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 3px 9px; }}
td:not(:first-child) {{ text-align: right; }} img {{ max-width: 100%; }} .small {{ font-size: 85%; }}
tr.total td {{ font-weight: 600; }}
</style></head><body>
<h1>Peak simulation: {html.escape(scenario.name)}</h1>
<p>{scenario.stores} stores ({scenario.shipping_stores} ship from store), {scenario.warehouses} warehouses,
{scenario.skus:,} SKUs, {scenario.orders:,} orders over {scenario.demand_hours} h, horizon {scenario.hours} h,
seed {scenario.seed}. Cancelled orders are left out of fill rates; costs are the engine's cost model
(<code>pyomni.policy</code>) as priced when each parcel was routed.</p>
<h2>Metrics</h2><table><tr><th>metric</th>{head}</tr>{rows}</table>
{images}
<h2>Store operations</h2>
<p>Stores answer a new parcel after a delay drawn per store (median {scenario.answer_minutes:g} min of opening
hours); {scenario.reject_share:.0%} are rejected and {scenario.no_answer_share:.0%} never answered, timed out by the
engine's {scenario.answer_limit_minutes:g}-minute answer limit; either way the engine re-routes the lines away from
that store, and when no location can take them the customer is refunded. Warehouses answer through their system,
at once.</p>
<table><tr><th>metric</th>{head}</tr>{store_rows}</table>
{answer_image}
<h2>Settlement by store</h2>
<p>Who earned what under <code>{rule}</code>, from the engine's settlement of every shipped line (amounts in yuan;
coupons are borne as the rule says; no returns in the simulation). The top {SETTLEMENT_TOP} stores by net are
listed, the other stores summed; the parties' nets add up to what the customers paid.</p>
{settlement_tables}
{settlement_image}
<h2>Optimiser calls</h2>
<p>Each round plans the waiting backlog with the optimiser and with the real-time router, on the optimiser's
cost basis (the cost model at the round's snapshot, plus the unfilled penalty), and applies the cheaper. The
bound is valid for the whole round's candidate problem (each order's candidate locations, all the stock and
capacity): the gap is the applied plan's distance above it.</p>
<table class="small"><tr><th>policy</th><th>hour</th><th>backlog</th><th>placed</th>
<th>status</th><th>optimiser objective</th><th>plan applied</th><th>its cost</th><th>bound</th><th>gap</th>
<th>bound from</th><th>seconds</th></tr>{solves}</table>
<h2>Scenario</h2><table class="small">{params}</table>
<p class="small">City data: GeoNames (CC BY 4.0); prefectures: cpca (MIT). Map outlines: Natural Earth (public
domain).</p>
</body></html>
"""


#: What a scenario field left at ``None`` means, in words (the report never prints "None").
_SCENARIO_DEFAULTS = {
    "ship_from_store": "every store",
    "capacity": "the demo network's (40-300 shipments a day per store)",
    "safety": "the demo's (1 unit where a store cell holds 3 or more)",
}


def scenario_value(field: str, value: Any) -> str:
    """A scenario field's value as the report prints it: words for a default left at ``None``, lists
    without brackets.

    >>> scenario_value("capacity", None)
    "the demo network's (40-300 shipments a day per store)"
    >>> scenario_value("replenish_hours", (6, 14)), scenario_value("store_hours", (8, 23))
    ('6, 14', '8-23')
    """
    if value is None:
        return _SCENARIO_DEFAULTS.get(field, "not set")
    if field == "store_hours":
        return f"{value[0]}-{value[1]}"
    if isinstance(value, (tuple, list)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _metric_rows(results: Sequence[SimulationResult], metrics: Sequence[tuple[str, str, Format]]) -> str:
    return "".join(
        f"<tr><td>{html.escape(label)}</td>"
        + "".join(f"<td>{html.escape(format_metric(r.metrics.get(key), fmt, MISSING_TEXT.get(key, '-')))}</td>"
                  for r in results) + "</tr>"
        for key, label, fmt in metrics)


def _settlement_table(result: SimulationResult, titled: bool) -> str:
    """The top stores by net, every other party (warehouses, HQ, channels), the rest of the stores, the total."""
    table = result.settlement
    columns = ("revenue_cents", "fee_cents", "coupon_cents", "returns_cents", "net_cents")
    data = {c: table.column(c).to_pylist() for c in ("party", "kind", "city", *columns, "sales")}
    stores = [i for i, k in enumerate(data["kind"]) if k == "store"]
    shown = stores[:SETTLEMENT_TOP] + [i for i, k in enumerate(data["kind"]) if k != "store"]
    rest = stores[SETTLEMENT_TOP:]

    def row(cells: Sequence[str], amounts: Sequence[int], sales: int | None, css: str = "") -> str:
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        money = "".join(f"<td>{html.escape(format_yuan(a))}</td>" for a in amounts)
        return f'<tr{css}>{tds}{money}<td>{"" if sales is None else f"{sales:,}"}</td></tr>'

    body = "".join(row((data["party"][i], data["city"][i], data["kind"][i]), [data[c][i] for c in columns],
                       data["sales"][i]) for i in shown)
    if rest:
        body += row((f"{len(rest)} other stores", "", "store"), [sum(data[c][i] for i in rest) for c in columns],
                    sum(data["sales"][i] for i in rest))
    body += row(("all parties", "", ""), [sum(data[c]) for c in columns], None, ' class="total"')
    title = f"<h3>{html.escape(result.policy)}</h3>" if titled else ""
    return (f'{title}<table class="small"><tr><th>party</th><th>city</th><th>kind</th><th>revenue</th><th>fees</th>'
            f"<th>coupons</th><th>returns</th><th>net</th><th>lines credited</th></tr>{body}</table>")


def _solve_rows(result: SimulationResult) -> str:
    return "".join(
        f"<tr><td>{html.escape(result.policy)}</td><td>{s['hour']:.2f}</td><td>{s['backlog']}</td>"
        f"<td>{s['placed']}</td><td>{html.escape(str(s['status']))}</td><td>{s['objective']:,.1f}</td>"
        f"<td>{html.escape(str(s.get('plan', '')))}</td><td>{s.get('applied_objective', s['objective']):,.1f}</td>"
        f"<td>{s['best_bound']:,.1f}</td><td>{format_metric(s.get('applied_gap'), '{:.2%}')}</td>"
        f"<td class=\"small\">{html.escape(_short_scope(s.get('bound_scope', '')))}</td>"
        f"<td>{s['wall_time_s']:.2f}</td></tr>" for s in result.solves)


def _short_scope(scope: str) -> str:
    """The bound's relaxation, without the candidate-problem preamble: "LP relaxation of the whole", ..."""
    inner = scope[scope.find("(") + 1:scope.rfind(")")] if "(" in scope else scope
    return inner.split(";")[0].split(",")[0] if inner else "-"


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
