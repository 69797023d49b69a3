"""Survivors per rung: how many configurations reached each of the scheduler's rungs, and its decisions."""

from __future__ import annotations

import html

from orchestrator import tags as T
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
    if last <= 1 and ms:
        text.append(f"Every trial made one report (a task function's return value is one): {data.scheduler.get('name')} "
                    "had nothing to stop early. Report every epoch (orchestrator.api.report, or ctx.report) to let it")
    items = "".join(f"<li>{html.escape(d['config'])} stopped at rung {d['rung']:g}: mean {data.metric} "
                    f"{sign * d['mean']:.4g} over {d['seeds']} seeds, below the cutoff {sign * d['cutoff']:.4g}</li>"
                    for d in stops)
    cost = _cost(data)
    if cost:
        text.append(cost)
    plots, page = {}, "".join(f"<p>{html.escape(t)}.</p>" for t in text)
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
                                                   "last_step": last, "decisions": data.decisions,
                                                   "steps_run": _steps_run(data), "forecast": _forecast(data),
                                                   "used": _used(data)},
                   text, page, plots)


def _steps_run(data) -> float:
    """Trial-steps the sweep ran: Tune's count where the parent holds it, else each run's last step."""
    if data.parent_metrics.get("steps_run"):
        return float(data.parent_metrics["steps_run"])
    return float(sum(sum(c.steps.values()) for c in data.configs))


def _forecast(data) -> dict:
    """What `danlu plan` forecast (the parent's danlu.forecast.* tags): steps, fifo_steps, trials."""
    out = {}
    for k in ("steps", "fifo_steps", "trials"):
        try:
            out[k] = float(data.tags[T.FORECAST.format(k)])
        except (KeyError, ValueError):
            pass
    return out


def _used(data) -> dict:
    """The resources the sweep used (the parent's budget_* metrics, in hours)."""
    return {k: float(v) for k, v in data.parent_metrics.items() if k.startswith("budget_")}


def _cost(data) -> str:
    """Steps run against the forecast, and the resources used (with the budget that stopped it, if one did)."""
    run, f, used = _steps_run(data), _forecast(data), _used(data)
    out = f"Trial-steps run: {run:.0f}"
    if "steps" in f:
        out += f" (forecast {f['steps']:.0f}; FIFO would run {f.get('fifo_steps', 0):.0f})"
    if used:
        out += (f"; used {used.get('budget_cpu_hours', 0):.3g} CPU-hours, {used.get('budget_gpu_hours', 0):.3g} "
                f"GPU-hours, {used.get('budget_wall_hours', 0) * 3600:.0f} s of wall time")
    if data.tags.get(T.BUDGET):
        out += f"; stopped by its budget: {data.tags[T.BUDGET]}"
    return out
