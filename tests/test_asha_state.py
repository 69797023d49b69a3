"""ASHA's rung records survive a resume: decisions after it are those of an uninterrupted sweep."""

from __future__ import annotations

import random
from dataclasses import dataclass

from orchestrator.run.tuner import SchedulerState
from orchestrator.scheduler._tune_asha import ASHA


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


def test_each_schedulers_choice_of_the_next_trial_is_tunes_fifo_choice():
    """danlu's schedulers choose the trial to run from the trials that may still run (Tune's FIFO scans all the
    sweep ever had, at every step of its loop): over random adds, status changes and requeues the choice is the one
    Tune's FIFOScheduler makes from the controller's list, and ended trials leave danlu's list."""
    from omegaconf import OmegaConf
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import FIFOScheduler

    from orchestrator import scheduler as schedulers

    class Held:  # what FIFOScheduler reads of Tune's controller: its trials, in its order
        def __init__(self):
            self.trials: list = []

        def get_trials(self):
            return self.trials

    for name, extra in (("fifo", {}), ("median", {"grace_period": 2, "min_samples_required": 3}),
                        ("asha", {"max_t": 9, "grace_period": 1, "reduction_factor": 3})):
        sch = schedulers.make(schedulers.SchedulerContext(OmegaConf.create({"name": name, **extra}), [0], say=lambda _: None))
        sch.set_search_properties("score", "max")
        held, rng = Held(), random.Random(name)
        for i in range(600):
            op = rng.random()
            if op < 0.3 or not held.trials:
                trial = Trial("__fake", config={}, trial_id=f"{name}{i}", stub=True)
                held.trials.append(trial)
                sch.on_trial_add(held, trial)
            elif op < 0.9:
                trial = rng.choice(held.trials)
                was, now = trial.status, rng.choice(["RUNNING", "PAUSED", "TERMINATED", "ERROR", "RUNNING"])
                if was in ("TERMINATED", "ERROR"):
                    continue
                trial.set_status(now)
                if now == "ERROR":
                    sch.on_trial_error(held, trial)
                elif now == "TERMINATED" and was == "RUNNING":
                    sch.on_trial_complete(held, trial, {})
                elif now == "TERMINATED":
                    sch.on_trial_remove(held, trial)
                elif rng.random() < 0.1:  # Tune's clean-up at the end marks trials TERMINATED, no hook called
                    trial.set_status("TERMINATED")
            else:  # Tune's requeue of a failed trial: back to PENDING at the end of its list
                trial = rng.choice(held.trials)
                if trial.status in ("RUNNING", "PENDING"):
                    sch.on_trial_error(held, trial)
                trial.set_status("PENDING")
                held.trials.remove(trial)
                held.trials.append(trial)
                sch.on_trial_add(held, trial)
            assert sch.choose_trial_to_run(held) is FIFOScheduler.choose_trial_to_run(sch, held), (name, i)
        live = [t for t in held.trials if t.status not in ("TERMINATED", "ERROR")]
        assert live and set(live) <= set(sch._waiting) and len(sch._waiting) < len(live) + 40  # the ended left it
        state = sch.__getstate__()  # what Tune pickles of it (into tuner.pkl, at the start): no trials of ours
        assert "_waiting" not in state
        copy = type(sch).__new__(type(sch))
        copy.__setstate__(state)
        assert copy._waiting == {}
