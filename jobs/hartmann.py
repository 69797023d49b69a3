"""A synthetic job of the same contract with a known optimum: the Hartmann-6 function, for search benchmarks.

    danlu run job=hartmann x1=0.2 x2=0.15 x3=0.48 x4=0.28 x5=0.31 x6=0.66

It reports `value` (minimise) once per step (`epochs` of them): the function plus seeded Gaussian noise whose spread shrinks
as steps go on (noise / sqrt(step)), a fidelity that improves with steps so that ASHA has something to rank.
The global minimum is -3.32237 at (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573).
"""

from __future__ import annotations

import math
import random

OPTIMUM = -3.32237
_ALPHA = (1.0, 1.2, 3.0, 3.2)
_A = ((10, 3, 17, 3.5, 1.7, 8), (0.05, 10, 17, 0.1, 8, 14), (3, 3.5, 1.7, 10, 17, 8), (17, 8, 0.05, 10, 0.1, 14))
_P = ((1312, 1696, 5569, 124, 8283, 5886), (2329, 4135, 8307, 3736, 1004, 9991),
      (2348, 1451, 3522, 2883, 3047, 6650), (4047, 8828, 8732, 5743, 1091, 381))


def hartmann6(x) -> float:
    return -sum(a * math.exp(-sum(A[j] * (x[j] - P[j] * 1e-4) ** 2 for j in range(6)))
                for a, A, P in zip(_ALPHA, _A, _P, strict=True))


def train(cfg, ctx) -> None:
    x = [float(cfg[f"x{i}"]) for i in range(1, 7)]
    true = hartmann6(x)
    rng = random.Random(f"{cfg.seed}:{x}")  # the same trial reports the same values when run again
    for step in range(1, cfg.epochs + 1):
        ctx.report(step, {"value": true + rng.gauss(0.0, cfg.noise) / math.sqrt(step)})
