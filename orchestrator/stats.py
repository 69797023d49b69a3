"""The statistics of danlu's evidence: seeds are replicates, so every claim is a mean with its uncertainty, and
every claim is valid for the n and the metric at hand (discrete metrics, ties, one seed, three seeds).

- Paired comparisons (danlu compare; each configuration against the best) use the exact sign-flip permutation
  test of the paired differences (scipy.stats.permutation_test, permutation_type="samples": every pair's
  difference keeps or flips its sign under the null of no effect). It assumes nothing of the metric's
  distribution: a discrete accuracy (k/450), ties and equal differences are fine. It is exact up to
  EXACT_MAX_N pairs (all 2^n flips), and uses RESAMPLES random flips with a fixed seed beyond. Its smallest
  two-sided p-value with n pairs is 2/2^n: below 6 pairs nothing can reach 0.05, and with m comparisons
  Holm's adjustment needs m·2/2^n < 0.05 (`seeds_to_decide`). Where that cannot be reached the verdict says
  the question cannot be decided with these seeds, and how many could: never "no difference".
- Holm's step-down adjustment of the p-values over the comparisons with the best (scipy has no Holm:
  false_discovery_control is Benjamini-Hochberg, which controls another error rate; it is five lines here).
- The interval of an effect inverts that same test: the shifts d for which the test on (differences - d) does
  not reject at 5 %. It is unbounded when the test cannot reject at all (n < 6), and never narrower than the
  metric's resolution (the smallest nonzero gap between observed values: 1/450 for an accuracy on 450
  examples), so that values that are discrete and coincide do not collapse it to a point. scipy inverts no
  permutation test, so the inversion is here; it evaluates the same null distribution as the test.
- A configuration's mean over seeds comes with a Student-t interval, also never narrower than the resolution.
- The smallest effect a design can detect (80 % power, two-sided 5 %) uses the t approximation with the
  observed spread of the differences, where the exact test can reject at all; `seeds_for` turns an observed
  effect and spread into the seeds a follow-up needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

LEVEL = 0.95
ALPHA = 0.05
POWER = 0.8
EXACT_MAX_N = 16  # up to 2^16 sign patterns, enumerated exactly
RESAMPLES = 100_000  # random sign patterns beyond that
SEED = 20240601  # of those random patterns: the same data always give the same p-value
TEST_NAME = "exact sign-flip permutation test of the paired differences"


@dataclass(frozen=True)
class Interval:
    n: int
    mean: float
    sd: float  # NaN with one value
    low: float  # NaN with one value: no interval can be given
    high: float


def resolution(values) -> float:
    """The smallest nonzero gap between distinct observed values (NaN with fewer than two distinct values)."""
    xs = sorted({float(v) for v in values if v == v})
    gaps = [b - a for a, b in zip(xs, xs[1:], strict=False) if b - a > 1e-12 * max(1.0, abs(b))]
    return min(gaps) if gaps else math.nan


def _floor(low: float, high: float, centre: float, width: float) -> tuple[float, float]:
    """An interval at least `width` wide (around its centre when it is narrower)."""
    if width == width and high - low < width:
        return centre - width / 2, centre + width / 2
    return low, high


def t_interval(values, level: float = LEVEL, floor: float = math.nan) -> Interval:
    """The mean of `values` with its Student-t interval at `level`; never narrower than `floor` (the metric's
    resolution). One value: no interval (NaN bounds)."""
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
    low, high = _floor(mean - half, mean + half, mean, floor)
    return Interval(n, mean, sd, low, high)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN), in the given order."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if p == p)
    adjusted, running = [math.nan] * len(pvalues), 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


def min_p(n: int) -> float:
    """The smallest two-sided p-value the sign-flip test can give with n pairs."""
    return 1.0 if n < 1 else min(1.0, 2.0 / 2.0**n)


def seeds_to_decide(comparisons: int = 1, alpha: float = ALPHA) -> int:
    """The fewest paired seeds with which `comparisons` Holm-adjusted sign-flip tests can reach p < alpha."""
    return max(1, math.floor(math.log2(2 * max(1, comparisons) / alpha)) + 1)


def sign_flip_p(diffs) -> float:
    """Two-sided p-value of the sign-flip permutation test of the mean of paired differences (scipy)."""
    import numpy as np
    from scipy import stats

    d = np.asarray([float(x) for x in diffs])
    if len(d) < 2:  # one pair: no test (its two sign patterns give p = 1 whatever the difference)
        return math.nan
    if not np.any(d):
        return 1.0
    exact = len(d) <= EXACT_MAX_N
    r = stats.permutation_test((d,), np.mean, permutation_type="samples", vectorized=True, axis=-1,
                               n_resamples=np.inf if exact else RESAMPLES, alternative="two-sided",
                               rng=None if exact else np.random.default_rng(SEED))
    return float(min(1.0, r.pvalue))


class _SignFlips:
    """The sign-flip null of a set of differences, evaluated for any shift at once (for inverting the test).
    The same patterns as the test: every one of 2^n up to EXACT_MAX_N pairs, else RESAMPLES seeded ones."""

    def __init__(self, d):
        import itertools

        import numpy as np

        n = len(d)
        if n <= EXACT_MAX_N:
            self.signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        else:
            self.signs = np.where(np.random.default_rng(SEED).random((RESAMPLES, n)) < 0.5, -1.0, 1.0)
        self.d = np.asarray(d, dtype=float)

    def p(self, shift: float) -> float:
        import numpy as np

        x = self.d - shift
        observed = x.mean()
        null = self.signs @ x / len(x)
        tol = 1e-12 * max(1.0, abs(observed))
        greater, less = np.mean(null >= observed - tol), np.mean(null <= observed + tol)
        return float(min(1.0, 2 * min(greater, less)))


def invert(diffs, level: float = LEVEL) -> tuple[float, float]:
    """The shifts not rejected by the sign-flip test at 1 - level: the interval of the mean difference from the
    same family as the test. (-inf, inf) when the test cannot reject at all with this many pairs."""
    d = [float(x) for x in diffs]
    n, alpha = len(d), 1 - level
    if n < 2 or min_p(n) >= alpha:
        return -math.inf, math.inf
    flips = _SignFlips(d)
    centre = sum(d) / n
    span = max(d) - min(d)
    span = span if span > 0 else max(abs(centre), 1e-12)

    def bound(direction: int) -> float:
        inside, outside = centre, centre + direction * span
        while flips.p(outside) >= alpha:  # widen until the test rejects there
            inside, outside = outside, outside + direction * span
            if abs(outside - centre) > 1e6 * (abs(centre) + span):
                return direction * math.inf
        for _ in range(60):  # bisection to a relative precision far below any metric's resolution
            mid = (inside + outside) / 2
            inside, outside = (mid, outside) if flips.p(mid) >= alpha else (inside, mid)
        return 0.0 if abs(inside) < 1e-9 * (abs(centre) + span) else inside  # no -1.7e-12 for a bound at 0

    return bound(-1), bound(+1)


def paired_p(a: dict, b: dict) -> tuple[float, int]:
    """Two-sided sign-flip permutation test over the seeds both have: (p, pairs); NaN without a pair."""
    shared = sorted(set(a) & set(b))
    if not shared:
        return math.nan, 0
    return sign_flip_p([a[s] - b[s] for s in shared]), len(shared)


def versus_best(groups: dict[str, dict[int, float]], best: str) -> dict[str, dict]:
    """For each configuration other than the best: its sign-flip p-value against the best over their shared
    seeds, Holm-adjusted over all comparisons, and a state:
    - "worse": adjusted p < ALPHA;
    - "indistinguishable": adjusted p >= ALPHA where the design could have shown a difference (enough pairs);
    - "undecided": too few shared seeds for any adjusted p to fall below ALPHA (nothing can be said);
    - "untested": one seed, or none shared (no test at all)."""
    others = [c for c in groups if c != best]
    raw = [paired_p(groups[best], groups[c]) for c in others]
    adj = holm([p if n >= 2 else math.nan for p, n in raw])
    m = sum(1 for _, n in raw if n >= 2)
    out: dict[str, dict[str, Any]] = {best: {"p": None, "p_holm": None, "pairs": len(groups[best]), "state": "best",
                                            "indistinguishable": True}}
    for c, (p, pairs), pa in zip(others, raw, adj, strict=True):
        if pairs < 2:
            state = "untested"
        elif pa < ALPHA:
            state = "worse"
        elif m * min_p(pairs) >= ALPHA:
            state = "undecided"
        else:
            state = "indistinguishable"
        out[c] = {"p": None if p != p or pairs < 2 else p, "p_holm": None if pa != pa else pa, "pairs": pairs,
                  "state": state, "indistinguishable": {"worse": False, "indistinguishable": True}.get(state)}
    return out


@dataclass(frozen=True)
class Paired:
    n: int
    effect: float  # mean of A - B over the shared seeds
    low: float  # the inverted sign-flip interval (infinite when the test cannot reject), floored at the resolution
    high: float
    p: float  # sign-flip test; NaN without a pair
    detectable: float  # the smallest |effect| this design detects (80 % power, 5 %): inf where nothing can be
    sd: float  # of the differences
    resolution: float  # of the metric's observed values
    decidable: bool  # the test can reach p < ALPHA with n pairs


def detectable_effect(n: int, sd: float, resolution: float = math.nan) -> float:
    """The smallest |effect| n pairs detect with POWER at ALPHA (t approximation, the observed spread of the
    differences, or the metric's resolution where they do not spread); inf where the exact test cannot reject."""
    from scipy import stats

    if n < 2 or min_p(n) >= ALPHA:
        return math.inf
    if not sd > 0:  # no spread at all (every difference equal): the metric's resolution stands in for it
        sd = resolution if resolution == resolution else 0.0
    return (stats.t.ppf(1 - ALPHA / 2, n - 1) + stats.t.ppf(POWER, n - 1)) * sd / math.sqrt(n)


def seeds_for(effect: float, sd: float, resolution: float = math.nan, cap: int = 1000) -> int | None:
    """The seeds a paired comparison needs to detect `effect` (80 % power, 5 %) given the differences' spread
    `sd`: at least seeds_to_decide(); None when there is no effect to aim at or more than `cap` would do."""
    if not effect or effect != effect:
        return None
    for n in range(seeds_to_decide(), cap + 1):
        if detectable_effect(n, sd, resolution) <= abs(effect):
            return n
    return None


def paired(a: dict, b: dict) -> Paired:
    """Two configurations compared over the seeds both ran: the mean difference a - b, its interval by inverting
    the exact sign-flip test, the test's p, and the smallest effect this n could detect."""
    shared = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in shared]
    n = len(d)
    res = resolution([a[s] for s in shared] + [b[s] for s in shared])
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, math.inf, math.nan, res, False)
    effect = sum(d) / n
    sd = math.sqrt(sum((x - effect) ** 2 for x in d) / (n - 1)) if n > 1 else math.nan
    if n < 2:
        return Paired(n, effect, math.nan, math.nan, math.nan, math.inf, sd, res, False)
    low, high = invert(d)
    low, high = _floor(low, high, effect, res)
    return Paired(n, effect, low, high, sign_flip_p(d), detectable_effect(n, sd, res), sd, res, min_p(n) < ALPHA)


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
