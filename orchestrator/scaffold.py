"""`danlu init [DIR] [--job NAME] [--from module:function]`: the smallest working project, in the user's repository.

It writes conf/config.yaml (naming the job and sweep), conf/job/NAME.yaml, conf/sweep/NAME.yaml and jobs/NAME.py:
a job with the contract (restore, report with a checkpoint), or, with --from, a thin wrapper that calls an existing
function with its keyword arguments taken from the config. danlu's own settings and groups (scheduler, search,
resources, cluster, tracking, report) stay in the package: the project holds only what is its own.

It never overwrites a file: a job, sweep or module file that exists is refused before anything is written; an
existing conf/config.yaml is kept (the new job is then chosen with job=NAME sweep=NAME).
"""

from __future__ import annotations

import inspect
import keyword
import sys
from pathlib import Path

from orchestrator.errors import BadInput

CONFIG = """# This project's danlu config: its job and sweep. danlu's own settings and config groups (scheduler, search,
# resources, cluster, tracking, report) come with the package; choose another option on the command line
# (scheduler=fifo) or here (`- override scheduler: fifo`), or add your own file to a group (conf/scheduler/my.yaml).
defaults:
  - job: {name}
  - sweep: {name}
  - _self_
"""

JOB_CONTRACT = '''# @package _global_
# The job {name} (jobs/{name}.py) and its hyperparameters, at the top level: danlu sweep lr=0.01,0.1
job:
  name: {name}
  fn: jobs.{name}:train     # module:function; the function is train(cfg, ctx)
seed: 0                     # set per trial from sweep.seeds; never a hyperparameter
epochs: 20                  # one report per epoch; ASHA's max_t follows it
lr: 0.1
noise: 0.5                  # the gradient's noise: what the seeds change
'''

JOB_MODULE = '''"""The job {name}: replace the body with your training, and keep the contract.

    state = ctx.restore()                           # None on a fresh start, else the last checkpoint
    ctx.report(epoch, {{"loss": ...}}, checkpoint=state)   # every epoch: ASHA stops on these, MLflow keeps them

Run one trial here: danlu run. The job knows nothing of Ray or MLflow.
"""

import random


def train(cfg, ctx):
    rng = random.Random(cfg.seed)
    state = ctx.restore()
    if state is None:  # a fresh start
        state = {{"epoch": 0, "w": rng.uniform(-1.0, 1.0), "rng": rng.getstate()}}
    rng.setstate(state["rng"])
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        # one epoch of "training": a noisy gradient step on (w - 3)^2
        grad = 2.0 * (state["w"] - 3.0) + rng.gauss(0.0, cfg.noise)
        state = {{"epoch": epoch, "w": state["w"] - cfg.lr * grad, "rng": rng.getstate()}}
        ctx.report(epoch, {{"loss": (state["w"] - 3.0) ** 2}}, checkpoint=state)
'''

JOB_WRAPPER = '''# @package _global_
# The job {name}: {target}, called with these keyword arguments (jobs/{name}.py)
job:
  name: {name}
  fn: jobs.{name}:train     # a task function: train(cfg) calls {target}
seed: 0                     # set per trial from sweep.seeds; the wrapper seeds Python's random, numpy and torch
{params}'''

WRAPPER_MODULE = '''"""The job {name}: calls {target} with its keyword arguments from the config (conf/job/{name}.yaml).

Its return value is the trial's one result (a number: the sweep's metric; a mapping: metrics by name). To let ASHA
stop a trial early, report as it trains, from inside the function:

    from orchestrator.api import report, restore
    report(epoch, {{"{metric}": value}}, checkpoint=state)    # does nothing when it runs outside danlu
"""

import random

from {module} import {func} as target

PARAMS = {names!r}


def train(cfg):
    random.seed(cfg.seed)
    try:
        import numpy

        numpy.random.seed(cfg.seed)
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(cfg.seed)
    except ImportError:
        pass
    return target(**{{k: cfg[k] for k in PARAMS}})
'''

ONE_RESULT = """epochs: 1                   # reports a trial makes: one, the function's return value. Report each epoch from
                            # inside it (orchestrator.api.report) and set their number here to let ASHA stop early
scheduler:
  grace_period: 1           # ASHA's first rung at the one report: a trial is never stopped before it ends
"""

SWEEP = """# The sweep of {name}: what is tried, and what decides. The space uses Hydra's override grammar:
#   choice(a,b) | a,b | range(lo,hi[,step]) | interval(lo,hi) | tag(log, interval(lo,hi)) | int(interval(lo,hi))
metric: {metric}            # what the job reports
mode: {mode}                # max | min
num_samples: 8              # configurations sampled from the space
seeds: [0, 1, 2]            # every configuration runs once per seed: replicates, so that a difference can be judged
space:
{space}"""


