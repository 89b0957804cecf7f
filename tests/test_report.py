"""Simulation reports and the ``simulate`` / ``sweep`` commands, end to end on tiny scenarios."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from matplotlib.image import imread

from pyomni import errors
from pyomni.cli import main
from pyomni.sim import preset, report, simulate
from pyomni.sim.plots import answer_time_figure, settlement_figure
from pyomni.sim.report import format_yuan, metrics_document, write_report
from pyomni.sim.sweep import parse_grid, run_sweep

TINY_ARGS = ["--preset", "small", "--stores", "15", "--orders", "250", "--hours", "30", "--quiet"]


@pytest.fixture(scope="module")
def result():
    return simulate(preset("small", stores=15, orders=300, hours=30), "greedy")


def _run(argv: list[str]) -> int:
    # the installed ``pyomni`` command's entry point, in process
    return main(argv)


def test_report_files_are_written_and_readable(result, tmp_path):
    paths = write_report([result], tmp_path / "out")
    assert set(paths) == {"metrics", "series", "store_load", "orders", "shipments", "settlement", "html"}
    for path in paths.values():
        assert path.exists() and path.stat().st_size > 0
    doc = json.loads(paths["metrics"].read_text())
    assert doc["scenario"]["stores"] == 15
    assert doc["policies"]["greedy"]["metrics"]["orders"] == 300
    assert doc["policies"]["greedy"]["stock"] == result.stock
    orders = pq.read_table(paths["orders"])
    assert orders.num_rows == 300 and orders.column("policy").unique().to_pylist() == ["greedy"]
    series = pq.read_table(paths["series"])
    assert series.num_rows == 30
    assert pq.read_table(paths["store_load"]).num_rows == 15 + result.scenario.warehouses
    settlement = pq.read_table(paths["settlement"])
    assert settlement.column("policy").unique().to_pylist() == ["greedy"]
    assert sum(settlement.column("net_cents").to_pylist()) == doc["policies"]["greedy"]["metrics"][
        "settlement_total_cents"] > 0
    shipments = pq.read_table(paths["shipments"])
    assert {"shipment_id", "replaces", "answer_min", "outcome", "reject_reason", "final_location"} <= set(
        shipments.column_names)


def test_html_embeds_every_figure(result, tmp_path):
    html = write_report([result], tmp_path)["html"].read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 6  # comparison, backlog, store load, one map per policy, answer times, settlement
    for data in images:
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = imread(io.BytesIO(png))
        assert pixels.shape[0] > 300 and pixels.shape[1] > 500 and pixels[..., :3].std() > 0.05  # drawn, not blank
    for title in ("Policies compared", "Backlog over time", "Store load distribution", "Map of stores and flows",
                  "Store operations", "Answer times and re-routes", "Settlement by store", "Net settlement per store"):
        assert title in html
    assert f"{result.metrics['fill_rate']:.1%}" in html


@pytest.fixture(scope="module")
def two_policies():
    # two policies on one world: a map each and a difference map. On a 26-hour horizon the backlog of the
    # last evening is still open, so hours to clear do not exist
    from pyomni.sim import compare_policies
    return compare_policies(preset("small", stores=15, orders=300, hours=26, time_limit_s=1.0),
                            ["greedy", "micro_batch"])


def test_every_report_section_has_its_figure_drawn(two_policies, tmp_path):
    html = write_report(two_policies, tmp_path)["html"].read_text()
    assert "None" not in html                                    # no "None" in any table
    assert "not cleared" in html                                 # hours to clear of a backlog that never cleared
    figures = re.findall(r'<h([23])>([^<]*)</h\1><img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"',
                         html)
    titles = [t for _, t, _, _ in figures]
    assert titles == ["Policies compared", "Backlog over time", "Store load distribution",
                      "Map of stores and flows: greedy", "Map of stores and flows: micro_batch",
                      "Map of the difference: micro_batch against greedy", "Answer times and re-routes",
                      "Net settlement per store"]
    for _, title, alt, data in figures:
        assert alt == title
        pixels = imread(io.BytesIO(base64.b64decode(data)))
        assert pixels.shape[0] > 300 and pixels.shape[1] > 500 and pixels[..., :3].std() > 0.05, title


def test_store_operations_and_settlement_sections(result, tmp_path, monkeypatch):
    top = 5                         # fewer than the scenario's 15 stores, so the others are summed in one row
    monkeypatch.setattr(report, "SETTLEMENT_TOP", top)
    html = write_report([result], tmp_path)["html"].read_text()
    ops = html[html.index("<h2>Store operations"):html.index("<h2>Settlement by store")]
    m = result.metrics
    for label, value in (("re-routes / 100 orders", f"{m['reroutes_per_100_orders']:.1f}"),
                         ("store parcels rejected", f"{m['rejected_share']:.1%}"),
                         ("store parcels timed out", f"{m['timed_out_share']:.1%}"),
                         ("store answer p50 min", f"{m['answer_p50_min']:.1f}"),
                         ("store answer p95 min", f"{m['answer_p95_min']:.1f}")):
        assert re.search(rf"<td>{re.escape(label)}</td><td>{re.escape(value)}</td>", ops), label
    money = html[html.index("<h2>Settlement by store"):html.index("<h2>Optimiser calls")]
    rows = re.findall(r"<tr(?: class=\"total\")?><td>([^<]*)</td>", money)
    stores = [x for x in result.settlement.to_pylist() if x["kind"] == "store"]
    assert rows[:top] == [x["party"] for x in stores[:top]]        # the top stores by net, in order
    assert {"HQ", "channel:app", "all parties"} <= set(rows)
    assert f"{len(stores) - top} other stores" in rows
    assert f"top {top} stores by net" in money
    total = format_yuan(m["settlement_total_cents"])
    assert re.fullmatch(r"¥\d{1,3}(,\d{3})+\.\d\d", total) and f"<td>{total}</td>" in money  # thousands separators


def test_store_figures_show_what_they_say(result):
    ecdf, reasons = answer_time_figure([result]).axes
    limit = result.scenario.answer_limit_minutes
    assert any(list(line.get_xdata()) == [limit, limit] for line in ecdf.get_lines())      # the limit is marked
    assert ecdf.get_xlabel().startswith("answer time (minutes") and ecdf.get_ylabel()
    curve = ecdf.get_lines()[0].get_ydata()
    assert 0.5 < curve.max() < 1.0                                   # levels off below 1: the timed-out share
    assert reasons.get_xlabel() == "re-routed parcels per 100 orders"
    total = sum(p.get_width() for p in reasons.patches)
    assert total == pytest.approx(result.metrics["reroutes_per_100_orders"])
    (bars,) = settlement_figure([result], top=10).axes
    widths = [p.get_width() for p in bars.patches]
    nets = [x["net_cents"] for x in result.settlement.to_pylist() if x["kind"] == "store"][:10]
    assert widths == nets and widths == sorted(widths, reverse=True)
    assert [t.get_text() for t in bars.get_xticklabels()][0].startswith("¥")
    assert np.all(np.diff([t.get_position()[0] for t in bars.get_xticklabels()]) > 0)


def test_json_has_no_nan(result):
    text = json.dumps(metrics_document([result]), allow_nan=True)
    doc = json.loads(text)
    assert doc["policies"]["greedy"]["metrics"]["max_gap"] is None  # greedy never calls a solver


def test_a_report_refuses_mixed_or_repeated_results(result):
    with pytest.raises(errors.InvalidArgument):
        write_report([], "unused")
    with pytest.raises(errors.InvalidArgument, match="twice"):
        metrics_document([result, result])
    other = simulate(preset("small", stores=15, orders=300, hours=30, seed=8), "greedy")
    with pytest.raises(errors.InvalidArgument, match="different scenarios"):
        metrics_document([result, other])


def test_simulate_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "report"
    assert _run(["simulate", *TINY_ARGS, "--policies", "greedy", "--out", str(out), "--seed", "3",
                 "--attribution", "regional"]) == 0
    for name in ("metrics.json", "series.parquet", "store_load.parquet", "orders.parquet", "shipments.parquet",
                 "settlement.parquet", "report.html"):
        assert (out / name).stat().st_size > 0
    printed = capsys.readouterr().out
    assert "fill rate" in printed and "greedy" in printed and "re-routes / 100 orders" in printed
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["scenario"]["seed"] == 3 and doc["scenario"]["orders"] == 250
    assert doc["policies"]["greedy"]["metrics"]["attribution_rule"] == "regional-by-stock@1"


def test_simulate_command_with_every_policy(tmp_path):
    pytest.importorskip("pyomni.optimize")
    out = tmp_path / "all"
    argv = ["simulate", "--preset", "small", "--stores", "10", "--orders", "120", "--hours", "24", "--quiet",
            "--policies", "greedy,micro_batch,batch", "--solver-workers", "1", "--out", str(out)]
    assert _run(argv) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert list(doc["policies"]) == ["greedy", "micro_batch", "batch"]
    assert doc["policies"]["batch"]["solves"]


def test_sweep_command_runs_a_two_by_one_grid_in_processes(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", *TINY_ARGS, "--grid", "safety=0,2;capacity=40", "--workers", "2", "--out", str(out)]
    assert _run(argv) == 0
    table = pq.read_table(out / "sweep.parquet")
    assert table.column("scenario").to_pylist() == ["safety=0 capacity=40", "safety=2 capacity=40"]
    assert table.column("safety").to_pylist() == [0, 2]
    assert table.column("policy").to_pylist() == ["greedy", "greedy"]
    fill = table.column("fill_rate").to_pylist()
    assert all(0.0 <= f <= 1.0 for f in fill)
    assert (out / "sweep.csv").read_text().startswith('"scenario"')
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "sweep over small: 2 scenarios" in capsys.readouterr().out


def test_sweep_points_match_single_runs():
    base = preset("small", stores=12, orders=150, hours=24)
    table = run_sweep(base, "capacity=30,60", workers=1)
    single = simulate(base.replace(capacity=60, name=f"{base.name} capacity=60"), "greedy").metrics
    row = table.to_pylist()[1]
    assert row["capacity"] == 60
    assert row["fill_rate"] == single["fill_rate"] and row["total_cost"] == single["total_cost"]


def test_sweep_on_ray():
    pytest.importorskip("ray")
    table = run_sweep(preset("small", stores=10, orders=80, hours=24), "safety=0,1", workers=1, backend="ray")
    assert table.num_rows == 2 and set(table.column("safety").to_pylist()) == {0, 1}


@pytest.mark.parametrize(("text", "message"), [
    ("safety", "field=v1,v2"),
    ("safety=", "field=v1,v2"),
    ("=1,2", "field=v1,v2"),
    ("warp=1", "not one of"),
    ("safety=1;safety=2", "twice"),
    ("safety=a,b", "not a int"),
    ("safety=1.5", "not a int"),
    ("safety=1,1", "repeats"),
    ("", "non-empty"),
    (";", "names no field"),
])
def test_bad_grid_is_a_typed_error(text, message):
    with pytest.raises(errors.InvalidArgument, match=message) as info:
        parse_grid(text)
    assert info.value.field == "grid"


def test_grid_out_of_range_fails_before_running():
    with pytest.raises(errors.InvalidArgument) as info:
        run_sweep(preset("small"), "ship_from_store=10,4000", workers=1)
    assert info.value.field == "ship_from_store"


@pytest.mark.parametrize(("argv", "field"), [
    (["simulate", "--preset", "nope", "--out", "x"], "preset"),
    (["simulate", "--preset", "small", "--hours", "-1", "--out", "x"], "hours"),
    (["simulate", "--preset", "small", "--policies", "greedy,fastest", "--out", "x"], "policies"),
    (["simulate", "--preset", "small", "--attribution", "loudest", "--out", "x"], "attribution"),
    (["sweep", "--preset", "small", "--grid", "safety:0,1", "--out", "x"], "grid"),
    (["sweep", "--preset", "small", "--grid", "safety=0", "--backend", "cloud", "--out", "x"], "backend"),
    (["sweep", "--preset", "small", "--grid", "safety=0", "--workers", "0", "--out", "x"], "workers"),
])
def test_bad_command_line_is_a_typed_error(argv, field, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _run(argv) == 1                 # the pyomni command prints the typed error and exits 1
    printed = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert printed["field"] == field and printed["error"].startswith("INVALID")
    assert not (tmp_path / "x").exists()  # nothing written
