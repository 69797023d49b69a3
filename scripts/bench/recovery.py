#!/usr/bin/env python
"""What a failure costs a sweep, measured (one run each):

    .venv/bin/python scripts/bench/recovery.py

1. Node loss: a ray.cluster_utils.Cluster (a head that runs only the driver, two worker nodes with
   logical GPUs) runs 4 trials of jobs/sleep.py (40 reports, 0.25 s each, a checkpoint every 4
   reports). Once checkpoints exist a worker node is removed and a fresh one added. The work lost by
   each retried trial is the steps it had to report again (MLflow tag danlu.steps_replayed), in
   steps and seconds, against the checkpoint interval.
2. Driver restart: `danlu sweep` is SIGKILLed mid-sweep, then the same command is run again; the time
   from that start to the first new result (a new line of metrics in the sweep's MLflow journal).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
EPOCHS, EPOCH_S, EVERY = 40, 0.25, 4


def checkpoints(storage: Path) -> int:
    return sum(1 for _ in storage.glob("t*/checkpoint_*"))


def node_loss(tmp: Path) -> None:
    import ray
    from mlflow.tracking import MlflowClient
    from ray.cluster_utils import Cluster

    from orchestrator.config.compose import find_config_dir
    from orchestrator.run.sweep import run_sweep

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    doomed = cluster.add_node(num_cpus=2, num_gpus=2)
    cluster.add_node(num_cpus=2, num_gpus=2)
    storage, result = tmp / "outputs" / "loss", {}
    overrides = ["job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.num_samples=4", f"epochs={EPOCHS}",
                 f"epoch_s={EPOCH_S}", "checkpoint_state=true", f"checkpoint.every={EVERY}", "sweep.name=loss",
                 f"cluster.address={cluster.address}", "resources.gpu=0.5", f"output_dir={tmp}/outputs",
                 f"tracking.uri=sqlite:///{tmp}/mlflow.db"]
    driver = threading.Thread(target=lambda: result.update(
        code=run_sweep(overrides, find_config_dir(str(ROOT / "conf")), stream=io.StringIO())))
    driver.start()
    try:
        while checkpoints(storage) < 6:
            time.sleep(0.2)
        time.sleep(EVERY * EPOCH_S / 2)  # fail in the middle of a checkpoint interval
        cluster.remove_node(doomed)
        cluster.add_node(num_cpus=2, num_gpus=2)
        driver.join()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    assert result.get("code") == 0, result
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("danlu")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("danlu.sweep") == "loss"
            and "mlflow.parentRunId" in r.data.tags]
    hit = [r for r in runs if int(r.data.tags.get("danlu.retries", 0)) >= 1]
    lost = [int(r.data.tags.get("danlu.steps_replayed", 0)) for r in hit]
    print(f"node loss: checkpoint interval {EVERY} steps ({EVERY * EPOCH_S:g} s); {len(hit)} of {len(runs)} trials "
          f"were on the lost node; work lost per affected trial: {lost} steps, max {max(lost, default=0)} "
          f"({max(lost, default=0) * EPOCH_S:g} s); every trial finished with all {EPOCHS} steps once: "
          f"{all(len(client.get_metric_history(r.info.run_id, 'score')) == EPOCHS for r in runs)}")


def metric_lines(journal: Path) -> int:
    if not journal.exists():
        return 0
    return sum(1 for line in journal.read_text().splitlines() if line.startswith('{"op": "metrics"'))


def driver_restart(tmp: Path) -> None:
    cmd = [sys.executable, "-m", "orchestrator", "--config-dir", str(ROOT / "conf"), "sweep", "job=sleep",
           "sweep=sleep", "scheduler=fifo", "sweep.num_samples=4", f"epochs={EPOCHS}", f"epoch_s={EPOCH_S}",
           "checkpoint_state=true", "sweep.name=restart", "cluster.num_cpus=2"]
    storage = tmp / "outputs" / "restart"
    journal = storage / "danlu" / "mlflow_journal.jsonl"
    first = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        while checkpoints(storage) < 6:
            time.sleep(0.2)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        first.wait()
    before = metric_lines(journal)
    t0 = time.perf_counter()
    second = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    first_result = None
    while second.poll() is None:
        if first_result is None and metric_lines(journal) > before:
            first_result = time.perf_counter() - t0
        time.sleep(0.05)
    total = time.perf_counter() - t0
    assert second.returncode == 0, second.returncode
    runs = json.loads((storage / "danlu" / "mlflow_runs.json").read_text())["runs"]
    print(f"driver restart: first new result {first_result:.1f} s after `danlu sweep` was run again "
          f"(target <= 30 s); the resumed sweep finished in {total:.1f} s, {len(runs)} runs for 4 trials")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="danlu-recovery-") as tmp:
        for sub in ("a", "b"):
            (Path(tmp) / sub).mkdir()
        node_loss(Path(tmp) / "a")
        driver_restart(Path(tmp) / "b")


if __name__ == "__main__":
    main()
