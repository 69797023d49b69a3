"""The morning review in a real browser: `danlu ui` prints the sweep's address, and headless Chromium (Debian's
`chromium`) shows the parent run with its trials there, on the runs page, not MLflow 3's GenAI overview."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from orchestrator.tracking import Tracker
from tests.conftest import CONF, free_port, mlflow_runs, wait_for

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def small_sweep(tmp_path: Path) -> str:
    db = f"sqlite:///{tmp_path}/mlflow.db"
    tr = Tracker(db, "danlu", flush_s=0.1)
    tr.open_sweep("morning", {"lr": 0.1}, {}, tmp_path, ["danlu", "sweep"])
    for i, lr in enumerate((0.1, 0.2)):
        tr.trial_start(f"t{i}", f"t00{i} lr={lr}", {"lr": str(lr)}, {"danlu.sweep": "morning"})
        tr.trial_metrics(f"t{i}", 1, 1000, {"score": lr})
        tr.trial_end(f"t{i}", "FINISHED", {}, None, None)
    tr.close_sweep({}, {}, "FINISHED")
    assert tr.close() and tr.errors == []
    return db


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="no chromium here (.ci/run installs it)")
def test_danlu_ui_opens_on_the_sweep_in_a_real_browser(tmp_path):
    db = small_sweep(tmp_path)
    client, (parent,), _ = mlflow_runs(tmp_path / "mlflow.db", "morning")
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    port, log = free_port(), tmp_path / "ui.log"
    ui = start_ui(tmp_path, db, port, log)
    try:
        found = re.search(r"sweep 'morning': (http://\S+)", log.read_text())
        assert found, log.read_text()
        url = found.group(1)
        assert url == f"http://127.0.0.1:{port}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
        assert CHROMIUM, "chromium is missing: .ci/run installs Debian's chromium"
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              "--virtual-time-budget=30000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=180).stdout
        assert "morning" in dom, dom[-3000:]  # the parent run's page...
        assert "t000 lr=0.1" in dom and "t001 lr=0.2" in dom, dom[-3000:]  # ...lists its nested trials
    finally:
        stop_ui(ui)


def start_ui(tmp_path, db: str, port: int, log):
    """`danlu ui` in its own session, up when MLflow's /health answers."""
    ui = subprocess.Popen([sys.executable, "-m", "orchestrator", "--config-dir", str(CONF), "ui", "--port", str(port),
                           f"tracking.uri={db}"], cwd=tmp_path, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                          start_new_session=True)

    def up() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
        except OSError:
            return ui.poll() is not None
    wait_for(up, timeout=120, what="the MLflow UI")
    return ui


def stop_ui(ui) -> None:
    import psutil

    group = [p for p in psutil.process_iter() if _pgid(p.pid) == ui.pid]
    try:
        os.killpg(ui.pid, signal.SIGTERM)  # MLflow's UI leaves its huey workers behind otherwise
    except ProcessLookupError:
        pass
    ui.wait(timeout=60)
    gone, alive = psutil.wait_procs(group, timeout=30)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=30)
    assert not [p for p in psutil.process_iter() if _pgid(p.pid) == ui.pid]


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="no chromium here (.ci/run installs it)")
def test_the_report_renders_in_the_parent_runs_artifact_view(tmp_path):
    """The report a sweep logs (report/report.html) in MLflow's own artifact viewer, in headless Chromium."""
    from tests.conftest import danlu_cli

    r = danlu_cli(["sweep", "experiment=noisy", "scheduler=fifo", "epochs=2", "epoch_s=0", "sweep.name=morning"],
                  tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    client, (parent,), _ = mlflow_runs(tmp_path / "mlflow.db", "morning")
    exp, run = parent.info.experiment_id, parent.info.run_id
    port = free_port()
    ui = start_ui(tmp_path, f"sqlite:///{tmp_path}/mlflow.db", port, tmp_path / "ui.log")
    try:
        base = f"http://127.0.0.1:{port}"
        view = f"{base}/#/experiments/{exp}/runs/{run}/artifactPath/report/report.html"
        flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--virtual-time-budget=30000", "--hide-scrollbars", "--window-size=1400,1000"]
        dom = subprocess.run([*flags, "--dump-dom", view], capture_output=True, text=True, timeout=180).stdout
        # the artifact viewer chose its HTML preview and loaded the report into it
        assert re.search(r'<iframe src="blob:[^"]+"[^>]*class="mlflow-html-iframe"', dom), dom[-3000:]
        assert "report.html" in dom
        shot = tmp_path / "report.png"
        subprocess.run([*flags, f"--screenshot={shot}", view], capture_output=True, timeout=180)
        from matplotlib.image import imread

        pixels = imread(shot)
        assert pixels.shape[:2] == (1000, 1400)
        right = pixels[150:950, 450:1000, :3]  # where the preview sits: a table and plots, not a blank pane
        assert right.std() > 0.1 and len({tuple(p) for p in (right[::7, ::7] * 255).astype(int).reshape(-1, 3)}) > 20
        served = urllib.request.urlopen(f"{base}/get-artifact?path=report/report.html&run_uuid={run}",
                                        timeout=30).read().decode()
        assert "<h2 id='leaderboard'>Leaderboard</h2>" in served and "profile=best" in served
        assert served.count("data:image/png;base64,") >= 1  # the curves (FIFO has no rungs to draw)
        # the verdict leads the report as the browser lays it out, and is the parent run's description
        page = tmp_path / "served.html"  # the parent run's artifact as MLflow serves it (as a download: saved here)
        page.write_text(served)
        laid_out = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                                  timeout=180).stdout
        assert "Verdict:" in laid_out and laid_out.index('id="verdict-block"') < laid_out.index("<h2"), laid_out[:2000]
        assert "cannot be decided with 3 seeds" in laid_out
        overview = subprocess.run([*flags, "--dump-dom", f"{base}/#/experiments/{exp}/runs/{run}"],
                                  capture_output=True, text=True, timeout=180).stdout
        assert "cannot be decided with 3 seeds" in overview, overview[-3000:]
    finally:
        stop_ui(ui)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
