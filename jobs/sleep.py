"""A job of the same contract that only sleeps: for benchmarks and fast tests of the machinery.

    danlu run job=sleep epochs=5 epoch_s=0.2

Each of `epochs` reports comes after `epoch_s` seconds of "work"; the score is a smooth function of
`x` so that ASHA has something to rank. `fail_at` makes it raise at that epoch, `nan_at` report NaN; `repeat_at`
reports that epoch's step twice, `back_at` reports the step before it again after it, `exit_at` calls
sys.exit(exit_code) after that epoch's report (os._exit with `hard_exit`), `hang_at` never reports after that step
(restarted or not), `hog_mb` allocates that many MB at epoch `hog_at`, `print_mb` prints that many MB in its first epoch (jobs
that misbehave); `misbehave=NAME` sets those knobs for one named case (CASES).
"""

from __future__ import annotations

import os
import sys
import time

# `misbehave=NAME`: one knob for each way a job misbehaves, so that one sweep can grid over them
CASES = {
    "raise": {"fail_at": 2}, "nan_metric": {"nan_at": 2}, "repeat": {"repeat_at": 2}, "back": {"back_at": 2},
    "hang": {"hang_at": 2}, "hog": {"hog_mb": 1500, "hog_at": 2}, "print": {"print_mb": 12},
    "exit0": {"exit_at": 2, "exit_code": 0}, "exit3": {"exit_at": 2, "exit_code": 3},
    "os_exit1": {"exit_at": 2, "exit_code": 1, "hard_exit": True},
}


def train(cfg, ctx) -> None:
    case = cfg.get("misbehave") or "none"
    if case != "none":
        from omegaconf import OmegaConf

        if case not in CASES:
            raise ValueError(f"misbehave={case}: one of none, {', '.join(CASES)}")
        cfg = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)), CASES[case])
    state = ctx.restore()
    start = state["epoch"] if state else 0
    for epoch in range(start + 1, cfg.epochs + 1):
        if cfg.get("hang_at") and epoch > cfg.hang_at:
            time.sleep(1e9)  # a dead data loader: no report after step hang_at, however often it is restarted
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
            if cfg.get("hard_exit"):
                os._exit(cfg.get("exit_code", 0))  # no clean-up, no exception: the process is gone
            sys.exit(cfg.get("exit_code", 0))
        if cfg.get("hog_mb") and epoch == cfg.get("hog_at", 1):
            hog = []
            for _ in range(int(cfg.hog_mb) // 50):  # 50 MB at a time, each byte written (resident, not reserved)
                hog.append(bytearray(b"\x01" * (50 * 2**20)))
