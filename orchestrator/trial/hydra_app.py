"""A @hydra.main app as a danlu job: `python train.py -m hydra/sweeper=danlu ...` (the sweeper plugin,
orchestrator/hydra_plugin/danlu_sweeper.py, installed as hydra_plugins.danlu_sweeper).

The app keeps its own conf tree and task function. danlu's settings (metric, seeds, scheduler, tracking, ...) come
from `hydra.sweeper.*` and compose against danlu's own config tree, apart from the app's, so an app's own `scheduler`
or `checkpoint` keys never meet danlu's. Each trial's config is the app's, composed by Hydra's own config loader
with the trial's values as overrides (as Hydra's launchers compose a multirun job), and the task function runs
through Hydra's run_job: its output folder under the multirun folder, HydraConfig, logging, .hydra/ as usual.
It reports through orchestrator.api; what it returns is its one result when it reported nothing.

What of Hydra this uses is its plugin API, as Hydra's own launcher plugins (joblib, Ray) use it: the context's
config loader (load_sweep_config, get_group_options), hydra.core.utils (run_job, setup_globals) and
hydra.core.singleton.Singleton's get_state/set_state. None of it is Hydra's internal package (what danlu uses of
that lives in orchestrator/hydra_internals.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config.compose import plain
from orchestrator.errors import BadInput

# the sweeper's keys that choose one of danlu's config groups: a mapping, whose `option` picks the group's file and
# whose other keys change that file's settings (hydra.sweeper.scheduler.grace_period=1)
GROUPS = ("scheduler", "search", "resources", "cluster", "tracking", "report")
SETTINGS = ("checkpoint", "failure", "progress", "storage")  # danlu's root settings, key by key
SWEEP_KEYS = ("metric", "mode", "num_samples", "seeds", "max_concurrent_trials", "search_seed")


@dataclass
class App:
    """What a trial needs of the app, shipped to Ray's workers with the trainable."""

    hydra_context: Any  # Hydra's HydraContext: its config loader composes the app's trials
    master: Any  # the app's composed config, hydra node included (what the sweeper was given)
    fn: str  # module:function of the task function (importable from root)
    root: str  # where the app's module is imported from (the script's folder)
    fixed: list[str] = field(default_factory=list)  # the command line's plain overrides, every trial's
    seed_key: str | None = "seed"  # the app's config key that takes the trial's seed
    metric: str = ""
    sweep_dir: str = ""  # Hydra's multirun folder, absolute: a trial's output folder is under it, wherever it runs
    command: list[str] = field(default_factory=list)  # the app's command line (python train.py -m ...): its resume
    singletons: Any = None  # Hydra's process state (its JobRuntime: the job's name; its ConfigStore), as Hydra's own
    #                         remote launchers ship it to their workers (Singleton.get_state / set_state)

    def __post_init__(self) -> None:
        if self.singletons is None:
            from hydra.core.singleton import Singleton

            self.singletons = Singleton.get_state()

    def compose(self, overrides: list[str]):
        """The app's config with `overrides`, as Hydra composes a multirun job's (hydra node included)."""
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        from orchestrator.config.space import override

        where = [override("hydra.sweep.dir", self.sweep_dir)] if self.sweep_dir else []
        try:
            return self.hydra_context.config_loader.load_sweep_config(self.master, where + list(overrides))
        except (HydraException, OmegaConfBaseException) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BadInput(f"the app's config with {' '.join(overrides) or 'no overrides'}: {first}") from None

    def group_options(self, group: str) -> list[str]:
        """The options of one of the app's config groups (for `model=glob(*)` and validation)."""
        from hydra.core.object_type import ObjectType

        return self.hydra_context.config_loader.get_group_options(group, results_filter=ObjectType.CONFIG)

    def trial_config(self, hp: dict, seed: int, trial_id: str):
        """A trial's config: the app's, with the fixed overrides, the trial's values and its seed (`++key`: set
        whether or not the app's config has it); Hydra's job id and number set as its launchers set them."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.singleton import Singleton
        from hydra.core.utils import setup_globals
        from omegaconf import open_dict

        from orchestrator.config.space import override

        Singleton.set_state(self.singletons)  # as Hydra's joblib and Ray launchers do in their workers
        setup_globals()  # Hydra's resolvers (${now:...}, ${hydra:...}) in this worker, as its launchers do
        overrides = self.fixed + [override(k, v) for k, v in hp.items()]
        if self.seed_key:
            overrides.append("++" + override(self.seed_key, seed))
        cfg = self.compose(overrides)
        tail = trial_id.rsplit("_", 1)[-1]
        with open_dict(cfg):
            cfg.hydra.job.id = trial_id
            cfg.hydra.job.num = int(tail) if tail.isdigit() else 0
        HydraConfig.instance().set_config(cfg)  # ${hydra:...} in the app's config resolves from here on
        return cfg

    @staticmethod
    def shown(cfg) -> dict:
        """The trial's config as its MLflow run keeps it: the app's keys, without Hydra's own node."""
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        mine = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        try:
            return plain(mine)
        except OmegaConfBaseException:  # a value that only resolves once the job runs (${hydra:runtime.output_dir})
            return plain(mine, resolve=False)

    def run(self, cfg, ctx, cpus: float = 1) -> None:
        """The task function through Hydra's run_job, reporting to `ctx`; its return value is the one result when
        it reported nothing. Its exception is re-raised as itself (the trial fails; its traceback is in the log)."""
        import inspect

        from hydra.core.utils import run_job

        from orchestrator import api
        from orchestrator.trial.trainable import load_job, set_threads

        task = inspect.unwrap(load_job(self.fn, Path(self.root)))
        set_threads(cpus)
        with api.active(ctx) as seen:
            ret = run_job(hydra_context=self.hydra_context, task_function=task, config=cfg,
                          job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            value = ret.return_value  # raises the task function's own exception
        if not seen.reports:
            api.report_return(ctx, value, self.metric)


def task_path(task_function) -> tuple[str, str]:
    """(module:function, folder to import it from) of a task function: a script run as `python train.py` is the
    module `train` in the script's folder (importing it there runs no app: Hydra apps call main() under
    `if __name__ == "__main__":`)."""
    import inspect

    fn = inspect.unwrap(task_function)
    module = fn.__module__
    root = Path.cwd()
    if module == "__main__":
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:  # python -m package.train
            module = spec.name.removesuffix(".__main__")
        else:
            script = Path(getattr(main, "__file__", sys.argv[0])).resolve()
            module, root = script.stem, script.parent
    elif (found := getattr(sys.modules.get(module), "__file__", None)):
        depth = module.count(".")
        root = Path(found).resolve().parents[depth]
        if Path(found).name == "__init__.py":
            root = root.parent
    if "<" in fn.__qualname__ or "." in fn.__qualname__:
        raise BadInput(f"the task function {fn.__qualname__} is not a module-level function of {module}: danlu's "
                       "trials import it by name in their own processes.")
    return f"{module}:{fn.__name__}", str(root)


def settings_overrides(sweeper: dict, name: str, fn: str) -> list[str]:
    """danlu's overrides (against its own config tree) from the sweeper's `hydra.sweeper.*` settings."""
    from orchestrator.config.space import override

    out = [override("+job.name", name), override("+job.fn", fn)]
    for group in GROUPS:
        chosen = {k: v for k, v in (sweeper.get(group) or {}).items() if v is not None}  # null: danlu's value
        option = chosen.pop("option", None)
        if option:
            out.append(override(group, option))
        out += [override(f"{group}.{k}", v) for k, v in chosen.items()]
    for section in SETTINGS:
        out += [override(f"{section}.{k}", v) for k, v in (sweeper.get(section) or {}).items() if v is not None]
    if sweeper.get("metric") in (None, "", "???"):
        raise BadInput("hydra.sweeper.metric: the metric the task function reports (or returns) that the sweep ranks "
                       "on, e.g. hydra.sweeper.metric=val_acc.")
    out += [override(f"sweep.{k}", sweeper[k]) for k in SWEEP_KEYS if k in sweeper]
    out += [override(f"sweep.budget.{k}", v) for k, v in (sweeper.get("budget") or {}).items() if v is not None]
    if sweeper.get("name"):
        out.append(override("sweep.name", sweeper["name"]))
    if sweeper.get("output_dir"):
        out.append(override("output_dir", sweeper["output_dir"]))
    return out
