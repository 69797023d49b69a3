"""Cluster operation with real parts on loopback: a Ray cluster of two nodes started with `ray start` (a head,
and a worker declaring 2 logical GPUs), token authentication on, an MLflow server (scripts/mlflow-server) on a
throwaway PostgreSQL database, and `danlu submit / status / logs / stop / list` run as the user runs them."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import ROOT, danlu_cli, free_port, wait_for

pytestmark = pytest.mark.integration

SLEEPY = ["job=sleep", "sweep=sleep", "scheduler=fifo", "checkpoint_state=true"]


def end_tree(proc: subprocess.Popen, grace: float = 20) -> None:
    """End a process we started and everything under it, by PID (`ray stop` would end every Ray here)."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    root.terminate()  # `ray start --block` stops its own processes on SIGTERM
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    proc.wait(timeout=10)


def ray_start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    agent_ports = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
                   "--runtime-env-agent-port"]  # fixed by default: two nodes on one machine would collide
    ports = [f"{flag}={free_port()}" for flag in agent_ports]
    return subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--node-ip-address=127.0.0.1",
                             "--disable-usage-stats", *ports, *args, "--block"], env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (4 CPUs) + worker (4 CPUs, 2 logical GPUs), token auth on with a token of this test's own."""
    import requests
    from ray.job_submission import JobSubmissionClient

    base = tmp_path_factory.mktemp("ray")
    token = secrets.token_hex(16)
    # short temp dirs of their own: the cluster's address file stays out of /tmp/ray (where an embedded ray.init
    # looks), and each node unpacks the jobs' working directory in its own place, as on separate machines
    temps = [tempfile.mkdtemp(prefix="dr", dir="/tmp") for _ in range(2)]
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    gcs, dash = free_port(), free_port()
    url = f"http://127.0.0.1:{dash}"
    headers = {"Authorization": f"Bearer {token}"}
    procs = [ray_start(["--head", f"--port={gcs}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
                        f"--ray-client-server-port={free_port()}", "--num-cpus=4", "--num-gpus=0",
                        f"--temp-dir={temps[0]}"], env, base / "head.log")]
    try:
        def up():
            try:
                JobSubmissionClient(url, headers=headers)
                return True
            except Exception:
                return False

        wait_for(up, timeout=120, what="the Ray head's Jobs API")
        procs.append(ray_start([f"--address=127.0.0.1:{gcs}", "--num-cpus=4", "--num-gpus=2", '--resources={"a100": 2}',
                                f"--temp-dir={temps[1]}"], env,
                               base / "worker.log"))
        def nodes() -> int:  # the state API over HTTP, with this cluster's token (not this process's own)
            answer = requests.get(f"{url}/api/v0/nodes", headers=headers, timeout=10).json()
            return sum(1 for n in answer["data"]["result"]["result"] if n["state"] == "ALIVE")

        wait_for(lambda: nodes() == 2, timeout=120, what="the worker node")
        client = JobSubmissionClient(url, headers=headers)
        yield SimpleNamespace(url=url, token=token, client=client, env={"RAY_AUTH_TOKEN": token, "RAY_ADDRESS": url})
        for job in client.list_jobs():  # whatever a failed test left running
            if not job.status.is_terminal():
                client.stop_job(job.submission_id)
    finally:
        for p in reversed(procs):
            end_tree(p)
        for t in temps:
            shutil.rmtree(t, ignore_errors=True)


def submit(cluster, tmp_path, name, *overrides, server=None) -> str:
    track = ["tracking=server", f"tracking.uri={server.uri}"] if server else []
    r = danlu_cli(["submit", *SLEEPY, f"sweep.name={name}", f"output_dir={tmp_path}/outputs", *track, *overrides],
                  tmp_path, env=cluster.env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return re.search(r" as (danlu-\S+)", r.stdout).group(1)


def wait_done(cluster, sweep_id, timeout=420, expect="SUCCEEDED"):
    """Wait for the sweep's supervisor to end; on another outcome than `expect`, fail with every job's logs."""
    wait_for(lambda: cluster.client.get_job_info(sweep_id).status.is_terminal(), timeout=timeout,
             what=f"sweep {sweep_id} to end")
    info = cluster.client.get_job_info(sweep_id)
    if info.status.value != expect:
        logs = {j.submission_id: cluster.client.get_job_logs(j.submission_id)[-4000:]
                for j in cluster.client.list_jobs() if j.submission_id.startswith(sweep_id)}
        raise AssertionError(f"{sweep_id}: {info.status.value}, not {expect}: {info.message}\n{logs}")
    return info


def server_runs(server, name):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("danlu")
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=1000) if r.data.tags.get("danlu.sweep") == name]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def assert_every_step_once(client, children, trials: int, steps: int):
    seen = [(r.data.tags.get("ray.trial_id"), r.info.status, r.data.tags.get("danlu.trial"),
             sorted(m.step for m in client.get_metric_history(r.info.run_id, "score"))) for r in children]
    assert len(children) == trials and all(r.info.status == "FINISHED" for r in children), seen
    assert len({r.data.tags["ray.trial_id"] for r in children}) == trials  # one run per trial
    for r in children:
        history = [m.step for m in client.get_metric_history(r.info.run_id, "score")]
        assert sorted(history) == list(range(1, steps + 1)), seen


