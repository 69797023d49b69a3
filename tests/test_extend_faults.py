"""An extension (`danlu extend`) holds what a sweep holds under its faults: the kill loop and the storage-fault loop
(scripts/chaos.py, scripts/faults.py, each with --extend) for one iteration each; longer runs are in the closing notes.
A file of its own, so that these two run beside the other chaos files, not after them."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.chaos
ROOT = Path(__file__).resolve().parents[1]


def test_the_kill_loop_in_an_extension_finds_no_violation(capsys):
    """A sweep of 5 configurations ends; its extension to 10 is SIGKILLed three times at seeded moments, then the
    same extend command runs to the end: one parent, 10 trials' runs each whole, the extension's 5 tagged, no
    configuration twice."""
    spec = importlib.util.spec_from_file_location("chaos_extend", ROOT / "scripts" / "chaos.py")
    chaos = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chaos)
    chaos.EXTEND[0] = True
    problems = chaos.iteration(36, kills=3, window=20.0, keep=False)  # a restore, the start-up, trials running
    said = capsys.readouterr().out
    assert problems == [], f"replay with: scripts/chaos.py --extend --seed 36 --iterations 1 --keep\n{problems}"
    landed = re.search(r"(\d+|all) landed", said).group(1)
    assert landed == "all" or int(landed) >= 2, said  # the first two land whatever the machine's load


def test_a_storage_fault_in_an_extension_costs_nothing(capsys):
    """A sweep ends; its extension is killed at a seeded moment and its newest Tune snapshot
    (extensions/1/experiment_state-*.json) cut at a seeded byte; the same extend command then ends it, the whole
    sweep's store as the kill loop requires and no finished run deleted."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import faults

    code = faults.main(["--extend", "--iterations", "1", "--seed", "310", "--kinds", "cut-state"])
    out = capsys.readouterr().out
    assert code == 0, out
    # here the kill lands at a rung decision and the snapshot is cut; before the extension's restore limits were
    # kept beside its own experiment, its trial t006 resumed past what MLflow held, and lost step 6. Where a loaded
    # machine ends the sweep before the kill, it says so and nothing was damaged
    assert "cut to" in out or "nothing to damage" in out, out
