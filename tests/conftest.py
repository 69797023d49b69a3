"""Shared fixtures. Integration tests share one local Ray (2 CPUs, 2 logical GPUs) per session."""

from __future__ import annotations

import contextlib
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

from tests.preloaded_cli import Preloaded

# pytest imports this file as `conftest` (tests/ has no __init__.py); test modules import it as `tests.conftest`
# or `conftest`: one module under both names, so that its state (the shared Rays, the chaos flag) is one
for _name in ("conftest", "tests.conftest"):
    sys.modules.setdefault(_name, sys.modules[__name__])
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
    """A test with no layer marker is a unit test; integration and chaos tests are also `slow`. Files run longest
    first (LONGEST), then the rest chaos, integration, contract, unit (each file's tests in their order): side by side
    (scripts/test, which keeps this order) the longest files, which mostly wait on Slurm, kills and sleeps, start
    first, not last."""
    rank: dict[str, int] = {}
    for item in items:
        layers = {m.name for m in item.iter_markers() if m.name in LAYERS}
        assert len(layers) <= 1, f"{item.nodeid}: one layer, not {sorted(layers)}"
        if not layers:
            item.add_marker(pytest.mark.unit)
        elif layers & {"integration", "chaos"}:
            item.add_marker(pytest.mark.slow)
        layer = LAYERS.index(next(iter(layers), "unit"))
        rank[item.fspath.strpath] = max(rank.get(item.fspath.strpath, 0), layer)
    # stable: a file's tests keep their order. Side by side (xdist hands a free process the next file), the longest
    # files first and the short ones last, so that the processes end together (LONGEST); Slurm's first of all: they
    # mostly wait on allocations and requeues, so the other files fill the CPUs meanwhile
    items.sort(key=lambda item: (_longest(item.fspath.basename), -rank[item.fspath.strpath]))


# The test files that take a minute or more side by side, longest first: their seconds in a fresh-clone run here
# (2026-12-07, 3 processes; docs/measurements.md). Handed out in this order the run's last minutes hold short files
# only; in layer order (chaos, then integration by name) one process ran test_ui and test_wheel alone for 80 s at
# the end. A file not named here follows them, in its layer's order.
LONGEST = ("test_slurm.py", "test_storage_faults.py", "test_resume.py", "test_report.py", "test_recovery.py",
           "test_cluster.py", "test_extend_faults.py", "test_search.py", "test_extend.py", "test_hydra_app.py",
           "test_wheel.py", "test_misbehaving.py", "test_sweep.py", "test_progress.py", "test_preflight.py",
           "test_seams.py", "test_ui.py")


def _longest(name: str) -> int:
    return LONGEST.index(name) if name in LONGEST else len(LONGEST)


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


_RAYS: dict[tuple[int, int], tuple] = {}  # (CPUs, logical GPUs) -> this test process's Ray of that shape, its temp dir


def shared_ray(cpus: int, gpus: int) -> str:
    """The GCS address of this test process's real Ray with `cpus` logical CPUs and `gpus` logical GPUs, started
    on first use and kept to the session's end (shared_rays_stopped). A sweep connects to it (cluster.address)
    instead of starting and stopping one of its own: 5 to 7 s of a small sweep's 12 here. Its temp dir is its own,
    so that its address file is not where `cluster.address=auto` looks."""
    if (cpus, gpus) not in _RAYS:
        import tempfile

        from ray.cluster_utils import Cluster

        temp = tempfile.mkdtemp(prefix="dt", dir="/tmp")  # short: Ray's socket paths have a length limit
        # without Ray's log monitor and autoscaler monitor: nothing here reads them (danlu's drivers take no worker
        # logs unless --verbose, and the shared Rays never scale), and idle they poll: ~30% of an idle Ray's CPU
        with _kv_kept():
            _RAYS[cpus, gpus] = Cluster(initialize_head=True, head_node_args={
                "num_cpus": cpus, "num_gpus": gpus, "include_dashboard": False, "temp_dir": temp,
                "include_log_monitor": False, "no_monitor": True}), temp
    return _RAYS[cpus, gpus][0].address


@contextlib.contextmanager
def _kv_kept():
    """This process's Ray internal-KV client as it was before: starting a head node here sets it to that node's
    GCS (and stopping one clears it), although this process hosts the Ray and is no driver of it. Left set, Tune's
    registry takes a trainable registered here later (a unit test's Experiment) as meant for a Ray and starts a
    local one to learn its job id; changed under a driver (ray_gpus), it would point that driver at another Ray."""
    from ray.experimental import internal_kv

    client = internal_kv.global_gcs_client
    try:
        yield
    finally:
        if client is None:
            internal_kv._internal_kv_reset()
        else:
            internal_kv._initialize_internal_kv(client)


PRELOADED = Preloaded()
PRELOAD = os.environ.get("DANLU_TEST_PRELOAD", "1") != "0"  # 0: every command in a process of its own (to compare)


@pytest.fixture(scope="session", autouse=True)
def preloaded_stopped():
    """This test process's preloader of danlu commands (danlu_cli), if it started one, ended with the session."""
    yield
    PRELOADED.stop()


