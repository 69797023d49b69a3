"""Jobs that misbehave (issue 33): each is named, bounded, and costs no other trial or value.

Steps only go forward within one attempt of a trial: a repeated or a backward step is the job's error where it
reports (`danlu run`, the preflight's probe, a trial of a sweep), never a value MLflow silently drops.
"""

from __future__ import annotations

import io

import pytest
from omegaconf import OmegaConf

from orchestrator.trial.ctx import LocalContext, StepOrderError
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

    from orchestrator.launch import probe

    found = probe.run(train, OmegaConf.create({**SLEEP, knob: 2}), reports=None)  # the preflight's probe
    assert "StepOrderError" in found.error and said in found.error


@pytest.mark.integration
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


def test_a_jobs_own_exit_is_a_finding_of_the_preflights_probe():
    from jobs.sleep import train
    from orchestrator.launch import probe

    found = probe.run(train, OmegaConf.create({**SLEEP, "exit_at": 2, "exit_code": 3}), reports=None)
    assert found.error == "the job called sys.exit(3) after 2 report(s)"


def test_a_jobs_exit_is_told_from_its_end():
    from orchestrator.trial.trainable import JobExited, job_exited

    job_exited(SystemExit(0), 4, 4)  # after its last epoch, exit 0: a script's habit, not a failure
    job_exited(SystemExit(None), 4, 4)
    with pytest.raises(JobExited, match=r"the job called sys.exit\(0\) at step 3 without finishing its epochs \(4\)"):
        job_exited(SystemExit(0), 3, 4)
    with pytest.raises(JobExited, match=r"sys.exit\(3\) at step 4"):
        job_exited(SystemExit(3), 4, 4)  # a non-zero code fails even at the end
    with pytest.raises(JobExited, match="before its first report"):
        job_exited(SystemExit(1), None, 4)


@pytest.mark.integration
def test_a_trial_that_calls_sys_exit_is_named_and_the_rest_goes_on(ray_gpus, conf_dir, tmp_path):
    from tests.test_sweep import sweep

    code, out = sweep(conf_dir, tmp_path, "exits", "job=sleep", "sweep=sleep", "scheduler=fifo", "epochs=4",
                      "epoch_s=0.01", "sweep.num_samples=1", "exit_at=tag(grid, choice(0,2,4))",
                      "exit_code=tag(grid, choice(0,3))", "failure.max_failures=0", preflight=False)
    # exit_at 0 (never) x 2 codes and exit_at 4 with code 0 end well; exit_at 2 (both codes) and 4 with code 3 fail
    assert "3 completed, 0 stopped early, 3 failed" in out, out
    client, _, children = mlflow_runs(tmp_path / "mlflow.db", "exits")
    errors = sorted(r.data.tags.get("danlu.error", "") for r in children if r.info.status == "FAILED")
    assert len(errors) == 3 and all("JobExited" in e or "sys.exit" in e for e in errors), errors
    assert any("sys.exit(0) at step 2 without finishing its epochs (4)" in e for e in errors)
    assert any("sys.exit(3) at step 4" in e for e in errors)
    assert not any("Should not have reached here" in e for e in errors)