def init(directory: str, job: str, source: str | None, metric: str | None, mode: str | None, out=None) -> int:
    """Write the project; say what was written and the next three commands."""
    out = out or sys.stdout
    root = Path(directory).resolve()
    if not job.isidentifier() or keyword.iskeyword(job):
        raise BadInput(f"--job {job}: a Python identifier (letters, digits, _), e.g. --job train; it names "
                       "jobs/NAME.py, conf/job/NAME.yaml and conf/sweep/NAME.yaml.")
    if mode not in (None, "max", "min"):
        raise BadInput(f"--mode {mode}: max or min.")
    if root.exists() and not root.is_dir():
        raise BadInput(f"{directory}: not a directory.")
    if source:
        job_yaml, module, space, metric, mode = _wrapper(root, job, source, metric, mode)
    else:
        job_yaml, module = JOB_CONTRACT.format(name=job), JOB_MODULE.format(name=job)
        space, metric, mode = "  lr: tag(log, interval(0.001, 0.5))\n", metric or "loss", mode or "min"
    files = {
        f"conf/job/{job}.yaml": job_yaml,
        f"conf/sweep/{job}.yaml": SWEEP.format(name=job, metric=metric, mode=mode, space=space or "  {}\n"),
        f"jobs/{job}.py": module,
    }
    taken = [rel for rel in files if (root / rel).exists()]
    if taken:
        raise BadInput(f"danlu init never overwrites a file, and these exist in {root}: {', '.join(taken)}. Choose "
                       "another --job NAME, or another directory.")
    if not (root / "jobs").exists():
        files["jobs/__init__.py"] = ""
    kept = (root / "conf/config.yaml").exists()
    if not kept:
        files["conf/config.yaml"] = CONFIG.format(name=job)
    written = []
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as f:  # "x": never over a file that appeared meanwhile
            f.write(text)
        written.append(rel)
    print(f"danlu init: a project in {root}", file=out)
    for rel in written:
        print(f"  wrote {rel}", file=out)
    choose = ""
    if kept:
        print(f"  kept conf/config.yaml (it exists): choose this job with job={job} sweep={job}", file=out)
        choose = f" job={job} sweep={job}"
    cd = "" if root == Path.cwd() else f"cd {directory} && "
    print("next:", file=out)
    print(f"  {cd}danlu plan{choose}          what the sweep would run and cost; launches nothing", file=out)
    print(f"  {cd}danlu preflight{choose}     the job reports {metric}, nothing NaN, the stores answer", file=out)
    print(f"  {cd}danlu sweep{choose}         the sweep: Ray Tune with ASHA, every trial in MLflow (danlu ui)", file=out)
    return 0


def _wrapper(root: Path, job: str, source: str, metric: str | None, mode: str | None):
    """conf/job/NAME.yaml and jobs/NAME.py around `module:function`: its keyword arguments with plain defaults
    become the job's hyperparameters, and the floats among them the sweep's space (a decade each way)."""
    import importlib

    module, _, func = source.partition(":")
    if not module or not func:
        raise BadInput(f"--from {source}: expected module:function, e.g. --from mylib.train:fit.")
    sys.path.insert(0, str(root))
    try:
        fn = getattr(importlib.import_module(module), func, None)
    except Exception as exc:
        raise BadInput(f"--from {source}: importing '{module}' from {root} failed: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.remove(str(root))
    if not callable(fn) or isinstance(fn, type):
        raise BadInput(f"--from {source}: module '{module}' has no function '{func}'.")
    params = {}
    for p in inspect.signature(inspect.unwrap(fn)).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty or not isinstance(p.default, (bool, int, float, str, type(None))):
            raise BadInput(f"--from {source}: its parameter '{p.name}' has no plain default (a number, string, bool "
                           "or None); the wrapper fills every parameter from the config. Give it one, or write the "
                           "job by hand (danlu init without --from, then call your function from it).")
        params[p.name] = p.default
    if "seed" in params:
        raise BadInput(f"--from {source}: it takes 'seed', which danlu sets per trial from sweep.seeds; the wrapper "
                       "seeds Python's random, numpy and torch itself. Rename the parameter, or write the job by hand.")
    import yaml

    lines = yaml.safe_dump(params, sort_keys=False, default_flow_style=False) if params else ""
    if "epochs" not in params:  # one report a trial (its return value): ASHA's max_t and first rung are that one
        lines += ONE_RESULT
    space = "".join(f"  {k}: tag(log, interval({v / 10:g}, {v * 10:g}))\n" for k, v in params.items()
                    if isinstance(v, float) and v > 0)
    metric = metric or "result"
    job_yaml = JOB_WRAPPER.format(name=job, target=source, params=lines)
    wrapper = WRAPPER_MODULE.format(name=job, target=source, module=module, func=func, names=list(params),
                                    metric=metric)
    return job_yaml, wrapper, space, metric, mode or "max"
