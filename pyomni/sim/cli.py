"""``pyomni simulate``, ``replay`` and ``sweep``: peak simulations, what-ifs on the recorded order stream and
scenario sweeps from the command line.

:func:`add_commands` registers both subcommands on the main parser's
subparsers; each sets ``run`` (as ``pyomni demo`` does), so the caller
dispatches with ``args.run(args)``, which returns the exit code. Bad input
raises a :class:`pyomni.errors.InvalidArgument` naming the option.

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser(prog="pyomni")
>>> sub = parser.add_subparsers(dest="command", required=True)
>>> add_commands(sub)
>>> args = parser.parse_args(["simulate", "--preset", "small", "--out", "/tmp/x"])
>>> args.command, args.preset, args.run.__name__
('simulate', 'small', 'run_simulate')
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from .. import errors

__all__ = ["add_commands", "run_simulate", "run_sweep_command", "run_replay_command"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``simulate``, ``replay`` and ``sweep`` on ``subparsers`` (each sets ``run``).

    Examples
    --------
    >>> import argparse
    >>> sub = argparse.ArgumentParser().add_subparsers(dest="command")
    >>> add_commands(sub)
    >>> sorted(sub.choices)
    ['replay', 'simulate', 'sweep']
    """
    simulate = subparsers.add_parser(
        "simulate", help="simulate a sales peak (e.g. Double 11) under several allocation policies",
        description="Simulate a peak on a demo network of real Chinese cities and compare policies; writes "
                    "metrics.json, Parquet tables and report.html into --out.")
    _scenario_options(simulate)
    simulate.add_argument("--policies", default="greedy,micro_batch,batch",
                          help="comma-separated: greedy, micro_batch, batch (default: all three)")
    simulate.add_argument("--out", required=True, help="directory for the report files")
    simulate.add_argument("--solver-workers", type=int, default=None,
                          help="worker processes per optimiser call (default: the optimiser's)")
    simulate.set_defaults(run=run_simulate)

    replay = subparsers.add_parser(
        "replay", help="re-run the orders a data directory's journal recorded under another policy or network",
        description="Rebuild the engine's state at --from from the data directory (read only), re-decide every "
                    "order recorded until --to under the what-if, and write metrics.json, Parquet tables and "
                    "report.html (maps side by side with what actually happened) into --out.")
    replay.add_argument("--data-dir", required=True, help="the engine's data directory (only read)")
    replay.add_argument("--from", dest="start", default=None,
                        help="window start: ISO 8601 (UTC unless it says) or epoch seconds (default: the oldest "
                             "record the journal holds)")
    replay.add_argument("--to", dest="end", default=None, help="window end (default: the newest record)")
    replay.add_argument("--policy", default=None,
                        help="the what-if routing policy: a registered key or name, or 'field=value,...' over "
                             "RoutingPolicy's fields (default: each order's recorded policy)")
    replay.add_argument("--stores", default=None,
                        help="'+N': N more stores ship from store (those holding the most units first)")
    replay.add_argument("--out", required=True, help="directory for the report files")
    replay.add_argument("--quiet", action="store_true", help="no progress output")
    replay.set_defaults(run=run_replay_command)

    sweep = subparsers.add_parser(
        "sweep", help="run a grid of what-if scenarios in parallel into one comparison table",
        description="Run every combination of a grid such as 'ship_from_store=300,400;safety=0,1,2;capacity=40,80' "
                    "and write sweep.parquet, sweep.csv and sweep.png into --out.")
    _scenario_options(sweep)
    sweep.add_argument("--grid", required=True, help="'field=v1,v2;field=v1,...' over scenario fields")
    sweep.add_argument("--policies", default="greedy", help="comma-separated policies (default: greedy)")
    sweep.add_argument("--workers", type=int, default=2, help="grid points simulated at once (default 2)")
    sweep.add_argument("--backend", default="local", help="local (processes) or ray (needs pyomni[ray])")
    sweep.add_argument("--out", required=True, help="directory for the sweep files")
    sweep.set_defaults(run=run_sweep_command)


def _scenario_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="double11", help="double11 (default) or small")
    parser.add_argument("--stores", type=int, default=None, help="stores in the network (preset: 400)")
    parser.add_argument("--orders", type=int, default=None, help="orders arriving over the demand period")
    parser.add_argument("--hours", type=int, default=None, help="simulated horizon in hours")
    parser.add_argument("--seed", type=int, default=None, help="seed of every random draw")
    parser.add_argument("--attribution", default=None,
                        help="revenue attribution rule: fulfiller, split-361 (the presets' default) or regional")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _scenario(args: argparse.Namespace) -> Any:
    from .scenario import preset

    return preset(args.preset, stores=args.stores, orders=args.orders, hours=args.hours, seed=args.seed,
                  attribution=args.attribution)


