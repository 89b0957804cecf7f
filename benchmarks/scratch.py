"""Where benchmarks put the directories their servers write to: a real disk, never memory.

fsync on tmpfs returns at once, so a durable baseline (PostgreSQL, Redis, pyomni's
own journal) measured there would measure nothing. ``default_base_dir`` is the
system temporary directory unless that is in memory, then ``.bench-tmp`` in the
repository (gitignored).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ["REPO", "REPO_TMP", "default_base_dir", "is_memory_fs"]

REPO = Path(__file__).resolve().parent.parent
REPO_TMP = REPO / ".bench-tmp"
_MEMORY_FS = {"tmpfs", "ramfs", "devtmpfs"}


def is_memory_fs(path: Path) -> bool:
    """Whether ``path`` lives on tmpfs/ramfs, judged from the longest matching mount point (Linux)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    path = path.resolve()
    best, fstype = -1, ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        if (path == Path(mount) or Path(mount) in path.parents) and len(mount) > best:
            best, fstype = len(mount), fields[2]
    return fstype in _MEMORY_FS


def default_base_dir() -> Path:
    """Where server directories go: the system temporary directory, unless it is in memory (then ``.bench-tmp``)."""
    tmp = Path(tempfile.gettempdir())
    if is_memory_fs(tmp):
        REPO_TMP.mkdir(exist_ok=True)
        return REPO_TMP
    return tmp
