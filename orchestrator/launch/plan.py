"""The plan of a sweep: compose -> space -> every check on the user's input, before Ray starts or MLflow is touched,
so that a mistake costs nothing and leaves nothing behind. `danlu sweep`, `danlu compare` and `danlu submit` make
it once; `run_sweep` launches it."""

from __future__ import annotations

import copy
import os
import shlex
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.config import checks
from orchestrator.config.compose import (
    apply_overrides,
    compose,
    hydra_context,
    plain,
    require_job,
    split_fixed,
    split_overrides,
)
from orchestrator.errors import BadInput

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from orchestrator.config.space import Space
    from orchestrator.launch.forecast import Forecast
    from orchestrator.storage.sweep_storage import SweepStorage
    from orchestrator.trial.hydra_app import App

NAME_MAX = 200  # bytes of a sweep's name: a directory name (255 on Linux's filesystems) with room for suffixes


@dataclass
class Plan:
    """A validated sweep, ready to launch."""

    cfg: DictConfig  # the composed base config
    space: Space
    base_overrides: list[str]  # what every trial composes with, before its own values
    trial_base: DictConfig  # their composition, unresolved: what a trial that chooses no config option starts from
    config_dir: Path
    storage_dir: Path  # <output_dir>/<sweep.name>, Ray's experiment directory
    tracking_uri: str
    store_kind: str = "mlflow"  # tracking.store: which RunStore (orchestrator.tracking.store_class)
    app: App | None = None  # the trials are a Hydra app's (the sweeper plugin), else None
    need: dict[str, float] = field(default_factory=dict)  # what each trial asks of a node: {"CPU": 1.0, "GPU": 0.5}

    @property
    def project_root(self) -> Path:
        """The folder of the user's code (its git state is the sweep's): a Hydra app's, or above conf/."""
        return Path(self.app.root) if self.app is not None else self.config_dir.parent

    @cached_property
    def storage(self) -> SweepStorage:
        """The sweep's storage (orchestrator/storage/sweep_storage.py): its folder, lock, disks and records."""
        from orchestrator.storage.sweep_storage import SweepStorage

        return SweepStorage(self.storage_dir, self.tracking_uri, int(self.cfg.storage.min_free_mb))

    @cached_property
    def resume(self) -> str:
        """The command that resumes this sweep, as the user would type it from here: a Hydra app's sweep resumes
        with the app's own command and the sweep's name."""
        if self.app is not None and self.app.command:
            kept = [a for a in self.app.command if not a.startswith("hydra.sweeper.name=")]
            return " ".join(shlex.quote(x) for x in [*kept, f"hydra.sweeper.name={self.cfg.sweep.name}"])
        parts = ["danlu"]
        if self.config_dir != Path.cwd() / "conf":
            parts += ["--config-dir", str(self.config_dir)]
        parts += ["resume", str(self.cfg.sweep.name)]
        if self.storage_dir.parent != Path.cwd() / "outputs":
            parts.append(f"output_dir={self.storage_dir.parent}")
        return " ".join(shlex.quote(x) for x in parts)

    @cached_property
    def forecast(self) -> Forecast:
        """What the sweep will cost: its trials, rungs and trial-steps (orchestrator/launch/forecast.py)."""
        from orchestrator.launch.forecast import sweep_forecast

        return sweep_forecast(self)

    @cached_property
    def identity(self) -> dict[str, str]:
        """Every setting of the sweep, key by key, as a later command with its name must find them (the storage
        keeps them: orchestrator/storage/sweep_files.py): its composed config with every value resolved (so an
        edited conf file shows, as a changed override does, and the order of overrides does not), its space as
        parsed from the conf file and the command line, and a Hydra app's own config (unresolved: its ${now:}
        stays as written)."""
        from orchestrator.config.compose import flatten

        out = {k: _shown(v) for k, v in flatten(plain(self.cfg)) if k != "sweep.space" and
               not k.startswith("sweep.space.")}
        out |= {f"sweep.space.{k}": _shown(expr) for k, expr in self.space.describe()["space"].items()}
        if self.app is not None:
            app = plain(self.app.compose(self.app.fixed), resolve=False)
            out |= {f"app.{k}": _shown(v) for k, v in flatten(app) if not k.startswith("hydra.")}
        return out

    @property
    def settings(self) -> dict[str, str]:
        """What the sweep is, as its parent run's params (sweep_settings)."""
        return sweep_settings(plain(self.cfg), self.space)


