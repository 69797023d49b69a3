"""A node dies mid-sweep: its trials go on elsewhere from their last checkpoints (ray.cluster_utils.Cluster)."""

from __future__ import annotations

import io
import threading

import pytest

from orchestrator.run.sweep import run_sweep
from tests.conftest import mlflow_runs, wait_for

pytestmark = pytest.mark.chaos
EVERY = 3  # checkpoint.every: the most work a failure may cost


def test_trials_survive_the_loss_of_a_node(conf_dir, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # this test needs its own multi-node cluster
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the head runs the driver only
    doomed = cluster.add_node(num_cpus=2, num_gpus=2)
    cluster.add_node(num_cpus=2, num_gpus=2)
    storage = tmp_path / "outputs" / "loss"
    out, result = io.StringIO(), {}

    def sweep():
        result["code"] = run_sweep(
            ["job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.num_samples=4", "epochs=20", "epoch_s=0.25",
             "checkpoint_state=true", f"checkpoint.every={EVERY}", "sweep.name=loss", f"cluster.address={cluster.address}",
             "resources.gpu=0.5", f"output_dir={tmp_path}/outputs", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"],
            conf_dir, stream=out, preflight=False)

    driver = threading.Thread(target=sweep)
    driver.start()
    try:
        wait_for(lambda: sum(1 for _ in storage.glob("t*/checkpoint_*")) >= 4, what="checkpoints")
        cluster.remove_node(doomed)  # a worker node is lost with its trials...
        cluster.add_node(num_cpus=2, num_gpus=2)  # ...and a fresh one joins
        driver.join(timeout=400)
        assert not driver.is_alive() and result.get("code") == 0, out.getvalue()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()

    client, (parent,), children = mlflow_runs(tmp_path / "mlflow.db", "loss")
    assert parent.info.status == "FINISHED" and len(children) == 4  # exactly one run per trial
    retried = [r for r in children if int(r.data.tags.get("danlu.retries", 0)) >= 1]
    assert retried, "no trial was on the lost node"
    for r in children:
        assert r.info.status == "FINISHED"
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "score"))
        assert steps == list(range(1, 21))  # every step once: nothing lost, nothing logged twice
        assert int(r.data.tags.get("danlu.steps_replayed", 0)) <= EVERY  # work lost: at most one interval