@pytest.fixture(scope="session", autouse=True)
def shared_rays_stopped():
    """The shared Rays this test process started, stopped at its end (by the Cluster's own PIDs), their temp dirs
    (logs, sockets) removed. Kept for the session, not per test file: an idle Ray polls (3% of a core here), but a
    start costs 4-6 CPU-s and 5-10 s of a test's time: with a Ray per file, two whole runs here took 1,585 and 1,619 s, against 1,506 s before."""
    yield
    while _RAYS:
        _stop_shared(next(iter(_RAYS)))


@pytest.fixture(scope="module", autouse=True)
def rare_shared_rays_stopped():
    """A shared Ray of a shape only one test file asks for (12 CPUs for the lucky sweep) is stopped at that file's
    end, not kept idle (and polling) to the session's: the common shapes, this machine's CPUs and none or two GPUs,
    stay."""
    yield
    common = {(os.cpu_count() or 1, 0), (2, 0), (2, 2)}
    for shape in [s for s in _RAYS if s not in common]:
        _stop_shared(shape)


def _stop_shared(shape: tuple[int, int]) -> None:
    import shutil

    cluster, temp = _RAYS.pop(shape)
    with _kv_kept():
        cluster.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_gpus():
    """A real local Ray declaring 2 CPUs and 2 logical GPUs, which this process's in-process sweeps use (danlu
    uses a caller's Ray instead of starting its own), and the CLI's sweeps of that shape too."""
    import ray

    ray.init(address=shared_ray(2, 2), log_to_driver=False)
    yield
    ray.shutdown()


SHAPE = ("cluster.num_cpus=", "cluster.num_gpus=")


_CHAOS = [False]  # the running test is a chaos test (chaos_tests_start_their_own_ray)


@pytest.fixture(autouse=True)
def chaos_tests_start_their_own_ray(request):
    """A chaos test's sweeps that it kills (start_danlu) start and stop their own Ray, as a user's `danlu sweep` does
    on one machine: its kills land on the driver and the Ray it started, together. What runs to its end there (a
    resume, a reference sweep: danlu_cli) and the other layers' sweeps share one (on_shared_ray), as a sweep
    restored after its machine was lost runs on another Ray."""
    _CHAOS[0] = request.node.get_closest_marker("chaos") is not None
    yield
    _CHAOS[0] = False


def on_shared_ray(args: list[str], killed: bool = False) -> list[str]:
    """A sweep's arguments made to run on this process's shared Ray of the shape they ask (cluster.num_cpus,
    cluster.num_gpus; by default this machine's CPUs and no GPU, as an embedded Ray detects here). Left as they
    are: other commands, a chaos test's sweeps that it may kill (`killed`), and sweeps that name any other cluster
    setting (an address, custom resources)."""
    if not args or args[0] not in ("sweep", "compare", "extend") or (_CHAOS[0] and killed):
        return args
    shape = [a for a in args if a.startswith(SHAPE)]
    if any("cluster." in a for a in args if a not in shape):
        return args
    cpus = next((int(a.split("=")[1]) for a in shape if a.startswith(SHAPE[0])), os.cpu_count() or 1)
    gpus = next((int(a.split("=")[1]) for a in shape if a.startswith(SHAPE[1])), 0)
    where = f"cluster.address={shared_ray(cpus, gpus)}"
    if args[0] == "compare":  # overrides for both arms go after --set
        rest = [a for a in args if a not in shape]
        if "--set" in rest:
            i = rest.index("--set") + 1
            return [*rest[:i], where, *rest[i:]]
        return [*rest, "--set", where]
    rest = [a for a in args if a not in shape]
    first = next((i for i, a in enumerate(rest) if i and not a.startswith("-")), len(rest))
    end = next((i for i in range(first, len(rest)) if rest[i].startswith("-")), len(rest))
    return [*rest[:end], where, *rest[end:]]  # after the overrides the command starts with, among them


def without_preflight(args: list[str], preflight: bool = False) -> list[str]:
    """A `danlu sweep` with --no-preflight unless the test's subject is the preflight (`preflight`): the preflight runs
    the job once more in a process of its own and asks Ray for its nodes, 3-4 CPU-s of a small sweep's 14 here.
    Its own tests (test_preflight, the budget's, the CLI's refusals) ask for it."""
    if preflight or not args or args[0] != "sweep" or "--no-preflight" in args:
        return args
    return [args[0], "--no-preflight", *args[1:]]


def danlu_cli(args: list[str], cwd: Path, timeout: float = 600, env: dict | None = None,
              own_ray: bool | None = None, preflight: bool = False) -> subprocess.CompletedProcess:
    """Run the real `danlu` entry point (python -m orchestrator) in a subprocess: where it runs on a shared Ray in
    this process's environment, a fork of this process's preloader (tests/preloaded_cli.py: the same entry point,
    its imports made once, ~4 of a sweep driver's ~7 CPU-s). A sweep runs on this process's
    shared Ray of its shape (on_shared_ray) unless `own_ray`: then it starts and stops its own Ray, as a user's does.
    By default it does where an `env` of its own is given (the shared Ray's trials would not see it); `own_ray=False`
    where only the driver needs that env. Without its preflight unless `preflight` (without_preflight)."""
    args = without_preflight(args, preflight)
    if own_ray is None:
        own_ray = env is not None
    if not own_ray:
        args = on_shared_ray(args)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if not own_ray and env is None and PRELOAD:  # in the test process's environment: forked from its preloader
        done = PRELOADED.run(["--config-dir", str(CONF), *args], cwd, full_env, timeout)
        if done is not None:
            return done
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
