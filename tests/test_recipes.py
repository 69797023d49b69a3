"""The cluster recipes in scripts/: the KubeRay RayJob's sweep is a valid one. (The Slurm batch script runs on a
real Slurm in tests/test_slurm.py.)"""

from __future__ import annotations

import shlex

from tests.conftest import CONF, ROOT


def test_the_kuberay_rayjob_runs_a_valid_sweep():
    import yaml

    from orchestrator.launch.plan import plan

    job = yaml.safe_load((ROOT / "scripts" / "kuberay" / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["spec"]["rayClusterSpec"]["authOptions"]["mode"] == "token"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "orchestrator"] and argv[argv.index("--config-dir") + 1] == "/app/conf"
    overrides = argv[argv.index("sweep") + 1:]
    p = plan(overrides, CONF)  # every check danlu makes before launching
    assert p.cfg.cluster.address == "auto" and p.tracking_uri.startswith("http://")
    assert p.cfg.resources.gpu == 0.25 and str(p.storage_dir) == "/shared/danlu/digits-lr-night"
