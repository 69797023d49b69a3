"""Schedulers: when a sweep stops trials early. One module per scheduler, chosen by the `scheduler` config group.

`danlu sweep scheduler=fifo` composes conf/scheduler/fifo.yaml, whose `name` is the module here that builds it.
Each module has two functions:
- check(sch): refuse, as BadInput naming the key, settings it cannot take. Runs in plan(), before Ray starts.
- make(sch, seeds, say) -> a Ray Tune TrialScheduler. `seeds` is sweep.seeds (a scheduler may judge a
  configuration's seeds together); `say` prints a line on the sweep's terminal.
A scheduler with state to carry over a resume has state() and load_state(dict) (orchestrator.tuner.SchedulerState
saves it in Tune's experiment checkpoint) and a set `stopped_early` of the trial ids it stopped before the end.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrator import parts

_HELPERS = ("group_rungs", "tune_asha")


def available() -> list[str]:
    return parts.names(__name__, _HELPERS)


def module(sch):
    return parts.load(__name__, str(sch.get("name")), _HELPERS, "scheduler", "scheduler")


def check(sch) -> None:
    module(sch).check(sch)


def make(sch, seeds: list[int], say: Callable[[str], None] = print):
    return module(sch).make(sch, list(seeds), say)


def saved_decisions(storage_dir) -> list[dict] | None:
    """The seed-aware scheduler's decisions as Tune's newest snapshot in a sweep's storage holds them (callback
    states, SchedulerState first: orchestrator.tuner), or None. Plain pickle reads them: they are plain data."""
    import glob
    import os
    import pickle

    files = glob.glob(os.path.join(str(storage_dir), "callback-states-*.pkl"))
    if not files:
        return None
    with open(max(files), "rb") as f:  # newest session by name, as Tune picks it
        states = pickle.load(f)
    first = (states or {}).get(0) or {}
    groups = (first.get("scheduler") or {}).get("groups")
    return list(groups["decisions"]) if groups else None
