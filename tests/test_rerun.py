"""`danlu rerun RUN_ID`: a trial reconstructed from its MLflow run reproduces its metric history exactly (CPU);
a difference is found and said; a run at another commit is warned of. After the sweep, `danlu plan` costs the
next sweep at the step time this one measured, and the report sets the forecast beside the steps run."""

from __future__ import annotations

import pytest
from conftest import danlu_cli, mlflow_runs

from orchestrator.review.rerun import compare


def test_compare_finds_the_first_difference():
    original = {"val_acc": [(1, 0.5), (2, 0.75)], "train_loss": [(1, 2.0), (2, 1.0)]}
    same = [(1, {"val_acc": 0.5, "train_loss": 2.0}), (2, {"val_acc": 0.75, "train_loss": 1.0})]
    assert compare(original, same) == (4, None)
    off = [(1, {"val_acc": 0.5, "train_loss": 2.0}), (2, {"val_acc": 0.75, "train_loss": 1.0000001})]
    n, diff = compare(original, off)
    assert n == 1 and diff.startswith("train_loss at step 2: 1.0000001 now, 1.0 in MLflow")
    assert "did not report it" in compare(original, same[:1])[1]


@pytest.mark.integration
def test_rerun_reproduces_a_trial_exactly(tmp_path):
    r = danlu_cli(["sweep", "--no-preflight", "sweep.num_samples=2", "epochs=3", "scheduler=fifo", "sweep.name=again",
                   "lr=tag(log, interval(0.01, 0.2))"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Trial-steps run: 6 (forecast 6; FIFO would run 6)" in r.stdout  # FIFO: 2 trials x 3 steps
    client, parents, children = mlflow_runs(tmp_path / "mlflow.db", "again")
    assert parents[0].data.tags["danlu.forecast.steps"] == "6.0" and parents[0].data.metrics["step_s"] > 0
    r = danlu_cli(["rerun", children[0].info.run_id], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reproduced exactly: 15 value(s) of 5 metric(s) over 3 step(s)" in r.stdout, r.stdout
    assert "warning: the run ran at commit" not in r.stdout
    client.set_tag(parents[0].info.run_id, "mlflow.source.git.commit", "0123456789abcdef")
    r = danlu_cli(["rerun", children[1].info.run_id], tmp_path)  # the other trial, "at another commit"
    assert r.returncode == 0 and "warning: the run ran at commit 0123456789ab" in r.stdout, r.stdout
    assert "reproduced exactly: 15 value(s) of 5 metric(s) over 3 step(s)" in r.stdout, r.stdout
    r = danlu_cli(["rerun", parents[0].info.run_id], tmp_path)
    assert r.returncode == 2 and "not a danlu trial's run" in r.stderr
    # the next plan of this job is costed at the step time this sweep measured
    r = danlu_cli(["plan", "sweep.num_samples=2", "epochs=3"], tmp_path)
    assert r.returncode == 0 and "cost: sweep again (under " in r.stdout and "CPU-hours:" in r.stdout, r.stdout
