"""What a sweep's storage says before it resumes, and what it must show after: nothing lost, or the loss said.

Before Tune restores (`prepare`):
- Tune's snapshot files are checked and, where damaged, replaced from danlu's copy or an older session
  (orchestrator/storage/snapshots.py); what was done is said;
- the journal's damage (a cut last line, a line whose checksum fails, a damaged offset file) is said, with the
  operation, trial and step each damaged line held (orchestrator/tracking/journal.py);
- the highest step the journal holds of each trial is written for the trials' restores
  (orchestrator/storage/checkpoints.py), so no restored trial resumes past a step MLflow will never get.

After the sweep (`audit`): each damaged journal line past what MLflow had confirmed is looked for in MLflow (a
restored trial reports those steps again; its run is found or ended again). What came back is said as
recovered; what did not, or cannot be known, is said as lost, and makes the exit code 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import tags as T
from orchestrator.errors import SweepFailed


@dataclass
class Prep:
    rebuild_tuner: bool = False  # tuner.pkl was set aside: a new Tuner writes it before Tuner.restore
    limits: dict[str, int] = field(default_factory=dict)  # trial id -> highest step the journal holds


def prepare(storage: Path, state_dir: Path, journal, say: Callable[[str], None]) -> Prep:
    """Before a restore: check and repair Tune's state files from danlu's generations, say what the journal's
    damage was, and write the restore limits (no trial resumes past a step the tracking store will never get).
    SweepFailed (exit 1) where the sweep cannot be restored; nothing is changed then."""
    from orchestrator.storage import snapshots
    from orchestrator.storage.checkpoints import write_limits
    from orchestrator.storage.disk import Fault, is_full

    try:
        prep = Prep()
        if journal is not None:
            prep.limits = journal.logged_steps()
            for note in journal.report():
                say(f"danlu: {note}")
            write_limits(state_dir, prep.limits)
        repaired = snapshots.repair(storage)
        for note in repaired.notes:
            say(f"danlu: {note}")
        prep.rebuild_tuner = repaired.rebuild_tuner
    except snapshots.Unrestorable as exc:
        raise SweepFailed(str(exc)) from None
    except OSError as exc:
        fault = Fault("the sweep's state, before its restore", str(storage), " ".join(str(exc).split())[:300],
                      is_full(exc))
        raise SweepFailed(f"{fault.describe()}. Nothing was launched; free space (or fix the storage), then run "
                          "the same command again.") from None
    return prep


def audit(store, parent_id: str | None, damage: list, metric: str,
          names: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(recovered, lost): each damaged journal line past MLflow's confirmed offset, looked for in MLflow."""
    if not damage:
        return [], []
    if parent_id is None:
        return [], [f"{d.describe(names)}: the sweep has no parent run to look in" for d in damage]
    runs = {}
    for run in store.trial_runs(parent_id):
        if T.ORPHANED not in run.tags:
            runs[run.tags.get(T.TRIAL_ID)] = run
    recovered: list[str] = []
    lost: list[str] = []
    for d in damage:
        run = runs.get(d.trial) if d.trial else None
        if d.kind == "metrics" and run is not None and d.step is not None:
            steps = {s for s, _ in store.history(run.run_id, metric)}
            (recovered if d.step in steps else lost).append(
                f"{d.describe(names)}: " + ("MLflow holds that step again (the trial reported it again from an earlier "
                                       "checkpoint)" if d.step in steps else "MLflow does not hold that step"))
        elif d.kind in ("start", "meta", "tags") and run is not None:
            recovered.append(f"{d.describe(names)}: the trial's run is in MLflow (its start was sent again)")
        elif d.kind == "end" and run is not None and run.status != "RUNNING":
            recovered.append(f"{d.describe(names)}: the trial's run is {run.status}")
        elif d.kind in ("open", "close_sweep"):
            recovered.append(f"{d.describe(names)}: done again by this run of the sweep")
        else:
            lost.append(f"{d.describe(names)}: what it held cannot be found in MLflow")
    return recovered, lost
