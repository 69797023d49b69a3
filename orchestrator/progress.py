"""A concise live view of a sweep, in place of Ray's per-iteration tables.

    [  42s] running 2 · pending 5 · done 3 · stopped early 6 · failed 0 · best trial so far val_acc=0.9711 (t004)

On a terminal the line is redrawn in place at most twice a second; otherwise a plain line is printed
when the counts change, at most every `plain_every_s` seconds, and at least once a minute.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from ray.tune import Callback


class Progress(Callback):
    def __init__(self, metric: str, mode: str, label: Callable, stopped_early: Callable, stream=None,
                 plain_every_s: float = 5.0):
        self.metric, self.mode = metric, mode
        self._label = label  # trial -> short name (t007)
        self._stopped_early = stopped_early
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._every = 0.5 if self.tty else plain_every_s
        self._t0 = time.monotonic()
        self._last_print = 0.0
        self._last_line = ""
        self._latest: dict[str, tuple[float, str]] = {}  # trial_id -> (last reported metric, label)
        self._ended: set[str] = set()  # trials that ended: their last value is final

    def __getstate__(self):  # Tune pickles callbacks; a stream does not pickle
        return {k: v for k, v in self.__dict__.items() if k != "stream"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.stream = sys.stdout

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and value == value:
            self._latest[trial.trial_id] = (float(value), self._label(trial))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended.add(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended.add(trial.trial_id)

    @property
    def best(self) -> tuple[float, str] | None:
        """The best trial so far: the best last reported value of the trials that have ended (as the final
        summary ranks them). A running trial's value can still fall, so it does not count yet: the best never
        goes down."""
        done = [v for tid, v in self._latest.items() if tid in self._ended]
        if not done:
            return None
        pick = max if self.mode == "max" else min
        return pick(done, key=lambda v: v[0])

    def counts(self, trials) -> dict[str, int]:
        c = {"running": 0, "pending": 0, "done": 0, "stopped early": 0, "failed": 0}
        for t in trials:
            if t.status == "RUNNING":
                c["running"] += 1
            elif t.status in ("PENDING", "PAUSED"):
                c["pending"] += 1
            elif t.status == "ERROR":
                c["failed"] += 1
            elif t.status == "TERMINATED":
                c["stopped early" if self._stopped_early(t.trial_id) else "done"] += 1
        return c

    def line(self, trials) -> str:
        body = " · ".join(f"{k} {v}" for k, v in self.counts(trials).items())
        best = f" · best trial so far {self.metric}={self.best[0]:.4g} ({self.best[1]})" if self.best else ""
        return f"[{time.monotonic() - self._t0:5.0f}s] {body}{best}"

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if now - self._last_print < self._every:
            return
        line = self.line(trials)
        changed = line.split("] ", 1)[1] != self._last_line.split("] ", 1)[-1]
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
        elif changed or now - self._last_print >= 60:
            print(line, file=self.stream, flush=True)
        else:
            return
        self._last_print, self._last_line = now, line

    def on_experiment_end(self, trials, **info):
        self.finish(trials)

    def finish(self, trials) -> None:
        line = self.line(trials)
        if line != self._last_line or self.tty:
            print(("\r\033[K" if self.tty else "") + line, file=self.stream, flush=True)
        self._last_line = line
