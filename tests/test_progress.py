"""The live progress line answers "when will it end?": done/total, the running trials' steps, an ETA from the
scheduler's expected work, the best trial so far; in a log file, plain lines every progress.every_s seconds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from orchestrator.run.progress import Progress, Work, duration
from tests.conftest import CONF, on_shared_ray, without_preflight


def test_asha_work_follows_the_rungs():
    work = Work.of(OmegaConf.create({"name": "asha", "max_t": 9, "grace_period": 1, "reduction_factor": 3}))
    assert work.rungs == (1.0, 3.0) and work.max_t == 9.0
    # at the rule's long-run share 1/3: stopped at 1 with 2/3, at 3 with 2/9, on to 9 with 1/9
    assert work.final() == pytest.approx(2 / 3 * 1 + 2 / 9 * 3 + 1 / 9 * 9)
    assert work.final(reached=5) == 9.0  # past the last rung: to max_t
    assert Work.of(OmegaConf.create({"name": "fifo"}), epochs=20).final() == 20.0
    assert Work.of(OmegaConf.create({"name": "fifo"})).final() is None  # learnt from completed trials
    assert Work.of(OmegaConf.create({"name": "fifo"})).final(max_t=7.0) == 7.0


def test_asha_passing_falls_from_always_to_one_in_rf_as_a_rung_fills():
    work = Work(9.0, (1.0, 3.0), 3.0)
    assert work.passing([]) == {1.0: 1.0, 3.0: 1.0}  # the first trial at a rung always goes on
    assert work.passing([1.0])[1.0] == pytest.approx(0.5)  # above the one value before it, or not
    many = work.passing([1.0] * 300 + [3.0] * 100)
    assert many[1.0] == pytest.approx(1 / 3, abs=0.01) and many[3.0] == pytest.approx(1 / 3, abs=0.01)
    # Ray's rule, simulated: the share of fresh uniform values at least the 2/3 quantile of those before them
    import numpy as np

    rng = np.random.default_rng(0)
    for n in (2, 5, 20):
        sims = [rng.random() >= np.percentile(rng.random(n), 100 * 2 / 3) for _ in range(20000)]
        assert work.passing([1.0] * n)[1.0] == pytest.approx(np.mean(sims), abs=0.02), n


class _Trial(SimpleNamespace):  # what the callback reads of Tune's Trial: its id and status
    pass


def test_the_line_says_starting_then_counts_the_eta_and_the_best():
    p = Progress("score", "max", lambda t: f"t{t.trial_id}", lambda tid: False, stream=open(os.devnull, "w"),
                 work=Work(4.0))
    p.setup(total_num_samples=3)
    trials = [_Trial(trial_id=str(i), status="PENDING") for i in range(2)]
    assert "starting the first trials" in p.line(trials) and "done 0/3" in p.line(trials)
    trials[0].status = "RUNNING"
    p.on_trial_start(0, trials, trials[0])
    for step in (1, 2):
        p.on_trial_result(0, trials, trials[0], {"score": 0.1 * step, "training_iteration": step})
        time.sleep(0.05)
    line = p.line(trials)
    assert "running 1 (t0@2)" in line and "pending 1" in line and re.search(r"ETA ~\d+s \(estimate\)", line), line
    assert "best" not in line  # a running trial's value can still fall
    trials[0].status = "TERMINATED"
    p.on_trial_complete(0, trials, trials[0])
    assert "best trial so far score=0.2 (t0)" in p.line(trials) and "done 1/3 (1 completed" in p.line(trials)
    assert duration(59) == "59s" and duration(61) == "1m01s" and duration(3700) == "1h01m"


def test_a_trial_that_stops_reporting_shows_on_the_line_and_the_eta_stops_promising(monkeypatch):
    """A running trial quiet for much longer than a step (60 s at least) is named with how long it has been quiet,
    and the line no longer gives an ETA (issue 33: "ETA ~1s" for 280 s of a hung trial)."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    p = Progress("score", "max", lambda t: f"t{t.trial_id}", lambda tid: False, stream=open(os.devnull, "w"),
                 work=Work(6.0))
    p.setup(total_num_samples=2)
    trials = [_Trial(trial_id=str(i), status="RUNNING") for i in range(2)]
    for t in trials:
        p.on_trial_start(0, trials, t)
    for step in (1, 2):
        for t in trials:
            clock[0] += 0.5
            p.on_trial_result(0, trials, t, {"score": 0.1 * step, "training_iteration": step})
    assert "no report" not in p.line(trials) and "ETA ~" in p.line(trials)
    for _ in range(3, 7):  # t1 goes on to its end; t0 reports nothing more
        clock[0] += 1.0
        p.on_trial_result(0, trials, trials[1], {"score": 0.5, "training_iteration": _})
    trials[1].status = "TERMINATED"
    p.on_trial_complete(0, trials, trials[1])
    clock[0] += 252
    line = p.line(trials)
    assert "running 1 (t0@2) · t0 no report for 4m" in line and "ETA: unknown while t0 reports nothing" in line, line
    assert "ETA ~" not in line


