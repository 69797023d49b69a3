"""Seed-aware ASHA: decisions on a configuration's seed group (orchestrator/scheduler/), tested without Ray's
event loop: the pure rung logic directly, and the Tune scheduler with trials that carry danlu's config."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import pytest

from orchestrator.config.space import config_id
from orchestrator.run.tuner import SchedulerState
from orchestrator.scheduler._group_rungs import GroupRungs, milestones
from orchestrator.scheduler._tune_asha import ASHA

SEEDS = [0, 1, 2]


def test_the_rungs_are_those_of_rays_asha():
    from ray.tune.schedulers.async_hyperband import _Bracket

    for grace, max_t, rf in ((1, 9, 3), (2, 20, 3), (1, 27, 3), (1, 16, 2), (4, 100, 4)):
        ray_rungs = sorted(m for m, _ in _Bracket(grace, max_t, rf, 0)._rungs)
        assert milestones(grace, max_t, rf) == ray_rungs


def test_decisions_match_a_hand_computed_example():
    """Rungs 1, 3, 9 (grace 1, rf 3): the cutoff is the 66.7th percentile of the group means recorded at the rung
    before, with numpy's linear interpolation.

    rung 1: A = mean(.5,.6,.7) = .6, the first there: no cutoff, continues.
            B = mean(.9,.2,.1) = .4 < cutoff pct([.6]) = .6: stopped, lucky seed .9 and all.
            C = mean(.8,.7,.9) = .8 > cutoff pct([.6,.4]) = .4 + 2/3 * .2 = .5333: continues.
            D = mean(.55,.55,.55) = .55 < cutoff pct([.4,.6,.8]) = .6 + 1/3 * .2 = .6667: stopped.
    """
    g = GroupRungs([1, 3, 9], 3, SEEDS)
    values = {"A": (.5, .6, .7), "B": (.9, .2, .1), "C": (.8, .7, .9), "D": (.55, .55, .55)}
    out = {}
    for config, vs in values.items():
        for seed, v in zip(SEEDS, vs, strict=True):
            out[config, seed] = g.result(config, seed, 1, v)[0]
    assert [(d.config, d.rung, round(d.mean, 4), d.cutoff and round(d.cutoff, 4), d.stop) for d in g.decisions] == [
        ("A", 1, 0.6, None, False), ("B", 1, 0.4, 0.6, True), ("C", 1, 0.8, 0.5333, False),
        ("D", 1, 0.55, 0.6667, True)]
    # a seed reporting before its group is complete goes on; the last one gets the group's decision
    assert [out["B", s] for s in SEEDS] == [False, False, True]
    assert g.stopped == {"B", "D"}
    # B's and D's other seeds stop at their next report; A's go on
    assert g.result("B", 0, 2, 0.95)[0] and g.result("D", 1, 2, 0.6)[0] and not g.result("A", 0, 2, 0.7)[0]


def test_the_lucky_seed_configuration_is_stopped_where_plain_asha_keeps_its_lucky_trial():
    """Three configurations, three seeds each. 'lucky' has the best single trial at the rung but a bad mean."""
    stream = [("good", (.70, .72, .71)), ("lucky", (.90, .40, .42)), ("fair", (.60, .62, .61))]
    g = GroupRungs([1, 3, 9], 3, SEEDS)
    for config, vs in stream:
        for seed, v in zip(SEEDS, vs, strict=True):
            g.result(config, seed, 1, v)
    assert g.stopped == {"lucky", "fair"}

    from ray.tune.schedulers import ASHAScheduler

    plain = ASHAScheduler(time_attr="training_iteration", max_t=9, grace_period=1, reduction_factor=3)
    plain.set_search_properties("m", "max")
    stopped = set()
    for config, vs in stream:
        for seed, v in zip(SEEDS, vs, strict=True):
            t = Trial(config, seed)
            plain.on_trial_add(None, t)
            if plain.on_trial_result(None, t, {"training_iteration": 1, "m": v}) == "STOP":
                stopped.add((config, seed))
    assert ("lucky", 0) not in stopped  # the lucky trial survives a per-trial ASHA


def test_a_group_waits_for_its_slow_seed_and_not_for_a_failed_one():
    g = GroupRungs([1, 3, 9], 3, SEEDS)
    for s in SEEDS:
        g.result("A", s, 1, 0.9)
    g.result("B", 0, 1, 0.1)
    g.result("B", 1, 1, 0.1)
    assert [d.config for d in g.decisions] == ["A"]  # B waits for seed 2
    made = g.end("B", 2, 0)  # seed 2 failed before rung 1: the group is judged on the two it has
    assert [(d.config, d.seeds, d.stop) for d in made] == [("B", 2, True)]


def synthetic(n_configs=12, steps=9, seed=0, noise=0.15):
    """Learning curves: value = true quality * (1 - 1/(1+step)) + seed noise; interleaved as a sweep reports."""
    rng = random.Random(seed)
    quality = {f"c{i:02d}": rng.random() for i in range(n_configs)}
    events = []
    for step in range(1, steps + 1):
        for c in quality:
            for s in SEEDS:
                events.append((c, s, step, quality[c] * (1 - 1 / (1 + step)) + rng.gauss(0, noise)))
    return quality, events


def drive(g, events, alive):
    out = []
    for c, s, step, v in events:
        if (c, s) not in alive:
            continue
        stop = g.result(c, s, step, v)[0]
        out.append((c, s, step, stop))
        if stop:
            alive.discard((c, s))
    return out


def test_on_a_synthetic_objective_seeds_stop_together_and_the_best_survives():
    quality, events = synthetic()
    g = GroupRungs(milestones(1, 9, 3), 3, SEEDS)
    alive = {(c, s) for c in quality for s in SEEDS}
    log = drive(g, events, alive)
    assert g.stopped and max(quality, key=quality.get) not in g.stopped
    for c in quality:
        ends = {s: max(step for cc, ss, step, _ in log if cc == c and ss == s) for s in SEEDS}
        if c in g.stopped:  # every seed stopped, all within one report of the group's decision
            rung = next(d.rung for d in g.decisions if d.config == c and d.stop)
            assert all(rung <= e <= rung + 1 for e in ends.values()), (c, rung, ends)
        else:
            assert set(ends.values()) == {9}
    assert max(len([d for d in g.decisions if d.config == c]) for c in quality) == 3  # rungs 1, 3, 9


def test_the_rung_records_survive_a_resume():
    quality, events = synthetic(seed=3)
    whole = GroupRungs(milestones(1, 9, 3), 3, SEEDS)
    alive = {(c, s) for c in quality for s in SEEDS}
    expected = drive(whole, events, set(alive))

    cut = len(quality) * 3 * 2 + 7  # inside rung 3's reports
    first = GroupRungs(milestones(1, 9, 3), 3, SEEDS)
    alive1 = set(alive)
    before = drive(first, events[:cut], alive1)
    saved = json.loads(json.dumps(first.state()))  # what Tune's snapshot holds (through SchedulerState)
    second = GroupRungs(milestones(1, 9, 3), 3, SEEDS)
    second.load(saved)
    assert before + drive(second, events[cut:], alive1) == expected
    assert second.decisions == whole.decisions


@dataclass
class Trial:  # what the scheduler reads of a Tune trial: its id, danlu's config, its last result
    hp_name: str
    seed: int
    trial_id: str = ""
    config: dict = field(default_factory=dict)
    last_result: dict = field(default_factory=dict)
    status: str = "RUNNING"

    @property
    def run_metadata(self):  # where ray_internals.stored_result reads the last result Tune holds
        from types import SimpleNamespace

        return SimpleNamespace(last_result=self.last_result)

    def set_status(self, status):
        self.status = status

    def __post_init__(self):
        self.trial_id = f"{self.hp_name}_{self.seed}"
        self.config = {"hp": {"x": self.hp_name}, "seed": self.seed}

    def __hash__(self):
        return hash(self.trial_id)


def scheduler(seeds, said=None):
    s = ASHA(seeds=seeds, say=(said.append if said is not None else print), time_attr="training_iteration",
             max_t=9, grace_period=1, reduction_factor=3)
    s.set_search_properties("loss", "min")
    return s


def test_the_tune_scheduler_stops_a_group_and_says_so_with_its_mean():
    said = []
    s = scheduler(SEEDS, said)
    trials = {(c, k): Trial(c, k) for c in ("a", "b") for k in SEEDS}
    for t in trials.values():
        s.on_trial_add(None, t)
    losses = {"a": (0.2, 0.3, 0.25), "b": (0.1, 0.9, 0.8)}  # mode=min: b's seed 0 is the luckiest trial
    decisions = {}
    for c, vs in losses.items():
        for k, v in zip(SEEDS, vs, strict=True):
            decisions[c, k] = s.on_trial_result(None, trials[c, k], {"training_iteration": 1, "loss": v})
    # the group's last seed gets its decision; those before it wait at the rung (PAUSE) for it
    assert [decisions["a", k] for k in SEEDS] == ["PAUSE", "PAUSE", "CONTINUE"]
    assert [decisions["b", k] for k in SEEDS] == ["PAUSE", "PAUSE", "STOP"]
    assert s.on_trial_result(None, trials["b", 0], {"training_iteration": 2, "loss": 0.05}) == "STOP"
    assert {"b_2", "b_0"} <= s.stopped_early
    (line,) = said
    assert f"configuration {config_id({'x': 'b'})} (x=b) at rung 1: mean loss 0.6 over 3 seed(s)" in line
    assert "cutoff 0.25" in line
    # its state travels through Tune's checkpoint, as ASHA's did
    again = scheduler(SEEDS)
    SchedulerState(again).set_state(json.loads(json.dumps(SchedulerState(s).get_state())))
    assert again.groups.stopped == s.groups.stopped and again.decisions == s.decisions


def test_with_one_seed_it_is_tunes_asha_but_the_last_report_ends_the_job_itself():
    from ray.tune.schedulers import ASHAScheduler

    rng = random.Random(5)
    quality = {f"c{i}": rng.random() for i in range(15)}
    trials = {c: Trial(c, 0) for c in quality}
    ours, plain = scheduler([0]), ASHAScheduler(time_attr="training_iteration", max_t=9, grace_period=1,
                                                reduction_factor=3)
    plain.set_search_properties("loss", "min")
    for t in trials.values():
        ours.on_trial_add(None, t)
        plain.on_trial_add(None, t)
    alive = set(quality)
    for step in range(1, 10):
        for c in quality:
            if c not in alive:
                continue
            r = {"training_iteration": step, "loss": 1 - quality[c] * step / 9 + rng.gauss(0, 0.1)}
            d = ours.on_trial_result(None, trials[c], r)
            tunes = plain.on_trial_result(None, trials[c], r)
            # the same, but at max_t: Tune stops the trial there; danlu lets its function end by itself
            assert d == (tunes if step < 9 else "CONTINUE") and (step < 9 or tunes == "STOP")
            if d == "STOP":
                alive.discard(c)
    assert ours.groups is None and 0 < len(ours.stopped_early) < len(quality)


@pytest.mark.parametrize("name", ["asha", "fifo", "median"])
def test_schedulers_are_chosen_by_their_module_and_record_what_they_stop(name):
    import pickle

    from omegaconf import OmegaConf
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    from orchestrator import scheduler as schedulers

    sch = OmegaConf.create({"name": name, "max_t": 9, "grace_period": 1, "reduction_factor": 3,
                            "min_samples_required": 3})
    schedulers.check(schedulers.SchedulerContext(sch, SEEDS))
    made = schedulers.make(schedulers.SchedulerContext(sch, SEEDS))
    tune_class = {"asha": ASHAScheduler, "fifo": FIFOScheduler, "median": MedianStoppingRule}[name]
    assert isinstance(made, schedulers.Recording) and isinstance(made, tune_class)
    made.stopped_early.add("t1")
    again = schedulers.make(schedulers.SchedulerContext(sch, SEEDS))
    again.load_state(pickle.loads(pickle.dumps(made.state())))  # the state a resumed sweep gets back
    assert again.stopped_early == {"t1"} and again.decisions == []
    from ray import cloudpickle

    assert type(cloudpickle.loads(cloudpickle.dumps(made))) is type(made)  # Tune pickles it into tuner.pkl
    s = schedulers.schedule(sch, 9)
    assert s.max_t == 9 and (s.rungs == (1.0, 3.0) if name == "asha" else s.rungs == ())


def test_the_saved_decisions_survive_a_snapshot_cut_at_any_byte(tmp_path):
    """`danlu report` reads the scheduler's decisions from Tune's newest callback-state file; one cut short (a driver
    killed while Tune wrote it) is passed over for the one before, never a traceback."""
    import pickle

    from orchestrator.scheduler import saved_decisions

    older = {0: {"scheduler": {"stopped_early": [], "decisions": [{"config": "a", "rung": 2.0, "stop": True}]}}}
    newer = {0: {"scheduler": {"stopped_early": [], "decisions": [{"config": "a", "rung": 2.0, "stop": True},
                                                                  {"config": "b", "rung": 2.0, "stop": False}]}}}
    (tmp_path / "callback-states-2026-01-01_00-00-00.pkl").write_bytes(pickle.dumps(older))
    whole = pickle.dumps(newer)
    path = tmp_path / "callback-states-2026-01-02_00-00-00.pkl"
    path.write_bytes(whole)
    assert len(saved_decisions(tmp_path)) == 2
    for cut in range(len(whole)):
        path.write_bytes(whole[:cut])
        assert saved_decisions(tmp_path) == older[0]["scheduler"]["decisions"], cut


class Controller:  # what the scheduler calls on Tune's controller: stop_trial (Tune calls on_trial_remove)
    def __init__(self, scheduler):
        self.scheduler, self.stopped = scheduler, []

    def stop_trial(self, trial):
        self.stopped.append(trial.trial_id)
        self.scheduler.on_trial_remove(self, trial)
        trial.status = "TERMINATED"


def report(s, trial, step, loss):
    """A report, with Tune's PAUSE and STOP carried out on the fake trial."""
    trial.last_result = {"training_iteration": step, "loss": loss}
    d = s.on_trial_result(None, trial, trial.last_result)
    trial.status = {"PAUSE": "PAUSED", "STOP": "TERMINATED"}.get(d, "RUNNING")
    return d


