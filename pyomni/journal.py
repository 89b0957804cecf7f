"""The engine's write-ahead journal: an append-only, checksummed log of opaque records.

The picture (DESIGN.md §3, "Durability"): every command the engine commits is
encoded by the engine into one opaque ``bytes`` payload and appended here; the
journal gives it the next log sequence number (LSN: 1, 2, 3, ..., never
reissued) and a single writer thread makes it durable. Recovery is the newest
snapshot plus :meth:`Journal.replay` of the records after the snapshot's LSN.

On disk a journal is a directory of *segments*, ``{first_lsn:020d}.seg``::

    segment = magic b"PYOMNIJ1" | u64 LE first_lsn        (16-byte header)
              record*
    record  = u32 LE length | u32 LE crc32c | payload     (8 + length bytes)

The CRC-32C covers the four length bytes followed by the payload. Records carry
no LSN: a record's LSN is its segment's ``first_lsn`` plus its index there, so a
gap between segments is visible from the names alone.

Writing. :meth:`Journal.append` only queues the payload and assigns its LSN
under a small lock: it never touches the disk. A *commit* takes *everything*
pending, frames it into one buffer, issues one ``write`` and (for
``fsync="always"``) one ``fdatasync``, then wakes every :meth:`Journal.wait`
caller at once. An fsync costs 4 ms on many disks (0.2 ms on this project's
machines), and a commit of 1,000 records costs about as much as a commit of one:
durable throughput is a matter of batching. Whoever finds the disk idle does
the commit: a caller of :meth:`wait` whose record is not yet taken leads it
itself (PostgreSQL's backends flush the WAL the same way), so an acknowledged
record costs no hand-off to another thread -- two thread wake-ups, ≈0.1 ms on
this project's machines, more than the write -- and the callers that arrive
meanwhile wait and are carried by the next commit. The writer thread commits
what nobody waits for (``fsync="never"``, appends without a wait), serves
:meth:`sync`, the ``interval`` timer and :meth:`close`. One commit runs at a
time (``_io_busy``), so records reach the file in LSN order.

Failure. A failed write or fsync is fatal (:class:`pyomni.errors.StorageFailed`):
after it, whether the unacknowledged records reached the disk is unknowable
(a failed ``fsync`` may even have dropped dirty pages), so the journal refuses
everything until it is reopened, and reopening recovers exactly what the files
hold.

Recovery (the rule of TigerBeetle's journal). A damaged record is a *torn
tail* -- the normal trace of a crash in the middle of a write -- only when it is
in the last segment and nothing intact could follow it: the header is cut
short, or the record claims to run to or past the end of the file (or the rest
of the file is zero bytes), and no intact record starts anywhere after it.
:meth:`Journal.open` cuts a torn tail by itself and logs a warning. Any other
damage -- a bad checksum with an intact record after it, damage in an earlier
segment, a bad segment header, a gap between segments -- raises
:class:`pyomni.errors.JournalCorrupt` naming the file and byte offset; the
operator inspects it with :func:`verify` and may cut it with :func:`truncate`.

Examples
--------
>>> import tempfile
>>> from pyomni.journal import Journal
>>> with tempfile.TemporaryDirectory() as d:
...     with Journal.open(d) as journal:
...         lsn = journal.append(b"first")
...         journal.wait(journal.append_many([b"second", b"third"]))
...     with Journal.open(d) as journal:
...         print(list(journal.replay()), journal.append(b"fourth"))
[(1, b'first'), (2, b'second'), (3, b'third')] 4
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import logging
import math
import os
import re
import struct
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from crc32c import crc32c

from pyomni import errors

__all__ = [
    "FSYNC_POLICIES",
    "SEGMENT_MAGIC",
    "SEGMENT_HEADER_BYTES",
    "RECORD_HEADER_BYTES",
    "MAX_PAYLOAD_BYTES",
    "PROBLEM_KINDS",
    "Journal",
    "JournalProblem",
    "SegmentReport",
    "VerifyReport",
    "read_records",
    "verify",
    "truncate",
]

logger = logging.getLogger("pyomni.journal")

#: The accepted values of ``Journal.open(fsync=...)``.
FSYNC_POLICIES = ("always", "interval", "never")
FsyncPolicy = Literal["always", "interval", "never"]

#: The first eight bytes of every segment file.
SEGMENT_MAGIC = b"PYOMNIJ1"
#: Segment header: magic, then the u64 LSN of the segment's first record.
SEGMENT_HEADER_BYTES = 16
#: Record header: u32 length, then u32 CRC-32C of (length bytes + payload).
RECORD_HEADER_BYTES = 8
#: The length field is a u32.
MAX_PAYLOAD_BYTES = 0xFFFF_FFFF

#: What :func:`verify` can find, in the order a scan meets them.
PROBLEM_KINDS = ("torn_tail", "bad_checksum", "bad_header", "gap", "missing")
ProblemKind = Literal["torn_tail", "bad_checksum", "bad_header", "gap", "missing"]

_SEGMENT_HEADER = struct.Struct("<8sQ")
_RECORD_HEADER = struct.Struct("<II")
_LENGTH = struct.Struct("<I")
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
_TMP_SUFFIX = ".tmp"
_BYTES_ONLY = {bytes}
# The CRC of the four length bytes, by length: payloads of one kind mostly share a few lengths, and
# skipping that C call is a quarter of the framing cost. Bounded so odd workloads cannot grow it.
_LENGTH_CRC_CACHE_MAX = 4096


def _segment_name(first_lsn: int) -> str:
    return f"{first_lsn:020d}.seg"


# -- journals left open at interpreter exit ----------------------------------------------------------
# The writer is a daemon thread (a forgotten journal must not keep a process alive), so whatever it
# had not written when the interpreter exits would be lost: with fsync "never" or "interval" that is
# the last milliseconds a clean exit of an embedding program acknowledged. Close them first.
_OPEN_JOURNALS: weakref.WeakSet[Journal] = weakref.WeakSet()


@atexit.register
def _close_open_journals() -> None:
    for journal in list(_OPEN_JOURNALS):
        try:
            journal.close()
        except errors.PyomniError as exc:
            logger.error("could not close journal %s at exit: %s", journal.directory, exc)


# -- scanning (shared by open, verify and truncate) ----------------------------------------------


#: How long the writer thread leaves appended records alone: with ``fsync="always"`` or
#: ``"interval"`` a record's waiter commits it (see ``Journal.wait``); what nobody claimed in this
#: time (appended without a wait, waited for with a deadline, or ``fsync="never"``) the writer
#: commits, all of it at once. Appends wake the writer only when it sleeps (after QUIET_LOOKS).
ORPHAN_S = 0.002
#: Looks in a row that find nothing before the writer sleeps until woken (500 x 2 ms: a second).
QUIET_LOOKS = 500


@dataclass(frozen=True)
class JournalProblem:
    """The first thing wrong with a journal directory, as found by :func:`verify`.

    Attributes
    ----------
    kind : str
        One of :data:`PROBLEM_KINDS`: ``"torn_tail"`` (a record cut short at the end of the last
        segment: :meth:`Journal.open` cuts it by itself), ``"bad_checksum"`` (any other damaged record:
        checksum mismatch with data after it, or a cut-short record in a segment that is not the last),
        ``"bad_header"`` (wrong magic, a header LSN that disagrees with the file name, or a header cut
        short in a segment that is not the last), ``"gap"`` (a segment does not start right after the
        previous one ends), ``"missing"`` (the directory or a segment file vanished or cannot be read).
    file : str
        The segment's file name (``"00000000000000000001.seg"``), or the directory for ``"missing"``.
    offset : int
        Byte offset in ``file`` where the damage starts: a record boundary (0 for header and gap
        problems). :func:`truncate` accepts it as is.
    message : str
        A human-readable explanation naming the full path and the offset.

    Examples
    --------
    >>> JournalProblem("gap", "00000000000000000101.seg", 0, "...").kind
    'gap'
    """

    kind: ProblemKind
    file: str
    offset: int
    message: str


@dataclass(frozen=True)
class SegmentReport:
    """One segment file as :func:`verify` found it.

    Attributes
    ----------
    file : str
        The file name.
    first_lsn : int
        The LSN of its first record (from the name).
    records : int
        Intact records from the start of the file up to its first damage (all of them if none).
    bytes : int
        The file's size.
    valid_bytes : int
        The size of its intact prefix (header plus the intact records); equals ``bytes`` when undamaged.

    Examples
    --------
    >>> SegmentReport("00000000000000000001.seg", 1, 3, 100, 100).last_lsn
    3
    """

    file: str
    first_lsn: int
    records: int
    bytes: int
    valid_bytes: int

    @property
    def last_lsn(self) -> int:
        """LSN of the last intact record (``first_lsn - 1`` when the segment holds none)."""
        return self.first_lsn + self.records - 1


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found in a journal directory.

    Attributes
    ----------
    directory : str
        The directory scanned.
    segments : tuple of SegmentReport
        Every segment file, in LSN order.
    problem : JournalProblem or None
        The first problem in LSN order, or ``None``.

    Examples
    --------
    >>> VerifyReport("/j", (), None).ok
    True
    """

    directory: str
    segments: tuple[SegmentReport, ...]
    problem: JournalProblem | None

    @property
    def ok(self) -> bool:
        """True when :meth:`Journal.open` succeeds without the operator: no problem, or only a torn tail."""
        return self.problem is None or self.problem.kind == "torn_tail"

    @property
    def records(self) -> int:
        """Intact records over all segments."""
        return sum(segment.records for segment in self.segments)