@pytest.mark.parametrize("mode", ["max", "min"])
def test_the_best_so_far_is_the_best_final_value_of_the_ended_trials(mode):
    """Kept as trials end (the line is drawn every 0.5 s on a terminal: no pass over all trials for it): the same
    as the best last value among the trials that ended, completed or failed, never a running trial's."""
    import random

    rnd = random.Random(1)
    p = Progress("score", mode, lambda t: f"t{t.trial_id}", lambda tid: False, stream=open(os.devnull, "w"))
    trials = [_Trial(trial_id=str(i), status="RUNNING") for i in range(60)]
    last: dict[str, float] = {}
    pick = max if mode == "max" else min
    for _ in range(400):
        t = rnd.choice(trials)
        if t.status != "RUNNING":
            continue
        if rnd.random() < 0.2:
            t.status = rnd.choice(["TERMINATED", "ERROR"])
            (p.on_trial_complete if t.status == "TERMINATED" else p.on_trial_error)(0, trials, t)
        else:
            last[t.trial_id] = rnd.choice([rnd.random(), 0.5])  # ties too
            p.on_trial_result(0, trials, t, {"score": last[t.trial_id], "training_iteration": 1})
        ended = [last[x.trial_id] for x in trials if x.status != "RUNNING" and x.trial_id in last]
        assert (p.best[0] if p.best else None) == (pick(ended) if ended else None)
    before = p.best
    running = next(x for x in trials if x.status == "RUNNING")
    p.on_trial_result(0, trials, running, {"score": 2.0 if mode == "max" else -1.0, "training_iteration": 2})
    assert before is not None and p.best == before  # a better running trial does not count yet
    running.status = "TERMINATED"
    p.on_trial_complete(0, trials, running)
    assert p.best == (2.0 if mode == "max" else -1.0, f"t{running.trial_id}")


def test_trials_a_stop_ended_are_not_counted_done():
    """A graceful stop (Ctrl-C, `danlu stop`, a Slurm time limit) ends the running trials and the pending ones
    TERMINATED alike in Tune's memory (its clean-up, as Ray 2.60 does it); they resume with the sweep, so the last
    line counts them pending, not completed."""
    p = Progress("score", "max", lambda t: f"t{t.trial_id}", lambda tid: False, stream=open(os.devnull, "w"),
                 work=Work(4.0))
    p.setup(total_num_samples=4)
    trials = [_Trial(trial_id="0", status="TERMINATED"), _Trial(trial_id="1", status="RUNNING"),
              _Trial(trial_id="2", status="RUNNING"), _Trial(trial_id="3", status="PENDING")]
    # trial 0 completed in an earlier session; 3 waits for a slot
    for t in trials[1:3]:
        p.on_trial_start(0, trials, t)
        p.on_trial_result(0, trials, t, {"score": 0.1, "training_iteration": 1})
    p.on_step_end(0, trials)
    trials[1].status = "TERMINATED"
    p.on_trial_complete(0, trials, trials[1])
    trials[2].status = trials[3].status = "TERMINATED"  # the stop
    p.on_experiment_end(trials)
    assert "done 2/4 (2 completed" in p.line(trials) and "pending 2" in p.line(trials), p.line(trials)


def _eta_at_half_way(tmp_path, *overrides: str) -> tuple[float, float, list[str]]:
    """Run a sweep of the sleep job, its output a pipe (as a log file); the ETA of the first line with half the
    trials done, and the true time left from there (to the last progress line)."""
    cmd = [sys.executable, "-m", "orchestrator", "--config-dir", str(CONF),
           *on_shared_ray(without_preflight(["sweep", "job=sleep", "sweep=sleep", "progress.every_s=1",
                                             "sweep.name=eta", "cluster.num_cpus=2", *overrides]))]
    t0, lines = time.monotonic(), []
    with subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        for line in proc.stdout:
            lines.append((time.monotonic() - t0, line.rstrip("\n")))
    assert proc.returncode == 0, "\n".join(text for _, text in lines)
    progress = [(t, text) for t, text in lines if re.match(r"\[ *\d+s\] running \d+", text)]
    assert progress and not any("\r" in text for _, text in progress)  # a pipe gets plain lines, not redraws
    end = progress[-1][0]
    for t, text in progress:
        done = re.search(r"done (\d+)/(\d+)", text)
        if int(done.group(1)) * 2 >= int(done.group(2)):
            eta = re.search(r"ETA ~(?:(\d+)h)?(?:(\d+)m)?(\d+)s \(estimate\)", text)
            assert eta, text
            seconds = int(eta.group(1) or 0) * 3600 + int(eta.group(2) or 0) * 60 + int(eta.group(3))
            return seconds, end - t, [text for _, text in lines]
    raise AssertionError("no progress line at half-way:\n" + "\n".join(text for _, text in lines))


@pytest.mark.integration
@pytest.mark.parametrize("scheduler", [
    ["scheduler=fifo", "sweep.num_samples=12", "epochs=6"],
    ["scheduler=asha", "sweep.num_samples=30", "epochs=9", "scheduler.grace_period=1", "sweep.search_seed=1"],
], ids=["fifo", "asha"])
def test_the_eta_at_half_way_is_within_30_percent_of_the_time_left(tmp_path, scheduler):
    """Known durations (0.5 s a step, two slots): at half the trials done, the ETA is within 30 % of the time the
    sweep then took to end."""
    eta, true, lines = _eta_at_half_way(tmp_path, "epoch_s=0.5", *scheduler)
    assert abs(eta - true) <= 0.3 * true, (eta, true, "\n".join(lines))
