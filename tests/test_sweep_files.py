"""A sweep's identity in its storage (orchestrator/storage/sweep_files.py): what a later command with the same name
must match, and what it may change."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from orchestrator.errors import BadInput
from orchestrator.storage.sweep_files import identify

FIRST = ["job=sleep", "sweep.num_samples=6", "cluster.num_cpus=2", "sweep.name=s"]


def plan(tmp_path):
    return SimpleNamespace(storage_dir=tmp_path / "s", cfg=OmegaConf.create({"sweep": {"name": "s", "search_seed": 3}}))


def test_where_a_sweep_runs_its_budget_and_its_storage_guard_are_not_its_identity(tmp_path):
    first = identify(plan(tmp_path), FIRST, "danlu resume s")
    for other in (["cluster.address=10.0.0.5:6379"], ["cluster=remote", "cluster.address=auto"], ["cluster.num_cpus=8"],
                  ["sweep.budget.cpu_hours=2"], ["storage.min_free_mb=0"], ["output_dir=elsewhere"]):
        again = [*FIRST[:2], *other, "sweep.name=s"]
        assert identify(plan(tmp_path), again, "danlu resume s") == first, other


@pytest.mark.parametrize("other", [["sweep.num_samples=7"], ["job=noisy", "sweep.num_samples=6"]])
def test_other_settings_are_refused_naming_the_command_that_resumes_it(tmp_path, other):
    identify(plan(tmp_path), FIRST, "danlu resume s")
    with pytest.raises(BadInput, match="holds a sweep started with other settings .* Resume it with `danlu resume s`"):
        identify(plan(tmp_path), [*other, "sweep.name=s"], "danlu resume s")
