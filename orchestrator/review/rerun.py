"""`danlu rerun RUN_ID`: a trial run again, here, from what its MLflow run recorded, and checked against it.

The run's config.yaml is the trial's resolved config (its hyperparameters and its seed, cfg.seed: set apart from
them by the sweep, recorded as danlu.seed); the sweep's parent run holds the git commit it ran at. The job runs in
this process (no Ray) with the CPU threads the trial had and torch's deterministic algorithms, for as many reports
as the run holds, and every metric's history is compared with MLflow's, value by value. On CPU a job that seeds
itself (as the job contract asks) reproduces exactly; the first difference is said otherwise. A working tree at
another commit than the run's, or with changes, is warned of: the code may not be the code that ran.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from orchestrator import tags as T
from orchestrator.errors import BadInput


def _threads(resources: str) -> int:
    """The CPU count a trial had, from its danlu.resources tag (CPU=1,GPU=0.25)."""
    for part in resources.split(","):
        k, _, v = part.partition("=")
        if k.strip() == "CPU":
            try:
                return max(1, int(float(v)))
            except ValueError:
                return 1
    return 1


def compare(original: dict[str, list[tuple[int, float]]], again: list[tuple[int, dict[str, float]]]) \
        -> tuple[int, str | None]:
    """(values compared, the first difference said, or None) between MLflow's histories and a rerun's reports."""
    by_step = {step: values for step, values in again}
    n = 0
    for key, points in sorted(original.items()):
        for step, value in points:
            if step not in by_step or key not in by_step[step]:
                return n, f"{key} at step {step}: the rerun did not report it (MLflow holds {value!r})"
            v = by_step[step][key]
            same = v == value or (math.isnan(v) and math.isnan(value))
            if not same:
                return n, (f"{key} at step {step}: {v!r} now, {value!r} in MLflow (differs by {abs(v - value):.3g})")
            n += 1
    return n, None


def rerun(run_id: str, overrides: list[str], config_dir: Path, out=None) -> int:
    """Run the trial of MLflow run `run_id` again here; 0 if every recorded value is reproduced exactly, 1 if
    not, 2 for a run that is not a danlu trial's."""
    import yaml
    from omegaconf import OmegaConf

    from orchestrator.config.compose import compose, hydra_context, split_overrides
    from orchestrator.launch import probe
    from orchestrator.tracking import check_held, open_store, resolve_uri
    from orchestrator.tracking.provenance import git_state
    from orchestrator.trial.trainable import load_job

    out = out or sys.stdout
    with hydra_context(config_dir):
        cfg = compose(split_overrides(overrides).fixed)
    uri = resolve_uri(str(cfg.tracking.uri))
    kind = str(cfg.tracking.get("store") or "mlflow")
    check_held(uri, kind)
    store = open_store(uri, str(cfg.tracking.experiment), kind)
    run = store.get_run(run_id)
    if run is None:
        raise BadInput(f"run {run_id}: no such run in {uri}; give a trial's run id (its page in MLflow's UI shows it).")
    text = store.artifact_text(run_id, "config.yaml")
    if T.TRIAL_ID not in run.tags or text is None:
        raise BadInput(f"run {run_id} ({run.name}) is not a danlu trial's run with its config.yaml: a sweep's parent, "
                       "or a run from elsewhere. Give one of the sweep's child runs.")
    trial_cfg = OmegaConf.create(yaml.safe_load(text))
    parent = store.get_run(run.parent_id) if run.parent_id else None
    commit = (parent or run).commit or "unknown"
    now, dirty = git_state(config_dir.parent)
    print(f"danlu rerun: {run.tags.get(T.TRIAL, run.name)} of sweep {run.tags.get(T.SWEEP, '?')} (run {run_id}), "
          f"seed {trial_cfg.get('seed')}, {run.tags.get(T.OVERRIDES, '')}", file=out)
    if commit != now:
        print(f"danlu: warning: the run ran at commit {commit[:12]}; this working tree is at {now[:12]}: the job's "
              "code may differ (git checkout the run's commit to rerun it as it ran)", file=out)
    elif dirty == "true":
        print("danlu: warning: this working tree has uncommitted changes: the job's code may differ from the run's",
              file=out)
    keys = sorted(k for k in run.metrics if not k.startswith("_"))
    original = {k: store.history(run_id, k) for k in keys}
    reports = max((len(v) for v in original.values()), default=0)
    if reports == 0:
        raise BadInput(f"run {run_id} holds no metrics to compare a rerun with.")
    job = load_job(str(trial_cfg.job.fn), config_dir.parent)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.use_deterministic_algorithms(True, warn_only=True)
    threads = _threads(run.tags.get(T.RESOURCES, ""))
    print(f"danlu: running it here: {reports} report(s), {threads} CPU thread(s), deterministic algorithms", file=out,
          flush=True)
    again = probe.run(job, trial_cfg, reports, threads=threads)
    if again.error:
        print(f"danlu: the rerun raised {again.error} after {len(again.history)} report(s)", file=out)
        print("\n".join("  " + ln for ln in again.tail().splitlines()), file=out)
    n, diff = compare(original, again.history)
    if diff is None:
        print(f"danlu: reproduced exactly: {n} value(s) of {len(keys)} metric(s) over {reports} step(s) "
              f"({again.seconds:.1f} s)", file=out, flush=True)
        return 0
    print(f"danlu: NOT reproduced: {diff} ({n} value(s) matched before it)", file=out, flush=True)
    return 1
