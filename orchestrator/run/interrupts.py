"""Why a sweep stops before its end: a signal, a storage fault, a lost lock (see Interrupts)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager


class Interrupts:
    """Why a sweep stops before its end. Ctrl-C and SIGTERM: the first asks Tune to stop gracefully (it saves
    its state and fit() returns); a second stops at once. Tune's own SIGINT handler is turned off
    (TUNE_DISABLE_SIGINT_HANDLER) so that danlu knows the sweep was interrupted; SIGUSR1 is Tune's other,
    always-installed stop signal. A storage fault (a full disk: orchestrator/storage/disk.py) or a lost lock
    (orchestrator/storage/lock.py), from any thread, stops it the same graceful way, once, and is said."""

    def __init__(self, out=None):
        self.count = 0
        self.in_fit = False
        self.out = out or sys.stdout
        self.faults: list = []  # orchestrator.storage.disk.Fault, in the order they came
        self.stopped: str | None = None  # the first reason the sweep was stopped for, other than a signal
        self.watch = None  # the free-space watch (orchestrator/storage/disk.FreeSpace) while trials run
        self._lock = threading.Lock()

    def say(self, msg: str) -> None:
        """Print a line on the sweep's terminal (on a fresh line when the progress line is drawn in place)."""
        print(("\n" if self.out.isatty() else "") + msg, file=self.out, flush=True)

    def fault(self, fault) -> None:
        """The sweep's storage could not take a write: stop gracefully (resumable), and say it once."""
        with self._lock:
            self.faults.append(fault)
            if len(self.faults) > 1:
                return
        self.stop_for(fault.describe())

    def stop_for(self, why: str) -> None:
        """Stop the sweep gracefully for `why` (said once): Tune saves its state, running trials stop at their
        last checkpoint."""
        with self._lock:
            if self.stopped is not None:
                return
            self.stopped = why
        self.say(f"danlu: {why}")
        if self.in_fit and not self.count:
            self.say("danlu: stopping the sweep: Tune saves its state, running trials stop at their last checkpoint")
            signal.raise_signal(signal.SIGUSR1)

    def handler(self, signum, frame):
        """SIGINT/SIGTERM: the first asks Tune to stop gracefully; a second, or one before Tune runs, stops at
        once."""
        self.count += 1
        if self.count > 1 or not self.in_fit:
            raise KeyboardInterrupt
        print("\ndanlu: stopping: Tune saves its state (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
        signal.raise_signal(signal.SIGUSR1)

    @contextmanager
    def installed(self):
        """Install the handler for SIGINT and SIGTERM for the block (in the main thread only), Tune's own SIGINT
        handler off."""
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield self
            return
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        previous = {sig: signal.signal(sig, self.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            if not self.count:
                for sig, h in previous.items():
                    signal.signal(sig, h)
            # else ours stays: once interrupted, any further signal (even during Ray's shut-down) means
            # "stop at once", never Ray's own SIGTERM handler (sys.exit(15))
