"""Every use of Ray's private attributes, in this one module.

Ray Tune has no public way to do four things danlu needs; each function here says why. The names are
listed in PRIVATE, and tests/test_ray_internals.py checks each against the installed Ray, failing with
the name when an upgrade removes one.
"""

from __future__ import annotations

import json
import re
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
    "Repeater._groups",  # a searcher's configurations and their seeds' trials (orchestrator/search/replicates.py)
    "Repeater._current_group",
    "_TrialGroup._trials",
    "OptunaSearch._ot_study",  # the Optuna study inside Tune's OptunaSearch, and in its saved state
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
    return list(group._trials)


def optuna_study(searcher_or_state):
    """The Optuna study of a live OptunaSearch, or of the state Tune saved for it (searcher-state-*.pkl in the
    sweep's storage: the searcher's attributes as a dict). Tune gives no accessor; danlu reads what Optuna
    was told (tests, and the count of configurations it learned from)."""
    if isinstance(searcher_or_state, dict):
        return searcher_or_state["_ot_study"]
    return searcher_or_state._ot_study


def saved_optuna_study(storage_dir):
    """The study in the newest searcher state Tune saved in a sweep's storage, or None."""
    import glob
    import os
    import pickle

    # Newest by name, as Tune's own _load_newest_checkpoint picks it: the name holds the session's start time.
    # Not by mtime: Tune copies every session's file back into storage at each sync, in no set order.
    files = glob.glob(os.path.join(str(storage_dir), "searcher-state-*.pkl"))
    if not files:
        return None
    with open(max(files), "rb") as f:
        state = pickle.load(f)
    return optuna_study(state) if isinstance(state, dict) and "_ot_study" in state else None


# -- ASHA's rung records ------------------------------------------------------------------------------
def asha_limits(scheduler) -> tuple[str, float]:
    return scheduler._time_attr, scheduler._max_t


def asha_metric(scheduler) -> tuple[str, float]:
    """The metric ASHA ranks on and its sign (-1 for mode=min: larger is better after it), as Tune set them."""
    return scheduler._metric, scheduler._metric_op


def asha_state(scheduler) -> dict:
    """Tune saves the scheduler only once (tuner.pkl, at the start); its rung records travel in Tune's
    experiment checkpoint through a callback's get_state instead (orchestrator.tuner.SchedulerState)."""
    return {
        "rungs": [[dict(recorded) for _, recorded in b._rungs] for b in scheduler._brackets],
        "brackets": {tid: scheduler._brackets.index(b) for tid, b in scheduler._trial_info.items()},
        "num_stopped": scheduler._num_stopped,
    }


def asha_load(scheduler, state: dict) -> None:
    for bracket, rungs in zip(scheduler._brackets, state["rungs"], strict=True):
        for (_, recorded), saved in zip(bracket._rungs, rungs, strict=True):
            recorded.clear()
            recorded.update(saved)
    for tid, idx in state["brackets"].items():
        scheduler._trial_info[tid] = scheduler._brackets[idx]
    scheduler._num_stopped = state["num_stopped"]


# -- a restored trial whose checkpoint was rotated away ---------------------------------------------------
MARKER = "danlu-checkpoint.json"  # in each checkpoint danlu writes: {"iteration": N, "files": {name: bytes}}
_CKPT = re.compile(r"^checkpoint_\d+$")


