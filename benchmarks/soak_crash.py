"""Crash soak: the crash harness of the test suite, for as long as you like.

``tests/test_crash.py`` runs 20 kill -9 cycles in CI; this runs the same
harness (``tests/crash_harness.py``, imported as ``tests.crash_harness``) with
soak defaults -- 500 cycles, 6 clients, at most two hours -- and takes every
flag of the harness's command line::

    .venv/bin/python benchmarks/soak_crash.py                       # 500 cycles
    .venv/bin/python benchmarks/soak_crash.py --cycles 2000 --seed 9 --data-dir /tmp/soak --report soak.json

It prints a line per cycle and a summary line, and exits 1 on any violation
(the data directory is then kept, and ``--report`` holds each violation with the
log tails of the server that answered the check and of the one killed before it).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # the repository root: tests.crash_harness

from tests.crash_harness import main  # noqa: E402

#: Soak defaults; flags given on the command line come later and win.
SOAK_DEFAULTS = ("--cycles", "500", "--clients", "6", "--max-seconds", "7200")

if __name__ == "__main__":
    sys.exit(main([*SOAK_DEFAULTS, *sys.argv[1:]]))
