"""The kill loop: run a sweep, SIGKILL its driver at seeded random moments, rerun it to the end, check MLflow.

    .venv/bin/python scripts/chaos.py                         # 20 iterations of 3 kills each
    .venv/bin/python scripts/chaos.py --iterations 50 --kills 3 --seed 1000
    .venv/bin/python scripts/chaos.py --seed 1017 --iterations 1 --keep   # replay one failing iteration
    .venv/bin/python scripts/chaos.py --search optuna         # the same under Optuna's TPE
    .venv/bin/python scripts/chaos.py --seeds 3               # 3 seeds per configuration: seed-aware ASHA

Each iteration runs `danlu sweep` (an ASHA sweep of the sleeping job, checkpoints every report, Tune
keeping 2) in a fresh directory, kills the driver's whole process group with SIGKILL K times at a
moment drawn from [0.5 s, --window s] after each start (so during Ray's start, the parent run's
creation, trials starting, checkpointing, stopping early or ending, and flushes), then runs the same
command once more and lets it finish. The MLflow store must then hold what the README promises:

- one parent run, FINISHED, whose trials_total counts every trial
- exactly one child run per trial (as many as the sweep has trials), named as usual (t007 x=0.41),
  none RUNNING, none FAILED (the job never fails by itself)
- every reported step once: each child's steps are 1..last with no gap and no repeat; a trial that
  completed reached the last epoch
- the final run exits 0 and says nothing was left unlogged
- the report was made: the parent run has report/report.json and best_mean_score; with several seeds,
  no rung of a configuration was decided twice (seed-aware ASHA's state across the kills)

Any violation prints the iteration's seed, which replays the same kill moments (`--seed S
--iterations 1`). Exit 0 when no iteration violated anything, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, SAMPLES = 16, 10
SWEEP = ["job=sleep", "sweep=sleep", "scheduler=asha", f"sweep.num_samples={SAMPLES}", f"epochs={EPOCHS}",
         "epoch_s=0.4", "checkpoint_state=true", "checkpoint.keep=2", "scheduler.grace_period=3",
         "cluster.num_cpus=2", "tracking.flush_s=1", "sweep.name=chaos"]
NAME = re.compile(r"^t\d{3} x=\S+( s=\d+)?$")
SEEDS = [0]


def command(extra: list[str] = ()) -> list[str]:
    return [sys.executable, "-m", "orchestrator", "--config-dir", str(ROOT / "conf"), "sweep", *SWEEP, *extra]


def run_once(cwd: Path, log: Path, kill_after: float | None, timeout: float = 600) -> int | None:
    """The sweep's driver in its own process group; killed (with all it started) after kill_after seconds.
    Returns its exit code, or None if it was killed."""
    with open(log, "a") as out:
        out.write(f"\n===== start (kill after {kill_after}) =====\n")
        out.flush()
        proc = subprocess.Popen(command(), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            code = proc.wait(timeout=kill_after if kill_after is not None else timeout)
            return code
        except subprocess.TimeoutExpired:
            return None
        finally:
            try:  # the driver and every process it started (Ray's head, workers): a whole-machine crash
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=60)


def check(cwd: Path, final_code: int, final_out: str) -> list[str]:
    """What the MLflow store and the final run's output must show; the list of violations."""
    from mlflow.tracking import MlflowClient

    problems = []
    if final_code != 0:
        problems.append(f"final run exited {final_code}")
    for bad in ("not logged to MLflow", "refused", "Traceback"):
        if bad in final_out:
            problems.append(f"final run printed {bad!r}")
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("danlu")
    runs = client.search_runs([exp.experiment_id], max_results=5000) if exp else []
    runs = [r for r in runs if r.data.tags.get("danlu.sweep") == "chaos"]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    if len(parents) != 1:
        problems.append(f"{len(parents)} parent runs")
    else:
        p = parents[0]
        if p.info.status != "FINISHED":
            problems.append(f"parent is {p.info.status}")
        if p.data.metrics.get("trials_total") != len(children):
            problems.append(f"parent counts {p.data.metrics.get('trials_total')} trials, {len(children)} child runs")
        strays = [r for r in children if r.data.tags["mlflow.parentRunId"] != p.info.run_id]
        if strays:
            problems.append(f"{len(strays)} child runs under another parent")
    per_trial = Counter(r.data.tags.get("ray.trial_id") for r in children)
    if len(children) != SAMPLES * len(SEEDS):
        problems.append(f"{len(children)} child runs for {SAMPLES * len(SEEDS)} trials")
    if "danlu: report:" not in final_out:
        problems.append("the final run made no report")
    if len(parents) == 1:
        arts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
        if "report/report.json" not in arts or "best_mean_score" not in parents[0].data.metrics:
            problems.append(f"the parent run lacks the report ({sorted(arts)})")
    report = cwd / "outputs" / "chaos" / "report" / "report.json"
    if report.exists():
        import json

        decided = Counter((d["config"], d["rung"]) for d in json.loads(report.read_text())["rungs"]["decisions"])
        twice = [k for k, n in decided.items() if n > 1]
        if twice:
            problems.append(f"rungs decided twice: {twice}")
    twice = {t: n for t, n in per_trial.items() if n > 1}
    if twice:
        problems.append(f"trials with several runs: {twice}")
    for r in children:
        name = r.info.run_name
        if r.info.status != "FINISHED":
            problems.append(f"{name}: {r.info.status} {r.data.tags.get('danlu.error', '')}")
        if not NAME.match(name or ""):
            problems.append(f"run named {name!r}")
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "score")]
        if sorted(steps) != list(range(1, len(steps) + 1)):
            repeated = sorted(s for s, n in Counter(steps).items() if n > 1)
            problems.append(f"{name}: steps not 1..n once each (repeated {repeated}, "
                            f"missing {sorted(set(range(1, max(steps, default=0) + 1)) - set(steps))})")
        if r.data.tags.get("danlu.outcome") == "completed" and max(steps, default=0) != EPOCHS:
            problems.append(f"{name}: completed at step {max(steps, default=0)} of {EPOCHS}")
    return problems


