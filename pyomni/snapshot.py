"""Engine snapshots on disk: Arrow IPC tables plus a checksummed manifest.

A snapshot is one directory ``snapshots/{lsn:020d}/`` holding the engine's
whole state as of journal record ``lsn``:

========================  ==================================================
``cells.arrow``           every stock cell: location, SKU, on hand, reserved, safety
``locations.arrow``       the network (one row per location, every attribute) and
                          the engine's live per-location state (open, capacity,
                          capabilities, shipments confirmed today)
``skus.arrow``            the catalogue, in index order
``reservations.arrow``    every reservation, its fields in :mod:`pyomni.codec` form
``requests.arrow``        the idempotency window: request id, record, time, command
                          and answer (codec form), oldest first
``manifest.json``         format version, counters, configuration, policies,
                          channel rules, and each file's size and CRC-32C
========================  ==================================================

The files are written into a hidden staging directory and fsynced, the
manifest last; then the directory is renamed into place and the parent
fsynced. A snapshot is valid only if its manifest parses and every file
matches its size and checksum, so a crash mid-write leaves at most an
ignored staging directory, and a damaged snapshot is detected, not loaded.
Nothing here is pickle: a file can only ever decode to data.

Examples
--------
>>> import tempfile, pyomni
>>> eng = pyomni.Engine(pyomni.demo_network(stores=5, warehouses=1, skus=3, seed=0))
>>> with tempfile.TemporaryDirectory() as d:
...     path = eng.save(d)
...     path.name, sorted(p.name for p in path.iterdir())[:2]
('00000000000000000000', ['cells.arrow', 'locations.arrow'])
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c
import pyarrow as pa

from . import codec, errors
from .model import Capability, Location, LocationKind
from .policy import ChannelRule, RoutingPolicy
from .validate import shown

__all__ = ["SnapshotData", "write", "read", "latest", "list_snapshots", "prune", "FORMAT_VERSION"]

log = logging.getLogger("pyomni.snapshot")

FORMAT_VERSION = 4
_READS = (2, 3, 4)      # format 2 had no flash sales ("selling"), 3 no store operations ("stores")
_FILES = ("cells", "locations", "skus", "reservations", "requests", "selling", "stores")
_LOCATION_FIELDS = tuple(f.name for f in dataclasses.fields(Location))


@dataclass
class SnapshotData:
    """Everything a snapshot holds, as plain values and arrays (what the engine captures and restores)."""

    lsn: int
    seq: int
    saved_at: float
    config: dict[str, Any]                  # reservation_ttl, max_request_ids, request_id_ttl
    default_policy: str
    policies: list[RoutingPolicy]
    channels: dict[str, ChannelRule]
    locations: list[Location]
    skus: list[str]
    capabilities: Any                       # per location (uint8), as the engine has them now
    is_open: Any                            # per location (uint8)
    daily_capacity: Any                     # per location (int32)
    confirmed: Any                          # per location: shipments confirmed today (int32)
    cells: dict[str, Any]                   # loc, sku, on_hand, reserved, safety arrays
    reservations: list[tuple]               # codec-encodable tuples (the engine's record fields)
    requests: list[tuple]                   # (request_id, lsn, at, command, answer)
    selling: dict[str, Any] | None = None   # flash sales and claims (codec-encodable; see pyomni.selling)
    stores: dict[str, Any] | None = None    # shipments, store rules, facts ... (codec-encodable; pyomni.stores)


def list_snapshots(root: str | os.PathLike[str]) -> list[Path]:
    """Snapshot directories under ``root``, newest (highest lsn) first; staging directories are skipped."""
    base = Path(root)
    try:
        if not base.is_dir():
            return []
        found = [p for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    except OSError as exc:       # a name too long, no permission: the directory cannot be read
        raise errors.StorageFailed(f"cannot read {shown(str(base), 200)}: {exc.strerror or exc}") from None
    return sorted(found, key=lambda p: int(p.name), reverse=True)


def _crc_file(path: Path) -> tuple[int, int]:
    value, size = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            value = crc32c.crc32c(chunk, value)
            size += len(chunk)
    return value, size


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_table(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1 << 20)


def _encoded(rows: list[tuple], chunk: int = 256) -> Iterator[bytes]:
    # the codec holds the GIL per call; yielding between small chunks keeps a save of a
    # million remembered requests from stalling the threads that serve requests
    for i in range(0, len(rows), chunk):
        for row in rows[i:i + chunk]:
            yield codec.encode(row)
        time.sleep(0)


def write(root: str | os.PathLike[str], data: SnapshotData) -> Path:
    """Write ``data`` as the snapshot ``root/{lsn:020d}``; returns its path (replacing one of the same lsn)."""
    base = Path(root)
    try:
        base.mkdir(parents=True, exist_ok=True)
        staging = base / f".staging-{data.lsn:020d}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        c = data.cells
        tables = {
            "cells": pa.table({k: c[k] for k in ("loc", "sku", "on_hand", "reserved", "safety")}),
            "locations": _locations_table(data),
            "skus": pa.table({"sku": pa.array(data.skus, type=pa.string())}),
            "reservations": pa.table({"record": pa.array(_encoded(data.reservations), type=pa.binary())}),
            "selling": pa.table({"state": pa.array([codec.encode(data.selling or {})], type=pa.binary())}),
            "stores": pa.table({"state": pa.array([codec.encode(data.stores or {})], type=pa.binary())}),
            "requests": pa.table({
                "request_id": pa.array([r[0] for r in data.requests], type=pa.string()),
                "lsn": pa.array([r[1] for r in data.requests], type=pa.int64()),
                "at": pa.array([r[2] for r in data.requests], type=pa.float64()),
                "entry": pa.array(_encoded([(r[3], r[4]) for r in data.requests]), type=pa.binary()),
            }),
        }
        files = {}
        for name, table in tables.items():
            path = staging / f"{name}.arrow"
            _write_table(path, table)
            _fsync_path(path)
            crc, size = _crc_file(path)
            files[name] = {"bytes": size, "crc32c": crc}
        manifest = {
            "format": FORMAT_VERSION, "lsn": data.lsn, "seq": data.seq, "saved_at": data.saved_at,
            "config": data.config, "default_policy": data.default_policy,
            "policies": [_policy_dict(p) for p in data.policies],
            "channels": {k: {"share": v.share, "buffer": v.buffer} for k, v in data.channels.items()},
            "files": files,
        }
        path = staging / "manifest.json"
        path.write_text(json.dumps(manifest, indent=1))
        _fsync_path(path)
        target = base / f"{data.lsn:020d}"
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        _fsync_path(base)
        return target
    except OSError as exc:
        raise errors.StorageFailed(f"cannot write snapshot {data.lsn} in {shown(str(base), 200)}: "
                                   f"{exc.strerror or str(exc)[:200]}") from None


def _policy_dict(pol: RoutingPolicy) -> dict[str, Any]:
    return {f.name: getattr(pol, f.name) for f in dataclasses.fields(pol) if f.init}


def _locations_table(data: SnapshotData) -> pa.Table:
    cols: dict[str, Any] = {name: [getattr(x, name) for x in data.locations] for name in _LOCATION_FIELDS}
    cols["kind"] = [int(k) for k in cols["kind"]]
    cols["capabilities"] = [int(k) for k in cols["capabilities"]]
    table = pa.table(cols)
    return (table.append_column("live_capabilities", pa.array(data.capabilities, type=pa.uint8()))
            .append_column("live_open", pa.array(data.is_open, type=pa.uint8()))
            .append_column("live_daily_capacity", pa.array(data.daily_capacity, type=pa.int32()))
            .append_column("confirmed_today", pa.array(data.confirmed, type=pa.int32())))


def _check(path: Path, manifest: Mapping[str, Any]) -> None:
    for name in _files(manifest):
        entry = manifest["files"][name]
        crc, size = _crc_file(path / f"{name}.arrow")
        if (crc, size) != (entry["crc32c"], entry["bytes"]):
            raise errors.JournalCorrupt(f"snapshot file {str(path / (name + '.arrow'))!r} fails its checksum "
                                        f"({size} bytes, crc {crc:#010x}; the manifest says {entry['bytes']}, "
                                        f"{entry['crc32c']:#010x})")


def _files(manifest: Mapping[str, Any]) -> tuple[str, ...]:
    return _FILES[:len(_FILES) - max(0, 4 - manifest["format"])]


def _read_table(path: Path) -> pa.Table:
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).read_all()


def read(path: str | os.PathLike[str]) -> SnapshotData:
    """Read and verify one snapshot directory.

    Raises :class:`~pyomni.errors.JournalCorrupt` if a file is missing, fails
    its checksum or does not decode.
    """
    snap = Path(path)
    try:
        manifest = json.loads((snap / "manifest.json").read_text())
        if manifest.get("format") not in _READS:
            raise errors.JournalCorrupt(f"snapshot {str(snap)!r} has format {manifest.get('format')!r}, "
                                        f"this pyomni reads {FORMAT_VERSION}")
        _check(snap, manifest)
        t = {name: _read_table(snap / f"{name}.arrow") for name in _files(manifest)}
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        raise errors.JournalCorrupt(f"snapshot {str(snap)!r} is unreadable: {exc}") from None
    loc_cols = t["locations"].to_pydict()
    locations = [Location(**{name: loc_cols[name][i] for name in _LOCATION_FIELDS}) for i in
                 range(t["locations"].num_rows)]
    locations = [dataclasses.replace(x, kind=LocationKind(x.kind), capabilities=Capability(x.capabilities))
                 for x in locations]
    cells = {k: t["cells"].column(k).to_numpy() for k in ("loc", "sku", "on_hand", "reserved", "safety")}
    req = t["requests"]
    entries = [codec.decode(b) for b in req.column("entry").to_pylist()]
    requests = [(rid, lsn, at, cmd, ans) for rid, lsn, at, (cmd, ans) in
                zip(req.column("request_id").to_pylist(), req.column("lsn").to_pylist(),
                    req.column("at").to_pylist(), entries)]
    return SnapshotData(
        lsn=manifest["lsn"], seq=manifest["seq"], saved_at=manifest["saved_at"], config=manifest["config"],
        default_policy=manifest["default_policy"],
        policies=[RoutingPolicy(**p) for p in manifest["policies"]],
        channels={k: ChannelRule(**v) for k, v in manifest["channels"].items()},
        locations=locations, skus=t["skus"].column("sku").to_pylist(),
        capabilities=t["locations"].column("live_capabilities").to_numpy(),
        is_open=t["locations"].column("live_open").to_numpy(),
        daily_capacity=t["locations"].column("live_daily_capacity").to_numpy(),
        confirmed=t["locations"].column("confirmed_today").to_numpy(),
        cells=cells, reservations=[codec.decode(b) for b in t["reservations"].column("record").to_pylist()],
        requests=requests,
        selling=codec.decode(t["selling"].column("state")[0].as_py()) or None if "selling" in t else None,
        stores=codec.decode(t["stores"].column("state")[0].as_py()) or None if "stores" in t else None)


def latest(root: str | os.PathLike[str]) -> SnapshotData | None:
    """The newest snapshot under ``root`` that verifies, or None if there is none at all.

    A newer snapshot that fails verification is skipped with an error in the
    log (the journal still holds the records since the older one); if every
    snapshot fails, the first failure is raised.
    """
    first: errors.JournalCorrupt | None = None
    for path in list_snapshots(root):
        try:
            return read(path)
        except errors.JournalCorrupt as exc:
            log.error("skipping a damaged snapshot", extra={"snapshot": str(path), "error": str(exc)})
            first = first or exc
    if first is not None:
        raise first
    return None


def prune(root: str | os.PathLike[str], keep: int = 2) -> int | None:
    """Delete all but the ``keep`` newest snapshots (and stale staging directories).

    Returns the lsn of the oldest snapshot kept: journal records up to it are
    no longer needed (None if there is no snapshot).
    """
    base = Path(root)
    snaps = list_snapshots(base)
    for old in snaps[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in base.glob(".staging-*") if base.is_dir() else ():
        shutil.rmtree(stale, ignore_errors=True)
    kept = snaps[:keep]
    return int(kept[-1].name) if kept else None
