"""Learning curves per configuration: the mean over seeds at each step, with a band of one standard deviation."""

from __future__ import annotations

from orchestrator.report import Section
from orchestrator.report._data import label
from orchestrator.report._plots import figure, png


def build(data, rows, cfg) -> Section | None:
    """Learning curves of the top configurations (report.top_curves, 8): the mean over seeds at each step with a
    ±1 sd band; None when no configuration has a curve."""
    import numpy as np

    shown = [r for r in rows if r.config.curves][: int(cfg.get("top_curves", 8))]
    if not shown:
        return None
    fig, (ax,) = figure(8, 4.5)
    series = {}
    for r in shown:
        steps = sorted({s for curve in r.config.curves.values() for s, _ in curve})
        by_step = {s: [v for curve in r.config.curves.values() for st, v in curve if st == s] for s in steps}
        mean = np.array([np.mean(by_step[s]) for s in steps])
        sd = np.array([np.std(by_step[s], ddof=1) if len(by_step[s]) > 1 else 0.0 for s in steps])
        (line,) = ax.plot(steps, mean, label=label(r.config)[:50])
        ax.fill_between(steps, mean - sd, mean + sd, alpha=0.2, color=line.get_color())
        series[r.config.id] = {"steps": steps, "mean": mean.tolist(), "sd": sd.tolist()}
    ax.set_xlabel("step (report)")
    ax.set_ylabel(data.metric)
    ax.set_title(f"{data.metric} per configuration: mean over seeds, band ±1 sd")
    ax.legend(fontsize=7, loc="best")
    return Section("curves", "Learning curves", {"series": series},
                   html='<img src="curves.png" alt="learning curves">', plots={"curves.png": png(fig)})
