#!/usr/bin/env python
"""Overhead of danlu against plain Ray Tune, measured side by side in one run.

    .venv/bin/python scripts/bench/overhead.py                 # 32 trials x 1 s, 2 CPU slots, 3 rounds
    .venv/bin/python scripts/bench/overhead.py --trials 16 --repeat 1

All four run the same work on the same embedded Ray (started once, not timed): N trials, each 10 reports
after 0.1 s of sleep (jobs/sleep.py), FIFO so that every trial does all of its work.
- plain Tune:       Tuner(reuse_actors=True) with Tune's defaults otherwise (its CSV, JSON and TensorBoard
                    result loggers on), and no MLflow: what a user running Tune by hand gets.
- plain Tune, lean: the same with those loggers off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1), as danlu runs
                    Tune: the fastest Tune there is, and the stricter comparison.
- plain Tune + Ray's MLflowLoggerCallback: the lean run with Ray's own MLflow integration logging to a sqlite
                    store (a run per trial, no parent; each result logged synchronously on Tune's loop): plain Ray
                    Tune doing the same work with every step in MLflow.
- danlu:            `danlu sweep job=sleep sweep=sleep scheduler=fifo` through the library, timed from the
                    command line's overrides to the summary, with MLflow logging on (a sqlite store in a
                    temp dir): compose, parent + child runs, every metric, the artifacts. Its preflight (the
                    checks a new sweep runs before it launches: not Tune's work) is timed apart.
It prints each wall time, the ideal (total work / slots), the driver process's CPU seconds (user + system, all its
threads: Tune's loop, danlu's callbacks and MLflow writer) and the ratios of the best of each side. danlu's wall
includes the report it writes at a sweep's end; the report is then made again on its own (the same work) to say
how much of the wall it is.
The first round that logs to MLflow also pays for importing mlflow (~2.5 s) and creating the sqlite store's tables;
in `danlu sweep` both overlap with Ray's start-up, which this benchmark does not time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


LOGGERS_OFF = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"


@contextmanager
def env(name: str, value: str | None):
    """Set (or, with None, unset) an environment variable for one run, then put it back as it was."""
    before = os.environ.pop(name, None)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)
        if before is not None:
            os.environ[name] = before


def cpu_s() -> float:
    """This process's CPU seconds so far, user + system, all its threads: the driver's (Ray's raylet, GCS and
    trial workers are other processes, the same for both sides)."""
    t = os.times()
    return t.user + t.system


def plain_tune(trials: int, epochs: int, epoch_s: float, storage: str, loggers: bool,
               mlflow_uri: str | None = None, experiment: str = "plain-tune") -> tuple[float, float]:
    from ray import tune

    callbacks = []
    if mlflow_uri:  # Ray's own MLflow integration: a run per trial, its config as params, every result's metrics
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(MLflowLoggerCallback(tracking_uri=mlflow_uri, experiment_name=experiment))

    def work(config):
        for epoch in range(1, epochs + 1):
            time.sleep(epoch_s)
            tune.report({"score": config["x"] * epoch})

    tuner = tune.Tuner(
        work,
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(num_samples=trials, metric="score", mode="max", reuse_actors=True),
        run_config=tune.RunConfig(name="plain", storage_path=storage, verbose=0, callbacks=callbacks),
    )
    with env(LOGGERS_OFF, "0" if loggers else "1"):
        t, c = time.perf_counter(), cpu_s()
        tuner.fit()
        return time.perf_counter() - t, cpu_s() - c


def danlu(trials: int, epochs: int, epoch_s: float, workdir: str, name: str) -> tuple[float, float]:
    from orchestrator.config.compose import find_config_dir
    from orchestrator.run.sweep import run_sweep

    overrides = ["job=sleep", "sweep=sleep", "scheduler=fifo", f"sweep.num_samples={trials}", f"epochs={epochs}",
                 f"epoch_s={epoch_s}", f"sweep.name={name}", f"output_dir={workdir}/outputs",
                 f"tracking.uri=sqlite:///{workdir}/mlflow.db"]
    t, c = time.perf_counter(), cpu_s()
    with open(os.devnull, "w") as quiet, env(LOGGERS_OFF, None):  # danlu decides (it turns them off)
        code = run_sweep(overrides, find_config_dir(str(ROOT / "conf")), stream=quiet, preflight=False)
    wall, cpu = time.perf_counter() - t, cpu_s() - c
    assert code == 0, f"danlu sweep exited {code}"
    return wall, cpu


def preflight_s(epochs: int, epoch_s: float, workdir: str) -> float:
    """The time of the fast checks a new `danlu sweep` runs before it launches (timed apart: not Tune's work)."""
    from orchestrator.config.compose import find_config_dir
    from orchestrator.launch import preflight
    from orchestrator.launch.plan import plan

    p = plan(["job=sleep", "sweep=sleep", f"epochs={epochs}", f"epoch_s={epoch_s}", f"output_dir={workdir}/outputs",
              f"tracking.uri=sqlite:///{workdir}/mlflow.db"], find_config_dir(str(ROOT / "conf")))
    t = time.perf_counter()
    out = preflight.run(p, preflight.FAST, say=lambda _: None)
    assert not out.failed, out.lines()
    return time.perf_counter() - t


def report_again(workdir: str, name: str) -> tuple[float, float]:
    """The time danlu's end-of-sweep report takes for this sweep (the same call, made once more)."""
    from omegaconf import OmegaConf

    from orchestrator.report import make
    from orchestrator.tracking import open_store

    cfg = OmegaConf.load(ROOT / "orchestrator" / "conf" / "report" / "default.yaml")
    t, c = time.perf_counter(), cpu_s()
    make(open_store(f"sqlite:///{workdir}/mlflow.db", "danlu"), name, cfg, Path(workdir, "outputs", name, "report"))
    return time.perf_counter() - t, cpu_s() - c


def check_steps(uri: str, experiment: str, query: str, trials: int, epochs: int) -> None:
    """A side really logged: exactly `trials` runs in `experiment` matching `query`, every step of each."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], query, max_results=trials + 1)
    steps = sum(len(c.get_metric_history(r.info.run_id, "score")) for r in runs)
    assert len(runs) == trials and steps == trials * epochs, (experiment, len(runs), steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--epoch-s", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=3, help="alternate the four this many times; best of each is compared")
    args = ap.parse_args()
    for key in ("trials", "cpus", "epochs", "repeat"):
        if getattr(args, key) < 1:
            ap.error(f"--{key} must be a whole number of at least 1, not {getattr(args, key)}")
    if args.epoch_s < 0:
        ap.error(f"--epoch-s must be 0 or more seconds, not {args.epoch_s}")

    import logging

    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune tables in the benchmark's output
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    for name in ("ray.tune", "ray.tune.analysis.experiment_analysis"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ideal = args.trials * args.epochs * args.epoch_s / args.cpus
    plain, lean, ray_mlflow, ours = ("plain Tune (reuse_actors)", "plain Tune, loggers off",
                                     "plain Tune + MLflowLoggerCallback", "danlu + MLflow")
    walls: dict[str, list[float]] = {plain: [], lean: [], ray_mlflow: [], ours: []}
    cpus: dict[str, list[float]] = {plain: [], lean: [], ray_mlflow: [], ours: []}
    reports: list[tuple[float, float]] = []
    checks: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="danlu-bench-") as tmp:
            for i in range(args.repeat):  # alternated, so that drifts in the machine's load hit all four
                name = f"bench-{i}"
                for label, run in ((plain, lambda: plain_tune(args.trials, args.epochs, args.epoch_s, tmp, True)),
                                   (lean, lambda: plain_tune(args.trials, args.epochs, args.epoch_s, tmp, False)),
                                   (ray_mlflow, lambda n=name: plain_tune(args.trials, args.epochs, args.epoch_s, tmp,
                                                                          False, f"sqlite:///{tmp}/plain-mlflow.db", n)),
                                   (ours, lambda n=name: danlu(args.trials, args.epochs, args.epoch_s, tmp, n))):
                    wall, cpu = run()
                    walls[label].append(wall)
                    cpus[label].append(cpu)
                # danlu's side: one child run per trial of this sweep; Ray's callback: this round's experiment
                check_steps(f"sqlite:///{tmp}/mlflow.db", "danlu",
                            f"tags.`danlu.sweep` = '{name}' and tags.`mlflow.parentRunId` != ''", args.trials, args.epochs)
                check_steps(f"sqlite:///{tmp}/plain-mlflow.db", name, "", args.trials, args.epochs)
                reports.append(report_again(tmp, name))
                checks.append(preflight_s(args.epochs, args.epoch_s, tmp))
    finally:
        ray.shutdown()
    print(f"{args.trials} trials x {args.epochs * args.epoch_s:g} s of work on {args.cpus} slots: "
          f"ideal {ideal:.1f} s; CPU: the driver process's user + system seconds")
    for label, ws in walls.items():
        best = min(ws)
        print(f"  {label:32s} wall {best:6.1f} s   {best / ideal:5.2f}x ideal   CPU {min(cpus[label]):6.1f} s   "
              f"(runs: {', '.join(f'{w:.1f}' for w in ws)} s wall; {', '.join(f'{c:.1f}' for c in cpus[label])} s CPU)")
    best = {label: min(ws) for label, ws in walls.items()}
    cpu = {label: min(cs) for label, cs in cpus.items()}
    print(f"  danlu / plain Tune: wall {best[ours] / best[plain]:.2f}, CPU {cpu[ours] / cpu[plain]:.2f}   "
          f"danlu / plain Tune with loggers off: wall {best[ours] / best[lean]:.2f}, CPU {cpu[ours] / cpu[lean]:.2f}")
    print(f"  danlu / plain Tune + MLflowLoggerCallback (both with every step in MLflow): "
          f"wall {best[ours] / best[ray_mlflow]:.2f}, CPU {cpu[ours] / cpu[ray_mlflow]:.2f}")
    report_wall = sorted(w for w, _ in reports)[len(reports) // 2]
    report_cpu = sorted(c for _, c in reports)[len(reports) // 2]
    print(f"  of danlu's wall, its end-of-sweep report: {report_wall:.2f} s, {report_cpu:.2f} s CPU (median of "
          f"{len(reports)}, made again on its own); without it danlu / plain Tune would be wall "
          f"{(best[ours] - report_wall) / best[plain]:.2f}, CPU {(cpu[ours] - report_cpu) / cpu[plain]:.2f}")
    print(f"  not in danlu's wall: the preflight a new sweep runs first (its fast checks; --no-preflight skips "
          f"them): {sorted(checks)[len(checks) // 2]:.2f} s (median of {len(checks)})")

if __name__ == "__main__":
    main()
