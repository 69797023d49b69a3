"""An existing @hydra.main app swept through danlu's Hydra sweeper plugin (`-m hydra/sweeper=danlu`): its own conf
groups, reports per epoch through orchestrator.api; one MLflow parent and a child per trial, ASHA stops some, the
report is attached, Hydra's multirun folder holds each trial's output; a killed driver resumes with the same
command; a task function that never reports gives its return value; --cfg and bad input."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import shared_ray, stop_group, wait_for

pytestmark = pytest.mark.integration

APP = '''
import time

import os

import hydra
from hydra.core.hydra_config import HydraConfig
from orchestrator.api import report, restore


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg):
    state = restore() or {"epoch": 0, "acc": 0.0}
    acc = state["acc"]
    for epoch in range(state["epoch"] + 1, cfg.trainer.epochs + 1):
        time.sleep(cfg.trainer.epoch_s)
        acc += cfg.optim.lr * cfg.net.width / 100 + 0.001 * cfg.seed
        report(epoch, {"val_acc": acc, "loss": 1 - acc}, checkpoint={"epoch": epoch, "acc": acc})
    with open(os.path.join(HydraConfig.get().runtime.output_dir, "done.txt"), "w") as f:  # the job's own folder
        f.write(str(acc))
    return acc


if __name__ == "__main__":
    main()
'''

RETURNS = '''
import hydra


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg):
    return {"score": cfg.optim.lr * cfg.net.width}


if __name__ == "__main__":
    main()
'''

CONF = {
    "train.yaml": "defaults:\n  - net: small\n  - optim: sgd\n  - _self_\nseed: 0\ntrainer:\n  epochs: 9\n  epoch_s: 0.05\n"
                  "scheduler: cosine   # the app's own key named like danlu's group: never meets danlu's\n",
    "net/small.yaml": "width: 10\n",
    "net/large.yaml": "width: 30\n",
    "optim/sgd.yaml": "lr: 0.1\nmomentum: 0.9\n",
}


@pytest.fixture
def app(tmp_path):
    (tmp_path / "train.py").write_text(APP)
    (tmp_path / "returns.py").write_text(RETURNS)
    for rel, text in CONF.items():
        (tmp_path / "conf" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "conf" / rel).write_text(text)
    return tmp_path


SWEEP = ["-m", "hydra/sweeper=danlu", "hydra.sweeper.metric=val_acc", "hydra.sweeper.num_samples=6",
         "hydra.sweeper.seeds=[0,1]", "hydra.sweeper.epochs=9", "hydra.sweeper.search_seed=3",
         "hydra.sweeper.scheduler.grace_period=1", "optim.lr=interval(0.01, 0.3)", "net=small,large"]


def run(cwd: Path, script: str, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def shared() -> str:
    """An app's sweep on the test process's shared Ray of this machine's shape (tests/conftest.py shared_ray), as a
    `danlu sweep` of the other layers runs, instead of starting and stopping a Ray of its own; a sweep the test kills
    starts its own."""
    return f"hydra.sweeper.cluster.address={shared_ray(os.cpu_count() or 1, 0)}"


def runs_of(cwd: Path, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("danlu")
    runs = client.search_runs([exp.experiment_id], f"tags.`danlu.sweep` = '{name}'")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def ended(out: str) -> tuple[int, int, int, int]:
    m = re.search(r"danlu: (\d+) trials: (\d+) completed, (\d+) stopped early, (\d+) failed", out)
    assert m, out[-3000:]
    return tuple(int(x) for x in m.groups())


def test_an_app_sweeps_with_asha_mlflow_runs_report_and_hydra_folders(app):
    r = run(app, "train.py", *SWEEP, "hydra.sweeper.name=night", shared())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trials, completed, stopped, failed = ended(r.stdout)
    assert trials == 12 and failed == 0 and stopped >= 1 and completed >= 2  # ASHA stopped some early
    client, parents, children = runs_of(app, "night")
    assert len(parents) == 1 and len(children) == 12
    parent = parents[0]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.params.get("seed") for c in children} <= {"0", "1", None}
    steps = sorted(len(client.get_metric_history(c.info.run_id, "val_acc")) for c in children)
    assert steps[0] < 9 and steps[-1] == 9  # per-epoch reports: some stopped at a rung, some ran all 9
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/report.html" in arts and "report/report.json" in arts  # the morning report, attached
    assert "danlu: report for night: val_acc (max)" in r.stdout
    cfg = client.download_artifacts(children[0].info.run_id, "config.yaml", str(app))
    text = Path(cfg).read_text()
    assert "optim:" in text and "net:" in text and "scheduler: cosine" in text and "hydra:" not in text
    # Hydra's multirun folder: multirun.yaml, and each trial's own output folder with .hydra/ and what it wrote
    (sweep_dir,) = [p.parent for p in (app / "multirun").rglob("multirun.yaml")]
    jobs = [p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()]
    assert len(jobs) == 12 and sum((p / "done.txt").is_file() for p in jobs) == completed
    overrides = (jobs[0] / ".hydra" / "overrides.yaml").read_text()
    assert "optim.lr=" in overrides and "net=" in overrides and "++seed=" in overrides
    # the app, run by itself, is untouched by the API's calls: report does nothing, restore gives None
    alone = run(app, "train.py", "trainer.epoch_s=0")
    assert alone.returncode == 0, alone.stderr


def test_a_killed_driver_resumes_with_the_same_command(app):
    args = [*[a for a in SWEEP if "grace_period" not in a], "hydra.sweeper.name=killed", "trainer.epoch_s=0.4",
            "hydra.sweeper.scheduler.option=fifo"]
    log = open(app / "first.log", "w")
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=app, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    storage = app / "outputs" / "killed"
    try:  # a checkpoint of some trial is in Tune's storage: the kill lands mid-trial, with work to keep
        wait_for(lambda: any(storage.glob("t*/checkpoint_*")) or proc.poll() is not None, timeout=300,
                 what="a trial's first checkpoint")
        assert proc.poll() is None, (app / "first.log").read_text()[-3000:]
    finally:
        stop_group(proc, signal.SIGKILL)  # the driver and the Ray it started: a kill, by its process group
        log.close()
    wrong = subprocess.run([sys.executable, "-m", "orchestrator", "resume", "killed"], cwd=app, capture_output=True,
                           text=True, timeout=300)  # danlu resume cannot: it is the app's sweep, and says how
    assert wrong.returncode == 2 and "hydra.sweeper.name=killed" in wrong.stderr, wrong.stderr
    r = run(app, "train.py", *args, shared())  # where it runs is not part of the sweep: it resumes on another Ray
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "danlu: resuming killed" in r.stdout
    trials, completed, stopped, failed = ended(r.stdout)
    assert (trials, completed, failed) == (12, 12, 0)
    client, parents, children = runs_of(app, "killed")
    assert len(parents) == 1 and len(children) == 12  # the same runs: none lost, none doubled
    for c in children:
        assert c.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(c.info.run_id, "val_acc")] == list(range(1, 10))


def test_a_task_function_that_never_reports_gives_its_return_value(app):
    r = run(app, "returns.py", "-m", "hydra/sweeper=danlu", "hydra.sweeper.metric=score", "hydra.sweeper.name=ret",
            "hydra.sweeper.num_samples=4", "optim.lr=interval(0.01, 0.3)", shared())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "ASHA has nothing to stop early" in r.stdout  # said, not silent
    assert ended(r.stdout) == (4, 4, 0, 0)
    client, _, children = runs_of(app, "ret")
    values = sorted(c.data.metrics["score"] for c in children)
    assert len(values) == 4 and all(0.1 <= v <= 3.0 for v in values)

    # the morning after: the app's own command grows it, as `danlu extend` grows a danlu sweep
    base = ["-m", "hydra/sweeper=danlu", "hydra.sweeper.metric=score", "hydra.sweeper.name=ret",
            "optim.lr=interval(0.01, 0.3)", shared()]
    r = run(app, "returns.py", *base, "hydra.sweeper.num_samples=6")  # without extend: refused, and says how
    assert r.returncode == 2 and "hydra.sweeper.extend=true" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run(app, "returns.py", *base, "hydra.sweeper.num_samples=6", "hydra.sweeper.extend=true", "net=large")
    assert r.returncode == 2 and "app.net.width: 10 -> 30" in r.stderr, r.stderr  # the app's own settings: refused
    assert len(runs_of(app, "ret")[2]) == 4
    r = run(app, "returns.py", *base, "hydra.sweeper.num_samples=6", "hydra.sweeper.extend=true")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "extension 1 of ret: 2 new configuration(s)" in r.stdout, r.stdout[-3000:]
    client, parents, children = runs_of(app, "ret")
    assert len(parents) == 1 and parents[0].data.tags["danlu.extensions"] == "1" and len(children) == 6
    assert len({c.data.tags["danlu.config_id"] for c in children}) == 6  # never one that ran
    wrong = subprocess.run([sys.executable, "-m", "orchestrator", "extend", "ret", "sweep.num_samples=8"], cwd=app,
                           capture_output=True, text=True, timeout=300)  # danlu extend says how instead
    assert wrong.returncode == 2 and "hydra.sweeper.extend=true" in wrong.stderr, wrong.stderr


def test_cfg_and_bad_input_launch_nothing(app):
    r = run(app, "train.py", "--cfg", "job", "hydra/sweeper=danlu")
    assert r.returncode == 0 and "trainer:" in r.stdout and "scheduler: cosine" in r.stdout
    r = run(app, "train.py", "hydra/sweeper=danlu", "--cfg", "hydra")
    assert r.returncode == 0 and "DanluSweeper" in r.stdout and "seed_key: seed" in r.stdout
    for args, words in [
        ([], "hydra.sweeper.metric: the metric"),
        (["hydra.sweeper.metric=val_acc", "optim.lrr=interval(0,1)"], "optim.lrr"),
        (["hydra.sweeper.metric=val_acc", "hydra.sweeper.scheduler.option=nope"], "Unknown option 'nope'"),
        (["hydra.sweeper.metric=val_acc", "hydra.sweeper.mode=up"], "sweep.mode=up"),
        (["hydra.sweeper.metric=val_acc", "hydra.sweeper.output_dir=/proc/nope"], "output_dir=/proc/nope"),
        (["hydra.sweeper.metric=val_acc", "hydra.sweeper.tracking.uri=http://127.0.0.1:1"], "does not answer"),
    ]:
        r = run(app, "train.py", "-m", "hydra/sweeper=danlu", *args)
        assert r.returncode == 2, (args, r.stdout[-2000:], r.stderr[-2000:])
        assert words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (app / "outputs").exists() and not (app / "mlflow.db").exists() and not (app / "multirun").exists()


def test_task_path_of_a_script_and_of_a_module(tmp_path):
    code = textwrap.dedent('''
        import sys
        from orchestrator.trial.hydra_app import task_path
        import pkg.app as m
        print(task_path(m.main))
    ''')
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "app.py").write_text("def main(cfg):\n    return 1\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert f"('pkg.app:main', '{tmp_path}')" in r.stdout