def iteration(seed: int, kills: int, window: float, keep: bool) -> list[str]:
    rng = random.Random(seed)
    cwd = Path(tempfile.mkdtemp(prefix=f"danlu-chaos-{seed}-"))
    log = cwd / "driver.log"
    moments = [round(rng.uniform(0.5, window), 2) for _ in range(kills)]
    landed = 0
    for at in moments:
        code = run_once(cwd, log, at)
        if code is not None:  # the sweep ended before the kill came: the rest of the kills have nothing to kill
            break
        landed += 1
    start = log.stat().st_size if log.exists() else 0
    code = run_once(cwd, log, None)
    final_out = log.read_text()[start:]
    try:
        problems = check(cwd, code, final_out)
    except Exception as exc:  # the store itself could not be read: that is a violation too, not a crash
        problems = [f"the MLflow store could not be checked: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"]
    print(f"seed {seed}: kills at {moments}, {landed} landed (then the sweep ended by itself): "
          f"{'OK' if not problems else 'VIOLATIONS'}" if landed < kills else
          f"seed {seed}: kills at {moments}, all landed: {'OK' if not problems else 'VIOLATIONS'}", flush=True)
    for p in problems:
        print(f"    {p}", flush=True)
    if problems or keep:
        print(f"    kept: {cwd} (driver.log, mlflow.db, outputs/)", flush=True)
    else:
        shutil.rmtree(cwd, ignore_errors=True)
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--kills", type=int, default=3, help="SIGKILLs per iteration before the final run")
    ap.add_argument("--seed", type=int, default=0, help="iteration i uses seed+i")
    ap.add_argument("--window", type=float, default=25.0, help="kill moments are drawn from [0.5, window] seconds")
    ap.add_argument("--keep", action="store_true", help="keep every iteration's directory, not only failing ones")
    ap.add_argument("--search", default="random", help="the sweep's searcher (search=...)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per configuration (sweep.seeds=[0..N-1])")
    args = ap.parse_args(argv)
    SEEDS[:] = list(range(args.seeds))
    SWEEP.extend([f"search={args.search}", f"sweep.seeds=[{','.join(map(str, SEEDS))}]"])
    t0, failed = time.monotonic(), []
    for i in range(args.iterations):
        if iteration(args.seed + i, args.kills, args.window, args.keep):
            failed.append(args.seed + i)
    print(f"chaos: {args.iterations} iterations x {args.kills} kills: {len(failed)} with violations"
          f"{' (seeds ' + ', '.join(map(str, failed)) + ')' if failed else ''}; {time.monotonic() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
