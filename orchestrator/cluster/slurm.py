"""The Slurm allocations a sweep ran in, and how each one ended.

On a Slurm cluster the night is usually ended by a time limit, a preemption or a maintenance requeue, not by a
failed node. scripts/slurm/ray-cluster.sbatch runs the sweep inside an allocation and, when the job is requeued,
runs the same command again: the sweep resumes from its storage. The script tells the sweep's driver where it
runs through the environment (`danlu submit` carries these to the driver on the cluster):

    DANLU_SLURM_JOB           the Slurm job id
    DANLU_SLURM_ALLOCATION    which allocation of that job this is (SLURM_RESTART_COUNT + 1)
    DANLU_SLURM_PREVIOUS_END  how the job's previous allocation ended: `time_limit` (the script's own graceful stop
                              on the warning signal, then `scontrol requeue`) or `preempted` (the job was requeued
                              by Slurm: a preemption, `scontrol requeue`, a node's maintenance)
    DANLU_SLURM_TIME_LIMITS   how many of the job's allocations so far the script ended at their time limit; every
                              other one before this was ended by Slurm (even one that ended before its driver began)

Each driver started in an allocation adds it to the sweep's record (danlu/allocations.json) and puts the counts on
the sweep's parent run (danlu.slurm.*: the report's night section reads them). A supervisor's resubmission inside
the same allocation is the same allocation. The trials that were cut by the previous allocation's end are tagged on
their runs (danlu.preempted.<k> or danlu.time_limited.<k>, k the allocation they resumed in): they did not fail, and
never count toward failure.max_failures (Tune restores them from the sweep's snapshot, with no failure recorded).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator import tags as T

RECORD = "allocations.json"
ENDS = ("preempted", "time_limit")


@dataclass(frozen=True)
class Allocation:
    """The Slurm allocation this driver runs in, from the environment the batch script sets (None outside one)."""

    job: str
    index: int  # of the job's allocations, from 1
    previous_end: str | None  # how the job's previous allocation ended: one of ENDS, or None for its first
    time_limits: int = 0  # the job's allocations before this one that ended at their time limit

    @classmethod
    def here(cls) -> Allocation | None:
        """The allocation of this process, or None when it was not started by the batch script."""
        job = os.environ.get("DANLU_SLURM_JOB", "").strip()
        if not job:
            return None
        try:
            index = max(1, int(os.environ.get("DANLU_SLURM_ALLOCATION", "1")))
        except ValueError:
            index = 1
        end = os.environ.get("DANLU_SLURM_PREVIOUS_END", "").strip() or None
        if index > 1 and end not in ENDS:
            end = "preempted"  # requeued, and the script did not do it itself
        try:
            limits = min(index - 1, max(0, int(os.environ.get("DANLU_SLURM_TIME_LIMITS") or 0)))
        except ValueError:
            limits = int(end == "time_limit")
        return cls(job, index, end if index > 1 else None, limits)

    @property
    def key(self) -> str:
        """The allocation's name in the sweep's record: job.allocation."""
        return f"{self.job}.{self.index}"


def record(state_dir: Path, here: Allocation | None, say=print) -> list[dict]:
    """Add this allocation to the sweep's record (once, whichever of its drivers comes first) and return the
    record. A record that cannot be read (cut by a kill) starts over, and that is said: the counts then begin
    here, and nothing else depends on it."""
    path = Path(state_dir) / RECORD
    entries: list[dict] = []
    if path.exists():
        try:
            entries = [e for e in json.loads(path.read_text()) if isinstance(e, dict) and "key" in e]
        except (OSError, ValueError, TypeError):
            say(f"danlu: {path} could not be read (cut short?): the Slurm allocations are counted from this one on")
    if here is not None and all(e["key"] != here.key for e in entries):
        entries.append({"key": here.key, "job": here.job, "allocation": here.index,
                        "previous_end": here.previous_end, "time_limits": here.time_limits, "started": time.time()})
        from orchestrator.storage.disk import write_json

        write_json(path, entries)
    return entries


def sweep_tags(entries: list[dict]) -> dict[str, str]:
    """The parent run's tags: allocations, the jobs they belonged to, and how many ended by each cause. A job's
    allocations are counted to the newest one the sweep ran in, those before its first driver included (a job
    preempted while Ray was starting ran no driver, but its allocation ended all the same)."""
    if not entries:
        return {}
    jobs = list(dict.fromkeys(str(e.get("job")) for e in entries))
    count = limits = 0
    for j in jobs:  # each job's newest allocation says how many came before it, and how many a time limit ended
        newest = max((e for e in entries if str(e.get("job")) == j), key=lambda e: int(e.get("allocation", 1)))
        index = int(newest.get("allocation", 1))
        count += index
        limits += min(index - 1, int(newest.get("time_limits", 0) or 0))
    preempted = count - len(jobs) - limits
    return {T.SLURM_ALLOCATIONS: str(count), T.SLURM_JOBS: ",".join(jobs),
            T.SLURM_PREEMPTIONS: str(preempted), T.SLURM_TIME_LIMITS: str(limits)}


def cut_tag(here: Allocation | None, entries: list[dict]) -> str | None:
    """The tag for a trial the previous allocation's end cut short (None when this driver does not follow one):
    danlu.preempted.<k> or danlu.time_limited.<k>, k this allocation's number among the sweep's."""
    if here is None or here.previous_end is None or os.environ.get("DANLU_ATTEMPT", "0") not in ("", "0"):
        return None  # a supervisor's resubmission inside the allocation: its trials were not cut by Slurm
    k = next((i for i, e in enumerate(entries, 1) if e["key"] == here.key), len(entries))
    return (T.PREEMPTED if here.previous_end == "preempted" else T.TIME_LIMITED).format(k)


def here_recorded(state_dir: Path, say=print) -> tuple[dict[str, str], str | None]:
    """This driver's allocation added to the sweep's record: (the parent run's Slurm tags, the tag for trials the
    previous allocation's end cut short, or None). Outside Slurm: ({} or the earlier allocations' tags, None)."""
    here = Allocation.here()
    entries = record(state_dir, here, say)
    return sweep_tags(entries), cut_tag(here, entries)
