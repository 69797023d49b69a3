"""Shared fixtures. Integration tests share one local Ray (2 CPUs, 2 logical GPUs) per session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@pytest.fixture(scope="session")
def conf_dir() -> Path:
    return CONF


@pytest.fixture(scope="session")
def ray_gpus():
    """A real local Ray declaring 2 logical GPUs; danlu uses it instead of starting its own."""
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def danlu_cli(args: list[str], cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `danlu` entry point (python -m orchestrator) in a subprocess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "orchestrator", "--config-dir", str(CONF), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def mlflow_runs(db: Path, sweep: str | None = None):
    """(parent, children) of a sweep in a sqlite store, via MLflow's own client."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("danlu")
    runs = client.search_runs([exp.experiment_id], max_results=5000) if exp else []
    if sweep is not None:
        runs = [r for r in runs if r.data.tags.get("danlu.sweep") == sweep]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout=180, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")
