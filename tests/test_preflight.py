"""`danlu preflight`, and the fast checks every new `danlu sweep` runs first. Each check has a real job or setting
that fails it: a job with a bug that cannot overfit, a corner over a memory cap, an lr that produces NaN, a
tracking URI nothing answers at, a metric the job never reports, a job that crashes at its first step."""

from __future__ import annotations

import time

import pytest
from conftest import danlu_cli, free_port, mlflow_runs

ONLY = "--only"


@pytest.mark.integration
def test_digits_passes_the_fast_checks(tmp_path):
    r = danlu_cli(["preflight", ONLY, "reach,metric,nan,overfit"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split()[:2] for ln in lines[1:5]] == [["PASS", "reach"], ["PASS", "metric"], ["PASS", "nan"],
                                                       ["PASS", "overfit"]], r.stdout
    assert "at lr=0.001 and lr=0.3" in r.stdout  # the NaN check ran at both ends of the space's lr interval
    assert "< 0.05 in" in r.stdout  # the training loss of 32 examples fell below the job's threshold


@pytest.mark.integration
def test_a_job_that_cannot_overfit_fails_with_its_curve_and_causes(tmp_path):
    r = danlu_cli(["preflight", ONLY, "overfit", "job.fn=tests.preflight_jobs:zero_grad_after_backward"], tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL  overfit  train_loss did not fall below 0.05 in 200 step(s)" in r.stdout
    assert "train_loss by step: 1: " in r.stdout and "200: " in r.stdout  # the loss curve
    assert "the loss barely moved" in r.stdout and "zero_grad after backward" in r.stdout


@pytest.mark.integration
def test_the_memory_corner_over_a_cap_fails(tmp_path):
    r = danlu_cli(["preflight", ONLY, "memory", "preflight.memory_mb=64"], tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    # the corner: the largest batch size and width of the default space (depth is not swept)
    assert "FAIL  memory   at the corner (batch_size=128, job.model.width=256): peak resident memory" in r.stdout
    assert "> 64 MB per trial" in r.stdout
    r = danlu_cli(["preflight", ONLY, "memory", "preflight.memory_mb=100000"], tmp_path)
    assert r.returncode == 0 and "PASS  memory" in r.stdout and "within 100000 MB" in r.stdout, r.stdout


@pytest.mark.integration
def test_an_lr_that_produces_nan_fails(tmp_path):
    r = danlu_cli(["preflight", ONLY, "nan", "lr=tag(log, interval(1e-3, 1e6))"], tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL  nan      at lr=1e+06:" in r.stdout and " is nan at step " in r.stdout


@pytest.mark.integration
def test_an_unreachable_tracking_uri_fails(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    r = danlu_cli(["preflight", ONLY, "reach", f"tracking.uri={uri}"], tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr  # a server that never answered: a wrong address, bad input
    assert f"FAIL  reach    tracking: the MLflow server {uri} does not answer" in r.stdout
    for extra in ([], ["--no-preflight"]):  # a new sweep refuses it before anything starts, preflight or not
        r = danlu_cli(["sweep", *extra, "job=sleep", "sweep=sleep", f"tracking.uri={uri}"], tmp_path, timeout=300,
                      preflight=True)
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"the MLflow server {uri} does not answer" in r.stderr and "Traceback" not in r.stderr
        assert "starting Ray" not in r.stdout and not (tmp_path / "outputs").exists()


@pytest.mark.integration
def test_a_job_that_declares_nothing_skips_the_overfit_check(tmp_path):
    r = danlu_cli(["preflight", ONLY, "metric,nan,overfit", "job=sleep", "sweep=sleep", "epoch_s=0.01"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS  metric   the job reports score" in r.stdout
    assert "PASS  nan      every metric finite over the first 3 report(s) at the base config" in r.stdout
    assert "SKIP  overfit  job sleep declares no job.preflight" in r.stdout


@pytest.mark.integration
def test_a_job_that_crashes_at_its_first_step(tmp_path):
    r = danlu_cli(["preflight", ONLY, "metric", "job.fn=tests.preflight_jobs:crash_at_first_step"], tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL  metric   the base config ended before its first report: RuntimeError: mat1 and mat2" in r.stdout


@pytest.mark.integration
def test_a_sweep_of_a_metric_never_reported_leaves_nothing_and_starts_no_ray(tmp_path):
    start = time.monotonic()
    r = danlu_cli(["sweep", "job=sleep", "sweep=sleep", "epoch_s=0.01", "sweep.metric=no_such_metric"], tmp_path,
                  preflight=True)
    took = time.monotonic() - start
    assert r.returncode == 2, r.stdout + r.stderr
    assert "danlu: error: sweep.metric=no_such_metric: the job never reports 'no_such_metric'; it reports: score" \
        in r.stderr
    assert "starting Ray" not in r.stdout
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no outputs/: nothing created
    assert took < 30, took  # was 38 s, with a parent and two child runs left in MLflow


@pytest.mark.integration
def test_a_sweep_whose_job_cannot_overfit_is_not_launched(tmp_path):
    r = danlu_cli(["sweep", "job.fn=tests.preflight_jobs:zero_grad_after_backward", "sweep.num_samples=2"], tmp_path,
                  preflight=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL  overfit" in r.stdout
    assert "danlu: error: preflight: overfit failed" in r.stderr and "--no-preflight launches anyway" in r.stderr
    assert "starting Ray" not in r.stdout and list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_without_preflight_a_missing_metric_fails_the_parent_run(tmp_path):
    r = danlu_cli(["sweep", "--no-preflight", "job=sleep", "sweep=sleep", "epoch_s=0.01", "sweep.num_samples=2",
                   "sweep.metric=no_such_metric", "sweep.name=nopre"], tmp_path)
    assert r.returncode == 2 and "the job never reports 'no_such_metric'" in r.stderr, r.stdout + r.stderr
    _, parents, _ = mlflow_runs(tmp_path / "mlflow.db", "nopre")
    assert [p.info.status for p in parents] == ["FAILED"]
    assert "never reports 'no_such_metric'" in parents[0].data.tags["danlu.error"]
    assert parents[0].data.tags["danlu.preflight"] == "skipped (--no-preflight)"


@pytest.mark.integration
def test_the_job_runs_in_a_child_process_never_in_the_driver(tmp_path):
    """torch (and, on a GPU, a CUDA context) load in the preflight's child process, not in the sweep's driver."""
    import subprocess
    import sys

    from conftest import CONF

    code = ("import sys; from pathlib import Path; from orchestrator.launch.plan import plan; from orchestrator.launch import preflight;"
            f"p = plan([], Path({str(CONF)!r})); out = preflight.run(p, preflight.FAST, say=lambda _: None);"
            "print([c.status for c in out.checks], 'torch' in sys.modules, 'sklearn' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['PASS', 'PASS', 'PASS', 'PASS'] False False", r.stdout


def test_lr_range_bounds_on_a_known_curve():
    """Flat, then falling fastest around lr=1e-2, lowest at 1e-1, then exploding: the bounds bracket the fall."""
    import math

    from orchestrator.launch.preflight import suggest_bounds

    lrs = [10 ** (-5 + 5 * i / 199) for i in range(200)]  # 1e-5 .. 1
    loss = [2.3 - 2.0 / (1 + math.exp(-3 * (math.log10(lr) + 2))) + (50 * (lr - 0.1) if lr > 0.1 else 0)
            for lr in lrs]
    low, high, smooth = suggest_bounds(list(zip(lrs, loss, strict=True)))
    assert 3e-4 <= low <= 3e-3, low  # the steepest descent (about 1e-2), divided by 10
    assert 0.03 <= high <= 0.2, high  # where the smoothed loss is lowest, before it explodes
    assert len(smooth) == 200


@pytest.mark.integration
def test_lr_find_suggests_bounds_and_draws_the_curve(tmp_path):
    r = danlu_cli(["preflight", ONLY, "reach", "--lr-find"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS  lr_find  suggested lr='tag(log, interval(" in r.stdout
    png = tmp_path / "outputs" / "preflight" / "digits-lr_find.png"
    assert f"curve: {png}" in r.stdout and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
