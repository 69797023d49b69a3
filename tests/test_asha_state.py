"""ASHA's rung records survive a resume: decisions after it are those of an uninterrupted sweep."""

from __future__ import annotations

import random
from dataclasses import dataclass

from orchestrator.tuner import ASHA, SchedulerState


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
