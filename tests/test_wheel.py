"""What a user installs: a wheel of this checkout in a fresh virtual environment, used from an empty folder, running
the README's "Your own project" and docs/quickstart.md's "Your Hydra app" line for line (their shell blocks; the
Python and YAML blocks are the app's files, each named by its first line).

The fresh venv gets the wheel by `pip install "$DANLU"`, as the README says. Its dependencies (Ray, torch, MLflow:
gigabytes) are those of this test's own environment, seen through a .pth file: pip then finds them installed and
installs the wheel alone. danlu itself comes from the wheel (checked), so its package data, the hydra_plugins
mapping and the `danlu` command are the wheel's. Two deviations from the text, both said here: `danlu ui` runs
on a free port (the README's default, 5000, may be taken) and is stopped once it answers.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, stop_group, wait_for
from tests.docs_text import blocks, commands, section

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A fresh venv with the wheel's path as $DANLU; its bin/ first on PATH."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                        str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (wheel,) = dist.glob("danlu-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "danlu-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "DANLU": str(wheel),
           "PYTHONUNBUFFERED": "1", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    return env, venv, Path(site)


def sh(cmd: str, cwd: Path, env: dict, timeout=900) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"$ {cmd}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def ui(cmd: str, cwd: Path, env: dict) -> str:
    """`danlu ui ...` on a free port: started, waited for until MLflow's UI answers, stopped by its process group."""
    port = free_port()
    log = cwd / "ui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", "-c", f"exec {cmd} --port {port}"], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def answers():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status == 200
        except OSError:
            return proc.poll() is not None

    try:
        wait_for(answers, timeout=180, what="danlu ui")
        assert proc.poll() is None, log.read_text()
        wait_for(lambda: "runs:" in log.read_text() or proc.poll() is not None, timeout=60, what="the sweep's pages")
    finally:
        stop_group(proc)
    return log.read_text()


def test_the_wheel_runs_your_own_project_from_an_empty_folder(fresh, tmp_path):
    env, venv, site = fresh
    block, = blocks(section("### A danlu project"), "bash")
    lines = commands(block)
    assert lines[0] == 'pip install "$DANLU"' and lines[1] == "danlu init" and any(c.startswith("danlu ui") for c in lines)
    said = {}
    for cmd in lines:
        said[cmd] = ui(cmd, tmp_path, env) if cmd.startswith("danlu ui") else sh(cmd, tmp_path, env).stdout
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import orchestrator, hydra_plugins.danlu_sweeper as h;"
                            "print(orchestrator.__file__); print(h.__file__)"], capture_output=True, text=True,
                           env=env, cwd=tmp_path, check=True).stdout.split()
    assert all(p.startswith(str(site)) for p in where), where  # danlu from the wheel, not this checkout
    assert {p.name for p in (tmp_path / "conf").iterdir()} == {"config.yaml", "job", "sweep"}
    sweep = next(out for cmd, out in said.items() if cmd.startswith("danlu sweep"))
    assert re.search(r"danlu: 24 trials: \d+ completed, \d+ stopped early, 0 failed", sweep), sweep[-3000:]
    report = next(out for cmd, out in said.items() if cmd.startswith("danlu report"))
    assert "danlu: report for first: loss (min)" in report
    page = next(out for cmd, out in said.items() if cmd.startswith("danlu ui"))
    assert "danlu: sweep 'first'" in page and "runs:" in page and "report:" in page


def test_the_wheel_sweeps_the_readmes_hydra_app(fresh, tmp_path):
    env, _, _ = fresh
    text = section("## Your Hydra app: `hydra/sweeper=danlu`", "docs/quickstart.md")
    files = blocks(text, "python") + blocks(text, "yaml")
    for body in files:
        first = body.splitlines()[0]
        assert first.startswith("# "), first
        path = tmp_path / first[2:].strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    assert (tmp_path / "train.py").is_file() and (tmp_path / "conf" / "model" / "large.yaml").is_file()
    block, = blocks(text, "bash")
    outs = [sh(cmd, tmp_path, env).stdout for cmd in commands(block)]
    m = re.search(r"danlu: (\d+) trials: (\d+) completed, (\d+) stopped early, 0 failed", outs[0])
    assert m, outs[0][-3000:]
    assert int(m.group(3)) >= 1  # it reports per epoch: ASHA stopped some early
    assert "danlu: report for night: val_acc (max)" in outs[1]
    assert any((tmp_path / "multirun").rglob(".hydra/overrides.yaml"))
    assert shlex.split(commands(block)[0])[:3] == ["python", "train.py", "-m"]
