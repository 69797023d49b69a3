"""The job contract's `ctx`: how a job reports progress and gets its last checkpoint back.

A job is `train(cfg, ctx)` and knows nothing of Ray or MLflow:

    state = ctx.restore()                          # None on a fresh start, else the last checkpoint
    for epoch in range(start, cfg.epochs):
        ...
        ctx.report(epoch, {"val_acc": acc}, checkpoint=state_dict)

Two implementations: LocalContext here (`danlu run`, in-process), TuneContext in orchestrator.trial.trainable.
Checkpoints are any picklable state (torch tensors included), saved with torch.save.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, Protocol

from orchestrator.errors import BadInput


class Context(Protocol):
    def report(self, step: int, metrics: Mapping[str, float], checkpoint: Any | None = None) -> None:
        """Report the metrics of `step` (an int; metrics: name -> number), with an optional checkpoint state."""

    def restore(self) -> Any | None:
        """The state of the last checkpoint this trial reported, or None for a fresh start."""


def check_metrics(step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
    """Metrics must be a mapping of names to numbers; `step` an int. Returns plain floats."""
    if not isinstance(step, int) or isinstance(step, bool):
        raise TypeError(f"ctx.report: step must be an int, got {step!r}")
    out = {}
    for k, v in metrics.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise TypeError(f"ctx.report: metric {k!r} must be a number, got {v!r}") from None
    return out


class StepOrderError(ValueError):
    """A job reported a step that is not after its last one, within one attempt of a trial."""


def check_step(last: int | None, step: int) -> int:
    """`step`, if it comes after `last` (the attempt's last reported step; None: none yet). A repeated or backward
    step is the job's error, raised where it reports: MLflow keeps one value a step, so the later value would be
    lost. Replays after a restore are a new attempt (a new ctx), and the writer de-duplicates those."""
    if last is not None and step <= last:
        raise StepOrderError(f"ctx.report: step {step} after step {last}: steps must increase "
                             f"({'a repeated' if step == last else 'a backward'} step would overwrite or lose a value)")
    return step


def missing_metric_message(metric: str, reported: list[str]) -> str:
    """The bad-input message for a sweep.metric the job never reports, naming what it does report."""
    return (
        f"sweep.metric={metric}: the job never reports '{metric}'; it reports: "
        f"{', '.join(sorted(reported)) or 'nothing'}. Set sweep.metric to one of those."
    )


class LocalContext:
    """In-process context for `danlu run`: prints each report, keeps the last checkpoint in memory."""

    def __init__(self, metric: str | None = None, stream=None, checkpoint_every: int = 1):
        self.metric = metric
        self.stream = stream or sys.stdout
        self.history: list[tuple[int, dict[str, float]]] = []
        self.checkpoint: Any | None = None
        self.checkpoint_every = max(1, int(checkpoint_every))
        self._t0 = time.monotonic()

    def report(self, step, metrics, checkpoint=None):
        """Keep the report (and the last checkpoint), checking the metric is there from the first report on."""
        values = check_metrics(step, metrics)
        check_step(self.history[-1][0] if self.history else None, step)
        if self.metric and not self.history and self.metric not in values:
            raise BadInput(missing_metric_message(self.metric, list(values)))
        self.history.append((step, values))
        if checkpoint is not None and len(self.history) % self.checkpoint_every == 0:
            self.checkpoint = checkpoint
        shown = "  ".join(f"{k}={v:.4g}" for k, v in values.items())
        print(f"[{time.monotonic() - self._t0:7.1f}s] step {step:>4}  {shown}", file=self.stream, flush=True)

    def restore(self):
        """The last checkpoint reported in this process (danlu run starts fresh: None)."""
        return self.checkpoint