def test_seeds_wait_at_a_rung_for_their_group_and_go_on_or_stop_together():
    """Rung 1, two slots: a seed ahead of its group waits (PAUSED), the group's pending seeds are chosen before a new
    configuration, a waiting seed whose group goes on runs before anything else, and one whose group is stopped is
    stopped where it waits."""
    s = scheduler([0, 1])
    tune = Controller(s)
    trials = {(c, k): Trial(c, k, status="PENDING") for c in ("a", "b", "c") for k in (0, 1)}
    for t in trials.values():
        s.on_trial_add(tune, t)
    assert s.choose_trial_to_run(tune) is trials["a", 0]  # Tune's first pending trial
    trials["a", 0].status = "RUNNING"
    trials["b", 0].status = "RUNNING"  # two slots: Tune started the next pending trial too
    assert report(s, trials["a", 0], 1, 0.2) == "PAUSE"  # a's seed 1 has not reached rung 1
    # a's seed 1 comes before b's and c's seeds that Tune holds before it... and c's new configuration
    assert s.choose_trial_to_run(tune) is trials["a", 1]
    trials["a", 1].status = "RUNNING"
    assert report(s, trials["a", 1], 1, 0.3) == "CONTINUE"  # the group is judged: it goes on
    assert s.choose_trial_to_run(tune) is trials["a", 0]  # the seed that waited runs again first
    trials["a", 0].status = "RUNNING"
    assert report(s, trials["b", 0], 1, 0.9) == "PAUSE"
    assert s.choose_trial_to_run(tune) is trials["b", 1]
    trials["b", 1].status = "RUNNING"
    assert report(s, trials["b", 1], 1, 0.8) == "STOP"  # b's mean 0.85 > a's 0.25 (mode=min): stopped
    assert s.choose_trial_to_run(tune) is trials["c", 0]  # b's waiting seed is stopped, not run
    assert tune.stopped == ["b_0"] and {"b_0", "b_1"} <= s.stopped_early
    assert s.groups.stopped == {config_id({"x": "b"})}


