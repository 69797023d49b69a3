"""Build the Ray Tune Tuner for a sweep: ASHA or FIFO, resources, concurrency, storage, callbacks.

Defaults chosen for throughput, measured in scripts/bench/overhead.py:
- reuse_actors=True: a worker process runs trial after trial instead of being started for each.
- Tune's own CSV/JSON/TensorBoard loggers are off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS): MLflow holds
  the results, and writing them thrice per report cost ~12% of a short sweep's wall time here.
"""

from __future__ import annotations

import os

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from orchestrator.errors import BadInput

TIME_ATTR = "training_iteration"  # ASHA counts reports, so grace_period and max_t are in reports (epochs)


class ASHA(ASHAScheduler):
    """Tune's ASHA, recording which trials it stopped before max_t (for MLflow tags and the counts)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stopped_early: set[str] = set()

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and result.get(self._time_attr, 0) < self._max_t:
            self.stopped_early.add(trial.trial_id)
        return decision


def make_scheduler(sch) -> TrialScheduler:
    name = sch.get("name")
    if name == "fifo":
        return FIFOScheduler()
    if name != "asha":
        raise BadInput(f"scheduler.name={name}: valid schedulers are asha, fifo.")
    max_t, grace, rf = sch.get("max_t"), sch.get("grace_period"), sch.get("reduction_factor")
    for key, v, low in (("max_t", max_t, 1), ("grace_period", grace, 1), ("reduction_factor", rf, 2)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < low:
            raise BadInput(f"scheduler.{key}={v}: a number >= {low}.")
    if grace > max_t:
        raise BadInput(f"scheduler.grace_period={grace} exceeds scheduler.max_t={max_t}: nothing could be stopped early.")
    return ASHA(time_attr=TIME_ATTR, max_t=max_t, grace_period=grace, reduction_factor=rf)


class Trials(tune.Callback):
    """Keeps Tune's trial list for the summary (Tune's ResultGrid reads result.json, which we do not write)."""

    def __init__(self):
        self.trials: list = []

    def on_step_end(self, iteration, trials, **info):
        self.trials = trials

    def on_experiment_end(self, trials, **info):
        self.trials = trials


class MetricGuard(tune.Stopper):
    """Stops the whole sweep at the first report that lacks the sweep's metric."""

    def __init__(self, metric: str):
        self.metric = metric
        self.missing: list[str] | None = None  # what the job reported instead

    def __call__(self, trial_id, result) -> bool:
        if self.metric in result:
            return False
        from orchestrator.trial import META_KEY

        self.missing = list((result.get(META_KEY) or {}).get("metrics", [])) if self.missing is None else self.missing
        return True

    def stop_all(self) -> bool:
        return self.missing is not None


def trial_index(trial) -> int:
    return int(str(trial.trial_id).rsplit("_", 1)[-1])


def build_tuner(trainable, space, cfg, scheduler, callbacks, stopper, storage_path: str, verbose: bool):
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # MetricGuard says it more clearly
    # Tune forces an experiment snapshot after `keep` checkpoints of a trial and warns about it each time:
    # that is how checkpoint deletion stays consistent, not something a user should act on.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from orchestrator.cluster import trial_resources

    res = trial_resources(cfg.resources)
    resources = {"cpu": res.pop("CPU"), "gpu": res.pop("GPU"), **({"resources": res} if res else {})}
    limit = cfg.sweep.get("max_concurrent_trials")
    return tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=space.param_space(),
        tune_config=tune.TuneConfig(
            metric=cfg.sweep.metric,
            mode=cfg.sweep.mode,
            num_samples=cfg.sweep.num_samples,
            scheduler=scheduler,
            search_alg=BasicVariantGenerator(constant_grid_search=True, max_concurrent=limit or 0),
            reuse_actors=True,
            trial_name_creator=lambda t: f"t{trial_index(t):03d}",
            trial_dirname_creator=lambda t: f"t{trial_index(t):03d}_{t.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=cfg.sweep.name,
            storage_path=storage_path,
            callbacks=callbacks,
            stop=stopper,
            verbose=2 if verbose else 0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
        ),
    )
