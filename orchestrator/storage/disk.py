"""Storage faults of a sweep's disks: a full disk (or quota) is named as such, never taken for an outage.

Where a sweep writes: its storage (`output_dir/NAME`: Tune's state, checkpoints, danlu's journal) and, with a
sqlite store, the MLflow database's folder. Any of them can fill during the night. What danlu does then
(orchestrator/run/sweep.py): the sweep stops gracefully (Tune saves what it can, running trials are KILLED where
MLflow can still be written), the terminal says which disk is full, how much is free and what was saved, and
the exit code is 1 with the command that resumes once space is freed.

`FreeSpace` watches those disks and stops the sweep before writes start failing (`storage.min_free_mb`); the
writes that fail anyway (a checkpoint larger than the margin, a quota) are recognised by `is_full`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_WORDS = ("no space left on device", "disk quota exceeded", "database or disk is full", "errno 28",
              "errno 122", "sqlite_full")


def is_full(error: BaseException | str | None) -> bool:
    """Whether an exception (or its text, e.g. a failed trial's traceback) says a disk or quota is full."""
    seen = set()
    while isinstance(error, BaseException) and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
            return True
        if any(w in str(error).lower() for w in FULL_WORDS):
            return True
        error = error.__cause__ or error.__context__
    return isinstance(error, str) and any(w in error.lower() for w in FULL_WORDS)


def free(path) -> tuple[int, int] | None:
    """(free bytes for this user, total bytes) of the disk holding `path` (its nearest existing folder)."""
    p = os.path.abspath(str(path))
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def mb(n: int) -> str:
    """A byte count in MB, for messages."""
    return f"{n / 2**20:.1f} MB"


def where(path) -> str:
    """`PATH (X MB free of Y MB)`."""
    f = free(path)
    return f"{path} ({mb(f[0])} free of {mb(f[1])})" if f else str(path)


@dataclass(frozen=True)
class Fault:
    """A write the sweep's storage could not take."""

    what: str  # what could not be written: "the MLflow journal", "trial t004's checkpoint", ...
    path: str  # where (a file or folder on the disk in question)
    error: str  # the system's words
    full: bool = True  # a full disk or quota (else another storage error: read-only, I/O error)
    ahead: bool = False  # found by the free-space watch, before any write failed (`what` is then the whole story)

    def describe(self) -> str:
        """The fault in one line: what could not be written, where, and why."""
        kind = "disk full" if self.full else "storage error"
        if self.ahead:
            return f"{kind} at {where(self.path)}: {self.what}"
        return f"{kind} at {where(self.path)}: {self.what} could not be written ({self.error})"


def sqlite_path(uri: str) -> str | None:
    """The file of a sqlite:/// tracking URI, or None for any other store."""
    prefix = "sqlite:///"
    return uri[len(prefix):] if uri.startswith(prefix) else None


def watched(storage_dir, tracking_uri: str) -> list[str]:
    """The folders a sweep writes on this machine: its storage, and a sqlite store's folder."""
    paths = [str(storage_dir)]
    db = sqlite_path(tracking_uri)
    if db:
        paths.append(os.path.dirname(db))
    return paths


def low(paths: list[str], min_free: int) -> str | None:
    """The first of `paths` whose disk has less than `min_free` bytes free, or None."""
    for p in paths:
        f = free(p)
        if f is not None and f[0] < min_free:
            return p
    return None


class FreeSpace:
    """A thread that calls `on_low(Fault)` once when a watched disk's free space falls below `min_free` bytes."""

    def __init__(self, paths: list[str], min_free: int, on_low: Callable[[Fault], None], every_s: float = 2.0):
        self.paths, self.min_free, self.on_low, self.every_s = paths, min_free, on_low, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="danlu-free-space", daemon=True)

    def __enter__(self):
        if self.min_free > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        """Stop the watch (the trials have ended: a write that fails now is said where it fails)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            p = low(self.paths, self.min_free)
            if p is not None:
                self.on_low(Fault(f"less than storage.min_free_mb={self.min_free // 2**20} MB is left, and the sweep "
                                  "stops before its writes fail", p, "", ahead=True))
                return


def copy_atomic(src, dst) -> None:
    """Copy a file so that `dst` is the old file or the whole new one, never part of it (tmp + fsync + rename)."""
    tmp = f"{dst}.{os.getpid()}.tmp"
    try:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path, value) -> None:
    """Replace a small record atomically; a disk that cannot take it costs only the record (a sweep's finished.json, its budget)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(value, indent=1))
        os.replace(tmp, path)
    except OSError:  # a full disk: the next run of the command restores it through Tune instead
        pass
