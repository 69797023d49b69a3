"""Survivors per rung: how many configurations reached each of ASHA's rungs, and the scheduler's decisions."""

from __future__ import annotations

import html

from orchestrator.report import Section
from orchestrator.report.plots import figure, png


def milestones(data) -> list[int]:
    steps = sorted({c.rung for c in data.configs if c.steps})
    s = data.scheduler
    if s.get("name") == "asha":
        from orchestrator.scheduler.group_rungs import milestones as asha

        rungs = asha(float(s["grace_period"]), float(s["max_t"]), float(s["reduction_factor"]))
        return sorted({int(r) for r in rungs} | {int(float(s["max_t"]))})
    return steps[-1:]


def build(data, rows, cfg) -> Section | None:
    ms = milestones(data)
    if not ms:
        return None
    counts = [sum(1 for c in data.configs if c.rung >= m) for m in ms]
    fig, (ax,) = figure(6, 3.5)
    ax.bar([str(m) for m in ms], counts, color="#4c72b0")
    for i, n in enumerate(counts):
        ax.text(i, n, str(n), ha="center", va="bottom")
    ax.set_xlabel("rung (step)")
    ax.set_ylabel("configurations reaching it")
    ax.set_title(f"Survivors per rung ({data.scheduler.get('name', '?')})")
    stops = [d for d in data.decisions if d.get("stop")]
    sign = -1 if data.mode == "min" else 1
    text = ["Survivors per rung: " + ", ".join(f"step {m}: {n}" for m, n in zip(ms, counts, strict=True))]
    items = "".join(f"<li>{html.escape(d['config'])} stopped at rung {d['rung']:g}: mean {data.metric} "
                    f"{sign * d['mean']:.4g} over {d['seeds']} seeds, below the cutoff {sign * d['cutoff']:.4g}</li>"
                    for d in stops)
    page = '<img src="rungs.png" alt="survivors per rung">' + (
        f"<p>Seed-aware ASHA's stops (a configuration's seeds judged by their mean):</p><ul>{items}</ul>" if stops else "")
    return Section("rungs", "Survivors per rung", {"rungs": ms, "configurations": counts, "decisions": data.decisions},
                   text, page, {"rungs.png": png(fig)})
