"""Slurm allocations as a sweep records them (orchestrator/cluster/slurm.py), the work a restore redoes (measured by the
tracking store), and the report's night section that counts both. The recipe itself runs on a real Slurm in
tests/test_slurm.py; these are the parts that need no Slurm."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from orchestrator import tags as T
from orchestrator.cluster import slurm
from orchestrator.report import night
from orchestrator.tracking import RunRecord
from orchestrator.tracking.writer import Tracker
from tests.conftest import mlflow_runs


def _here(monkeypatch, job="7", allocation="1", end="", limits=""):
    for k, v in (("DANLU_SLURM_JOB", job), ("DANLU_SLURM_ALLOCATION", allocation), ("DANLU_SLURM_PREVIOUS_END", end),
                 ("DANLU_SLURM_TIME_LIMITS", limits)):
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("DANLU_ATTEMPT", raising=False)
    return slurm.Allocation.here()


def test_the_allocation_comes_from_the_batch_scripts_environment(monkeypatch):
    monkeypatch.delenv("DANLU_SLURM_JOB", raising=False)
    assert slurm.Allocation.here() is None  # not started in an allocation
    assert _here(monkeypatch) == slurm.Allocation("7", 1, None)
    assert _here(monkeypatch, allocation="3", end="time_limit", limits="1") == slurm.Allocation("7", 3, "time_limit", 1)
    assert _here(monkeypatch, allocation="3", end="time_limit", limits="9").time_limits == 2  # at most those before
    # a requeue the script did not make itself (no marker, or a damaged one) is Slurm's: a preemption
    assert _here(monkeypatch, allocation="2", end="") == slurm.Allocation("7", 2, "preempted")
    assert _here(monkeypatch, allocation="2", end="garbage") == slurm.Allocation("7", 2, "preempted")
    assert _here(monkeypatch, allocation="x") == slurm.Allocation("7", 1, None)


def test_the_record_counts_each_allocation_once_and_survives_a_cut_file(monkeypatch, tmp_path):
    said = []
    first = _here(monkeypatch)
    assert [e["key"] for e in slurm.record(tmp_path, first, said.append)] == ["7.1"]
    assert len(slurm.record(tmp_path, first, said.append)) == 1  # a resubmitted driver in the same allocation
    second = _here(monkeypatch, allocation="2")
    third = _here(monkeypatch, allocation="3", end="time_limit", limits="1")
    slurm.record(tmp_path, second, said.append)
    entries = slurm.record(tmp_path, third, said.append)
    assert slurm.sweep_tags(entries) == {T.SLURM_ALLOCATIONS: "3", T.SLURM_JOBS: "7", T.SLURM_PREEMPTIONS: "1",
                                         T.SLURM_TIME_LIMITS: "1"}
    assert slurm.cut_tag(third, entries) == "danlu.time_limited.3"
    # allocations that ended before their driver began (a preemption while Ray started) still count: the newest
    # allocation of each job says how many came before it, and how many of those a time limit ended
    late = tmp_path / "late"
    late.mkdir()
    entries = slurm.record(late, _here(monkeypatch, job="9", allocation="4", end="time_limit", limits="1"), said.append)
    entries = slurm.record(late, _here(monkeypatch, job="10", allocation="1"), said.append)  # resubmitted by hand
    assert slurm.sweep_tags(entries) == {T.SLURM_ALLOCATIONS: "5", T.SLURM_JOBS: "9,10", T.SLURM_PREEMPTIONS: "2",
                                         T.SLURM_TIME_LIMITS: "1"}
    assert slurm.cut_tag(first, entries) is None
    monkeypatch.setenv("DANLU_ATTEMPT", "1")  # the supervisor's resubmission: its trials were not cut by Slurm
    assert slurm.cut_tag(third, entries) is None
    text = (tmp_path / slurm.RECORD).read_text()
    for cut in (5, len(text) // 2, len(text) - 1):
        (tmp_path / slurm.RECORD).write_text(text[:cut])
        said.clear()
        assert [e["key"] for e in slurm.record(tmp_path, third, said.append)] == ["7.3"]
        assert said and "could not be read" in said[0]
    assert json.loads((tmp_path / slurm.RECORD).read_text())[0]["job"] == "7"


@pytest.mark.integration
def test_a_restored_trial_s_redo_is_measured_once_per_restore(tmp_path):
    """Driver 1 logs steps 1..5 and dies; driver 2 restores from the checkpoint at step 2 and reports 3, 4, 5 again
    (the work lost), then 6: the run gets danlu.redone.3 = '3 steps, their seconds'; each step once in MLflow."""
    db = tmp_path / "mlflow.db"
    first = Tracker(f"sqlite:///{db}", "danlu", flush_s=0.2, storage=tmp_path)
    first.open_sweep("cut", {"a": 1}, {}, tmp_path, ["danlu", "sweep"])
    first.trial_start("t1", "t000", {"x": "1"}, {"danlu.sweep": "cut"})
    for step in range(1, 6):
        first.trial_metrics("t1", step, step, {"score": step})
    first.close()
    second = Tracker(f"sqlite:///{db}", "danlu", flush_s=0.2, storage=tmp_path)
    second.open_sweep("cut", {"a": 1}, {}, tmp_path, ["danlu", "resume", "cut"])
    second.trial_start("t1", "t000", {"x": "1"}, {"danlu.sweep": "cut"})
    now = int(time.time() * 1000) + 1000
    for i, step in enumerate(range(3, 8)):
        second.trial_metrics("t1", step, now + 500 * i, {"score": step})
    second.trial_end("t1", "FINISHED", {T.OUTCOME: "completed"}, None, None)
    second.close_sweep({}, {}, "FINISHED")
    second.close()
    assert second.errors == []
    client, _, (child,) = mlflow_runs(db, "cut")
    assert child.data.tags[T.REDONE.format(3)] == "3 1.5"  # steps 3, 4, 5 again: 1.5 s until step 6's report
    assert sorted(m.step for m in client.get_metric_history(child.info.run_id, "score")) == list(range(1, 8))


@pytest.mark.integration
def test_a_trial_cut_before_its_first_checkpoint_and_snapshot_is_tagged_as_cut(tmp_path):
    """Allocation 2 started t2, which reported steps 1 and 2 and was preempted before its first checkpoint and
    before Tune's next snapshot: in allocation 3, Tune starts it again from step 1 with nothing of it in its
    snapshot. The journal holds its start, so it is tagged as cut (CI once saw it untagged); a trial that starts
    for the first time in allocation 3 is not."""
    from ray.tune.experiment import Trial

    from orchestrator.run.tuner import TrialRuns

    db = tmp_path / "mlflow.db"
    first = Tracker(f"sqlite:///{db}", "danlu", flush_s=0.2, storage=tmp_path)
    first.open_sweep("cut", {"a": 1}, {}, tmp_path, ["danlu", "sweep"])
    first.trial_start("t2", "t002", {"x": "2"}, {"danlu.sweep": "cut"})
    for step in (1, 2):
        first.trial_metrics("t2", step, step, {"score": step})
    first.close()
    second = Tracker(f"sqlite:///{db}", "danlu", flush_s=0.2, storage=tmp_path)
    second.open_sweep("cut", {"a": 1}, {}, tmp_path, ["danlu", "resume", "cut"])
    started = second.journal.logged_steps()
    assert started == {"t2": 2}
    runs = TrialRuns(second, lambda t: (f"t00{t.trial_id[1]}", {"x": t.trial_id[1]}, {"danlu.sweep": "cut"}),
                     lambda tid: False, str(tmp_path / "logs"), say=lambda m: None, cut="danlu.preempted.3",
                     started=started)
    for tid in ("t2", "t3"):  # t3: new in this allocation
        trial = Trial("__fake", config={}, trial_id=tid, stub=True)  # as Tune restores it: no result of before
        runs.on_trial_start(0, [], trial)
        runs.on_trial_result(0, [], trial, {"step": 1, "score": 1.0, "timestamp": time.time()})
        runs.on_trial_complete(0, [], trial)
    second.close_sweep({}, {}, "FINISHED")
    second.close()
    assert second.errors == []
    _, _, children = mlflow_runs(db, "cut")
    tags = {c.data.tags[T.TRIAL_ID]: c.data.tags for c in children}
    assert tags["t2"].get("danlu.preempted.3") == "resumed at step 1"
    assert "danlu.preempted.3" not in tags["t3"]


def _run(rid, trial, **tags):
    return RunRecord(rid, "1", trial, "FINISHED", tags={T.TRIAL: trial, **tags})


@pytest.mark.parametrize("gpu", [False, True])
def test_the_night_counts_allocations_preemptions_time_limits_and_work_lost(gpu):
    res = "CPU=1,GPU=0.5" if gpu else "CPU=1"
    runs = [_run("a", "t000", **{T.RESOURCES: res, T.PREEMPTED.format(2): "resumed at step 5",
                                 T.REDONE.format(5): "3 36.0", T.REDONE.format(9): "2 36.0"}),
            _run("b", "t001", **{T.RESOURCES: res, T.TIME_LIMITED.format(3): "resumed at step 3"}),
            _run("c", "t002", **{T.RESOURCES: res})]
    data = SimpleNamespace(runs=runs, parent_metrics={"budget_cpu_hours": 1.0, "budget_gpu_hours": 0.5 if gpu else 0},
                           tags={T.SLURM_ALLOCATIONS: "3", T.SLURM_JOBS: "41", T.SLURM_PREEMPTIONS: "1",
                                 T.SLURM_TIME_LIMITS: "1"})
    sec = night.build(data, [], {})
    facts = sec.data["slurm"]
    assert (facts["allocations"], facts["preemptions"], facts["time_limits"]) == (3, 1, 1)
    assert facts["preempted_trials"] == ["t000"] and facts["time_limited_trials"] == ["t001"]
    assert facts["work_lost"]["steps"] == 5 and facts["work_lost"]["seconds"] == 72.0
    assert facts["work_lost"]["cpu_hours"] == pytest.approx(0.02)
    assert facts["work_lost"]["gpu_hours"] == pytest.approx(0.01 if gpu else 0)
    assert sec.text[0].startswith("Slurm: 3 allocation(s) (job 41); 1 ended by a preemption or requeue, 1 by the time")
    assert sec.text[-1].endswith("0.01 GPU-hours of 0.5 used" if gpu else "0.02 CPU-hours of 1 used")
    assert "A quiet night" not in "\n".join(sec.text)


def test_a_night_without_slurm_says_nothing_of_it():
    data = SimpleNamespace(runs=[_run("c", "t002")], parent_metrics={}, tags={})
    sec = night.build(data, [], {})
    assert "slurm" not in sec.data and not any("Slurm" in line for line in sec.text)
