"""What a report is made of, read back from MLflow: the sweep's parent run and its trials, grouped by
configuration (danlu.config_id), each configuration's seeds as replicates."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator import tags as T

if TYPE_CHECKING:
    from orchestrator.tracking import RunStore


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
    running: list[int] = field(default_factory=list)  # seeds whose run is still RUNNING (a report of a running sweep)
    earlier_space: list[str] = field(default_factory=list)  # keys whose value the sweep's space (extended) no longer holds

    @property
    def rung(self) -> int:
        """The furthest step any of its seeds reached (the rung its values are from)."""
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
    decisions: list[dict] = field(default_factory=list)  # seed-aware ASHA's (orchestrator/scheduler/_group_rungs)
    earlier_seed_sd: dict | None = None  # with one seed: the spread an earlier multi-seed sweep of the job measured
    command: str = ""  # the sweep's command line (danlu.command): what a follow-up comparison keeps of it
    store: RunStore | None = None  # the store it was read from
    storage_dir: Path | None = None  # the sweep's Ray storage (its checkpoints), where known
    root: Path | None = None  # the folder holding jobs/ (the job's code), where known
    tags: dict = field(default_factory=dict)  # the parent run's tags (resumes, resubmissions, the outcome)
    runs: list = field(default_factory=list)  # every trial's run (tracking.RunRecord), set-aside ones included
    parent_metrics: dict = field(default_factory=dict)  # the parent run's metrics (steps_run, budget_*_hours)

    def better(self, a: float, b: float) -> bool:
        """Whether value a is better than b in the sweep's mode."""
        return a > b if self.mode == "max" else a < b


def label(config: Config) -> str:
    """The configuration's one label: as in its MLflow runs' names (after the trial id) and on the terminal."""
    from orchestrator.config.space import short_label

    return short_label(config.hp) or config.id


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


def earlier_seed_sd(store, job: str, metric: str, step: int, parent_id: str) -> dict | None:
    """The seed-to-seed spread measured by the newest earlier sweep of the same job and metric, at the same step
    (max_t: a spread after 2 epochs says nothing of one after 20), with several seeds (its report logged it on
    its parent run as seed_sd_<metric>, at seed_sd_step). None if there is none: nothing is borrowed."""
    for run in store.sweeps_of_job(job):
        sd = run.metrics.get(f"seed_sd_{metric}")
        if run.run_id != parent_id and sd is not None and sd >= 0 and run.metrics.get("seed_sd_step") == int(step):
            return {"sweep": run.tags.get(T.SWEEP, run.name), "sd": sd, "step": int(step), "run_id": run.run_id}
    return None


def load(store, name: str, decisions: list[dict] | None = None) -> SweepData:
    """Sweep `name` read back from its tracking store (orchestrator.tracking.RunStore), grouped by configuration."""
    record = store.read_sweep(name)
    parent = record.parent
    params = parent.params
    metric, mode = params.get("sweep.metric", ""), params.get("sweep.mode", "max")
    described = record.space or {}
    space = {k: str(v) for k, v in (described.get("space") or {}).items()}
    seeds = [int(s) for s in described.get("seeds") or [0]] if record.space is not None else []
    configs: dict[str, Config] = {}
    curves = store.histories([r.run_id for r in record.trials if metric in r.metrics], metric)
    for run in record.trials:
        tg = run.tags
        cid, seed = tg.get(T.CONFIG_ID), tg.get(T.SEED)
        if cid is None or seed is None or T.ORPHANED in tg:  # a run no trial of the sweep owns (kept, not counted)
            continue
        seed = int(seed)
        # a run's params are its whole config; the configuration is what the sweep varied
        c = configs.setdefault(cid, Config(cid, {k: run.params.get(k, "") for k in space}))
        c.trials.setdefault(seed, tg.get(T.TRIAL, ""))
        c.runs.setdefault(seed, (run.run_id, tg.get(T.TRIAL_ID, "")))
        if tg.get(T.OUTCOME) == "failed" or run.status == "FAILED":
            c.failed.append(seed)
            continue
        if run.status == "RUNNING":
            c.running.append(seed)
        history = sorted(curves.get(run.run_id, ()))
        history = [(s, v) for s, v in history if not math.isnan(v)]
        if history and seed in c.values:  # the same hyperparameters drawn twice: another replicate of this seed
            c.repeats[seed] = c.repeats.get(seed, 1) + 1
            n = c.repeats[seed]
            c.values[seed] += (history[-1][1] - c.values[seed]) / n  # their mean, said in the report
            c.steps[seed] = max(c.steps[seed], history[-1][0])
        elif history:
            c.curves[seed] = history
            c.steps[seed], c.values[seed] = history[-1]
    extended = int(parent.tags.get(T.EXTENSIONS, "0") or 0) > 0
    for c in configs.values():
        _one_fidelity(c)
        if extended:  # an extension's new space: its earlier configurations outside it stay, marked
            from orchestrator.config.space import outside

            c.earlier_space = outside(space, c.hp)
    seeds = seeds or sorted({s for c in configs.values() for s in c.trials})
    scheduler = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("scheduler.")}
    one_seed = all(len(c.values) < 2 for c in configs.values())
    last_step = max((c.rung for c in configs.values()), default=0)
    earlier = earlier_seed_sd(store, params.get("job.name", ""), metric, last_step, parent.run_id) \
        if one_seed and last_step else None
    return SweepData(name=name, experiment_id=parent.experiment_id, parent_id=parent.run_id, metric=metric,
                     mode=mode, job=params.get("job.name", ""), seeds=seeds, space=space, scheduler=scheduler,
                     configs=sorted(configs.values(), key=lambda c: min(c.trials.values(), default="")),
                     decisions=list(decisions or []), earlier_seed_sd=earlier, store=store,
                     command=parent.tags.get(T.COMMAND, ""), tags=dict(parent.tags), runs=list(record.trials),
                     parent_metrics=dict(parent.metrics))
