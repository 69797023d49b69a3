"""A researcher's own project: danlu init, danlu's groups from the package, the user's own group options, bad input
in the user's files (one line, exit 2, nothing created), and orchestrator.api outside and inside a trial."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.config.compose import compose, hydra_context
from orchestrator.errors import BadInput
from orchestrator.scaffold import init
from tests.test_cli import PROBE


def make(tmp_path: Path, *args, **kw) -> Path:
    out = io.StringIO()
    assert init(str(tmp_path), kw.get("job", "train"), kw.get("source"), None, None, out=out) == 0
    return out.getvalue()


def cli(args, cwd):
    """danlu in `cwd` (no --config-dir: the project's ./conf), with the heavy modules it imported."""
    return subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_init_writes_the_smallest_project_and_never_overwrites(tmp_path):
    said = make(tmp_path)
    for rel in ("conf/config.yaml", "conf/job/train.yaml", "conf/sweep/train.yaml", "jobs/train.py", "jobs/__init__.py"):
        assert (tmp_path / rel).is_file(), rel
        assert f"wrote {rel}" in said
    assert {p.name for p in (tmp_path / "conf").iterdir()} == {"config.yaml", "job", "sweep"}  # only what is theirs
    assert "danlu plan" in said and "danlu preflight" in said and "danlu sweep" in said
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(BadInput, match="never overwrites.*conf/job/train.yaml"):
        init(str(tmp_path), "train", None, None, None, out=io.StringIO())
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    said = make(tmp_path, job="second")  # a second job beside the first: config.yaml is kept
    assert "kept conf/config.yaml" in said and "job=second sweep=second" in said
    assert (tmp_path / "conf/config.yaml").read_bytes() == before[tmp_path / "conf/config.yaml"]
    with pytest.raises(BadInput, match="--job 2x"):
        init(str(tmp_path), "2x", None, None, None, out=io.StringIO())


@pytest.mark.integration
def test_an_initialised_project_composes_with_danlus_groups_and_runs_a_trial(tmp_path):
    make(tmp_path)
    from orchestrator.launch.plan import plan

    p = plan([], tmp_path / "conf", cwd=str(tmp_path))
    assert p.cfg.job.fn == "jobs.train:train" and p.cfg.sweep.metric == "loss" and p.cfg.sweep.mode == "min"
    assert p.cfg.scheduler.name == "asha" and p.cfg.tracking.uri == "sqlite:///mlflow.db"  # danlu's, from the package
    assert [prm.key for prm in p.space.params] == ["lr"] and list(p.space.seeds) == [0, 1, 2]
    r = subprocess.run([sys.executable, "-m", "orchestrator", "run", "epochs=3"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "done: 3 reports" in r.stdout and "loss=" in r.stdout


def test_group_choices_and_the_users_own_group_options(tmp_path):
    make(tmp_path)
    conf = tmp_path / "conf"
    (conf / "scheduler").mkdir()
    (conf / "scheduler" / "my_asha.yaml").write_text("name: asha\nmax_t: ${epochs}\ngrace_period: 1\nreduction_factor: 2\n")
    (conf / "tracking").mkdir()
    (conf / "tracking" / "local.yaml").write_text("uri: sqlite:///mine.db\nexperiment: mine\nflush_s: 1.0\nstore: mlflow\n")
    with hydra_context(conf):
        assert compose(["scheduler=my_asha"]).scheduler.reduction_factor == 2  # an option added to danlu's group
        assert compose(["scheduler=fifo"]).scheduler.name == "fifo"  # danlu's own options still there
        assert compose([]).tracking.uri == "sqlite:///mine.db"  # the project's file replaces danlu's
        cfg = compose(["sweep=none", "sweep.metric=loss"])  # danlu's sweep=none beside the project's sweeps
        assert dict(cfg.sweep.space) == {} and cfg.sweep.num_samples == 1
        with pytest.raises(BadInput, match="Unknown option 'nope' for config group 'scheduler'.*my_asha"):
            compose(["scheduler=nope"])


def test_job_and_sweep_on_the_command_line_without_a_config_yaml(tmp_path):
    make(tmp_path)
    (tmp_path / "conf" / "config.yaml").unlink()
    with hydra_context(tmp_path / "conf"):
        cfg = compose(["job=train", "sweep=train"])
    assert cfg.job.name == "train" and cfg.sweep.metric == "loss"


@pytest.mark.integration
@pytest.mark.parametrize("args, setup, words", [
    # a conf without the job group
    (["plan"], "nojob", ["job: no job chosen", "config.yaml", "jobs in", "train"]),
    (["plan", "job=train"], "nojob", ["job=train", "has no `job` entry", "- job: null"]),
    # an unknown group option
    (["plan", "scheduler=nope"], None, ["Unknown option 'nope' for config group 'scheduler'", "asha, fifo, median"]),
    (["plan", "job=nope"], None, ["Unknown option 'nope' for config group 'job'", "train"]),
    # job.fn: no module, no function, not callable
    (["sweep", "job.fn=jobs.nothere:train"], None, ["job.fn=jobs.nothere:train", "no module 'jobs.nothere'"]),
    (["sweep", "job.fn=jobs.train:nope"], None, ["job.fn=jobs.train:nope", "has no 'nope'", "jobs/train.py"]),
    (["sweep", "job.fn=jobs.train:random"], None, ["job.fn=jobs.train:random", "is a module, not a function"]),
    (["preflight", "job.fn=jobs.train:nope"], None, ["job.fn=jobs.train:nope", "has no 'nope'"]),
    # sweep.space not a mapping
    (["sweep", "sweep.space=5"], None, ["sweep.space=5", "a mapping of keys to sweep expressions"]),
    # a name too long for the filesystem
    (["sweep", "sweep.name=" + "n" * 10000], None, ["sweep.name=nnnn", "10000 bytes", "at most 200"]),
    # a negative epochs, named as epochs
    (["sweep", "epochs=-5"], None, ["epochs=-5", "an integer >= 1"]),
    # an old full config.yaml that chooses danlu's groups again
    (["plan"], "full", ["config group 'scheduler' is chosen twice", "override scheduler"]),
])
def test_bad_input_in_the_users_files_is_one_line_and_exit_2(tmp_path, args, setup, words):
    make(tmp_path)
    if setup == "nojob":
        (tmp_path / "conf" / "config.yaml").write_text("defaults:\n  - sweep: train\n")
    elif setup == "full":
        (tmp_path / "conf" / "config.yaml").write_text("defaults:\n  - job: train\n  - sweep: train\n"
                                                       "  - scheduler: asha\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "__pycache__" not in p.parts)
    r = cli(args, tmp_path)
    assert r.returncode == 2, r.stderr
    err = r.stderr.replace("HEAVY=\n", "")
    assert err.startswith("danlu: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    assert "HEAVY=\n" in r.stderr  # no Ray, torch or MLflow imported, let alone started
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "__pycache__" not in p.parts)
    assert after == before  # no outputs/, no mlflow.db, nothing half-written
    assert "scheduler.max_t" not in err  # named as the user typed it, not as ASHA reads it


@pytest.mark.integration
def test_init_from_an_existing_function_wraps_it(tmp_path):
    (tmp_path / "mylib.py").write_text(textwrap.dedent('''
        import random

        def fit(lr=0.1, width=4, name="mlp", decay=0.0):
            """The user's existing training function: its keyword arguments are its knobs."""
            return lr * width + random.random() * 1e-3
    '''))
    said = make(tmp_path, job="fit", source="mylib:fit")
    assert "wrote jobs/fit.py" in said
    job = (tmp_path / "conf/job/fit.yaml").read_text()
    assert "fn: jobs.fit:train" in job and "lr: 0.1" in job and "width: 4" in job and "name: mlp" in job
    assert "epochs: 1" in job and "grace_period: 1" in job  # one result a trial: a valid ASHA of one report
    assert "lr: tag(log, interval(0.01, 1))" in (tmp_path / "conf/sweep/fit.yaml").read_text()
    r = subprocess.run([sys.executable, "-m", "orchestrator", "run", "lr=0.5"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "done: 1 reports" in r.stdout and "result=2" in r.stdout  # its return value, lr * width, is the result
    r = cli(["plan"], tmp_path)  # what danlu sweep would launch: valid as written (in a process of its own: this
    assert r.returncode == 0, r.stderr  # one has imported another project's `jobs` package)
    assert "metric: result" in r.stdout and "schedule: asha (max_t=1, grace_period=1," in r.stdout
    with pytest.raises(BadInput, match="'required' has no plain default"):
        (tmp_path / "other.py").write_text("def go(required, lr=0.1):\n    return lr\n")
        init(str(tmp_path), "other", "other:go", None, None, out=io.StringIO())


def test_api_is_a_no_op_outside_a_trial_and_routes_inside_one():
    from orchestrator import api
    from orchestrator.trial.ctx import LocalContext

    assert not api.in_trial()
    api.report(1, {"acc": 0.5}, checkpoint={"w": 1})  # the app run by itself: nothing happens
    assert api.restore() is None
    ctx = LocalContext(metric="acc", stream=io.StringIO())
    with api.active(ctx) as seen:
        assert api.in_trial()
        api.report(1, {"acc": 0.5}, checkpoint={"w": 1})
        assert api.restore() == {"w": 1}
    assert seen.reports == 1 and ctx.history == [(1, {"acc": 0.5})] and not api.in_trial()

    def task(cfg):
        return 0.75

    def job(cfg, ctx):
        ctx.report(1, {"acc": 0.25})

    assert api.takes_config_only(task) and not api.takes_config_only(job)
    from omegaconf import OmegaConf

    from orchestrator.trial.trainable import call_job

    cfg = OmegaConf.create({"sweep": {"metric": "acc"}})
    ctx = LocalContext(metric="acc", stream=io.StringIO())
    call_job(task, cfg, ctx)
    assert ctx.history == [(1, {"acc": 0.75})]  # a task function's return value is its one result
    with pytest.raises(BadInput, match="returned str"):
        call_job(lambda cfg: "done", cfg, LocalContext(stream=io.StringIO()))


def test_the_quickstart_documents_every_sweeper_setting():
    import dataclasses
    import re

    from hydra_plugins.danlu_sweeper.danlu_sweeper import DanluSweeperConf

    from tests.docs_text import section

    table = section("## Your Hydra app: `hydra/sweeper=danlu`", "docs/quickstart.md")
    documented = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert sorted(documented) == sorted(f.name for f in dataclasses.fields(DanluSweeperConf) if f.name != "_target_")
