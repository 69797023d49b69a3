"""The cluster recipes in scripts/: the KubeRay RayJob's sweep is a valid one, and the Slurm batch script
brings up a Ray cluster and runs a sweep on it (here with stand-ins for `srun` and `scontrol` that run the
command on this machine: everything else in the script runs as written)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CONF, ROOT, mlflow_runs

FAKE_SRUN = """#!/bin/bash
# srun stand-in: drop srun's own options, run the command here
while [ $# -gt 0 ]; do case "$1" in -w|-N|-n) shift 2 ;; -*) shift ;; *) break ;; esac; done
exec "$@"
"""
FAKE_SCONTROL = """#!/bin/bash
[ "$1 $2" = "show hostnames" ] && echo localhost
"""


def test_the_kuberay_rayjob_runs_a_valid_sweep():
    import yaml

    from orchestrator.plan import plan

    job = yaml.safe_load((ROOT / "scripts" / "kuberay" / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["spec"]["rayClusterSpec"]["authOptions"]["mode"] == "token"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "orchestrator"] and argv[argv.index("--config-dir") + 1] == "/app/conf"
    overrides = argv[argv.index("sweep") + 1:]
    p = plan(overrides, CONF)  # every check danlu makes before launching
    assert p.cfg.cluster.address == "auto" and p.tracking_uri.startswith("http://")
    assert p.cfg.resources.gpu == 0.25 and str(p.storage_dir) == "/shared/danlu/digits-lr-night"


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


@pytest.mark.slow
def test_the_slurm_script_starts_a_cluster_and_runs_a_sweep_on_it(tmp_path):
    # a job id whose port block (the script's formula) is free here
    job_id = next(j for j in range(424200, 424240)
                  if all(_free(20000 + (j % 40) * 1000 + k) for k in (0, 1, 2, *range(10, 16))))
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    submit_dir = tmp_path / "project"
    submit_dir.mkdir()
    for part in ("conf", "jobs"):
        (submit_dir / part).symlink_to(ROOT / part)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PATH=f"{fake}:{Path(sys.executable).parent}:{os.environ['PATH']}", HOME=str(tmp_path),
               SLURM_JOB_ID=str(job_id), SLURM_JOB_NODELIST="localhost", SLURM_SUBMIT_DIR=str(submit_dir),
               SLURM_CPUS_PER_TASK="2", SLURM_GPUS_PER_TASK="0", DANLU_VENV=str(Path(sys.executable).parents[1]))
    sweep = ["job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.num_samples=2", "epochs=4", "epoch_s=0.1",
             "sweep.name=slurm", f"output_dir={tmp_path}/outputs", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "slurm" / "ray-cluster.sbatch"), *sweep],
                            cwd=submit_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=420)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything the script's own clean-up left behind
        except ProcessLookupError:
            pass
        shutil.rmtree(f"/tmp/ray-{os.environ.get('USER') or 'root'}-{job_id}", ignore_errors=True)
    assert proc.returncode == 0, out
    assert "danlu-ray: up" in out and "danlu: submitted sweep slurm" in out, out
    assert "danlu: 2 trials: 2 completed" in out and "SUCCEEDED" in out, out
    env_file = (submit_dir / f"danlu-ray-{job_id}.env").read_text()
    assert f"RAY_ADDRESS=http://127.0.0.1:{20000 + (job_id % 40) * 1000 + 1}" in env_file
    token = tmp_path / ".ray" / f"danlu-{job_id}.token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text().strip()) == 64
    _, (parent,), children = mlflow_runs(tmp_path / "mlflow.db", "slurm")
    assert parent.info.status == "FINISHED" and len(children) == 2
