"""The metric against each numeric hyperparameter: every seed's value (dots) and each configuration's mean with
its 95 % t-interval; a log axis where the space is log."""

from __future__ import annotations

import math

from orchestrator.report import Section
from orchestrator.report._plots import figure, png
from orchestrator.report.importance import numeric


def build(data, rows, cfg) -> Section | None:
    """The metric against each numeric hyperparameter that varied: every seed's value, and each configuration's
    mean with its interval, early-stopped configurations drawn apart; None when no numeric key varied."""
    keys = [k for k in sorted({k for r in rows for k in r.config.hp})
            if numeric([r.config.hp.get(k, "x") for r in rows]) and len({r.config.hp.get(k) for r in rows}) > 1]
    if not keys:
        return None
    last = rows[0].config.rung
    fig, axes = figure(4.0 * len(keys), 3.8, ncols=len(keys))
    for ax, key in zip(axes, keys, strict=True):
        for finished in (True, False):  # an early-stopped value is of another fidelity: drawn apart
            group = [r for r in rows if (r.config.rung == last) == finished]
            if not group:
                continue
            # one call per kind of mark, not per configuration: matplotlib rescales the axes at every call, which
            # made this figure most of a 5,000-trial report's time
            dots = [(float(r.config.hp[key]), v) for r in group for v in r.config.values.values()]
            ax.scatter([x for x, _ in dots], [y for _, y in dots], s=8, alpha=0.6,
                       color="#999999" if finished else "#a6cee3", marker="o" if finished else "x")
            label = f"mean at step {last}, 95% CI" if finished else "stopped early: mean where it stopped"
            for ci in (True, False):
                part = [r for r in group if math.isnan(r.stats.low) != ci]
                if not part:
                    continue
                err = [[r.stats.mean - r.stats.low for r in part], [r.stats.high - r.stats.mean for r in part]]
                ax.errorbar([float(r.config.hp[key]) for r in part], [r.stats.mean for r in part],
                            yerr=err if ci else None, fmt="o" if finished else "^", ms=4, capsize=2,
                            color="#c44e52" if finished else "#1f78b4", label=label)
        if "log" in data.space.get(key, ""):
            ax.set_xscale("log")
        ax.set_xlabel(key + (" (log)" if "log" in data.space.get(key, "") else ""))
        ax.set_ylabel(data.metric)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="best")
    fig.suptitle(f"{data.metric} against each numeric hyperparameter (dots and crosses: single seeds)", fontsize=9)
    return Section("hyperparameters", "Metric against hyperparameters", {"keys": keys},
                   html='<img src="hyperparameters.png" alt="metric against hyperparameters">',
                   plots={"hyperparameters.png": png(fig)})
