"""Resume that holds whenever the driver dies: resources after a resume, checkpoints rotated away, ASHA's
decisions across a restore, the kill loop, and a writer that dies. Real Ray, real MLflow, real processes."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.storage.checkpoints import MARKER
from tests.conftest import ROOT, danlu_cli, mlflow_runs, wait_for
from tests.test_recovery import descendants, end_group, newest_checkpoints, start_danlu

pytestmark = pytest.mark.chaos


def kill_driver(proc) -> float:
    """SIGKILL the driver, then end what it started (a lost login node takes its Ray with it)."""
    tree = descendants(proc)
    os.kill(proc.pid, signal.SIGKILL)
    end_group(proc, tree)
    return time.time() * 1000


def journal_ops(storage: Path, kind: str) -> int:
    path = storage / "danlu" / "mlflow_journal.jsonl"
    return sum(1 for line in path.read_text().splitlines() if line.startswith(f'{{"op": "{kind}"')) if path.exists() else 0


def steps(client, run) -> list[int]:
    return [m.step for m in client.get_metric_history(run.info.run_id, "score")]


@pytest.mark.parametrize("resources, asked", [  # whole GPUs: test_sweep's two-GPU trial, and the cluster tests
    (["resources=quarter_gpu", "+cluster.resources.special=2", "+resources.custom.special=0.5"],
     {"GPU": 0.25, "special": 0.5}),
], ids=["gpu=0.25+custom"])
def test_every_trial_of_a_resumed_sweep_gets_what_it_asked_for(tmp_path, resources, asked):
    """Finished, restarted and newly created trials alike (max_concurrent_trials=2 keeps trials to create
    after the resume), and an extension's: each trial's process was given its GPU share and custom resource by Ray.
    The killed sweep goes on through `danlu extend`, which resumes a sweep that has not ended to its end first."""
    args = ["sweep", "job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.num_samples=6", "epochs=12",
            "epoch_s=0.25", "checkpoint_state=true", "cluster.num_cpus=4", "cluster.num_gpus=2",
            "sweep.max_concurrent_trials=2", *resources, "sweep.name=res"]
    storage = tmp_path / "outputs" / "res"
    proc = start_danlu(args, tmp_path, tmp_path / "first.log")
    try:
        wait_for(lambda: 11 in newest_checkpoints(storage) and len(newest_checkpoints(storage)) >= 3,
                 what="a finished trial and a third one started")
        killed_at = kill_driver(proc)
    finally:
        end_group(proc)
    listed = danlu_cli(["list"], tmp_path)  # its driver died: interrupted, with the command that continues it
    assert listed.returncode == 0 and "danlu: res was interrupted; continue it with: danlu resume res" in listed.stdout
    assert [ln.split()[1] for ln in listed.stdout.splitlines() if ln.startswith("res ")] == ["interrupted"]
    created_before = journal_ops(storage, "start")
    r = danlu_cli(["extend", "res", "sweep.num_samples=7"], tmp_path, own_ray=True)  # its custom resource: a Ray of its own
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "danlu extend res: the sweep has not ended" in out and "it is resumed to its end first, then extended" in out
    assert out.index("resuming res") < out.index("extension 1 of res: 1 new configuration(s)"), out
    client, parents, children = mlflow_runs(tmp_path / "mlflow.db", "res")
    assert len(parents) == 1 and len(children) == 7 and all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.tags["danlu.config_id"] for c in children}) == 7  # decided from all six earlier trials
    assert [c.data.tags.get("danlu.extension") for c in children].count("1") == 1
    new = [c for c in children if c.info.start_time > killed_at]
    assert new and created_before < 6  # some trials were created by the resumed driver
    for c in children:
        given = dict(kv.split("=") for kv in c.data.tags["danlu.resources"].split(","))
        for name, amount in asked.items():
            assert float(given.get(name, 0)) == amount, (c.info.run_name, given)
        assert c.data.tags["danlu.gpu_ids"], c.info.run_name
        assert sorted(steps(client, c)) == list(range(1, 13))


def test_a_restored_trial_whose_checkpoint_is_gone_falls_back_and_says_so(tmp_path):
    """Tune's snapshot names each trial's checkpoint; Tune may delete it (checkpoint.keep) before the next
    snapshot. Here two interrupted trials lose theirs: one keeps only its newest (under another name), one
    keeps none. The resume restores the first from what exists and starts the second over, says so, and
    every trial ends with each step once."""
    args = ["sweep", "job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.num_samples=4", "epochs=16",
            "epoch_s=0.25", "checkpoint_state=true", "cluster.num_cpus=2", "sweep.name=gone"]
    storage = tmp_path / "outputs" / "gone"
    proc = start_danlu(args, tmp_path, tmp_path / "first.log")

    def midway() -> list[Path]:
        return [d for d in storage.glob("t*_*") if d.is_dir() and 4 <= max(
            (int(c.name.rsplit("_", 1)[1]) for c in d.glob("checkpoint_*")), default=-1) < 15]

    def usable(trial: Path) -> list[Path]:
        """Its whole checkpoints within the restore limit (the journal's steps): what a fallback may resume from.
        A checkpoint newer than the journal is never resumed from (its steps would be lost), so the trial that
        keeps one must keep such a one: which are depends on when the kill lands."""
        limit, trial_id = None, trial.name.split("_", 1)[1]
        try:  # the journal's highest step of the trial: what the resume takes as its restore limit
            lines = (storage / "danlu" / "mlflow_journal.jsonl").read_text().splitlines()
        except OSError:
            return []
        for line in lines:
            try:
                op = json.loads(line.split("\t", 1)[0])  # a line is its JSON, a tab, its CRC
            except ValueError:
                continue  # a line being written
            if op.get("op") == "metrics" and op.get("trial_id") == trial_id:
                limit = max(limit or 0, op["step"])
        out = []
        for c in trial.glob("checkpoint_*"):
            try:
                step = json.loads((c / MARKER).read_text())["step"]
            except (OSError, ValueError, KeyError):
                continue
            if limit is not None and step <= limit:
                out.append(c)
        return out

    try:
        wait_for(lambda: len(midway()) >= 2 and any(usable(d) for d in midway()),
                 what="two trials past 2 x keep checkpoints, one with a checkpoint within the journal")
        kill_driver(proc)
    finally:
        end_group(proc)
    one = next(d for d in sorted(midway()) if usable(d))
    two = next(d for d in sorted(midway()) if d != one)
    newest = max(usable(one), key=lambda c: int(c.name.rsplit("_", 1)[1]))
    newest.rename(one / "checkpoint_000900")
    for c in [*one.glob("checkpoint_0000*"), *two.glob("checkpoint_*")]:
        __import__("shutil").rmtree(c)
    r = danlu_cli(args, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    label = {d: d.name.split("_", 1)[0] for d in (one, two)}
    assert f"{label[one]} restored from checkpoint_000900" in r.stdout, r.stdout
    assert f"{label[two]} restored from its start" in r.stdout, r.stdout
    client, _, children = mlflow_runs(tmp_path / "mlflow.db", "gone")
    by_label = {c.data.tags["danlu.trial"]: c for c in children}
    assert "checkpoint_000900" in by_label[label[one]].data.tags["danlu.restored_from"]
    assert "its start" in by_label[label[two]].data.tags["danlu.restored_from"]
    assert len(children) == 4
    for c in children:
        assert c.info.status == "FINISHED" and sorted(steps(client, c)) == list(range(1, 17)), c.info.run_name


def test_asha_decides_after_a_resume_as_in_an_uninterrupted_sweep(tmp_path):
    """The real ASHA scheduler, a deterministic job, one trial at a time, the same search seed: a sweep whose
    driver is killed once trials have passed the first rung, then resumed, stops the same trials at the same
    rungs as a sweep that was never interrupted."""
    base = ["sweep", "job=sleep", "sweep=sleep", "scheduler=asha", "sweep.num_samples=9", "epochs=9",
            "epoch_s=0.2", "scheduler.grace_period=1", "scheduler.reduction_factor=3",
            "sweep.max_concurrent_trials=1", "sweep.search_seed=7", "checkpoint_state=true", "cluster.num_cpus=2"]

    def decisions(cwd: Path, name: str) -> dict[str, tuple[str, int]]:
        client, _, children = mlflow_runs(cwd / "mlflow.db", name)
        return {c.data.tags["danlu.trial"]: (c.data.tags["danlu.outcome"], max(steps(client, c))) for c in children}

    (tmp_path / "a").mkdir()
    r = danlu_cli([*base, "sweep.name=a"], tmp_path / "a")
    assert r.returncode == 0, r.stdout + r.stderr
    straight = decisions(tmp_path / "a", "a")
    (tmp_path / "b").mkdir()
    storage = tmp_path / "b" / "outputs" / "b"
    proc = start_danlu([*base, "sweep.name=b"], tmp_path / "b", tmp_path / "b.log")
    try:
        wait_for(lambda: journal_ops(storage, "end") >= 3, what="three trials past the first rung")
        kill_driver(proc)
    finally:
        end_group(proc)
    r = danlu_cli([*base, "sweep.name=b"], tmp_path / "b")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming b" in r.stdout
    resumed = decisions(tmp_path / "b", "b")
    assert len(straight) == 9 and resumed == straight
    outcomes = Counter(o for o, _ in straight.values())
    assert outcomes["stopped_early"] >= 3 and outcomes["completed"] >= 1  # ASHA did decide something


def _chaos():
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "scripts" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [7])
def test_the_kill_loop_finds_no_violation(seed, capsys):
    """scripts/chaos.py for one iteration (the script runs many; the closing notes give longer runs): three SIGKILLs
    at seeded random moments, then the same command to the end; the MLflow store is checked for every promise."""
    problems = _chaos().iteration(seed, kills=3, window=25.0, keep=False)
    assert problems == [], f"replay with: scripts/chaos.py --seed {seed} --iterations 1 --keep\n{problems}"


def test_a_writer_that_dies_stops_the_sweep_and_says_so(ray_gpus, conf_dir, tmp_path, monkeypatch):
    from orchestrator.run.sweep import run_sweep
    from orchestrator.tracking.mlflow_store import MlflowStore

    real = MlflowStore.metrics

    def dies_at_step_3(self, trial_id, step, ts, values):
        if step == 3:
            raise SystemExit("simulated crash of the writer")  # not an Exception: escapes every retry
        return real(self, trial_id, step, ts, values)

    monkeypatch.setattr(MlflowStore, "metrics", dies_at_step_3)
    out = io.StringIO()
    code = run_sweep(["job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.num_samples=2", "epochs=40",
                      "epoch_s=0.05", "sweep.name=dies", f"output_dir={tmp_path}/outputs",
                      f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"], conf_dir, stream=out, preflight=False)
    assert code == 1, out.getvalue()
    assert "the sweep stopped because its MLflow writer did" in out.getvalue()
    assert "Resume with: danlu" in out.getvalue()


SEEDED = ["sweep", "--no-preflight", "job=sleep", "sweep=sleep", "scheduler=asha", "sweep.num_samples=12", "sweep.seeds=[0,1]",
          "epochs=9", "epoch_s=0.05", "scheduler.grace_period=1", "scheduler.reduction_factor=3",
          "sweep.search_seed=11", "checkpoint_state=true", "cluster.num_cpus=2"]


def seed_groups(cwd: Path, name: str) -> dict[str, dict[int, tuple[str, int]]]:
    """configuration -> seed -> (outcome, last step), from the sweep's MLflow runs."""
    client, _, children = mlflow_runs(cwd / "mlflow.db", name)
    out: dict[str, dict[int, tuple[str, int]]] = {}
    for c in children:
        out.setdefault(c.data.tags["danlu.config_id"], {})[int(c.data.tags["danlu.seed"])] = (
            c.data.tags["danlu.outcome"], max(steps(client, c)))
    return out


def assert_seeds_together(groups: dict) -> int:
    """Each configuration's seeds ended alike: both completed, or both stopped early at the same step. Returns the
    trial-steps run (each trial's last step)."""
    for config, seeds in groups.items():
        assert len(seeds) == 2 and len(set(seeds.values())) == 1, (config, seeds)
    return sum(step for seeds in groups.values() for _, step in seeds.values())


@pytest.fixture(scope="module")
def seeded_straight(tmp_path_factory) -> int:
    """The SEEDED sweep run straight, once for both interrupts: its trial-steps, its seeds checked together."""
    cwd = tmp_path_factory.mktemp("a")
    r = danlu_cli([*SEEDED, "sweep.name=a"], cwd)  # on the shared Ray, as the interrupted one resumes
    assert r.returncode == 0, r.stdout + r.stderr
    groups = seed_groups(cwd, "a")
    assert any(o == "stopped_early" for seeds in groups.values() for o, _ in seeds.values())
    return assert_seeds_together(groups)


@pytest.mark.parametrize("sig, seed", [(signal.SIGINT, 3), (signal.SIGKILL, 5)], ids=["SIGINT", "SIGKILL"])
def test_seed_aware_asha_keeps_seeds_together_across_an_interrupt(seeded_straight, tmp_path, sig, seed):
    """12 configurations x 2 seeds on 2 slots, ASHA (rungs 1 and 3 of 9), the same search seed: a sweep run
    straight (once, seeded_straight), and the same sweep interrupted (Ctrl-C, or its driver killed) once a seeded
    number of trials has ended, then resumed. In both, every configuration's seeds end alike (a seed ahead of its
    group waits at the rung), and the interrupted sweep's trial-steps stay within 1.25x the straight one's."""
    import random

    straight = seeded_straight
    (tmp_path / "b").mkdir()
    storage = tmp_path / "b" / "outputs" / "b"
    ended = random.Random(seed).randint(2, 10)  # the seeded moment: after this many trials ended
    proc = start_danlu([*SEEDED, "sweep.name=b"], tmp_path / "b", tmp_path / "b.log")
    try:
        wait_for(lambda: journal_ops(storage, "end") >= ended, what=f"{ended} trials ended")
        if sig == signal.SIGKILL:
            kill_driver(proc)
        else:
            os.kill(proc.pid, signal.SIGINT)  # Ctrl-C: the driver saves Tune's state and exits
            proc.wait(timeout=120)
    finally:
        end_group(proc)
    assert journal_ops(storage, "end") < 24, "the sweep ended before the interrupt: nothing was tested"
    r = danlu_cli([*SEEDED, "sweep.name=b"], tmp_path / "b")
    assert r.returncode == 0, r.stdout + r.stderr
    interrupted = assert_seeds_together(seed_groups(tmp_path / "b", "b"))
    print(f"trial-steps: straight {straight}, interrupted after {ended} ended {interrupted}")
    assert interrupted <= 1.25 * straight, (interrupted, straight)
