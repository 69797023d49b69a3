"""The public API of a task function: report a trial's progress, checkpoint it, get its checkpoint back.

A job written for danlu takes (cfg, ctx) and calls ctx.report. An existing function of one config (a @hydra.main
app's task function, swept with `python train.py -m hydra/sweeper=danlu`, or a job.fn that takes only cfg) reports
through this module instead:

    from orchestrator.api import report, restore

    @hydra.main(config_path="conf", config_name="config", version_base="1.3")
    def main(cfg):
        state = restore()                                     # None on a fresh start, else the last checkpoint
        for epoch in range(1 if state is None else state["epoch"] + 1, cfg.epochs + 1):
            ...
            report(epoch, {"val_acc": acc}, checkpoint={"epoch": epoch, "model": model.state_dict()})
        return acc

Outside a danlu trial (the app run by itself, `python train.py`) report does nothing and restore returns None, so
the same code runs as it always did. A function that never reports gives its return value as its one result: a
number is the sweep's metric, a mapping is metrics by name; ASHA then has nothing to stop early.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import BadInput

_lock = threading.Lock()
_current: _Active | None = None  # the running trial's context: one trial at a time runs in a process


@dataclass
class _Active:
    ctx: Any  # orchestrator.trial.ctx.Context
    reports: int = 0


def report(step: int, metrics: Mapping[str, float], checkpoint: Any | None = None) -> None:
    """Report the metrics of `step` (an int, counting up) to the trial this function runs as, with an optional
    checkpoint state (anything picklable; torch tensors too). Outside a danlu trial: nothing."""
    active = _current
    if active is None:
        return
    active.reports += 1
    active.ctx.report(step, metrics, checkpoint=checkpoint)


def restore() -> Any | None:
    """The state of the trial's last checkpoint (after a retry or a resumed sweep), or None: a fresh start, or
    outside a danlu trial."""
    active = _current
    return None if active is None else active.ctx.restore()


def in_trial() -> bool:
    """Whether this code runs as a danlu trial (a sweep's, or danlu run's)."""
    return _current is not None


@contextmanager
def active(ctx) -> Iterator[_Active]:
    """report and restore go to `ctx` within the block (orchestrator.trial.trainable.call_job)."""
    global _current
    with _lock:
        before, _current = _current, _Active(ctx)
        mine = _current
    try:
        yield mine
    finally:
        _current = before


def takes_config_only(fn) -> bool:
    """Whether `fn` is a task function, fn(cfg), rather than a job, fn(cfg, ctx): a @hydra.main function (Hydra's
    wrapper takes an optional config; the function it wraps, one), or a function with one parameter to fill."""
    target = inspect.unwrap(fn)
    try:
        params = [p for p in inspect.signature(target).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return len(params) == 1


def report_return(ctx, value, metric: str | None) -> None:
    """A task function that reported nothing: its return value as its one report (step 1)."""
    if isinstance(value, Mapping):
        metrics = dict(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and metric:
        metrics = {metric: value}
    else:
        raise BadInput(f"the task function returned {type(value).__name__} {str(value)[:80]!r} and reported nothing: "
                       "return a number (the sweep's metric) or a mapping of metrics, or call "
                       "orchestrator.api.report(step, metrics) as it runs.")
    ctx.report(1, metrics)