def checkpoints(storage: Path) -> int:
    return sum(1 for _ in storage.glob("t*/checkpoint_*"))


def test_submit_status_logs_list_end_to_end_on_postgres(cluster, server, tmp_path):
    sweep_id = submit(cluster, tmp_path, "e2e", "sweep.num_samples=4", "epochs=8", "epoch_s=0.2", "resources=gpu",
                      "+resources.custom.a100=1", server=server)  # the worker node declares 2 GPUs and 2 "a100"
    statuses = []
    while not cluster.client.get_job_info(sweep_id).status.is_terminal():
        r = danlu_cli(["status", sweep_id], tmp_path, env=cluster.env, timeout=60)
        assert r.returncode == 0, r.stderr
        statuses.append(r.stdout)
        time.sleep(2)
    wait_done(cluster, sweep_id)
    r = danlu_cli(["status", sweep_id], tmp_path, env=cluster.env, timeout=60)
    assert f"danlu: sweep e2e ({sweep_id}): SUCCEEDED" in r.stdout, r.stdout
    assert "done 4" in r.stdout and "danlu: 4 trials: 4 completed" in r.stdout, r.stdout
    assert any("driver " + sweep_id + "-d0: RUNNING" in s for s in statuses), statuses
    logs = danlu_cli(["logs", sweep_id], tmp_path, env=cluster.env, timeout=60).stdout
    assert "danlu: sweep e2e: search random, 4 samples" in logs and "danlu: 4 trials: 4 completed" in logs, logs
    listed = danlu_cli(["list"], tmp_path, env=cluster.env, timeout=60).stdout
    assert re.search(rf"^{sweep_id}\s+e2e\s+SUCCEEDED\s+0\s", listed, re.M), listed

    client, (parent,), children = server_runs(server, "e2e")
    assert parent.info.status == "FINISHED" and parent.data.tags["danlu.submission_id"] == sweep_id
    assert_every_step_once(client, children, 4, 8)
    for r in children:  # resources=gpu: one whole logical GPU of the worker node each, as Ray set it
        t = r.data.tags
        assert t["danlu.cuda_visible_devices"] in ("0", "1") and t["danlu.cuda_visible_devices"] == t["danlu.gpu_ids"]

    # the morning after, from the login node: an extension, submitted as a sweep is (its driver runs `danlu extend`)
    where = f"output_dir={tmp_path}/outputs"
    r = danlu_cli(["submit", "--extend", "e2e", "epochs=9", where], tmp_path, env=cluster.env, timeout=120)
    assert r.returncode == 2 and "epochs: 8 -> 9 (another fidelity" in r.stderr, r.stdout + r.stderr  # checked here
    r = danlu_cli(["submit", "--extend", "e2e", "sweep.num_samples=6", where], tmp_path, env=cluster.env, timeout=120)
    assert r.returncode == 0 and "submitted an extension of sweep e2e" in r.stdout, r.stdout + r.stderr
    ext_id = re.search(r" as (danlu-\S+)", r.stdout).group(1)
    wait_done(cluster, ext_id)
    logs = danlu_cli(["logs", ext_id], tmp_path, env=cluster.env, timeout=60).stdout
    assert "extension 1 of e2e: 2 new configuration(s)" in logs, logs
    client, (parent,), children = server_runs(server, "e2e")
    assert parent.info.status == "FINISHED" and parent.data.tags["danlu.extensions"] == "1"
    assert_every_step_once(client, children, 6, 8)
    # the same submission again (a requeued batch job's): taken, and its driver has nothing to run
    again = submit(cluster, tmp_path, "ignored", "--extend", "e2e", "sweep.num_samples=6")
    wait_done(cluster, again)
    assert "nothing to run" in danlu_cli(["logs", again], tmp_path, env=cluster.env, timeout=60).stdout
    assert len(server_runs(server, "e2e")[2]) == 6


