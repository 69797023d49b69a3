"""The CLI as users meet it: fast help, and one clear message with exit 2 for every input mistake."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import CONF, danlu_cli

PROBE = """
import sys
from orchestrator.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
heavy = sorted(m for m in ("ray", "torch", "mlflow", "sklearn") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(rc)
"""


def probe(args, cwd):
    return subprocess.run([sys.executable, "-c", PROBE, "--config-dir", str(CONF), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.integration
def test_help_imports_nothing_heavy(tmp_path):
    r = probe(["--help"], tmp_path)
    assert r.returncode == 0 and "danlu sweep" in r.stdout
    assert "HEAVY=\n" in r.stderr
    r = subprocess.run([sys.executable, "-m", "orchestrator", "sweep", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--verbose" in r.stdout and "search=optuna" in r.stdout


@pytest.mark.integration
@pytest.mark.parametrize(
    "args, words",
    [
        (["sweep", "lrr=0.1"], ["Unknown config key 'lrr'", "Did you mean: lr"]),
        (["sweep", "lrr=0.1,0.2"], ["Unknown config key 'lrr'"]),
        (["sweep", "job/model=resnet"], ["'resnet'", "job/model", "cnn, mlp"]),
        (["sweep", "job/model=mlp,resnet"], ["resnet", "valid options: cnn, mlp"]),
        (["sweep", "lr=interval(0.1,"], ["Malformed override", "lr=interval(0.1,"]),
        (["sweep", "lr=interval(0.5,0.1)"], ["sweep.space.lr", "low must be below high", "low=0.5, high=0.1"]),
        (["sweep", "resources=gpu"], ["resources", "GPU=1", "largest node (local machine) offers", "GPU=0"]),
        (["sweep", "resources.gpu=1.5"], ["resources.gpu=1.5", "whole GPUs"]),
        (["sweep", "+resources.custom.a100=1"], ["asks for CPU=1, a100=1", "(local machine) offers CPU=", "a100=0"]),
        (["sweep", "+resources.custom.a100=-1"], ["resources.custom.a100=-1", "a number >= 0"]),
        (["sweep", "scheduler.reduction_factor=1"], ["scheduler.reduction_factor=1"]),
        (["sweep", "lr=range(1,10,0)"], ["sweep.space.lr", "range(1,10,0)", "no valid values"]),
        (["sweep", "output_dir=/proc/x"], ["output_dir=/proc/x", "cannot be created"]),
        (["sweep", "lr=abc"], ["lr='abc'", "lr takes a number", "default is"]),
        (["sweep", "epochs=2.5"], ["epochs=2.5", "takes an integer"]),
        (["sweep", "lr=choice(0.1,abc)"], ["sweep.space.lr='abc'", "takes a number"]),
        (["sweep", "batch_size=interval(16.0,64.0)"], ["sweep.space.batch_size", "int(interval(16.0,64.0))"]),
        (["sweep", "sweep.search_seed=-3"], ["sweep.search_seed=-3", "integer >= 0"]),
        (["sweep", "tracking.uri=ftp://nowhere/x"], ["tracking.uri=ftp://nowhere/x", "valid stores are sqlite"]),
        (["sweep", "tracking.uri=sqlite:////proc/nope/m.db"], ["tracking.uri=sqlite:////proc/nope/m.db", "does not exist"]),
        (["sweep", "cluster.address=ray://head:10001"], ["cluster.address=ray://head:10001", "Ray Client"]),
        (["sweep", "search=bayes"], ["Unknown option 'bayes'", "config group 'search'", "grid, hyperopt, optuna, random"]),
        (["sweep", "search=grid"], ["sweep.space.lr", "search=grid needs a list of values", "interval has no grid"]),
        (["sweep", "search=optuna", "search.max_concurrent=0"], ["search.max_concurrent=0", "integer >= 1"]),
        (["sweep", "search.max_concurrent=-2"], ["search.max_concurrent=-2", "integer >= 1"]),
        (["sweep", "search=optuna", "search.sampler=hyperopt"], ["search.sampler=hyperopt", "tpe, gp, cmaes"]),
        (["sweep", "job=sleep", "sweep=sleep", "search=optuna", "x=0.5"], ["sweep.space: empty", "search=optuna"]),
        (["run", "lr=0.1,0.2"], ["danlu run takes plain values", "danlu sweep"]),
        (["sweep", "+resources.memory=268435456"], ["resources.memory", "not a setting of resources", "cpu, gpu, memory_mb, custom"]),
        (["sweep", "resources.memory_mb=0"], ["resources.memory_mb=0", "a number >= 1"]),
        (["sweep", "sweep.seeds=[0,1,2]", "sweep.max_concurrent_trials=2"],
         ["sweep.max_concurrent_trials=2 is fewer than the 3 seeds", "at least 3"]),
        (["sweep", "resources.memory_mb=100000000"], ["memory_mb=100000000, but the largest node (local machine)"]),
        (["sweep", "failure.stall_s=soon"], ["failure.stall_s=soon", "auto: 10 x the trial's slowest step"]),
        (["sweep", "failure.retry_job_errors=-5"], ["failure.retry_job_errors=-5", "integer >= -1"]),
        (["sweep", "report.sections=[leaderboard,nope]"], ["report.sections=['leaderboard', 'nope']", "curves"]),
        (["sweep", "report.html_rows=abc"], ["report.html_rows", "an integer"]),
        (["sweep", "report.top_curves=-1"], ["report.top_curves=-1", "integer >= 0"]),
        (["sweep", "scheduler.name=hyperband"], ["scheduler.name=hyperband", "no such scheduler; valid: asha, fifo, median, pbt"]),
        (["sweep", "scheduler=pbt", "sweep.seeds=[0,1]"], ["sweep.seeds=[0, 1]: scheduler pbt runs one seed", "replicates"]),
        (["sweep", "scheduler=pbt", "search=optuna"], ["search: a searcher that learns", "search=random"]),
        (["sweep", "scheduler=pbt", "checkpoint.every=2", "scheduler.perturbation_interval=3"],
         ["scheduler.perturbation_interval=3 is not a multiple of checkpoint.every=2"]),
        (["sweep", "scheduler=pbt", "scheduler.mutate=[job/model]", "job/model=mlp,cnn"], ["scheduler.mutate: job/model"]),
        (["sweep", "search=arms", "lr=0.1,0.2", "batch_size=32,64,128"], ["search=arms zips", "lr has 2"]),
        (["compare", "batch_size=64"], ["arm B is missing"]),
        (["compare", "batch_size=64", "--vs", "batch_size=64"], ["the arms are the same"]),
        (["compare", "seed=1", "lr=0.1", "--vs", "seed=2"], ["seed= in an arm", "seeds are replicates"]),
        (["compare", "batch_size=64", "--vs", "batch_size=63", "--seeds", "0"], ["--seeds=0", "integer >= 1"]),
        (["compare", "batch_size=64,32", "--vs", "batch_size=63"], ["batch_size=64,32 in arm A", "one value per key"]),
        (["compare", "lrr=0.1", "--vs", "lrr=0.2"], ["Unknown config key 'lrr'"]),
        (["compare", "lr=abc", "--vs", "lr=0.1"], ["lr takes a number"]),
        (["report", "night"], ["no such MLflow store", "tracking.uri"]),
        (["rerun", "abc123"], ["no such MLflow store", "tracking.uri"]),  # read, never made empty by reading
        (["plan", "--address", "http://127.0.0.1:1"], ["--address http://127.0.0.1:1: nothing answers there"]),
        # submit checks the sweep before it contacts the cluster, then the cluster's address
        (["submit", "lrr=0.1", "--address", "http://127.0.0.1:1"], ["Unknown config key 'lrr'"]),
        (["submit", "submit.resubmits=-1", "--address", "http://127.0.0.1:1"], ["submit.resubmits=-1"]),
        (["submit", "--address", "auto"], ["--address auto", "http://HEAD:8265"]),
        (["submit", "--address", "http://127.0.0.1:1"], ["--address http://127.0.0.1:1: nothing answers there"]),
        (["status", "--address", "http://127.0.0.1:1"], ["nothing answers there", "Is the cluster up"]),
    ],
)
def test_bad_input_exits_2_with_one_message_and_nothing_launched(tmp_path, args, words):
    r = probe(args, tmp_path)
    assert r.returncode == 2, r.stderr
    err = r.stderr.replace("HEAVY=\n", "")
    assert err.startswith("danlu: error: ") and err.count("\n") == 1, err  # one paragraph, no traceback
    for w in words:
        assert w in err
    assert "HEAVY=\n" in r.stderr  # no Ray (nor torch, MLflow) even imported, let alone started
    assert list(tmp_path.iterdir()) == []  # no outputs/, no mlflow.db


@pytest.mark.integration
def test_a_cluster_address_that_never_answers_fails_within_seconds(tmp_path):
    import socket
    import time

    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        r = probe(["list", "--address", address], tmp_path)
        took = time.monotonic() - start
    assert r.returncode == 2 and f"--address {address}: nothing answers there" in r.stderr, r.stderr
    assert took < 30, took  # a clear error, not a hang


@pytest.mark.integration
def test_a_sweeps_cluster_address_where_nothing_listens_is_one_message_and_no_run(tmp_path):
    from tests.conftest import danlu_cli, free_port, mlflow_runs

    address = f"127.0.0.1:{free_port()}"
    r = danlu_cli(["sweep", "--no-preflight", "job=sleep", "sweep=sleep", f"cluster.address={address}"], tmp_path,
                  timeout=120)
    assert r.returncode == 2 and f"danlu: error: cluster.address={address}: nothing answers there" in r.stderr, \
        r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "mlflow.db").exists() or mlflow_runs(tmp_path / "mlflow.db")[1:] == ([], [])


@pytest.mark.integration
def test_missing_config_dir(tmp_path):
    r = subprocess.run([sys.executable, "-m", "orchestrator", "--config-dir", str(tmp_path / "nope"), "run"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and "no such directory" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "orchestrator", "run"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and "No conf/ directory" in r.stderr and "danlu init" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "orchestrator", "--config-dir", str(tmp_path), "run"], cwd=tmp_path,
                       capture_output=True, text=True)  # a conf/ with nothing of the user's: no job to run
    assert r.returncode == 2 and "job: no job chosen" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.integration
def test_run_prints_config(tmp_path):
    r = danlu_cli(["run", "--cfg", "job/model=cnn", "lr=0.3"], tmp_path)
    assert r.returncode == 0 and "name: cnn" in r.stdout and "lr: 0.3" in r.stdout


@pytest.mark.integration
def test_run_one_trial_in_process(tmp_path):
    r = danlu_cli(["run", "epochs=2"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "step    2" in r.stdout and "done: 2 reports" in r.stdout
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.integration
def test_resume_of_an_unknown_sweep(tmp_path):
    r = probe(["resume", "nosuch"], tmp_path)
    assert r.returncode == 2 and "no sweep of that name under outputs/" in r.stderr
    r = probe(["resume", "nosuch", "lr=0.1"], tmp_path)
    assert r.returncode == 2 and "takes only output_dir" in r.stderr
