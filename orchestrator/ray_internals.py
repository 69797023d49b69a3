"""Every use of Ray's private attributes, in this one module.

Ray Tune has no public way to do some things danlu needs; each function here says why. The names are
listed in PRIVATE, and tests/test_ray_internals.py checks each against the installed Ray, failing with
the name when an upgrade removes one.
"""

from __future__ import annotations

from collections.abc import Callable

PRIVATE = (
    "ray.tune.Tuner._local_tuner",  # the in-process TunerInternal (absent with Ray Client)
    "TunerInternal._run_config",
    "TunerInternal._tune_config",
    "AsyncHyperBandScheduler._brackets",
    "AsyncHyperBandScheduler._trial_info",
    "AsyncHyperBandScheduler._num_stopped",
    "AsyncHyperBandScheduler._time_attr",
    "AsyncHyperBandScheduler._max_t",
    "AsyncHyperBandScheduler._metric",  # the metric's name and sign, set by Tune (seed-aware ASHA reads them)
    "AsyncHyperBandScheduler._metric_op",
    "_Bracket._rungs",
    "Trainable._iteration",
    "Trainable._time_total",
    "ray.train._internal.checkpoint_manager._TrainingResult",
    "ray.tune.execution.tune_controller",  # loggers of Tune's races filtered by _TuneNoise
    "ray.tune.execution.experiment_state",
    "Repeater._groups",  # a searcher's configurations and their seeds' trials (orchestrator/search/_replicates.py)
    "Repeater._current_group",
    "_TrialGroup._trials",
    "OptunaSearch._ot_study",  # the Optuna study inside Tune's OptunaSearch, and in its saved state
    "Trial.storage",  # a trial's StorageContext: the driver's staging folder of Tune's snapshot files
    "StorageContext.experiment_driver_staging_path",
    "ray._private.worker.print_to_stdstream",  # Ray's "(raylet) A worker died..." lines: danlu says it itself
    "Trial.run_metadata",  # a trial's last result (stored_result) and statistics (forget_statistics)
    "_TrainingRunMetadata.last_result",
    "_TrainingRunMetadata.metric_analysis",
    "_TrainingRunMetadata.metric_n_steps",
    "_TrainingRunMetadata.invalidate_cache",
    "_TrainingRunMetadata.error_filename",  # a trial put back after a failure (put_back_after_failure)
    "ray.tune.execution.tune_controller.TuneController",  # add_trial's order (hold_added): a test checks it
    "TrialRunnerWrapper._tune_controller",  # the controller behind the scheduler's wrapper (fail_requeued)
    "TuneController._schedule_trial_stop",
    "TuneController._try_recover",  # stops the trial before _requeue_trial tells the scheduler (being_retried)
    "Trial.temporary_state",  # a running trial's Ray actor (trial_actor: a stalled trial's process is ended)
)


# -- Tuner.restore with today's callbacks, stopper and scheduler -------------------------------------------
def set_restored_parts(tuner, callbacks: list, stopper, scheduler) -> None:
    """Tuner.restore brings RunConfig and TuneConfig back from tuner.pkl, pickled at the first start: the
    callbacks there are copies without their MLflow writer or output stream, and the scheduler a fresh copy.
    Ray has no public way to pass new ones, so they are set where Tuner(...) itself puts them."""
    internal = tuner._local_tuner
    internal._run_config.callbacks = callbacks
    internal._run_config.stop = stopper
    internal._tune_config.scheduler = scheduler


# -- Repeater's groups (seeds as replicates under a searcher) ------------------------------------------------
def repeater_groups(repeater) -> list:
    """Every configuration the Repeater has suggested, as its groups (one trial per seed). Tune's Repeater
    keeps them without a public accessor; danlu needs them to bound the configurations outstanding and to
    report what the searcher was told."""
    return list(repeater._groups)


def repeater_starts_group(repeater) -> bool:
    """Whether the next suggestion begins a new configuration (the current one has all its seeds)."""
    return repeater._current_group is None or repeater._current_group.full()


def group_trial_ids(group) -> list[str]:
    """The trial ids of one of Repeater's configuration groups (Tune keeps them without an accessor)."""
    return list(group._trials)