@dataclass
class _Segment:
    """A segment the journal holds: where it is, which LSNs it covers and how many bytes are valid."""

    path: Path
    first_lsn: int
    records: int
    end: int  # size of the intact prefix: replay reads exactly this much

    @property
    def last_lsn(self) -> int:
        return self.first_lsn + self.records - 1


@dataclass
class _Scan:
    """The result of scanning one segment file."""

    name: str
    path: Path
    first_lsn: int
    size: int
    records: int = 0
    end: int = 0
    # The file's own damage, as (shape, offset, detail); the directory-level scan turns the shape into
    # a problem kind, because whether damage is a torn tail depends on the segment being the last.
    shape: Literal["short_header", "bad_header", "torn", "damaged"] | None = None
    offset: int = 0
    detail: str = ""


def _walk_intact(data: bytes, start: int) -> tuple[int, int]:
    """Count intact records from ``start``: returns (records, offset just past the last intact one).

    The hot loop of recovery (≈2.5M records/s): one ``unpack_from`` and one C CRC call per record on a
    memoryview of the whole file, read with a single ``read``.
    """
    view = memoryview(data)
    size = len(data)
    unpack = _RECORD_HEADER.unpack_from
    length_crc: dict[int, int] = {}
    offset = start
    records = 0
    while offset + RECORD_HEADER_BYTES <= size:
        length, stored = unpack(data, offset)
        end = offset + RECORD_HEADER_BYTES + length
        if end > size:
            break
        seed = length_crc.get(length)
        if seed is None:
            seed = length_crc[length] = crc32c(view[offset : offset + 4])
        if crc32c(view[offset + RECORD_HEADER_BYTES : end], seed) != stored:
            break
        offset = end
        records += 1
    return records, offset


def _record_is_intact(data: bytes, view: memoryview, offset: int) -> bool:
    size = len(data)
    if offset + RECORD_HEADER_BYTES > size:
        return False
    length, stored = _RECORD_HEADER.unpack_from(data, offset)
    end = offset + RECORD_HEADER_BYTES + length
    return end <= size and crc32c(view[offset + RECORD_HEADER_BYTES : end], crc32c(view[offset : offset + 4])) == stored


def _intact_record_after(data: bytes, start: int) -> int | None:
    """Offset of the first intact record starting anywhere after ``start``, or None.

    This is what tells a torn write from corruption when a record claims to run past the end of the
    file: a torn write leaves nothing intact behind it, but a flipped bit in the length of a record in
    the middle of the segment does -- its successor is still there, byte for byte. The scan is byte by
    byte; after a real crash it covers at most the one partial record.
    """
    view = memoryview(data)
    for offset in range(start + 1, len(data) - RECORD_HEADER_BYTES + 1):
        if _record_is_intact(data, view, offset):
            return offset
    return None


def _scan_segment(name: str, path: Path, data: bytes) -> _Scan:
    """Validate one segment file's header and records (its place in the directory is checked by the caller)."""
    first_lsn = int(name[:20])
    size = len(data)
    scan = _Scan(name=name, path=path, first_lsn=first_lsn, size=size)
    if size < SEGMENT_HEADER_BYTES:
        scan.shape, scan.detail = "short_header", f"the file is {size} bytes, shorter than its 16-byte header"
        return scan
    magic, header_lsn = _SEGMENT_HEADER.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        scan.shape, scan.detail = "bad_header", f"magic {magic!r} is not {SEGMENT_MAGIC!r}"
        return scan
    if header_lsn != first_lsn:
        scan.shape, scan.detail = "bad_header", f"the header says first LSN {header_lsn}, the file name {first_lsn}"
        return scan
    scan.records, scan.end = _walk_intact(data, SEGMENT_HEADER_BYTES)
    if scan.end == size:
        return scan
    offset = scan.offset = scan.end
    if offset + RECORD_HEADER_BYTES > size:
        torn_shape = True
        scan.detail = f"record header cut short: {size - offset} of {RECORD_HEADER_BYTES} bytes"
    else:
        length, stored = _RECORD_HEADER.unpack_from(data, offset)
        claimed_end = offset + RECORD_HEADER_BYTES + length
        if claimed_end > size:
            scan.detail = f"record claims {length} bytes but the file ends {size - offset - 8} bytes after its header"
        else:
            scan.detail = f"record of {length} bytes fails its checksum (stored 0x{stored:08x})"
        # A crash can also leave the tail zero-filled (size updated, data blocks never written).
        torn_shape = claimed_end >= size or data.count(0, offset) == size - offset
    if torn_shape:
        after = _intact_record_after(data, offset)
        if after is not None:
            scan.shape = "damaged"
            scan.detail += f", yet an intact record starts at offset {after}, so this is not a torn write"
            return scan
        scan.shape = "torn"
    else:
        scan.shape = "damaged"
    return scan


