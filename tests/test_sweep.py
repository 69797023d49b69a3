"""End-to-end sweeps on a real local Ray (logical GPUs), a real sqlite MLflow store and real torch."""

from __future__ import annotations

import io
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from orchestrator.errors import BadInput, SweepFailed
from orchestrator.run.sweep import run_sweep
from tests.conftest import CONF, ROOT, danlu_cli, mlflow_runs

pytestmark = pytest.mark.integration


def sweep(conf_dir, tmp_path, name, *overrides, preflight=False):
    """A sweep in this process, on the session's Ray; without its preflight unless `preflight` (its subject)."""
    out = io.StringIO()
    code = run_sweep([f"sweep.name={name}", f"output_dir={tmp_path}/outputs",
                      f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", *overrides], conf_dir, stream=out,
                     preflight=preflight)
    return code, out.getvalue()


def history(client, run, key):
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def test_digits_sweep_on_logical_gpus(ray_gpus, conf_dir, tmp_path):
    code, out = sweep(conf_dir, tmp_path, "gpus", "cluster.num_gpus=2", "resources.gpu=0.5", "resources.cpu=0.5",
                      "sweep.num_samples=4", "epochs=4", "scheduler.grace_period=2", preflight=False)
    assert code == 0, out
    assert "danlu: 4 trials:" in out and "danlu: best single trial: t0" in out and "danlu: best configuration: " in out
    client, parents, children = mlflow_runs(tmp_path / "mlflow.db", "gpus")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags["danlu.version"] and tags["danlu.git_dirty"] in ("true", "false", "unknown")
    assert len(tags["mlflow.source.git.commit"]) in (40, 7)  # a commit, or "unknown" outside git
    assert "sweep.name=gpus" in tags["danlu.command"] or tags["danlu.command"]
    params = parent.data.params  # the sweep's settings, not the base config's values
    assert params["resources.gpu"] == "0.5" and params["job.fn"] == "jobs.digits:train"
    assert "lr" not in params and params["space.lr"].startswith("tag(log") and params["sweep.num_samples"] == "4"
    assert params["scheduler.name"] == "asha" and params["scheduler.grace_period"] == "2"
    assert tags["mlflow.source.name"] == tags["danlu.command"] and tags["mlflow.source.type"] == "LOCAL"
    note = tags["mlflow.note.content"]  # the run page's description: the morning summary
    assert "Verdict:" in note and "4 trials:" in note and "report/report.html" in note
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"config.yaml", "space.yaml", "report"}
    assert "report/report.html" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "danlu: report for gpus" in out
    m = parent.data.metrics
    assert m["trials_total"] == 4 and m["trials_failed"] == 0
    assert m["trials_completed"] + m["trials_stopped_early"] == 4
    # the parent's best is its best child's last value (the search seed is fresh each run: 4 draws of lr at 4 epochs
    # may all learn little, as one CI run saw, best 0.32; what is checked here is the metric's path, not learning)
    last = {r.data.tags["danlu.trial"]: r.data.metrics["val_acc"] for r in children}
    assert 0.0 < m["best_val_acc"] <= 1.0 and m["best_val_acc"] == max(last.values())
    assert tags["danlu.best_trial"].startswith("t00") and last[tags["danlu.best_trial"]] == m["best_val_acc"]

    gpus = Counter()
    for run in children:
        t = run.data.tags
        assert t["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.run_name.startswith("t00") and "lr=" in run.info.run_name
        assert run.info.status == "FINISHED" and t["danlu.outcome"] in ("completed", "stopped_early")
        assert t["ray.trial_id"] and t["danlu.node"] and t["danlu.config_id"]
        # the trial saw exactly its one GPU, the way Ray sets it
        assert t["danlu.gpu_ids"] in ("0", "1") and t["danlu.cuda_visible_devices"] == t["danlu.gpu_ids"]
        gpus[t["danlu.gpu_ids"]] += 1
        p = run.data.params
        for key in ("lr", "batch_size", "job.model.width", "seed", "optimizer", "epochs", "job.model.name"):
            assert key in p, key
        steps = history(client, run, "val_acc")
        n = 4 if t["danlu.outcome"] == "completed" else len(steps)
        assert steps == list(range(1, n + 1))  # every step, once
        assert history(client, run, "train_loss") == steps
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"config.yaml", "output.log"}
        with open(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))) as f:
            trial_cfg = yaml.safe_load(f)
        assert trial_cfg["lr"] == float(p["lr"]) and trial_cfg["seed"] == int(p["seed"])  # its own values
        assert trial_cfg["sweep"]["name"] == "gpus" and trial_cfg["job"]["model"]["width"] == int(p["job.model.width"])
    assert set(gpus) == {"0", "1"}  # 4 trials x 0.5 GPU spread over both logical GPUs
    outcomes = Counter(r.data.tags["danlu.outcome"] for r in children)
    assert outcomes["stopped_early"] == m["trials_stopped_early"]