def plan(overrides: list[str], config_dir: Path, cwd: str | None = None, app=None, app_space: dict | None = None) -> Plan:
    """The validated sweep of `overrides`: composed once, its space parsed, every key and first value checked,
    every plug-in's settings checked (BadInput naming the key otherwise). Nothing is launched or written. `cwd`:
    where relative paths (output_dir, a sqlite store) are taken from. `app` (orchestrator.trial.hydra_app.App): the
    trials are a Hydra app's, swept over `app_space` (key -> expression) composed in the app's own config tree;
    `overrides` are then danlu's settings alone."""
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from orchestrator import report, search
    from orchestrator import scheduler as schedulers
    from orchestrator.cluster.placement import check_address, trial_resources
    from orchestrator.config.space import override, parse_space
    from orchestrator.config.value_types import check_overrides
    from orchestrator.tracking import resolve_uri
    from orchestrator.trial.trainable import check_job

    cwd = cwd or os.getcwd()
    cl = split_overrides(overrides)
    with hydra_context(config_dir):
        # One composition (Hydra's defaults tree: the slow part) of the options chosen; the other fixed
        # overrides are applied to copies of it, as Hydra's compose applies them last.
        loader = GlobalHydra.instance().config_loader()
        groups, values, rest = split_fixed(cl.fixed, loader)
        chosen = compose(groups)
        cfg = apply_overrides(copy.deepcopy(chosen), rest)
        require_job(cfg, config_dir)
        written = cfg.sweep.get("space")
        if written is not None and not OmegaConf.is_dict(written):
            raise BadInput(f"sweep.space={written}: a mapping of keys to sweep expressions, e.g. "
                           "sweep.space={lr: 'tag(log, interval(1e-4, 1e-1))'} (in conf/sweep/NAME.yaml: `space:` "
                           "with one `key: expression` a line), or {} for none.")
        fixed_keys = {o.lstrip("+~").split("=", 1)[0] for o in cl.fixed}
        entries = {k: v for k, v in (cfg.sweep.get("space") or {}).items() if k not in fixed_keys}
        # command line wins; `sweep.space.x=interval(...)` names the space's key x, as `x=interval(...)` does
        entries.update({k.removeprefix("sweep.space."): v for k, v in cl.sweep.items()})
        if app is not None:
            entries = dict(app_space or {})
        seeds = cfg.sweep.seeds
        if not OmegaConf.is_list(seeds):
            raise BadInput(f"sweep.seeds={seeds}: a list of integers, e.g. sweep.seeds=[0,1,2].")
        if app is not None:  # a Hydra app's trials compose from the app's own tree, not danlu's
            space = _app_space(app, entries, list(seeds))
        else:
            space = parse_space(entries, list(seeds), lambda g: loader.get_group_options(g))
            # every swept key exists and every first value composes (a trial chooses options in the worker)
            probe = list(zip(space.probe_overrides(), space.params, strict=True))
            probe_groups = [o for o, prm in probe if prm.is_group]
            probed = apply_overrides(compose(groups + probe_groups), rest) if probe_groups else copy.deepcopy(cfg)
            for o, prm in probe:
                if not prm.is_group:
                    typed = prm.key in cl.sweep or f"sweep.space.{prm.key}" in cl.sweep
                    _probe_key(probed, o, prm.key, cfg.job.get("name"), None if typed else _chosen_sweep(cl.fixed))
            check_overrides(plain(chosen, resolve=False), values, space.params)
        try:
            OmegaConf.resolve(cfg)  # once, here: sweep.name's ${now:...} is fixed for every trial
        except OmegaConfBaseException as exc:
            raise BadInput(f"config: {' '.join(str(exc).split())}") from None
        name = str(cfg.sweep.name)
        cfg.sweep.name = name  # `sweep.name=nan` or `=2024` read as numbers; a name is a string
        trial_base = apply_overrides(apply_overrides(copy.deepcopy(chosen), rest), [override("sweep.name", name)])
    _check_sweep(cfg.sweep, name)
    if "epochs" in cfg:  # before the scheduler's check: its max_t follows epochs, which is what the user typed
        checks.integer("epochs", cfg.epochs, 1, note="(reports a trial makes; ASHA's max_t follows it)")
    _check_settings(cfg)  # checkpoint.every among them: the scheduler's context carries it
    schedulers.check(schedulers.SchedulerContext.of(cfg, space))
    search.check(space, cfg.search)
    report.check(cfg.report)
    need = trial_resources(cfg.resources)
    check_address(cfg.cluster)
    check_job(cfg.job.fn, Path(app.root) if app is not None else config_dir.parent)
    storage = Path(cwd, cfg.output_dir).resolve() / name
    return Plan(cfg, space, cl.fixed + [override("sweep.name", name)], trial_base, config_dir, storage,
                resolve_uri(str(cfg.tracking.uri), cwd), str(cfg.tracking.get("store") or "mlflow"), app, need)


def _probe_key(probed, text: str, key: str, job, sweep_file: str | None) -> None:
    """A swept key's first value applied to the job's config. A key from a sweep file's space that the job's config
    lacks (a sweep written for another job) is named as the space's, with the file; one typed on the command line
    gets Hydra's message and the keys near it (a typo, most often)."""
    from omegaconf import OmegaConf

    try:
        apply_overrides(probed, [text])
    except BadInput:
        if sweep_file is None or OmegaConf.select(probed, key, default=_MISSING) is not _MISSING:
            raise
        where = f"sweep={sweep_file}" if sweep_file else "the sweep your conf/config.yaml chooses"
        raise BadInput(f"sweep.space.{key}: {where} sweeps '{key}', but the job's config (job {job}) has no such key. "
                       f"Choose a sweep written for this job (sweep=NAME), or drop the key (~sweep.space.{key}); "
                       f"`danlu run --cfg job={job}` shows the job's keys.") from None


