"""The night: what went wrong while nobody watched, and what it cost. Trials that failed (with their error), trials
retried from their last checkpoint after a failure, trials restored from a checkpoint (steps reported again), runs set aside,
and the sweep's own restarts: resumes of its driver and resubmissions by danlu's supervisor, with their reasons.
On Slurm, the allocations the sweep ran in: how many ended by a preemption (a requeue) or by the time limit, the
trials those ends cut short, and the work lost (steps since their last checkpoint, done again, and its resource-hours)
against the resource-hours the sweep used.

Everything here is read from the tracking store (the tags danlu writes on each run: orchestrator/tags.py), so the
section says the same the morning after, whichever driver made the report."""

from __future__ import annotations

import html
from typing import Any

from orchestrator import tags as T
from orchestrator.report import Section


def _int(text) -> int:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return 0


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:200]  # a traceback's last line says what went wrong


def _resources(text: str) -> tuple[float, float]:
    """(GPUs, CPUs) from a run's danlu.resources tag ("CPU=1,GPU=0.25")."""
    got = {}
    for part in str(text or "").split(","):
        k, _, v = part.partition("=")
        try:
            got[k.strip()] = float(v)
        except ValueError:
            pass
    return got.get("GPU", 0.0), got.get("CPU", 0.0)


def _lost(runs) -> dict:
    """Work done again after restores (danlu.redone.<step> tags: "STEPS SECONDS"): steps, seconds, resource-hours."""
    prefix = T.REDONE.format("")
    steps, seconds, gpu_h, cpu_h = 0, 0.0, 0.0, 0.0
    for r in runs:
        gpus, cpus = _resources(r.tags.get(T.RESOURCES))
        for k, v in r.tags.items():
            if not k.startswith(prefix):
                continue
            n, _, sec = str(v).partition(" ")
            steps += _int(n)
            try:
                s = float(sec)
            except ValueError:
                s = 0.0
            seconds += s
            gpu_h, cpu_h = gpu_h + s * gpus / 3600, cpu_h + s * cpus / 3600
    return {"steps": steps, "seconds": round(seconds, 1), "gpu_hours": gpu_h, "cpu_hours": cpu_h}


def _slurm(data, runs, label) -> tuple[dict, list[str]]:
    """The Slurm allocations (parent tags danlu.slurm.*), the trials their ends cut, and the work lost."""
    allocations = _int(data.tags.get(T.SLURM_ALLOCATIONS))
    if not allocations:
        return {}, []
    cut = {label[r.run_id]: sorted(k for k in r.tags if k.startswith((T.PREEMPTED.format(""), T.TIME_LIMITED.format(""))))
           for r in runs}
    cut = {k: v for k, v in cut.items() if v}
    preempted = [t for t, keys in cut.items() if any(k.startswith(T.PREEMPTED.format("")) for k in keys)]
    limited = [t for t, keys in cut.items() if any(k.startswith(T.TIME_LIMITED.format("")) for k in keys)]
    lost = _lost(runs)
    used = {k: float(v) for k, v in data.parent_metrics.items() if k in ("budget_gpu_hours", "budget_cpu_hours")}
    facts = {"allocations": allocations, "jobs": data.tags.get(T.SLURM_JOBS, ""),
             "preemptions": _int(data.tags.get(T.SLURM_PREEMPTIONS)),
             "time_limits": _int(data.tags.get(T.SLURM_TIME_LIMITS)),
             "preempted_trials": preempted, "time_limited_trials": limited, "work_lost": lost,
             "used_gpu_hours": used.get("budget_gpu_hours"), "used_cpu_hours": used.get("budget_cpu_hours")}
    gpu = lost["gpu_hours"] > 0 or (used.get("budget_gpu_hours") or 0) > 0
    unit, lost_h, used_h = ("GPU", lost["gpu_hours"], used.get("budget_gpu_hours")) if gpu else \
        ("CPU", lost["cpu_hours"], used.get("budget_cpu_hours"))
    text = [f"Slurm: {allocations} allocation(s) (job {facts['jobs']}); {facts['preemptions']} ended by a preemption "
            f"or requeue, {facts['time_limits']} by the time limit (stopped gracefully, requeued)"]
    if preempted:
        text.append(f"  {len(preempted)} trial(s) preempted and resumed (not failed): {', '.join(preempted[:20])}")
    if limited:
        text.append(f"  {len(limited)} trial(s) stopped at a time limit and resumed: {', '.join(limited[:20])}")
    text.append(f"  work lost (since the last checkpoints, done again): {lost['steps']} step(s), {lost['seconds']:.0f} s, "
                f"{lost_h:.3g} {unit}-hours" + (f" of {used_h:.3g} used" if used_h else ""))
    return facts, text


def _extensions(data, runs, label) -> list[dict]:
    """Each extension of the sweep (`danlu extend`): when, its command, what it changed, and the trials it ran
    (their runs' danlu.extension tag)."""
    import json

    out = []
    for k in range(1, _int(data.tags.get(T.EXTENSIONS)) + 1):
        try:
            rec = json.loads(data.tags.get(T.EXTENSION_RECORD.format(k), ""))
        except ValueError:
            rec = {}
        mine = sorted(label[r.run_id] for r in runs if r.tags.get(T.EXTENSION) == str(k))
        out.append({"n": k, "at": rec.get("at", "?"), "command": rec.get("command", "?"),
                    "changed": list(rec.get("changed") or []),
                    "trials": f"{mine[0]}-{mine[-1]} ({len(mine)})" if mine else "none yet"})
    return out


