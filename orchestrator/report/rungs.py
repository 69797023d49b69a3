"""Survivors per rung: how many configurations reached each of the scheduler's rungs, and its decisions."""

from __future__ import annotations

import html

from orchestrator.report import Section
from orchestrator.report._plots import figure, png


def milestones(data) -> list[int]:
    """The scheduler's rungs: the steps where it decides, below max_t (orchestrator.scheduler.schedule)."""
    from orchestrator import scheduler

    try:
        return sorted({int(r) for r in scheduler.schedule(data.scheduler).rungs})
    except (KeyError, ValueError, TypeError):  # an older sweep's parent without the settings: no rungs drawn
        return []


def build(data, rows, cfg) -> Section | None:
    """Survivors per rung (the scheduler's rungs), how many configurations reached the last step, and the
    scheduler's stops; None for a sweep with no configuration."""
    if not data.configs:
        return None
    ms = milestones(data)
    last = max(c.rung for c in data.configs)
    done = sum(1 for c in data.configs if c.rung >= last)
    counts = [sum(1 for c in data.configs if c.rung >= m) for m in ms]
    stops = [d for d in data.decisions if d.get("stop")]
    sign = -1 if data.mode == "min" else 1
    text = [("Survivors per rung: " + ", ".join(f"step {m}: {n}" for m, n in zip(ms, counts, strict=True)) + "; "
             if ms else f"No rungs ({data.scheduler.get('name', '?')}): ") + f"{done} of {len(data.configs)} "
            f"configurations reached step {last}"]
    items = "".join(f"<li>{html.escape(d['config'])} stopped at rung {d['rung']:g}: mean {data.metric} "
                    f"{sign * d['mean']:.4g} over {d['seeds']} seeds, below the cutoff {sign * d['cutoff']:.4g}</li>"
                    for d in stops)
    plots, page = {}, f"<p>{html.escape(text[0])}.</p>"
    if ms:
        fig, (ax,) = figure(6, 3.5)
        ax.bar([str(m) for m in ms], counts, color="#4c72b0")
        for i, n in enumerate(counts):
            ax.text(i, n, str(n), ha="center", va="bottom")
        ax.set_xlabel("rung (step)")
        ax.set_ylabel("configurations reaching it")
        ax.set_title(f"Survivors per rung ({data.scheduler.get('name', '?')}); {done} reached step {last}")
        plots["rungs.png"] = png(fig)
        page = '<img src="rungs.png" alt="survivors per rung">' + page
    if stops:
        page += f"<p>The scheduler's stops (a configuration's seeds judged by their mean):</p><ul>{items}</ul>"
    return Section("rungs", "Survivors per rung", {"rungs": ms, "configurations": counts, "reached_last": done,
                                                   "last_step": last, "decisions": data.decisions},
                   text, page, plots)
