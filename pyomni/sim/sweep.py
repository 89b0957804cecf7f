"""What-if sweeps: a grid of scenario variations, each simulated under the chosen policies, in parallel.

A grid is written ``"ship_from_store=300,400;safety=0,1,2;capacity=40,80"``:
fields of :class:`~pyomni.sim.Scenario` (see :data:`~pyomni.sim.TUNABLE_FIELDS`)
separated by ``;``, values by ``,``; the sweep runs their Cartesian product.
Every point is an independent simulation, so points run in separate
processes (``backend="local"``) or as Ray tasks (``backend="ray"``, the
optional extra ``pyomni[ray]``); each returns only its metrics row, so
nothing large crosses a process boundary.

Examples
--------
>>> parse_grid("safety=0,1;capacity=40")
[{'safety': 0, 'capacity': 40}, {'safety': 1, 'capacity': 40}]
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.progress import Progress

from .. import errors
from .plots import figure_png, sweep_figure
from .policies import parse_policies
from .scenario import TUNABLE_FIELDS, Scenario
from .simulation import compare_policies

__all__ = ["parse_grid", "run_sweep", "write_sweep", "BACKENDS"]

#: Where sweep points run.
BACKENDS = ("local", "ray")


def parse_grid(text: str) -> list[dict[str, Any]]:
    """The scenario variations a grid string names, in row-major order (the last field varies fastest).

    Raises
    ------
    pyomni.errors.InvalidArgument
        Bad syntax, an unknown or repeated field, or a value that is not a
        number of the field's type (``field="grid"``).

    Examples
    --------
    >>> len(parse_grid("ship_from_store=300,400;safety=0,1,2;capacity=40,80"))
    12
    """
    if not isinstance(text, str) or not text.strip():
        raise errors.InvalidArgument("grid must be a non-empty string like 'safety=0,1;capacity=40,80'",
                                     field="grid")
    axes: dict[str, list[Any]] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, eq, values = part.partition("=")
        name = name.strip()
        if not eq or not name or not values.strip():
            raise errors.InvalidArgument(f"grid part {part!r} must look like 'field=v1,v2'", field="grid")
        if name not in TUNABLE_FIELDS:
            raise errors.InvalidArgument(f"grid field {name!r} is not one of: {', '.join(TUNABLE_FIELDS)}",
                                         field="grid")
        if name in axes:
            raise errors.InvalidArgument(f"grid field {name!r} appears twice", field="grid")
        kind = TUNABLE_FIELDS[name]
        parsed = []
        for raw in values.split(","):
            raw = raw.strip()
            try:
                parsed.append(kind(raw) if kind is float else int(raw, 10))
            except ValueError:
                raise errors.InvalidArgument(f"grid value {raw!r} of {name!r} is not a {kind.__name__}",
                                             field="grid") from None
        if len(set(parsed)) != len(parsed):
            raise errors.InvalidArgument(f"grid field {name!r} repeats a value", field="grid")
        axes[name] = parsed
    if not axes:
        raise errors.InvalidArgument("grid names no field", field="grid")
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def run_sweep(base: Scenario, grid: str | Sequence[dict[str, Any]], policies: Sequence[str] | str = ("greedy",),
              *, workers: int = 2, backend: str = "local", progress: bool = False) -> pa.Table:
    """Simulate every grid point under every policy; one row per (point, policy).

    Parameters
    ----------
    base : Scenario
        What the grid varies.
    grid : str or sequence of dict
        A grid string (:func:`parse_grid`) or the variations themselves.
    policies : sequence of str or str
        Policy names (or a comma-separated string).
    workers : int
        Points simulated at once (processes, or Ray CPUs); 1 runs in this process.
    backend : str
        ``"local"`` (process pool) or ``"ray"`` (needs the ``ray`` extra).
    progress : bool
        Show a progress bar over points.

    Returns
    -------
    pyarrow.Table
        ``scenario`` (a label such as ``"safety=1 capacity=40"``), the varied
        fields, ``policy`` and every metric.

    Raises
    ------
    pyomni.errors.InvalidArgument
        Bad grid, policy, worker count or backend; or a grid value out of
        range (every point is validated before anything runs).
    pyomni.errors.FailedPrecondition
        ``backend="ray"`` but Ray is not installed.

    Examples
    --------
    >>> from pyomni.sim import preset
    >>> t = run_sweep(preset("small", orders=40, stores=10, hours=24), "safety=0,1", workers=1)
    >>> t.column("scenario").to_pylist()
    ['safety=0', 'safety=1']
    """
    points = parse_grid(grid) if isinstance(grid, str) else [dict(p) for p in grid]
    if not points:
        raise errors.InvalidArgument("the grid is empty", field="grid")
    names = parse_policies(policies) if isinstance(policies, str) else parse_policies(",".join(policies))
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 256:
        raise errors.InvalidArgument("workers must be an integer in 1..256", field="workers")
    if backend not in BACKENDS:
        raise errors.InvalidArgument(f"backend must be one of {BACKENDS}, got {backend!r}", field="backend")
    scenarios = []
    for point in points:
        label = " ".join(f"{k}={v}" for k, v in point.items())
        scenarios.append((label, point, base.replace(name=f"{base.name} {label}", **point)))
    jobs = [(s, names) for _, _, s in scenarios]

    if backend == "ray":
        rows_per_point = _run_ray(jobs, workers, progress)
    elif workers == 1:
        rows_per_point = [_simulate_point(job) for job in _tracked(jobs, progress)]
    else:
        rows_per_point = _run_processes(jobs, workers, progress)

    rows = []
    for (label, point, _), point_rows in zip(scenarios, rows_per_point, strict=True):
        for metrics in point_rows:
            rows.append({"scenario": label, **point, **metrics})
    return pa.Table.from_pylist(rows)


def write_sweep(table: pa.Table, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write a sweep's table as Parquet and CSV and its chart as PNG; returns the paths.

    Examples
    --------
    >>> import tempfile
    >>> from pyomni.sim import preset
    >>> t = run_sweep(preset("small", orders=40, stores=10, hours=24), "safety=0,1", workers=1)
    >>> sorted(write_sweep(t, tempfile.mkdtemp()))
    ['chart', 'csv', 'parquet']
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"parquet": out / "sweep.parquet", "csv": out / "sweep.csv", "chart": out / "sweep.png"}
    pq.write_table(table, paths["parquet"])
    pacsv.write_csv(table, paths["csv"])
    paths["chart"].write_bytes(figure_png(sweep_figure(table.to_pylist())))
    return paths


def _simulate_point(job: tuple[Scenario, tuple[str, ...]]) -> list[dict[str, Any]]:
    """One grid point, all policies on one world. Runs in a worker: returns plain dicts only."""
    scenario, policies = job
    # Points already run side by side: each optimiser call gets one worker, not a pool of its own.
    return [r.metrics for r in compare_policies(scenario, policies, solver_workers=1)]


def _tracked(jobs: list, progress: bool):
    if not progress:
        yield from jobs
        return
    with Progress(transient=True) as bar:
        task = bar.add_task("sweep", total=len(jobs))
        for job in jobs:
            yield job
            bar.advance(task)


def _run_processes(jobs: list, workers: int, progress: bool) -> list[list[dict[str, Any]]]:
    # "spawn": the parent may hold threads (rich's refresh thread, Ray, the optimiser's pools),
    # which a forked child would inherit in an unknown state.
    context = multiprocessing.get_context("spawn")
    results: list[list[dict[str, Any]] | None] = [None] * len(jobs)
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        futures = {pool.submit(_simulate_point, job): k for k, job in enumerate(jobs)}
        done = concurrent.futures.as_completed(futures)
        if progress:
            with Progress(transient=True) as bar:
                task = bar.add_task("sweep", total=len(jobs))
                for future in done:
                    results[futures[future]] = future.result()
                    bar.advance(task)
        else:
            for future in done:
                results[futures[future]] = future.result()
    return [r for r in results if r is not None]


def _run_ray(jobs: list, workers: int, progress: bool) -> list[list[dict[str, Any]]]:
    try:
        import ray
    except ImportError:
        raise errors.FailedPrecondition("backend='ray' needs Ray: pip install 'pyomni[ray]'",
                                        field="backend") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(_simulate_point)
        refs = [remote.remote(job) for job in jobs]
        if not progress:
            return list(ray.get(refs))
        with Progress(transient=True) as bar:
            task = bar.add_task("sweep (ray)", total=len(refs))
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                bar.advance(task, len(ready))
        return list(ray.get(refs))
    finally:
        if started_here:
            ray.shutdown()