def build(data, rows, cfg) -> Section:
    """Failures, retries, restores, runs set aside, restarts and extensions of the sweep; a quiet night says so."""
    limit = int(cfg.get("night_rows", 20))
    runs = list(data.runs)
    label = {r.run_id: r.tags.get(T.TRIAL, "") or r.name for r in runs}
    failed = [r for r in runs if T.ORPHANED not in r.tags and (r.status == "FAILED" or r.tags.get(T.OUTCOME) == "failed")]
    killed = [r for r in runs if T.ORPHANED not in r.tags and r.status == "KILLED"]
    retried = [r for r in runs if _int(r.tags.get(T.RETRIES)) > 0]
    replayed = [r for r in runs if _int(r.tags.get(T.STEPS_REPLAYED)) > 0]
    restored = [r for r in runs if r.tags.get(T.RESTORED_FROM)]
    orphaned = [r for r in runs if T.ORPHANED in r.tags]
    resumes = _int(data.tags.get(T.RESUMES))
    resubmits = _int(data.tags.get(T.RESUBMISSIONS))
    reasons = [data.tags.get(T.RESUBMISSION.format(i), "") for i in range(1, resubmits + 1)]
    facts: dict[str, Any] = {
        "trials": len([r for r in runs if T.ORPHANED not in r.tags]),
        "failed": [{"trial": label[r.run_id], "run": r.run_id, "config_id": r.tags.get(T.CONFIG_ID),
                    "seed": r.tags.get(T.SEED), "error": _first_line(r.tags.get(T.ERROR, ""))} for r in failed],
        "killed": [label[r.run_id] for r in killed],
        "retries": {label[r.run_id]: _int(r.tags.get(T.RETRIES)) for r in retried},
        "steps_replayed": {label[r.run_id]: _int(r.tags.get(T.STEPS_REPLAYED)) for r in replayed},
        "restored_from": {label[r.run_id]: r.tags.get(T.RESTORED_FROM) for r in restored},
        "set_aside": [{"run": r.run_id, "trial": r.tags.get(T.TRIAL_ID), "why": r.tags.get(T.ORPHANED, "")[:300]}
                      for r in orphaned],
        "driver_resumes": resumes,
        "resubmissions": [{"attempt": i, "reason": why} for i, why in enumerate(reasons, 1)],
    }
    slurm, text = _slurm(data, [r for r in runs if T.ORPHANED not in r.tags], label)
    if slurm:
        facts["slurm"] = slurm
    extensions = _extensions(data, runs, label)
    if extensions:
        facts["extensions"] = extensions
        resumes -= len(extensions)  # each extension's driver found the parent run, as a resume does
        facts["driver_resumes"] = resumes
        text += [f"Extension {e['n']} ({e['at']}): `{e['command']}`: {'; '.join(e['changed'])}; trials "
                 f"{e['trials']}" for e in extensions]
    if resumes or resubmits:
        text.append(f"The sweep's driver started {resumes + 1} time(s): {resumes} resume(s)"
                    + (f", {resubmits} resubmission(s) by its supervisor ({'; '.join(w for w in reasons if w)[:300]})"
                       if resubmits else ""))
    if failed:
        text.append(f"{len(failed)} of {facts['trials']} trial(s) failed (left out of the statistics):")
        text += [f"  {f['trial']} (configuration {f['config_id']}, seed {f['seed']}): {f['error'] or 'no error text'}"
                 for f in facts["failed"][:limit]]
        if len(failed) > limit:
            text.append(f"  ... and {len(failed) - limit} more (report.json, night.failed)")
    if killed:
        text.append(f"{len(killed)} trial run(s) ended KILLED (the sweep was stopped while they ran): "
                    f"{', '.join(facts['killed'][:limit])}")
    if retried:
        text.append(f"{len(retried)} trial(s) retried from their last checkpoint after a failure (their error, their "
                    f"process or their node), {sum(facts['retries'].values())} retries in all (failure.max_failures)")
    if replayed or restored:
        text.append(f"{len(replayed)} trial(s) reported {sum(facts['steps_replayed'].values())} step(s) again after a "
                    "retry or a resume (logged once)" + (f"; {len(restored)} restored from an older checkpoint than their snapshot "
                                               "named" if restored else ""))
    if orphaned:
        text.append(f"{len(orphaned)} run(s) set aside (tag {T.ORPHANED}; kept, not in the statistics)")
    if not text:
        text = [f"A quiet night: {facts['trials']} trial(s), none failed, retried or restored; the driver ran once."]
    items: list[tuple[str, list[str]]] = []  # the terminal's indented lines (each failed trial) nest under the line before them
    for line in text:
        if line.startswith("  ") and items:
            items[-1][1].append(line.strip())
        else:
            items.append((line, []))
    page = "<ul>" + "".join(
        f"<li>{html.escape(head)}" + ("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in sub_) + "</ul>" if sub_
                                      else "") + "</li>" for head, sub_ in items) + "</ul>"
    return Section("night", "The night: failures and restarts", facts, text, page)
