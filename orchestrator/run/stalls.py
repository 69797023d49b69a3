"""A trial that stops reporting (a dead data loader, a hung file system, a deadlock) is ended, not waited on all night.

failure.stall_s is the longest a running trial may go without a report: seconds, or `auto`: 10 x the trial's
slowest step so far, and at least 10 minutes; before its first report (in this attempt) 10 x the slowest start-up
any trial of the sweep has shown, at least 10 minutes, and no limit while no trial has reported at all (nothing
to judge a start-up by). A stalled trial's process is ended (its Ray actor killed): the trial fails as `stalled`
with its last step, and is retried as a failure that is not the job's (orchestrator/trial/retries.py: a second stall at
the same step is not retried). Tune has no per-trial time limit (its TimeoutStopper ends the whole sweep, and a
trial's own stopper is only asked when it reports), hence this callback.
"""

from __future__ import annotations

import time

from ray import tune

from orchestrator.trial.retries import STALLED, Failure

FLOOR_S = 600.0  # `auto` never ends a trial that has been quiet for less than this
TIMES = 10.0  # `auto`: this many times the slowest step (or start-up) seen


def describe(limit) -> str:
    """failure.stall_s as the terminal says it."""
    return "auto: 10 x its slowest step, at least 10 min" if limit == "auto" else f"{float(limit):g} s"


class StallWatch(tune.Callback):
    """Ends the process of a running trial that has not reported for longer than its limit (see the module)."""

    def __init__(self, limit, retries, name, say=print, check_s: float = 1.0):
        self.limit = limit  # "auto", seconds, or None (no limit)
        self.retries = retries  # orchestrator.trial.retries.RetryPolicy: it learns why the trial failed
        self._name, self._say, self.check_s = name, say, check_s
        self._since: dict[str, float] = {}  # trial_id -> when it last reported (or started running) in this driver
        self._step: dict[str, int | None] = {}  # trial_id -> its last step in this attempt (None: none yet)
        self._slowest: dict[str, float] = {}  # trial_id -> its slowest step, seconds
        self._startup = 0.0  # the slowest start-up (from running to a first report) of the sweep
        self._checked = 0.0

    def __getstate__(self):  # Tune pickles callbacks into tuner.pkl; what is watched belongs to this driver
        return {"limit": self.limit, "check_s": self.check_s}

    def __setstate__(self, state):
        StallWatch.__init__(self, state["limit"], None, str, print, state["check_s"])

    def get_state(self):
        """Nothing for Tune's snapshot: each driver watches anew."""
        return None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """A report: the time since the one before is a step's (or the start-up's) time."""
        now, tid = time.monotonic(), trial.trial_id
        since = self._since.get(tid)
        if since is not None:
            if self._step.get(tid) is None:
                self._startup = max(self._startup, now - since)
            else:
                self._slowest[tid] = max(self._slowest.get(tid, 0.0), now - since)
        self._since[tid], self._step[tid] = now, result.get("step", result.get("training_iteration"))

    def limit_of(self, trial_id: str) -> float | None:
        """The seconds this trial may go without a report now (None: no limit)."""
        if self.limit is None:
            return None
        if self.limit != "auto":
            return float(self.limit)
        if self._step.get(trial_id) is None:  # before its first report in this attempt
            return max(FLOOR_S, TIMES * self._startup) if self._startup else None
        return max(FLOOR_S, TIMES * self._slowest.get(trial_id, 0.0), TIMES * self._startup)

    def quiet(self, trial_id: str) -> float | None:
        """Seconds since the running trial last reported (or started), or None."""
        since = self._since.get(trial_id)
        return None if since is None else time.monotonic() - since

    def on_step_end(self, iteration, trials, **info):
        """Every check_s: note trials that began running, forget those that stopped, end those that stalled."""
        now = time.monotonic()
        if self.limit is None or now - self._checked < self.check_s:
            return
        self._checked = now
        running = {t.trial_id: t for t in trials if t.status == "RUNNING"}
        for tid in [tid for tid in self._since if tid not in running]:
            del self._since[tid]
            self._step.pop(tid, None)
        for tid, trial in running.items():
            if tid not in self._since:
                self._since[tid], self._step[tid] = now, None
                continue
            limit = self.limit_of(tid)
            if limit is not None and now - self._since[tid] > limit:
                self._end(trial, now - self._since[tid], limit)

    def _end(self, trial, quiet: float, limit: float) -> None:
        from orchestrator.ray_internals import stored_result, trial_actor
        from orchestrator.run.progress import duration

        step = self._step.get(trial.trial_id)
        if step is None:  # quiet since it (re)started: its last step is where its checkpoint left it
            step = stored_result(trial).get("step")
        where = f"after step {step}" if step is not None else "before its first report"
        error = f"TrialStalled: no report for {duration(quiet)} {where}"
        if self.retries is not None:
            self.retries.killed[trial.trial_id] = Failure(STALLED, step, error)
        self._say(f"danlu: {self._name(trial)} stalled: {error[len('TrialStalled: '):]} (failure.stall_s="
                  f"{describe(self.limit)}: {duration(limit)} for this trial); its process is ended")
        del self._since[trial.trial_id]  # watched again once it runs again (a retry)
        actor = trial_actor(trial)
        if actor is not None:
            import ray

            ray.kill(actor, no_restart=True)
