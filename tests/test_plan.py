"""`danlu plan`: the forecast's arithmetic against hand-computed values, the printed plan (trial count, rungs,
expected steps beside FIFO's, warnings), and bad input."""

from __future__ import annotations

import pytest
from conftest import danlu_cli

from orchestrator.forecast import cost, forecast, halving_short
from orchestrator.scheduler import Schedule


def test_asha_forecast_by_hand():
    # 8 configurations, 1 seed, grace 2, rf 3, max_t 20: rungs 2, 6, 18, then the end at 20.
    # reaching: 8 at 2; 8/3 at 6; 8/9 -> at least 1 (Tune's first arrival goes on) at 18; 1 at 20.
    # steps: 8*2 + (8/3)*4 + 1*12 + 1*2 = 16 + 10.667 + 12 + 2 = 40.667; FIFO: 8*20 = 160
    f = forecast(8, 1, Schedule(20.0, (2.0, 6.0, 18.0), 3.0))
    assert [r.step for r in f.rungs] == [2, 6, 18, 20]
    assert [round(r.configurations, 3) for r in f.rungs] == [8, 2.667, 1, 1]
    assert f.steps == pytest.approx(16 + 32 / 3 + 12 + 2)
    assert f.fifo_steps == 160 and f.trials == 8


def test_asha_forecast_with_seeds_by_hand():
    # 27 configurations x 3 seeds, grace 1, rf 3, max_t 9: rungs 1, 3, then 9. Seed-aware ASHA halves
    # configurations; each takes its 3 seeds along. reaching: 27, 9, 3 configurations = 81, 27, 9 trials.
    # steps: 81*1 + 27*(3-1) + 9*(9-3) = 81 + 54 + 54 = 189; FIFO: 81*9 = 729
    f = forecast(27, 3, Schedule(9.0, (1.0, 3.0), 3.0))
    assert [(r.step, r.trials) for r in f.rungs] == [(1, 81), (3, 27), (9, 9)]
    assert f.steps == 189 and f.fifo_steps == 729
    assert halving_short(f, 3) is None  # 27 = 3^2: one configuration reaches the end by the halving alone
    assert halving_short(forecast(8, 3, Schedule(9.0, (1.0, 3.0), 3.0)), 3) == 9


def test_fifo_forecast_and_cost():
    f = forecast(5, 2, Schedule(10.0))
    assert f.steps == f.fifo_steps == 100 and [r.step for r in f.rungs] == [10]
    c = cost(f, 0.5, gpu=0.25, cpu=1.0, concurrent=4)  # fractional GPUs count their fraction
    assert c.resource == "GPU" and c.resource_hours == pytest.approx(100 * 0.5 * 0.25 / 3600)
    assert c.wall_s == pytest.approx(100 * 0.5 / 4)
    assert forecast(5, 1, Schedule(None)).steps is None  # the job decides its length: nothing to forecast


def test_plan_prints_the_trials_rungs_cost_and_warnings(tmp_path):
    r = danlu_cli(["plan", "sweep.seeds=[0,1,2]", "sweep.num_samples=4", "lr=interval(0.001,0.1)",
                   "split_seed=0,1", "epochs=20"], tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # the space, the trial count with seeds
    assert "lr               uniform" in out and "[0.001, 0.1]" in out
    assert "4 configuration(s) (search=random x 2 grid" not in out  # split_seed is a choice under random search
    assert "= 12 trial(s)" in out and "x 3 seed(s) [0, 1, 2]" in out
    # rungs: grace 2, rf 3, max_t 20 -> 2, 6, 18, 20; 4 configurations: 4, 4/3, 1, 1 (x3 seeds)
    assert "       2            4.00     12.00   rung" in out
    assert "       6            1.33      4.00   rung" in out
    assert "      18            1.00      3.00   rung" in out
    assert "      20            1.00      3.00   end" in out
    # steps: 12*2 + 4*4 + 3*12 + 3*2 = 24+16+36+6 = 82; FIFO 12*20 = 240
    assert "expected trial-steps: 82.0; FIFO (every trial to step 20): 240; asha saves 66%" in out
    assert "2 trial(s) at once on this machine" in out
    assert "no measured step time" in out
    assert "split_seed is swept as a hyperparameter" in out
    assert "lr=interval(0.001,0.1) spans 100x without log scale" in out
    assert "4 configuration(s) < 27 = reduction_factor^3" in out
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlflow.db").exists()  # nothing launched


def test_plan_probe_measures_the_step_time_and_finds_a_missing_metric(tmp_path):
    r = danlu_cli(["plan", "--probe", "job=sleep", "sweep=sleep", "epoch_s=0.05", "scheduler=fifo"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "cost: --probe: 3 report(s) of the base config here" in r.stdout
    assert "CPU-hours:" in r.stdout and "FIFO" in r.stdout
    r = danlu_cli(["plan", "--probe", "job=sleep", "sweep=sleep", "epoch_s=0.01", "sweep.metric=loss"], tmp_path)
    assert r.returncode == 2 and "sweep.metric=loss: the job never reports 'loss'" in r.stderr, r.stderr


@pytest.mark.parametrize("args, words", [
    (["sweep.budget.gpu_hours=-1"], ["sweep.budget.gpu_hours=-1", "a number >= 0"]),
    (["sweep.budget.wall_time=soon"], ["sweep.budget.wall_time=soon", "30m, 8h"]),
    (["+sweep.budget.dollars=5"], ["sweep.budget.dollars", "valid keys are cpu_hours, gpu_hours, wall_time"]),
    (["sweep.mode=maybe"], ["sweep.mode=maybe", "max, min"]),
    (["preflight.memory_mb=0"], ["preflight.memory_mb=0", "a number >= 1"]),
])
def test_plan_bad_input_exits_2(tmp_path, args, words):
    r = danlu_cli(["plan", *args], tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("danlu: error: ") and r.stderr.count("\n") == 1, r.stderr
    for w in words:
        assert w in r.stderr
