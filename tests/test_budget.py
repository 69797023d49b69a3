"""Budgets: sweep.budget.gpu_hours, cpu_hours and wall_time stop a sweep gracefully (resumable with a larger one);
a trial's cost is its wall time times what it holds."""

from __future__ import annotations

import json
import re

import pytest
from conftest import danlu_cli, mlflow_runs

from orchestrator.errors import BadInput
from orchestrator.launch.budget import Limits, Meter, Used, wall_seconds


def test_wall_time_reads_seconds_and_units():
    assert wall_seconds(90) == 90 and wall_seconds("30m") == 1800 and wall_seconds("1.5h") == 5400
    assert wall_seconds(None) is None
    for bad in ("soon", "-1h", 0):
        with pytest.raises(BadInput, match="sweep.budget.wall_time"):
            wall_seconds(bad)


def test_the_meter_counts_resource_seconds_and_keeps_them(tmp_path):
    m = Meter(Limits(gpu_hours=1.0, cpu_hours=None, wall_s=None), tmp_path, gpu=0.25, cpu=1.0)
    m.add(3600, running=3)  # an hour with three trials of a quarter GPU each: 0.75 GPU-hours
    assert m.used.gpu_s == pytest.approx(0.75 * 3600) and m.used.cpu_s == pytest.approx(3 * 3600)
    assert m.reached() is None
    m.add(1200, running=3)  # 20 more minutes: 1.0 GPU-hour
    assert m.reached().startswith("sweep.budget.gpu_hours=1 reached (1 GPU-hours used)")
    m.save()
    again = Meter(Limits(gpu_hours=2.0), tmp_path, gpu=0.25, cpu=1.0)  # a resume with a larger budget
    assert again.used.gpu_s == pytest.approx(3600) and again.reached() is None
    (tmp_path / "budget.json").write_text('{"gpu_s": 36')  # cut: counted from zero, not a crash
    assert Meter(Limits(), tmp_path, 1, 1).used.gpu_s == 0


def test_an_extensions_limits_count_what_it_used_itself(tmp_path):
    m = Meter(Limits(cpu_hours=1.0), tmp_path, gpu=0, cpu=1.0)
    m.add(5 * 3600, running=1)  # the sweep as begun used 5 CPU-hours
    m.save()
    ext = Meter(Limits(cpu_hours=1.0), tmp_path, gpu=0, cpu=1.0, base=Used.of(m.used.as_record()))
    assert ext.reached() is None and ext.used.cpu_s == 5 * 3600  # the total is kept; the limit counts from the base
    ext.add(3600, running=1)
    assert ext.reached().startswith("sweep.budget.cpu_hours=1 reached (1 CPU-hours used)")
    assert Used.of({"cpu_s": 1}) == Used()  # a record that is not one: counted from zero


@pytest.mark.integration
def test_a_budget_stops_a_real_sweep_which_resumes_with_a_larger_one(tmp_path):
    common = ["job=sleep", "sweep=sleep", "epoch_s=0.4", "epochs=10", "sweep.num_samples=4", "scheduler=fifo",
              "checkpoint_state=true", "sweep.name=budgeted"]
    r = danlu_cli(["sweep", *common, "sweep.budget.cpu_hours=0.002"], tmp_path, preflight=True)  # 7.2 CPU-seconds of 32 needed
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "stopped by its budget: sweep.budget.cpu_hours=0.002 reached" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("danlu: stopped by its budget"))
    # the trials that were running when it stopped are named, killed mid-run, not counted among those that ended
    assert re.search(r"; (\d) of 4 trial\(s\) ended, (\d) killed mid-run \((t00\d at step \d+(, )?)+\), (\d) parked",
                     line), line
    assert "Resume with a larger budget: danlu " in out and \
        " resume budgeted sweep.budget.<gpu_hours|cpu_hours|wall_time>=<more>" in out
    client, parents, children = mlflow_runs(tmp_path / "mlflow.db", "budgeted")
    (parent,) = parents
    assert parent.info.status == "KILLED" and parent.data.tags["danlu.outcome"] == "budget"
    assert parent.data.tags["danlu.budget"].startswith("sweep.budget.cpu_hours=0.002 reached")
    assert parent.data.metrics["budget_cpu_hours"] >= 0.002
    assert parent.data.tags["danlu.preflight.overfit"].startswith("SKIP")  # the preflight ran, and is on record
    report = json.loads((tmp_path / "outputs/budgeted/report/report.json").read_text())
    assert report["rungs"]["used"]["budget_cpu_hours"] >= 0.002  # the report gives the budget used
    assert "stopped by its budget: sweep.budget.cpu_hours=0.002" in \
        (tmp_path / "outputs/budgeted/report/report.html").read_text()
    assert "stopped by its budget" in parent.data.tags["mlflow.note.content"]  # the parent's description
    assert len(children) < 4 or any(c.info.status == "KILLED" for c in children)  # trials were parked

    r = danlu_cli(["sweep", *common, "sweep.budget.cpu_hours=0.001"], tmp_path)  # still spent: nothing launched
    assert r.returncode == 1 and "the sweep's budget is spent" in r.stderr, r.stdout + r.stderr

    r = danlu_cli(["resume", "budgeted", "sweep.budget.cpu_hours=1"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    client, parents, children = mlflow_runs(tmp_path / "mlflow.db", "budgeted")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 4  # one run per trial, none lost
    for c in children:
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "score")]
        assert steps == list(range(1, 11)), steps  # every step once
    used = client.get_metric_history(parents[0].info.run_id, "budget_cpu_hours")
    assert len(used) >= 2 and used[-1].value > 0.002  # the budget used, as it went, over both sessions

    # an extension carries a budget of its own: the sweep had used ~0.009 CPU-hours, and the extension's 0.002 counts
    # from the extension's start (counted over the whole sweep, it would be spent before anything ran)
    before = used[-1].value
    r = danlu_cli(["extend", "budgeted", "sweep.num_samples=6", "sweep.budget.cpu_hours=0.002"], tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "budget is spent" not in out, out
    assert "stopped by its budget: sweep.budget.cpu_hours=0.002 reached (0.002" in out, out
    r = danlu_cli(["resume", "budgeted", "sweep.budget.cpu_hours=1"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    client, parents, children = mlflow_runs(tmp_path / "mlflow.db", "budgeted")
    assert [p.info.status for p in parents] == ["FINISHED"] and parents[0].data.tags["danlu.extensions"] == "1"
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 6
    # the parent's metrics stay the sweep's: the earlier use and the extension's
    assert client.get_metric_history(parents[0].info.run_id, "budget_cpu_hours")[-1].value > before + 0.002

