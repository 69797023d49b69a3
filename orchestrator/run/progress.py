"""A concise live view of a sweep, in place of Ray's per-iteration tables: when will it end?

    [  42s] running 2 (t008@5 t009@1) · pending 31 · done 7/40 (4 completed, 3 stopped early, 0 failed) · ETA ~3m10s (estimate) · best trial so far val_acc=0.9711 (t004)

On a terminal the line is redrawn in place at most twice a second; otherwise (a log file under Slurm or Ray Jobs) a
plain line is printed every `every_s` seconds, and once at the end. Before any trial reports, it says the first
trials are starting (Ray starts its workers), so that a slow start does not look stuck.

The ETA is an estimate: the work left, in slot-seconds, over the slots the sweep has been using. The work left is
the scheduler's expected steps (`Work`: under ASHA a trial alive at step s goes on past each rung above s with the
chance Ray's ASHA rule gives it there, near 1 for the first trials at a rung and 1/reduction_factor once it fills, so
its expected final step follows from the rungs; under FIFO every trial runs to max_t, the job's epochs or what
completed trials reached) times the observed seconds a step, plus each
trial still to start its observed start-up time (a trial's wall time beyond its steps: under ASHA, with many short
trials, it is a good part of the night).

The same state goes to the sweep's danlu/progress.json (`danlu list` reads it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from ray.tune import Callback


@dataclass
class Work:
    """The expected steps (Tune's training iterations) of a trial under the sweep's scheduler."""

    max_t: float | None  # a trial's last step (None: learnt from trials that complete)
    rungs: tuple[float, ...] = ()  # ASHA's decision points, below max_t
    reduction_factor: float = 1.0

    @classmethod
    def of(cls, scheduler_cfg, epochs=None) -> Work:
        """The work of a trial under the sweep's scheduler, as its settings say (orchestrator.scheduler.schedule)."""
        from orchestrator import scheduler

        s = scheduler.schedule(scheduler_cfg, epochs)
        return cls(s.max_t, s.rungs, s.reduction_factor)

    def final(self, reached: float = 0.0, max_t: float | None = None, passing: dict | None = None) -> float | None:
        """The expected last step of a trial alive at step `reached`. `passing`: rung -> the chance of going on
        past it (`passing()`; 1/rf where not given)."""
        end = self.max_t or max_t
        if end is None:
            return None
        ahead = [r for r in self.rungs if r > reached]
        keep, expected = 1.0, 0.0
        for r in ahead:  # at each rung above it: stopped there, or on with the share that goes on
            go = (passing or {}).get(r, 1 / self.reduction_factor)
            expected += keep * (1 - go) * r
            keep *= go
        return expected + keep * end

    def passing(self, steps: list[float]) -> dict[float, float]:
        """Per rung, the chance that a trial reaching it next goes on, given `steps` (every trial's step so far,
        ended or running). Ray's ASHA lets a trial on when its value is at least the (1 - 1/rf) quantile q of the n
        values recorded at the rung before it: with its rank uniform among n + 1, that is about (n - q) / (n + 1),
        q = (1 - 1/rf)(n - 1) (n = 0: always). The first trials at a rung nearly all go on; the share falls to 1/rf
        as the rung fills. Not the share seen so far: that holds the early trials' easy passes, and overstates the
        rest of the night."""
        out = {}
        for r in self.rungs:
            n = sum(1 for s in steps if s >= r)
            out[r] = 1.0 if n == 0 else (n - (1 - 1 / self.reduction_factor) * (n - 1)) / (n + 1)
        return out


def duration(s: float) -> str:
    """Seconds as 42s, 3m10s or 1h05m."""
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress(Callback):
    def __init__(self, metric: str, mode: str, label: Callable, stopped_early: Callable, stream=None,
                 every_s: float = 10.0, work: Work | None = None, state_file: str | None = None):
        self.metric, self.mode = metric, mode
        self._label = label  # trial -> short name (t007)
        self._stopped_early = stopped_early
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._every = 0.5 if self.tty else every_s
        self.work = work or Work(None)
        self.state_file = state_file
        self._t0 = time.monotonic()
        self._first_result: float | None = None
        self._last_print = -1e9
        self._last_line = ""
        self.total: int | None = None
        self._latest: dict[str, tuple[float, str]] = {}  # trial_id -> (last reported metric, label)
        self._ended: set[str] = set()  # trials that ended: their last value is final
        self._best: tuple[float, str] | None = None  # the best final value so far (kept as trials end: the line is
        # drawn every 0.5 s on a terminal, and finding it among all ended trials each time was O(trials))
        self._step: dict[str, float] = {}  # trial_id -> its training iteration so far (what the work counts)
        self._first_step: dict[str, float] = {}  # trial_id -> its first iteration reported in this driver
        self._completed_at: list[float] = []  # last steps of trials that ran to their end (FIFO's max_t)
        self._started: dict[str, float] = {}  # trial_id -> when it started in this driver
        self._live: set[str] = set()  # trials seen pending, paused or running in this driver
        self._last_report: dict[str, float] = {}  # trial_id -> when it last reported
        self._running_since: dict[str, float] = {}  # trial_id -> when it last began running (a start, a resume)
        self._intervals: list[float] = []  # seconds between two reports of a trial (a step's time)
        self._overheads: list[float] = []  # an ended trial's wall time beyond its steps (start-up, end)
        self._slots = 1  # the most trials seen running at once
        self._counted: dict | None = None  # the counts of the line just drawn (line(), then _save())

    def __getstate__(self):  # Tune pickles callbacks; a stream does not pickle
        return {k: v for k, v in self.__dict__.items() if k != "stream"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__.setdefault("_best", None)  # pickled by an earlier danlu
        self.__dict__.setdefault("_running_since", {})
        self.stream = sys.stdout

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        """Tune's hook at the start: the total number of trials it will create, where known."""
        self.total = total_num_samples

    def on_trial_start(self, iteration, trials, trial, **info):
        """Tune's hook: note when the trial started (for its start-up time), and when it began running again."""
        self._started.setdefault(trial.trial_id, time.monotonic())
        self._running_since[trial.trial_id] = time.monotonic()

    def quiet(self, trials) -> list[tuple[str, float]]:
        """Running trials that have not reported for much longer than a step takes (60 s, or 5 steps, whichever is
        longer): (name, seconds quiet), the quietest first. A hung job shows here before failure.stall_s ends it."""
        now, step_s = time.monotonic(), self._step_s()
        floor = max(60.0, 5 * step_s) if step_s else 60.0
        out = []
        for t in trials:
            if t.status == "RUNNING":
                since = max(self._last_report.get(t.trial_id, 0.0), self._running_since.get(t.trial_id, 0.0))
                if since and now - since > floor:
                    out.append((self._label(t), now - since))
        return sorted(out, key=lambda q: -q[1])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """Tune's hook: the trial's step and value (the best so far, the seconds a step takes)."""
        now = time.monotonic()
        if self._first_result is None:
            self._first_result = now
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and value == value:
            self._latest[trial.trial_id] = (float(value), self._label(trial))
        step = float(result.get("training_iteration", 0) or 0)
        before, last = self._step.get(trial.trial_id), self._last_report.get(trial.trial_id)
        if before is not None and last is not None and step > before:
            self._intervals.append((now - last) / (step - before))
            self._intervals = self._intervals[-200:]
        self._step[trial.trial_id] = max(step, before or 0.0)
        self._first_step.setdefault(trial.trial_id, step)
        self._last_report[trial.trial_id] = now
        self._started.setdefault(trial.trial_id, now)

    def on_trial_complete(self, iteration, trials, trial, **info):
        """Tune's hook: the trial ended; a trial that ran to its end tells how long trials run."""
        if not self._stopped_early(trial.trial_id) and trial.trial_id in self._step:
            self._completed_at.append(self._step[trial.trial_id])
        self._end(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        """Tune's hook: the trial failed (counted, and no longer running)."""
        self._end(trial)

    def _end(self, trial) -> None:
        self._ended.add(trial.trial_id)
        value = self._latest.get(trial.trial_id)  # its last value is final now
        if value is not None and (self._best is None or
                                  (value[0] > self._best[0] if self.mode == "max" else value[0] < self._best[0])):
            self._best = value
        start, step_s = self._started.get(trial.trial_id), self._step_s()
        if start is not None and step_s is not None and trial.trial_id in self._step:
            ran = self._step[trial.trial_id] - (self._first_step.get(trial.trial_id, 1.0) - 1.0)
            self._overheads.append(max(0.0, time.monotonic() - start - ran * step_s))
            self._overheads = self._overheads[-200:]

    def _step_s(self) -> float | None:
        if not self._intervals:
            return None
        xs = sorted(self._intervals)
        return xs[len(xs) // 2]  # the median: a slow first step of a trial does not set the pace

    @property
    def best(self) -> tuple[float, str] | None:
        """The best trial so far: the best last reported value of the trials that have ended (as the final
        summary ranks them). A running trial's value can still fall, so it does not count yet: the best never
        goes down."""
        return self._best

    def counts(self, trials) -> dict[str, int]:
        """Trials running, pending, completed, stopped early and failed, as Tune holds them now."""
        c = {"running": 0, "pending": 0, "completed": 0, "stopped early": 0, "failed": 0}
        live, started, ended = self._live, self._started, self._ended
        for t in trials:  # one pass: drawn every 0.5 s on a terminal, over all the sweep's trials
            status, tid = t.status, t.trial_id
            if status == "RUNNING":
                c["running"] += 1
                live.add(tid)
            elif status in ("PENDING", "PAUSED"):
                c["pending"] += 1
                live.add(tid)
            elif status == "ERROR":
                c["failed"] += 1
            elif status == "TERMINATED" and (tid in live or tid in started) and tid not in ended:
                # stopped with the sweep (a stop, a time limit: Tune's clean-up marks running and pending trials
                # TERMINATED alike): it resumes with it, not done. A trial that ended in an earlier driver was
                # never live in this one.
                c["pending"] += 1
            elif status == "TERMINATED":
                c["stopped early" if self._stopped_early(tid) else "completed"] += 1
        self._slots = max(self._slots, c["running"])  # counted here, at each line: not at each result (O(trials))
        return c

    def eta(self, trials) -> float | None:
        """Seconds left, estimated (None while there is nothing to estimate from)."""
        step_s = self._step_s()
        if step_s is None:
            return None
        max_t = (sum(self._completed_at) / len(self._completed_at)) if self._completed_at else None
        fresh = self.work.final(0.0, max_t)
        if fresh is None:
            return None
        overhead = sum(self._overheads) / len(self._overheads) if self._overheads else 0.0
        passing = self.work.passing(list(self._step.values()))
        fresh = self.work.final(0.0, max_t, passing) or fresh
        left = 0.0  # slot-seconds
        for t in trials:
            if t.status in ("RUNNING", "PENDING", "PAUSED"):
                at = self._step.get(t.trial_id, 0.0)  # a paused or restored trial goes on from its step
                more = max(0.0, (self.work.final(at, max_t, passing) or fresh) - at) * step_s
                left += more + (overhead if t.status != "RUNNING" else 0.0)
        unborn = max(0, (self.total or len(trials)) - len(trials))
        left += unborn * (overhead + fresh * step_s)
        return left / max(1, self._slots)

    def line(self, trials) -> str:
        """The progress line: elapsed time, running trials with their steps, pending, done of total, the ETA, the
        best trial so far."""
        c = self._counted = self.counts(trials)  # O(trials): _save, right after, writes the same counts
        done = c["completed"] + c["stopped early"] + c["failed"]
        running = sorted((self._label(t), self._step.get(t.trial_id)) for t in trials if t.status == "RUNNING")
        at = " ".join(f"{name}@{int(s)}" if s else name for name, s in running[:6]) + (
            f" +{len(running) - 6}" if len(running) > 6 else "")
        total = f"/{self.total}" if self.total else ""
        parts = [f"running {c['running']}" + (f" ({at})" if at else ""), f"pending {c['pending']}",
                 f"done {done}{total} ({c['completed']} completed, {c['stopped early']} stopped early, "
                 f"{c['failed']} failed)"]
        quiet = self.quiet(trials) if c["running"] else []
        if quiet:
            parts[0] += " · " + ", ".join(f"{name} no report for {duration(q)}" for name, q in quiet[:3])
        if self._first_result is None and done == 0:
            parts.append("starting the first trials (Ray starts its workers)")
        elif quiet:
            parts.append(f"ETA: unknown while {quiet[0][0]} reports nothing")
        elif done < len(trials) or (self.total and done < self.total):
            left = self.eta(trials)
            parts.append(f"ETA ~{duration(left)} (estimate)" if left is not None else "ETA: estimating")
        if self.best:
            parts.append(f"best trial so far {self.metric}={self.best[0]:.4g} ({self.best[1]})")
        return f"[{time.monotonic() - self._t0:5.0f}s] " + " · ".join(parts)

    def on_step_end(self, iteration, trials, **info):
        """Tune's hook after each loop step: redraw the line (a terminal) or print it every every_s seconds (a
        log)."""
        now = time.monotonic()
        if now - self._last_print < self._every:
            return
        line = self.line(trials)
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
        else:
            print(line, file=self.stream, flush=True)
        self._last_print, self._last_line = now, line
        self._save(trials)

    def on_experiment_end(self, trials, **info):
        """Tune's hook at the end: the last line, always printed."""
        self.finish(trials)

    def finish(self, trials) -> None:
        """Print the last line and save the state to progress.json."""
        line = self.line(trials)
        print(("\r\033[K" if self.tty else "") + line, file=self.stream, flush=True)
        self._last_line = line
        self._save(trials)

    def _save(self, trials) -> None:
        """The sweep's state for `danlu list`: written whole (tmp + rename); a disk that cannot take it only
        leaves the previous one."""
        if not self.state_file:
            return
        c, self._counted = self._counted or self.counts(trials), None
        state = {"done": c["completed"] + c["stopped early"] + c["failed"], "total": self.total or len(trials),
                 "running": c["running"], "failed": c["failed"],
                 "best": f"{self.metric}={self.best[0]:.4g} ({self.best[1]})" if self.best else None,
                 "updated": time.time()}
        tmp = f"{self.state_file}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(state, f)
            os.replace(tmp, self.state_file)
        except OSError:
            pass
