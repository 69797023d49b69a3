"""A full disk is named as such (errno, sqlite's words, a trial's traceback), never taken for an outage; the
free-space watch stops a sweep before its writes fail."""

from __future__ import annotations

import errno
import threading

from orchestrator.storage import disk


def test_a_full_disk_is_recognised_in_every_form_it_comes_in():
    assert disk.is_full(OSError(errno.ENOSPC, "No space left on device"))
    assert disk.is_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    try:
        try:
            raise OSError(errno.ENOSPC, "x")
        except OSError as inner:
            raise RuntimeError("MLflow could not log") from inner
    except RuntimeError as chained:
        assert disk.is_full(chained)
    assert disk.is_full("sqlite3.OperationalError: database or disk is full")
    assert disk.is_full("OSError: [Errno 28] Error writing bytes to file")  # a trial's traceback, from Ray
    assert not disk.is_full(OSError(errno.ECONNREFUSED, "Connection refused"))
    assert not disk.is_full("RuntimeError: sleep job: failing at epoch 3")


def test_the_watch_stops_the_sweep_once_when_a_disk_runs_low(tmp_path):
    seen, done = [], threading.Event()

    def low(fault):
        seen.append(fault)
        done.set()

    free, _ = disk.free(tmp_path)
    with disk.FreeSpace([str(tmp_path)], free + 2**40, low, every_s=0.05):
        assert done.wait(30)
    assert len(seen) == 1 and seen[0].ahead and str(tmp_path) in seen[0].describe()
    assert seen[0].describe().startswith("disk full at") and "MB free of" in seen[0].describe()
    with disk.FreeSpace([str(tmp_path)], 0, low, every_s=0.05):  # 0: no watch
        pass
    assert disk.watched(tmp_path / "o", "sqlite:////data/m.db") == [str(tmp_path / "o"), "/data"]
