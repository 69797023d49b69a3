"""Ray's private attributes that danlu touches (orchestrator/ray_internals.py), checked against the installed
Ray: an upgrade that removes one fails here, naming it, instead of in a user's resumed sweep."""

from __future__ import annotations

import importlib
import tempfile

import pytest

from orchestrator import ray_internals

pytestmark = pytest.mark.contract

_STORAGE = tempfile.TemporaryDirectory(prefix="danlu-internals-")  # a Tuner's experiment folder; gone at exit


def _owner(name: str):
    from ray import tune
    from ray.train._internal.storage import StorageContext
    from ray.tune.execution.tune_controller import TrialRunnerWrapper, TuneController
    from ray.tune.experiment.trial import Trial
    from ray.tune.impl.tuner_internal import TunerInternal
    from ray.tune.schedulers import AsyncHyperBandScheduler
    from ray.tune.schedulers.async_hyperband import _Bracket
    from ray.tune.trainable import Trainable
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    def tuner():
        return tune.Tuner(lambda config: None, run_config=tune.RunConfig(storage_path=_STORAGE.name))

    asha = AsyncHyperBandScheduler(time_attr="training_iteration", max_t=9, grace_period=1)

    def repeater():
        from ray.tune.search import Repeater, Searcher

        class One(Searcher):
            def suggest(self, trial_id):
                return {"x": 1}

        rep = Repeater(One(metric="m", mode="max"), repeat=2)
        rep.suggest("a")
        return rep

    def optuna_search():
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(space=OptunaSearch.convert_search_space({"x": tune.uniform(0, 1)}), metric="m", mode="max")

    return {
        "ray.tune.Tuner": tuner,
        "TunerInternal": lambda: tuner()._local_tuner,
        "AsyncHyperBandScheduler": lambda: asha,
        "_Bracket": lambda: asha._brackets[0],
        "Trainable": lambda: Trainable,
        "Repeater": repeater,
        "_TrialGroup": lambda: repeater()._groups[0],
        "OptunaSearch": optuna_search,
        "Trial": lambda: Trial,
        "StorageContext": lambda: StorageContext,
        "_TrainingRunMetadata": _TrainingRunMetadata,
        "TuneController": lambda: TuneController,
        "TrialRunnerWrapper": lambda: TrialRunnerWrapper,
    }[name], {"TunerInternal": TunerInternal, "_Bracket": _Bracket}


@pytest.mark.parametrize("name", ray_internals.PRIVATE)
def test_every_private_name_danlu_uses_exists_in_this_ray(name):
    owner, attr = name.rsplit(".", 1)
    if owner.startswith("ray.") and owner != "ray.tune.Tuner":  # a module, or a module's member
        try:
            importlib.import_module(name)
        except ImportError:
            assert hasattr(importlib.import_module(owner), attr), f"Ray no longer has {name}"
        return
    make, _ = _owner(owner)
    obj = make()
    if owner in ("Trainable", "Trial", "TrialRunnerWrapper"):  # instance attributes, set in __init__ / restore
        import inspect

        assert f"self.{attr} =" in inspect.getsource(obj), f"Ray's Trainable no longer sets {name}"
        return
    assert hasattr(obj, attr), f"Ray no longer has {name}"


def test_tune_files_an_added_trial_by_the_status_its_schedulers_hook_leaves():
    """hold_added (a resumed sweep's seed held at a rung) relies on TuneController.add_trial calling the scheduler's
    on_trial_add before it files the trial under its status."""
    import inspect

    from ray.tune.execution.tune_controller import TuneController

    source = inspect.getsource(TuneController.add_trial)
    hook, filed = source.find("self._scheduler_alg.on_trial_add("), source.find("status_str_map[trial.status].add(")
    assert 0 < hook < filed, "Ray's TuneController.add_trial changed: ray_internals.hold_added no longer holds"


