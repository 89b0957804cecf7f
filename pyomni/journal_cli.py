"""``pyomni journal verify | dump | truncate``: read and repair a data directory's journal.

For the operator whose server refused to start with ``JOURNAL_CORRUPT``:

* ``verify DIR`` scans the snapshots and the journal without changing
  anything and says whether the server will start, and if not, where the
  damage is (file and byte offset) and what is lost by cutting there;
* ``dump DIR`` prints records, decoded (command, effect, request id, time), to
  see what the damaged region held;
* ``truncate DIR --segment F --offset N --yes`` cuts the journal there (the
  records from that point on are lost; a snapshot newer than the cut must be
  moved away first, which the command checks).

``DIR`` is the server's ``--data-dir`` (or its ``journal/`` directory). Exit
status: 0 when the directory will recover, 1 when it will not (or on error).
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

from . import codec, errors, journal, snapshot

__all__ = ["add_commands"]


def _dirs(path: str) -> tuple[Path, Path]:
    root = Path(path)
    if root.name == "journal" and not (root / "journal").is_dir():
        root = root.parent
    return root, root / "journal"


def _snapshots(root: Path) -> list[dict[str, Any]]:
    out = []
    for path in snapshot.list_snapshots(root / "snapshots"):
        try:
            data = snapshot.read(path)
            out.append({"lsn": data.lsn, "path": str(path), "ok": True, "cells": len(data.cells["loc"]),
                        "reservations": len(data.reservations), "request_ids": len(data.requests)})
        except errors.JournalCorrupt as exc:
            out.append({"lsn": int(path.name), "path": str(path), "ok": False, "error": str(exc)})
    return out


def _verify(args: argparse.Namespace) -> int:
    root, jdir = _dirs(args.directory)
    report = journal.verify(jdir)
    snaps = _snapshots(root)
    good = [s for s in snaps if s["ok"]]
    base = good[0]["lsn"] if good else None
    first = report.segments[0].first_lsn if report.segments else None
    last = report.segments[-1].last_lsn if report.segments else None
    # recoverable: a good snapshot, a journal whose damage (if any) open cuts by itself, and no missing records
    covered = base is not None and (first is None or first <= base + 1) and (last is None or last >= base)
    result = {
        "directory": str(root), "recovers": bool(report.ok and covered),
        "snapshots": snaps, "journal": {
            "segments": [{"file": s.file, "first_lsn": s.first_lsn, "records": s.records, "bytes": s.bytes,
                          "valid_bytes": s.valid_bytes} for s in report.segments],
            "records": report.records, "first_lsn": first, "last_lsn": last,
            "problem": None if report.problem is None else {
                "kind": report.problem.kind, "file": report.problem.file, "offset": report.problem.offset,
                "message": report.problem.message}}}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"data directory {root}")
        for snap in snaps:
            state = (f"ok, {snap['cells']:,} cells, {snap['reservations']:,} reservations, "
                     f"{snap['request_ids']:,} request ids" if snap["ok"] else f"DAMAGED: {snap['error']}")
            print(f"  snapshot at record {snap['lsn']:,}: {state}")
        if not snaps:
            print("  no snapshot")
        for seg in report.segments:
            print(f"  segment {seg.file}: records {seg.first_lsn:,}..{seg.last_lsn:,} ({seg.records:,}), "
                  f"{seg.bytes:,} bytes" + ("" if seg.valid_bytes == seg.bytes
                                             else f", intact up to byte {seg.valid_bytes:,}"))
        p = report.problem
        if p is not None:
            print(f"  problem: {p.kind} at {p.file}:{p.offset}: {p.message}")
            if p.kind != "torn_tail":
                print(f"  to cut there (losing every record from that point on): pyomni journal truncate {root} "
                      f"--segment {p.file} --offset {p.offset} --yes")
        if base is not None and first is not None and first > base + 1:
            print(f"  records {base + 1:,}..{first - 1:,} after the newest good snapshot are missing")
        print("recovers: yes" if result["recovers"] else "recovers: NO")
    return 0 if result["recovers"] else 1


def _dump(args: argparse.Namespace) -> int:
    _, jdir = _dirs(args.directory)
    shown = 0
    for lsn, payload in journal.read_records(jdir, after_lsn=max(0, args.start - 1)):
        if shown >= args.limit:
            break
        at, request_id, command, effect = codec.decode(payload)
        when = datetime.datetime.fromtimestamp(at, tz=datetime.timezone.utc).isoformat(timespec="milliseconds")
        print(f"{lsn} {when} {len(payload) + 8}B request_id={request_id!r}\n  {command!r}\n  -> {effect!r}")
        shown += 1
    return 0


def _truncate(args: argparse.Namespace) -> int:
    root, jdir = _dirs(args.directory)
    report = journal.verify(jdir)
    segment = next((s for s in report.segments if s.file == args.segment), None)
    if segment is None:
        raise errors.NotFound(f"no segment {args.segment!r} in {str(jdir)!r}", field="segment")
    # the first record lost: the one starting at offset (records before it in that segment survive)
    kept = sum(1 for lsn, _ in _records_before(jdir, segment, args.offset))
    first_lost = segment.first_lsn + kept
    newer = [s for s in _snapshots(root) if s["lsn"] >= first_lost]
    if newer:
        raise errors.FailedPrecondition(
            f"snapshot(s) at record(s) {', '.join(str(s['lsn']) for s in newer)} include records the cut would "
            f"remove; move them out of {str(root / 'snapshots')!r} first", field="offset")
    if not args.yes:
        raise errors.FailedPrecondition(f"this deletes journal records {first_lost:,} and later for good; "
                                        "repeat with --yes to do it", field="yes")
    removed = journal.truncate(jdir, args.segment, args.offset)
    print(f"cut {removed:,} bytes: records {first_lost:,} and later are gone; the journal now ends at "
          f"record {first_lost - 1:,}")
    return 0


def _records_before(jdir: Path, segment: journal.SegmentReport, offset: int) -> list[tuple[int, int]]:
    """(lsn, end offset) of the segment's intact records that end at or before ``offset``."""
    data = (jdir / segment.file).read_bytes()
    out = []
    pos, lsn = journal.SEGMENT_HEADER_BYTES, segment.first_lsn
    for _ in range(segment.records):
        length = int.from_bytes(data[pos:pos + 4], "little")
        end = pos + journal.RECORD_HEADER_BYTES + length
        if end > offset:
            break
        out.append((lsn, end))
        pos, lsn = end, lsn + 1
    return out


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``journal verify | dump | truncate`` to the ``pyomni`` command."""
    p = subparsers.add_parser("journal", help="verify, read or repair a data directory's journal",
                              description=__doc__.split("\n\n")[1] if __doc__ else None)
    sub = p.add_subparsers(dest="journal_command", required=True)
    v = sub.add_parser("verify", help="check snapshots and journal; say whether the directory recovers")
    v.add_argument("directory", help="the server's --data-dir (or its journal/ directory)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(run=_verify)
    d = sub.add_parser("dump", help="print journal records, decoded")
    d.add_argument("directory")
    d.add_argument("--start", type=int, default=1, help="first record number to print")
    d.add_argument("--limit", type=int, default=20, help="most records printed")
    d.set_defaults(run=_dump)
    t = sub.add_parser("truncate", help="cut the journal at a record boundary (losing what follows)")
    t.add_argument("directory")
    t.add_argument("--segment", required=True, help="segment file name, as verify prints it")
    t.add_argument("--offset", type=int, required=True, help="byte offset of a record boundary, as verify prints it")
    t.add_argument("--yes", action="store_true", help="really delete the records from there on")
    t.set_defaults(run=_truncate)
