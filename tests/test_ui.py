"""The morning review in a real browser: `danlu ui` prints the sweep's address, and headless Chromium (Debian's
`chromium`) opens each: the trials' table, the parent run, the report, in MLflow's model-training view. A taken
port is bad input, and `danlu ui` leaves no process behind."""

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

from tests.conftest import CONF, free_port, mlflow_runs, wait_for

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=30000",
         "--hide-scrollbars", "--window-size=1400,1000"]


def browse(url: str, tmp_path: Path, *args: str) -> str:
    """The page as headless Chromium lays it out, from a fresh profile (a new user's browser: no saved UI state)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, url], capture_output=True,
                          text=True, timeout=240).stdout


def text_of(dom: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def in_training_view(text: str) -> bool:
    """MLflow's model-training view: its side bar offers the model registry, not GenAI's observability pages."""
    return "Model registry" in text and "Observability" not in text and "Evaluation runs" not in text


def review_links(output: str) -> dict[str, str]:
    return dict(re.findall(r"^  (runs|sweep|report): +(http://\S+)", output, re.M))


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="no chromium here (.ci/run installs it)")
def test_every_printed_link_opens_the_sweep_in_a_fresh_browser(tmp_path):
    """The sweep's last lines and `danlu ui` print the same three addresses; from a fresh Chromium profile the runs
    table lists the trials with their metric, the parent run's description holds the verdict, the report renders,
    each in MLflow's model-training view (not the GenAI overview a fresh browser gets by default)."""
    from tests.conftest import danlu_cli

    r = danlu_cli(["sweep", "experiment=noisy", "scheduler=fifo", "epochs=2", "epoch_s=0", "sweep.name=morning"],
                  tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    printed = review_links(r.stdout)
    assert set(printed) == {"runs", "sweep", "report"}, r.stdout[-3000:]
    client, (parent,), children = mlflow_runs(tmp_path / "mlflow.db", "morning")
    assert len(children) == 12
    exp, run = parent.info.experiment_id, parent.info.run_id
    assert client.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"
    port, log = free_port(), tmp_path / "ui.log"
    ui = start_ui(tmp_path, f"sqlite:///{tmp_path}/mlflow.db", port, log)
    try:
        wait_for(lambda: "  report:" in log.read_text() or ui.poll() is not None, what="danlu ui's addresses")
        links = review_links(log.read_text())
        base = f"http://127.0.0.1:{port}"
        assert links == {k: v.replace("http://127.0.0.1:5000", base) for k, v in printed.items()}, log.read_text()
        assert all(v.endswith("workflowType=machine_learning") for v in links.values())
        assert CHROMIUM, "chromium is missing: .ci/run installs Debian's chromium"

        table = text_of(browse(links["runs"], tmp_path, "--dump-dom"))
        assert in_training_view(table), table[-3000:]
        for child in children:  # every trial, with its metric's value in a column of its own
            assert child.data.tags["mlflow.runName"] in table, table[-3000:]
            assert str(child.data.metrics["score"])[:7] in table, (child.data.metrics, table[-3000:])
        assert "Run Name" in table and " score " in table and "12 matching runs" in table, table[-3000:]
        for config in {c.data.tags["danlu.config_id"] for c in children}:  # grouped by configuration
            assert f"Group: {config} 3" in table, table[-3000:]
        assert "morning " not in table.split("Run Name", 1)[1].split("matching runs")[0]  # the parent is not a row

        page = text_of(browse(links["sweep"], tmp_path, "--dump-dom"))
        assert in_training_view(page), page[-3000:]
        assert "Description" in page and "cannot be decided with 3 seeds" in page, page[-3000:]  # the verdict
        assert "12 trials: 12 completed" in page  # the counts, in the morning summary
        assert "danlu sweep --no-preflight experiment=noisy" in page  # its source: the command
        names = [c.data.tags["mlflow.runName"] for c in children]
        assert "Child runs" in page and sum(n in page for n in names) >= 10, page[-3000:]  # ten, then "Load more"

        view = links["report"]
        dom = browse(view, tmp_path, "--dump-dom")
        assert in_training_view(text_of(dom)), dom[-3000:]
        # the artifact viewer chose its HTML preview and loaded the report into it
        assert re.search(r'<iframe src="blob:[^"]+"[^>]*class="mlflow-html-iframe"', dom), dom[-3000:]
        from matplotlib.image import imread

        def preview_drawn() -> bool:
            """A screenshot in which the preview pane holds a table and plots, not a blank pane. Chromium's virtual
            time does not wait on a slow server: on a loaded machine a shot can come before the report arrives."""
            shot = tmp_path / f"report-{len(list(tmp_path.glob('report-*.png')))}.png"
            browse(view, tmp_path, f"--screenshot={shot}")
            pixels = imread(shot)
            assert pixels.shape[:2] == (1000, 1400)
            right = pixels[150:950, 450:1000, :3]  # where the preview sits
            return bool(right.std() > 0.1
                        and len({tuple(p) for p in (right[::7, ::7] * 255).astype(int).reshape(-1, 3)}) > 20)

        wait_for(preview_drawn, timeout=300, what="a screenshot with the report drawn in MLflow's preview")
        served = urllib.request.urlopen(f"{base}/get-artifact?path=report/report.html&run_uuid={run}",
                                        timeout=30).read().decode()
        assert "<h2 id='leaderboard'>Leaderboard</h2>" in served and "profile=best" in served
        # the verdict leads the report as the browser lays it out
        saved = tmp_path / "served.html"  # the parent run's artifact as MLflow serves it (as a download: saved here)
        saved.write_text(served)
        laid_out = browse(saved.as_uri(), tmp_path, "--dump-dom")
        assert "Verdict:" in laid_out and laid_out.index('id="verdict-block"') < laid_out.index("<h2"), laid_out[:2000]
        assert "cannot be decided with 3 seeds" in laid_out
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
    """SIGTERM to `danlu ui` alone, as Ctrl-C or a job's end sends it: MLflow's server, its workers and its task
    consumers (a process group of their own) must all end with it."""
    import psutil

    spawned = psutil.Process(ui.pid).children(recursive=True)
    assert any("mlflow" in " ".join(p.cmdline()) for p in spawned)
    # MLflow's GenAI job execution is off (orchestrator/tracking/ui.py server_env): no job runner, no Huey consumer
    assert not any("mlflow.server.jobs" in " ".join(p.cmdline()) for p in spawned), [p.cmdline() for p in spawned]
    ui.send_signal(signal.SIGTERM)
    try:
        assert ui.wait(timeout=120) == 0
        _, alive = psutil.wait_procs(spawned, timeout=60)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        for p in [psutil.Process(ui.pid), *spawned] if ui.poll() is None else spawned:
            try:
                p.kill()  # a failed test leaves nothing running either
            except psutil.NoSuchProcess:
                pass


def test_a_taken_port_is_bad_input_and_starts_nothing(tmp_path):
    """Another server on the port: exit 2 at once, naming the port and --port; no MLflow server is started, and no
    address is printed (it would open the other server)."""
    import socket

    from tests.conftest import danlu_cli

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        r = danlu_cli(["ui", "--port", str(port), f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"], tmp_path,
                      timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"--port {port}" in r.stderr and "taken" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "starting MLflow" not in r.stdout and "http://" not in r.stdout, r.stdout