_MISSING = object()


def _chosen_sweep(fixed: list[str]) -> str:
    """The sweep file the command line chooses (sweep=NAME), or "" for the defaults list's."""
    return next((o.split("=", 1)[1] for o in fixed if o.split("=", 1)[0] == "sweep"), "")


def _app_space(app, entries: dict, seeds: list[int]):
    """A Hydra app's space, parsed against the app's own config groups; every swept key and first value composes
    in the app's config, and every value fits its default's type (as for a danlu job)."""

    from orchestrator.config.space import parse_space
    from orchestrator.config.value_types import check_overrides

    space = parse_space(entries, seeds, app.group_options)
    base = app.compose(app.fixed)
    app.compose(app.fixed + space.probe_overrides())
    _, values, _ = split_fixed(app.fixed, app.hydra_context.config_loader)
    shown = {k: v for k, v in plain(base, resolve=False).items() if k != "hydra"}
    check_overrides(shown, values, space.params)
    return space


def sweep_settings(cfg: dict, space) -> dict[str, str]:
    """What the sweep is, as its parent run's params: the job, the space as written, num_samples, seeds, metric and
    mode, the scheduler and the searcher with their settings, the resources per trial. Not the base config's
    values (lr 0.05, batch 64: they would read as the sweep's result): those are its config.yaml artifact."""
    from orchestrator.config.compose import flatten

    out: dict[str, object] = {"job.name": cfg["job"]["name"], "job.fn": cfg["job"]["fn"]}
    out |= {f"sweep.{k}": cfg["sweep"].get(k) for k in ("metric", "mode", "num_samples", "seeds",
                                                        "max_concurrent_trials", "search_seed")}
    out |= {f"space.{k}": expr for k, expr in space.describe()["space"].items()}
    for section in ("scheduler", "search", "resources"):
        out |= {f"{section}.{k}": v for k, v in flatten(cfg.get(section) or {}) if k}
    if "epochs" in cfg:  # how long a trial runs (ASHA's max_t follows it)
        out["epochs"] = cfg["epochs"]
    return {k: str(v)[:6000] for k, v in out.items() if v is not None}


def _shown(value) -> str:
    """A setting's value as text: a string as it is, anything else as JSON."""
    import json

    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _check_sweep(sweep, name: str) -> None:
    if sweep.mode not in ("max", "min"):
        raise BadInput(f"sweep.mode={sweep.mode}: valid modes are max, min.")
    checks.integer("sweep.num_samples", sweep.num_samples, 1)
    if not sweep.metric or not isinstance(sweep.metric, str):
        raise BadInput("sweep.metric: the name of a metric the job reports, e.g. val_acc.")
    if not name or "/" in name or name.startswith("."):
        raise BadInput(f"sweep.name={name!r}: a plain directory name (letters, digits, - and _).")
    if len(name.encode()) > NAME_MAX:
        raise BadInput(f"sweep.name={name[:40]}... ({len(name.encode())} bytes): at most {NAME_MAX} bytes (it names "
                       "the sweep's directory, whose files add to it, and its MLflow runs).")
    checks.integer("sweep.search_seed", sweep.get("search_seed"), 0, optional=True, note="(null: a fresh seed)")
    checks.integer("sweep.max_concurrent_trials", sweep.get("max_concurrent_trials"), 1, optional=True)
    from orchestrator.launch.budget import Limits

    Limits.of(sweep)


def _check_settings(cfg) -> None:
    """The root config's numeric settings (conf/config.yaml), each read where the sweep runs."""
    checks.integer("checkpoint.every", cfg.checkpoint.every, 1)
    checks.integer("checkpoint.keep", cfg.checkpoint.keep, 1)
    checks.integer("failure.max_failures", cfg.failure.max_failures, -1, note="(-1: retry without end)")
    checks.integer("failure.retry_job_errors", cfg.failure.get("retry_job_errors", 0), -1,
                   note="(0: the job's own errors are not retried; -1: without end)")
    stall = cfg.failure.get("stall_s", "auto")
    if stall != "auto":
        checks.number("failure.stall_s", stall, 1, optional=True,
                      note="(auto: 10 x the trial's slowest step, at least 10 min; null: no limit)")
    checks.fraction("failure.max_failed_fraction", cfg.failure.get("max_failed_fraction"), optional=True)
    checks.number("progress.every_s", cfg.progress.every_s, 0.1)
    checks.integer("storage.min_free_mb", cfg.storage.min_free_mb, 0)
    checks.number("storage.lock_ttl_s", cfg.storage.lock_ttl_s, 1)
    checks.number("tracking.flush_s", cfg.tracking.flush_s, 0.05)
    checks.number("tracking.max_output_mb", cfg.tracking.get("max_output_mb"), 0.01, optional=True, note="(null: no cap)")
    pre = cfg.get("preflight") or {}
    checks.integer("preflight.reports", pre.get("reports", 3), 1)
    checks.integer("preflight.nan_reports", pre.get("nan_reports", 5), 1)
    checks.number("preflight.memory_mb", pre.get("memory_mb"), 1, optional=True, note="(null: available memory / trials at once)")
