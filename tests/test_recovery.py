"""Sweeps survive the night: a killed driver, SIGTERM, an MLflow outage, NaN, all with real parts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.tracking.ui import server_env
from tests.conftest import CONF, free_port, mlflow_runs, on_shared_ray, wait_for, without_preflight

pytestmark = pytest.mark.chaos

SLEEPY = ["job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.num_samples=4", "epochs=16", "epoch_s=0.25",
          "checkpoint_state=true", "cluster.num_cpus=2"]


def start_danlu(args, cwd: Path, log: Path, preflight: bool = False) -> subprocess.Popen:
    """`danlu` in its own session, so that the test can end exactly what it started; outside the chaos layer, on
    the test process's shared Ray (tests/conftest.py on_shared_ray), as its danlu_cli calls are; in it, with a Ray
    of its own, which a kill of the driver takes with it. Without the preflight unless `preflight`."""
    return subprocess.Popen([sys.executable, "-m", "orchestrator", "--config-dir", str(CONF),
                             *on_shared_ray(without_preflight(args, preflight), killed=True)], cwd=cwd,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def checkpoints(storage: Path) -> int:
    return sum(1 for _ in storage.glob("t*/checkpoint_*"))


def newest_checkpoints(storage: Path) -> list[int]:
    """Per trial, the index of its newest checkpoint (Tune names them checkpoint_000000, ...)."""
    newest: dict[str, int] = {}
    for c in storage.glob("t*/checkpoint_*"):
        newest[c.parent.name] = max(newest.get(c.parent.name, -1), int(c.name.rsplit("_", 1)[-1]))
    return list(newest.values())


def descendants(proc: subprocess.Popen) -> list:
    import psutil

    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def end_group(proc: subprocess.Popen, tree: list | None = None) -> None:
    """End the driver and everything it started (Ray's processes, its workers), and wait until they are gone,
    so that no worker of a killed sweep still writes a checkpoint while the test looks. `tree`: the driver's
    descendants, taken before the driver was killed (its orphans are no longer its children)."""
    import psutil

    tree = descendants(proc) if tree is None else tree
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=60)
    psutil.wait_procs(tree, timeout=60)


def assert_one_clean_run_per_trial(db: Path, sweep: str, steps: int, trials: int = 4):
    client, parents, children = mlflow_runs(db, sweep)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(r.info.status != "RUNNING" for r in children)
    per_trial = Counter(r.data.tags["ray.trial_id"] for r in children)
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(finished) == trials and all(per_trial[r.data.tags["ray.trial_id"]] == 1 for r in finished)
    for r in finished:
        history = [m.step for m in client.get_metric_history(r.info.run_id, "score")]
        assert sorted(history) == list(range(1, steps + 1)), history  # contiguous, and each (key, step) once
    return parents[0], finished


def test_driver_sigkill_then_the_same_command_resumes(tmp_path):
    # steps of 0.5 s: the kill must land while a trial is mid-way and another's end is in MLflow, a window of ~2.5 s
    # at SLEEPY's 0.25 s, which a loaded machine's polling missed once (every trial had ended before the kill)
    args = ["sweep", *(a for a in SLEEPY if not a.startswith("epoch_s=")), "epoch_s=0.5", "sweep.name=night"]
    storage = tmp_path / "outputs" / "night"
    proc = start_danlu(args, tmp_path, tmp_path / "first.log")
    try:
        # once a trial's end has reached MLflow and another trial is mid-way, past 2 x checkpoint.keep
        # checkpoints, so that Tune has snapshotted the experiment with one of them
        def finished_and_midway():
            if not any(4 <= i < 15 for i in newest_checkpoints(storage)) or not (tmp_path / "mlflow.db").exists():
                return False
            _, _, runs = mlflow_runs(tmp_path / "mlflow.db", "night")
            return any(r.info.status == "FINISHED" for r in runs)
        wait_for(finished_and_midway, what="a finished trial in MLflow and one mid-way")
        tree = descendants(proc)
        os.kill(proc.pid, signal.SIGKILL)
        end_group(proc, tree)
    finally:
        end_group(proc)
    killed_at = time.time() * 1000
    _, _, before = mlflow_runs(tmp_path / "mlflow.db", "night")
    done_before = [r.info.run_id for r in before if r.info.status == "FINISHED"]
    assert done_before
    r = subprocess.run([sys.executable, "-m", "orchestrator", "--config-dir", str(CONF), *on_shared_ray(args)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "danlu: resuming night" in r.stdout and "danlu: 4 trials: 4 completed" in r.stdout
    parent, finished = assert_one_clean_run_per_trial(tmp_path / "mlflow.db", "night", 16)
    assert parent.data.tags["danlu.resumes"] == "1"
    # the same 4 trials (no new trial ids were made), and those finished before the kill were not rerun
    assert len(list((storage / "logs").glob("*.log"))) == 4
    client, _, _ = mlflow_runs(tmp_path / "mlflow.db", "night")
    for rid in done_before:  # nothing new was reported by a trial that had finished
        assert all(m.timestamp <= killed_at for m in client.get_metric_history(rid, "score"))
    # restored trials went on from the checkpoint in Tune's last experiment snapshot, not from the start:
    # a trial that had made `before` reports and restarted from step 0 would redo all of them, so one that
    # redid fewer (none at all, when the snapshot was fresh) continued from a checkpoint. (How many are redone
    # depends on how fresh Tune's snapshot was; Tune forces one once a trial has `checkpoint.keep` new
    # checkpoints: usually <= 2 redone here, 6 of 16 seen once on a loaded CI machine.)
    resumed = 0
    for r in finished:
        redone = int(r.data.tags.get("danlu.steps_replayed", 0))
        before = sum(1 for m in client.get_metric_history(r.info.run_id, "score") if m.timestamp <= killed_at)
        print(f"{r.info.run_name}: {before} steps before the kill, {redone} redone")
        assert redone <= before, (redone, before)
        if r.info.run_id not in done_before and before:
            resumed += redone < before
    assert resumed >= 1  # at least one interrupted trial continued from a checkpoint rather than from step 0


def sigterm_mid_sweep(tmp_path: Path, name: str, times: int) -> tuple[int, str]:
    """Start a sweep, SIGTERM it `times` times once checkpoints exist; its exit code and output."""
    storage = tmp_path / "outputs" / name
    proc = start_danlu(["sweep", *SLEEPY, f"sweep.name={name}"], tmp_path, tmp_path / f"{name}.log")
    try:
        wait_for(lambda: checkpoints(storage) >= 4, what="checkpoints")
        log = tmp_path / f"{name}.log"
        for i in range(times):
            os.kill(proc.pid, signal.SIGTERM)
            if i + 1 < times:  # the next one as soon as danlu has taken this one: its graceful stop is under way
                deadline = time.time() + 120  # (polled closely: a graceful stop can take well under a second)
                while "danlu: stopping" not in log.read_text() and proc.poll() is None and time.time() < deadline:
                    time.sleep(0.01)
        code = proc.wait(timeout=120)
    finally:
        end_group(proc)
    return code, (tmp_path / f"{name}.log").read_text()


def test_sigterm_stops_gracefully_and_the_printed_command_resumes(tmp_path):
    code, out = sigterm_mid_sweep(tmp_path, "term", 1)
    assert code == 130, out
    assert "interrupted; Ray's state is saved. Resume with: danlu" in out
    _, (parent,), children = mlflow_runs(tmp_path / "mlflow.db", "term")
    assert parent.info.status == "KILLED" and any(r.info.status == "KILLED" for r in children)
    assert not any(r.info.status == "RUNNING" for r in children)
    # the last progress line counts done only the trials that ended: the stopped and the waiting ones resume
    last = [ln for ln in out.splitlines() if ln.startswith("[") and " done " in ln][-1]
    done = int(re.search(r"done (\d+)/", last).group(1))
    assert done == sum(r.info.status in ("FINISHED", "FAILED") for r in children), (last, [r.info.status for r in children])
    command = out.split("Resume with: ", 1)[1].splitlines()[0].split()
    assert command[0] == "danlu" and "resume" in command and "term" in command
    r = subprocess.run([sys.executable, "-m", "orchestrator", *command[1:]], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_one_clean_run_per_trial(tmp_path / "mlflow.db", "term", 16)


def start_mlflow_server(tmp_path: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(tmp_path / "art")],
        cwd=tmp_path, stdout=open(tmp_path / f"server-{time.time()}.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True, env=server_env())  # as scripts/mlflow-server starts one: no GenAI job runner
    import urllib.request

    def up():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
        except OSError:
            return False

    wait_for(up, timeout=120, what="mlflow server")
    return proc


def test_mlflow_outage_loses_nothing(tmp_path):
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    storage = tmp_path / "outputs" / "outage"
    args = ["sweep", *SLEEPY, "epochs=24", "sweep.name=outage", "tracking=server", f"tracking.uri=http://127.0.0.1:{port}"]
    proc = start_danlu(args, tmp_path, tmp_path / "outage.log")
    try:
        wait_for(lambda: checkpoints(storage) >= 4, what="checkpoints")
        os.killpg(server.pid, signal.SIGTERM)  # the tracking server goes away mid-sweep
        server.wait(timeout=60)
        wait_for(lambda: "is unreachable" in (tmp_path / "outage.log").read_text() or proc.poll() is not None,
                 what="danlu noticing the outage")
        server = start_mlflow_server(tmp_path, port)  # and comes back
        code = proc.wait(timeout=600)
        out = (tmp_path / "outage.log").read_text()
        assert code == 0, out
        assert "is unreachable" in out and "reachable again" in out
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"http://127.0.0.1:{port}")
        exp = client.get_experiment_by_name("danlu")
        runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("danlu.sweep") == "outage"]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(runs) == 5 and len(children) == 4
        for r in children:
            assert r.info.status == "FINISHED"
            assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "score")) == list(range(1, 25))
    finally:
        end_group(proc)
        try:
            os.killpg(server.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        server.wait(timeout=60)


def test_nan_and_exceptions_fail_their_trial_only(ray_gpus, conf_dir, tmp_path):
    import io

    from orchestrator.run.sweep import run_sweep

    out = io.StringIO()
    code = run_sweep(["job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.num_samples=1", "epochs=4", "epoch_s=0.01",
                      "nan_at=tag(grid, choice(0,3))", "sweep.name=nan", f"output_dir={tmp_path}/outputs",
                      f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "failure.max_failed_fraction=0.6"],
                     conf_dir, stream=out, preflight=False)
    assert code == 0, out.getvalue()  # 1 of 2 failed: under the threshold of 60 %
    client, _, children = mlflow_runs(tmp_path / "mlflow.db", "nan")
    (bad,) = [r for r in children if r.info.status == "FAILED"]
    assert "non-finite metric at step 3" in bad.data.tags["danlu.error"]
    assert "FloatingPointError" in Path(client.download_artifacts(bad.info.run_id, "error.txt", str(tmp_path))).read_text()
    code = run_sweep(["job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.num_samples=1", "epochs=4", "epoch_s=0.01",
                      "nan_at=tag(grid, choice(0,3))", "sweep.name=nan2", f"output_dir={tmp_path}/outputs",
                      f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "failure.max_failed_fraction=0.4"],
                     conf_dir, stream=io.StringIO(), preflight=False)
    assert code == 1  # 50 % failed: over a 40 % threshold


def test_a_second_sigterm_stops_at_once_and_the_sweep_still_resumes(tmp_path):
    code, out = sigterm_mid_sweep(tmp_path, "twice", 2)
    assert code == 130 and "stopped at once; the sweep can still be resumed" in out, out
    r = subprocess.run([sys.executable, "-m", "orchestrator", "--config-dir", str(CONF), "resume", "twice"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_one_clean_run_per_trial(tmp_path / "mlflow.db", "twice", 16)


def test_driver_killed_during_an_outage_loses_no_metric(tmp_path):
    """MLflow is down, the driver dies, MLflow comes back, the sweep is resumed: every step of every trial
    is in MLflow exactly once (the journal kept what the server could not take)."""
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    storage = tmp_path / "outputs" / "dark"
    uri = f"tracking.uri=http://127.0.0.1:{port}"
    # long enough trials (40 x 0.25 s) that the sweep is still reporting when the server has gone
    proc = start_danlu(["sweep", *SLEEPY, "epochs=40", "sweep.name=dark", "tracking=server", uri], tmp_path,
                       tmp_path / "dark.log")
    try:
        wait_for(lambda: checkpoints(storage) >= 4, what="checkpoints")
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)

        def unsent() -> int:  # bytes of journal that MLflow has not confirmed
            offset = storage / "danlu" / "mlflow_journal.offset"
            sent = int(offset.read_text().split()[0]) if offset.exists() else 0  # "<offset> <crc>"
            return (storage / "danlu" / "mlflow_journal.jsonl").stat().st_size - sent

        wait_for(lambda: unsent() > 2000 or proc.poll() is not None, what="metrics journaled during the outage")
        assert unsent() > 2000, (tmp_path / "dark.log").read_text()
        tree = descendants(proc)
        os.kill(proc.pid, signal.SIGKILL)  # the driver dies while MLflow is away
        end_group(proc, tree)
        server = start_mlflow_server(tmp_path, port)
        r = subprocess.run([sys.executable, "-m", "orchestrator", "--config-dir", str(CONF), "resume", "dark"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
        assert r.returncode == 0, r.stdout + r.stderr
        assert "refused" not in r.stdout + r.stderr  # every journaled operation was accepted on replay
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"http://127.0.0.1:{port}")
        exp = client.get_experiment_by_name("danlu")
        runs = [x for x in client.search_runs([exp.experiment_id]) if x.data.tags.get("danlu.sweep") == "dark"]
        parents = [x for x in runs if "mlflow.parentRunId" not in x.data.tags]
        finished = [x for x in runs if x in parents or x.info.status == "FINISHED"]
        assert len(parents) == 1 and parents[0].data.tags["danlu.resumes"] == "1"
        assert all(x.info.status != "RUNNING" for x in runs)
        children = [x for x in finished if x not in parents]
        assert len(children) == 4
        for x in children:
            assert sorted(m.step for m in client.get_metric_history(x.info.run_id, "score")) == list(range(1, 41))
    finally:
        end_group(proc)
        try:
            os.killpg(server.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        server.wait(timeout=60)
