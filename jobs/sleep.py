"""A job of the same contract that only sleeps: for benchmarks and fast tests of the machinery.

    danlu run job=sleep epochs=5 epoch_s=0.2

Each of `epochs` reports comes after `epoch_s` seconds of "work"; the score is a smooth function of
`x` so that ASHA has something to rank. `fail_at` makes it raise at that epoch, `nan_at` report NaN; `repeat_at`
reports that epoch's step twice, `back_at` reports the step before it again after it, `exit_at` calls
sys.exit(exit_code) after that epoch's report, `print_mb` prints that many MB in its first epoch (jobs that
misbehave).
"""

from __future__ import annotations

import sys
import time


def train(cfg, ctx) -> None:
    state = ctx.restore()
    start = state["epoch"] if state else 0
    for epoch in range(start + 1, cfg.epochs + 1):
        time.sleep(cfg.epoch_s)
        if cfg.get("print_mb") and epoch == 1:
            for i in range(int(cfg.print_mb * 1024)):  # lines of 1 KB, numbered
                print(f"{i:09d}" + "x" * 1014)
        if cfg.fail_at and epoch >= cfg.fail_at:
            raise RuntimeError(f"sleep job: failing at epoch {epoch} as asked (fail_at={cfg.fail_at})")
        score = (1 - (cfg.x - 0.7) ** 2) * epoch / cfg.epochs + 0.001 * cfg.seed
        if cfg.nan_at and epoch >= cfg.nan_at:
            score = float("nan")
        ctx.report(epoch, {"score": score}, checkpoint={"epoch": epoch} if cfg.checkpoint_state else None)
        if cfg.get("repeat_at") and epoch == cfg.repeat_at:
            ctx.report(epoch, {"score": score + 0.01})
        if cfg.get("back_at") and epoch == cfg.back_at:
            ctx.report(epoch - 1, {"score": score})
        if cfg.get("exit_at") and epoch == cfg.exit_at:
            sys.exit(cfg.get("exit_code", 0))
