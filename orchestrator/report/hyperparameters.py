"""The metric against each numeric hyperparameter: every seed's value (dots) and each configuration's mean with
its 95 % t-interval; a log axis where the space is log."""

from __future__ import annotations

import math

from orchestrator.report import Section
from orchestrator.report.importance import numeric
from orchestrator.report.plots import figure, png


def build(data, rows, cfg) -> Section | None:
    keys = [k for k in sorted({k for r in rows for k in r.config.hp})
            if numeric([r.config.hp.get(k, "x") for r in rows]) and len({r.config.hp.get(k) for r in rows}) > 1]
    if not keys:
        return None
    fig, axes = figure(4.0 * len(keys), 3.6, ncols=len(keys))
    for ax, key in zip(axes, keys, strict=True):
        for r in rows:
            x = float(r.config.hp[key])
            ax.scatter([x] * len(r.config.values), list(r.config.values.values()), s=8, color="#999999", alpha=0.6)
            err = None if math.isnan(r.stats.low) else [[r.stats.mean - r.stats.low], [r.stats.high - r.stats.mean]]
            ax.errorbar([x], [r.stats.mean], yerr=err, fmt="o", color="#c44e52", ms=4, capsize=2)
        if "log" in data.space.get(key, ""):
            ax.set_xscale("log")
        ax.set_xlabel(key + (" (log)" if "log" in data.space.get(key, "") else ""))
        ax.set_ylabel(data.metric)
    fig.suptitle(f"{data.metric} against each numeric hyperparameter (grey: seeds; red: mean, 95% t-interval)",
                 fontsize=9)
    return Section("hyperparameters", "Metric against hyperparameters", {"keys": keys},
                   html='<img src="hyperparameters.png" alt="metric against hyperparameters">',
                   plots={"hyperparameters.png": png(fig)})