def test_asha_stops_early_and_hands_the_slot_on(ray_gpus, conf_dir, tmp_path):
    code, out = sweep(conf_dir, tmp_path, "asha", "job=sleep", "sweep=sleep", "sweep.num_samples=10", "epochs=8",
                      "epoch_s=0.05", "scheduler.grace_period=1", "scheduler.reduction_factor=2")
    assert code == 0, out
    client, (parent,), children = mlflow_runs(tmp_path / "mlflow.db", "asha")
    assert len(children) == 10
    early = [r for r in children if r.data.tags["danlu.stopped_early"] == "true"]
    assert early and parent.data.metrics["trials_stopped_early"] == len(early)
    for r in early:
        assert len(history(client, r, "score")) < 8  # stopped before max_t
    # a stopped trial's worker (same pid: reuse_actors) went on to run a trial that started after it ended
    handed_on = [(s, t) for s in early for t in children
                 if t is not s and t.data.tags["danlu.pid"] == s.data.tags["danlu.pid"]
                 and t.info.start_time >= s.info.end_time]
    assert handed_on, "no trial ran in the slot that ASHA freed"


def test_seeds_are_replicates_of_one_config(ray_gpus, conf_dir, tmp_path):
    code, out = sweep(conf_dir, tmp_path, "seeds", "job=sleep", "sweep=sleep", "scheduler=fifo", "epochs=2",
                      "epoch_s=0.01", "sweep.num_samples=2", "sweep.seeds=[0,1,2]")
    assert code == 0, out
    _, _, children = mlflow_runs(tmp_path / "mlflow.db", "seeds")
    by_config: dict[str, list] = {}
    for r in children:
        by_config.setdefault(r.data.tags["danlu.config_id"], []).append(r)
    assert len(children) == 6 and len(by_config) == 2
    for runs in by_config.values():
        assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2"]
        assert len({r.data.params["x"] for r in runs}) == 1  # the same sampled config under each seed
        assert all(r.info.run_name.endswith(f"s={r.data.params['seed']}") for r in runs)