def optuna_study(searcher_or_state):
    """The Optuna study of a live OptunaSearch, or of the state Tune saved for it (searcher-state-*.pkl in the
    sweep's storage: the searcher's attributes as a dict). Tune gives no accessor; danlu reads what Optuna
    was told (tests, and the count of configurations it learned from)."""
    if isinstance(searcher_or_state, dict):
        return searcher_or_state["_ot_study"]
    return searcher_or_state._ot_study


def saved_optuna_study(storage_dir):
    """The study in the newest readable searcher state Tune saved in a sweep's storage, or None."""
    from orchestrator.storage.snapshots import newest_loadable

    state = newest_loadable(storage_dir, "searcher-state-*.pkl")
    return optuna_study(state) if isinstance(state, dict) and "_ot_study" in state else None


# -- ASHA's rung records ------------------------------------------------------------------------------
def asha_limits(scheduler) -> tuple[str, float]:
    """ASHA's time attribute and max_t, as Tune set them (no public accessor)."""
    return scheduler._time_attr, scheduler._max_t


def asha_metric(scheduler) -> tuple[str, float]:
    """The metric ASHA ranks on and its sign (-1 for mode=min: larger is better after it), as Tune set them."""
    return scheduler._metric, scheduler._metric_op


def asha_state(scheduler) -> dict:
    """Tune saves the scheduler only once (tuner.pkl, at the start); its rung records travel in Tune's
    experiment checkpoint through a callback's get_state instead (orchestrator.run.tuner.SchedulerState)."""
    return {
        "rungs": [[dict(recorded) for _, recorded in b._rungs] for b in scheduler._brackets],
        "brackets": {tid: scheduler._brackets.index(b) for tid, b in scheduler._trial_info.items()},
        "num_stopped": scheduler._num_stopped,
    }


def asha_load(scheduler, state: dict) -> None:
    """Put saved rung records back into ASHA's brackets (after Tuner.restore; see asha_state)."""
    for bracket, rungs in zip(scheduler._brackets, state["rungs"], strict=True):
        for (_, recorded), saved in zip(bracket._rungs, rungs, strict=True):
            recorded.clear()
            recorded.update(saved)
    for tid, idx in state["brackets"].items():
        scheduler._trial_info[tid] = scheduler._brackets[idx]
    scheduler._num_stopped = state["num_stopped"]


def asha_carry(scheduler, earlier: dict[str, dict[float, float]]) -> None:
    """Record earlier trials' signed values in ASHA's rungs (an extension's: each earlier trial's value at each rung
    it reached, under a key of its own), as if they had run in this experiment: the rungs' cutoffs include them."""
    for bracket in scheduler._brackets:
        for milestone, recorded in bracket._rungs:
            for key, values in earlier.items():
                if milestone in values:
                    recorded[key] = values[milestone]


# -- a restored trial whose checkpoint cannot be used ------------------------------------------------
def fallback_trainable(train_fn: Callable, notes: dict) -> type:
    """Tune's function trainable for `train_fn`, restoring a trial from a checkpoint it can use.

    Tune's experiment snapshot names each trial's checkpoint. That checkpoint may be gone (Tune deleted it,
    CheckpointConfig(num_to_keep), before its next snapshot), damaged (cut short by a kill or a full disk), or
    past what the sweep's journal holds (orchestrator/storage/checkpoints.py). Tune would restore it anyway, and a
    missing or damaged one fails every retry the same way. Here orchestrator.storage.checkpoints.choose picks the
    checkpoint, another whole one of the trial's own or its start, and says why (notes[trial_id], which the
    trial reports). Trainable.restore takes the iteration count from the checkpoint's metrics, hence
    _TrainingResult; starting over resets _iteration and _time_total.
    """
    from ray.train._internal.checkpoint_manager import _TrainingResult
    from ray.tune import Checkpoint
    from ray.tune.trainable.function_trainable import wrap_function

    from orchestrator.storage.checkpoints import choose

    base = wrap_function(train_fn)

    class DanluTrainable(base):  # type: ignore[valid-type,misc]  # Tune's class, made at run time
        def restore(self, checkpoint_path):
            ckpt = getattr(checkpoint_path, "checkpoint", None)
            if ckpt is None:
                return super().restore(checkpoint_path)
            path, iteration, why = choose(ckpt.filesystem, ckpt.path, self.trial_id)
            if why is None:
                return super().restore(checkpoint_path)
            notes[self.trial_id] = why
            if path is None:
                self._iteration, self._time_total = 0, 0.0
                return None
            return super().restore(_TrainingResult(checkpoint=Checkpoint(path, filesystem=ckpt.filesystem),
                                                   metrics={"training_iteration": iteration}))

    DanluTrainable.__name__ = DanluTrainable._name = getattr(train_fn, "__name__", "danlu_trial")
    return DanluTrainable


