"""A trial's memory limit, held while it runs: resources.memory_mb.

Ray reserves the amount (its `memory` resource: a node runs only as many such trials as it has memory for), but
Ray does not hold a task to it. Here a thread of the trial's process watches the process's resident memory (what
the kernel's OOM killer counts); past the limit it raises MemoryLimitExceeded in the thread that runs the job, at
its next Python instruction, and the trial fails with "exceeded its memory limit of 4096 MB at step 3 (peak 4310
MB)": the job's own error, not retried (orchestrator/trial/retries.py). A job stuck inside one allocation that goes on
growing is killed with its process once it passes the limit by half again (the trial fails as its worker died).
Why not RLIMIT_AS: it limits address space, not memory (CUDA and Ray's shared-memory store map far more than they
use), and it binds the whole worker process, which Tune reuses for trial after trial.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from collections.abc import Callable


class MemoryLimitExceeded(BaseException):
    """Raised in the job's thread when its process passes the limit: a BaseException, so that the job's own
    `except Exception` does not swallow it."""


class MemoryLimitError(RuntimeError):
    """The trial's error: its process passed resources.memory_mb."""


def rss_mb() -> float:
    """This process's resident memory, MB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class MemoryWatch:
    """`with MemoryWatch(limit_mb, step): job()` in the job's thread; `step()` gives the job's last step."""

    def __init__(self, limit_mb: float | None, step: Callable[[], int | None], every_s: float = 0.05):
        self.limit_mb, self._step, self.every_s = limit_mb, step, every_s
        self.peak_mb = 0.0
        self.exceeded_at: int | None | bool = False  # the step where it passed the limit (False: it did not)
        self._done = threading.Event()

    def __enter__(self):
        if self.limit_mb:
            self._target = threading.get_ident()
            threading.Thread(target=self._watch, daemon=True, name="danlu-memory-limit").start()
        return self

    def __exit__(self, kind, exc, tb):
        self._done.set()
        if kind is not None and issubclass(kind, MemoryLimitExceeded):
            raise self.error() from None
        return False

    def error(self) -> MemoryLimitError:
        """The trial's error: the limit, the step where its process passed it, and the peak seen."""
        at = f"at step {self.exceeded_at}" if self.exceeded_at is not None else "before its first report"
        return MemoryLimitError(f"the trial exceeded its memory limit of {self.limit_mb:g} MB {at} (peak "
                                f"{self.peak_mb:.0f} MB, its process's resident memory; resources.memory_mb)")

    def _watch(self) -> None:
        limit = self.limit_mb
        if not limit:
            return
        raised = None
        while not self._done.wait(self.every_s):
            mb = rss_mb()
            self.peak_mb = max(self.peak_mb, mb)
            if mb <= limit:
                continue
            if raised is None:
                self.exceeded_at, raised = self._step(), time.monotonic()
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target),
                                                           ctypes.py_object(MemoryLimitExceeded))
            elif mb > 1.5 * limit and time.monotonic() - raised > 2.0:
                print(f"danlu: {self.error()}; its process did not stop at the limit and is killed", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
