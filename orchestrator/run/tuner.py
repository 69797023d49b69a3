"""Build the Ray Tune Tuner for a sweep: its scheduler's state, resources, concurrency, storage, callbacks.

Defaults chosen for throughput, measured in scripts/bench/overhead.py:
- reuse_actors=True: a worker process runs trial after trial instead of being started for each.
- Tune's own CSV/JSON/TensorBoard loggers are off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS): MLflow holds
  the results, and writing them thrice per report cost ~12% of a short sweep's wall time here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ray import tune

from orchestrator import tags as T
from orchestrator.ray_internals import (
    forget_statistics,
    quiet_tune_races,
    set_restored_parts,
    staging_dir,
    stored_result,
)
from orchestrator.trial.names import trial_dirname, trial_name
from orchestrator.trial.retries import tune_limit
from orchestrator.trial.trainable import TIME_KEY, meta_of


class SchedulerState(tune.Callback):
    """Carries the scheduler's state in Tune's experiment checkpoint.

    Tune saves callbacks' get_state() with every experiment snapshot, beside the trials and the
    searcher, but writes the scheduler only once (tuner.pkl, at the start): after Tuner.restore, ASHA
    would have empty rungs and judge the first results after a resume against nothing. Saving its
    rung records here keeps them consistent with the trials that the snapshot restores.
    """

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def get_state(self):
        """The scheduler's state, for Tune's experiment snapshot."""
        return {"scheduler": self.scheduler.state()}  # a Recording (orchestrator/scheduler)

    def set_state(self, state):
        """Give the scheduler back its state (after Tuner.restore)."""
        if state.get("scheduler"):
            self.scheduler.load_state(state["scheduler"])


class TrialRuns(tune.Callback):
    """The Tune callback that feeds a Tracker. Tune's hooks run on its event loop: they only enqueue.

    Every trial's first operation in this driver is its `start` (whichever hook sees it first), so a
    restored trial's run is found again before anything is logged to it. A writer thread that died stops
    the sweep here (Tune saves its state; the journal keeps what was not sent).
    """

    def __init__(self, tracker, describe: Callable, stopped_early: Callable, log_dir: str, say: Callable = print,
                 max_failures: int = 0, on_fault: Callable | None = None, cut: str | None = None,
                 started: Iterable[str] = (), max_output_mb: float | None = None, retries=None):
        self.tracker = tracker
        self._retries = retries  # orchestrator.trial.retries.RetryPolicy: which failures were not retried, and why
        self._max_output_mb = max_output_mb  # what of a trial's output goes to MLflow (orchestrator/tracking/output.py)
        self._cut = cut  # the tag for a trial the previous Slurm allocation's end cut short (orchestrator/cluster/slurm.py)
        self._started_before = set(started)  # trials the journal shows started by an earlier driver
        self._begun_at: dict[str, int | None] = {}  # trial_id -> its step in the snapshot it was restored from
        self._describe = describe  # trial -> (run name, params, tags)
        self._stopped_early = stopped_early  # trial_id -> bool
        self._log_dir = log_dir
        self._say = say
        self._max_failures = max_failures
        self._on_fault = on_fault  # called with an orchestrator.storage.disk.Fault when a trial's storage is full
        self._keys: dict[str, list[str]] = {}  # trial_id -> the metric names its job reports
        self.restores: list[str] = []  # restored trials that fell back to another checkpoint than Tune's
        self.disk_full: set[str] = set()  # trials that failed because a disk was full (not their fault: resumed)
        self._failed: dict[str, str] = {}  # trial_id -> how it failed, in one line (the summary's list)
        self.stalled: dict[str, int | None] = {}  # trial_id -> its last step, for trials that failed stalled
        self._first: dict[str, tuple[int, int]] = {}  # trial_id -> (ms, step) of its first report in this driver
        self._last: dict[str, tuple[int, int]] = {}  # ... and of its latest
        self._step_s: list[float] = []  # seconds per step of trials that ended (the newest 1,000)
        self._begun: dict[str, float] = {}  # trial_id -> when this driver started it, until its first report
        self._startup_s: list[float] = []  # seconds from a trial's start to its first report (the newest 1,000)

    def __getstate__(self):  # Tune pickles callbacks into tuner.pkl; the live tracker stays here
        return {k: v for k, v in self.__dict__.items() if k not in ("tracker", "_say", "_on_fault", "_retries")}

    def get_state(self):  # nothing of it belongs in Tune's experiment checkpoint: each driver starts anew
        """Nothing of it belongs in Tune's snapshot: each driver starts anew from the journal."""
        return None

    def on_step_begin(self, iteration, trials, **info):
        """Stop the sweep if the tracking writer died (Tune saves its state; the journal keeps what was not sent)."""
        if self.tracker.dead is not None:
            raise RuntimeError(f"the MLflow writer stopped ({type(self.tracker.dead).__name__}: "
                               f"{self.tracker.dead}); the sweep stops so that nothing goes unlogged")

    def _started(self, trial) -> None:
        if trial.trial_id not in self._keys:
            self._begun[trial.trial_id] = time.time()
            self._keys[trial.trial_id] = []
            self.tracker.trial_start(trial.trial_id, *self._describe(trial), start_ms=_now_ms())
            last = stored_result(trial)  # what the sweep's snapshot holds of it
            self._begun_at[trial.trial_id] = last.get("step", last.get("training_iteration"))

    def on_trial_start(self, iteration, trials, trial, **info):
        """Tune's hook: the trial's run starts (or is found again)."""
        self._started(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """Tune's hook: the trial's metrics, and from its first report where it runs and its config."""
        self._started(trial)
        meta = meta_of(result)
        if meta:
            self._keys[trial.trial_id] = list(meta.get("metrics", ()))
            self.tracker.trial_meta(trial.trial_id, meta)
            if meta.get("restored_from"):
                name = self._describe(trial)[0].split(" ", 1)[0]
                self.restores.append(f"{name}: {meta['restored_from']}")
                self._say(f"danlu: {name} restored from {meta['restored_from']}")
        values = {k: result[k] for k in self._keys.get(trial.trial_id, ()) if k in result}
        step = int(result.get("step", result.get("training_iteration", 0)))
        ts = result.get(TIME_KEY) or int(result.get("timestamp", time.time()) * 1000)
        self.tracker.trial_metrics(trial.trial_id, step, int(ts), values)
        if trial.trial_id not in self._first:
            self._resumed(trial.trial_id, step)
        if trial.trial_id not in self._first and trial.trial_id in self._begun:
            self._startup_s = [*self._startup_s[-999:], max(0.0, int(ts) / 1000 - self._begun.pop(trial.trial_id))]
        self._first.setdefault(trial.trial_id, (int(ts), step))
        self._last[trial.trial_id] = (int(ts), step)

    def _resumed(self, trial_id: str, step: int) -> None:
        """Its first report in this driver: a trial that had run before the previous Slurm allocation ended (its
        snapshot says so, it resumes past step 1 from a checkpoint, or the journal holds its start: cut before its
        first checkpoint and Tune's next snapshot) is tagged as cut by it, not failed."""
        before = self._begun_at.pop(trial_id, None)
        if self._cut and (before or step > 1 or trial_id in self._started_before):
            self.tracker.trial_tags(trial_id, {self._cut: f"resumed at step {step}"})

    def _timed(self, trial) -> None:
        """A trial ended: its seconds per step, from its first report here to its last (start-up left out)."""
        first, last = self._first.pop(trial.trial_id, None), self._last.pop(trial.trial_id, None)
        if first and last and last[1] > first[1]:
            self._step_s = [*self._step_s[-999:], (last[0] - first[0]) / 1000 / (last[1] - first[1])]

    def step_s(self) -> float | None:
        """Seconds per step, the median over the trials that ended (what `danlu plan` costs the next sweep at)."""
        times = sorted(self._step_s)
        return times[len(times) // 2] if times else None

    def startup_s(self) -> float | None:
        """Seconds from a trial's start to its first report (its process, imports, data), the mean: a cost adds up,
        and the first trials on fresh workers (seconds) are as real as those on reused ones (tenths)."""
        return sum(self._startup_s) / len(self._startup_s) if self._startup_s else None

    def on_trial_recover(self, iteration, trials, trial, **info):  # it failed, and is retried
        """Tune's hook: the trial failed and is retried; its retries are tagged and the failure said. One the retry
        policy stopped (it is ERROR already: orchestrator/trial/retries.py) ends as a failure instead."""
        if trial.status == "ERROR":
            self.on_trial_error(iteration, trials, trial, **info)
            return
        self._started(trial)
        self.tracker.trial_tags(trial.trial_id, {T.RETRIES: trial.num_failures})
        text = self._error_text(trial)
        if self._full(trial, text):
            return
        from orchestrator.trial.retries import INFRA, STALLED, kind_of

        failures = (self._retries.failures.get(trial.trial_id) or [None]) if self._retries else [None]
        kind = failures[-1].kind if failures[-1] else kind_of(text)
        why = {INFRA: "after its worker died",
               STALLED: f"after it stalled ({failures[-1] and failures[-1].error.split(': ', 1)[-1]})"
               }.get(kind, f"after it failed ({_last_line(text)[:200]})")
        n, limit = self._retries.retry_of(trial.trial_id) if self._retries else (trial.num_failures, self._max_failures)
        where = "from its start"
        ckpt = getattr(trial, "checkpoint", None)
        if ckpt is not None:
            from orchestrator.storage.checkpoints import inspect

            try:
                marker, _ = inspect(ckpt.filesystem, ckpt.path)
            except OSError:
                marker = None
            step = (marker or {}).get("step")
            where = f"from its checkpoint at step {step}" if step is not None else \
                f"from {ckpt.path.rsplit('/', 1)[-1]}"
        self._say(f"danlu: {self._name(trial)} restarted {why} (retry {n} of {limit}), {where}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        """Tune's hook: the trial's run ends FINISHED, tagged completed or stopped early."""
        self._started(trial)
        self._timed(trial)
        early = self._stopped_early(trial.trial_id)
        tags = {T.STOPPED_EARLY: str(early).lower(), T.OUTCOME: "stopped_early" if early else "completed"}
        self.tracker.trial_end(trial.trial_id, "FINISHED", tags, self._log(trial), None, _now_ms())
        forget_statistics(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        """Tune's hook: the trial's run ends FAILED with its error (or KILLED for a full disk: resumable)."""
        self._started(trial)
        self._first.pop(trial.trial_id, None)
        self._last.pop(trial.trial_id, None)
        forget_statistics(trial)
        text = self._error_text(trial)
        last = _last_line(text)
        if self._full(trial, text):  # not the trial's failure: KILLED, and resumed with the sweep
            tags = {T.ERROR: last[:5000], T.OUTCOME: "disk_full"}
            self.tracker.trial_end(trial.trial_id, "KILLED", tags, self._log(trial), text, _now_ms())
            return
        outcome, why = "failed", ""
        if self._retries is not None:
            stall = self._retries.killed.pop(trial.trial_id, None)  # ended by danlu, and Tune retries nothing
            if stall is not None:
                outcome, last = "stalled", stall.error
            elif trial.trial_id in self._retries.ended:  # a retry the policy refused
                outcome, why = self._retries.ended.pop(trial.trial_id)
                if outcome == "stalled":
                    last = self._retries.failures[trial.trial_id][-1].error
        if outcome == "stalled":
            self.stalled[trial.trial_id] = stored_result(trial).get("step")
        tags = {T.ERROR: last[:5000], T.OUTCOME: outcome}
        self._failed[trial.trial_id] = f"{last}{f'; {why}' if why else ''}"
        self.tracker.trial_end(trial.trial_id, "FAILED", tags, self._log(trial), text, _now_ms())
        log = os.path.relpath(self._log(trial)) if self._log(trial).startswith(os.getcwd()) else self._log(trial)
        shown = last.split(": ", 1)[-1] if outcome == "stalled" else last
        self._say(f"danlu: {self._name(trial)} {'stalled' if outcome == 'stalled' else 'failed'}: {shown[:300]}"
                  f"{f'; {why}' if why else ''} (full traceback: {log}, and error.txt of its MLflow run)")

    def _full(self, trial, text: str) -> bool:
        """A trial that failed because a disk or quota is full: the sweep stops (it is said once, by the sweep)."""
        from orchestrator.storage.disk import Fault, is_full

        if not is_full(text):
            return False
        self.disk_full.add(trial.trial_id)
        if self._on_fault is not None:
            self._on_fault(Fault(f"trial {self._name(trial)}'s files", self._log_dir.rsplit("/", 1)[0],
                                 _last_line(text)[:300]))
        return True

    def failure(self, trial) -> str:
        """A failed trial's error, in one line (its exception's last line; a stall's, and a retry not made, said)."""
        return self._failed.get(trial.trial_id) or _last_line(self._error_text(trial))

    @staticmethod
    def _error_text(trial) -> str:
        text = ""
        if trial.error_file and os.path.exists(trial.error_file):
            with open(trial.error_file, errors="replace") as f:
                text = f.read()
        return text or str(trial.get_error() or "trial failed")

    def _name(self, trial) -> str:
        return self._describe(trial)[0].split(" ", 1)[0]

    def ends(self, trials: list) -> dict[str, dict | None]:
        """How each trial Tune holds ended, for RunStore.close_sweep (None: not ended, or by a full disk)."""
        out: dict[str, dict | None] = {}
        for t in trials:
            if t.status == "TERMINATED":
                early = self._stopped_early(t.trial_id)
                out[t.trial_id] = {"status": "FINISHED", "log": self._log(t), "tags": {
                    T.STOPPED_EARLY: str(early).lower(), T.OUTCOME: "stopped_early" if early else "completed"}}
            elif t.status == "ERROR" and t.trial_id not in self.disk_full:
                out[t.trial_id] = {"status": "FAILED", "log": self._log(t), "tags": {T.OUTCOME: "failed"}}
            else:
                out[t.trial_id] = None
        return out

    def _log(self, trial) -> str:
        """The trial's output as its run gets it: whole, or capped at tracking.max_output_mb (the whole in logs/)."""
        from orchestrator.tracking.output import for_store

        return for_store(os.path.join(self._log_dir, f"{trial.trial_id}.log"), self._max_output_mb)


def _now_ms() -> int:
    """Now, as a run's start or end time: the moment of the trial's event, not of the store's write."""
    return int(time.time() * 1000)


def _last_line(text: str) -> str:
    return next((ln for ln in reversed(text.strip().splitlines()) if ln.strip()), "trial failed")


class KeepSnapshots(tune.Callback):
    """After Tune's snapshots, danlu's own copy of them (orchestrator/storage/snapshots.py): Tune's files in the storage
    are not the only copy a restore can use."""

    def __init__(self, keeper):
        self.keeper = keeper

    def __getstate__(self):
        return {}

    def on_step_end(self, iteration, trials, **info):
        """Copy Tune's newest snapshot files into danlu's generations (throttled)."""
        if self.keeper is not None:
            self.keeper.keep(staging_dir(trials))

    def on_experiment_end(self, trials, **info):
        """Copy Tune's last snapshot files, whatever the throttle."""
        if self.keeper is not None:
            self.keeper.keep(staging_dir(trials), force=True)


class RestoreLimits(tune.Callback):
    """Keeps danlu/restore_limits.json (orchestrator/storage/checkpoints.py) to what it must say: the limit binds a trial
    restored from the sweep's snapshot only until it reports past it; Tune's later checkpoints of it (a retry
    after its worker died) came through this driver's journal."""

    def __init__(self, limits: dict, state_dir):
        self.limits, self.state_dir = dict(limits), state_dir
        self._dirty, self._last = False, 0.0

    def __getstate__(self):
        return {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """A trial past its restore limit needs it no more."""
        limit = self.limits.get(trial.trial_id)
        if limit is not None and result.get("step", limit) > limit:
            del self.limits[trial.trial_id]
            self._dirty = True

    def on_step_end(self, iteration, trials, **info):
        """Write the remaining limits when they changed (at most every 5 s)."""
        if self._dirty and time.monotonic() - self._last > 5:
            from orchestrator.storage.checkpoints import write_limits

            try:
                write_limits(self.state_dir, self.limits)
                self._dirty, self._last = False, time.monotonic()
            except OSError:  # a full disk: the older, stricter limits only cost redone steps
                pass


class Trials(tune.Callback):
    """Keeps Tune's trial list for the summary (Tune's ResultGrid reads result.json, which we do not write)."""

    def __init__(self):
        self.trials: list = []

    def on_step_end(self, iteration, trials, **info):
        """Keep Tune's list of trials."""
        self.trials = trials

    def on_experiment_end(self, trials, **info):
        """Keep Tune's last list of trials."""
        self.trials = trials


class MetricGuard(tune.Stopper):
    """Stops the whole sweep at the first report that lacks the sweep's metric."""

    def __init__(self, metric: str):
        self.metric = metric
        self.missing: list[str] | None = None  # what the job reported instead

    def __call__(self, trial_id, result) -> bool:
        if self.metric in result:
            return False
        self.missing = list((meta_of(result) or {}).get("metrics", [])) if self.missing is None else self.missing
        return True

    def stop_all(self) -> bool:
        """Stop the sweep once a trial's first report lacks the metric (every trial would)."""
        return self.missing is not None


def _tune_env() -> None:
    quiet_tune_races()
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # MetricGuard says it more clearly
    # Tune forces an experiment snapshot after `keep` checkpoints of a trial and warns about it each time:
    # that is how checkpoint deletion stays consistent, not something a user should act on.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def with_resources(trainable, cfg):
    """The trainable with what each trial asks for: the one builder for a new sweep and a restored one (a
    restore given the bare trainable would run new trials on Tune's default of 1 CPU and no GPU)."""
    from orchestrator.cluster.placement import trial_resources

    res = trial_resources(cfg.resources)
    resources: dict[str, Any] = {"cpu": res.pop("CPU"), "gpu": res.pop("GPU"), **({"memory": res.pop("memory")} if "memory" in res else {}),
                 **({"custom_resources": res} if res else {})}
    return tune.with_resources(trainable, resources)


def can_restore(path: str) -> bool:
    """Tune has saved an experiment there that it can restore (tuner.pkl alone is not enough: a driver
    killed before Tune's first snapshot left no trials to restore)."""
    return tune.Tuner.can_restore(path) and any(os.path.basename(f).startswith("experiment_state-")
                                                 for f in os.listdir(path))


def restore_tuner(path: str, trainable, cfg, search, scheduler, callbacks, stopper):
    """Tuner.restore for a sweep: unfinished and errored trials continue from their checkpoints, with the
    same resources per trial as when it started, and today's callbacks, stopper and scheduler. The searcher
    comes back from Tune's experiment checkpoint, with what it had suggested and been told."""
    _tune_env()
    tuner = tune.Tuner.restore(path, with_resources(trainable, cfg), resume_unfinished=True, resume_errored=True,
                               param_space=search.param_space)
    set_restored_parts(tuner, callbacks, stopper, scheduler)
    return tuner


def build_tuner(trainable, search, cfg, scheduler, callbacks, stopper, experiment: Path, verbose: bool):
    """A new Tuner for the sweep, its experiment in the folder `experiment` (the sweep's storage, or an extension's);
    `search` is the sweep's orchestrator.search.Search (its algorithm, param_space and Tune's num_samples)."""
    _tune_env()
    return tune.Tuner(
        with_resources(trainable, cfg),
        param_space=search.param_space,
        tune_config=tune.TuneConfig(
            metric=cfg.sweep.metric,
            mode=cfg.sweep.mode,
            num_samples=search.num_samples,
            scheduler=scheduler,
            search_alg=search.algorithm,
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=experiment.name,
            storage_path=str(experiment.parent),
            callbacks=callbacks,
            stop=stopper,
            verbose=2 if verbose else 0,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=None if getattr(scheduler, "keeps_all_checkpoints", False) else cfg.checkpoint.keep),
            failure_config=tune.FailureConfig(max_failures=tune_limit(cfg.failure.max_failures,
                                                                      cfg.failure.get("retry_job_errors") or 0)),
        ),
    )


class BudgetMeter(tune.Callback):
    """Counts the sweep's budget (orchestrator/launch/budget.py) at every step of Tune's loop: the time since the last step
    times the trials RUNNING; keeps it (danlu/budget.json) and logs it to the parent run every `every_s`; stops the
    sweep (`stop(why)`: gracefully, as a storage fault does) once a limit is reached."""

    def __init__(self, meter, tracker, stop: Callable[[str], None], every_s: float = 10.0, sample_s: float = 0.5):
        self.meter, self.tracker, self.stop, self.every_s = meter, tracker, stop, every_s
        self.sample_s = sample_s  # Tune's loop steps many times a second; counting its trials each time costs
        # O(trials) per step (6% of the driver's loop at 1,000 trials): the count is taken every sample_s
        self._last: float | None = None
        self._logged: float | None = None
        self.reached: str | None = None
        self.cut: list[tuple[str, int | None]] = []  # the trials running when the limit was reached: (name, step)

    def __getstate__(self):
        return {}

    def on_step_end(self, iteration, trials, **info):
        """Add the time since the last step; keep, log and judge it."""
        now = time.monotonic()
        if self._last is None or self._logged is None:
            self._last = self._logged = now
            return
        if now - self._last < self.sample_s:
            return
        running = sum(1 for t in trials if t.status == "RUNNING")
        self.meter.add(now - self._last, running)
        self._last = now
        if now - self._logged >= self.every_s:
            self.flush()
        if self.reached is None:
            self.reached = self.meter.reached()
            if self.reached is not None:
                self.cut = [(trial_name(t), stored_result(t).get("step")) for t in trials if t.status == "RUNNING"]
                self.flush()
                self.stop(self.reached)

    def flush(self) -> None:
        """Keep what was used and log it to the parent run (its step: seconds of the sweep's wall time)."""
        self._logged = time.monotonic()
        self.meter.save()
        self.tracker.sweep_metrics(int(self.meter.used.wall_s), self.meter.used.as_metrics())
