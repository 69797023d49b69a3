"""danlu's record in each checkpoint: a damaged or cut checkpoint is never used, the newest whole one is found by
its recorded iteration, and a restored trial never resumes past the step its sweep's journal holds."""

from __future__ import annotations

import json

import pyarrow.fs
import pytest

from orchestrator.storage import checkpoints


def ckpt(trial_dir, name, iteration, step=None, body=b"x" * 10):
    d = trial_dir / name
    d.mkdir(parents=True)
    (d / "state.pkl").write_bytes(body)
    checkpoints.write_marker(str(d), iteration, iteration if step is None else step)
    return d


@pytest.fixture
def fs():
    return pyarrow.fs.LocalFileSystem()


def test_the_newest_whole_checkpoint_is_found_by_its_recorded_iteration(tmp_path, fs):
    """Directory names can mislead after a restore (new checkpoints reuse old names): the iteration recorded
    in danlu's marker decides, and a checkpoint cut short or damaged is passed over."""
    ckpt(tmp_path, "checkpoint_000003", 9)   # a restored trial's checkpoint, under an old name
    ckpt(tmp_path, "checkpoint_000004", 6)   # from before the kill
    cut = ckpt(tmp_path, "checkpoint_000005", 12)
    (cut / "state.pkl").write_bytes(b"x" * 4)  # cut short by the kill
    flipped = ckpt(tmp_path, "checkpoint_000007", 13)
    (flipped / "state.pkl").write_bytes(b"y" * 10)  # whole size, other bytes
    (tmp_path / "checkpoint_000006").mkdir()  # no marker: not danlu's
    assert checkpoints.newest(fs, str(tmp_path)) == (str(tmp_path / "checkpoint_000003"), 9)
    assert checkpoints.newest(fs, str(tmp_path), max_step=8) == (str(tmp_path / "checkpoint_000004"), 6)
    assert checkpoints.newest(fs, str(tmp_path), max_step=5) is None
    assert checkpoints.newest(fs, str(tmp_path / "nothing")) is None
    assert checkpoints.inspect(fs, str(cut))[1] == "state.pkl has 4 of its 10 bytes"
    assert checkpoints.inspect(fs, str(flipped))[1] == "state.pkl does not match its checksum"
    (cut / checkpoints.MARKER).write_text('{"iteration": 1')  # the record itself cut short
    assert "damaged" in checkpoints.inspect(fs, str(cut))[1]


def test_a_restored_trial_resumes_only_from_what_the_journal_holds(tmp_path, fs):
    """Tune's snapshot names checkpoint_000004 (step 5), but the journal holds this trial up to step 4 only: its
    step-5 result never reached the driver. The restore uses the step-4 checkpoint, so step 5 is reported again."""
    trial = tmp_path / "exp" / "t000_a"
    ckpt(trial, "checkpoint_000003", 4)
    ckpt(trial, "checkpoint_000004", 5)
    (tmp_path / "exp" / "danlu").mkdir()
    checkpoints.write_limits(tmp_path / "exp" / "danlu", {"a": 4, "b": 0})
    path, iteration, why = checkpoints.choose(fs, str(trial / "checkpoint_000004"), "a")
    assert (path, iteration) == (str(trial / "checkpoint_000003"), 4)
    assert "never reached the journal, which holds up to step 4" in why
    # within the journal: used as Tune named it
    assert checkpoints.choose(fs, str(trial / "checkpoint_000003"), "a") == (str(trial / "checkpoint_000003"), -1, None)
    # a trial the journal holds no step of starts over
    path, iteration, why = checkpoints.choose(fs, str(trial / "checkpoint_000004"), "b")
    assert path is None and iteration == 0 and why.startswith("its start")
    # a named checkpoint that was deleted falls back to the newest whole one
    path, _, why = checkpoints.choose(fs, str(trial / "checkpoint_000009"), "c")
    assert path == str(trial / "checkpoint_000004") and "was deleted" in why
    json.loads((tmp_path / "exp" / "danlu" / checkpoints.LIMITS).read_text())  # written whole


@pytest.mark.integration
def test_checkpoint_folders_of_trial_processes_that_are_gone_are_removed_and_no_others(tmp_path):
    """A trial killed while it saved a checkpoint leaves its temp folder behind (its cleanup never ran); the next
    trial process to checkpoint on that node removes those of processes that no longer exist."""
    import os
    import subprocess
    import sys
    import time

    from orchestrator.trial.trainable import CKPT_PREFIX, clear_stale_checkpoints

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead = tmp_path / f"{CKPT_PREFIX}{gone.stdout.strip()}-abc"
    live = tmp_path / f"{CKPT_PREFIX}{os.getpid()}-def"
    older = tmp_path / f"{CKPT_PREFIX}xyz"  # an earlier danlu's name: no pid to judge it by
    fresh = tmp_path / f"{CKPT_PREFIX}{gone.stdout.strip()}-ghi"  # its process looks gone, but it is being written
    for folder in (dead, live, older, fresh):
        (folder / "state").mkdir(parents=True)
        (folder / "state" / "state.pkl").write_bytes(b"x" * 100)
    an_hour_ago = time.time() - 3600
    for folder in (dead, live, older):
        for path in (folder / "state" / "state.pkl", folder / "state", folder):
            os.utime(path, (an_hour_ago, an_hour_ago))
    assert clear_stale_checkpoints(str(tmp_path)) == [str(dead)]
    assert not dead.exists() and live.exists() and older.exists() and fresh.exists()
