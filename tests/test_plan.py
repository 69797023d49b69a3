"""`danlu plan`: the forecast's arithmetic against hand-computed values, the printed plan (trial count, rungs,
expected steps beside FIFO's, warnings), and bad input."""

from __future__ import annotations

import pytest
from conftest import danlu_cli

from orchestrator.launch.forecast import cost, forecast, halving_short, reaching
from orchestrator.scheduler import Schedule


def test_tunes_asynchronous_rule_by_hand():
    # Tune's ASHA: an arrival at a rung goes on unless it is below the (1 - 1/rf) quantile of those recorded there
    # before it; the first always goes on. Values exchangeable (uniform), so by hand:
    # 2 configurations, rf 2: the first goes on; the second if it beats the first (1/2): 1.5 expected
    assert reaching(2, 1, 2.0, sims=40000) == [2.0, pytest.approx(1.5, abs=0.01)]
    # 3 configurations, rf 3 (quantile 2/3): 1 + 1/2 + P(third >= a + 2/3 (b - a)) for the two before it, a < b:
    # 1 - E[a] - 2/3 E[b - a] = 1 - 1/3 - 2/9 = 4/9; so 1 + 1/2 + 4/9 = 35/18
    assert reaching(3, 1, 3.0, sims=40000)[1] == pytest.approx(35 / 18, abs=0.01)
    assert reaching(1, 3, 3.0) == [1.0, 1.0, 1.0, 1.0]  # alone, a configuration goes on at every rung
    assert reaching(5, 2, 1.0) == [5.0, 5.0, 5.0]  # no halving


def test_forecast_sums_steps_between_rungs_by_hand():
    # 2 configurations x 3 seeds, rf 2, one rung at step 4, max_t 10: 2 configurations reach step 4, 1.5 go on to
    # 10; steps = 2*3*4 + 1.5*3*(10 - 4) = 24 + 27 = 51; FIFO = 6 * 10 = 60
    f = forecast(2, 3, Schedule(10.0, (4.0,), 2.0), sims=40000)
    assert [r.step for r in f.rungs] == [4, 10] and f.rungs[1].trials == pytest.approx(4.5, abs=0.05)
    assert f.steps == pytest.approx(51, abs=0.3) and f.fifo_steps == 60 and f.trials == 6
    # the textbook halving would say 8/3 and 8/9 reach steps 6 and 18 of 8 configurations; Tune's rule lets about
    # 4 and 3.3 through (a sweep of the digits job measured 4 and 4: tests/test_rerun.py checks forecast vs actual)
    f = forecast(8, 1, Schedule(20.0, (2.0, 6.0, 18.0), 3.0))
    assert [round(r.configurations, 1) for r in f.rungs] == [8.0, 4.0, 3.3, 3.2]
    assert halving_short(f, 3) == 27 and halving_short(forecast(27, 1, Schedule(9.0, (1.0, 3.0), 3.0)), 3) is None


def test_fifo_forecast_and_cost():
    f = forecast(5, 2, Schedule(10.0))
    assert f.steps == f.fifo_steps == 100 and [r.step for r in f.rungs] == [10]
    c = cost(f, 0.5, gpu=0.25, cpu=1.0, concurrent=4)  # fractional GPUs count their fraction
    assert c.resource == "GPU" and c.resource_hours == pytest.approx(100 * 0.5 * 0.25 / 3600)
    assert c.wall_s == pytest.approx(100 * 0.5 / 4)
    assert forecast(5, 1, Schedule(None)).steps is None  # the job decides its length: nothing to forecast


@pytest.mark.integration
def test_plan_prints_the_trials_rungs_cost_and_warnings(tmp_path):
    r = danlu_cli(["plan", "sweep.seeds=[0,1,2]", "sweep.num_samples=4", "lr=interval(0.001,0.1)",
                   "split_seed=0,1", "epochs=20"], tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # the space, the trial count with seeds
    assert "lr               uniform" in out and "[0.001, 0.1]" in out
    assert "4 configuration(s) (search=random x 2 grid" not in out  # split_seed is a choice under random search
    assert "= 12 trial(s)" in out and "x 3 seed(s) [0, 1, 2]" in out
    # rungs: grace 2, rf 3, max_t 20 -> 2, 6, 18, then the end at 20; each row's trials = configurations x 3 seeds
    rows = [ln.split() for ln in out.split("\nschedule:")[1].splitlines() if ln.strip().endswith(("rung", "end"))]
    assert [float(r[0]) for r in rows] == [2, 6, 18, 20] and [r[3] for r in rows] == ["rung"] * 3 + ["end"]
    assert float(rows[0][1]) == 4 and all(float(r[2]) == pytest.approx(3 * float(r[1]), abs=0.03) for r in rows)
    steps = sum(float(r[2]) * (float(r[0]) - b) for r, b in zip(rows, [0, 2, 6, 18], strict=True))
    printed = float(out.split("expected trial-steps: ")[1].split(";")[0])
    assert printed == pytest.approx(steps, abs=0.5) and "; FIFO (every trial to step 20): 240; asha saves" in out
    assert "2 trial(s) at once on this machine" in out
    assert "no measured step time" in out
    assert "split_seed is swept as a hyperparameter" in out
    assert "lr=interval(0.001,0.1) spans 100x without log scale" in out
    assert "4 configuration(s) < 27 = reduction_factor^3: by halving alone" in out
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlflow.db").exists()  # nothing launched


@pytest.mark.integration
def test_plan_probe_measures_the_step_time_and_finds_a_missing_metric(tmp_path):
    r = danlu_cli(["plan", "--probe", "job=sleep", "sweep=sleep", "epoch_s=0.05", "scheduler=fifo"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "cost: --probe: 3 report(s) of the base config here" in r.stdout
    assert "CPU-hours:" in r.stdout and "FIFO" in r.stdout
    r = danlu_cli(["plan", "--probe", "job=sleep", "sweep=sleep", "epoch_s=0.01", "sweep.metric=loss"], tmp_path)
    assert r.returncode == 2 and "sweep.metric=loss: the job never reports 'loss'" in r.stderr, r.stderr


@pytest.mark.integration
@pytest.mark.parametrize("args, words", [
    (["sweep.budget.gpu_hours=-1"], ["sweep.budget.gpu_hours=-1", "a number >= 0"]),
    (["sweep.budget.wall_time=soon"], ["sweep.budget.wall_time=soon", "30m, 8h"]),
    (["+sweep.budget.dollars=5"], ["sweep.budget.dollars", "valid keys are cpu_hours, gpu_hours, wall_time"]),
    (["sweep.mode=maybe"], ["sweep.mode=maybe", "max, min"]),
    (["sweep.metric=null"], ["sweep.metric: the name of a metric the job reports"]),
    (["preflight.memory_mb=0"], ["preflight.memory_mb=0", "a number >= 1"]),
])
def test_plan_bad_input_exits_2(tmp_path, args, words):
    r = danlu_cli(["plan", *args], tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("danlu: error: ") and r.stderr.count("\n") == 1, r.stderr
    for w in words:
        assert w in r.stderr
