"""A sweep's last lines on the terminal: the counts, the two bests (the best configuration, its mean over seeds with
its interval; the best single trial), and where to review it in MLflow's UI (orchestrator/tracking/links.py)."""

from __future__ import annotations

from typing import Any

from orchestrator import tags as T


def counts_line(summary: dict) -> str:
    """The counts: trials completed, stopped early, failed."""
    c = summary["counts"]
    stalled = summary.get("stalled") or []
    return (f"{sum(c.values())} trials: {c['completed']} completed, {c['stopped_early']} stopped early, "
            f"{c['failed']} failed" + (f" ({len(stalled)} of them stalled and killed mid-run: "
                                       f"{', '.join(stalled[:10])})" if stalled else ""))


def summarize(trials, sweep, early: set[str], label, max_failed_fraction=None,
              stalled: dict[str, int | None] | None = None) -> tuple[dict, int]:
    """Counts and the best trial, ranked by each trial's last reported metric (Tune's scope="last"). `stalled`:
    trial_id -> the step of the failed trials that stalled (their processes were ended)."""
    stalled = stalled or {}
    counts = {"completed": 0, "stopped_early": 0, "failed": 0}
    best = None
    hung = []
    for t in trials:
        if t.status == "ERROR":
            counts["failed"] += 1
            if t.trial_id in stalled:
                step = stalled[t.trial_id]
                hung.append(f"{label(t)} at step {step}" if step is not None else f"{label(t)} before its first report")
            continue
        counts["stopped_early" if t.trial_id in early else "completed"] += 1
        v = (t.last_result or {}).get(sweep.metric)
        if isinstance(v, (int, float)) and v == v:
            if best is None or (v > best[0] if sweep.mode == "max" else v < best[0]):
                best = (float(v), label(t), t.trial_id)
    total = sum(counts.values())
    steps = sum((t.last_result or {}).get("training_iteration") or 0 for t in trials)
    summary: dict[str, Any] = {
        "metrics": {f"trials_{k}": v for k, v in counts.items()} | {"trials_total": total, "steps_run": float(steps)},
        "tags": {},
        "counts": counts,
        "stalled": hung,
    }
    if best is not None:
        summary["metrics"][f"best_{sweep.metric}"] = best[0]
        summary["tags"] = {T.BEST_TRIAL: best[1], T.BEST_TRIAL_ID: best[2],
                           T.BEST.format(sweep.metric): f"{best[0]:.6g}"}
        summary["best"] = best
    too_many = max_failed_fraction is not None and counts["failed"] > max_failed_fraction * total
    code = 1 if total == 0 or counts["failed"] == total or too_many else 0
    return summary, code


def with_earlier(summary: dict, earlier: dict | None, sweep) -> dict:
    """An extension's summary made the whole sweep's (`danlu extend`): the earlier trials' counts, steps and best
    single trial (as its record keeps them: orchestrator/launch/extension.py) added to this part's, so that the parent
    run's trials_* and best_<metric> never shrink to the extension's."""
    if not earlier:
        return summary
    counts = {k: v + int(earlier.get(k, 0)) for k, v in summary["counts"].items()}
    metrics = summary["metrics"] | {f"trials_{k}": v for k, v in counts.items()} | {
        "trials_total": sum(counts.values()), "steps_run": summary["metrics"]["steps_run"] + float(earlier.get("steps", 0))}
    out = {**summary, "counts": counts, "metrics": metrics}
    old = earlier.get("best")
    now = summary.get("best")
    if old and (now is None or (old[0] > now[0] if sweep.mode == "max" else old[0] < now[0])):
        out["best"] = tuple(old)
        out["metrics"][f"best_{sweep.metric}"] = float(old[0])
        out["tags"] = {T.BEST_TRIAL: old[1], T.BEST_TRIAL_ID: old[2], T.BEST.format(sweep.metric): f"{old[0]:.6g}"}
    return out


def summary_lines(summary: dict, sweep, p, parent_id, exp_id, made: dict | None = None) -> list[str]:
    """The sweep's last lines: the counts; the two bests, each labelled and linked (the best configuration: its mean
    over seeds with its interval, what the report ranks; the best single trial: its last reported value); and where
    to review it: the runs table, the parent run and the report in MLflow's UI (orchestrator/tracking/links.py)."""
    from orchestrator.tracking import links, store_class

    out = [f"danlu: {counts_line(summary)}"]
    # a store that no MLflow UI shows gets no addresses of its runs
    base = links.ui_base(p.tracking_uri) if store_class(p.store_kind).ui else None
    board = (made or {}).get("json", {}).get("leaderboard") or {}
    best = board.get("best")
    if best and (exp_id or base is None):
        ci = (f", 95% CI {best['ci_low']:.4g} to {best['ci_high']:.4g}" if best.get("ci_low") is not None else "")
        runs = list(best.get("runs", {}).values())
        link = "" if base is None or not exp_id or not runs else \
            links.compare(base, exp_id, runs) if len(runs) > 1 else links.run(base, exp_id, runs[0])
        out.append(f"danlu: best configuration: {best['label']}: mean {sweep.metric} {best['mean']:.4g}{ci} over "
                   f"{best['n_seeds']} seed(s) ({' '.join(best.get('trials', {}).values())}) {link}".rstrip())
    if "best" in summary:
        v, label, tid = summary["best"]
        rid, label = (made or {}).get("trial_runs", {}).get(tid, (None, label))
        link = f" {links.run(base, exp_id, rid)}" if base is not None and exp_id and rid else ""
        out.append(f"danlu: best single trial: {label}: {sweep.metric} {v:.4g} (its last report){link}")
    if base is None:
        out.append(f"danlu: its runs are in the {p.store_kind} store at {p.tracking_uri} (no MLflow UI shows them; "
                   f"`danlu report {sweep.name}` makes the report again); Ray storage: {p.storage_dir}")
        return out
    where = "`danlu ui` serves it here" if base == links.LOCAL_UI else f"at {base}"
    out.append(f"danlu: review it in MLflow's UI ({where}): experiment '{p.cfg.tracking.experiment}', run "
               f"'{sweep.name}' ({parent_id}); Ray storage: {p.storage_dir}")
    if exp_id and parent_id:
        table = links.runs_table(base, exp_id, str(sweep.name), str(sweep.metric), str(sweep.mode),
                                 shared=bool((made or {}).get("shared_view")))
        out += [f"  runs:   {table}",
                f"  sweep:  {links.run(base, exp_id, parent_id)}"]
        if made:
            out.append(f"  report: {links.report(base, exp_id, parent_id)} (and {made['dir'] / 'report.html'})")
    return out
