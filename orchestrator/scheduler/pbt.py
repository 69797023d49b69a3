"""Population-based training (Ray Tune's PopulationBasedTraining): every `perturbation_interval` reports, a trial in
the bottom `quantile_fraction` of the population takes the checkpoint of one in the top and a perturbed copy of its
hyperparameters (each value multiplied by 0.8 or 1.2, moved to a neighbouring choice, or drawn anew from the space
with `resample_probability`), then trains on. Time is counted in reports, as for ASHA. Nothing is stopped early.

One seed only. Seeds are replicates of a configuration held fixed; under PBT a trial's hyperparameters change as it
runs and a weak trial continues from a strong trial's weights, so its result belongs to a schedule that emerged
from the whole population: there is no fixed configuration whose seeds could be judged together, and two trials
are no longer independent. A sweep with several seeds is refused, saying so. The report then says that a row is a
trial's starting point (Schedule.mutates), and makes no compare command of it. To test the schedule PBT found,
replay it as a schedule of your job's own under several seeds.

What a user sees of an exploit: a line on the terminal (`danlu: PBT: t002 took a better trial's checkpoint at
report 4: lr 0.01 -> 0.012`); the trial's MLflow run keeps its starting values as params and its last attempt's values in
config.yaml. No trial is exploited at its last report (cfg.epochs), where the copied checkpoint would train no
further; where the job decides its length, a trial that ends where it was exploited is said. A learning searcher (LEARNS: optuna, hyperopt) cannot be combined with it (Tune refuses): PBT is the
search. `perturbation_interval` is a multiple of checkpoint.every, so that the checkpoint an exploit copies is the
one of the report that was judged; every checkpoint is kept (checkpoint.keep does not apply), since any trial's may
be copied: its disk grows with the population times its reports.
"""

from __future__ import annotations

from orchestrator.config import checks
from orchestrator.errors import BadInput
from orchestrator.scheduler import Schedule, _length, tune_class

TIME_ATTR = "training_iteration"


def mutated(ctx) -> list:
    """The space's params that PBT may change: scheduler.mutate's keys (null: every swept value; a config-group
    choice is never one: a trial keeps the model its checkpoint holds)."""
    params = {p.key: p for p in (ctx.space.params if ctx.space is not None else [])}
    keys = ctx.sch.get("mutate")
    if keys is None:
        return [p for p in params.values() if not p.is_group]
    chosen = [str(keys)] if isinstance(keys, str) else [str(k) for k in keys]  # mutate=lr or mutate=[lr,wd]
    unknown = [k for k in chosen if k not in params]
    if unknown:
        raise BadInput(f"scheduler.mutate: {', '.join(unknown)} not swept; the swept keys are "
                       f"{', '.join(params) or 'none'}.")
    groups = [k for k in chosen if params[k].is_group]
    if groups:
        raise BadInput(f"scheduler.mutate: {', '.join(groups)} chooses a config group; PBT changes values only "
                       "(a trial keeps the model its checkpoint holds).")
    return [params[k] for k in chosen]


def check(ctx) -> None:
    """One seed; the settings' numbers; values to mutate; the interval a multiple of checkpoint.every; a
    searcher that does not learn."""
    sch = ctx.sch
    checks.integer("scheduler.perturbation_interval", sch.get("perturbation_interval"), 1,
                   note="(reports between exploit and explore)")
    checks.integer("scheduler.burn_in_period", sch.get("burn_in_period"), 0, note="(reports before the first)")
    checks.fraction("scheduler.quantile_fraction", sch.get("quantile_fraction"))
    checks.fraction("scheduler.resample_probability", sch.get("resample_probability"))
    if not 0 < float(sch.quantile_fraction) <= 0.5:
        raise BadInput(f"scheduler.quantile_fraction={sch.quantile_fraction}: the bottom share that copies the top "
                       "one, above 0 and at most 0.5.")
    if len(ctx.seeds) > 1:
        raise BadInput(f"sweep.seeds={list(ctx.seeds)}: scheduler pbt runs one seed. Under PBT a trial's "
                       "hyperparameters change as it runs and a weak trial continues from a strong trial's "
                       "checkpoint, so there is no fixed configuration whose seeds could be judged as replicates, "
                       "and trials are not independent. Use one seed (sweep.seeds=[0]).")
    if not mutated(ctx):
        raise BadInput("sweep.space: scheduler pbt needs at least one swept value to perturb "
                       "(e.g. lr='tag(log, interval(1e-3,1e-1))'); config-group choices are kept as they start.")
    if int(sch.perturbation_interval) % int(ctx.checkpoint_every):
        raise BadInput(f"scheduler.perturbation_interval={sch.perturbation_interval} is not a multiple of "
                       f"checkpoint.every={ctx.checkpoint_every}: an exploit would copy a checkpoint older than the "
                       "report it judged.")
    if ctx.searcher_learns:
        raise BadInput("search: a searcher that learns from finished configurations cannot run under scheduler pbt "
                       "(PBT is the search; Tune refuses both); use search=random or search=grid.")


