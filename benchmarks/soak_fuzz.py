"""Fuzz soak: the generators of ``tests/test_fuzz.py`` for as many calls as you like.

``tests/test_fuzz.py`` makes about 100,000 derandomised calls in CI; this makes
``--calls`` of them from ``--seed`` (the same seed, the same calls), split
between in-process Engine calls and RPCs against an in-process server
(``--rpc-share``), printing progress and a summary: calls, failures by error
class and by status code, and every violation (an untyped exception, a status
without details, a state change by a failed call, a broken invariant, a hang)::

    .venv/bin/python benchmarks/soak_fuzz.py                        # 1,000,000 calls
    .venv/bin/python benchmarks/soak_fuzz.py --calls 5000000 --seed 9 --report fuzz.json

Exit status 1 on any violation. The generators and checks are ``tests/fuzzing.py``
(imported with ``tests/`` on the path, as ``benchmarks/soak_crash.py`` does for
its harness).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))     # fuzzing.py and its conftest helpers

import fuzzing  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

KINDS = ("native", "native", "reference", "native", "reference", "journal")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="calls to make in all (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run: the same seed makes the same calls")
    parser.add_argument("--rpc-share", type=float, default=0.2, help="share of the calls made over gRPC (0.2)")
    parser.add_argument("--batch", type=int, default=100, help="calls per hypothesis example (100)")
    parser.add_argument("--call-seconds", type=float, default=30.0, help="a call taking longer is a hang (30 s)")
    parser.add_argument("--report", type=Path, help="write the summary and every violation here (JSON)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.batch < 1 or not 0 <= args.rpc_share <= 1:
        parser.error("--calls and --batch must be >= 1, --rpc-share in [0, 1]")

    logging.getLogger("pyomni").setLevel(logging.CRITICAL)    # the engines' own warnings (a reopened directory ...)
    root = Path(tempfile.mkdtemp(prefix="pyomni-soak-fuzz-"))
    os.chdir(root)       # generated relative paths land in the scratch directory, not where the script ran
    checker = fuzzing.Checker(collect=True, saved=fuzzing.saved_snapshot(root / "saved"),
                              call_seconds=args.call_seconds)
    rpc_calls = round(args.calls * args.rpc_share)
    engine_calls = args.calls - rpc_calls
    examples = itertools.count()
    start = last = time.perf_counter()

    def progress(force: bool = False) -> None:
        nonlocal last
        now = time.perf_counter()
        if not args.quiet and (force or now - last >= 10):
            last = now
            done = checker.calls + checker.rpcs
            print(f"{now - start:8.0f} s  {done:>10,} / {args.calls:,} calls  ({checker.calls:,} engine, "
                  f"{checker.rpcs:,} RPC)  {done / (now - start):,.0f}/s  {len(checker.violations)} violations",
                  flush=True)

    def run(n_calls: int, body) -> None:
        examples_needed = -(-n_calls // args.batch)
        if not examples_needed:
            return
        cfg = settings(max_examples=examples_needed, deadline=None, database=None, print_blob=False,
                       phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        test = hypothesis_seed(random.Random(args.seed).getrandbits(64) ^ n_calls)(
            cfg(given(st.sampled_from(KINDS), fuzzing.seeds(args.batch))(body)))
        test()

    make_engine = fuzzing.engine_calls()

    def engine_example(kind: str, seeds: list[int]) -> None:
        live = fuzzing.live_engine(kind, fuzzing.fresh_tmp(root, next(examples)))
        try:
            checker.run_engine(live, [make_engine(s, i) for i, s in enumerate(seeds)])
            checker.check_recovery(live)
        finally:
            live.close()
        progress()

    run(engine_calls, engine_example)
    if rpc_calls:
        make_rpc = fuzzing.rpc_calls()
        with fuzzing.served(workers=8) as (slot, channel):
            def rpc_example(kind: str, seeds: list[int]) -> None:
                live = fuzzing.live_engine("native" if kind == "journal" else kind,
                                           fuzzing.fresh_tmp(root, next(examples)))
                slot.target = live.engine
                try:
                    checker.run_rpcs(channel, live, [make_rpc(s, i) for i, s in enumerate(seeds)])
                    checker.check_server(channel)
                finally:
                    live.close()
                progress()
            run(rpc_calls, rpc_example)

    progress(force=True)
    elapsed = time.perf_counter() - start
    print(f"\n{elapsed:.0f} s, seed {args.seed}\n{checker.summary()}")
    for v in checker.violations[:50]:
        print("-" * 100)
        print(v.line())
    if args.report is not None:
        args.report.write_text(json.dumps({
            "seed": args.seed, "seconds": round(elapsed, 1), "engine_calls": checker.calls, "rpcs": checker.rpcs,
            "outcomes": dict(checker.outcomes), "by_method": dict(checker.by_method),
            "violations": [{"what": v.what, "call": v.call, "detail": v.detail} for v in checker.violations],
        }, indent=1))
    return 1 if checker.violations else 0


if __name__ == "__main__":
    sys.exit(main())