def test_a_killed_driver_is_resubmitted_and_keeps_its_runs(cluster, server, tmp_path):
    sweep_id = submit(cluster, tmp_path, "phoenix", "sweep.num_samples=4", "epochs=30", "epoch_s=0.25",
                      server=server)
    follow = subprocess.Popen([sys.executable, "-m", "orchestrator", "logs", sweep_id, "--follow"], cwd=tmp_path,
                              env={**os.environ, **cluster.env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    wait_for(lambda: checkpoints(tmp_path / "outputs" / "phoenix") >= 4, what="checkpoints")
    first = cluster.client.get_job_info(f"{sweep_id}-d0")
    assert first.driver_info is not None, first
    os.kill(int(first.driver_info.pid), signal.SIGKILL)  # the driver dies (as in an OOM kill)
    killed_ms = time.time() * 1000
    wait_done(cluster, sweep_id)
    assert cluster.client.get_job_info(f"{sweep_id}-d0").status.value == "FAILED"
    assert cluster.client.get_job_info(f"{sweep_id}-d1").status.value == "SUCCEEDED"
    client, (parent,), children = server_runs(server, "phoenix")
    tags = parent.data.tags
    assert parent.info.status == "FINISHED" and tags["danlu.resubmissions"] == "1" and tags["danlu.resumes"] == "1"
    assert f"{sweep_id}-d0 FAILED" in tags["danlu.resubmission1"], tags
    assert_every_step_once(client, children, 4, 30)  # the same 4 runs, every step once
    again = cluster.client.get_job_info(f"{sweep_id}-d1").start_time - killed_ms
    first_new = min(m.timestamp for r in children for m in client.get_metric_history(r.info.run_id, "score")
                    if m.timestamp > killed_ms) - killed_ms
    print(f"driver killed: resubmitted after {again / 1000:.1f} s, first new step reported after {first_new / 1000:.1f} s")
    followed, _ = follow.communicate(timeout=120)  # --follow went on across the resubmission, and ended with it
    assert f"--- resubmitted as {sweep_id}-d1 ---" in followed and "danlu: resuming phoenix" in followed, followed
    assert "danlu: review it in MLflow's UI (at http://" in followed, followed
    assert followed.rstrip().splitlines()[-1].startswith("  report: http://"), followed  # the summary's last line


def test_a_users_stop_is_never_undone(cluster, server, tmp_path):
    sweep_id = submit(cluster, tmp_path, "halt", "sweep.num_samples=2", "epochs=400", "epoch_s=0.25", server=server)
    storage = tmp_path / "outputs" / "halt"
    wait_for(lambda: checkpoints(storage) >= 2, what="checkpoints")
    r = danlu_cli(["stop", sweep_id], tmp_path, env=cluster.env, timeout=300)
    assert r.returncode == 0 and "stopped sweep halt" in r.stdout, r.stdout + r.stderr
    assert cluster.client.get_job_info(sweep_id).status.value == "STOPPED"
    assert cluster.client.get_job_info(f"{sweep_id}-d0").status.value == "STOPPED"
    # the supervisor is STOPPED (terminal): nothing is left that could resubmit the driver
    jobs = sorted(j.submission_id for j in cluster.client.list_jobs() if j.submission_id.startswith(sweep_id))
    assert jobs == [sweep_id, f"{sweep_id}-d0"]  # nothing was resubmitted
    logs = danlu_cli(["logs", sweep_id], tmp_path, env=cluster.env).stdout
    assert "interrupted; Ray's state is saved" in logs, logs  # the driver stopped gracefully, resumable
    _, (parent,), children = server_runs(server, "halt")
    assert parent.info.status == "KILLED" and not any(r.info.status == "RUNNING" for r in children)
    assert (storage / "tuner.pkl").exists()


def test_the_token_is_required_and_checked(cluster, tmp_path):
    bare = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    args = ["submit", *SLEEPY, "sweep.name=noauth", f"output_dir={tmp_path}/outputs", "--address", cluster.url]
    r = subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=ROOT, capture_output=True, text=True,
                       env={**bare, "HOME": str(tmp_path)}, timeout=60)  # no token anywhere
    assert r.returncode == 2 and "requires its authentication token" in r.stderr and "RAY_AUTH_TOKEN" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=ROOT, capture_output=True, text=True,
                       env={**bare, "HOME": str(tmp_path), "RAY_AUTH_TOKEN": "not-the-token"}, timeout=60)
    assert r.returncode == 2 and "rejected the token from RAY_AUTH_TOKEN" in r.stderr, r.stderr
    assert not [j for j in cluster.client.list_jobs() if (j.metadata or {}).get("danlu.sweep") == "noauth"]
    r = subprocess.run([sys.executable, "-m", "orchestrator", "list", "--address", cluster.url], cwd=ROOT,
                       capture_output=True, text=True, env={**bare, "HOME": str(tmp_path), **cluster.env}, timeout=60)
    assert r.returncode == 0, r.stderr  # with it, the cluster answers


