"""A sweep's storage as one thing: <output_dir>/<sweep.name>/ (Tune's files) with danlu's own folder in it, the
lock that gives it one driver, the disks its writes land on and the free space kept there, and what a restore
finds in it. The sweep's driver holds one (orchestrator/run/sweep.py) and asks it; the parts stay one module
each in this wing (sweep_files, lock, disk, recovery, snapshots)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import BadInput, SweepFailed
from orchestrator.storage import sweep_files
from orchestrator.storage.disk import Fault, FreeSpace, low, mb, watched, where

if TYPE_CHECKING:
    from orchestrator.storage.lock import SweepLock
    from orchestrator.storage.recovery import Prep


class SweepStorage:
    """The storage of one sweep: `root` (<output_dir>/<sweep.name>), its tracking store's address (a sqlite file is
    on a disk to watch too) and the free space kept on those disks (storage.min_free_mb)."""

    def __init__(self, root: Path, tracking_uri: str, min_free_mb: int):
        self.root, self.min_free = root, int(min_free_mb) * 2**20
        self.disks = watched(root, tracking_uri)
        self.tune = root  # Tune's experiment of the part that runs now (part())
        self.extension: dict | None = None  # the record of the extension that runs now, if one does

    def part(self, saved: dict) -> None:
        """The part of the sweep its identity says runs now: the sweep as begun, or its newest extension (its own
        Tune experiment, extensions/<k>/: orchestrator/launch/extension.py)."""
        self.tune = sweep_files.tune_dir(self.root, saved)
        self.extension = (saved.get("extensions") or [None])[-1]

    @cached_property
    def own(self) -> Path:
        """danlu's folder of the sweep (its identity, journal, progress, records); an earlier layout moved in."""
        return sweep_files.state_dir(self.root)

    def begun(self) -> bool:
        """The sweep was begun before (its identity exists, damaged or not)."""
        return sweep_files.begun(self.root)

    def finished(self) -> dict | None:
        """The record of a sweep that ended whole, or None."""
        return sweep_files.finished(self.root)

    def lock(self, name: str, ttl_s: float, say: Callable[[str], None], on_lost: Callable) -> SweepLock:
        """The sweep's lock, taken (waiting DANLU_LOCK_WAIT_S, set for a supervisor's resubmission): BadInput where
        another driver holds it or the storage cannot be created."""
        from orchestrator.storage.lock import Busy, SweepLock

        lock = SweepLock(sweep_files.state_dir_path(self.root), ttl_s, say=say, on_lost=on_lost)
        try:
            return lock.acquire(wait_s=float(os.environ.get("DANLU_LOCK_WAIT_S", "0")))
        except Busy as exc:
            raise BadInput(exc.describe(name)) from None
        except OSError as exc:
            raise BadInput(f"output_dir={self.root.parent}: the sweep's storage cannot be created there "
                           f"({exc.strerror or exc}); give a folder you can write, e.g. output_dir=outputs.") from None

    def identify(self, p, overrides: list[str], resume: str) -> dict:
        """The sweep's identity, written for a new sweep (orchestrator/storage/sweep_files.py identify)."""
        return sweep_files.identify(p, overrides, resume)

    def check_free(self) -> None:
        """SweepFailed, before anything is launched, where a disk the sweep writes to is below the margin."""
        full = low(self.disks, self.min_free)
        if full:
            raise SweepFailed(f"disk full at {where(full)}: less than storage.min_free_mb={mb(self.min_free)} is free, "
                              "so the sweep would stop at once. Nothing was launched; free space on that disk (or lower "
                              "storage.min_free_mb), then run the same command again.")

    def watch(self, on_low: Callable[[Fault], None]) -> FreeSpace:
        """The free space of the sweep's disks, watched while it runs (a context manager)."""
        return FreeSpace(self.disks, self.min_free, on_low)

    def prepare(self, journal, say: Callable[[str], None]) -> Prep:
        """Tune's files checked and repaired, the journal's damage said, restore limits written: before anything
        is launched (orchestrator/storage/recovery.py)."""
        from orchestrator.storage import recovery

        self.limits_dir.mkdir(parents=True, exist_ok=True)
        return recovery.prepare(self.tune, self.limits_dir, journal, say)

    @property
    def limits_dir(self) -> Path:
        """Where the restore limits of the running part's trials are kept: danlu/ beside Tune's experiment, where a
        restored trial looks (orchestrator/storage/checkpoints.py read_limits): the sweep's own danlu/ folder, or
        extensions/<k>/danlu/."""
        return self.own if self.tune == self.root else self.tune / sweep_files.STATE_DIR

    def fault(self, exc: OSError | BaseException) -> Fault:
        """A write to the sweep's files that failed, as a storage fault."""
        return Fault("the sweep's files", str(self.root), " ".join(str(exc).split())[:300])

    def discard(self) -> None:
        """A new sweep that failed before it began leaves nothing behind."""
        shutil.rmtree(self.root, ignore_errors=True)
