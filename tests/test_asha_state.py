"""ASHA's rung records survive a resume: decisions after it are those of an uninterrupted sweep."""

from __future__ import annotations

import random
from dataclasses import dataclass

from orchestrator.scheduler._tune_asha import ASHA
from orchestrator.tuner import SchedulerState


@dataclass(frozen=True)
class FakeTrial:  # what ASHA reads of a trial: its id
    trial_id: str


def scheduler():
    s = ASHA(time_attr="training_iteration", max_t=27, grace_period=1, reduction_factor=3)
    s.set_search_properties("score", "max")
    return s


def results(n_trials=12, steps=27, seed=0):
    """Interleaved reports of trials with different learning curves, as a sweep would produce them."""
    rng = random.Random(seed)
    quality = {f"t{i}": rng.random() for i in range(n_trials)}
    events = [(f"t{i}", s) for s in range(1, steps + 1) for i in range(n_trials)]
    return [(FakeTrial(t), {"training_iteration": s, "score": quality[t] * s + rng.random() * 0.5}) for t, s in events]


def run(sched, events, alive):
    decisions = []
    for trial, result in events:
        if trial.trial_id not in alive:
            continue
        d = sched.on_trial_result(None, trial, result)
        decisions.append((trial.trial_id, result["training_iteration"], d))
        if d == "STOP":
            alive.discard(trial.trial_id)
    return decisions


def test_rungs_survive_a_resume_through_the_callback_state():
    events = results()
    trials = sorted({t for t, _ in events}, key=lambda t: t.trial_id)
    whole = scheduler()
    for t in trials:
        whole.on_trial_add(None, t)
    alive = {t.trial_id for t in trials}
    expected = run(whole, events, set(alive))

    cut = 12 * 2 + 6  # in the middle of rung 3: half the trials recorded there, half not yet
    first = scheduler()
    for t in trials:
        first.on_trial_add(None, t)
    alive1 = set(alive)
    before = run(first, events[:cut], alive1)
    saved = SchedulerState(first).get_state()  # what Tune stores in its experiment checkpoint
    survivors = set(alive1)

    second = scheduler()  # a restarted driver: a fresh scheduler from tuner.pkl
    for t in trials:
        second.on_trial_add(None, t)
    SchedulerState(second).set_state(saved)
    after = run(second, events[cut:], alive1)
    assert before + after == expected
    assert any(d == "STOP" for *_, d in after)  # the resumed part makes real decisions
    assert second.stopped_early == whole.stopped_early

    # without the saved rungs, the resumed scheduler decides differently
    blank = scheduler()
    for t in trials:
        blank.on_trial_add(None, t)
    assert before + run(blank, events[cut:], set(survivors)) != expected


def test_a_restored_seeded_search_draws_the_same_trials_again():
    """Trials created after Tune's last snapshot are lost with it; the restored searcher (state from that
    snapshot, seeded as danlu seeds it) gives the same trial ids the same configurations again, so their MLflow
    runs are found and continued rather than replaced."""
    import ray.cloudpickle as pickle
    from ray import tune
    from ray.tune.experiment import Experiment
    from ray.tune.search.basic_variant import BasicVariantGenerator

    def job(config):
        pass

    def searcher():
        g = BasicVariantGenerator(constant_grid_search=True, random_state=7)
        g.add_configurations([Experiment("e", job, num_samples=4, config={
            "hp": {"x": tune.uniform(0, 1)}, "seed": tune.grid_search([0, 1])})])
        return g

    first = searcher()
    _ = [first.next_trial() for _ in range(3)]
    snapshot = pickle.dumps(first.get_state())
    lost = [first.next_trial() for _ in range(5)]  # created after the snapshot, then the driver dies
    restored = searcher()
    restored.set_state(pickle.loads(snapshot))
    again = [restored.next_trial() for _ in range(5)]
    assert [(t.trial_id, t.config) for t in again] == [(t.trial_id, t.config) for t in lost]
    assert len({t.config["hp"]["x"] for t in lost}) == 3  # really sampled (two seeds share one config)
