"""The write-ahead journal (``pyomni.journal``): round trips, fsync policies, group commit, and crashes.

Crash tests work at the file layer, the way TigerBeetle's simulator does with its faulty disk: a journal
is written and closed, then a *copy* of its files is damaged exactly as a crash or a bad disk would
leave it (cut at every byte of the last record, a flipped bit, a lost segment, a zero-filled tail), and
reopened. Storage failures (ENOSPC, EIO) are injected by replacing ``os.write`` / ``os.fdatasync`` for
the journal's segment descriptors only. Record boundaries are computed here from the payloads and the
documented format, independently of the module's parser.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyomni import errors
from pyomni.journal import (
    FSYNC_POLICIES,
    PROBLEM_KINDS,
    SEGMENT_HEADER_BYTES,
    SEGMENT_MAGIC,
    Journal,
    read_records,
    truncate,
    verify,
)

RECORD_HEADER = 8
OpenJournal = Callable[..., Journal]


# -- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def open_journal() -> Iterator[OpenJournal]:
    """``Journal.open`` that closes whatever it opened at teardown (a failed journal's close raises)."""
    opened: list[Journal] = []

    def open_(directory: Path, **options) -> Journal:
        journal = Journal.open(directory, **options)
        opened.append(journal)
        return journal

    yield open_
    for journal in opened:
        try:
            journal.close()
        except errors.StorageFailed:
            pass  # a test that broke it on purpose: the failure was what it checked


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def record_bytes(payload: bytes) -> bytes:
    """One record framed by the documented format, written independently of the module."""
    length = struct.pack("<I", len(payload))
    return length + struct.pack("<I", crc32c(length + payload)) + payload


def record_ends(payloads: list[bytes]) -> list[int]:
    """Byte offset just past each record of a segment holding ``payloads``."""
    ends, offset = [], SEGMENT_HEADER_BYTES
    for payload in payloads:
        offset += RECORD_HEADER + len(payload)
        ends.append(offset)
    return ends


def write_and_close(directory: Path, payloads: list[bytes], **options) -> None:
    with Journal.open(directory, **options) as journal:
        journal.wait(journal.append_many(payloads))


def replayed(directory: Path, after_lsn: int = 0, **options) -> list[tuple[int, bytes]]:
    with Journal.open(directory, **options) as journal:
        return list(journal.replay(after_lsn))


def copy_journal(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def is_segment_fd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").endswith(".seg")
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll: the writer seals a full segment just after it acknowledges the commit that filled it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def payloads_of(n: int, size: int = 24) -> list[bytes]:
    return [f"record-{i:06d}".encode().ljust(size, b".") for i in range(1, n + 1)]


# -- round trips and LSNs ------------------------------------------------------------------------


def test_round_trip(tmp_path, open_journal):
    journal = open_journal(tmp_path / "j")
    assert journal.append(b"one") == 1
    assert journal.append_many([b"two", b"", b"four" * 100]) == 4
    assert journal.append(bytearray(b"five")) == 5  # copied to bytes
    journal.wait(5)
    assert journal.durable_lsn == journal.written_lsn == journal.last_lsn == 5
    journal.close()
    assert replayed(tmp_path / "j") == [(1, b"one"), (2, b"two"), (3, b""), (4, b"four" * 100), (5, b"five")]


def test_on_disk_format_is_the_documented_one(tmp_path):
    write_and_close(tmp_path, [b"alpha", b"beta"])
    (segment,) = segment_files(tmp_path)
    assert segment.name == f"{1:020d}.seg"
    assert segment.read_bytes() == SEGMENT_MAGIC + struct.pack("<Q", 1) + record_bytes(b"alpha") + record_bytes(b"beta")


def test_lsns_continue_after_reopen_and_are_never_reused(tmp_path, open_journal):
    write_and_close(tmp_path, [b"a", b"b", b"c"])
    with Journal.open(tmp_path):
        pass  # opened and closed with no appends: an empty segment, LSN 4 next
    with Journal.open(tmp_path) as journal:
        assert journal.last_lsn == 3
        assert journal.append(b"d") == 4
        journal.wait(4)
    journal = open_journal(tmp_path)
    assert [lsn for lsn, _ in journal.replay()] == [1, 2, 3, 4]
    assert [p.name for p in segment_files(tmp_path)] == [f"{1:020d}.seg", f"{4:020d}.seg", f"{5:020d}.seg"]


def test_lsns_continue_after_everything_old_is_retired(tmp_path):
    with Journal.open(tmp_path, segment_bytes=64) as journal:
        for payload in payloads_of(5, 64):
            journal.wait(journal.append(payload))  # one commit each, so one segment each
        wait_until(lambda: journal.stats()["segments"] == 6)
        assert journal.retire(5) == 5
    assert [p.name for p in segment_files(tmp_path)] == [f"{6:020d}.seg"]  # empty, but it holds "LSN 6 next"
    with Journal.open(tmp_path) as journal:
        assert journal.last_lsn == 5
        assert list(journal.replay(after_lsn=5)) == []
        with pytest.raises(errors.JournalCorrupt, match="LSNs 1..5 are missing"):
            journal.replay(after_lsn=0)
        assert journal.append(b"x") == 6


def test_replay_after_lsn_skips_across_segments(tmp_path):
    payloads = payloads_of(40)
    with Journal.open(tmp_path, segment_bytes=200) as journal:
        for start in range(0, 40, 4):
            journal.wait(journal.append_many(payloads[start : start + 4]))
    assert len(segment_files(tmp_path)) > 3
    for after in (0, 1, 7, 8, 23, 39, 40, 100):
        got = replayed(tmp_path, after)
        assert got == [(lsn, payloads[lsn - 1]) for lsn in range(after + 1, 41)], after


def test_rotation_into_several_segments(tmp_path):
    payloads = payloads_of(30, 40)
    with Journal.open(tmp_path, segment_bytes=150) as journal:
        for payload in payloads:
            journal.wait(journal.append(payload))
    assert journal.stats()["segments"] == len(segment_files(tmp_path))
    files = segment_files(tmp_path)
    assert len(files) >= 10
    first_lsns = [int(p.name[:20]) for p in files]
    assert first_lsns == sorted(first_lsns) and first_lsns[0] == 1
    for path, first_lsn in zip(files, first_lsns):
        assert path.read_bytes()[:16] == SEGMENT_MAGIC + struct.pack("<Q", first_lsn)
    report = verify(tmp_path)
    assert report.ok and report.problem is None and report.records == 30
    assert [lsn for lsn, _ in replayed(tmp_path)] == list(range(1, 31))


def test_rotation_happens_only_between_group_commits(tmp_path):
    with Journal.open(tmp_path, segment_bytes=100) as journal:
        journal.wait(journal.append_many(payloads_of(50)))  # one commit far beyond segment_bytes
    files = segment_files(tmp_path)
    assert [p.name[:20] for p in files] == [f"{1:020d}", f"{51:020d}"]
    assert verify(tmp_path).segments[0].records == 50


def test_retire_deletes_only_whole_old_segments(tmp_path, open_journal):
    journal = open_journal(tmp_path, segment_bytes=100)
    for start in range(0, 12, 3):  # four commits of three records (>100 bytes each): one segment each
        journal.wait(journal.append_many(payloads_of(12)[start : start + 3]))
    journal.wait(journal.append(b"active"))  # LSN 13, in the active segment
    assert [p.name[:20].lstrip("0") for p in segment_files(tmp_path)] == ["1", "4", "7", "10", "13"]
    assert journal.retire(0) == 0
    assert journal.retire(5) == 1  # 1..3 go; 4..6 holds LSN 6 > 5, so it stays
    assert journal.retire(6) == 1
    assert journal.retire(6) == 0
    assert journal.retire(1_000) == 2  # everything but the active segment
    assert [p.name[:20].lstrip("0") for p in segment_files(tmp_path)] == ["13"]
    journal.close()
    assert replayed(tmp_path, after_lsn=12) == [(13, b"active")]
    with pytest.raises(errors.InvalidArgument):
        open_journal(tmp_path).retire(-1)


def test_replay_is_of_the_segments_found_at_open(tmp_path, open_journal):
    write_and_close(tmp_path, [b"a", b"b"], segment_bytes=10)
    journal = open_journal(tmp_path, segment_bytes=10)
    journal.wait(journal.append(b"c"))
    assert list(journal.replay()) == [(1, b"a"), (2, b"b")]
    journal.retire(2)
    with pytest.raises(errors.JournalCorrupt, match="missing"):
        journal.replay()


def test_close_is_idempotent_and_final(tmp_path):
    journal = Journal.open(tmp_path, fsync="never")
    lsn = journal.append_many([b"x", b"y"])
    journal.close()
    journal.close()
    assert journal.durable_lsn == lsn  # close synced whatever the policy
    journal.wait(lsn)  # already durable
    assert journal.sync() == lsn
    with pytest.raises(errors.FailedPrecondition, match="closed"):
        journal.append(b"z")
    with pytest.raises(errors.FailedPrecondition):
        journal.append_many([b"z"])
    with pytest.raises(errors.FailedPrecondition):
        journal.retire(10)
    assert replayed(tmp_path) == [(1, b"x"), (2, b"y")]


def test_stats(tmp_path, open_journal):
    write_and_close(tmp_path, [b"old"] * 3)
    journal = open_journal(tmp_path)
    journal.wait(journal.append_many([b"p" * 48] * 10))
    journal.wait(journal.append(b"q" * 48))
    stats = journal.stats()
    assert stats["records"] == 11
    assert stats["bytes"] == 11 * (48 + RECORD_HEADER)
    assert stats["commits"] == 2 and stats["fsyncs"] == 2
    assert stats["segments"] == 2
    assert stats["recovered_records"] == 3
    assert stats["last_lsn"] == stats["durable_lsn"] == stats["written_lsn"] == 14
    assert stats["policy"] == "always" and stats["pending"] == 0
    assert not stats["failed"] and not stats["closed"]


def test_bad_arguments_are_typed_errors(tmp_path, open_journal):
    with pytest.raises(errors.InvalidArgument) as caught:
        Journal.open(tmp_path, fsync="sometimes")
    assert caught.value.field == "fsync"
    for field, options in (("interval_ms", {"interval_ms": 0}), ("segment_bytes", {"segment_bytes": 0})):
        with pytest.raises(errors.InvalidArgument) as caught:
            Journal.open(tmp_path, **options)
        assert caught.value.field == field
    journal = open_journal(tmp_path)
    with pytest.raises(errors.InvalidArgument) as caught:
        journal.append("text")  # type: ignore[arg-type]
    assert caught.value.field == "payload"
    with pytest.raises(errors.InvalidArgument) as caught:
        journal.append_many([b"ok", 7])  # type: ignore[list-item]
    assert caught.value.field == "payloads[1]"
    assert journal.last_lsn == 0  # all or nothing
    with pytest.raises(errors.InvalidArgument):
        journal.wait(1)  # never assigned: it would block forever
    with pytest.raises(errors.InvalidArgument):
        journal.wait("1")  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument):
        journal.replay(-1)
    assert set(FSYNC_POLICIES) == {"always", "interval", "never"}


def test_a_directory_is_opened_by_one_journal_at_a_time(tmp_path, open_journal):
    open_journal(tmp_path)
    with pytest.raises(errors.FailedPrecondition, match="already open"):
        Journal.open(tmp_path)
    with pytest.raises(errors.FailedPrecondition):
        truncate(tmp_path, f"{1:020d}.seg", 0)


def test_open_creates_missing_directories_and_clears_unfinished_segments(tmp_path):
    directory = tmp_path / "a" / "b"
    write_and_close(directory, [b"x"])
    (directory / f"{2:020d}.seg.tmp").write_bytes(b"PYOM")  # a creation that never reached its rename
    assert replayed(directory) == [(1, b"x")]
    assert not list(directory.glob("*.tmp"))


def test_open_after_lsn_lines_a_new_journal_up_with_the_callers_state(tmp_path):
    with Journal.open(tmp_path / "new", after_lsn=500) as journal:  # e.g. a snapshot at 500, no journal yet
        assert journal.last_lsn == 500
        assert list(journal.replay(after_lsn=500)) == []
        assert journal.append(b"x") == 501
    with Journal.open(tmp_path / "new", after_lsn=500) as journal:
        assert list(journal.replay(after_lsn=500)) == [(501, b"x")]
    write_and_close(tmp_path / "short", [b"a", b"b", b"c"])
    with pytest.raises(errors.JournalCorrupt, match="records 4..10 are missing"):
        Journal.open(tmp_path / "short", after_lsn=10)
    with Journal.open(tmp_path / "short", after_lsn=3) as journal:
        assert journal.append(b"d") == 4


def test_read_records_reads_without_changing_anything(tmp_path):
    payloads = payloads_of(5)
    write_and_close(tmp_path, payloads)
    (segment,) = segment_files(tmp_path)
    os.truncate(segment, record_ends(payloads)[-1] - 3)  # a torn tail: skipped, not cut
    before = sorted((p.name, p.stat().st_size) for p in tmp_path.iterdir())
    assert list(read_records(tmp_path)) == [(i, payloads[i - 1]) for i in range(1, 5)]
    assert list(read_records(tmp_path, after_lsn=2)) == [(3, payloads[2]), (4, payloads[3])]
    assert sorted((p.name, p.stat().st_size) for p in tmp_path.iterdir()) == before
    flip_bit(segment, record_ends(payloads)[0] + 10, 2)
    with pytest.raises(errors.JournalCorrupt, match=re.escape(f"{segment}:{record_ends(payloads)[0]}")):
        read_records(tmp_path)
    with pytest.raises(errors.NotFound):
        read_records(tmp_path / "nowhere")


# -- fsync policies and group commit -------------------------------------------------------------


class FdatasyncProbe:
    """Replaces ``os.fdatasync``: counts calls on segment descriptors, can be slowed or held."""

    def __init__(self, delay: float = 0.0) -> None:
        self.real = os.fdatasync
        self.delay = delay
        self.calls = 0
        self.release = threading.Event()
        self.release.set()

    def __call__(self, fd: int) -> None:
        if is_segment_fd(fd):
            self.calls += 1
            self.release.wait()
            if self.delay:
                time.sleep(self.delay)
        self.real(fd)


def test_always_acknowledges_only_after_fdatasync(tmp_path, open_journal, monkeypatch):
    journal = open_journal(tmp_path, fsync="always")
    probe = FdatasyncProbe()
    probe.release.clear()  # hold the writer inside fdatasync
    monkeypatch.setattr(os, "fdatasync", probe)
    acknowledged = threading.Event()

    def append_and_wait() -> None:
        journal.wait(journal.append(b"durable"))
        acknowledged.set()

    waiter = threading.Thread(target=append_and_wait)
    waiter.start()
    deadline = time.monotonic() + 5
    while probe.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert probe.calls == 1  # written, now syncing
    assert not acknowledged.wait(0.1)  # ... and not acknowledged while the sync is held
    assert journal.durable_lsn == 0
    probe.release.set()
    waiter.join(5)
    assert acknowledged.is_set() and journal.durable_lsn == 1


def test_always_group_commits_concurrent_waiters(tmp_path, open_journal, monkeypatch):
    journal = open_journal(tmp_path, fsync="always")
    probe = FdatasyncProbe(delay=0.004)  # an fsync of this machine's disk
    monkeypatch.setattr(os, "fdatasync", probe)
    threads, per_thread = 16, 10

    def client(index: int) -> None:
        for i in range(per_thread):
            journal.wait(journal.append(f"{index}:{i}".encode()))

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    total = threads * per_thread
    assert journal.durable_lsn == total
    assert probe.calls <= total // 4, f"{probe.calls} fdatasync calls for {total} records: no group commit"
    assert journal.stats()["commits"] == probe.calls
    journal.close()
    assert sorted(payload for _, payload in replayed(tmp_path)) == sorted(
        f"{t}:{i}".encode() for t in range(threads) for i in range(per_thread)
    )


def test_append_never_blocks_on_io(tmp_path, open_journal, monkeypatch):
    journal = open_journal(tmp_path)
    gate = threading.Event()
    real_write = os.write

    def slow_write(fd: int, data) -> int:
        if is_segment_fd(fd):
            gate.wait()
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", slow_write)
    started = time.monotonic()
    for i in range(2_000):
        journal.append(b"%d" % i)
    assert time.monotonic() - started < 2.0  # the writer is stuck in write(); appends are not
    assert journal.written_lsn == 0
    with pytest.raises(errors.DeadlineExceeded):
        journal.wait(2_000, timeout=0.05)
    gate.set()
    journal.wait(2_000, timeout=10)
    assert journal.stats()["commits"] <= 2


def test_interval_acknowledges_writes_and_syncs_within_the_interval(tmp_path, open_journal, monkeypatch):
    journal = open_journal(tmp_path, fsync="interval", interval_ms=20.0)
    probe = FdatasyncProbe()
    probe.release.clear()
    monkeypatch.setattr(os, "fdatasync", probe)
    started = time.monotonic()
    lsn = journal.append_many([b"a", b"b"])
    journal.wait(lsn, timeout=5)  # returns once written, although fdatasync is held
    assert journal.written_lsn == lsn and journal.durable_lsn == 0
    deadline = time.monotonic() + 5
    while probe.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert probe.calls == 1 and time.monotonic() - started >= 0.015  # the idle writer synced at the interval
    probe.release.set()
    while journal.durable_lsn < lsn and time.monotonic() < deadline:
        time.sleep(0.001)
    assert journal.durable_lsn == lsn


def test_interval_coalesces_syncs_under_a_steady_stream(tmp_path, open_journal, monkeypatch):
    journal = open_journal(tmp_path, fsync="interval", interval_ms=30.0)
    probe = FdatasyncProbe()
    monkeypatch.setattr(os, "fdatasync", probe)
    started = time.monotonic()
    while time.monotonic() - started < 0.3:
        journal.wait(journal.append(b"tick"))
        time.sleep(0.001)
    commits = journal.stats()["commits"]
    assert commits > 50
    assert probe.calls <= 0.3 / 0.030 + 2  # about one per interval, not one per commit
    assert journal.sync() == journal.last_lsn == journal.durable_lsn


def test_never_syncs_only_when_asked_or_at_close(tmp_path, monkeypatch):
    journal = Journal.open(tmp_path, fsync="never")
    probe = FdatasyncProbe()
    monkeypatch.setattr(os, "fdatasync", probe)
    lsn = journal.append_many(payloads_of(100))
    journal.wait(lsn)  # returns at once
    deadline = time.monotonic() + 5
    while journal.written_lsn < lsn and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)
    assert journal.written_lsn == lsn and journal.durable_lsn == 0 and probe.calls == 0
    assert journal.sync() == lsn and probe.calls == 1
    journal.append(b"more")
    journal.close()
    assert probe.calls == 2 and journal.durable_lsn == lsn + 1