def test_a_resumed_sweep_holds_a_seed_whose_group_has_not_decided_its_rung():
    """Restored trials come back PENDING; a seed that reached a rung its group has not decided is held (PAUSED)
    instead, one whose group was stopped is stopped, and one below every pending rung may run."""
    s = scheduler([0, 1])
    a0, a1, b0, b1 = Trial("a", 0), Trial("a", 1), Trial("b", 0), Trial("b", 1)
    for t in (a0, a1, b0, b1):
        s.on_trial_add(None, t)
    report(s, a0, 1, 0.2), report(s, a1, 1, 0.3)  # a goes on at rung 1
    report(s, b0, 1, 0.9), report(s, b1, 1, 0.8)  # b stopped at rung 1
    report(s, a0, 2, 0.2), report(s, a0, 3, 0.2)  # a's seed 0 at rung 3 waits for seed 1 (at step 1)
    assert a0.status == "PAUSED"
    again = scheduler([0, 1])
    SchedulerState(again).set_state(json.loads(json.dumps(SchedulerState(s).get_state())))
    tune = Controller(again)
    for t in (a0, a1, b0):  # restored: as the snapshot held them, then PENDING
        t.status = "PENDING"
        again.on_trial_add(tune, t)
    assert (a0.status, a1.status, b0.status) == ("PAUSED", "PENDING", "PAUSED")
    assert again.choose_trial_to_run(tune) is a1  # b's seed is stopped where it waits; a's seed 1 catches up
    assert tune.stopped == ["b_0"]
    a1.status = "RUNNING"
    assert report(again, a1, 2, 0.3) == "CONTINUE" and report(again, a1, 3, 0.3) == "CONTINUE"
    assert again.choose_trial_to_run(tune) is a0