def test_a_submission_is_made_once_whatever_the_answers(cluster):
    """danlu's submissions (the sweep's supervisor, its drivers) are tried again while the cluster cannot take them
    yet (a head just started has no job agent for a few seconds: seen under the Slurm recipe); a try that seemed
    to fail but went through is found by its id, not submitted twice."""
    from orchestrator.remote.cluster_client import submit_job

    said, job = [], f"danlu-once-{secrets.token_hex(3)}"
    for _ in range(2):
        submit_job(cluster.client, said.append, entrypoint="echo once", submission_id=job)
    assert [j.submission_id for j in cluster.client.list_jobs()].count(job) == 1 and not said, said
    wait_for(lambda: cluster.client.get_job_info(job).status.is_terminal(), timeout=120, what="the job to end")
    assert cluster.client.get_job_info(job).status.value == "SUCCEEDED"


def test_a_trial_larger_than_every_node_is_refused_before_launch(cluster, tmp_path):
    r = danlu_cli(["submit", *SLEEPY, "sweep.name=huge", f"output_dir={tmp_path}/outputs", "resources=gpu",
                   "resources.gpu=4"], tmp_path, env=cluster.env, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "asks for CPU=1, GPU=4, but the largest node" in r.stderr and "offers CPU=4, GPU=2" in r.stderr, r.stderr
    r = danlu_cli(["submit", *SLEEPY, "sweep.name=huge", f"output_dir={tmp_path}/outputs", "+resources.custom.a100=3"],
                  tmp_path, env=cluster.env, timeout=120)
    assert r.returncode == 2 and "asks for CPU=1, a100=3" in r.stderr and "offers CPU=4, a100=2" in r.stderr, r.stderr
    assert not [j for j in cluster.client.list_jobs() if (j.metadata or {}).get("danlu.sweep") == "huge"]


def test_eight_concurrent_trials_log_every_metric_once_through_postgres(cluster, server, tmp_path):
    requests_before = server.log.read_text().count("/api/2.0/mlflow/runs/log-batch")
    sweep_id = submit(cluster, tmp_path, "crowd", "sweep.num_samples=8", "epochs=50", "epoch_s=0.4", server=server)
    wait_done(cluster, sweep_id)
    client, (parent,), children = server_runs(server, "crowd")
    assert_every_step_once(client, children, 8, 50)
    # all 8 ran at once (8 CPUs over the two nodes, 1 per trial): the most runs open at one moment
    events = sorted([(r.info.start_time, 1) for r in children] + [(r.info.end_time, -1) for r in children])
    running, most = 0, 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    assert most == 8, events
    logs = danlu_cli(["logs", sweep_id], tmp_path, env=cluster.env).stdout
    assert "database is locked" not in logs and "database is locked" not in server.log.read_text()
    assert "not logged to MLflow" not in logs and "refused" not in logs
    # batched: the driver sent the 8 x 50 steps (and the runs' params and tags) in fewer requests than steps
    batches = server.log.read_text().count("/api/2.0/mlflow/runs/log-batch") - requests_before
    print(f"log-batch requests for 400 steps of 8 trials: {batches}")
    assert 0 < batches < 8 * 50 / 2, batches


def test_plan_and_preflight_read_the_clusters_nodes(cluster, tmp_path):
    # the worker offers 4 CPUs and 2 logical GPUs, the head none: 2 one-GPU trials at once; 4 quarter-GPU ones
    # with a CPU each (the CPUs bind), 8 with half a CPU each
    r = danlu_cli(["plan", *SLEEPY, "resources=gpu", "--address", cluster.url], tmp_path, env=cluster.env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"fit: 2 trial(s) at once on the cluster at {cluster.url} (2 node(s))" in r.stdout, r.stdout
    for cpu, n in ((1, 4), (0.5, 8)):
        r = danlu_cli(["plan", *SLEEPY, "resources=quarter_gpu", f"resources.cpu={cpu}", "--address", cluster.url],
                      tmp_path, env=cluster.env, timeout=120)
        assert r.returncode == 0 and f"fit: {n} trial(s) at once on the cluster" in r.stdout, r.stdout
    r = danlu_cli(["preflight", "--only", "reach", *SLEEPY, "cluster=remote", f"cluster.address={cluster.url}"],
                  tmp_path, env=cluster.env, timeout=120)
    assert r.returncode == 0 and f"Ray at {cluster.url}: 2 node(s)" in r.stdout, r.stdout + r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing launched, nothing written
