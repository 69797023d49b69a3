"""A job of the contract with a known answer: its metric is the configuration's true mean plus the seed's noise.

    danlu run job=noisy mean=0.8 noise=0.05 seed=3

`score` at the last epoch is mean + noise * z + (luck if seed == lucky_seed), z ~ N(0, 1) drawn from the seed
(and `stream`, so that two configurations with equal means get independent noise); earlier epochs report it
scaled by epoch / epochs, so that ASHA's rungs rank as the end would. `profile` names an entry of `profiles`
that sets mean, luck and epoch_s together (a configuration is then one value: profile=steady,lucky,...).
For the statistics tests and the seed-aware scheduler's.
"""

from __future__ import annotations

import random
import time


def final_score(mean: float, noise: float, seed: int, stream: str = "", luck: float = 0.0, lucky_seed: int = 0):
    z = random.Random(f"{stream}:{seed}").gauss(0.0, 1.0)
    return mean + noise * z + (luck if seed == lucky_seed else 0.0)


def train(cfg, ctx) -> None:
    p = dict(cfg.profiles[cfg.profile]) if cfg.profile else {}
    mean, luck, epoch_s = p.get("mean", cfg.mean), p.get("luck", cfg.luck), p.get("epoch_s", cfg.epoch_s)
    stream = cfg.profile or f"{mean}"
    end = final_score(mean, cfg.noise, cfg.seed, stream, luck, cfg.lucky_seed)
    state = ctx.restore()
    for epoch in range((state or {}).get("epoch", 0) + 1, cfg.epochs + 1):
        time.sleep(epoch_s)
        ctx.report(epoch, {"score": end * epoch / cfg.epochs}, checkpoint={"epoch": epoch})