@pytest.mark.integration
def test_a_report_of_a_running_sweep_says_it_is_partial_and_leaves_the_parent_alone(tmp_path):
    from tests.conftest import danlu_cli, stop_group, wait_for
    from tests.test_recovery import start_danlu

    args = ["sweep", "job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.name=busy", "sweep.num_samples=4",
            "epochs=40", "epoch_s=0.25", "sweep.search_seed=1", "resources.cpu=1", "--no-preflight"]
    proc = start_danlu(args, tmp_path, tmp_path / "busy.log")
    try:
        def some_ended_some_running() -> bool:
            if proc.poll() is not None or not (tmp_path / "mlflow.db").exists():
                return proc.poll() is not None
            runs = mlflow_runs(tmp_path / "mlflow.db", "busy")[2]
            return any(r.info.status == "RUNNING" for r in runs)

        wait_for(some_ended_some_running, timeout=300, what="a trial running")
        assert proc.poll() is None, (tmp_path / "busy.log").read_text()[-3000:]
        r = danlu_cli(["report", "busy"], tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        first = r.stdout.splitlines()[0]
        assert first.startswith("PARTIAL: sweep busy is still running (its driver is pid ") and "not the verdict" in first
        assert "of 4 trials ended" in first
        assert "danlu: partial report:" in r.stdout and "report-partial" in r.stdout
        client, (parent,), children = mlflow_runs(tmp_path / "mlflow.db", "busy")
        assert "danlu.report" not in parent.data.tags and "mlflow.note.content" not in parent.data.tags
        assert client.list_artifacts(parent.info.run_id, "report") == []  # nothing attached to the parent
        assert not (tmp_path / "outputs" / "busy" / "report").exists()
        page = (tmp_path / "outputs" / "busy" / "report-partial" / "report.html").read_text()
        assert "PARTIAL: sweep busy is still running" in page  # what a person opening it sees first
    finally:
        import signal

        stop_group(proc, signal.SIGINT, timeout=120)  # Ctrl-C: the sweep stops gracefully, resumable


def test_a_trials_output_goes_to_the_store_whole_or_capped_with_the_cut_said(tmp_path):
    from orchestrator.tracking.output import for_store

    small, big = tmp_path / "small.log", tmp_path / "big.log"
    small.write_text("a few lines\n")
    big.write_bytes(b"HEAD" + b"m" * (3 * 2**20) + b"TAIL")
    assert for_store(str(small), 1) == str(small) and for_store(str(big), None) == str(big)
    capped = for_store(str(big), 1)
    data = open(capped, "rb").read()
    assert capped != str(big) and len(data) < 2**20 + 500
    assert data.startswith(b"HEAD") and data.endswith(b"TAIL")
    assert b"bytes of this trial's output cut here (tracking.max_output_mb=1)" in data and str(big).encode() in data
    assert big.stat().st_size == 3 * 2**20 + 8  # the whole stays where it was


@pytest.mark.integration
def test_a_trial_that_prints_megabytes_is_capped_in_mlflow_and_whole_in_its_storage(ray_gpus, conf_dir, tmp_path):
    from tests.test_sweep import sweep

    code, out = sweep(conf_dir, tmp_path, "loud", "job=sleep", "sweep=sleep", "scheduler=fifo", "epochs=2",
                      "epoch_s=0.01", "sweep.num_samples=1", "print_mb=3", "tracking.max_output_mb=1", preflight=False)
    assert code == 0, out
    client, _, (run,) = mlflow_runs(tmp_path / "mlflow.db", "loud")
    text = open(client.download_artifacts(run.info.run_id, "output.log", str(tmp_path)), "rb").read()
    assert len(text) < 2**20 + 1000 and b"cut here (tracking.max_output_mb=1)" in text
    (full,) = (tmp_path / "outputs" / "loud" / "logs").glob("*.log")
    assert full.stat().st_size >= 3 * 2**20  # the whole output, once, in the sweep's storage


def test_retries_go_to_failures_a_retry_can_help():
    """The retry policy (orchestrator/trial/retries.py): failures that are not the job's up to failure.max_failures; the
    job's own errors only with failure.retry_job_errors; never the same error at the same step twice in a row."""
    from orchestrator.trial.retries import INFRA, JOB, STALLED, Failure, RetryPolicy, kind_of, tune_limit

    p = RetryPolicy(max_failures=2, retry_job_errors=0)
    assert "the job's own error" in p.judge("a", Failure(JOB, 3, "ValueError: boom"))
    assert p.ended["a"][0] == "failed"
    assert p.judge("b", Failure(INFRA, 3, "ActorDiedError: the actor died")) is None
    assert p.judge("b", Failure(INFRA, 5, "ActorDiedError: the actor died")) is None
    assert "max_failures=2 used" in p.judge("b", Failure(INFRA, 7, "ActorDiedError: the actor died"))
    assert p.judge("c", Failure(STALLED, 2, "TrialStalled: no report for 11s after step 2")) is None
    assert "failed again at step 2 with the same error" in p.judge(
        "c", Failure(STALLED, 2, "TrialStalled: no report for 12s after step 2"))  # a stall's duration differs
    assert p.ended["c"][0] == "stalled"

    q = RetryPolicy(max_failures=0, retry_job_errors=1)
    assert q.judge("d", Failure(JOB, 3, "ValueError: flaky at step 3")) is None  # asked for: one retry
    assert "same error" in q.judge("d", Failure(JOB, 3, "ValueError: flaky at step 3"))
    assert q.judge("e", Failure(JOB, 3, "OSError: read timed out")) is None
    assert "retry_job_errors=1" in q.judge("e", Failure(JOB, 6, "OSError: read timed out"))
    assert "max_failures=0" in q.judge("f", Failure(INFRA, 1, "node died"))
    assert tune_limit(2, 0) == 2 and tune_limit(2, 3) == 5 and tune_limit(-1, 0) == -1

    from ray.exceptions import ActorDiedError, RayTaskError

    assert kind_of(ActorDiedError()) == INFRA
    assert kind_of(RayTaskError("train", "Traceback...", ValueError("boom"))) == JOB
    assert kind_of("ray.exceptions.ActorDiedError: The actor died unexpectedly") == INFRA
    assert kind_of("ValueError: boom") == JOB


@pytest.mark.integration
def test_jobs_that_misbehave_are_named_bounded_and_cost_no_other_trial(ray_gpus, conf_dir, tmp_path):
    """One sweep, one trial per way to misbehave (jobs/sleep.py CASES), on 2 slots: an exception, a NaN, a hang, a
    memory hog, sys.exit(0) and sys.exit(3) mid-run, os._exit(1). Each fails named, at its step, once (only the hang
    is retried: a stall may pass; it stalls again at the same step and is not retried again); the well-behaved
    trial completes; the memory limit holds."""
    from tests.test_sweep import history, sweep

    cases = ["none", "raise", "nan_metric", "hang", "hog", "exit0", "exit3", "os_exit1"]
    code, out = sweep(conf_dir, tmp_path, "bad", "job=sleep", "sweep=sleep", "scheduler=fifo", "epochs=4",
                      "epoch_s=0.05", "sweep.num_samples=1", f"misbehave=tag(grid, choice({','.join(cases)}))",
                      # the stall limit well above the hog's time to reach its memory limit (under 1 s on a quiet
                      # machine, over 4 s once on CI's loaded one: then it stalled first, and its retry skipped the hog)
                      "failure.stall_s=12", "resources.memory_mb=1000", "checkpoint_state=true", preflight=False)
    assert "8 trials: 1 completed, 0 stopped early, 7 failed (1 of them stalled and killed mid-run: t003 at step 2)" \
        in out, out
    client, _, children = mlflow_runs(tmp_path / "mlflow.db", "bad")
    runs = {r.data.params["misbehave"]: r for r in children}
    assert runs["none"].info.status == "FINISHED" and runs["none"].data.tags["danlu.outcome"] == "completed"
    error = {case: runs[case].data.tags.get("danlu.error", "") for case in cases}
    assert "sleep job: failing at epoch 2" in error["raise"]
    assert "non-finite metric at step 2" in error["nan_metric"]
    assert error["hang"] == "TrialStalled: no report for 12s after step 2" or \
        error["hang"].startswith("TrialStalled: no report for") and error["hang"].endswith("after step 2")
    assert runs["hang"].data.tags["danlu.outcome"] == "stalled"
    assert "exceeded its memory limit of 1000 MB at step 2 (peak " in error["hog"]
    assert "sys.exit(0) at step 2 without finishing its epochs (4)" in error["exit0"]
    assert "sys.exit(3) at step 2" in error["exit3"]
    assert "os._exit(1) at step 2 without finishing its epochs (4)" in error["os_exit1"]
    for case in cases[1:]:
        assert runs[case].info.status == "FAILED", case
        # what it reported before it failed, once each (a NaN and an exception at epoch 2 leave step 1)
        assert history(client, runs[case], "score") == ([1] if case in ("raise", "nan_metric") else [1, 2]), case
    # said on the terminal, each with why it was not retried; only the hang was retried, once
    assert out.count("restarted after") == 1 and "restarted after it stalled (no report for" in out
    assert out.count("not retried: the job's own error") == 6, out
    assert "not retried: it failed again at step 2 with the same error" in out
    assert "stalled: no report for" in out and "its process is ended" in out
    peak = float(error["hog"].split("(peak ", 1)[1].split(" MB")[0])
    assert 1000 < peak < 1500  # stopped at the limit, not after the whole 1500 MB


def test_the_automatic_stall_limit_follows_the_trials_own_steps(monkeypatch):
    """failure.stall_s=auto: 10 x the trial's slowest step, at least 10 min; before a first report, 10 x the
    sweep's slowest start-up, and no limit while no trial has reported at all; explicit seconds as given."""
    import time
    from types import SimpleNamespace

    from orchestrator.run.stalls import StallWatch
    from orchestrator.trial.retries import RetryPolicy

    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    w = StallWatch("auto", RetryPolicy(2), str, check_s=0)
    a, b = SimpleNamespace(trial_id="a", status="RUNNING"), SimpleNamespace(trial_id="b", status="RUNNING")
    w.on_step_end(0, [a, b])  # both begin running
    assert w.limit_of("a") is None  # nothing reported yet: nothing to judge a start-up by
    clock[0] = 90.0
    w.on_trial_result(0, [a, b], a, {"step": 1})  # a's start-up: 90 s
    assert w.limit_of("a") == 900.0 and w.limit_of("b") == 900.0  # 10 x the slowest start-up
    for step, t in ((2, 100.0), (3, 220.0)):  # steps of 10 s and 120 s
        clock[0] = t
        w.on_trial_result(0, [a, b], a, {"step": step})
    assert w.limit_of("a") == 1200.0  # 10 x its slowest step (120 s)
    assert StallWatch(30, None, str).limit_of("a") == 30.0 and StallWatch(None, None, str).limit_of("a") is None
    clock[0] = 600.0
    w.on_step_end(0, [a, b])  # b: 600 s quiet before its first report, under its 900 s
    assert "b" in w._since


@pytest.mark.integration
def test_a_job_that_hangs_in_the_preflights_probe_is_named_not_waited_on(tmp_path):
    """The preflight runs the job in a child process (orchestrator.launch.probe.Worker): a job that stops reporting is the
    probe's error after failure.stall_s of silence (15 min under auto), its child killed; a job that reports goes
    on however long it runs, one report at a time."""
    from orchestrator.launch import probe
    from tests.conftest import ROOT

    base = {**SLEEP, "epochs": 4, "epoch_s": 0.5, "job": {"fn": "jobs.sleep:train"}}
    with probe.Worker(ROOT, timeout_s=2.0) as w:
        found = w.run({**base, "hang_at": 1}, "jobs.sleep:train", reports=None)
        assert found.error == ("the job made no report for 2 s after 1 report(s): it hangs (failure.stall_s bounds "
                               "the wait)")
        fine = w.run(base, "jobs.sleep:train", reports=None)  # a new child; 2 s in all, 0.5 s between reports
        assert fine.error is None and [s for s, _ in fine.history] == [1, 2, 3, 4]