def run_replay_command(args: argparse.Namespace) -> int:
    """Run ``pyomni replay``: replay the window, write the report, print both sides; returns 0."""
    from ..replay import parse_policy, replay
    from .replay_report import REPLAY_METRICS, write_replay_report
    from .report import format_metric

    console = Console()
    add = 0
    if args.stores is not None:
        text = str(args.stores).strip()
        if not text.startswith("+") or not text[1:].isdigit():
            raise errors.InvalidArgument(f"--stores must be +N (N more ship-from-store stores), got {text!r}",
                                         field="stores")
        add = int(text[1:])
    policy = parse_policy(args.policy) if args.policy is not None else None

    def progress(done: int, total: int) -> None:
        if not args.quiet and done:
            console.print(f"  {done:,} of {total:,} records")

    result = replay(args.data_dir, start=args.start, end=args.end, policy=policy, add_ship_stores=add,
                    progress=progress)
    paths = write_replay_report(result, args.out)
    sides = (result.recorded, result.what_if)
    table = Table(title=f"replay of {result.window['records']:,} records, {result.window['orders']:,} orders "
                        f"({result.wall_time_s:.1f} s)")
    table.add_column("metric")
    for side in sides:
        table.add_column(side.policy, justify="right")
    for key, label, fmt in REPLAY_METRICS:
        table.add_row(label, *(format_metric(side.metrics.get(key), fmt) for side in sides))
    console.print(table)
    for what, counts in (("skipped", result.skipped), ("refused", result.refused)):
        if counts:
            console.print(f"{what} in the what-if: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
    console.print(f"report: {paths['html']}")
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    """Run ``pyomni simulate``: simulate, write the report, print the comparison table; returns 0."""
    from .policies import parse_policies
    from .report import MISSING_TEXT, SUMMARY_METRICS, format_metric, write_report
    from .simulation import compare_policies

    console = Console()
    scenario = _scenario(args)
    policies = parse_policies(args.policies)
    if args.solver_workers is not None and (args.solver_workers < 1):
        raise errors.InvalidArgument("--solver-workers must be >= 1", field="solver_workers")
    console.print(f"[bold]{scenario.name}[/]: {scenario.stores} stores ({scenario.shipping_stores} ship), "
                  f"{scenario.warehouses} warehouses, {scenario.orders:,} orders, {scenario.hours} h, "
                  f"seed {scenario.seed}")
    results = compare_policies(scenario, policies, progress=not args.quiet, solver_workers=args.solver_workers)
    paths = write_report(results, args.out, progress=not args.quiet)
    table = Table(title=f"{scenario.name}: policies compared")
    table.add_column("metric")
    for r in results:
        table.add_column(r.policy, justify="right")
    for key, label, fmt in SUMMARY_METRICS:
        table.add_row(label, *(format_metric(r.metrics.get(key), fmt, MISSING_TEXT.get(key, "-")) for r in results))
    console.print(table)
    console.print(f"report: {paths['html']}")
    return 0


def run_sweep_command(args: argparse.Namespace) -> int:
    """Run ``pyomni sweep``: run the grid, write the table and chart, print a summary; returns 0."""
    from .report import MISSING_TEXT, format_metric
    from .sweep import parse_grid, run_sweep, write_sweep

    console = Console()
    base = _scenario(args)
    points = parse_grid(args.grid)  # fail on a bad grid before anything starts
    table_data = run_sweep(base, points, args.policies, workers=args.workers, backend=args.backend,
                           progress=not args.quiet)
    paths = write_sweep(table_data, args.out)
    table = Table(title=f"sweep over {base.name}: {len(points)} scenarios")
    for column in ("scenario", "policy", "fill rate", "parcels/order", "cost/order", "hours to clear"):
        table.add_column(column, justify="left" if column in ("scenario", "policy") else "right",
                         no_wrap=column == "scenario")
    for row in table_data.to_pylist():
        table.add_row(row["scenario"], row["policy"], format_metric(row["fill_rate"], "{:.1%}"),
                      format_metric(row["split_rate"], "{:.3f}"), format_metric(row["cost_per_order"], "{:.2f}"),
                      format_metric(row["hours_to_clear"], "{:.1f}", MISSING_TEXT["hours_to_clear"]))
    console.print(table)
    console.print(f"table: {paths['parquet']} · {paths['csv']} · chart: {paths['chart']}")
    return 0
