"""Journal benchmarks: durable group commits by batch size, and recovery speed (DESIGN.md §3, §6).

Group ``journal``
    ``test_append_wait[1|10|100|1000]`` -- one round is ``Journal.append_many`` of a batch of 48-byte
    payloads then ``wait`` for its last LSN, with ``fsync="always"``: so every round pays one write and
    one ``fdatasync`` (≈ 4 ms on this disk), and records/s grows with the batch until framing costs
    as much as the sync. ``test_raw_fdatasync_baseline`` is the floor of one durable record: a bare
    ``os.write`` + ``os.fdatasync`` of one framed record on the same disk, no thread, no queue, so
    ``test_append_wait[1]`` over it is the cost of the journal's machinery.
    ``test_open_and_replay`` -- ``Journal.open`` (scan and checksum every record) plus a full
    ``replay`` of 1,000,000 records of 48 bytes in 16 MiB segments; target > 1M records/s.

Data (payloads, the 1M-record journal) is built before timing, from a fixed seed. Each benchmark
checks its result by reopening the journal: replay returns exactly the records appended, in order.
Records/s and bytes per record on disk are in ``extra_info`` and printed with ``-s``. Timings are
recorded, never asserted (shared, noisy machine).

The journal must live on a real disk: ``fdatasync`` on tmpfs returns at once and would measure
nothing. ``journal_root`` uses pytest's temporary directory when it is on a disk, else the repository's
git-ignored ``.bench-tmp/``, and prints which.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyomni.journal import SEGMENT_HEADER_BYTES, Journal

SEED = 41
PAYLOAD_BYTES = 48
BATCH_SIZES = (1, 10, 100, 1000)
ROUNDS = {1: 150, 10: 150, 100: 80, 1000: 40}
WARMUP_ROUNDS = 3
N_REPLAY = 1_000_000
REPLAY_SEGMENT_BYTES = 16 << 20
REPLAY_ROUNDS = 3
REPO_BENCH_TMP = Path(__file__).resolve().parent.parent / ".bench-tmp"

_median_s: dict[str, float] = {}


def _filesystem_of(path: Path) -> str:
    """The file-system type of the mount holding ``path`` (longest mount-point prefix in /proc/mounts)."""
    best, fstype = "", "unknown"
    resolved = str(path.resolve())
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, mount_point, kind, *_ = line.split()
            inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) > len(best):
                best, fstype = mount_point, kind
    return fstype


@pytest.fixture(scope="module")
def journal_root(tmp_path_factory) -> Iterator[Path]:
    """A directory on a real disk for the benchmark journals (removed afterwards)."""
    candidate = tmp_path_factory.mktemp("journal-bench")
    if _filesystem_of(candidate) in ("tmpfs", "ramfs"):
        REPO_BENCH_TMP.mkdir(exist_ok=True)
        candidate = Path(tempfile.mkdtemp(prefix="journal-bench-", dir=REPO_BENCH_TMP))
        print(f"\njournal benchmarks: pytest's tmp is on tmpfs, using {candidate} ({_filesystem_of(candidate)})")
    else:
        print(f"\njournal benchmarks: in {candidate} ({_filesystem_of(candidate)})")
    yield candidate
    shutil.rmtree(candidate, ignore_errors=True)


@pytest.fixture(scope="module")
def payloads() -> list[bytes]:
    """Enough distinct, seeded 48-byte payloads for the largest batch."""
    rng = random.Random(SEED)
    return [rng.randbytes(PAYLOAD_BYTES) for _ in range(max(BATCH_SIZES))]


def _disk_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.glob("*.seg"))


def _median(benchmark) -> float | None:
    stats = getattr(benchmark, "stats", None)  # None under --benchmark-disable
    return None if stats is None else float(stats.stats.median)


@pytest.mark.benchmark(group="journal")
@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_append_wait(benchmark, journal_root: Path, payloads: list[bytes], batch: int) -> None:
    directory = journal_root / f"append-wait-{batch}"
    records = payloads[:batch]
    journal = Journal.open(directory, fsync="always")

    def commit() -> None:
        journal.wait(journal.append_many(records))

    try:
        benchmark.pedantic(commit, rounds=ROUNDS[batch], iterations=1, warmup_rounds=WARMUP_ROUNDS)
        stats = journal.stats()
    finally:
        journal.close()

    total = stats["records"]
    assert total == batch * (ROUNDS[batch] + WARMUP_ROUNDS) or _median(benchmark) is None
    assert stats["fsyncs"] == stats["commits"]  # "always": one fdatasync per group commit
    with Journal.open(directory) as again:
        replayed = list(again.replay())
    assert len(replayed) == total and [lsn for lsn, _ in replayed] == list(range(1, total + 1))
    assert all(payload == records[(lsn - 1) % batch] for lsn, payload in replayed)

    disk = _disk_bytes(directory) - SEGMENT_HEADER_BYTES  # the empty segment the reopen left
    benchmark.extra_info["batch"] = batch
    benchmark.extra_info["payload_bytes"] = PAYLOAD_BYTES
    benchmark.extra_info["bytes_per_record"] = round(disk / total, 2)
    benchmark.extra_info["commits_per_fsync"] = stats["commits"] / max(stats["fsyncs"], 1)
    median = _median(benchmark)
    if median is not None:
        _median_s[f"batch-{batch}"] = median
        benchmark.extra_info["median_ms"] = round(median * 1e3, 3)
        benchmark.extra_info["records_per_s"] = round(batch / median)
        print(
            f"\njournal append+wait fsync=always batch={batch}: {batch / median:,.0f} records/s, "
            f"{median * 1e3:.2f} ms per commit, {disk / total:.2f} bytes/record on disk"
        )


@pytest.mark.benchmark(group="journal")
def test_raw_fdatasync_baseline(benchmark, journal_root: Path, payloads: list[bytes]) -> None:
    """Baseline: one framed record written and fdatasync'ed by hand, per round."""
    path = journal_root / "raw.bin"
    record = len(payloads[0]).to_bytes(4, "little") + bytes(4) + payloads[0]  # same size as a framed record
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write_and_sync() -> None:
        os.write(fd, record)
        os.fdatasync(fd)

    try:
        benchmark.pedantic(write_and_sync, rounds=ROUNDS[1], iterations=1, warmup_rounds=WARMUP_ROUNDS)
    finally:
        os.close(fd)
    writes = path.stat().st_size // len(record)
    assert path.stat().st_size % len(record) == 0 and writes >= 1
    median = _median(benchmark)
    if median is not None:
        benchmark.extra_info["median_ms"] = round(median * 1e3, 3)
        benchmark.extra_info["records_per_s"] = round(1 / median)
        journal_one = _median_s.get("batch-1")
        ratio = ""
        if journal_one is not None:  # the journal's batch-1 benchmark ran first in this session
            benchmark.extra_info["journal_batch1_over_raw_median"] = round(journal_one / median, 2)
            ratio = f", journal batch=1 takes {journal_one / median:.2f}x as long"
        print(f"\nraw write+fdatasync of one record: {1 / median:,.0f} records/s, {median * 1e3:.2f} ms{ratio}")


