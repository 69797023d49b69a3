"""The median stopping rule (Ray Tune's MedianStoppingRule): stop a trial whose best result so far is worse than
the median of the other trials' running means at the same step.

Time is counted in reports (training_iteration), as for ASHA. Unlike ASHA it has no rungs: it may stop a trial at
any report past the grace period, so the progress line's ETA counts every trial to its end (an overestimate
under this rule). It judges each trial alone: with several seeds a configuration's seeds may stop at different
steps, and the report then compares the configuration at the step all its seeds reached
(orchestrator/report/_data.py). Use ASHA where seeds must stop together.
"""

from __future__ import annotations

from orchestrator.config import checks
from orchestrator.scheduler import Schedule, _length, tune_class

TIME_ATTR = "training_iteration"


def check(ctx) -> None:
    """grace_period: reports before any stop; min_samples_required: trials at a step before its median counts."""
    sch = ctx.sch
    checks.number("scheduler.grace_period", sch.get("grace_period"), 1, note="(reports before a trial may stop)")
    checks.integer("scheduler.min_samples_required", sch.get("min_samples_required"), 1,
                   note="(trials that must reach a step before its median is trusted)")


def schedule(sch, epochs) -> Schedule:
    """No rungs: a decision may come at any report; every trial may run the job's length."""
    return Schedule(_length(epochs))


def make(ctx):
    """The rule, in reports, stopping trials outright (hard_stop), recording the ones it stopped."""
    from orchestrator.scheduler.median import Median

    sch = ctx.sch
    return Median(time_attr=TIME_ATTR, grace_period=float(sch.grace_period),
                  min_samples_required=int(sch.min_samples_required), hard_stop=True)


def _rule():
    from ray.tune.schedulers import MedianStoppingRule

    return MedianStoppingRule


def _on_trial_result(self, tune_controller, trial, result):
    decision = _rule().on_trial_result(self, tune_controller, trial, result)
    if decision == "STOP":  # TrialScheduler.STOP
        self.stopped_early.add(trial.trial_id)
    return decision


__getattr__ = tune_class(__name__, "Median", _rule, {"on_trial_result": _on_trial_result})
