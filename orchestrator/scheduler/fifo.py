"""No early stopping: every trial runs to the end (Ray Tune's FIFOScheduler)."""

from __future__ import annotations

from orchestrator.scheduler import Schedule, _length, tune_class


def check(ctx) -> None:
    """FIFO has no settings of its own."""


def schedule(sch, epochs) -> Schedule:
    """Every trial runs the job's length (epochs), deciding nothing on the way."""
    return Schedule(_length(epochs))


def make(ctx):
    """Tune's FIFOScheduler, recording nothing stopped early."""
    from orchestrator.scheduler.fifo import FIFO

    return FIFO()


def _fifo():
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler


__getattr__ = tune_class(__name__, "FIFO", _fifo)  # FIFO: Recording + FIFOScheduler, made when first used
