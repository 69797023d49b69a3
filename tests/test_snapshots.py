"""Tune's snapshot files checked before a restore: danlu's own copy replaces a damaged set, an older session is
used where there is no copy (the damaged one set aside, never deleted), and with nothing to restore from the sweep
stops without touching a file."""

from __future__ import annotations

import json
import os

import pytest
import ray.cloudpickle as cloudpickle

from orchestrator.storage import snapshots as S


def state(trials: int) -> bytes:
    return json.dumps({"trial_data": [["{}", "{}"]] * trials, "runner_data": {}, "stats": {}}).encode()


def session(folder, name: str, trials: int) -> None:
    (folder / f"experiment_state-{name}.json").write_bytes(state(trials))
    (folder / f"basic-variant-state-{name}.json").write_bytes(cloudpickle.dumps({"n": trials}))


def sweep(tmp_path):
    storage = tmp_path / "outputs" / "s"
    storage.mkdir(parents=True)
    (storage / "tuner.pkl").write_bytes(cloudpickle.dumps({"tuner": 1}))
    session(storage, "2026-01-01_00-00-00", 3)
    session(storage, "2026-01-01_01-00-00", 5)
    return storage


def cut(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.99])
def test_a_cut_file_is_found_whatever_the_byte(tmp_path, keep):
    storage = sweep(tmp_path)
    for name in ("experiment_state-2026-01-01_01-00-00.json", "basic-variant-state-2026-01-01_01-00-00.json",
                 "tuner.pkl"):
        assert S.problem(storage / name) is None
        data = (storage / name).read_bytes()
        cut(storage / name, keep)
        assert S.problem(storage / name), name
        (storage / name).write_bytes(data)


def test_danlus_copy_replaces_a_damaged_set_whole(tmp_path):
    storage = sweep(tmp_path)
    staging = tmp_path / "staging"
    staging.mkdir()
    session(staging, "2026-01-01_01-00-00", 6)  # what Tune wrote last, in its staging folder
    keeper = S.Keeper(storage)
    assert keeper.keep(str(staging), force=True)
    assert not keeper.keep(str(staging), force=True)  # unchanged: no new generation
    session(staging, "2026-01-01_01-00-00", 7)
    assert keeper.keep(str(staging), force=True)
    gens = sorted(p.name for p in (storage / "danlu" / "tune").iterdir() if p.is_dir())
    assert gens == ["000001", "000002"] and (storage / "danlu" / "tune" / "CURRENT").read_text() == "2"
    cut(storage / "experiment_state-2026-01-01_01-00-00.json")
    repaired = S.repair(storage)
    assert repaired.restored and not repaired.rebuild_tuner
    assert "danlu's copy" in repaired.notes[0] and "not valid JSON" in repaired.notes[0]
    restored = json.loads((storage / "experiment_state-2026-01-01_01-00-00.json").read_bytes())
    assert len(restored["trial_data"]) == 7
    assert all(S.problem(p) is None for p in S.tune_files(storage))
    aside = next((storage / "danlu" / "set-aside").iterdir())
    assert {p.name for p in aside.iterdir()} >= {"experiment_state-2026-01-01_01-00-00.json"}  # kept, not deleted
    assert S.repair(storage).notes == []  # all loads now: left as it is


def test_without_a_copy_the_newest_session_that_loads_is_used(tmp_path):
    storage = sweep(tmp_path)
    cut(storage / "basic-variant-state-2026-01-01_01-00-00.json", 0.0)  # the searcher of the newest session
    repaired = S.repair(storage)
    assert "experiment_state-2026-01-01_00-00-00.json" in repaired.notes[0] and "no copy" in repaired.notes[0]
    names = {p.name for p in S.tune_files(storage)}
    assert names == {"tuner.pkl", "experiment_state-2026-01-01_00-00-00.json",
                     "basic-variant-state-2026-01-01_00-00-00.json"}
    aside = next((storage / "danlu" / "set-aside").iterdir())
    assert {p.name for p in aside.iterdir()} == {"experiment_state-2026-01-01_01-00-00.json",
                                                 "basic-variant-state-2026-01-01_01-00-00.json"}


def test_a_damaged_tuner_pkl_alone_is_written_anew(tmp_path):
    storage = sweep(tmp_path)
    (storage / "tuner.pkl").write_bytes(b"")
    repaired = S.repair(storage)
    assert repaired.rebuild_tuner and not (storage / "tuner.pkl").exists()
    assert "empty" in repaired.notes[0]


def test_with_nothing_to_restore_from_the_sweep_stops_and_nothing_is_touched(tmp_path):
    storage = sweep(tmp_path)
    for p in storage.glob("experiment_state-*.json"):
        cut(p)
    before = {p.name: p.read_bytes() for p in S.tune_files(storage)}
    with pytest.raises(S.Unrestorable) as caught:
        S.repair(storage)
    text = str(caught.value)
    assert "experiment_state-2026-01-01_01-00-00.json" in text and "not valid JSON" in text
    assert "move Tune's files" in text and "run the same command again" in text
    assert {p.name: p.read_bytes() for p in S.tune_files(storage)} == before


def test_a_sweep_killed_before_tunes_first_snapshot_starts_over_or_uses_danlus_copy(tmp_path):
    storage = tmp_path / "outputs" / "s"
    storage.mkdir(parents=True)
    (storage / "tuner.pkl").write_bytes(cloudpickle.dumps({"tuner": 1}))
    assert S.repair(storage).notes == []  # nothing to restore: the trials start over, as before
    staging = tmp_path / "staging"
    staging.mkdir()
    session(staging, "2026-01-01_01-00-00", 2)
    S.Keeper(storage).keep(str(staging), force=True)  # copied before Tune's sync reached the storage
    repaired = S.repair(storage)
    assert "had not saved a snapshot" in repaired.notes[0]
    assert (storage / "experiment_state-2026-01-01_01-00-00.json").exists()
    assert os.path.exists(storage / "tuner.pkl")
