"""The danlu sweeper: an existing @hydra.main app's task function as the trials of a danlu sweep.

    python train.py -m hydra/sweeper=danlu hydra.sweeper.metric=val_acc hydra.sweeper.seeds=[0,1,2] \\
        'optimizer.lr=tag(log, interval(1e-4, 1e-1))' model=small,large

Ray Tune runs the trials with (seed-aware) ASHA, MLflow gets one parent run and one child run per trial, and the
morning report is attached to the parent, as for `danlu sweep`. Swept keys on the command line (Hydra's sweep
grammar) and in hydra.sweeper.space are the app's own keys and config groups; plain ones apply to every trial.
The task function reports per epoch through orchestrator.api.report (a no-op outside danlu); a function that does
not report gives its return value as its one result. The same command with the same hydra.sweeper.name resumes a
sweep whose driver was killed; with hydra.sweeper.extend=true and more samples, seeds or a new space, it grows an
ended sweep in place, as `danlu extend` does. Hydra's own plugin discovery finds this module (the hydra_plugins namespace); Hydra
requires a plugin's class to live there, so the class is here and the work is in orchestrator.trial.hydra_app.

No `from __future__ import annotations` and typing's Optional/List/Dict here: Hydra's plugin scan runs this module
before it is in sys.modules (where dataclasses looks string annotations up), and OmegaConf reads these types.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig


@dataclass
class DanluSweeperConf:
    """hydra.sweeper.* of `hydra/sweeper=danlu`: danlu's settings for a Hydra app's sweep."""

    _target_: str = "hydra_plugins.danlu_sweeper.danlu_sweeper.DanluSweeper"
    metric: Optional[str] = None  # what the task function reports (or returns) and the sweep ranks on: required
    mode: str = "max"  # max | min
    num_samples: int = 8  # configurations sampled from the space (search=random, optuna, hyperopt)
    seeds: List[int] = field(default_factory=lambda: [0])  # every configuration runs once per seed: replicates
    seed_key: Optional[str] = "seed"  # the app's config key set to the trial's seed (++key: added if absent); null: none
    space: Dict[str, Any] = field(default_factory=dict)  # app key -> sweep expression (Hydra's grammar), with the
    #                                                      command line's swept keys
    epochs: Optional[int] = None  # reports a trial makes (ASHA's max_t); null: the app's own `epochs` key, else 1
    name: Optional[str] = None  # the sweep's name (null: <task>-<time>); a fixed one lets the same command resume it
    output_dir: str = "outputs"  # the sweeps' storage: <output_dir>/<name>/ (Ray's experiment, danlu's state)
    max_concurrent_trials: Optional[int] = None  # null: as many as the resources allow
    search_seed: Optional[int] = None  # seeds the sampling of configurations (null: a fresh one, kept)
    budget: Dict[str, Any] = field(default_factory=lambda: _blank("sweep.budget"))  # gpu_hours, cpu_hours, wall_time: stop gracefully at one
    # danlu's config groups: `option` chooses the group's file (danlu's, in orchestrator/conf/; {}: danlu's default,
    # as orchestrator/conf/danlu.yaml chooses it), the other keys change its settings, e.g.
    # hydra.sweeper.scheduler.option=fifo, hydra.sweeper.scheduler.grace_period=1
    scheduler: Dict[str, Any] = field(default_factory=lambda: _blank("scheduler"))  # asha | median | fifo
    search: Dict[str, Any] = field(default_factory=lambda: _blank("search"))  # random | grid | optuna | hyperopt
    resources: Dict[str, Any] = field(default_factory=lambda: _blank("resources"))  # cpu | gpu | quarter_gpu; cpu=, gpu=
    cluster: Dict[str, Any] = field(default_factory=lambda: _blank("cluster"))  # local | remote; address=
    tracking: Dict[str, Any] = field(default_factory=lambda: _blank("tracking"))  # local (sqlite) | server; uri=
    report: Dict[str, Any] = field(default_factory=lambda: _blank("report"))  # sections=[...]
    # danlu's root settings, key by key (orchestrator/conf/danlu.yaml): every=, keep=; max_failures=, stop_on_nan=
    checkpoint: Dict[str, Any] = field(default_factory=lambda: _blank("checkpoint"))
    failure: Dict[str, Any] = field(default_factory=lambda: _blank("failure"))
    # grow the ended sweep named hydra.sweeper.name by what this command changes (num_samples, seeds, space), as
    # `danlu extend` does (docs/review.md); top: with more seeds, the report's best K configurations only
    extend: bool = False
    top: Optional[int] = None


def _blank(section: str) -> Dict[str, Any]:
    """Every key that danlu's own config has in `section` (a group: the union over its options' files; else that
    section of danlu.yaml), each null (null: danlu's value), and `option` for a group. Hydra's configs are closed to
    new keys, so the keys must be there for hydra.sweeper.scheduler.grace_period=1 to be settable without a `+`;
    they are read from danlu's files, never listed twice."""
    from pathlib import Path

    import yaml

    import orchestrator.conf

    conf = Path(orchestrator.conf.__file__).parent
    if (conf / section).is_dir():
        keys = {"option": None}
        for path in sorted((conf / section).glob("*.yaml")):
            keys |= {k: None for k in yaml.safe_load(path.read_text()) or {} if k != "name"}
        return keys
    node = yaml.safe_load((conf / "danlu.yaml").read_text())
    for part in section.split("."):
        node = node[part]
    return {k: None for k in node}


ConfigStore.instance().store(group="hydra/sweeper", name="danlu", node=DanluSweeperConf, provider="danlu")


class DanluSweeper(Sweeper):
    """Hydra's Sweeper interface: setup() is given the app; sweep() runs the danlu sweep of the command line."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config: Optional[DictConfig] = None
        self.hydra_context = None
        self.task_function = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        """Hydra hands over the app: its context (config loader), task function and composed config."""
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def sweep(self, arguments: list[str]) -> Any:
        """Run the danlu sweep of the command line's overrides (`arguments`); exit with danlu's codes when it did
        not end well (2: bad input, 1: failed)."""
        from orchestrator.errors import BadInput, SweepFailed

        try:
            code = self._sweep(arguments)
        except BadInput as exc:
            print(f"danlu: error: {exc}", file=sys.stderr)
            code = 2
        except SweepFailed as exc:
            print(f"danlu: error: {exc}", file=sys.stderr)
            code = 1
        except KeyboardInterrupt:
            print("\ndanlu: interrupted", file=sys.stderr)
            code = 130
        if code:
            raise SystemExit(code)  # danlu's exit codes (2 bad input, 1 failed), past Hydra's own reporting
        return []

    def _sweep(self, arguments: list[str]) -> int:
        import copy
        import logging

        from omegaconf import OmegaConf, open_dict

        from orchestrator.config.compose import plain, split_overrides
        from orchestrator.errors import BadInput
        from orchestrator.launch.extension import NotEnded
        from orchestrator.launch.plan import plan
        from orchestrator.run.sweep import run_sweep
        from orchestrator.trial.hydra_app import App, settings_overrides, task_path

        config = self.config
        if config is None:  # Hydra calls setup() before sweep()
            raise RuntimeError("the sweeper was not set up")
        settings = plain(config.hydra.sweeper)
        fn, root = task_path(self.task_function)
        cl = split_overrides(list(arguments))
        space = {str(k): str(v) for k, v in (settings.get("space") or {}).items()} | cl.sweep
        # the multirun folder, fixed here as an absolute path: a trial runs in a Ray worker, at another time (its
        # ${now:...}) and in another working directory
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        master = copy.deepcopy(config)
        OmegaConf.set_readonly(master, False)
        with open_dict(master):
            master.hydra.sweep.dir = str(sweep_dir)
        command = [Path(sys.executable).name, *sys.argv]
        app = App(self.hydra_context, master, fn, root, cl.fixed, settings.get("seed_key"),
                  str(settings.get("metric") or ""), str(sweep_dir), command)
        overrides = settings_overrides(settings, config.hydra.job.name, fn)
        epochs, said = _epochs(settings, app)
        overrides.append(f"+epochs={epochs}")
        from orchestrator.config.compose import package_conf_dir

        conf = package_conf_dir()
        if said:  # one report a trial: a scheduler's grace period (2 by default) would exceed it
            overrides += _one_report(conf, overrides)
        p = plan(overrides, conf, app=app, app_space=space)
        # Hydra's multirun folder, as its basic sweeper makes it: the trials' output folders go under it
        made = next((d for d in reversed([sweep_dir, *sweep_dir.parents]) if not d.exists()), None)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(master, sweep_dir / "multirun.yaml")
        if said:
            print(f"danlu: {said}", flush=True)
        # the report's plots log through matplotlib, whose INFO lines Hydra's logging would print
        logging.getLogger("matplotlib").setLevel(logging.WARNING)
        # what a later command must match to resume it; `app:` also tells danlu report that this is an app's sweep
        identity = overrides + [f"app:{fn}"] + [f"app:{o}" for o in cl.fixed] + \
            [f"app:space.{k}={v}" for k, v in sorted(space.items())]
        try:  # an interrupted sweep says how to resume it (the app's command with its name: Plan.resume)
            return run_sweep(identity, conf, planned=p, preflight=False, command=command,
                             extend=_extension(settings, identity, command))
        except NotEnded as exc:
            raise BadInput(f"{exc}: resume it to its end with the command that began it (without "
                           "hydra.sweeper.extend), then extend it.") from None
        except BadInput:  # refused before anything ran (storage, tracking, a lock): leave no multirun folder either
            if made is not None and [f.name for f in sweep_dir.iterdir()] == ["multirun.yaml"]:
                import shutil

                shutil.rmtree(made)  # the folders this command made, holding nothing but multirun.yaml
            raise


def _extension(settings: dict, identity: List[str], command: List[str]):
    """hydra.sweeper.extend=true: the extension Request of the sweep named hydra.sweeper.name (None: a sweep, or its
    resume). BadInput for a top without extend, or an extension without a name to find the sweep by."""
    from orchestrator.errors import BadInput
    from orchestrator.launch.extension import Request, check_top

    top = settings.get("top")
    check_top(top, bool(settings.get("extend")), "hydra.sweeper.top", "hydra.sweeper.extend=true")
    if not settings.get("extend"):
        return None
    if not settings.get("name"):
        raise BadInput("hydra.sweeper.extend=true: name the sweep to grow, hydra.sweeper.name=NAME (the name it "
                       "printed, under hydra.sweeper.output_dir).")
    return Request(list(identity), top, list(command))


def _one_report(conf: Path, overrides: list[str]) -> list[str]:
    """grace_period=1 for a scheduler that has one, so that a sweep of one report a trial is valid."""
    from orchestrator.config.compose import compose, hydra_context

    with hydra_context(conf):
        cfg = compose([o for o in overrides if o.split("=", 1)[0].split(".")[0] in ("scheduler", "+epochs")])
    return ["scheduler.grace_period=1"] if "grace_period" in cfg.scheduler else []


def _epochs(settings: dict, app) -> tuple[int, str]:
    """A trial's length in reports (ASHA's max_t): hydra.sweeper.epochs, else the app's own `epochs`; else 1, with
    what that means said."""
    if settings.get("epochs") is not None:
        return int(settings["epochs"]), ""
    base = app.compose(app.fixed)
    value = base.get("epochs") if "epochs" in base else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value, ""
    return 1, ("the app has no `epochs` and hydra.sweeper.epochs is null: each trial's first report (or the task "
               "function's return value) is its one result, and ASHA has nothing to stop early. Set "
               "hydra.sweeper.epochs to the reports a trial makes to stop trials early.")
