"""Storage faults never cost a result: a damaged Tune snapshot, a full disk, a cut journal, two drivers, a killed trial
worker. Real Ray, a real MLflow store, real processes; the disk-full test mounts a real tmpfs (as root, as CI runs)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ROOT, danlu_cli, mlflow_runs, wait_for
from tests.test_recovery import descendants, end_group, start_danlu

pytestmark = pytest.mark.chaos

SWEEP = ["sweep", "job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.num_samples=6", "epochs=12", "epoch_s=0.2",
         "checkpoint_state=true", "cluster.num_cpus=2"]


def kill(proc) -> None:
    tree = descendants(proc)
    os.kill(proc.pid, signal.SIGKILL)
    end_group(proc, tree)


def finished(tmp_path, name) -> set[str]:
    if not (tmp_path / "mlflow.db").exists():
        return set()
    _, _, children = mlflow_runs(tmp_path / "mlflow.db", name)
    return {r.info.run_id for r in children if r.info.status == "FINISHED"}


def kill_after_finished(tmp_path, args, name, n: int = 3) -> set[str]:
    """Start the sweep, SIGKILL it once n trials are FINISHED in MLflow; the ids of the finished runs."""
    proc = start_danlu(args, tmp_path, tmp_path / "first.log")
    try:
        wait_for(lambda: len(finished(tmp_path, name)) >= n, what=f"{n} finished trials")
        kill(proc)
    finally:
        end_group(proc)
    return finished(tmp_path, name)


def assert_whole(tmp_path, name, trials=6, steps=12, kept=()):
    """One FINISHED parent with its report; one FINISHED run per trial with every step once; the runs in `kept` (run
    ids finished before the fault) all still there; runs set aside are tagged and not RUNNING."""
    client, parents, children = mlflow_runs(tmp_path / "mlflow.db", name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["danlu.report"] == "made"
    live = [r for r in children if "danlu.orphaned" not in r.data.tags]
    assert len(live) == trials and all(r.info.status == "FINISHED" for r in live)
    assert max(Counter(r.data.tags["ray.trial_id"] for r in live).values()) == 1
    for r in live:
        assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "score")) == list(range(1, steps + 1))
    assert all(r.info.status != "RUNNING" for r in children)
    for rid in kept:
        assert client.get_run(rid).info.lifecycle_stage == "active", rid
    return client, parents[0], children


def test_a_damaged_snapshot_is_restored_from_danlus_copy_and_no_run_is_deleted(tmp_path):
    """The issue's case: SIGKILL after 3 trials, cut Tune's newest experiment state in half, run the same command.
    Tune alone would start an empty experiment and danlu removed the earlier trials' runs; now the state comes from
    danlu's copy, it is said, and every trial's run is kept and completed."""
    args = [*SWEEP, "sweep.name=es"]
    done = kill_after_finished(tmp_path, args, "es")
    storage = tmp_path / "outputs" / "es"
    newest = max(storage.glob("experiment_state-*.json"))
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    r = danlu_cli(args, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "could not be used" in r.stdout and "danlu's copy" in r.stdout and newest.name in r.stdout
    assert "danlu: resuming es" in r.stdout and "Traceback" not in r.stdout + r.stderr
    assert_whole(tmp_path, "es", kept=done)
    assert any(p.name == newest.name for p in (storage / "danlu" / "set-aside").rglob("*.json"))  # kept, not deleted


def test_with_no_snapshot_to_restore_it_stops_says_what_to_do_and_that_works(tmp_path):
    """Tune's only experiment state cut, danlu's copy gone too: exit 1 naming the file and what to do, nothing
    changed (no run deleted or ended). Doing what it says starts the trials over under the same parent: the earlier
    runs are kept, set aside, and each configuration runs again (the search is seeded)."""
    args = [*SWEEP, "sweep.name=lost"]
    done = kill_after_finished(tmp_path, args, "lost")
    storage = tmp_path / "outputs" / "lost"
    for p in storage.glob("experiment_state-*.json"):
        p.write_bytes(p.read_bytes()[:100])
    shutil.rmtree(storage / "danlu" / "tune")
    def store():
        _, parents, children = mlflow_runs(tmp_path / "mlflow.db", "lost")
        return {(x.info.run_id, x.info.status, x.data.tags.get("danlu.resumes")) for x in parents + children}

    before = store()
    r = danlu_cli(args, tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "none of Tune's snapshots" in r.stderr and "experiment_state-" in r.stderr and "move Tune's files" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert store() == before  # nothing sent, nothing ended, not even the parent's resume recorded
    aside = storage / "danlu" / "set-aside" / "by-hand"
    aside.mkdir(parents=True)
    for p in storage.iterdir():
        if p.is_file() and p.suffix in (".json", ".pkl"):
            os.replace(p, aside / p.name)
    r = danlu_cli(args, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "set aside" in r.stdout and "left out of the report" not in r.stdout
    _, _, children = assert_whole(tmp_path, "lost", kept=done)
    orphans = [x for x in children if "danlu.orphaned" in x.data.tags]
    assert {x.info.run_id for x in orphans} >= done  # the finished runs of the lost state: kept, set aside


def test_a_cut_journal_line_is_said_and_its_step_comes_back(tmp_path):
    """The journal's last line (a step of a running trial) cut by 5 bytes after a kill: said with its trial and
    step; the trial resumes from a checkpoint before that step, so it comes back, and that is said too. (A slow
    flush keeps MLflow's confirmed offset behind the journal's end, as it is while trials report.)"""
    args = [*SWEEP, "sweep.name=cut", "scheduler=fifo", "tracking.flush_s=30"]
    kill_after_finished(tmp_path, args, "cut", n=2)
    journal = tmp_path / "outputs" / "cut" / "danlu" / "mlflow_journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    while not lines[-1].startswith(b'{"op": "metrics"'):  # the last line a metrics one (the test cuts a step)
        lines.pop()
    journal.write_bytes(b"".join(lines)[:-5])
    r = danlu_cli(args, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the journal's last line was cut short: operation 'metrics' of trial t0" in r.stdout
    assert "danlu: recovered: operation 'metrics'" in r.stdout and "MLflow holds that step again" in r.stdout
    assert_whole(tmp_path, "cut")


def test_a_second_driver_on_a_running_sweep_exits_2_and_the_first_is_unharmed(tmp_path):
    args = [*SWEEP, "sweep.name=same"]
    proc = start_danlu(args, tmp_path, tmp_path / "first.log")
    try:
        wait_for(lambda: (tmp_path / "outputs" / "same" / "danlu" / "driver.lease").exists(), what="the first's lease")
        r = danlu_cli(args, tmp_path)
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"sweep same is running (host {os.uname().nodename}, pid {proc.pid}, since" in r.stderr
        assert proc.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()
    finally:
        end_group(proc)
    assert_whole(tmp_path, "same")


def test_a_killed_trial_worker_is_said_by_danlu_not_by_rays_raw_line(tmp_path):
    args = [*SWEEP, "sweep.name=w", "sweep.num_samples=2", "epochs=40"]
    proc = start_danlu(args, tmp_path, tmp_path / "w.log")
    try:
        def running_pid():
            if not (tmp_path / "mlflow.db").exists():
                return None
            client, _, runs = mlflow_runs(tmp_path / "mlflow.db", "w")
            for run in runs:
                steps = client.get_metric_history(run.info.run_id, "score") if run.info.status == "RUNNING" else []
                if len(steps) >= 5 and run.data.tags.get("danlu.pid"):
                    return int(run.data.tags["danlu.pid"])
            return None
        wait_for(lambda: running_pid() is not None, what="a trial 5 steps in")
        os.kill(running_pid(), signal.SIGKILL)
        assert proc.wait(timeout=600) == 0, (tmp_path / "w.log").read_text()
    finally:
        end_group(proc)
    out = (tmp_path / "w.log").read_text()
    assert "restarted after its worker died (retry 1 of 2), from its checkpoint at step" in out, out
    assert "A worker died or was killed" not in out and "(raylet)" not in out
    assert_whole(tmp_path, "w", trials=2, steps=40)


def test_a_rerun_adds_no_points_and_a_parent_left_without_its_report_is_finished(tmp_path):
    args = [*SWEEP, "sweep.name=again", "sweep.num_samples=2", "epochs=4"]
    assert danlu_cli(args, tmp_path).returncode == 0
    client, parent, _ = assert_whole(tmp_path, "again", trials=2, steps=4)
    # as if the driver had died after the trials ended, before the report: RUNNING, the report pending (and so
    # no record of a sweep that ended whole, which is written last)
    client.set_tag(parent.info.run_id, "danlu.report", "pending")
    client.update_run(parent.info.run_id, status="RUNNING")
    (tmp_path / "outputs" / "again" / "danlu" / "finished.json").unlink()
    r = danlu_cli(args, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "left without its report" in r.stdout
    client, parent, _ = assert_whole(tmp_path, "again", trials=2, steps=4)
    for key in ("trials_total", "trials_completed", "best_mean_score"):
        assert len(client.get_metric_history(parent.info.run_id, key)) == 1, key


def mount_tmpfs(where: Path, size_mb: int) -> str | None:
    """Mount a tmpfs (root only, as in CI); why not, or None."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "mounting a tmpfs needs root"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)], capture_output=True,
                       text=True)
    return None if r.returncode == 0 else f"mount failed: {r.stderr.strip()}"


