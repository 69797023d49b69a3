"""The report's statistics on a job with known true means (jobs/noisy.py: score = mean + the seed's noise), run
through the job contract in this process. Fifty repetitions each, every repetition with its own seeds."""

from __future__ import annotations

import io
import math

import pytest
from omegaconf import OmegaConf

from orchestrator import stats
from orchestrator.report import rank
from orchestrator.report._data import Config, SweepData
from orchestrator.trial.ctx import LocalContext

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
    print(f"t-interval coverage at n={SEEDS}: {covered}/{REPS}")
    assert covered >= 0.9 * REPS, covered


def test_two_configurations_with_equal_means_are_never_declared_different_at_least_90_percent_of_the_time():
    """5 seeds: the exact test cannot reach p < 0.05 (its smallest p is 2/32), so the state is "undecided"; at 10
    seeds the comparison can be decided, and equal means come out "indistinguishable"."""
    for n, state in ((SEEDS, "undecided"), (10, "indistinguishable")):
        kept = 0
        for rep in range(REPS):
            rows = rank(sweep({"a": 0.7, "b": 0.7}, list(range(rep * n, (rep + 1) * n))))
            kept += rows[1].vs_best["state"] == state
        print(f"equal means at n={n}: {state} {kept}/{REPS}")
        assert kept >= 0.9 * REPS, (n, kept)


def test_configurations_far_apart_are_told_apart_with_enough_seeds():
    apart, right, n = 0, 0, 10  # two comparisons, Holm: 7 seeds are the fewest that can decide
    for rep in range(REPS):
        rows = rank(sweep({"low": 0.6, "high": 0.8, "mid": 0.75}, list(range(rep * n, (rep + 1) * n))))
        apart += rows[-1].vs_best["state"] == "worse"  # 0.6 against the best, 4 sd of noise apart
        right += rows[0].config.id == "high"
    print(f"4 sd apart at n={n}: told apart {apart}/{REPS}, best ranked first {right}/{REPS}")
    assert apart >= 0.9 * REPS and right >= 0.9 * REPS, (apart, right)


def test_holm_adjusts_in_step_down_order():
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert math.isnan(stats.holm([math.nan, 0.2])[0]) and stats.holm([math.nan, 0.2])[1] == 0.2


def test_the_paired_test_is_scipys_sign_flip_test_and_its_interval_inverts_it():
    import numpy as np
    from scipy import stats as sp

    a = {s: 0.9 + 0.01 * (s % 3) for s in range(8)}
    b = {s: 0.88 + 0.012 * (s % 4) for s in range(8)}
    r = stats.paired(a, b)
    d = np.array([a[s] - b[s] for s in range(8)])
    exact = sp.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf)
    assert r.p == pytest.approx(exact.pvalue)
    assert r.low < r.effect < r.high
    flips = stats._SignFlips(d)  # the interval's ends are where the same test starts to reject at 5%
    assert flips.p(r.low) >= 0.05 and flips.p(r.low - 1e-4) < 0.05
    assert flips.p(r.high) >= 0.05 and flips.p(r.high + 1e-4) < 0.05
    assert stats.min_p(3) == 0.25 and stats.min_p(6) == pytest.approx(0.03125) and stats.seeds_to_decide() == 6
    assert stats.seeds_to_decide(7) == 9  # Holm over 7 comparisons: 7 * 2/2^n < 0.05


def test_three_seeds_one_example_apart_cannot_make_a_claim():
    """The issue's false claim: a discrete accuracy (k/450), each of 3 seeds exactly 2 examples apart. The t-test
    said p = 2e-11 with a zero-width interval; the exact test cannot go below 2/8."""
    a = {0: 0.97, 1: 0.9611, 2: 0.9656}
    b = {s: v - 2 / 450 for s, v in a.items()}
    r = stats.paired(a, b)
    assert r.p == pytest.approx(0.25) and not r.decidable
    assert math.isinf(r.low) and math.isinf(r.high) and math.isinf(r.detectable)
    six = stats.paired({s: 0.9 + 2 / 450 for s in range(6)}, {s: 0.9 for s in range(6)})
    assert six.p == pytest.approx(0.03125) and six.high - six.low >= 1 / 450 - 1e-12  # never narrower than k/450


