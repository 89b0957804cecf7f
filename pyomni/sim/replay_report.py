"""The report of a replay (:func:`pyomni.replay.replay`): what happened and the what-if, side by side.

:func:`write_replay_report` writes ``metrics.json``, ``orders.parquet`` and
``shipments.parquet`` (both sides, a ``side`` column first) and
``report.html``: the metrics table, the commands the what-if could not follow,
the map of each side (the simulation's maps: provinces, stores by parcels and
utilisation, province-to-province flows) and the difference map.

Examples
--------
>>> REPLAY_METRICS[0][:2]
('orders', 'orders in the window')
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..replay import ReplayResult
from .plots import figure_png, flow_difference_figure, flow_map_figure
from .report import Format, format_metric

__all__ = ["REPLAY_METRICS", "write_replay_report", "render_replay_html"]

#: The metrics of a replay's table: key, label, format.
REPLAY_METRICS: tuple[tuple[str, str, Format], ...] = (
    ("orders", "orders in the window", "{:,}"),
    ("filled_orders", "orders filled", "{:,}"),
    ("order_fill_rate", "order fill rate", "{:.2%}"),
    ("split_rate", "parcels / order", "{:.3f}"),
    ("mean_km", "mean km", "{:,.0f}"),
    ("p95_km", "p95 km", "{:,.0f}"),
    ("fulfilment_cost", "fulfilment cost (same rates)", "{:,.0f}"),
    ("fulfilment_cost_per_order", "fulfilment cost / order", "{:.2f}"),
    ("total_cost", "cost (each side's own model)", "{:,.0f}"),
    ("warehouse_parcel_share", "from warehouses", "{:.1%}"),
    ("stores_used", "stores shipping", "{:,}"),
    ("confirmed_orders", "confirmed at the end", "{:,}"),
    ("released_orders", "released", "{:,}"),
    ("expired_orders", "expired", "{:,}"),
    ("held_at_end", "still held", "{:,}"),
)


def write_replay_report(result: ReplayResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the replay's files into ``out_dir`` (created if missing); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sides = (result.recorded, result.what_if)
    paths = {"metrics": out / "metrics.json", "orders": out / "orders.parquet",
             "shipments": out / "shipments.parquet", "html": out / "report.html"}
    doc = {"window": result.window, "skipped": result.skipped, "refused": result.refused,
           "wall_time_s": result.wall_time_s, "sides": {s.policy: s.metrics for s in sides}}
    paths["metrics"].write_text(json.dumps(doc, indent=2, default=float))
    for name in ("orders", "shipments"):
        tables = [getattr(s, name) for s in sides]
        pq.write_table(pa.concat_tables([t.add_column(0, "side", pa.array([s.policy] * t.num_rows, pa.string()))
                                         for s, t in zip(sides, tables, strict=True)]), paths[name])
    paths["html"].write_text(render_replay_html(result), encoding="utf-8")
    return paths


def render_replay_html(result: ReplayResult) -> str:
    """The replay's HTML page, figures embedded as PNG."""
    sides = (result.recorded, result.what_if)
    figures = [(f"Map of stores and flows: {s.policy}", flow_map_figure(s)) for s in sides]
    figures.append((f"Map of the difference: {sides[1].policy} against {sides[0].policy}",
                    flow_difference_figure(sides[1], sides[0])))
    images = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" '
        f'src="data:image/png;base64,{base64.b64encode(figure_png(fig)).decode("ascii")}">' for title, fig in figures)
    head = "".join(f"<th>{html.escape(s.policy)}</th>" for s in sides)
    rows = "".join(f"<tr><td>{html.escape(label)}</td>" + "".join(
        f"<td>{html.escape(format_metric(s.metrics.get(key), fmt))}</td>" for s in sides) + "</tr>"
        for key, label, fmt in REPLAY_METRICS)
    followed = _counts(result.skipped, "no what-if reservation or shipment to apply it to") + _counts(
        result.refused, "refused by the what-if state")
    w = result.window
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pyomni replay: {html.escape(sides[1].policy)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1250px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 3px 9px; }}
td:not(:first-child) {{ text-align: right; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Replay of the recorded order stream</h1>
<p>{w['records']:,} journal records (LSN {w['first_lsn']:,}-{w['last_lsn']:,}, {w['orders']:,} orders) over
{(w['end'] - w['start']) / 3600:.1f} h, from the state the engine had when the window opened (snapshot at record
{w['snapshot_lsn']:,} plus the records after it). <b>recorded</b> is what the engine decided; the what-if decided
every order again with its changes, followed by what the order system and the stores did next.</p>
<h2>Metrics</h2><table><tr><th>metric</th>{head}</tr>{rows}</table>
<h2>What the what-if could not follow</h2>
<table><tr><th>command</th><th>count</th><th>why</th></tr>{followed or '<tr><td colspan="3">nothing</td></tr>'}</table>
{images}
<p>Map outlines: Natural Earth (public domain); cities: GeoNames (CC BY 4.0). Replayed in
{result.wall_time_s:.1f} s.</p>
</body></html>
"""


def _counts(counts: dict[str, Any], why: str) -> str:
    return "".join(f"<tr><td>{html.escape(k)}</td><td>{v:,}</td><td>{html.escape(why)}</td></tr>"
                   for k, v in sorted(counts.items()))