def test_a_full_disk_stops_the_sweep_says_so_and_the_same_command_resumes_it(tmp_path):
    """outputs/ and mlflow.db on a 30 MB tmpfs, filled to the last byte while trials run: not an outage, not a
    traceback. The sweep stops (exit 1) naming the disk and the resume command; once space is freed, the same
    command ends the sweep with every step of every trial once."""
    disk = tmp_path / "disk"
    why = mount_tmpfs(disk, 30)
    if why:
        pytest.skip(why)
    try:
        args = [*SWEEP, "sweep.name=full", "storage.min_free_mb=0"]  # no early stop: the writes must fail and be seen
        proc = start_danlu(args, disk, tmp_path / "full.log")
        try:
            wait_for(lambda: len(finished(disk, "full")) >= 2, what="2 finished trials")
            done = finished(disk, "full")
            with open(disk / "ballast", "wb") as f:
                try:
                    f.write(b"\0" * (64 * 2**20))
                except OSError:
                    pass  # full
            code = proc.wait(timeout=600)
        finally:
            end_group(proc)
        out = (tmp_path / "full.log").read_text()
        assert code == 1, out
        assert f"disk full at {disk}" in out and "0.0 MB free of 30.0 MB" in out
        assert "resume with: " in out and "Traceback" not in out and "unreachable" not in out
        (disk / "ballast").unlink()
        r = danlu_cli(args, disk)
        assert r.returncode == 0, r.stdout + r.stderr
        assert_whole(disk, "full", kept=done)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_the_storage_fault_loop_finds_no_violation(capsys):
    """Two iterations of scripts/faults.py (the closing notes give longer runs): tuner.pkl and a checkpoint file cut
    at seeded bytes after a kill at a seeded moment (a damaged offset file: tests/test_journal.py)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import faults

    code = faults.main(["--iterations", "2", "--seed", "300", "--kinds", "cut-tuner,cut-checkpoint"])
    out = capsys.readouterr().out
    assert code == 0, out

