"""Where a report goes: the terminal, files under <storage>/report/, and the sweep's parent run in MLflow (the
files as artifacts under report/, and the best configuration's mean and CI bounds as parent metrics)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from orchestrator import report
from orchestrator.report import _data as report_data
from orchestrator.report import _forms as forms


def make(store, name: str, report_cfg, out_dir: Path, decisions=None,
         storage_dir: Path | None = None, root: Path | None = None, finish: str | None = None, lead=None,
         summary: list[str] | None = None, running: str | None = None) -> dict:
    """Build the report of sweep `name`, write it to out_dir, log it to the parent run. Returns its JSON data.
    `store`: the sweep's RunStore (orchestrator.tracking.open_store).
    storage_dir (the sweep's Ray storage) and root (the folder holding jobs/) serve sections that read checkpoints.
    `finish`: the status the parent run ends with once the report is attached (a sweep's own end); the parent's
    metrics are logged only where they differ from what it holds, so making a report again adds no points.
    The verdict that leads the report is also the parent run's description (the store keeps it: MLflow shows it on its run
    page); `lead(data, rows)` gives it in place of the leaderboard's (danlu compare's own). With `summary` (the
    sweep's counts and failures, at its end) the description is the morning summary: verdict, counts, failures,
    and where the report is. `running` (who runs the sweep now): a partial report, said as such at its top, that
    never touches the parent run (no artifacts, tags or description; its files go to out_dir all the same)."""
    import json

    data = report_data.load(store, name, decisions)
    data.storage_dir, data.root = storage_dir, root
    sections = report.build(data, report_cfg, lead)
    partial = _partial(data, running) if running else []
    out_dir.mkdir(parents=True, exist_ok=True)
    as_json = forms.as_json(data, sections)
    if partial:  # said in every form of it, not only on the terminal
        as_json = json.dumps({"partial": partial[0], **json.loads(as_json)}, indent=1)
    files = {"report.html": forms.as_html(data, sections, partial).encode(), "report.json": as_json.encode()}
    for s in sections:
        files.update(s.plots)
    for fname, content in files.items():
        tmp = out_dir / f".{fname}.tmp"
        tmp.write_bytes(content)
        os.replace(tmp, out_dir / fname)
    from orchestrator import tags as T

    if partial:
        return {"text": partial + forms.as_text(data, sections), "json": json.loads(files["report.json"]),
                "dir": out_dir, "parent_id": data.parent_id, "experiment_id": data.experiment_id, "trial_runs": {},
                "shared_view": None}
    verdict = next(s for s in sections if s.key == "verdict")
    note = ("### danlu: the morning summary\n\n" + "\n".join(f"{line}\n" for line in verdict.text)
            + "".join(f"\n{line}\n" for line in summary or [])
            + "\nThe whole report: this run's Artifacts, report/report.html.")
    store.attach_report(data.parent_id, out_dir, _metrics(data, sections), {T.REPORT: "made"}, finish, note)
    from orchestrator.config.space import short_label

    shared = store.share_view(name, data.metric, data.mode, list(data.space))
    trial_runs = {tid: (rid, f"{c.trials.get(seed, '')} {short_label(c.hp)}".strip())
                  for c in data.configs for seed, (rid, tid) in c.runs.items()}
    return {"text": forms.as_text(data, sections), "json": json.loads(files["report.json"]), "dir": out_dir,
            "parent_id": data.parent_id, "experiment_id": data.experiment_id, "trial_runs": trial_runs,
            "shared_view": shared}


def _partial(data, running: str) -> list[str]:
    """The lines that lead a report of a running sweep: it is not the verdict."""
    from orchestrator import tags as T

    ended = sum(1 for r in data.runs if r.status in ("FINISHED", "FAILED", "KILLED"))
    total = data.tags.get(T.FORECAST.format("trials")) or str(len(data.runs))
    return [f"PARTIAL: sweep {data.name} is still running ({running}): {ended} of {total} trials ended; this is not "
            "the verdict, and the sweep's parent run is left as it is. Its report comes at its end."]


def _metrics(data, sections) -> dict[str, float]:
    board = next((s.data for s in sections if s.key == "leaderboard"), None)
    values = {}
    if board and board.get("best"):
        best = board["best"]
        values[f"best_mean_{data.metric}"] = best["mean"]
        if best["ci_low"] is not None:
            values[f"best_ci_low_{data.metric}"] = best["ci_low"]
            values[f"best_ci_high_{data.metric}"] = best["ci_high"]
        compared = [r for r in board["rows"][1:] if r["state"] is not None]
        if compared and all(r["state"] in ("worse", "indistinguishable") for r in compared):
            # only where every comparison could be decided: "indistinguishable" means nothing with 1 or 3 seeds
            values["configs_indistinguishable_from_best"] = sum(1 for r in compared if r["state"] == "indistinguishable")
    if board and board.get("seed_sd") is not None:
        values[f"seed_sd_{data.metric}"] = board["seed_sd"]
        values["seed_sd_step"] = board["seed_sd_step"]  # the step it was measured at: borrowed only at that step
    return {k: float(v) for k, v in values.items() if v is not None and not math.isnan(float(v))}
