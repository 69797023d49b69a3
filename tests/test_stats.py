"""The report's statistics on a job with known true means (jobs/noisy.py: score = mean + the seed's noise), run
through the job contract in this process. Fifty repetitions each, every repetition with its own seeds."""

from __future__ import annotations

import io
import math

import pytest
from omegaconf import OmegaConf

from orchestrator import stats
from orchestrator.context import LocalContext
from orchestrator.report import rank
from orchestrator.report.data import Config, SweepData

REPS, SEEDS = 50, 5


def score(profile: str, mean: float, seed: int, noise: float = 0.05) -> float:
    """One trial of the noisy job, as `danlu run` runs it."""
    from jobs.noisy import train

    cfg = OmegaConf.create({"seed": seed, "epochs": 1, "epoch_s": 0.0, "mean": mean, "noise": noise, "luck": 0.0,
                            "lucky_seed": 0, "profile": profile, "profiles": {profile: {"mean": mean}}})
    ctx = LocalContext(metric="score", stream=io.StringIO())
    train(cfg, ctx)
    return ctx.history[-1][1]["score"]


def sweep(means: dict[str, float], seeds: list[int]) -> SweepData:
    configs = [Config(name, {"profile": name}, values={s: score(name, m, s) for s in seeds},
                      steps={s: 1 for s in seeds}) for name, m in means.items()]
    return SweepData("synthetic", "0", "p", "score", "max", "noisy", seeds, {"profile": ",".join(means)}, {}, configs)


def test_the_95_percent_t_intervals_cover_the_true_mean_at_least_90_percent_of_the_time():
    covered = 0
    for rep in range(REPS):
        seeds = list(range(rep * SEEDS, (rep + 1) * SEEDS))
        ci = stats.t_interval([score("c", 0.7, s) for s in seeds])
        covered += ci.low <= 0.7 <= ci.high
    assert covered >= 0.9 * REPS, covered


def test_two_configurations_with_equal_means_are_marked_indistinguishable_at_least_90_percent_of_the_time():
    tied = 0
    for rep in range(REPS):
        rows = rank(sweep({"a": 0.7, "b": 0.7}, list(range(rep * SEEDS, (rep + 1) * SEEDS))))
        tied += rows[1].vs_best["indistinguishable"]
    assert tied >= 0.9 * REPS, tied


def test_configurations_far_apart_are_told_apart():
    apart, right = 0, 0
    for rep in range(REPS):
        rows = rank(sweep({"low": 0.6, "high": 0.8, "mid": 0.75}, list(range(rep * SEEDS, (rep + 1) * SEEDS))))
        apart += rows[-1].vs_best["indistinguishable"] is False  # 0.6 against the best, 4 sd of noise apart
        right += rows[0].config.id == "high"
    assert apart >= 0.9 * REPS and right >= 0.9 * REPS, (apart, right)


def test_holm_adjusts_in_step_down_order():
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert math.isnan(stats.holm([math.nan, 0.2])[0]) and stats.holm([math.nan, 0.2])[1] == 0.2


def test_paired_effect_interval_and_detectable_effect_match_scipy():
    from scipy import stats as sp

    a = {s: 0.9 + 0.01 * (s % 3) for s in range(8)}
    b = {s: 0.88 + 0.012 * (s % 4) for s in range(8)}
    r = stats.paired(a, b)
    d = [a[s] - b[s] for s in range(8)]
    assert r.p == pytest.approx(sp.ttest_rel(list(a.values()), list(b.values())).pvalue)
    lo, hi = sp.t.interval(0.95, 7, loc=sum(d) / 8, scale=sp.sem(d))
    assert (r.low, r.high) == pytest.approx((lo, hi))
    assert r.detectable == pytest.approx((sp.t.ppf(0.975, 7) + sp.t.ppf(0.8, 7)) * sp.tstd(d) / math.sqrt(8))


def test_one_seed_per_configuration_makes_no_claim():
    from orchestrator.report.leaderboard import verdict

    data = sweep({"a": 0.7, "b": 0.9}, [0])
    words = verdict(data, rank(data))
    assert words[0].startswith("One seed per configuration: no claim of difference")
    assert "No earlier multi-seed sweep" in words[1]


def test_a_configuration_drawn_twice_is_averaged_per_seed_and_said():
    from orchestrator.report.leaderboard import verdict

    data = sweep({"a": 0.7, "b": 0.9}, [0, 1, 2])
    data.configs[0].values[0] = (data.configs[0].values[0] + 0.71) / 2  # what data.load does for a second trial
    data.configs[0].repeats[0] = 2
    words = verdict(data, rank(data))
    assert words[-1].startswith("1 configuration(s) were drawn more than once") and "profile=a: 2 repeated" in words[-1]
