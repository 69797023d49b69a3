"""A job of the contract with a known answer on a discrete metric: an accuracy on `n_examples` held-out examples.

    danlu run job=binomial rate=0.9 seed=3

`val_acc` at the last epoch is k / n_examples, k the number of examples the seed's model gets right: each of the
n_examples is right with probability `rate`, independently, drawn from the seed (and `stream`, so that two
configurations get independent draws). So its values are multiples of 1/450, and its seed-to-seed spread is a
binomial one, sd = sqrt(rate (1 - rate) / n_examples), as for a real classifier's accuracy on a fixed split.
With `shared_noise: true` the draws are the seed's alone (every configuration gets the same k for a seed) and
`offset` examples are added: two configurations then differ by exactly `offset` examples on every seed (the
statistics' hardest case: equal differences, nothing else). Earlier epochs report it scaled by epoch / epochs.
For the statistics tests (tests/test_stats.py) and danlu compare's.
"""

from __future__ import annotations

import random
import time


def correct(rate: float, n_examples: int, seed: int, stream: str = "") -> int:
    """How many of n_examples the seed's model gets right: Binomial(n_examples, rate), drawn from (stream, seed)."""
    rng = random.Random(f"{stream}:{seed}")
    return sum(rng.random() < rate for _ in range(n_examples))


def accuracy(rate: float, seed: int, n_examples: int = 450, stream: str = "", shared_noise: bool = False,
             offset: int = 0) -> float:
    k = correct(rate, n_examples, seed, "" if shared_noise else stream) + offset
    return min(max(k, 0), n_examples) / n_examples


def train(cfg, ctx) -> None:
    stream = f"{cfg.rate}:{cfg.offset}:{cfg.arm}"
    end = accuracy(cfg.rate, cfg.seed, cfg.n_examples, stream, cfg.shared_noise, cfg.offset)
    state = ctx.restore()
    for epoch in range((state or {}).get("epoch", 0) + 1, cfg.epochs + 1):
        time.sleep(cfg.epoch_s)
        ctx.report(epoch, {"val_acc": end * epoch / cfg.epochs}, checkpoint={"epoch": epoch})