# -- fault injection: torn writes ----------------------------------------------------------------


def test_torn_write_at_every_byte_of_the_last_record(tmp_path, caplog):
    payloads = [b"first", b"second record", b"the last record, torn by a crash"]
    original = tmp_path / "original"
    write_and_close(original, payloads)
    (segment,) = segment_files(original)
    ends = record_ends(payloads)
    start, size = ends[1], ends[2]
    assert segment.stat().st_size == size
    for cut in range(start, size):
        directory = copy_journal(original, tmp_path / f"cut-{cut}")
        os.truncate(directory / segment.name, cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pyomni.journal"):
            journal = Journal.open(directory)
        try:
            assert list(journal.replay()) == [(1, payloads[0]), (2, payloads[1])], cut
            if cut > start:
                assert f"cut {cut - start} bytes of a torn record at {directory / segment.name}:{start}" in caplog.text
            else:
                assert "cut" not in caplog.text  # a clean record boundary: nothing torn
            assert journal.append(b"after the crash") == 3
        finally:
            journal.close()
        assert (directory / segment.name).stat().st_size == start
        assert [p for _, p in replayed(directory)] == [payloads[0], payloads[1], b"after the crash"]
        shutil.rmtree(directory)


def test_torn_segment_header_is_discarded(tmp_path, caplog):
    original = tmp_path / "original"
    write_and_close(original, [b"a", b"b"])
    write_and_close(original, [b"c"])  # a second segment, first LSN 3
    last = segment_files(original)[1]
    for cut in range(0, SEGMENT_HEADER_BYTES):
        directory = copy_journal(original, tmp_path / f"cut-{cut}")
        os.truncate(directory / last.name, cut)
        assert verify(directory).ok
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pyomni.journal"):
            with Journal.open(directory) as journal:
                assert list(journal.replay()) == [(1, b"a"), (2, b"b")]
                assert journal.append(b"again") == 3
        if cut:
            assert f"discarding {cut} bytes of a torn segment header at {directory / last.name}:0" in caplog.text
        assert [p for _, p in replayed(directory)] == [b"a", b"b", b"again"]
        shutil.rmtree(directory)


def test_zero_filled_tail_is_torn(tmp_path, caplog):
    write_and_close(tmp_path, [b"a", b"b"])
    (segment,) = segment_files(tmp_path)
    size = segment.stat().st_size
    with open(segment, "ab") as f:
        f.write(bytes(100))  # size updated by the crash, data blocks never written
    with caplog.at_level(logging.WARNING, logger="pyomni.journal"):
        assert replayed(tmp_path) == [(1, b"a"), (2, b"b")]
    assert f"cut 100 bytes of a torn record at {segment}:{size}" in caplog.text


def test_a_header_only_or_empty_last_segment_is_fine(tmp_path):
    write_and_close(tmp_path, [b"a"])
    (tmp_path / f"{2:020d}.seg").write_bytes(b"")  # created, crash before its header
    assert verify(tmp_path).problem is None
    assert replayed(tmp_path) == [(1, b"a")]
    assert verify(tmp_path).problem is None  # the open above left a header-only segment 2
    assert replayed(tmp_path) == [(1, b"a")]


# -- fault injection: corruption -----------------------------------------------------------------


def flip_bit(path: Path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    # where in record 2 (of 5), and which bit
    "payload": (RECORD_HEADER + 3, 0),
    "crc": (5, 6),
    "length-low-bit": (0, 0),  # one byte too long or too short: the checksum fails
    "length-high-bit": (3, 6),  # claims a gigabyte past the end of the file: looks torn, but is not
}


@pytest.mark.parametrize("where", sorted(CORRUPTIONS))
def test_a_flipped_bit_mid_file_is_corruption(tmp_path, where):
    payloads = payloads_of(5)
    write_and_close(tmp_path, payloads)
    (segment,) = segment_files(tmp_path)
    record_start = record_ends(payloads)[0]
    delta, bit = CORRUPTIONS[where]
    flip_bit(segment, record_start + delta, bit)
    with pytest.raises(errors.JournalCorrupt) as caught:
        Journal.open(tmp_path)
    assert f"{segment}:{record_start}" in str(caught.value)
    assert caught.value.reason == "JOURNAL_CORRUPT"
    problem = verify(tmp_path).problem
    assert problem is not None and (problem.kind, problem.file, problem.offset) == (
        "bad_checksum",
        segment.name,
        record_start,
    )
    assert segment.stat().st_size == record_ends(payloads)[-1]  # nothing was cut


def test_a_flipped_bit_in_the_last_record_is_a_torn_tail(tmp_path, caplog):
    # Indistinguishable from a torn write of the last record (the rule cuts it); said here so a
    # change of the rule is a visible decision.
    payloads = payloads_of(3)
    write_and_close(tmp_path, payloads)
    (segment,) = segment_files(tmp_path)
    flip_bit(segment, record_ends(payloads)[-1] - 1, 3)
    assert verify(tmp_path).problem.kind == "torn_tail"
    with caplog.at_level(logging.WARNING, logger="pyomni.journal"):
        assert [lsn for lsn, _ in replayed(tmp_path)] == [1, 2]
    assert "cut 32 bytes of a torn record" in caplog.text


def test_damage_in_a_segment_that_is_not_the_last_is_corruption(tmp_path):
    payloads = payloads_of(6)
    write_and_close(tmp_path, payloads[:3])
    write_and_close(tmp_path, payloads[3:])
    first = segment_files(tmp_path)[0]
    cut = record_ends(payloads[:3])[-1] - 5
    os.truncate(first, cut)  # torn-shaped, but a later segment exists
    start = record_ends(payloads[:3])[1]
    with pytest.raises(errors.JournalCorrupt, match=re.escape(f"{first}:{start}") + ".*not the last"):
        Journal.open(tmp_path)
    assert verify(tmp_path).problem.kind == "bad_checksum"


def test_a_missing_middle_segment_is_a_gap(tmp_path):
    with Journal.open(tmp_path, segment_bytes=50) as journal:
        for payload in payloads_of(4, 48):
            journal.wait(journal.append(payload))
    files = segment_files(tmp_path)
    files[1].unlink()
    with pytest.raises(
        errors.JournalCorrupt, match=re.escape(f"gap before journal segment {files[2]}:0") + ".*2..2 are missing"
    ):
        Journal.open(tmp_path)
    problem = verify(tmp_path).problem
    assert problem is not None and (problem.kind, problem.file, problem.offset) == ("gap", files[2].name, 0)


@pytest.mark.parametrize(
    "damage",
    ["magic", "lsn"],
)
def test_a_bad_segment_header_is_corruption(tmp_path, damage):
    write_and_close(tmp_path, [b"a"])
    write_and_close(tmp_path, [b"b"])
    first = segment_files(tmp_path)[0]
    flip_bit(first, 2 if damage == "magic" else 8, 0)
    with pytest.raises(errors.JournalCorrupt, match=re.escape(f"bad segment header at {first}:0")):
        Journal.open(tmp_path)
    problem = verify(tmp_path).problem
    assert problem is not None and (problem.kind, problem.file, problem.offset) == ("bad_header", first.name, 0)


# -- fault injection: storage failures -----------------------------------------------------------


def test_enospc_is_fatal_and_leaves_nothing_unacknowledged_but_a_torn_tail(tmp_path, open_journal, monkeypatch, caplog):
    journal = open_journal(tmp_path)
    journal.wait(journal.append_many([b"safe-1", b"safe-2"]))
    real_write = os.write
    writes = {"n": 0}

    def full_disk(fd: int, data) -> int:
        if not is_segment_fd(fd):
            return real_write(fd, data)
        writes["n"] += 1
        if writes["n"] == 1:
            return real_write(fd, bytes(data)[: len(data) // 2 + 3])  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with caplog.at_level(logging.CRITICAL, logger="pyomni.journal"):
        lsn = journal.append_many([b"lost-%d" % i for i in range(10)])
        with pytest.raises(errors.StorageFailed, match="No space left"):
            journal.wait(lsn, timeout=10)
    assert "failed" in caplog.text and caplog.records[-1].levelno == logging.CRITICAL
    assert journal.failed and journal.durable_lsn == 2
    journal.wait(2)  # acknowledged before the failure: still fine
    with pytest.raises(errors.StorageFailed):
        journal.append(b"later")
    with pytest.raises(errors.StorageFailed):
        journal.append_many([b"later"])
    with pytest.raises(errors.StorageFailed):
        journal.sync()
    with pytest.raises(errors.StorageFailed):
        journal.close()  # the first close reports the loss ...
    journal.close()  # ... and later ones are quiet
    monkeypatch.undo()
    records = replayed(tmp_path)
    assert records[:2] == [(1, b"safe-1"), (2, b"safe-2")]
    # whatever else survived is a whole, valid prefix of the failed commit; the torn rest was cut
    assert records[2:] == [(3 + i, b"lost-%d" % i) for i in range(len(records) - 2)]
    assert verify(tmp_path).problem is None


def test_failing_fdatasync_is_fatal(tmp_path, open_journal, monkeypatch, caplog):
    journal = open_journal(tmp_path)
    journal.wait(journal.append(b"ok"))
    real = os.fdatasync

    def broken(fd: int) -> None:
        if is_segment_fd(fd):
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", broken)
    waiters_errors: list[BaseException] = []

    def waiter() -> None:
        try:
            journal.wait(journal.append(b"never acknowledged"), timeout=10)
        except errors.StorageFailed as exc:
            waiters_errors.append(exc)

    threads = [threading.Thread(target=waiter) for _ in range(4)]
    with caplog.at_level(logging.CRITICAL, logger="pyomni.journal"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert len(waiters_errors) == 4  # every waiter woken with the failure
    assert all("Input/output error" in str(exc) for exc in waiters_errors)
    assert journal.failed and journal.durable_lsn == 1 and journal.stats()["failed"]
    assert "fdatasync" in caplog.text
    with pytest.raises(errors.StorageFailed):
        journal.append(b"x")


def test_failure_to_start_a_segment_is_fatal(tmp_path, open_journal, monkeypatch):
    journal = open_journal(tmp_path, segment_bytes=50)
    real_rename = os.rename

    def no_space(source, target) -> None:
        if str(source).endswith(".seg.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", no_space)
    journal.wait(journal.append(bytes(48)))  # acknowledged; then sealing its full segment fails
    wait_until(lambda: journal.failed)
    with pytest.raises(errors.StorageFailed, match="cannot start journal segment"):
        journal.append(b"x")
    assert not list(tmp_path.glob("*.tmp"))
    journal.close()  # everything appended was durable: nothing to report
    monkeypatch.undo()
    assert replayed(tmp_path) == [(1, bytes(48))]


CRASH_CHILD = """
import sys
from pyomni.journal import Journal
journal = Journal.open(sys.argv[1], fsync=sys.argv[2], interval_ms=2.0)
batch = 0
while True:
    batch += 1
    lsn = journal.append_many([b"%d:%d" % (batch, i) for i in range(batch % 7 + 1)])
    journal.wait(lsn)
    print(lsn, flush=True)  # acknowledged
"""


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_kill_9_loses_nothing_acknowledged(tmp_path, fsync):
    # "interval" acknowledges once written to the OS: that survives the death of the process (not of
    # the machine), which is all a kill -9 can test.
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, str(tmp_path), fsync], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acknowledged = 0
    for line in child.stdout:
        acknowledged = int(line)
        if acknowledged >= 300:
            break
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    child.stdout.close()
    records = replayed(tmp_path)
    assert len(records) >= acknowledged
    assert [lsn for lsn, _ in records] == list(range(1, len(records) + 1))
    assert verify(tmp_path).problem is None


# -- verify and truncate -------------------------------------------------------------------------


def test_verify_reports_each_kind_and_truncate_repairs_it(tmp_path):
    payloads = payloads_of(9, 40)
    original = tmp_path / "original"
    with Journal.open(original, segment_bytes=100) as journal:
        for start in range(0, 9, 3):
            journal.wait(journal.append_many(payloads[start : start + 3]))  # segments 1, 4, 7 (+ empty 10)
    names = [p.name for p in segment_files(original)]
    assert [int(n[:20]) for n in names] == [1, 4, 7, 10]
    ends = record_ends(payloads[:3])
    clean = verify(original)
    assert clean.ok and clean.problem is None and clean.records == 9
    assert [(s.file, s.first_lsn, s.records, s.bytes) for s in clean.segments] == [
        (names[0], 1, 3, ends[-1]),
        (names[1], 4, 3, ends[-1]),
        (names[2], 7, 3, ends[-1]),
        (names[3], 10, 0, SEGMENT_HEADER_BYTES),
    ]

    def damaged(label: str, harm: Callable[[Path], None]) -> Path:
        directory = copy_journal(original, tmp_path / label)
        harm(directory)
        return directory

    def tear_segment_7(directory: Path) -> None:
        (directory / names[3]).unlink()  # segment 7 becomes the last, then a crash tears its third record
        os.truncate(directory / names[2], ends[1] + 5)

    cases: dict[str, tuple[Callable[[Path], None], str, int, int]] = {
        # kind: (damage, the file and offset verify must report, how many records survive the truncate)
        "torn_tail": (tear_segment_7, names[2], ends[1], 8),
        "bad_checksum": (lambda d: flip_bit(d / names[1], ends[0] + 9, 1), names[1], ends[0], 4),
        "bad_header": (lambda d: flip_bit(d / names[1], 0, 0), names[1], 0, 3),
        "gap": (lambda d: (d / names[1]).unlink(), names[2], 0, 3),
    }
    assert set(cases) | {"missing"} == set(PROBLEM_KINDS)
    for kind, (harm, file, offset, kept) in cases.items():
        directory = damaged(kind, harm)
        report = verify(directory)
        assert report.problem is not None, kind
        assert (report.problem.kind, report.problem.file, report.problem.offset) == (kind, file, offset)
        assert str(directory / file) in report.problem.message
        assert report.ok == (kind == "torn_tail")
        if not report.ok:
            with pytest.raises(errors.JournalCorrupt):
                Journal.open(directory)
        removed = truncate(directory, report.problem.file, report.problem.offset)
        assert removed > 0
        assert verify(directory).problem is None
        assert [p for _, p in replayed(directory)] == payloads[:kept], kind

    missing = verify(tmp_path / "nowhere")
    assert missing.problem is not None and missing.problem.kind == "missing" and not missing.ok


def test_truncate_refuses_what_is_not_a_record_boundary(tmp_path):
    payloads = payloads_of(3)
    write_and_close(tmp_path, payloads)
    name = segment_files(tmp_path)[0].name
    for offset in (5, SEGMENT_HEADER_BYTES + 1, record_ends(payloads)[0] + 3, record_ends(payloads)[-1] + 1):
        with pytest.raises(errors.InvalidArgument) as caught:
            truncate(tmp_path, name, offset)
        assert caught.value.field == "offset"
    with pytest.raises(errors.NotFound):
        truncate(tmp_path, f"{99:020d}.seg", 0)
    with pytest.raises(errors.InvalidArgument):
        truncate(tmp_path, "journal.txt", 0)
    assert truncate(tmp_path, name, record_ends(payloads)[0]) == record_ends(payloads)[-1] - record_ends(payloads)[0]
    assert replayed(tmp_path) == [(1, payloads[0])]


# -- the crash property --------------------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payloads=st.lists(st.binary(max_size=40), min_size=1, max_size=12),
    segment_bytes=st.integers(min_value=20, max_value=300),
    cut_fraction=st.floats(min_value=0.0, max_value=1.0),
)
def test_a_cut_anywhere_in_the_final_file_keeps_exactly_the_whole_records_before_it(
    payloads, segment_bytes, cut_fraction
):
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(os, "fdatasync", lambda fd: None),
        mock.patch.object(os, "fsync", lambda fd: None),
    ):
        # durability is not under test here, only the format and the cut; syncs would cost ≈4 ms each
        directory = Path(tmp)
        with Journal.open(directory, segment_bytes=segment_bytes) as journal:
            for payload in payloads:
                journal.wait(journal.append(payload))  # one commit each, so segments rotate
        final = segment_files(directory)[-1]
        first_lsn = int(final.name[:20])
        size = final.stat().st_size
        cut = round(cut_fraction * size)
        os.truncate(final, cut)
        # the final file holds payloads[first_lsn - 1:]; keep the records that end at or before the cut
        whole = sum(1 for end in record_ends(payloads[first_lsn - 1 :]) if end <= cut)
        expected = [(lsn, payloads[lsn - 1]) for lsn in range(1, first_lsn + whole)]
        with Journal.open(directory) as journal:
            assert list(journal.replay()) == expected
            assert journal.append(b"next") == first_lsn + whole