def test_one_seed_per_configuration_makes_no_claim():
    from orchestrator.report._verdict import block
    from orchestrator.report.leaderboard import verdict

    data = sweep({"a": 0.7, "b": 0.9}, [0])
    rows = rank(data)
    words = verdict(data, rows)
    assert words[0].startswith("One seed per configuration: untested; no claim of difference")
    assert "No earlier multi-seed sweep of the same job, metric and step" in words[1]
    v = block(data, rows)
    assert v.headline.startswith("untested: one seed per configuration") and "--seeds 6" in v.next_step
    assert rows[1].vs_best["state"] == "untested"


def test_a_configuration_drawn_twice_is_averaged_per_seed_and_said():
    from orchestrator.report.leaderboard import verdict

    data = sweep({"a": 0.7, "b": 0.9}, [0, 1, 2])
    data.configs[0].values[0] = (data.configs[0].values[0] + 0.71) / 2  # what data.load does for a second trial
    data.configs[0].repeats[0] = 2
    words = verdict(data, rank(data))
    assert words[-1].startswith("1 configuration(s) were drawn more than once") and "profile=a: 2 repeated" in words[-1]


# -- a discrete metric (jobs/binomial.py: accuracy on 450 examples, binomial noise, known rates), 200 repetitions --
BINOMIAL_REPS = 200


def accuracies(rate: float, arm: int, seeds: list[int]) -> dict[int, float]:
    from jobs.binomial import accuracy

    return {s: accuracy(rate, s, 450, stream=f"{rate}:{arm}") for s in seeds}


def margin(rate: float, reps: int = BINOMIAL_REPS) -> float:
    """One-sided 95% binomial margin of an observed rate over `reps` repetitions."""
    return 1.645 * math.sqrt(rate * (1 - rate) / reps)


@pytest.mark.integration
@pytest.mark.parametrize("n", [3, 5, 10])
def test_two_equal_configurations_on_a_discrete_metric_are_declared_different_at_most_5_percent_of_the_time(n):
    claims, worse = 0, 0
    for rep in range(BINOMIAL_REPS):
        seeds = list(range(rep * n, (rep + 1) * n))
        a, b = accuracies(0.9, 0, seeds), accuracies(0.9, 1, seeds)
        claims += stats.paired(a, b).p < stats.ALPHA  # danlu compare's claim
        verdicts = stats.versus_best({"a": a, "b": b}, "a" if sum(a.values()) >= sum(b.values()) else "b")
        worse += any(v["state"] == "worse" for v in verdicts.values())  # the report's
    print(f"false claims at n={n}: compare {claims}/{BINOMIAL_REPS}, report {worse}/{BINOMIAL_REPS}")
    assert claims / BINOMIAL_REPS <= 0.05 + margin(0.05) and worse / BINOMIAL_REPS <= 0.05 + margin(0.05)


@pytest.mark.integration
@pytest.mark.parametrize("n", [5, 10])
def test_the_95_percent_interval_of_an_effect_on_a_discrete_metric_covers_the_true_effect(n):
    covered, bounded = 0, 0
    for rep in range(BINOMIAL_REPS):
        seeds = list(range(rep * n, (rep + 1) * n))
        r = stats.paired(accuracies(0.92, 0, seeds), accuracies(0.90, 1, seeds))
        covered += r.low <= 0.02 <= r.high
        bounded += math.isfinite(r.low)
    print(f"coverage at n={n}: {covered}/{BINOMIAL_REPS} (bounded intervals: {bounded})")
    assert covered >= 0.9 * BINOMIAL_REPS
    assert bounded == (BINOMIAL_REPS if n >= stats.seeds_to_decide() else 0)  # unbounded where no test can reject


@pytest.mark.integration
def test_a_real_effect_of_3_sd_is_declared_at_10_seeds_at_least_80_percent_of_the_time():
    sd = math.sqrt(0.9 * 0.1 / 450)  # one accuracy's seed-to-seed spread
    declared = 0
    for rep in range(BINOMIAL_REPS):
        seeds = list(range(rep * 10, (rep + 1) * 10))
        r = stats.paired(accuracies(0.9 + 3 * sd, 0, seeds), accuracies(0.9, 1, seeds))
        declared += r.p < stats.ALPHA and r.effect > 0
    print(f"power for 3 sd ({3 * sd:.4f}) at n=10: {declared}/{BINOMIAL_REPS}")
    assert declared >= 0.8 * BINOMIAL_REPS
