"""Hyperparameter importance: Optuna's fANOVA evaluator (optuna.importance.FanovaImportanceEvaluator, Hutter et
al. 2014) on one observation per configuration (its mean over seeds). Its random forest is refit with
report.importance_repeats seeds; the spread over them is the error bar, and a note says when it is unstable."""

from __future__ import annotations

import html

from orchestrator.report import Section
from orchestrator.report._plots import figure, png

MIN_CONFIGS = 4


def numeric(values: list[str]) -> list[float] | None:
    """The values as floats, or None if any is not a number."""
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def distributions(data, rows):
    """{key: optuna distribution} for the swept keys that vary among these configurations."""
    from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

    out: dict[str, BaseDistribution] = {}
    for key in sorted({k for r in rows for k in r.config.hp}):
        values = [r.config.hp.get(key) for r in rows]
        if None in values or len(set(values)) < 2:
            continue
        nums = numeric(values)
        if nums is not None:
            log = "log" in data.space.get(key, "") and min(nums) > 0
            out[key] = FloatDistribution(min(nums), max(nums), log=log)
        else:
            out[key] = CategoricalDistribution(sorted(set(values)))
    return out


def build(data, rows, cfg) -> Section | None:
    """Each hyperparameter's share of the variance of the configurations' means (Optuna's fANOVA, refit with
    report.importance_repeats seeds for an error bar); None, or a note, where too few configurations ran."""
    import numpy as np
    import optuna

    top = [r for r in rows if r.config.rung == rows[0].config.rung] if rows else []
    used, note = top, ""
    if len(top) < MIN_CONFIGS and len(rows) >= MIN_CONFIGS:
        used, note = rows, "Configurations stopped early are included with the mean they reached (mixed fidelities)."
    dists = distributions(data, used)
    if len(used) < MIN_CONFIGS or not dists:
        why = (f"Importance needs at least {MIN_CONFIGS} configurations and a swept key that varies; "
               f"this sweep has {len(used)} configuration(s) and {len(dists)} such key(s).")
        return Section("importance", "Hyperparameter importance", {"importance": None, "note": why}, [why],
                       f"<p>{html.escape(why)}</p>")
    if len(dists) == 1:  # fANOVA would fit its forests to say 1.0: one key holds all the variance it can explain
        (key,) = dists
        why = f"Only {key} varies among these configurations: its share is 1 by definition (nothing to rank)."
        return Section("importance", "Hyperparameter importance", {"importance": {key: {"mean": 1.0, "sd": 0.0}},
                       "note": why, "configurations": len(used)}, [why], f"<p>{html.escape(why)}</p>")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if data.mode == "max" else "minimize")
    for r in used:
        params = {k: (float(r.config.hp[k]) if not hasattr(d, "choices") else r.config.hp[k]) for k, d in dists.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=r.stats.mean))
    repeats = max(1, int(cfg.get("importance_repeats", 5)))
    runs = [optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=k)) for k in range(repeats)]
    result = {k: {"mean": float(np.mean([r[k] for r in runs])), "sd": float(np.std([r[k] for r in runs]))}
              for k in dists}
    order = sorted(result, key=lambda k: -result[k]["mean"])
    unstable = [k for k in order if result[k]["sd"] > 0.5 * result[k]["mean"] and result[k]["mean"] > 0.05]
    stability = (f"Unstable: {', '.join(unstable)} vary by more than half their value between the forest's seeds."
                 if unstable else f"Stable: every share varies by less than half its value over {repeats} forest seeds.")
    few = (f" With {len(used)} configurations, treat the ranking as a hint." if len(used) < 20 else "")
    fig, (ax,) = figure(6, 0.5 + 0.45 * len(order))
    ax.barh(order[::-1], [result[k]["mean"] for k in order[::-1]], xerr=[result[k]["sd"] for k in order[::-1]],
            color="#55a868", capsize=3)
    ax.set_xlabel("share of the variance of the mean metric (fANOVA)\n±1 sd over forest seeds", fontsize=9)
    ax.set_title("Hyperparameter importance")
    method = (f"Optuna's FanovaImportanceEvaluator on {len(used)} configurations (one value each: the mean over "
              f"seeds), refit with {repeats} seeds.")
    text = ["Importance (fANOVA): " + ", ".join(f"{k} {result[k]['mean']:.2f}±{result[k]['sd']:.2f}" for k in order),
            stability + few + (" " + note if note else "")]
    page = (f'<img src="importance.png" alt="importance"><p>{html.escape(method)} {html.escape(stability + few)} '
            f'{html.escape(note)}</p>')
    return Section("importance", "Hyperparameter importance",
                   {"method": method, "importance": {k: result[k] for k in order}, "stability": stability,
                    "note": note or None, "configurations": len(used)}, text, page, {"importance.png": png(fig)})


