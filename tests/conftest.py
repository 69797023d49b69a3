"""Shared fixtures. Integration tests share one local Ray (2 CPUs, 2 logical GPUs) per session."""

from __future__ import annotations

import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
# platform.processor() runs `uname -p` once and keeps it: importing MLflow asks for it. Asked here, before any test,
# so that a unit test's import of MLflow starts no process (unit_tests_start_no_process).
_ = platform.uname().processor
CONF = ROOT / "conf"
# Ray starts as many idle workers as a node has CPUs (a test's node declares up to 12, on 2 cores): a trial's
# actor starts its own worker anyway, so the tests' Rays (and the sweeps they start, which inherit this) prestart none
os.environ.setdefault("RAY_enable_worker_prestart", "0")


LAYERS = ("unit", "contract", "integration", "chaos")


def pytest_collection_modifyitems(config, items):
    """A test with no layer marker is a unit test; integration and chaos tests are also `slow`."""
    for item in items:
        layers = {m.name for m in item.iter_markers() if m.name in LAYERS}
        assert len(layers) <= 1, f"{item.nodeid}: one layer, not {sorted(layers)}"
        if not layers:
            item.add_marker(pytest.mark.unit)
        elif layers & {"integration", "chaos"}:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def unit_tests_start_no_process(request, monkeypatch):
    """A unit test starts no process, Ray's included (Ray starts its own through subprocess.Popen): the quick loop
    stays quick and in this process. One that needs to is marked integration."""
    if request.node.get_closest_marker("unit") is None:
        return
    assert "ray_gpus" not in request.fixturenames, "a unit test uses no Ray: mark it integration"

    def refused(*args, **kwargs):
        raise AssertionError("a unit test starts no process: mark it integration (tests/conftest.py)")

    import multiprocessing.process

    monkeypatch.setattr(subprocess.Popen, "__init__", refused)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refused)


@pytest.fixture(scope="session", autouse=True)
def no_checkpoint_folders_left():
    """Tests kill trials, some while they save: a killed trial's checkpoint folder in the temp folder is removed by
    a later trial process once it is stale (orchestrator/trial/trainable.py). The ones this session's dead trials left are
    removed at its end, so that a test run leaves nothing in /tmp."""
    import tempfile

    from orchestrator.trial.trainable import CKPT_PREFIX, writer_gone

    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob(CKPT_PREFIX + "*"))
    yield
    import shutil

    for path in set(tmp.glob(CKPT_PREFIX + "*")) - before:
        if writer_gone(path):
            shutil.rmtree(path, ignore_errors=True)


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


def stop_group(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 60) -> None:
    """Stop a process started with start_new_session=True and everything it started (its process group), by its
    pid, and wait for it."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=timeout)


def wait_for(cond, timeout=180, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """scripts/mlflow-server on a database of its own, dropped afterwards."""
    import psycopg2

    base = tmp_path_factory.mktemp("mlflow")
    db = f"danlu_test_{secrets.token_hex(4)}"
    port = free_port()
    log = base / "server.log"
    proc = subprocess.Popen([str(ROOT / "scripts" / "mlflow-server"), "--port", str(port), "--workers", "2",
                             "--backend-store-uri", f"postgresql://postgres@127.0.0.1:5432/{db}",
                             "--artifacts-destination", str(base / "artifacts")],
                            env={**os.environ, "PYTHON": sys.executable}, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        def up():
            try:
                return urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200
            except OSError:
                return proc.poll() is not None  # it died: stop waiting, the assertion below says so

        wait_for(up, timeout=120, what="mlflow server")
        assert proc.poll() is None, log.read_text()
        yield SimpleNamespace(uri=uri, log=log, db=db)
    finally:
        stop_group(proc)
        conn = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.close()
