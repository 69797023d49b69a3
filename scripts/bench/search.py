#!/usr/bin/env python
"""Random search + ASHA against Optuna's TPE + ASHA, side by side in one run, at an equal budget of trials.

    .venv/bin/python scripts/bench/search.py                    # 5 sweep seeds, both objectives
    .venv/bin/python scripts/bench/search.py --seeds 7 --skip-digits

Each sweep runs through danlu's library (`danlu sweep ... search=random|optuna sweep.search_seed=S`) on one
embedded Ray (2 CPU slots, started once), with MLflow logging to a sqlite store in a temp dir; the results
are read back from MLflow. A configuration counts once it has run to ASHA's max_t (a trial stopped early
reported a noisier, earlier value); the incumbent after n trials is the best of those among the first n,
by its last reported value.

1. Hartmann-6 (jobs/hartmann.py: known optimum -3.32237, noise that shrinks with steps), 6 intervals.
   Prints the median regret (true value of the incumbent minus the optimum) after N trials, and the median
   number of trials each searcher needs to reach random search's final median regret.
2. The digits job (lr log-interval, dropout interval, batch size and width as choices; 10 epochs).
   Prints the median best val_acc, and the median number of trials to reach within 0.5 % of the best
   val_acc any sweep of this run saw.
Differences are judged with a two-sided Mann-Whitney U test over the sweep seeds (scipy).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SEARCHERS = ("random", "optuna")
OBJECTIVES = {
    "hartmann": dict(metric="value", mode="min", args=["job=hartmann", "sweep=hartmann", "scheduler.grace_period=1"]),
    "digits": dict(metric="val_acc", mode="max", args=[
        "job=digits", "epochs=10", "lr=tag(log, interval(1e-3, 3e-1))", "dropout=interval(0.0, 0.5)",
        "batch_size=choice(32,64,128)", "job.model.width=choice(32,64,128,256)", "scheduler.grace_period=2"]),
}


def sweep(objective: str, searcher: str, seed: int, trials: int, workdir: str) -> list[tuple[dict, float | None]]:
    """Run one sweep; per trial in creation order: (its swept values, its last value if it ran to max_t)."""
    from mlflow.tracking import MlflowClient

    from orchestrator.config.compose import find_config_dir
    from orchestrator.run.sweep import run_sweep

    spec = OBJECTIVES[objective]
    name = f"{objective}-{searcher}-{seed}"
    overrides = [*spec["args"], f"search={searcher}", f"sweep.search_seed={seed}", f"sweep.num_samples={trials}",
                 f"sweep.name={name}", f"output_dir={workdir}/outputs", f"tracking.uri=sqlite:///{workdir}/mlflow.db"]
    with open(os.devnull, "w") as quiet:
        code = run_sweep(overrides, find_config_dir(str(ROOT / "conf")), stream=quiet)
    assert code == 0, f"{name}: danlu sweep exited {code}"
    c = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    exp = c.get_experiment_by_name("danlu")
    runs = c.search_runs([exp.experiment_id], f"tags.`danlu.sweep` = '{name}' and tags.`mlflow.parentRunId` != ''",
                         max_results=10000)
    assert len(runs) == trials, (name, len(runs))
    out = []
    for r in sorted(runs, key=lambda r: r.data.tags["danlu.trial"]):
        values = dict(o.split("=", 1) for o in r.data.tags["danlu.overrides"].split())
        done = r.data.tags.get("danlu.outcome") == "completed"
        out.append((values, r.data.metrics.get(spec["metric"]) if done else None))
    return out


def incumbents(trials, mode: str, score) -> list[float | None]:
    """After each trial: score(values) of the best completed trial so far (by its last value), or None."""
    best, curve = None, []
    for values, last in trials:
        if last is not None and (best is None or (last < best[1] if mode == "min" else last > best[1])):
            best = (values, last)
        curve.append(None if best is None else score(*best))
    return curve


def first_reaching(curve, target: float, better) -> int | None:
    return next((i + 1 for i, v in enumerate(curve) if v is not None and better(v, target)), None)


def median_trials(counts: list[int | None], budget: int) -> str:
    """Median of the trials needed; a sweep that never got there counts as more than the budget."""
    med = statistics.median([n if n is not None else budget + 1 for n in counts])
    return f">{budget}" if med > budget else f"{med:g}"


def p_value(a: list[float], b: list[float]) -> float:
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def verdict(p: float) -> str:
    return f"p={p:.3f}: " + ("significant at 5 %" if p < 0.05 else "not significant at 5 %")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="sweep seeds per searcher (sweep.search_seed=0..N-1)")
    ap.add_argument("--trials", type=int, default=40, help="trials per Hartmann-6 sweep")
    ap.add_argument("--digits-trials", type=int, default=20, help="trials per digits sweep")
    ap.add_argument("--skip-digits", action="store_true")
    args = ap.parse_args()

    import ray

    from jobs.hartmann import OPTIMUM, hartmann6

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    started = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="danlu-search-bench-") as tmp:
            n = args.trials
            regret = {s: [] for s in SEARCHERS}
            for seed in range(args.seeds):  # alternated, so that drifts in the machine's load hit both
                for s in SEARCHERS:
                    trials = sweep("hartmann", s, seed, n, tmp)
                    regret[s].append(incumbents(trials, "min", lambda v, _: hartmann6(
                        [float(v[f"x{i}"]) for i in range(1, 7)]) - OPTIMUM))
            final = {s: [c[-1] if c[-1] is not None else float("inf") for c in regret[s]] for s in SEARCHERS}
            target = statistics.median(final["random"])
            reach = {s: [first_reaching(c, target, lambda v, t: v <= t) for c in regret[s]] for s in SEARCHERS}
            print(f"Hartmann-6 (minimise; optimum {OPTIMUM}), {n} trials per sweep, {args.seeds} sweep seeds, ASHA:")
            for s in SEARCHERS:
                print(f"  {s:7s} median regret after {n} trials {statistics.median(final[s]):.4f}   "
                      f"(per seed: {', '.join(f'{v:.3f}' for v in final[s])})   "
                      f"median trials to reach random's final median regret ({target:.4f}): {median_trials(reach[s], n)}")
            med = {s: statistics.median([r if r is not None else n + 1 for r in reach[s]]) for s in SEARCHERS}
            print(f"  trials to reach it, optuna / random: {med['optuna'] / med['random']:.2f} (target <= 0.5)")
            print(f"  final regret, optuna vs random: {verdict(p_value(final['optuna'], final['random']))}")

            if not args.skip_digits:
                n = args.digits_trials
                curves = {s: [] for s in SEARCHERS}
                for seed in range(args.seeds):
                    for s in SEARCHERS:
                        curves[s].append(incumbents(sweep("digits", s, seed, n, tmp), "max", lambda v, last: last))
                best = {s: [c[-1] if c[-1] is not None else 0.0 for c in curves[s]] for s in SEARCHERS}
                top = max(max(b) for b in best.values())
                reach = {s: [first_reaching(c, top * 0.995, lambda v, t: v >= t) for c in curves[s]] for s in SEARCHERS}
                print(f"digits (maximise val_acc), {n} trials per sweep, {args.seeds} sweep seeds, ASHA:")
                for s in SEARCHERS:
                    print(f"  {s:7s} median best val_acc {statistics.median(best[s]):.4f}   "
                          f"(per seed: {', '.join(f'{v:.4f}' for v in best[s])})   median trials to reach "
                          f"within 0.5 % of the best seen ({top:.4f}): {median_trials(reach[s], n)}")
                print(f"  best val_acc, optuna vs random: {verdict(p_value(best['optuna'], best['random']))}")
    finally:
        ray.shutdown()
    print(f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
