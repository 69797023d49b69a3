"""The night: what went wrong while nobody watched, and what it cost. Trials that failed (with their error), trials
retried from their last checkpoint after a failure, trials restored from a checkpoint (steps reported again), runs set aside,
and the sweep's own restarts: resumes of its driver and resubmissions by danlu's supervisor, with their reasons.

Everything here is read from the tracking store (the tags danlu writes on each run: orchestrator/tags.py), so the
section says the same the morning after, whichever driver made the report."""

from __future__ import annotations

import html

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


def build(data, rows, cfg) -> Section:
    """Failures, retries, restores, runs set aside and restarts of the sweep; a quiet night says so."""
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
    facts = {
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
    text = []
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
    items = []  # the terminal's indented lines (each failed trial) nest under the line before them
    for line in text:
        if line.startswith("  ") and items:
            items[-1][1].append(line.strip())
        else:
            items.append((line, []))
    page = "<ul>" + "".join(
        f"<li>{html.escape(head)}" + ("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in sub_) + "</ul>" if sub_
                                      else "") + "</li>" for head, sub_ in items) + "</ul>"
    return Section("night", "The night: failures and restarts", facts, text, page)
