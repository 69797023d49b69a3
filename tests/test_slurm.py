"""The Slurm recipe (scripts/slurm/ray-cluster.sbatch) on a real Slurm: munge, slurmctld and slurmd running here
(scripts/slurm/local-slurm), jobs submitted with sbatch, requeued with scontrol, cut by their time limit, cancelled
with scancel. The sweep inside runs on the Ray cluster the job starts (srun), and is followed through the Ray Jobs
API with the job's token, as from a login node."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, mlflow_runs, wait_for

pytestmark = pytest.mark.chaos
RECIPE = ROOT / "scripts" / "slurm" / "ray-cluster.sbatch"
LOCAL_SLURM = ROOT / "scripts" / "slurm" / "local-slurm"
ONE_NODE = ["--nodes=1", "--cpus-per-task=2", "--gpus-per-task=0"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm on this machine for the module's tests, stopped (by its PIDs) afterwards."""
    if not shutil.which("slurmctld") or not shutil.which("munged"):
        if os.environ.get("CI"):
            pytest.fail("Slurm is missing: .ci/run installs Debian's slurmctld, slurmd, slurm-client and munge")
        pytest.skip("no Slurm here (apt-get install slurmctld slurmd slurm-client munge; .ci/run does)")
    base = tmp_path_factory.mktemp("slurm")
    r = subprocess.run([str(LOCAL_SLURM), "start", str(base)], capture_output=True, text=True, timeout=120)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        yield {"SLURM_CONF": str(base / "slurm.conf")}
    finally:
        subprocess.run([str(LOCAL_SLURM), "stop", str(base)], capture_output=True, timeout=180)


def _env(slurm, home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_", "DANLU_"))}
    env.update(slurm, HOME=str(home), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               DANLU_VENV=str(Path(sys.executable).parents[1]), **extra)
    return env


def _project(tmp_path: Path) -> Path:
    """A user's project folder: conf/ and jobs/, where sbatch is run (its output and env files land here)."""
    proj = tmp_path / "project"
    proj.mkdir()
    for part in ("conf", "jobs"):
        (proj / part).symlink_to(ROOT / part)
    return proj


def _sbatch(env, proj: Path, options: list[str], sweep: list[str]) -> str:
    r = subprocess.run(["sbatch", "--parsable", *ONE_NODE, *options, str(RECIPE), *sweep], cwd=proj, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip().split(";")[0]


def _job(env, job: str) -> dict[str, str]:
    """`scontrol show job` as a dict (JobState, Restarts, ...)."""
    r = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True, timeout=30)
    return dict(kv.split("=", 1) for kv in r.stdout.split() if "=" in kv)


def _log(proj: Path, job: str) -> str:
    path = proj / f"danlu-ray-{job}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _trials_running(proj: Path, job: str, allocation: int) -> bool:
    """The job's `allocation`-th sweep submission has trials that reported (its progress line names t000@3...)."""
    parts = _log(proj, job).split("danlu: submitted sweep ")
    return len(parts) > allocation and re.search(r"running [1-9]\d* \(t\d+@\d+", parts[allocation]) is not None


def _ended(env, job: str) -> bool:
    return _job(env, job).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")


def _steps_once(client, children, epochs: int) -> None:
    for c in children:
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "score")]
        assert sorted(steps) == list(range(1, epochs + 1)), (c.info.run_name, sorted(steps))


def _redone(children) -> list[tuple[str, int, float]]:
    """(trial, steps, seconds) of every redo: the work lost by an allocation's end, done again."""
    out = []
    for c in children:
        for k, v in c.data.tags.items():
            if k.startswith("danlu.redone."):
                n, s = v.split()
                out.append((c.data.tags["danlu.trial"], int(n), float(s)))
    return out


def _cleanup(job: str) -> None:
    shutil.rmtree(f"/tmp/ray-{os.environ.get('USER') or 'root'}-{job}", ignore_errors=True)


def _stop(env, job: str) -> None:
    """Whatever a failed test left running: cancel the job (Slurm ends its processes)."""
    if not _ended(env, job):
        subprocess.run(["scancel", job], env=env, capture_output=True, timeout=30)
        wait_for(lambda: _ended(env, job), timeout=120, what=f"job {job} to end")
    _cleanup(job)