def _read_whole(path: Path) -> bytes:
    with open(path, "rb", buffering=0) as f:
        return f.readall()


def _segment_names(directory: Path) -> list[str]:
    # 20-digit zero-padded names sort in LSN order.
    return sorted(name for name in os.listdir(directory) if _SEGMENT_NAME.match(name))


@dataclass
class _Inspection:
    scans: list[_Scan]
    problem: JournalProblem | None


def _inspect(directory: Path) -> _Inspection:
    """Scan every segment of ``directory`` in LSN order; the first problem decides what open does."""
    scans: list[_Scan] = []
    problem: JournalProblem | None = None
    names = _segment_names(directory)
    expected_lsn: int | None = None
    for index, name in enumerate(names):
        path = directory / name
        is_last = index == len(names) - 1
        try:
            data = _read_whole(path)
        except FileNotFoundError:
            if problem is None:
                problem = JournalProblem("missing", name, 0, f"journal segment {path} vanished during the scan")
            continue
        except OSError as exc:
            if problem is None:
                problem = JournalProblem("missing", name, 0, f"journal segment {path} cannot be read: {exc}")
            continue
        scan = _scan_segment(name, path, data)
        scans.append(scan)
        if problem is None:
            problem = _problem_of(scan, is_last, expected_lsn)
        expected_lsn = scan.first_lsn + scan.records
    return _Inspection(scans, problem)


def _problem_of(scan: _Scan, is_last: bool, expected_lsn: int | None) -> JournalProblem | None:
    where = f"{scan.path}:{scan.offset}"
    hint = "(inspect with `pyomni journal verify`, cut with `pyomni journal truncate`)"
    # The name is checked first: it alone says which LSNs the file should hold, even if its header is torn.
    if expected_lsn is not None and scan.first_lsn != expected_lsn:
        what = (
            f"LSNs {expected_lsn}..{scan.first_lsn - 1} are missing"
            if scan.first_lsn > expected_lsn
            else f"it overlaps the previous segment, which ends at LSN {expected_lsn - 1}"
        )
        message = f"gap before journal segment {scan.path}:0: it starts at LSN {scan.first_lsn}, {what} {hint}"
        return JournalProblem("gap", scan.name, 0, message)
    if scan.shape == "short_header" and is_last:
        return JournalProblem("torn_tail", scan.name, 0, f"torn segment header at {where}: {scan.detail}")
    if scan.shape in ("short_header", "bad_header"):
        return JournalProblem("bad_header", scan.name, 0, f"bad segment header at {where}: {scan.detail} {hint}")
    if scan.shape == "torn" and is_last:
        return JournalProblem("torn_tail", scan.name, scan.offset, f"torn record at {where}: {scan.detail}")
    if scan.shape in ("torn", "damaged"):
        last = "" if is_last else " in a segment that is not the last"
        return JournalProblem(
            "bad_checksum", scan.name, scan.offset, f"corrupt record at {where}{last}: {scan.detail} {hint}"
        )
    return None


def _check_replayable(directory: Path, first_held: int, last_lsn: int, after_lsn: int) -> None:
    """Raise unless every record after ``after_lsn`` up to ``last_lsn`` is still held."""
    if after_lsn < last_lsn and first_held > after_lsn + 1:
        raise errors.JournalCorrupt(
            f"journal {directory} cannot replay after LSN {after_lsn}: its first record is LSN "
            f"{first_held}, so LSNs {after_lsn + 1}..{first_held - 1} are missing (retired or deleted)"
        )


def _replay_segments(segments: list[_Segment], after_lsn: int) -> Iterator[tuple[int, bytes]]:
    unpack_length = _LENGTH.unpack_from
    for segment in segments:
        try:
            with open(segment.path, "rb", buffering=0) as f:
                data = f.read(segment.end)
        except OSError as exc:
            raise errors.JournalCorrupt(f"journal segment {segment.path}:0 cannot be read for replay: {exc}") from exc
        if len(data) != segment.end or data[:8] != SEGMENT_MAGIC:
            raise errors.JournalCorrupt(
                f"journal segment {segment.path}:0 changed since open (now {len(data)} bytes, expected {segment.end})"
            )
        # The records were checksummed at open and old segments are never written again, so replay
        # only walks the lengths: it is twice as fast as the validating scan.
        offset = SEGMENT_HEADER_BYTES
        lsn = segment.first_lsn
        while lsn <= after_lsn:  # skip without copying payloads
            offset += RECORD_HEADER_BYTES + unpack_length(data, offset)[0]
            lsn += 1
        end = segment.end
        while offset < end:
            start = offset + RECORD_HEADER_BYTES
            offset = start + unpack_length(data, offset)[0]
            yield lsn, data[start:offset]
            lsn += 1


# -- file-system helpers -------------------------------------------------------------------------


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """One ``os.write`` loop: a write may be partial (signals, pipes, the 2 GiB cap of Linux)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # never for a regular file; do not spin if it happens
            raise OSError(errno.EIO, "os.write wrote nothing")
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_directory(directory: Path) -> int:
    """flock the directory itself: two writers on one journal would interleave records."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise errors.FailedPrecondition(
            f"journal directory {directory} is already open (by this or another process)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock_directory(fd: int) -> None:
    os.close(fd)  # closing the descriptor drops its flock


def _create_segment(directory: Path, first_lsn: int) -> tuple[int, Path]:
    """Create ``{first_lsn}.seg`` with its header durable, and return an O_APPEND descriptor on it.

    The header is written to a temporary name and renamed into place, so a crash never leaves a segment
    with a torn header, and an empty segment of the same name (a journal opened and closed with no
    appends) is replaced atomically: the next LSN is on disk at every instant, so it is never reissued.
    """
    path = directory / _segment_name(first_lsn)
    tmp = directory / (path.name + _TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, _SEGMENT_HEADER.pack(SEGMENT_MAGIC, first_lsn))
        os.fdatasync(fd)
        os.rename(tmp, path)
        _fsync_directory(directory)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass  # best effort: a stale .tmp is deleted at the next open anyway
        raise
    return fd, path


def _as_payload(payload: Any) -> bytes:
    """A payload as immutable bytes (a bytearray could change before the writer frames it)."""
    if type(payload) is not bytes:
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise errors.InvalidArgument(
                f"a journal payload must be bytes, not {type(payload).__name__}", field="payload"
            )
        payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise errors.InvalidArgument(
            f"a journal payload is at most {MAX_PAYLOAD_BYTES} bytes, not {len(payload)}", field="payload"
        )
    return payload


