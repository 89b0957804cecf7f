"""Simulation reports and the ``simulate`` / ``sweep`` commands, end to end on tiny scenarios."""

from __future__ import annotations

import base64
import json
import re

import pyarrow.parquet as pq
import pytest

from pyomni import errors
from pyomni.cli import main
from pyomni.sim import preset, simulate
from pyomni.sim.report import metrics_document, write_report
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
    assert set(paths) == {"metrics", "series", "store_load", "orders", "shipments", "html"}
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


def test_html_embeds_every_figure(result, tmp_path):
    html = write_report([result], tmp_path)["html"].read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 4  # comparison, backlog, store load, one map per policy
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    for title in ("Policies compared", "Backlog over time", "Store load distribution", "Map of stores and flows"):
        assert title in html
    assert f"{result.metrics['fill_rate']:.1%}" in html


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
    assert _run(["simulate", *TINY_ARGS, "--policies", "greedy", "--out", str(out), "--seed", "3"]) == 0
    for name in ("metrics.json", "series.parquet", "store_load.parquet", "orders.parquet", "shipments.parquet",
                 "report.html"):
        assert (out / name).stat().st_size > 0
    printed = capsys.readouterr().out
    assert "fill rate" in printed and "greedy" in printed
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["scenario"]["seed"] == 3 and doc["scenario"]["orders"] == 250


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
