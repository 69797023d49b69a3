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
    port = free_port()
    log = tmp_path / "ui.log"
    ui = subprocess.Popen([sys.executable, "-m", "orchestrator", "--config-dir", str(CONF), "ui", "--port", str(port),
                           f"tracking.uri={db}"], cwd=tmp_path, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                          start_new_session=True)
    try:
        def up() -> bool:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
            except OSError:
                return ui.poll() is not None
        wait_for(up, timeout=120, what="the MLflow UI")
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


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
