"""The statistics of danlu's evidence: seeds are replicates, so every claim is a mean with its uncertainty.

- t_interval: mean, standard deviation and the two-sided Student-t confidence interval over seeds.
- versus_best: each configuration against the best, paired over the seeds they share (paired t-test,
  scipy.stats.ttest_rel), p-values adjusted for the number of comparisons by Holm's step-down method.
- paired: the effect of A over B, its t-interval, the paired test, and the smallest effect the design could
  detect (two-sided, alpha 0.05, power 0.8, with the observed spread of the differences).
scipy provides the tests and the t distribution; it has no Holm adjustment (false_discovery_control is
Benjamini-Hochberg, which controls another error rate), so that one is here, in five lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LEVEL = 0.95
ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Interval:
    n: int
    mean: float
    sd: float  # NaN with one value
    low: float  # NaN with one value: no interval can be given
    high: float


def t_interval(values, level: float = LEVEL) -> Interval:
    from scipy import stats

    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan)
    mean = sum(xs) / n
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(n, mean, sd, mean - half, mean + half)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN), in the given order."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if p == p)
    adjusted, running = [math.nan] * len(pvalues), 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


def paired_p(a: dict, b: dict) -> tuple[float, int]:
    """Two-sided paired t-test over the seeds both have: (p, pairs). NaN with fewer than two pairs; when every
    difference is the same (a deterministic effect, to rounding), 1.0 if it is zero and 0.0 if not."""
    from scipy import stats

    shared = sorted(set(a) & set(b))
    if len(shared) < 2:
        return math.nan, len(shared)
    d = [a[s] - b[s] for s in shared]
    scale = max(1.0, max(abs(x) for x in d))
    if max(d) - min(d) <= 1e-9 * scale:  # no spread (rounding aside): the t statistic is undefined
        return (1.0 if abs(sum(d)) <= 1e-9 * scale * len(d) else 0.0), len(shared)
    return float(stats.ttest_rel([a[s] for s in shared], [b[s] for s in shared]).pvalue), len(shared)


def versus_best(groups: dict[str, dict[int, float]], best: str) -> dict[str, dict]:
    """For each configuration other than the best: its paired p-value against the best, Holm-adjusted over all
    comparisons, and whether it is indistinguishable from the best (adjusted p >= ALPHA, or too few pairs)."""
    others = [c for c in groups if c != best]
    raw = [paired_p(groups[best], groups[c]) for c in others]
    adj = holm([p for p, _ in raw])
    out = {best: {"p": None, "p_holm": None, "pairs": len(groups[best]), "indistinguishable": True}}
    for c, (p, pairs), pa in zip(others, raw, adj, strict=True):
        out[c] = {"p": None if p != p else p, "p_holm": None if pa != pa else pa, "pairs": pairs,
                  "indistinguishable": not (pa == pa and pa < ALPHA)}
    return out


@dataclass(frozen=True)
class Paired:
    n: int
    effect: float  # mean of A - B over the shared seeds
    low: float
    high: float
    p: float
    detectable: float  # the smallest |effect| this design detects with POWER at ALPHA (NaN with n < 2)


def paired(a: dict, b: dict) -> Paired:
    from scipy import stats

    shared = sorted(set(a) & set(b))
    ci = t_interval([a[s] - b[s] for s in shared])
    p, _ = paired_p(a, b)
    if ci.n < 2:
        return Paired(ci.n, ci.mean, math.nan, math.nan, math.nan, math.nan)
    df = ci.n - 1
    detectable = (stats.t.ppf(1 - ALPHA / 2, df) + stats.t.ppf(POWER, df)) * ci.sd / math.sqrt(ci.n)
    return Paired(ci.n, ci.mean, ci.low, ci.high, p, detectable)


def pooled_sd(groups: dict[str, dict[int, float]]) -> tuple[float, int]:
    """The seed-to-seed standard deviation within configurations, pooled over those with two seeds or more:
    (sd, degrees of freedom). NaN and 0 when no configuration has two seeds."""
    ss, df = 0.0, 0
    for vs in groups.values():
        xs = list(vs.values())
        if len(xs) > 1:
            m = sum(xs) / len(xs)
            ss += sum((x - m) ** 2 for x in xs)
            df += len(xs) - 1
    return (math.sqrt(ss / df), df) if df else (math.nan, 0)