def schedule(sch, epochs) -> Schedule:
    """Every trial runs the job's length; its hyperparameters may change on the way (mutates)."""
    return Schedule(_length(epochs), mutates=True)


def make(ctx):
    """Tune's PBT over the trials' hyperparameters (config["hp"]), in reports, announcing each exploit."""
    from orchestrator.scheduler.pbt import PBT

    sch = ctx.sch
    mutations = {p.key: (list(p.values) if p.kind in ("choice", "grid") else p.tune_domain()) for p in mutated(ctx)}
    # metric and mode reach it from Tune's TuneConfig (ctx.metric, ctx.mode): Tune refuses them twice
    made = PBT(time_attr=TIME_ATTR, perturbation_interval=int(sch.perturbation_interval), burn_in_period=int(sch.burn_in_period),
               hyperparam_mutations={"hp": mutations}, quantile_fraction=float(sch.quantile_fraction),
               resample_probability=float(sch.resample_probability), log_config=False)
    made.say = ctx.say
    made.length = ctx.length
    made.keeps_all_checkpoints = True  # an exploit copies a top trial's checkpoint, which must still be there
    return made


def _pbt():
    from ray.tune.schedulers import PopulationBasedTraining

    return PopulationBasedTraining


def _value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _on_trial_result(self, tune_controller, trial, result):
    hp = trial.config.get("hp") or {}
    length = _length(hp.get("epochs", getattr(self, "length", None)))  # a swept epochs is the trial's own
    unused = self.__dict__.setdefault("unused", {})  # trial id -> its exploit no report has followed yet
    unused.pop(trial.trial_id, None)
    if length is not None and result.get(TIME_ATTR, 0) >= length:
        # Its last report: an exploit now would copy a checkpoint the trial never trains on, and its run's results
        # (from the values it ran with) would stand under values it never used. Tune's PBT cannot know a
        # trial's length, so it would.
        from ray.tune.schedulers import TrialScheduler

        return TrialScheduler.CONTINUE
    before = dict(hp)
    decision = _pbt().on_trial_result(self, tune_controller, trial, result)
    after = dict(trial.config.get("hp") or {})
    if after != before:  # exploited: Tune set the trial a perturbed copy of a better trial's config
        changed = "; ".join(f"{k} {_value(before.get(k))} -> {_value(v)}" for k, v in after.items()
                            if before.get(k) != v)
        from orchestrator.trial.names import trial_name

        self.__dict__.setdefault("exploits", []).append({"trial": trial.trial_id, "report": result.get(TIME_ATTR),
                                                         "changed": changed})
        unused[trial.trial_id] = (result.get(TIME_ATTR), before)
        getattr(self, "say", print)(f"danlu: PBT: {trial_name(trial)} took a better trial's checkpoint at "
                                    f"report {result.get(TIME_ATTR)}: {changed}")
    return decision


def _on_trial_complete(self, tune_controller, trial, result):
    """A trial whose job decides its length may end at the report where it was exploited: said, since its run
    then keeps the values it last trained with (config.yaml comes with a report), not the exploit's."""
    from orchestrator.scheduler import Recording

    Recording.on_trial_complete(self, tune_controller, trial, result)
    exploited = self.__dict__.get("unused", {}).pop(trial.trial_id, None)
    if exploited is not None:
        from orchestrator.trial.names import trial_name

        at, kept = exploited
        values = "; ".join(f"{k} {_value(v)}" for k, v in kept.items())
        getattr(self, "say", print)(f"danlu: PBT: {trial_name(trial)} ended at report {at}, where it was exploited: "
                                    f"it trained no further, and its run keeps the values it last trained with "
                                    f"({values}).")


def _getstate(self):  # Tune pickles the scheduler into tuner.pkl; the terminal stays here
    from orchestrator.scheduler import Recording

    return {k: v for k, v in Recording.__getstate__(self).items() if k != "say"}


def _setstate(self, state):
    from orchestrator.scheduler import Recording

    Recording.__setstate__(self, state)
    self.say = print


def _choose(self, tune_controller):
    # Tune's PBT's own choice (the trial furthest behind in time runs first, so the population stays together),
    # not Recording's first-come one
    return _pbt().choose_trial_to_run(self, tune_controller)


__getattr__ = tune_class(__name__, "PBT", _pbt, {"on_trial_result": _on_trial_result,
                                                  "on_trial_complete": _on_trial_complete, "choose_trial_to_run": _choose,
                                                  "__getstate__": _getstate, "__setstate__": _setstate})
