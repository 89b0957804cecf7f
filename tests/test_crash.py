"""Crash tests: ``kill -9`` a real ``pyomni serve`` under load, again and again, and lose nothing answered.

:mod:`crash_harness` does the work (its docstring describes the workload and
every check): 20 cycles of start -> verify the previous crash -> clients for
0.2-1.5 s -> SIGKILL while calls are in flight, then a final restart, a clean
stop and one more restart. This module runs it once (about a minute on two
cores) and asserts on its summary. For longer soaks: ``benchmarks/soak_crash.py``.
"""

from __future__ import annotations

import pytest
from crash_harness import HarnessConfig, Summary, run

CYCLES = 20
CLIENTS = 4
KINDS = ("stock", "route", "batch", "confirm", "release")


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> Summary:
    config = HarnessConfig(cycles=CYCLES, clients=CLIENTS, seed=1,
                           data_dir=str(tmp_path_factory.mktemp("crash") / "data"),
                           snapshot_every=(1.0, 1.0, 1.0, 0.0),     # snapshots (and retirement) in most cycles
                           max_seconds=240.0)
    lines: list[str] = []
    result = run(config, progress=lines.append)
    print("\n".join(lines))
    print(result.line())
    return result


def test_nothing_answered_is_lost(summary):
    report = "\n".join(f"{v.line()}\n    " + "\n    ".join(v.server_log[-5:]) for v in summary.violations[:10])
    assert summary.ok, f"{len(summary.violations)} violations (data kept in {summary.data_dir}):\n{report}"
    assert summary.retries > 0 and summary.retries_from_window == summary.retries
    assert summary.reservations_checked > 0 and summary.cells_checked > 0


def test_every_cycle_killed_the_server_with_calls_in_flight(summary):
    assert summary.cycles == CYCLES, summary.stopped_early
    assert [r.exit_status for r in summary.records] == [-9] * CYCLES
    assert all(r.in_flight_at_kill >= 1 for r in summary.records), [r.in_flight_at_kill for r in summary.records]
    # the harness's own large batch, interrupted by most kills, came back whole or not at all
    assert summary.in_flight["harness batch applied"] + summary.in_flight["harness batch not applied"] > 0
    # each in-flight op was retried after the restart and its fate classified
    assert sum(summary.in_flight.values()) == summary.in_flight_at_kill + summary.sent_after_kill > 0
    assert all(summary.acked[k] > 0 for k in KINDS), summary.acked


def test_snapshots_and_segment_retirement_ran_under_load(summary):
    assert summary.snapshots > 0
    assert summary.segments_retired > 0