def test_tune_stops_a_trial_it_retries_before_it_tells_the_scheduler():
    """being_retried (seed-aware ASHA waits for a seed that Tune retries) relies on this order in Tune's controller:
    a retried trial is ERROR when the scheduler hears of its error; one not retried is told while still live."""
    import inspect

    from ray.tune.execution.tune_controller import TuneController

    recover = inspect.getsource(TuneController._try_recover)
    assert 0 < recover.find("self._schedule_trial_stop(trial, exception=exc)") < recover.find("self._requeue_trial(")
    requeue = inspect.getsource(TuneController._requeue_trial)
    assert "self._scheduler_alg.on_trial_error(self, trial)" in requeue
    failure = inspect.getsource(TuneController._process_trial_failure)
    told, stopped = failure.find("self._scheduler_alg.on_trial_error(self, trial)"), failure.find(
        "self._schedule_trial_stop(trial, exception=exception)")
    assert 0 < told < stopped, "Ray's TuneController changed: ray_internals.being_retried no longer holds"


def test_only_tunes_two_races_are_dropped_from_its_error_logs():
    import inspect
    import logging

    from ray.tune.execution import experiment_state, tune_controller

    assert '"Trial %s: Error handling checkpoint %s"' in inspect.getsource(tune_controller), \
        "Ray changed a message that ray_internals._TuneNoise recognises"
    assert '"Saving experiment state to storage at "' in inspect.getsource(experiment_state), \
        "Ray changed a message that ray_internals._TuneNoise recognises"
    f = ray_internals._TuneNoise()

    def record(msg, exc):
        return logging.LogRecord("ray.tune", logging.ERROR, "", 0, msg, (), (type(exc), exc, None))

    gone = FileNotFoundError("Path not found: (fs, /x/checkpoint_000012)")
    renamed = FileNotFoundError("Failed to open local file '/tmp/ray/x/.c34-tmp-basic-variant-state-2026.json'")
    assert not f.filter(record("Trial %s: Error handling checkpoint %s", gone))
    assert not f.filter(record("Saving experiment state to storage at '/o/chaos' failed with exception: ", renamed))
    assert f.filter(record("Saving experiment state to storage at '/o/chaos' failed with exception: ",
                           FileNotFoundError("Failed to open local file '/tmp/ray/x/experiment_state.json'")))
    assert f.filter(record("Trial %s: Error handling checkpoint %s", OSError("disk full")))
    assert f.filter(record("Trial %s: something else", gone))


def test_an_ended_trials_result_statistics_are_dropped_and_its_snapshot_shrinks():
    from ray.tune.experiment import Trial

    trial = Trial("__fake", config={}, trial_id="t1", stub=True)
    for i in range(1, 11):
        trial.update_last_result({"score": i / 10, "step": i, "training_iteration": i, "time_total_s": i})
    before = len(trial.get_json_state()[1])
    assert trial.run_metadata.metric_analysis["score"]["max"] == 1.0 and trial.run_metadata.metric_n_steps
    ray_internals.forget_statistics(trial)
    assert trial.run_metadata.metric_analysis == {} and trial.run_metadata.metric_n_steps == {}
    assert trial.last_result["score"] == 1.0  # what danlu reads of it stays
    assert len(trial.get_json_state()[1]) < before / 2  # the snapshot's copy is made anew, without them


def test_the_trial_name_functions_travel_in_each_trials_state_by_name():
    import ray.cloudpickle as cloudpickle

    from orchestrator.trial.names import trial_dirname, trial_name

    for fn in (trial_name, trial_dirname):  # Tune pickles both into every trial's state, in every snapshot
        assert len(cloudpickle.dumps(fn)) < 100, fn


def test_a_searcher_state_cut_short_is_passed_over_for_the_one_before(tmp_path):
    """Tune's newest searcher state cut at a byte (a driver killed while Tune wrote it, or a reader that came while
    it was written): the study comes from the session before, not an error."""
    import pickle

    import optuna

    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions={
        "x": optuna.distributions.FloatDistribution(0, 1)}, value=1.0))
    whole = pickle.dumps({"_ot_study": study})
    (tmp_path / "searcher-state-2026-12-07_10-00-00.pkl").write_bytes(whole)
    assert [t.params for t in ray_internals.saved_optuna_study(tmp_path).trials] == [{"x": 0.5}]
    newer = tmp_path / "searcher-state-2026-12-07_11-00-00.pkl"
    for cut in (0, 1, len(whole) // 2, len(whole) - 1):
        newer.write_bytes(whole[:cut])
        assert [t.params for t in ray_internals.saved_optuna_study(tmp_path).trials] == [{"x": 0.5}], cut
    (tmp_path / "searcher-state-2026-12-07_10-00-00.pkl").unlink()
    assert ray_internals.saved_optuna_study(tmp_path) is None
