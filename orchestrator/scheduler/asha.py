"""Asynchronous successive halving (Ray Tune's ASHAScheduler), seed-aware.

Time is counted in reports (training_iteration): the job reports once per epoch, so the settings are epochs.
With one seed per configuration this is Tune's ASHA, unchanged. With several (sweep.seeds), a rung's
decision is made on a configuration's seed group: when every live seed of the configuration has reached the
rung, the group's mean is compared with the quantile of the group means recorded there before, and all its
seeds continue or stop together (orchestrator/scheduler/_group_rungs.py). A seed that is ahead of its group
waits at the rung (Tune's PAUSE) until the group's decision, and is stopped there if the group is stopped.
The Tune scheduler is in _tune_asha.py (this module is imported by plan(), before Ray).
"""

from __future__ import annotations

from orchestrator.config import checks
from orchestrator.errors import BadInput
from orchestrator.scheduler import Schedule

TIME_ATTR = "training_iteration"
HOLDS_SEEDS = True  # with several seeds, a seed waits at a rung for its configuration's others (check_slots)


def check(ctx) -> None:
    """max_t and grace_period numbers >= 1, reduction_factor >= 2, grace_period at most max_t."""
    sch = ctx.sch
    max_t, grace, rf = sch.get("max_t"), sch.get("grace_period"), sch.get("reduction_factor")
    for key, v, low in (("max_t", max_t, 1), ("grace_period", grace, 1), ("reduction_factor", rf, 2)):
        checks.number(f"scheduler.{key}", v, low)
    if grace > max_t:
        raise BadInput(f"scheduler.grace_period={grace} exceeds scheduler.max_t={max_t}: nothing could be stopped early.")


def schedule(sch, epochs) -> Schedule:
    """max_t, and the rungs below it where ASHA decides (reaching max_t ends a trial and decides nothing)."""
    from orchestrator.scheduler._group_rungs import milestones

    max_t, rf = float(sch["max_t"]), float(sch["reduction_factor"])
    return Schedule(max_t, tuple(r for r in milestones(float(sch["grace_period"]), max_t, rf) if r < max_t), rf)


def make(ctx):
    """Seed-aware ASHA (orchestrator/scheduler/_tune_asha.py), counting time in reports."""
    from orchestrator.scheduler._tune_asha import ASHA

    sch = ctx.sch
    return ASHA(seeds=ctx.seeds, say=ctx.say, time_attr=TIME_ATTR, max_t=sch.max_t, grace_period=sch.grace_period,
                reduction_factor=sch.reduction_factor)
