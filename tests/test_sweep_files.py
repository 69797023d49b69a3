"""A sweep's identity in its storage (orchestrator/storage/sweep_files.py): what a later command with the same name
must match, and what it may change. Its settings are compared as composed (a plan, no Ray), so that the order of
overrides does not matter and an edited conf file is seen."""

from __future__ import annotations

import json
import shutil

import pytest

from orchestrator.errors import BadInput
from orchestrator.launch.plan import plan
from orchestrator.storage.sweep_files import SAVED, identify, state_dir

FIRST = ["job=sleep", "sweep=sleep", "sweep.num_samples=6", "epochs=4", "cluster.num_cpus=2", "sweep.name=s"]


def ident(overrides, conf_dir, tmp_path):
    p = plan(overrides, conf_dir, cwd=str(tmp_path))
    return identify(p, overrides, "danlu resume s")


def test_where_a_sweep_runs_its_budget_and_its_storage_guard_are_not_its_identity(conf_dir, tmp_path):
    first = ident(FIRST, conf_dir, tmp_path)
    for other in (["cluster.address=10.0.0.5:6379"], ["cluster=remote", "cluster.address=auto"], ["cluster.num_cpus=8"],
                  ["sweep.budget.cpu_hours=2"], ["storage.min_free_mb=0"], ["progress.every_s=1"]):
        again = [*FIRST[:4], *other, "sweep.name=s"]
        assert ident(again, conf_dir, tmp_path) == first, other


def test_the_same_overrides_in_another_order_are_the_same_sweep(conf_dir, tmp_path):
    first = ident(FIRST, conf_dir, tmp_path)
    assert ident(list(reversed(FIRST)), conf_dir, tmp_path) == first
    # the same settings said another way: sleep.yaml's own num_samples is 8
    assert ident(["job=sleep", "sweep=sleep", "epochs=4", "sweep.num_samples=6", "sweep.name=s"], conf_dir,
                 tmp_path) == first


@pytest.mark.parametrize("other, key", [(["sweep.num_samples=7"], "sweep.num_samples: 6 -> 7"),
                                        (["sweep.num_samples=6", "epoch_s=0.2"], "epoch_s: 0.1 -> 0.2"),
                                        (["sweep.num_samples=6", "scheduler=fifo"], "scheduler.name: asha -> fifo"),
                                        (["sweep.num_samples=6", "x=interval(0.5,1.0)"],
                                         "sweep.space.x: interval(0.0, 1.0) -> interval(0.5,1.0)")])
def test_other_settings_are_refused_naming_each_key_with_its_old_and_new_value(conf_dir, tmp_path, other, key):
    ident(FIRST, conf_dir, tmp_path)
    again = ["job=sleep", "sweep=sleep", "epochs=4", *other, "sweep.name=s"]
    with pytest.raises(BadInput, match="holds a sweep started with other settings") as info:
        ident(again, conf_dir, tmp_path)
    assert key in str(info.value) and "`danlu resume s`" in str(info.value), str(info.value)


def test_an_edited_conf_file_is_refused_not_ignored(conf_dir, tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(conf_dir, conf)
    args = ["job=sleep", "sweep=sleep", "sweep.name=s"]
    ident(args, conf, tmp_path)
    sweep_yaml = conf / "sweep" / "sleep.yaml"
    sweep_yaml.write_text(sweep_yaml.read_text().replace("num_samples: 8", "num_samples: 12")
                          .replace("x: interval(0.0, 1.0)", "x: interval(0.5, 1.0)"))
    with pytest.raises(BadInput) as info:
        ident(args, conf, tmp_path)
    said = str(info.value)
    assert "sweep.num_samples: 8 -> 12" in said and "sweep.space.x: interval(0.0, 1.0) -> interval(0.5, 1.0)" in said
    assert json.loads((state_dir(tmp_path / "outputs" / "s") / SAVED).read_text())["settings"]["sweep.num_samples"] \
        == "8"  # the refusal changed nothing


def test_a_sweep_stored_before_its_settings_were_saved_compares_its_overrides_in_any_order(conf_dir, tmp_path):
    ident(FIRST, conf_dir, tmp_path)
    path = state_dir(tmp_path / "outputs" / "s") / SAVED
    saved = json.loads(path.read_text())
    del saved["settings"]
    path.write_text(json.dumps(saved))
    assert ident(list(reversed(FIRST)), conf_dir, tmp_path)["sweep_id"] == saved["sweep_id"]
    with pytest.raises(BadInput, match="overrides: .*sweep.num_samples=6.* -> .*sweep.num_samples=7"):
        ident([*FIRST[:2], "sweep.num_samples=7", *FIRST[3:]], conf_dir, tmp_path)
