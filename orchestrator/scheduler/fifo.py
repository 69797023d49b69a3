"""No early stopping: every trial runs to the end (Ray Tune's FIFOScheduler)."""

from __future__ import annotations


def check(sch) -> None:
    pass


def make(sch, seeds, say):
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()