# -- what Tune keeps of a trial that ended -------------------------------------------------------------------
def forget_statistics(trial) -> None:
    """Tune keeps, for every trial and every number in its results, running statistics: min, max, mean and last,
    and the means of the last 5 and 10 results with their deques (about 15 KB a trial of the sleep job, kept in
    memory and in every experiment snapshot). They serve ResultGrid's best trial by `scope` and Tune's reporters;
    danlu reads none of them (MLflow holds every step), and they would grow the driver by ~15 MB per 1,000
    finished trials (ray#64231). Tune has no setting for them (the 5 and 10 are fixed in Trial.__init__), so an
    ended trial's are dropped here; they come back should the trial run again."""
    meta = trial.run_metadata
    if meta.metric_analysis or meta.metric_n_steps:
        meta.metric_analysis = {}
        meta.metric_n_steps = {}
        meta.invalidate_cache()


def fail_requeued(controller, trial, why: str) -> None:
    """Fail a trial that Tune has just put back to retry it (from the scheduler's on_trial_add), as Tune fails one it
    does not retry: the searcher told it ended in an error, the trial ERROR (Tune then calls the callbacks'
    on_trial_recover, where orchestrator.run.tuner.TrialRuns finds it ERROR). Tune decides retries by count alone
    (Trial.should_recover) with no hook between a failure and its retry; the scheduler is handed a wrapper of
    Tune's controller that warns on _schedule_trial_stop, so the controller itself is used."""
    from ray.tune.error import TuneError

    tune = getattr(controller, "_tune_controller", controller)
    tune.search_alg.on_trial_complete(trial.trial_id, error=True)
    tune._schedule_trial_stop(trial, exception=TuneError(why))


def put_back_after_failure(trial) -> bool:
    """Whether Tune is adding this trial back after a failure, to retry it: it has an error file (a new trial has
    none, and Tune clears a restored one's). Read from its metadata: Trial.error_file raises for a trial whose
    folder is not named yet."""
    return bool(trial.run_metadata.error_filename)


def being_retried(trial) -> bool:
    """In the scheduler's on_trial_error: whether Tune is retrying the trial. Tune stops a trial it retries (status
    ERROR) before it tells the scheduler (TuneController._try_recover, then _requeue_trial), and tells the scheduler
    of one it does not retry while it is still RUNNING (or PENDING); Tune says it no other way."""
    return trial.status == "ERROR"


def trial_actor(trial):
    """The Ray actor a running trial's function runs in (None: not running): a stalled trial's process is ended by
    killing it (orchestrator/run/stalls.py). Tune keeps it in the trial's temporary state, with no public accessor."""
    return trial.temporary_state.ray_actor


def hold_added(trial) -> None:
    """Give a trial that a resumed sweep is adding the status PAUSED instead of PENDING, from the scheduler's
    on_trial_add: Tune files a trial under its status only after that hook (TuneController.add_trial), so it never
    starts it, and Tune runs a PAUSED trial only when the scheduler's choose_trial_to_run names it. Tune has no
    public way to add a trial paused; its own _set_trial_status cannot be called there (the trial is in none of its
    sets yet)."""
    trial.set_status("PAUSED")


def stored_result(trial) -> dict:
    """The trial's last result as Tune holds it (for a restored trial: as the sweep's snapshot held it), or {}.
    Not `trial.last_result`: for a trial with no result yet, that waits on its actor's first answer (a blocking
    `ray.get` in Tune's loop: 4 % of the loop at 1,000 trials)."""
    return trial.run_metadata.last_result or {}


