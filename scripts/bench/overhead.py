#!/usr/bin/env python
"""Overhead of danlu against plain Ray Tune, measured side by side in one run.

    .venv/bin/python scripts/bench/overhead.py                 # 32 trials x 1 s, 2 CPU slots, 3 rounds
    .venv/bin/python scripts/bench/overhead.py --trials 16 --repeat 1

Both run the same work on the same embedded Ray (started once, not timed): N trials, each 10 reports
after 0.1 s of sleep (jobs/sleep.py), FIFO so that every trial does all of its work.
- danlu:      `danlu sweep job=sleep sweep=sleep scheduler=fifo` through the library, with MLflow
              logging on (a sqlite store in a temp dir): compose, parent + child runs, metrics, artifacts.
- plain Tune: Tuner(reuse_actors=True) with Tune's defaults otherwise, and no MLflow.
It prints each wall time, the ideal (total work / slots) and the ratios of the best of each side.
danlu's first round also pays for importing mlflow (~2.5 s) and creating the sqlite store's tables;
in `danlu sweep` both overlap with Ray's start-up, which this benchmark does not time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def plain_tune(trials: int, epochs: int, epoch_s: float, storage: str) -> float:
    from ray import tune

    def work(config):
        for epoch in range(1, epochs + 1):
            time.sleep(epoch_s)
            tune.report({"score": config["x"] * epoch})

    tuner = tune.Tuner(
        work,
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(num_samples=trials, metric="score", mode="max", reuse_actors=True),
        run_config=tune.RunConfig(name="plain", storage_path=storage, verbose=0),
    )
    t = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - t


def danlu(trials: int, epochs: int, epoch_s: float, workdir: str, name: str) -> float:
    from orchestrator.compose import find_config_dir
    from orchestrator.sweep import run_sweep

    overrides = ["job=sleep", "sweep=sleep", "scheduler=fifo", f"sweep.num_samples={trials}", f"epochs={epochs}",
                 f"epoch_s={epoch_s}", f"sweep.name={name}", f"output_dir={workdir}/outputs",
                 f"tracking.uri=sqlite:///{workdir}/mlflow.db"]
    t = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        code = run_sweep(overrides, find_config_dir(str(ROOT / "conf")), stream=quiet)
    wall = time.perf_counter() - t
    assert code == 0, f"danlu sweep exited {code}"
    return wall


def check_mlflow(workdir: str, name: str, trials: int, epochs: int) -> None:
    """The danlu side really logged: one child run per trial, every step of every trial."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    exp = c.get_experiment_by_name("danlu")
    runs = c.search_runs([exp.experiment_id], f"tags.`danlu.sweep` = '{name}' and tags.`mlflow.parentRunId` != ''",
                         max_results=1000)
    steps = sum(len(c.get_metric_history(r.info.run_id, "score")) for r in runs)
    assert len(runs) == trials and steps == trials * epochs, (len(runs), steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--epoch-s", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=3, help="alternate the two this many times; best of each is compared")
    args = ap.parse_args()

    import logging

    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune tables in the benchmark's output
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    for name in ("ray.tune", "ray.tune.analysis.experiment_analysis"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ideal = args.trials * args.epochs * args.epoch_s / args.cpus
    walls: dict[str, list[float]] = {"plain Ray Tune (reuse_actors)": [], "danlu + MLflow": []}
    try:
        with tempfile.TemporaryDirectory(prefix="danlu-bench-") as tmp:
            for i in range(args.repeat):  # alternated, so that drifts in the machine's load hit both
                walls["plain Ray Tune (reuse_actors)"].append(plain_tune(args.trials, args.epochs, args.epoch_s, tmp))
                name = f"bench-{i}"
                walls["danlu + MLflow"].append(danlu(args.trials, args.epochs, args.epoch_s, tmp, name))
                check_mlflow(tmp, name, args.trials, args.epochs)
    finally:
        ray.shutdown()
    print(f"{args.trials} trials x {args.epochs * args.epoch_s:g} s of work on {args.cpus} slots: "
          f"ideal {ideal:.1f} s")
    for label, ws in walls.items():
        best = min(ws)
        print(f"  {label:32s} wall {best:6.1f} s   {best / ideal:5.2f}x ideal   (runs: "
              f"{', '.join(f'{w:.1f}' for w in ws)})")
    d, p = min(walls["danlu + MLflow"]), min(walls["plain Ray Tune (reuse_actors)"])
    print(f"  danlu / plain Tune: {d / p:.2f}")


if __name__ == "__main__":
    main()
