"""`danlu list` without a cluster: the sweeps stored on this machine, read from their own files (no Ray, no
MLflow); `danlu resume` of an unknown name lists the names there."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from orchestrator.storage.catalog import show, sweeps
from orchestrator.storage.lock import SweepLock
from tests.conftest import danlu_cli


def stored(root: Path, name: str, progress: dict | None = None, finished: bool = False) -> Path:
    state = root / name / "danlu"
    state.mkdir(parents=True)
    (state / "sweep.json").write_text(json.dumps({"overrides": [f"sweep.name={name}"], "sweep_id": name,
                                                  "search_seed": 1, "started": "2026-11-30T22:10:00"}))
    if progress:
        (state / "progress.json").write_text(json.dumps(progress))
    if finished:
        (state / "finished.json").write_text(json.dumps({"at": "2026-11-30 23:00:00", "lines": ["danlu: done"]}))
    return state


def test_running_finished_and_interrupted_sweeps_are_told_apart(tmp_path):
    root = tmp_path / "outputs"
    stored(root, "done", {"done": 8, "total": 8, "best": "score=0.97 (t004)"}, finished=True)
    stored(root, "died", {"done": 3, "total": 8, "best": "score=0.91 (t001)"})
    live = stored(root, "live", {"done": 1, "total": 4, "best": None})
    (root / "not-a-sweep").mkdir()
    with SweepLock(live, say=lambda line: None):  # a driver holds it: running
        entries = {e.name: e for e in sweeps(root)}
        out = io.StringIO()
        assert show(root, out) == 0
    assert set(entries) == {"done", "died", "live"}
    assert entries["done"].state == "finished" and (entries["done"].done, entries["done"].total) == (8, 8)
    assert entries["died"].state == "interrupted" and entries["live"].state == "running"
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].split() == ["SWEEP", "STATE", "TRIALS", "BEST", "SO", "FAR", "STARTED"]
    died = next(ln for ln in lines if ln.startswith("died "))
    assert "interrupted" in died and "3/8" in died and "score=0.91 (t001)" in died and "2026-11-30 22:10" in died
    assert f"danlu: died was interrupted; continue it with: danlu resume died output_dir={root}" in text
    assert "running (" in next(ln for ln in lines if ln.startswith("live "))
    assert {e.name: e.state for e in sweeps(root)}["live"] == "interrupted"  # its driver let go


def test_a_damaged_progress_file_shows_unknown_counts(tmp_path):
    root = tmp_path / "outputs"
    state = stored(root, "cut")
    (state / "progress.json").write_text('{"done": 3, "tot')  # cut mid-write by a full disk or a kill
    (e,) = sweeps(root)
    assert (e.state, e.done, e.total) == ("interrupted", None, None)
    out = io.StringIO()
    show(root, out)
    assert "?/?" in out.getvalue()


@pytest.mark.integration
def test_list_and_resume_of_an_unknown_name_from_the_command_line(tmp_path):
    r = danlu_cli(["list"], tmp_path, timeout=120)
    assert r.returncode == 0 and "no sweeps under outputs/" in r.stdout, r.stdout + r.stderr
    stored(tmp_path / "outputs", "alpha", {"done": 2, "total": 4, "best": None})
    stored(tmp_path / "outputs", "beta", {"done": 4, "total": 4, "best": None}, finished=True)
    r = danlu_cli(["list"], tmp_path, timeout=120)
    assert r.returncode == 0 and "alpha" in r.stdout and "beta" in r.stdout, r.stdout + r.stderr
    assert "danlu resume alpha" in r.stdout and "danlu resume beta" not in r.stdout
    r = danlu_cli(["resume", "nosuchsweep"], tmp_path, timeout=120)
    assert r.returncode == 2 and "the sweeps there: alpha, beta." in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
