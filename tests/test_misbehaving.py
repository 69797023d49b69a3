"""Jobs that misbehave (issue 33): each is named, bounded, and costs no other trial or value.

Steps only go forward within one attempt of a trial: a repeated or a backward step is the job's error where it
reports (`danlu run`, the preflight's probe, a trial of a sweep), never a value MLflow silently drops.
"""

from __future__ import annotations

import io

import pytest
from omegaconf import OmegaConf

from orchestrator.context import LocalContext, StepOrderError
from tests.conftest import mlflow_runs

SLEEP = {"epochs": 4, "epoch_s": 0.0, "x": 0.5, "seed": 0, "fail_at": 0, "nan_at": 0, "checkpoint_state": False}


@pytest.mark.parametrize("knob, said", [("repeat_at", "step 2 after step 2: steps must increase (a repeated step"),
                                        ("back_at", "step 1 after step 2: steps must increase (a backward step")])
def test_a_repeated_or_backward_step_is_the_jobs_error(knob, said):
    from jobs.sleep import train

    ctx = LocalContext(metric="score", stream=io.StringIO())
    with pytest.raises(StepOrderError, match=said.replace("(", r"\(")):
        train(OmegaConf.create({**SLEEP, knob: 2}), ctx)
    assert [step for step, _ in ctx.history] == [1, 2]  # the first value of step 2 is kept, nothing overwritten

    from orchestrator import probe

    found = probe.run(train, OmegaConf.create({**SLEEP, knob: 2}), reports=None)  # the preflight's probe
    assert "StepOrderError" in found.error and said in found.error


@pytest.mark.slow
def test_a_trial_that_repeats_a_step_fails_with_the_reason(ray_gpus, conf_dir, tmp_path):
    from tests.test_sweep import history, sweep

    code, out = sweep(conf_dir, tmp_path, "repeat", "job=sleep", "sweep=sleep", "scheduler=fifo", "epochs=4",
                      "epoch_s=0.01", "sweep.num_samples=1", "repeat_at=tag(grid, choice(0,2))",
                      "failure.max_failures=0", preflight=False)
    assert "1 completed, 0 stopped early, 1 failed" in out, out
    assert "steps must increase" in out  # said on the terminal, with the trial
    client, _, children = mlflow_runs(tmp_path / "mlflow.db", "repeat")
    (bad,) = [r for r in children if r.info.status == "FAILED"]
    assert "ctx.report: step 2 after step 2: steps must increase" in bad.data.tags["danlu.error"]
    assert history(client, bad, "score") == [1, 2]
    values = [m.value for m in client.get_metric_history(bad.info.run_id, "score") if m.step == 2]
    assert len(values) == 1  # the value the job sent first; the repeat never reached MLflow
