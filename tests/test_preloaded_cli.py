"""The tests' preloaded danlu commands (tests/preloaded_cli.py) are the command a user runs: the same output, exit
status and files as `python -m orchestrator` in a process of its own, for a good command, bad input and a crash."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import CONF
from tests.preloaded_cli import Preloaded

pytestmark = pytest.mark.integration


def _both(args: list[str], cwd, env=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    preloaded = Preloaded()
    try:
        forked = preloaded.run(["--config-dir", str(CONF), *args], cwd, env, 120)
    finally:
        preloaded.stop()
    alone = subprocess.run([sys.executable, "-m", "orchestrator", "--config-dir", str(CONF), *args], cwd=cwd,
                           capture_output=True, text=True, timeout=120, env=env)
    return forked, alone


@pytest.mark.parametrize("args", [
    ["sweep", "lrr=0.1"],                 # bad input: one line on stderr, exit 2
    ["run", "--cfg", "job=sleep"],        # a good command: its output on stdout, exit 0
    ["report", "nosuchsweep"],            # a sweep that is not there
    ["extend", "nosuchsweep", "sweep.num_samples=2"],
])
def test_a_preloaded_command_says_and_exits_as_the_command_alone(tmp_path, args):
    forked, alone = _both(args, tmp_path)
    assert forked is not None
    assert (forked.returncode, forked.stdout, forked.stderr) == (alone.returncode, alone.stdout, alone.stderr)


def test_it_runs_in_the_callers_directory_and_only_in_the_environment_it_started_with(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    preloaded = Preloaded()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        done = preloaded.run(["init", "--job", "mine"], tmp_path / "a", env, 120)
        assert done is not None and done.returncode == 0, done.stderr
        assert preloaded.run(["--help"], tmp_path, {**env, "DANLU_OTHER": "1"}, 60) is None  # run alone instead
    finally:
        preloaded.stop()
    alone = subprocess.run([sys.executable, "-m", "orchestrator", "init", "--job", "mine"], cwd=tmp_path / "b",
                           capture_output=True, text=True, timeout=120, env=env)
    assert alone.returncode == 0, alone.stderr
    made = sorted(str(f.relative_to(tmp_path / "a")) for f in (tmp_path / "a").rglob("*"))
    assert made and made == sorted(str(f.relative_to(tmp_path / "b")) for f in (tmp_path / "b").rglob("*"))
    assert done.stdout.replace(str(tmp_path / "a"), "DIR") == alone.stdout.replace(str(tmp_path / "b"), "DIR")