def _check_lsn(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise errors.InvalidArgument(f"{field} must be an integer >= 0, not {value!r}", field=field)
    return value


# -- the journal ---------------------------------------------------------------------------------


class Journal:
    """An append-only journal of byte payloads with LSNs, made durable by one group-committing writer thread.

    Create it with :meth:`Journal.open`, never directly. Every method is thread-safe.

    Durability is chosen once, at open (``fsync=``):

    * ``"always"`` -- :meth:`wait` returns once the record is written and ``fdatasync``'ed (the
      server's default: nothing acknowledged is ever lost);
    * ``"interval"`` -- :meth:`wait` returns once the record is written to the OS (it survives a
      ``kill -9`` of the process, not a power cut); it is ``fdatasync``'ed at most ``interval_ms``
      after it was written;
    * ``"never"`` -- :meth:`wait` returns at once; data is ``fdatasync``'ed only by :meth:`sync`,
      at :meth:`close`, and when a full segment is sealed.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     journal = Journal.open(d, fsync="always")
    ...     lsn = journal.append_many([b"a", b"b"])
    ...     journal.wait(lsn)
    ...     print(lsn, journal.durable_lsn >= lsn)
    ...     journal.close()
    2 True
    """

    def __init__(
        self,
        directory: Path,
        lock_fd: int,
        policy: FsyncPolicy,
        interval_s: float,
        segment_bytes: int,
        recovered: list[_Segment],
        next_lsn: int,
        recovered_records: int,
    ) -> None:
        self._directory = directory
        self._lock_fd = lock_fd
        self._policy: FsyncPolicy = policy
        self._interval_s = interval_s
        self._segment_bytes = segment_bytes

        # One lock, two conditions: appenders wake only the writer, the writer wakes only waiters.
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._done = threading.Condition(self._lock)

        # Guarded by _lock.
        self._pending: list[bytes] = []
        self._last_lsn = next_lsn - 1  # last assigned
        self._taken_lsn = next_lsn - 1  # last taken by a commit
        self._written_lsn = next_lsn - 1
        self._durable_lsn = next_lsn - 1
        self._sync_target = 0
        self._unsynced_since = 0.0  # monotonic time of the first write not yet fdatasync'ed
        self._closing = False
        self._closed = False
        self._io_busy = False  # a commit is running (the writer's or a waiting caller's): one at a time
        self._writer_idle = False  # the writer sleeps until notified (else it looks every ORPHAN_S)
        self._failure: tuple[str, BaseException] | None = None
        self._failure_reported = False

        # Segments other than the active one, oldest first; _replayable is the prefix found at open.
        # Guarded by _segments_lock (the writer appends on rotation, retire() removes).
        self._segments_lock = threading.Lock()
        self._segments: list[_Segment] = list(recovered)
        self._replayable: list[_Segment] = list(recovered)
        self._recovered_last_lsn = next_lsn - 1
        self._recovered_records = recovered_records

        # Owned by whoever runs the commit (``_io_busy``), and by open before the writer starts.
        self._fd, path = _create_segment(directory, next_lsn)
        self._active = _Segment(path, next_lsn, 0, SEGMENT_HEADER_BYTES)
        self._length_crc: dict[int, int] = {}
        self._records_written = 0
        self._bytes_written = 0
        self._commits = 0
        self._fsyncs = 0

        self._thread = threading.Thread(target=self._run, name=f"pyomni-journal-writer:{directory}", daemon=True)
        self._thread.start()
        _OPEN_JOURNALS.add(self)

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        fsync: str = "always",
        interval_ms: float = 5.0,
        segment_bytes: int = 64 << 20,
        after_lsn: int = 0,
    ) -> Journal:
        """Open (or create) the journal in ``directory``: recover it, start a new segment and the writer.

        Existing segments are scanned in LSN order and validated. A torn tail of the last segment is
        cut (and logged as a warning); any other damage raises. New records always go to a new segment
        whose first LSN follows the last intact record: an old file is never appended to.

        Parameters
        ----------
        directory : str or os.PathLike
            The journal's directory; created (with its parents) if missing.
        fsync : {"always", "interval", "never"}
            When :meth:`wait` returns and when data is ``fdatasync``'ed (see :class:`Journal`).
        interval_ms : float
            For ``fsync="interval"``: the longest a written record stays un-synced.
        segment_bytes : int
            A segment is sealed and a new one started once it exceeds this size (checked between
            group commits, so a segment may exceed it by one commit).
        after_lsn : int
            The LSN the caller's state already includes (its snapshot's). A directory holding no
            segment (new, or emptied) starts numbering at ``after_lsn + 1``, so the journal's LSNs line
            up with the caller's; a journal that ends before ``after_lsn`` raises, since records that
            state includes are missing from it.

        Returns
        -------
        Journal
            The open journal; close it with :meth:`close` (or use it as a context manager).

        Raises
        ------
        pyomni.errors.InvalidArgument
            A bad ``fsync``, ``interval_ms`` or ``segment_bytes`` (``field`` names it).
        pyomni.errors.JournalCorrupt
            Damage other than a torn tail (the message names the file and the byte offset), or the
            journal ends before ``after_lsn``.
        pyomni.errors.FailedPrecondition
            The directory is already open by another :class:`Journal` (in any process).
        pyomni.errors.StorageFailed
            The directory or a segment cannot be created, read, cut or synced.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with Journal.open(d, fsync="interval", interval_ms=2.0) as journal:
        ...         print(journal.last_lsn, journal.stats()["policy"])
        0 interval
        """
        if fsync not in FSYNC_POLICIES:
            raise errors.InvalidArgument(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}", field="fsync")
        if (
            isinstance(interval_ms, bool)
            or not isinstance(interval_ms, (int, float))
            or not (math.isfinite(interval_ms) and interval_ms > 0)
        ):
            raise errors.InvalidArgument(
                f"interval_ms must be a positive number, not {interval_ms!r}", field="interval_ms"
            )
        if isinstance(segment_bytes, bool) or not isinstance(segment_bytes, int) or segment_bytes <= 0:
            raise errors.InvalidArgument(
                f"segment_bytes must be a positive integer, not {segment_bytes!r}", field="segment_bytes"
            )
        after_lsn = _check_lsn(after_lsn, "after_lsn")
        path = Path(directory)
        try:
            if not path.is_dir():
                path.mkdir(parents=True, exist_ok=True)
                _fsync_directory(path.parent)  # the new directory's entry must survive a crash too
            lock_fd = _lock_directory(path)
        except OSError as exc:
            raise errors.StorageFailed(f"cannot open the journal directory {path}: {exc}") from exc
        try:
            recovered, next_lsn, records = _recover(path, after_lsn)
            policy = cast(FsyncPolicy, fsync)
            return cls(path, lock_fd, policy, interval_ms / 1000.0, segment_bytes, recovered, next_lsn, records)
        except OSError as exc:
            _unlock_directory(lock_fd)
            raise errors.StorageFailed(f"cannot recover the journal in {path}: {exc}") from exc
        except BaseException:
            _unlock_directory(lock_fd)
            raise

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Journal({str(self._directory)!r}, fsync={self._policy!r}, last_lsn={self._last_lsn}, "
            f"durable_lsn={self._durable_lsn}{', closed' if self._closing else ''})"
        )

    # -- reading ---------------------------------------------------------------------------------

    def replay(self, after_lsn: int = 0) -> Iterator[tuple[int, bytes]]:
        """Iterate ``(lsn, payload)`` of every record with ``lsn > after_lsn`` found at open, in order.

        Segments are read lazily, one whole file at a time (memory stays at one segment). Records
        appended since open are not included: they are the engine's own, already applied.

        Parameters
        ----------
        after_lsn : int
            Skip records up to and including this LSN (the LSN of the snapshot being recovered).

        Returns
        -------
        Iterator of (int, bytes)
            The records, oldest first.

        Raises
        ------
        pyomni.errors.JournalCorrupt
            At the call: records after ``after_lsn`` are gone (retired, or segments deleted), i.e. the
            journal's first record is later than ``after_lsn + 1``. During iteration: a segment vanished
            or changed since open.
        pyomni.errors.InvalidArgument
            ``after_lsn`` is not an integer >= 0.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with Journal.open(d) as journal:
        ...         _ = journal.append_many([b"a", b"b", b"c"])
        ...     with Journal.open(d) as journal:
        ...         print(list(journal.replay(after_lsn=1)))
        [(2, b'b'), (3, b'c')]
        """
        after_lsn = _check_lsn(after_lsn, "after_lsn")
        with self._segments_lock:
            segments = [segment for segment in self._replayable if segment.last_lsn > after_lsn]
            first_held = self._first_held_lsn_locked()
        _check_replayable(self._directory, first_held, self._recovered_last_lsn, after_lsn)
        return _replay_segments(segments, after_lsn)

    def _first_held_lsn_locked(self) -> int:
        if self._segments:
            return self._segments[0].first_lsn
        return self._active.first_lsn

    # -- writing ---------------------------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Queue one record and return its LSN; the writer thread makes it durable (see :meth:`wait`).

        O(1) under a small lock: no I/O and no framing on the caller's thread.

        Parameters
        ----------
        payload : bytes
            The record (a bytearray or memoryview is copied to bytes); at most 4 GiB - 1.

        Returns
        -------
        int
            The record's LSN.

        Raises
        ------
        pyomni.errors.StorageFailed
            The journal has failed (a write or fsync failed); reopen it.
        pyomni.errors.FailedPrecondition
            The journal is closed.
        pyomni.errors.InvalidArgument
            ``payload`` is not bytes-like or too long.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with Journal.open(d) as journal:
        ...         print(journal.append(b"x"), journal.append(b"y"))
        1 2
        """
        if type(payload) is not bytes or len(payload) > MAX_PAYLOAD_BYTES:
            payload = _as_payload(payload)
        with self._lock:
            if self._failure is not None or self._closing:
                self._raise_unwritable_locked()
            self._pending.append(payload)
            lsn = self._last_lsn = self._last_lsn + 1
            if self._writer_idle:  # otherwise the writer looks again within ORPHAN_S
                self._writer_idle = False
                self._work.notify()
        return lsn

    def append_many(self, payloads: Sequence[bytes]) -> int:
        """Queue several records with consecutive LSNs; return the last one.

        All or nothing: if one payload is invalid, none is queued.

        Parameters
        ----------
        payloads : sequence of bytes
            The records, in order.

        Returns
        -------
        int
            The LSN of the last record (:attr:`last_lsn` unchanged when ``payloads`` is empty).

        Raises
        ------
        pyomni.errors.StorageFailed
            The journal has failed.
        pyomni.errors.FailedPrecondition
            The journal is closed.
        pyomni.errors.InvalidArgument
            A payload is not bytes-like or too long (``field="payloads[i]"``).

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with Journal.open(d) as journal:
        ...         print(journal.append_many([b"a", b"b", b"c"]), journal.append_many([]))
        3 3
        """
        items = list(payloads)
        # Checked with C-level map()s first: a third of the cost of a per-item loop on large batches.
        if items and (set(map(type, items)) != _BYTES_ONLY or max(map(len, items)) > MAX_PAYLOAD_BYTES):
            for index, payload in enumerate(items):
                try:
                    items[index] = _as_payload(payload)
                except errors.InvalidArgument as exc:
                    raise errors.InvalidArgument(str(exc), field=f"payloads[{index}]") from None
        with self._lock:
            if self._failure is not None or self._closing:
                self._raise_unwritable_locked()
            if not items:
                return self._last_lsn
            self._pending.extend(items)
            lsn = self._last_lsn = self._last_lsn + len(items)
            if self._writer_idle:
                self._writer_idle = False
                self._work.notify()
        return lsn

    def wait(self, lsn: int, timeout: float | None = None) -> None:
        """Block until ``lsn`` is acknowledged under the journal's fsync policy.

        ``"always"``: written and ``fdatasync``'ed. ``"interval"``: written to the OS. ``"never"``:
        returns at once. Without a ``timeout``, a caller that finds the disk idle and its record not
        yet taken runs the commit itself (everything pending goes with it); with one, the writer
        thread commits and the caller only waits, so the deadline holds even if the disk hangs.

        Parameters
        ----------
        lsn : int
            An LSN returned by :meth:`append` / :meth:`append_many` (or any earlier one).
        timeout : float, optional
            Seconds to wait at most; ``None`` waits as long as it takes.

        Raises
        ------
        pyomni.errors.StorageFailed
            The journal failed before ``lsn`` was acknowledged.
        pyomni.errors.DeadlineExceeded
            ``timeout`` passed first (the record may still become durable).
        pyomni.errors.InvalidArgument
            ``lsn`` was never assigned.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with Journal.open(d) as journal:
        ...         journal.wait(journal.append(b"x"), timeout=10)
        ...         print(journal.durable_lsn)
        1
        """
        policy = self._policy
        # Fast path without the lock: the counters only grow and int reads are atomic.
        try:
            if lsn <= (self._durable_lsn if policy == "always" else self._written_lsn):
                return
        except TypeError:
            raise errors.InvalidArgument(f"lsn must be an integer, not {lsn!r}", field="lsn") from None
        with self._lock:
            if lsn > self._last_lsn:
                raise errors.InvalidArgument(
                    f"LSN {lsn} was never assigned (the last is {self._last_lsn})", field="lsn"
                )
            if policy == "never":
                if self._failure is not None and lsn > self._written_lsn:
                    self._raise_failed_locked()
                return
            deadline = None if timeout is None else time.monotonic() + timeout
            while lsn > (self._durable_lsn if policy == "always" else self._written_lsn):
                if self._failure is not None:
                    self._raise_failed_locked()
                if timeout is None and not self._io_busy and self._taken_lsn < lsn and not self._closing:
                    # the disk is idle and the record not taken: commit it here (a wait with a deadline
                    # leaves the I/O to the writer, so that a stuck disk cannot hold it past the deadline)
                    self._lead_locked()
                    continue
                remaining = None
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise errors.DeadlineExceeded(
                            f"LSN {lsn} of journal {self._directory} not acknowledged within {timeout} s"
                        )
                self._done.wait(remaining)

    def sync(self) -> int:
        """Write and ``fdatasync`` everything appended so far, whatever the policy.

        Returns
        -------
        int
            The durable LSN (at least :attr:`last_lsn` at the call).

        Raises
        ------
        pyomni.errors.StorageFailed
            The journal failed before everything was durable.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with Journal.open(d, fsync="never") as journal:
        ...         _ = journal.append(b"x")
        ...         print(journal.sync())
        1
        """
        with self._lock:
            target = self._last_lsn
            if self._sync_target < target:
                self._sync_target = target
                self._work.notify()
            while self._durable_lsn < target:
                if self._failure is not None:
                    self._raise_failed_locked()
                self._done.wait()
            return self._durable_lsn

    # -- state -----------------------------------------------------------------------------------

    @property
    def last_lsn(self) -> int:
        """The last LSN assigned (0 for a new journal)."""
        return self._last_lsn

    @property
    def written_lsn(self) -> int:
        """The last LSN written to the OS (it survives a crash of the process)."""
        return self._written_lsn

    @property
    def durable_lsn(self) -> int:
        """The last LSN ``fdatasync``'ed (it survives a power cut). Recovered records count as durable."""
        return self._durable_lsn

    @property
    def fsync_policy(self) -> str:
        """The fsync policy chosen at open."""
        return self._policy

    @property
    def directory(self) -> Path:
        """The journal's directory."""
        return self._directory

    @property
    def failed(self) -> bool:
        """True once a write or fsync failed: the journal accepts nothing more."""
        return self._failure is not None

    def stats(self) -> dict[str, Any]:
        """Counters of this journal since open.

        Returns
        -------
        dict
            ``records`` and ``bytes`` written since open (framed records, 8 bytes of header each),
            ``commits`` (group commits: one write each), ``fsyncs`` (``fdatasync`` calls of the writer),
            ``segments`` (segment files held, the active one included), ``recovered_records``,
            ``pending``, ``last_lsn``, ``written_lsn``, ``durable_lsn``, ``policy``, ``failed``, ``closed``.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with Journal.open(d) as journal:
        ...         journal.wait(journal.append(b"12345678"))
        ...         s = journal.stats()
        ...         print(s["records"], s["bytes"], s["commits"], s["segments"])
        1 16 1 1
        """
        with self._segments_lock:
            segments = len(self._segments) + 1
        with self._lock:
            return {
                "records": self._records_written,
                "bytes": self._bytes_written,
                "commits": self._commits,
                "fsyncs": self._fsyncs,
                "segments": segments,
                "recovered_records": self._recovered_records,
                "pending": len(self._pending),
                "last_lsn": self._last_lsn,
                "written_lsn": self._written_lsn,
                "durable_lsn": self._durable_lsn,
                "policy": self._policy,
                "failed": self._failure is not None,
                "closed": self._closing,
            }

    # -- maintenance -----------------------------------------------------------------------------

    def retire(self, upto_lsn: int) -> int:
        """Delete every whole segment whose records all have ``lsn <= upto_lsn`` (never the active one).

        Call it after a snapshot at ``upto_lsn`` is durable. Segments go oldest first, so a crash in
        the middle leaves a contiguous journal. LSNs are never reissued after a retire: the next LSN
        is always recorded in a segment that stays.

        Parameters
        ----------
        upto_lsn : int
            The LSN up to which records are no longer needed.

        Returns
        -------
        int
            How many segment files were deleted.

        Raises
        ------
        pyomni.errors.FailedPrecondition
            The journal is closed.
        pyomni.errors.StorageFailed
            A file could not be deleted or the directory not synced (the journal itself stays usable).
        pyomni.errors.InvalidArgument
            ``upto_lsn`` is not an integer >= 0.

        Examples
        --------
        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with Journal.open(d, segment_bytes=100) as journal:
        ...         for _ in range(3):
        ...             journal.wait(journal.append(bytes(100)))  # each commit fills a segment
        ...         print(journal.retire(2), sorted(os.listdir(d))[0])
        2 00000000000000000003.seg
        """
        upto_lsn = _check_lsn(upto_lsn, "upto_lsn")
        if self._closing:
            raise errors.FailedPrecondition(f"journal {self._directory} is closed")
        deleted = 0
        with self._segments_lock:
            try:
                while self._segments and self._segments[0].last_lsn <= upto_lsn:
                    segment = self._segments[0]
                    try:
                        os.unlink(segment.path)
                    except FileNotFoundError:
                        pass  # already gone: the goal is reached
                    self._segments.pop(0)
                    if self._replayable and self._replayable[0] is segment:
                        self._replayable.pop(0)
                    deleted += 1
                if deleted:
                    _fsync_directory(self._directory)
            except OSError as exc:
                raise errors.StorageFailed(f"cannot retire journal segments in {self._directory}: {exc}") from exc
        return deleted

    def close(self) -> None:
        """Write and ``fdatasync`` everything pending, stop the writer and release the directory.

        Idempotent: later calls do nothing.

        Raises
        ------
        pyomni.errors.StorageFailed
            On the first call, if the journal failed (now or earlier) with records not durable.

        Examples
        --------
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     journal = Journal.open(d, fsync="never")
        ...     lsn = journal.append(b"x")
        ...     journal.close(); journal.close()
        ...     print(journal.durable_lsn == lsn)
        True
        """
        with self._lock:
            if self._closed or self._closing:
                first_call = False
            else:
                first_call = True
                self._closing = True
                self._work.notify()
        if not first_call:
            self._thread.join()  # a concurrent close returns only once the journal is closed
            return
        self._thread.join()
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass  # the data was synced (or the journal failed): nothing left to lose here
            self._fd = -1
        _unlock_directory(self._lock_fd)
        _OPEN_JOURNALS.discard(self)
        with self._lock:
            self._closed = True
            if self._failure is not None and self._durable_lsn < self._last_lsn:
                self._raise_failed_locked()

    # -- errors ----------------------------------------------------------------------------------

    def _raise_failed_locked(self) -> None:
        if self._failure is None:
            raise errors.InvariantViolation("the journal reported a failure it does not hold")
        message, cause = self._failure
        raise errors.StorageFailed(message) from cause

    def _raise_unwritable_locked(self) -> None:
        if self._failure is not None:
            self._raise_failed_locked()
        raise errors.FailedPrecondition(f"journal {self._directory} is closed")

    def _fail(self, exc: BaseException) -> None:
        message = (
            f"journal {self._directory} failed: {exc}; records after LSN {self._written_lsn} may or may not "
            "be on disk -- it accepts nothing more until it is reopened"
        )
        logger.critical("%s", message, exc_info=exc)
        with self._lock:
            self._failure = (message, exc)
            self._pending = []
            self._done.notify_all()
            self._work.notify()  # a writer waiting for work must see the failure and stop

    # -- the writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._commit_loop()
        except BaseException as exc:  # any failure of the writer is fatal: waiters must not hang
            self._fail(exc)

    def _lead_locked(self) -> None:
        """Run one commit on the calling thread (the lock is held on entry and on return, not during I/O)."""
        self._io_busy = True
        self._lock.release()
        try:
            self._commit_once(False)
        except BaseException as exc:  # fatal, as in the writer: every waiter must learn it
            self._lock.acquire()
            self._io_busy = False
            self._lock.release()
            self._fail(exc)
            self._lock.acquire()
            return
        self._lock.acquire()
        self._io_busy = False
        self._done.notify_all()  # the next waiter may lead
        if self._writer_idle:  # a sleeping writer re-arms the interval timer for what was written
            self._writer_idle = False
            self._work.notify()

    def _commit_loop(self) -> None:
        lock = self._lock
        interval = self._policy == "interval"
        interval_s = self._interval_s
        monotonic = time.monotonic
        while True:
            with lock:
                seen = False
                quiet = 0  # looks in a row that found nothing to do
                while self._failure is None:
                    if self._io_busy:
                        self._writer_idle = True  # so that the commit's end wakes it
                        self._work.wait()
                        self._writer_idle = False
                        continue
                    if self._closing or self._sync_target > self._durable_lsn:
                        break
                    if self._pending:
                        if seen:
                            break  # records pending for a whole ORPHAN_S: nobody claims them
                        seen, quiet = True, 0
                        self._work.wait(ORPHAN_S)
                        continue
                    seen = False
                    timeout = None
                    if interval and self._written_lsn > self._durable_lsn:
                        timeout = self._unsynced_since + interval_s - monotonic()
                        if timeout <= 0:
                            break  # idle with unsynced data past its interval: sync now
                    if quiet < QUIET_LOOKS:
                        # while records flow, look every ORPHAN_S rather than be woken by each append:
                        # a wake-up is a thread switch on the appender's critical path
                        quiet += 1
                        self._work.wait(ORPHAN_S if timeout is None else min(timeout, ORPHAN_S))
                        continue
                    self._writer_idle = True  # quiet for a while: sleep until an append wakes it
                    self._work.wait(timeout)
                    self._writer_idle = False
                    quiet = 0
                if self._failure is not None:
                    return  # a caller's commit failed: the journal takes nothing more
                self._io_busy = True
                closing = self._closing
                sync_requested = self._sync_target > self._durable_lsn
            try:
                self._commit_once(closing or sync_requested)
            finally:
                with lock:
                    self._io_busy = False
                    self._done.notify_all()
            if closing:
                return  # closing was seen before the batch was taken, and appends stop at closing

    def _commit_once(self, sync: bool) -> None:
        """One commit: write everything pending, ``fdatasync`` if the policy (or ``sync``) asks, rotate a full
        segment. Only the holder of ``_io_busy`` runs it, so it alone moves the written and durable LSNs."""
        lock = self._lock
        always = self._policy == "always"
        with lock:
            batch = self._pending
            if batch:
                self._pending = []
            last = self._taken_lsn = self._taken_lsn + len(batch)
        written, durable = self._written_lsn, self._durable_lsn
        if batch:
            buffer = self._frame(batch)
            self._write(buffer)
            written = last
            self._records_written += len(batch)
            self._bytes_written += len(buffer)
            self._commits += 1
            if not always:
                with lock:
                    if self._written_lsn == self._durable_lsn:
                        self._unsynced_since = time.monotonic()
                    self._written_lsn = written
                    self._done.notify_all()
        due = always or sync or (self._policy == "interval"
                                 and time.monotonic() - self._unsynced_since >= self._interval_s)
        if due and written > durable:
            self._fdatasync()
            durable = written
            with lock:
                self._written_lsn = written
                self._durable_lsn = durable
                self._done.notify_all()
        if self._active.end > self._segment_bytes:
            self._rotate(written, durable)

    def _frame(self, batch: list[bytes]) -> bytes:
        """One buffer of framed records: ``length | crc32c(length bytes + payload) | payload`` each."""
        parts: list[bytes] = []
        add = parts.append
        pack_header = _RECORD_HEADER.pack
        pack_length = _LENGTH.pack
        length_crc = self._length_crc
        for payload in batch:
            length = len(payload)
            seed = length_crc.get(length)
            if seed is None:
                if len(length_crc) >= _LENGTH_CRC_CACHE_MAX:
                    length_crc.clear()
                seed = length_crc[length] = crc32c(pack_length(length))
            add(pack_header(length, crc32c(payload, seed)))
            add(payload)
        return b"".join(parts)

    def _write(self, buffer: bytes) -> None:
        try:
            _write_all(self._fd, buffer)
        except OSError as exc:
            raise errors.StorageFailed(f"write to journal segment {self._active.path} failed: {exc}") from exc
        self._active.end += len(buffer)

    def _fdatasync(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise errors.StorageFailed(f"fdatasync of journal segment {self._active.path} failed: {exc}") from exc
        self._fsyncs += 1

    def _rotate(self, written: int, durable: int) -> int:
        """Seal the active segment and start the next; returns the durable LSN.

        The sealed segment is ``fdatasync``'ed first whatever the policy: damage in a segment that is
        not the last is corruption by definition, so no segment may be followed by another before its
        own data is on disk.
        """
        if written > durable:
            self._fdatasync()
            durable = written
            with self._lock:
                self._written_lsn = self._durable_lsn = durable
                self._done.notify_all()
        sealed = self._active
        sealed.records = written - sealed.first_lsn + 1
        try:
            fd, self._fd = self._fd, -1  # never close a descriptor number twice: it may be reused
            os.close(fd)
            fd, path = _create_segment(self._directory, written + 1)
        except OSError as exc:
            raise errors.StorageFailed(f"cannot start journal segment {_segment_name(written + 1)}: {exc}") from exc
        self._fd = fd
        with self._segments_lock:
            self._segments.append(sealed)
            self._active = _Segment(path, written + 1, 0, SEGMENT_HEADER_BYTES)
        return durable


def _recover(directory: Path, after_lsn: int) -> tuple[list[_Segment], int, int]:
    """Scan and repair the journal in ``directory`` (locked by the caller).

    Returns the intact segments, the next LSN and the number of intact records.
    """
    for name in os.listdir(directory):
        if name.endswith(".seg" + _TMP_SUFFIX):  # a segment whose creation never finished
            os.unlink(directory / name)
    inspection = _inspect(directory)
    problem = inspection.problem
    scans = inspection.scans
    if problem is not None and problem.kind != "torn_tail":
        raise errors.JournalCorrupt(problem.message)
    next_lsn = scans[-1].first_lsn + scans[-1].records if scans else after_lsn + 1
    if next_lsn <= after_lsn:
        raise errors.JournalCorrupt(
            f"journal {directory} ends at LSN {next_lsn - 1}, before the state it is opened for (LSN "
            f"{after_lsn}): records {next_lsn}..{after_lsn} are missing from it"
        )
    if problem is not None and scans[-1].shape == "short_header":
        # Nothing to keep. The new segment gets this very name (its first LSN is the next one) and is
        # renamed over it, so the next LSN stays on disk at every instant, even with no segment before.
        torn = scans.pop()
        if torn.size:
            logger.warning("discarding %d bytes of a torn segment header at %s:0", torn.size, torn.path)
    if scans and scans[-1].records == 0:
        # A last segment with no intact record (opened, closed, nothing appended; or only a torn
        # record): the new segment has its name and is renamed over it -- that is the cut -- so it must
        # not be held as an old segment that retire() could delete.
        empty = scans.pop()
        if empty.end < empty.size:
            logger.warning("cut %d bytes of a torn record at %s:%d", empty.size - empty.end, empty.path, empty.end)
    if scans:
        last = scans[-1]
        # Cut a torn tail, and fdatasync the last segment in any case: the previous process may have
        # died with it only in the page cache (fsync "never"/"interval"), and it must be on disk before
        # a later segment exists (see Journal._rotate).
        fd = os.open(last.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            if last.end < last.size:
                os.ftruncate(fd, last.end)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        if last.end < last.size:
            logger.warning("cut %d bytes of a torn record at %s:%d", last.size - last.end, last.path, last.end)
    segments = [_Segment(scan.path, scan.first_lsn, scan.records, scan.end) for scan in scans]
    return segments, next_lsn, sum(segment.records for segment in segments)


# -- operator tools ------------------------------------------------------------------------------


def read_records(directory: str | os.PathLike[str], after_lsn: int = 0) -> Iterator[tuple[int, bytes]]:
    """Iterate the records of a journal directory without opening it for writing or changing any file.

    The read-only twin of :meth:`Journal.open` followed by :meth:`Journal.replay`: the same rules, but a
    torn tail is skipped rather than cut (the next :meth:`Journal.open` cuts it). Use it to inspect or
    copy a journal, possibly while its owner writes to it.

    Parameters
    ----------
    directory : str or os.PathLike
        The journal's directory.
    after_lsn : int
        Skip records up to and including this LSN.

    Returns
    -------
    Iterator of (int, bytes)
        ``(lsn, payload)`` of every intact record with ``lsn > after_lsn``, oldest first.

    Raises
    ------
    pyomni.errors.JournalCorrupt
        At the call: damage other than a torn tail, or records after ``after_lsn`` are missing.
    pyomni.errors.NotFound
        ``directory`` does not exist.
    pyomni.errors.StorageFailed
        The directory cannot be read.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with Journal.open(d) as journal:
    ...         _ = journal.append_many([b"a", b"b"])
    ...     print(list(read_records(d, after_lsn=1)))
    [(2, b'b')]
    """
    after_lsn = _check_lsn(after_lsn, "after_lsn")
    path = Path(directory)
    if not path.is_dir():
        raise errors.NotFound(f"no journal directory {path}", field="directory")
    try:
        inspection = _inspect(path)
    except OSError as exc:
        raise errors.StorageFailed(f"cannot read the journal in {path}: {exc}") from exc
    problem = inspection.problem
    if problem is not None and problem.kind != "torn_tail":
        raise errors.JournalCorrupt(problem.message)
    segments = [
        _Segment(scan.path, scan.first_lsn, scan.records, scan.end)
        for scan in inspection.scans
        if scan.shape != "short_header"
    ]
    if segments:
        _check_replayable(path, segments[0].first_lsn, segments[-1].last_lsn, after_lsn)
    return _replay_segments([segment for segment in segments if segment.last_lsn > after_lsn], after_lsn)


def verify(directory: str | os.PathLike[str]) -> VerifyReport:
    """Scan a journal directory read-only and report its segments and the first problem.

    It applies exactly the rules of :meth:`Journal.open`, without repairing anything; it may run while
    the journal is open (the active segment may then show a torn tail of a write in progress).

    Parameters
    ----------
    directory : str or os.PathLike
        The journal's directory.

    Returns
    -------
    VerifyReport
        Per segment: file name, first LSN, intact records, bytes; the first problem (kind, file,
        offset, message) or ``None``; ``ok`` when :meth:`Journal.open` would succeed by itself.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with Journal.open(d) as journal:
    ...         _ = journal.append_many([b"a", b"b"])
    ...     report = verify(d)
    ...     print(report.ok, report.records, report.problem)
    True 2 None
    """
    path = Path(directory)
    problem: JournalProblem | None
    if not path.is_dir():
        problem = JournalProblem("missing", str(path), 0, f"journal directory {path} does not exist")
        return VerifyReport(str(path), (), problem)
    try:
        inspection = _inspect(path)
    except OSError as exc:
        problem = JournalProblem("missing", str(path), 0, f"journal directory {path} cannot be read: {exc}")
        return VerifyReport(str(path), (), problem)
    reports = tuple(
        SegmentReport(scan.name, scan.first_lsn, scan.records, scan.size, scan.end) for scan in inspection.scans
    )
    problem = inspection.problem
    if problem is not None and problem.kind == "torn_tail" and inspection.scans[-1].size == 0:
        problem = None  # a segment created and never written: open replaces it, nothing was lost
    return VerifyReport(str(path), reports, problem)


def truncate(directory: str | os.PathLike[str], segment: str, offset: int) -> int:
    """Cut the named segment at ``offset`` and delete every later segment (the operator's repair).

    Destructive by design: every record from ``offset`` on is gone, and their LSNs will be assigned
    again to new records -- restore a snapshot taken at or before the cut. ``offset`` must be a record
    boundary with intact records before it, as :func:`verify` reports; 0 deletes the segment entirely.
    Later segments are deleted newest first, so a crash in the middle leaves a contiguous journal.

    Parameters
    ----------
    directory : str or os.PathLike
        The journal's directory (it must not be open).
    segment : str
        The segment's file name, as in :attr:`JournalProblem.file`.
    offset : int
        Where to cut: 0, or a record boundary >= 16.

    Returns
    -------
    int
        Bytes removed, over the cut segment and the deleted ones.

    Raises
    ------
    pyomni.errors.NotFound
        No such segment.
    pyomni.errors.InvalidArgument
        ``offset`` is not a boundary of intact records in the segment.
    pyomni.errors.FailedPrecondition
        The journal is open.
    pyomni.errors.StorageFailed
        A file could not be cut, deleted or synced.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with Journal.open(d) as journal:
    ...         _ = journal.append_many([b"a", b"b"])
    ...     name = verify(d).segments[0].file
    ...     print(truncate(d, name, 16 + 9), verify(d).records)  # keep the first record only
    9 1
    """
    path = Path(directory)
    if not _SEGMENT_NAME.match(segment):
        raise errors.InvalidArgument(f"{segment!r} is not a journal segment name", field="segment")
    offset = _check_lsn(offset, "offset")
    if not path.is_dir():
        raise errors.NotFound(f"no journal directory {path}", field="directory")
    try:
        lock_fd = _lock_directory(path)
    except OSError as exc:
        raise errors.StorageFailed(f"cannot open the journal directory {path}: {exc}") from exc
    try:
        names = _segment_names(path)
        if segment not in names:
            raise errors.NotFound(f"journal {path} has no segment {segment}", field="segment")
        target = path / segment
        data = _read_whole(target)
        if offset != 0:
            if offset < SEGMENT_HEADER_BYTES or offset > len(data):
                raise errors.InvalidArgument(
                    f"offset {offset} is not a record boundary of {target} ({len(data)} bytes)", field="offset"
                )
            _, intact_end = _walk_intact(data[:offset], SEGMENT_HEADER_BYTES)
            header = _SEGMENT_HEADER.unpack_from(data, 0)
            if intact_end != offset or header != (SEGMENT_MAGIC, int(segment[:20])):
                raise errors.InvalidArgument(
                    f"offset {offset} of {target} is not a record boundary after intact records "
                    f"(they end at {intact_end})",
                    field="offset",
                )
        removed = 0
        for name in reversed(names[names.index(segment) + 1 :]):
            later = path / name
            removed += later.stat().st_size
            os.unlink(later)
        if offset == 0:
            removed += len(data)
            os.unlink(target)
        else:
            fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(fd, offset)
                os.fdatasync(fd)
            finally:
                os.close(fd)
            removed += len(data) - offset
        _fsync_directory(path)
        logger.warning("truncated journal %s at %s:%d, %d bytes removed", path, segment, offset, removed)
        return removed
    except OSError as exc:
        raise errors.StorageFailed(f"cannot truncate journal {path} at {segment}:{offset}: {exc}") from exc
    finally:
        _unlock_directory(lock_fd)