def test_a_sweep_survives_two_requeues_at_random_moments(slurm, tmp_path):
    rng = random.Random(19)
    proj, db, every, epochs = _project(tmp_path), tmp_path / "mlflow.db", 4, 24
    env = _env(slurm, tmp_path)
    sweep = ["job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.num_samples=4", f"epochs={epochs}", "epoch_s=0.5",
             "checkpoint_state=true", f"checkpoint.every={every}", "progress.every_s=1",
             f"output_dir={tmp_path}/outputs", f"tracking.uri=sqlite:///{db}"]
    job = _sbatch(env, proj, ["--time=30"], sweep)
    try:
        for allocation in (1, 2):  # requeue while trials run, at a seeded moment into their work
            wait_for(lambda a=allocation: _trials_running(proj, job, a), timeout=300,
                     what=f"trials running in allocation {allocation}")
            subprocess.run(["sleep", f"{rng.uniform(0, 4):.2f}"], check=True)
            r = subprocess.run(["scontrol", "requeue", job], env=env, capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
        wait_for(lambda: _ended(env, job), timeout=600, what="the requeued job to finish")
    finally:
        _stop(env, job)
    log, info = _log(proj, job), _job(env, job)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "2", (info, log[-3000:])
    assert "allocation 3 of job" in log and "(the previous one ended: preempted)" in log, log[-3000:]
    name = f"sleep-slurm{job}"
    client, (parent,), children = mlflow_runs(db, name)
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert all(c.info.status == "FINISHED" for c in children)
    _steps_once(client, children, epochs)
    tags = parent.data.tags
    assert (tags["danlu.slurm.allocations"], tags["danlu.slurm.preemptions"], tags["danlu.slurm.time_limits"]) == \
        ("3", "2", "0")
    cut = {k for c in children for k in c.data.tags if k.startswith("danlu.preempted.")}
    assert cut == {"danlu.preempted.2", "danlu.preempted.3"}, cut  # trials ran at both requeues
    assert not any(int(c.data.tags.get("danlu.retries", 0)) for c in children)  # not failures
    redone = _redone(children)
    assert all(n <= every for _, n, _ in redone), redone  # nothing lost beyond a checkpoint interval
    night = json.loads((tmp_path / "outputs" / name / "report" / "report.json").read_text())["night"]["slurm"]
    assert (night["allocations"], night["preemptions"], night["time_limits"]) == (3, 2, 0)
    assert night["work_lost"]["steps"] == sum(n for _, n, _ in redone)
    assert re.search(r"Slurm: 3 allocation\(s\) \(job \d+\); 2 ended by a preemption", log), log[-3000:]
    print(f"\nrequeue x2: work lost per preemption (trial, steps, seconds): {redone}")


def test_a_sweep_that_outlasts_its_time_limit_finishes_over_three_allocations(slurm, tmp_path):
    # 4 trials x 110 steps of 1 s on 2 CPUs: 440 trial-seconds. An allocation of two minutes (Slurm's time limits are
    # whole minutes), the warning 45 s before its end (Slurm sends it when it checks, every 30 s), the sweep stopped
    # with 20 s left: its trials have at most the first 100 s of an allocation, 200 trial-seconds, so no two
    # allocations can hold the work, whatever the load. Ray's start and the driver's restore take 13-20 s of them
    # here (25-35 s with the other tests beside it): 3 allocations, or 4. (With one-minute allocations the same
    # start-up left the trials 5-27 s of 40, and a loaded machine needed up to 11.)
    proj, db, every, epochs = _project(tmp_path), tmp_path / "mlflow.db", 2, 110
    env = _env(slurm, tmp_path, DANLU_STOP_MARGIN_S="20", DANLU_MAX_REQUEUES="10")
    sweep = ["job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.num_samples=4", f"epochs={epochs}", "epoch_s=1.0",
             "checkpoint_state=true", f"checkpoint.every={every}", "progress.every_s=1", "submit.stop_grace_s=20",
             f"output_dir={tmp_path}/outputs", f"tracking.uri=sqlite:///{db}"]
    job = _sbatch(env, proj, ["--time=2", "--signal=B:USR1@45"], sweep)
    try:
        wait_for(lambda: _ended(env, job), timeout=900, what="the job to finish over its allocations")
    finally:
        _stop(env, job)
    log, info = _log(proj, job), _job(env, job)
    allocations = int(info["Restarts"]) + 1
    assert info["JobState"] == "COMPLETED" and allocations >= 3, (info, log[-4000:])
    assert log.count("danlu-ray: requeueing job") == allocations - 1, log[-4000:]
    name = f"sleep-slurm{job}"
    client, (parent,), children = mlflow_runs(db, name)
    assert parent.info.status == "FINISHED" and len(children) == 4  # nothing duplicated
    assert all(c.info.status == "FINISHED" for c in children)
    _steps_once(client, children, epochs)
    tags = parent.data.tags
    assert (tags["danlu.slurm.allocations"], tags["danlu.slurm.time_limits"], tags["danlu.slurm.preemptions"]) == \
        (str(allocations), str(allocations - 1), "0")
    assert any(k.startswith("danlu.time_limited.") for c in children for k in c.data.tags)
    redone = _redone(children)
    assert all(n <= every for _, n, _ in redone), redone  # nothing lost beyond a checkpoint interval
    print(f"\ntime limit: {allocations} allocations; work lost (trial, steps, seconds): {redone}")


def test_scancel_is_not_requeued_and_the_sweep_resumes_by_hand_on_a_postgres_server(slurm, server, tmp_path):
    proj, epochs = _project(tmp_path), 60  # 30 s a trial: still running when the login node's checks are done
    env = _env(slurm, tmp_path)
    sweep = ["job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.num_samples=2", f"epochs={epochs}", "epoch_s=0.5",
             "checkpoint_state=true", "progress.every_s=1", f"output_dir={tmp_path}/outputs", "tracking=server",
             f"tracking.uri={server.uri}", "sweep.name=cancelled"]
    job = _sbatch(env, proj, ["--time=30"], sweep)
    try:
        wait_for(lambda: _trials_running(proj, job, 1), timeout=300, what="trials running")
        # the login node's view, from another directory, with the job's env file (its address and token)
        env_file = (proj / f"danlu-ray-{job}.env").read_text()
        login = {**env, **dict(re.findall(r"export (\w+)=(\S+)", env_file))}
        r = subprocess.run([sys.executable, "-m", "orchestrator", "status"], cwd=tmp_path, env=login,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "danlu: sweep cancelled" in r.stdout and "RUNNING" in r.stdout, r.stdout + r.stderr
        r = subprocess.run([sys.executable, "-m", "orchestrator", "logs"], cwd=tmp_path, env=login,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "danlu: MLflow http://" in r.stdout, r.stdout + r.stderr
        subprocess.run(["scancel", job], env=env, check=True, timeout=30)
        wait_for(lambda: _ended(env, job), timeout=120, what="the cancelled job to end")
    finally:
        _stop(env, job)
    info = _job(env, job)
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", info  # not requeued
    assert not (proj / f"danlu-ray-{job}.time-limits").exists()
    # by hand: the same arguments (its name included), a new job
    again = _sbatch(env, proj, ["--time=30"], sweep)
    try:
        wait_for(lambda: _ended(env, again), timeout=300, what="the resumed sweep's job")
    finally:
        _stop(env, again)
    assert _job(env, again)["JobState"] == "COMPLETED", _log(proj, again)[-3000:]
    assert "danlu: resuming cancelled" in _log(proj, again) or "danlu: restarting cancelled" in _log(proj, again)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("danlu")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("danlu.sweep") == "cancelled"]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 2
    _steps_once(client, children, epochs)
    assert parents[0].data.tags["danlu.slurm.jobs"] == f"{job},{again}"
    assert parents[0].data.tags["danlu.slurm.preemptions"] == "0"


def test_the_recipe_refuses_bad_input_inside_the_job(slurm, tmp_path):
    proj = _project(tmp_path)
    env = _env(slurm, tmp_path)
    job = _sbatch(env, proj, ["--time=5"], ["job=sleep", "sweep=sleep", "sweep.num_samples=zero",
                                            f"output_dir={tmp_path}/outputs"])
    try:
        wait_for(lambda: _ended(env, job), timeout=180, what="the job to end")
    finally:
        _stop(env, job)
    info, log = _job(env, job), _log(proj, job)
    assert info["JobState"] == "FAILED" and info["ExitCode"].startswith("2:"), (info, log[-2000:])
    assert "sweep.num_samples" in log and "Traceback" not in log, log[-2000:]
    assert not (tmp_path / "outputs").exists()