def test_failed_trials_are_marked_and_the_rest_goes_on(ray_gpus, conf_dir, tmp_path):
    code, out = sweep(conf_dir, tmp_path, "fail", "job=sleep", "sweep=sleep", "scheduler=fifo", "epochs=3",
                      "epoch_s=0.01", "sweep.num_samples=1", "fail_at=tag(grid, choice(0,2))")
    assert code == 0, out  # one of two failed: the sweep itself succeeded
    assert "1 completed, 0 stopped early, 1 failed" in out
    client, (parent,), children = mlflow_runs(tmp_path / "mlflow.db", "fail")
    bad = [r for r in children if r.info.status == "FAILED"]
    good = [r for r in children if r.info.status == "FINISHED"]
    assert len(bad) == 1 and len(good) == 1 and parent.data.metrics["trials_failed"] == 1
    assert "failing at epoch 2" in bad[0].data.tags["danlu.error"]
    assert {a.path for a in client.list_artifacts(bad[0].info.run_id)} == {"config.yaml", "error.txt", "output.log"}
    log = client.download_artifacts(bad[0].info.run_id, "output.log", str(tmp_path))
    assert "RuntimeError: sleep job: failing at epoch 2" in open(log).read()
    assert history(client, bad[0], "score") == [1]

    allfail = ["job=sleep", "sweep=sleep", "scheduler=fifo", "epochs=3", "epoch_s=0.01", "sweep.num_samples=2",
               "fail_at=1"]
    # every trial would crash at step 1: the preflight says so, and nothing is launched
    with pytest.raises(SweepFailed, match=r"preflight: metric failed \(the base config ended before its first report: "
                       r"RuntimeError: sleep job: failing at epoch 1"):
        sweep(conf_dir, tmp_path, "allfail", *allfail, preflight=True)
    assert mlflow_runs(tmp_path / "mlflow.db", "allfail")[1] == []
    code, out = sweep(conf_dir, tmp_path, "allfail", *allfail, preflight=False)  # launched anyway: all fail
    assert code == 1 and "2 failed" in out
    _, (parent,), _ = mlflow_runs(tmp_path / "mlflow.db", "allfail")
    assert parent.info.status == "FAILED"


def test_metric_the_job_never_reports(ray_gpus, conf_dir, tmp_path):
    with pytest.raises(BadInput, match="sweep.metric=val_acc: the job never reports 'val_acc'; it reports: score"):
        sweep(conf_dir, tmp_path, "nometric", "job=sleep", "sweep=sleep", "sweep.metric=val_acc", "epoch_s=0.01",
              preflight=True)
    _, parents, children = mlflow_runs(tmp_path / "mlflow.db", "nometric")
    assert parents == [] and children == []  # nothing left in MLflow
    assert not (tmp_path / "outputs" / "nometric").exists()  # nor in storage: the same command starts afresh