@pytest.fixture(scope="module")
def million_record_journal(journal_root: Path) -> Path:
    """1M seeded 48-byte records in 16 MiB segments, written untimed then closed.

    ``fsync="interval"`` so that each ``wait`` returns once its batch is written: one commit per 1,000
    records, hence segments of the size asked (with "never" the writer could take everything at once).
    """
    directory = journal_root / "replay-1m"
    rng = random.Random(SEED)
    distinct = [rng.randbytes(PAYLOAD_BYTES) for _ in range(1000)]
    with Journal.open(directory, fsync="interval", segment_bytes=REPLAY_SEGMENT_BYTES) as journal:
        for _ in range(N_REPLAY // len(distinct)):
            journal.append_many(distinct)
            journal.wait(journal.last_lsn)
    return directory


@pytest.mark.benchmark(group="journal")
def test_open_and_replay(benchmark, million_record_journal: Path) -> None:
    directory = million_record_journal
    rng = random.Random(SEED)
    distinct = [rng.randbytes(PAYLOAD_BYTES) for _ in range(1000)]

    def recover() -> tuple[int, int, bytes]:
        with Journal.open(directory) as journal:
            count, last = 0, (0, b"")
            for record in journal.replay():
                count += 1
                last = record
            return count, last[0], last[1]

    count, last_lsn, last_payload = benchmark.pedantic(recover, rounds=REPLAY_ROUNDS, iterations=1, warmup_rounds=0)
    assert count == N_REPLAY and last_lsn == N_REPLAY and last_payload == distinct[-1]
    with Journal.open(directory) as journal:  # spot-check contents, not just the count
        sample = {lsn: payload for lsn, payload in journal.replay(after_lsn=N_REPLAY - 2000)}
    assert all(sample[lsn] == distinct[(lsn - 1) % 1000] for lsn in sample) and len(sample) == 2000

    segments = len(list(directory.glob("*.seg")))
    benchmark.extra_info["records"] = N_REPLAY
    benchmark.extra_info["segments"] = segments
    benchmark.extra_info["bytes_per_record"] = round(_disk_bytes(directory) / N_REPLAY, 2)
    median = _median(benchmark)
    if median is not None:
        benchmark.extra_info["median_s"] = round(median, 3)
        benchmark.extra_info["records_per_s"] = round(N_REPLAY / median)
        print(
            f"\njournal open+replay of {N_REPLAY:,} records ({segments} segments): "
            f"{N_REPLAY / median:,.0f} records/s, {median:.2f} s"
        )
