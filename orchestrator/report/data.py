"""What a report is made of, read back from MLflow: the sweep's parent run and its trials, grouped by
configuration (danlu.config_id), each configuration's seeds as replicates."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from orchestrator import tags as T
from orchestrator.errors import BadInput


@dataclass
class Config:
    id: str
    hp: dict[str, str]  # the configuration's values, as its runs' params (seed excluded)
    values: dict[int, float] = field(default_factory=dict)  # seed -> the metric's last reported value
    steps: dict[int, int] = field(default_factory=dict)  # seed -> its last step (the rung it reached)
    curves: dict[int, list[tuple[int, float]]] = field(default_factory=dict)  # seed -> [(step, value)]
    failed: list[int] = field(default_factory=list)  # seeds whose trial failed (left out of the statistics)
    trials: dict[int, str] = field(default_factory=dict)  # seed -> trial label (t003)
    runs: dict[int, tuple[str, str]] = field(default_factory=dict)  # seed -> (MLflow run id, Ray trial id)
    repeats: dict[int, int] = field(default_factory=dict)  # seed -> trials of it (a searcher drew this config twice)

    @property
    def rung(self) -> int:
        return max(self.steps.values(), default=0)


@dataclass
class SweepData:
    name: str
    experiment_id: str
    parent_id: str
    metric: str
    mode: str  # max | min
    job: str
    seeds: list[int]
    space: dict[str, str]  # key -> its sweep expression (log scale: "log" in it)
    scheduler: dict  # scheduler.* of the sweep's config
    configs: list[Config]
    decisions: list[dict] = field(default_factory=list)  # seed-aware ASHA's (orchestrator/scheduler/group_rungs)
    earlier_seed_sd: dict | None = None  # with one seed: the spread an earlier multi-seed sweep of the job measured
    command: str = ""  # the sweep's command line (danlu.command): what a follow-up comparison keeps of it
    client: object = None  # the MlflowClient it was read with
    storage_dir: object = None  # the sweep's Ray storage (its checkpoints), where known
    root: object = None  # the folder holding jobs/ (the job's code), where known

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b


def _one_fidelity(c: Config) -> None:
    """A configuration's values at one step: the furthest step every one of its seeds reached. Seed-aware ASHA
    stops a configuration's seeds together, but a seed that was ahead may have reported a step or two more; a
    mean over values of different steps would mix fidelities. (A configuration drawn twice keeps its averages.)"""
    if c.repeats or len(c.curves) < 2 or set(c.curves) != set(c.values):
        return
    common = min(c.steps.values())
    for seed, curve in c.curves.items():
        at = [(s, v) for s, v in curve if s <= common]
        if at:
            c.steps[seed], c.values[seed] = at[-1]


def find_parent(client, experiment: str, name: str):
    exp = client.get_experiment_by_name(experiment)
    runs = [] if exp is None else client.search_runs(
        [exp.experiment_id], f"tags.`{T.SWEEP}` = '{name}' and tags.`{T.KIND}` = 'sweep'",
        order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise BadInput(f"sweep {name!r}: no such sweep in MLflow experiment '{experiment}' "
                       f"({client.tracking_uri}); `danlu ui` lists the sweeps there.")
    return runs[0]


def earlier_seed_sd(client, experiment_id: str, job: str, metric: str, step: int, parent_id: str) -> dict | None:
    """The seed-to-seed spread measured by the newest earlier sweep of the same job and metric, at the same step
    (max_t: a spread after 2 epochs says nothing of one after 20), with several seeds (its report logged it on
    its parent run as seed_sd_<metric>, at seed_sd_step). None if there is none: nothing is borrowed."""
    runs = client.search_runs([experiment_id], f"params.`job.name` = '{job}' and metrics.`seed_sd_{metric}` >= 0 "
                              f"and metrics.`seed_sd_step` = {int(step)}", order_by=["attributes.start_time DESC"],
                              max_results=20)
    for run in runs:
        if run.info.run_id != parent_id:
            return {"sweep": run.data.tags.get(T.SWEEP, run.info.run_name), "sd": run.data.metrics[f"seed_sd_{metric}"],
                    "step": int(step), "run_id": run.info.run_id}
    return None


def load(client, experiment: str, name: str, decisions: list[dict] | None = None) -> SweepData:
    import os

    import yaml

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bar in the table
    parent = find_parent(client, experiment, name)
    params = parent.data.params
    metric, mode = params.get("sweep.metric", ""), params.get("sweep.mode", "max")
    space: dict = {}
    try:
        text = client.download_artifacts(parent.info.run_id, "space.yaml")
        with open(text) as f:
            described = yaml.safe_load(f) or {}
        space = {k: str(v) for k, v in (described.get("space") or {}).items()}
        seeds = [int(s) for s in described.get("seeds") or [0]]
    except Exception:  # an older parent without it: the seeds its trials ran under
        seeds = []
    children = client.search_runs([parent.info.experiment_id], f"tags.`{T.PARENT}` = '{parent.info.run_id}'",
                                   max_results=50000)
    configs: dict[str, Config] = {}
    for run in children:
        tg = run.data.tags
        cid, seed = tg.get(T.CONFIG_ID), tg.get(T.SEED)
        if cid is None or seed is None or T.ORPHANED in tg:  # a run no trial of the sweep owns (kept, not counted)
            continue
        seed = int(seed)
        # a run's params are its whole config; the configuration is what the sweep varied
        c = configs.setdefault(cid, Config(cid, {k: run.data.params.get(k, "") for k in space}))
        c.trials.setdefault(seed, tg.get(T.TRIAL, ""))
        c.runs.setdefault(seed, (run.info.run_id, tg.get(T.TRIAL_ID, "")))
        if tg.get(T.OUTCOME) == "failed" or run.info.status == "FAILED":
            c.failed.append(seed)
            continue
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric))
        history = [(s, v) for s, v in history if not math.isnan(v)]
        if history and seed in c.values:  # the same hyperparameters drawn twice: another replicate of this seed
            c.repeats[seed] = c.repeats.get(seed, 1) + 1
            n = c.repeats[seed]
            c.values[seed] += (history[-1][1] - c.values[seed]) / n  # their mean, said in the report
            c.steps[seed] = max(c.steps[seed], history[-1][0])
        elif history:
            c.curves[seed] = history
            c.steps[seed], c.values[seed] = history[-1]
    for c in configs.values():
        _one_fidelity(c)
    seeds = seeds or sorted({s for c in configs.values() for s in c.trials})
    scheduler = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("scheduler.")}
    one_seed = all(len(c.values) < 2 for c in configs.values())
    last_step = max((c.rung for c in configs.values()), default=0)
    earlier = earlier_seed_sd(client, parent.info.experiment_id, params.get("job.name", ""), metric, last_step,
                              parent.info.run_id) if one_seed and last_step else None
    return SweepData(name=name, experiment_id=parent.info.experiment_id, parent_id=parent.info.run_id, metric=metric,
                     mode=mode, job=params.get("job.name", ""), seeds=seeds, space=space, scheduler=scheduler,
                     configs=sorted(configs.values(), key=lambda c: min(c.trials.values(), default="")),
                     decisions=list(decisions or []), earlier_seed_sd=earlier, client=client,
                     command=parent.data.tags.get(T.COMMAND, ""))