def test_cli_sweep_end_to_end(tmp_path):
    """`danlu sweep` as a user runs it: its own embedded Ray, ./mlflow.db, plain-text progress; a failed trial
    is one line on the terminal (its error and where the traceback is), never Ray's traceback."""
    r = danlu_cli(["sweep", "job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.num_samples=2", "epochs=3",
                   "epoch_s=0.05", "fail_at=tag(grid, choice(0,2))", "sweep.name=cli", "cluster.num_cpus=2"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "danlu: sweep cli: search random, 2 samples x 2 grid points, search seed " in r.stdout
    assert "running" in r.stdout and "best trial so far score=" in r.stdout  # the live view, as plain lines
    assert "danlu: 4 trials: 2 completed, 0 stopped early, 2 failed" in r.stdout
    assert "review it in MLflow's UI (`danlu ui` serves it here)" in r.stdout
    assert "  runs:   http://127.0.0.1:5000/#/experiments/1/runs?viewStateShareKey=danlu-" in r.stdout
    assert "workflowType=machine_learning" in r.stdout.splitlines()[-1]
    summary = r.stdout[r.stdout.index("danlu: 4 trials"):]
    sessions = set(Path("/tmp/ray").glob("session_2*"))
    # the same settings, its overrides in another order: the same sweep
    again = danlu_cli(["sweep", "sweep.name=cli", "cluster.num_cpus=2", "fail_at=tag(grid, choice(0,2))",
                       "epoch_s=0.05", "epochs=3", "sweep.num_samples=2", "scheduler=fifo", "sweep=sleep", "job=sleep"],
                      tmp_path)
    assert again.returncode == 0 and "danlu: sweep cli ended on " in again.stdout, again.stdout + again.stderr
    assert summary.strip() in again.stdout  # its summary and links again...
    assert set(Path("/tmp/ray").glob("session_2*")) == sessions and "starting Ray" not in again.stdout  # ...no Ray
    listed = danlu_cli(["list"], tmp_path)
    assert listed.returncode == 0 and re.search(r"^cli +finished +4/4 +score=", listed.stdout, re.M), listed.stdout
    failed = [ln for ln in r.stdout.splitlines() if " failed: " in ln]
    assert len(failed) == 2, r.stdout
    assert all("RuntimeError: sleep job: failing at epoch 2" in ln and "full traceback: outputs/cli/logs/" in ln
               for ln in failed), failed
    log = failed[0].split("full traceback: ", 1)[1].split(",", 1)[0]
    assert "Traceback (most recent call last)" in (tmp_path / log).read_text()  # where the line says it is
    assert "Traceback" not in r.stderr + r.stdout and "Trial status" not in r.stdout  # Ray's own output stays off
    assert "Trials did not complete" not in r.stderr
    client, parents, children = mlflow_runs(tmp_path / "mlflow.db", "cli")
    assert len(parents) == 1 and len(children) == 4
    for run in children:  # reports 50 ms apart: timestamps in ms, each step later, none before the run began
        stamps = [m.timestamp for m in sorted(client.get_metric_history(run.info.run_id, "score"), key=lambda m: m.step)]
        assert stamps and stamps[0] >= run.info.start_time, (run.info.start_time, stamps)
        assert all(a < b for a, b in zip(stamps, stamps[1:], strict=False)), stamps
    assert (tmp_path / "outputs" / "cli" / "tuner.pkl").exists()
    r = danlu_cli(["sweep", "job=sleep", "sweep=sleep", "sweep.name=cli"], tmp_path)
    assert r.returncode == 2 and "holds a sweep started with other settings" in r.stderr and "resume cli" in r.stderr
    assert "sweep.num_samples: 2 -> 8" in r.stderr and "scheduler.name: fifo -> asha" in r.stderr, r.stderr
    # the same command with its conf file edited (the space narrowed): refused, not run with the old space in silence
    conf = tmp_path / "project" / "conf"  # a copy of the project: its conf/ (edited), its jobs/
    shutil.copytree(CONF, conf)
    (conf.parent / "jobs").symlink_to(ROOT / "jobs")
    (conf / "sweep" / "sleep.yaml").write_text((CONF / "sweep" / "sleep.yaml").read_text().replace(
        "x: interval(0.0, 1.0)", "x: interval(0.5, 1.0)"))
    r = danlu_cli(["--config-dir", str(conf), "sweep", "job=sleep", "sweep=sleep", "scheduler=fifo",
                   "sweep.num_samples=2", "epochs=3", "epoch_s=0.05", "fail_at=tag(grid, choice(0,2))", "sweep.name=cli",
                   "cluster.num_cpus=2"], tmp_path)
    assert r.returncode == 2 and "sweep.space.x: interval(0.0, 1.0) -> interval(0.5, 1.0)" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(mlflow_runs(tmp_path / "mlflow.db", "cli")[2]) == 4


def test_a_trial_given_two_gpus_sees_exactly_those_two(ray_gpus, conf_dir, tmp_path):
    code, out = sweep(conf_dir, tmp_path, "twogpu", "job=sleep", "sweep=sleep", "scheduler=fifo", "resources=gpu",
                      "resources.gpu=2", "cluster.num_gpus=2", "sweep.num_samples=1", "epochs=2", "epoch_s=0.01")
    assert code == 0, out
    _, _, (child,) = mlflow_runs(tmp_path / "mlflow.db", "twogpu")
    t = child.data.tags
    assert sorted(t["danlu.cuda_visible_devices"].split(",")) == ["0", "1"]  # as Ray set it: both, nothing else
    assert sorted(t["danlu.gpu_ids"].split(",")) == ["0", "1"]