def staging_dir(trials: list) -> str | None:
    """The driver's staging folder of Tune's experiment files (where Tune writes each snapshot before it copies
    it to the storage): danlu keeps its own copy from there (orchestrator/storage/snapshots.py)."""
    for trial in trials:
        storage = getattr(trial, "storage", None)
        if storage is not None:
            return storage.experiment_driver_staging_path
    return None


_storage_fault: list = [None]  # the sweep's handler of a storage fault that Tune itself logs (see _TuneNoise)


def on_storage_fault(handler) -> None:
    """Route Tune's own failures to write the sweep's storage (a full disk while it syncs its snapshot) to
    `handler(exc, what)` instead of Tune's ERROR log with its traceback; None: back to Tune's log."""
    _storage_fault[0] = handler


class _TuneNoise:
    """Drops two of Tune's ERROR logs that are races inside Tune, not failures; any other error passes (a full
    disk goes to the sweep's handler, on_storage_fault, which says it and stops the sweep).

    - Deleting a checkpoint that is already gone: after a restore, Tune rotates out checkpoints its
      snapshot named, which the killed driver had deleted already. Tune logs the FileNotFoundError with a
      traceback and goes on; the trial's newer checkpoints are untouched.
    - Syncing the experiment state while a searcher's state file is renamed into place: the sync lists a
      `.…-tmp-…` file that is gone by the time it is copied. Tune logs it and syncs again at its next
      snapshot (the state itself was written whole)."""

    def filter(self, record) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _storage_fault[0] is not None:
            from orchestrator.storage.disk import is_full

            if is_full(exc):  # the sweep says it, and stops (orchestrator/storage/disk.py)
                _storage_fault[0](exc, "Tune's snapshot of the sweep")
                return False
        if not isinstance(exc, FileNotFoundError):
            return True
        text, msg = str(exc), str(record.msg)
        if msg.startswith("Trial %s: Error handling checkpoint") and "Path not found" in text:
            return False
        return not (msg.startswith("Saving experiment state to storage at") and "-tmp-" in text)


NOISY = ("ray.tune.execution.tune_controller", "ray.tune.execution.experiment_state")


def quiet_tune_races() -> None:
    """Filter the loggers of Tune's two known races (a checkpoint deleted twice, a state file renamed while synced)
    so that they do not read as failures; a full disk they log goes to the sweep's handler instead (_TuneNoise)."""
    import logging

    for name in NOISY:
        log = logging.getLogger(name)
        if not any(isinstance(f, _TuneNoise) for f in log.filters):
            log.addFilter(_TuneNoise())


# -- Ray's raw error lines on the driver ----------------------------------------------------------------

def quiet_worker_deaths() -> None:
    """Ray's driver prints every error its cluster publishes (a thread running ray._private.worker's
    listen_error_messages) as `(raylet) ...` lines: ANSI-coloured, ~900 characters for a worker that died, with
    no word of which trial it was running. danlu says that itself (orchestrator/run/tuner.TrialRuns: "t004
    restarted after its worker died (retry 1 of 2), from its checkpoint at step 23"), so without --verbose
    those lines are dropped, and Ray's other published errors are cut to one plain line. Ray has no public
    switch for this thread's output (log_to_driver governs the workers' own output only)."""
    import re
    import sys

    import ray._private.worker as worker

    original = worker.print_to_stdstream
    if getattr(original, "_danlu", False):
        return
    ansi = re.compile(r"\x1b\[[0-9;]*m")

    def print_to_stdstream(data, ignore_prefix):
        if data.get("pid") != "raylet":
            return original(data, ignore_prefix)
        text = " ".join(ansi.sub("", str(line)) for line in data.get("lines") or []).strip()
        if not text or "A worker died or was killed" in text:
            return None
        print(f"danlu: Ray: {' '.join(text.split())[:300]} (--verbose for Ray's whole message)", file=sys.stderr,
              flush=True)
        return None

    print_to_stdstream._danlu = True  # type: ignore[attr-defined]  # marks Ray's printer as replaced once
    worker.print_to_stdstream = print_to_stdstream