def fallback_trainable(train_fn: Callable, notes: dict) -> type:
    """Tune's function trainable for `train_fn`, restoring a trial from the newest checkpoint that exists.

    Tune's experiment snapshot names each trial's checkpoint; with CheckpointConfig(num_to_keep) Tune may
    delete that checkpoint before its next snapshot, and a driver killed in between restores a trial whose
    checkpoint is gone: Trainable.restore raises, and every retry fails the same way. Here the trial falls
    back to the newest checkpoint of its own that exists (by the iteration danlu recorded in it), or to
    its start, and says so (notes[trial_id], which the trial reports). Trainable.restore takes the
    iteration count from the checkpoint's metrics, hence _TrainingResult; starting over resets _iteration.
    """
    from ray.train._internal.checkpoint_manager import _TrainingResult
    from ray.tune import Checkpoint
    from ray.tune.trainable.function_trainable import wrap_function

    base = wrap_function(train_fn)

    class DanluTrainable(base):
        def restore(self, checkpoint_path):
            ckpt = getattr(checkpoint_path, "checkpoint", None)
            if ckpt is None or _exists(ckpt.filesystem, ckpt.path):
                return super().restore(checkpoint_path)
            found = newest_checkpoint(ckpt.filesystem, ckpt.path.rsplit("/", 1)[0])
            gone = ckpt.path.rsplit("/", 1)[-1]
            if found is None:
                notes[self.trial_id] = f"its start ({gone}, named by Ray's last snapshot, was deleted; no other)"
                self._iteration, self._time_total = 0, 0.0
                return None
            path, iteration = found
            notes[self.trial_id] = (f"{path.rsplit('/', 1)[-1]} at iteration {iteration} ({gone}, named by Ray's "
                                    "last snapshot, was deleted)")
            return super().restore(_TrainingResult(checkpoint=Checkpoint(path, filesystem=ckpt.filesystem),
                                                   metrics={"training_iteration": iteration}))

    DanluTrainable.__name__ = DanluTrainable._name = getattr(train_fn, "__name__", "danlu_trial")
    return DanluTrainable


def _exists(fs, path: str) -> bool:
    import pyarrow.fs

    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def newest_checkpoint(fs, trial_dir: str) -> tuple[str, int] | None:
    """The checkpoint of this trial with the highest recorded iteration (directory names can mislead: a
    restored trial writes its next checkpoints under names an earlier driver had used)."""
    import pyarrow.fs

    best = None
    for info in fs.get_file_info(pyarrow.fs.FileSelector(trial_dir, allow_not_found=True)):
        if info.type != pyarrow.fs.FileType.Directory or not _CKPT.match(info.base_name):
            continue
        try:
            with fs.open_input_stream(f"{info.path}/{MARKER}") as f:
                marker = json.loads(f.read())
            iteration = int(marker["iteration"])
            whole = all(fs.get_file_info(f"{info.path}/{name}").size == size for name, size in marker["files"].items())
        except (OSError, ValueError, KeyError, TypeError):  # not danlu's, or cut short by the kill: not usable
            continue
        if not whole:  # copied only in part when the driver died
            continue
        if best is None or iteration > best[1]:
            best = (info.path, iteration)
    return best


class _TuneNoise:
    """Drops two of Tune's ERROR logs that are races inside Tune, not failures; any other error passes.

    - Deleting a checkpoint that is already gone: after a restore, Tune rotates out checkpoints its
      snapshot named, which the killed driver had deleted already. Tune logs the FileNotFoundError with a
      traceback and goes on; the trial's newer checkpoints are untouched.
    - Syncing the experiment state while a searcher's state file is renamed into place: the sync lists a
      `.…-tmp-…` file that is gone by the time it is copied. Tune logs it and syncs again at its next
      snapshot (the state itself was written whole)."""

    def filter(self, record) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, FileNotFoundError):
            return True
        text, msg = str(exc), str(record.msg)
        if msg.startswith("Trial %s: Error handling checkpoint") and "Path not found" in text:
            return False
        return not (msg.startswith("Saving experiment state to storage at") and "-tmp-" in text)


NOISY = ("ray.tune.execution.tune_controller", "ray.tune.execution.experiment_state")


def quiet_tune_races() -> None:
    import logging

    for name in NOISY:
        log = logging.getLogger(name)
        if not any(isinstance(f, _TuneNoise) for f in log.filters):
            log.addFilter(_TuneNoise())
