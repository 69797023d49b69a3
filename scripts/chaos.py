"""The kill loop: run a sweep, SIGKILL its driver at seeded random moments, rerun it to the end, check MLflow.

    .venv/bin/python scripts/chaos.py                         # 20 iterations of 3 kills each
    .venv/bin/python scripts/chaos.py --iterations 50 --kills 3 --seed 1000
    .venv/bin/python scripts/chaos.py --seed 1017 --iterations 1 --keep   # replay one failing iteration
    .venv/bin/python scripts/chaos.py --search optuna         # the same under Optuna's TPE
    .venv/bin/python scripts/chaos.py --seeds 3               # 3 seeds per configuration: seed-aware ASHA
    .venv/bin/python scripts/chaos.py --extend                # the kills land in `danlu extend` of an ended sweep

Each iteration runs `danlu sweep` (an ASHA sweep of the sleeping job, checkpoints every report, Tune
keeping 2) in a fresh directory, kills the driver's whole process group with SIGKILL K times, then runs
the same command once more and lets it finish. Each kill lands in a phase drawn from --phases:
- any: a moment drawn from [0.5 s, --window s] after the start (Ray's start, the parent run's creation,
  trials starting, checkpointing, stopping early or ending, flushes);
- startup: within the first 8 s (Ray's start, the store, Tune's first snapshot);
- restore: 0-2 s after the driver's header line (for a resumed sweep: Tune restoring and copying its
  files back into the storage, which is where a kill once left them empty);
- trials: 0-9 s after 2-5 more trials have ended than at this start;
- rung: 0-1 s after ASHA stopped a trial early (a rung decision);
- end: 0-2 s after every trial has ended (closing the runs, the report).
The MLflow store must then hold what docs/failures.md promises:

- one parent run, FINISHED, whose trials_total counts every trial
- exactly one child run per trial (as many as the sweep has trials), named as usual (t007 x=0.41),
  none RUNNING, none FAILED (the job never fails by itself)
- every reported step once: each child's steps are 1..last with no gap and no repeat; a trial that
  completed reached the last epoch
- the final run exits 0 and says nothing was left unlogged
- the report was made: the parent run has report/report.json and best_mean_score; with several seeds,
  no rung of a configuration was decided twice (seed-aware ASHA's state across the kills)

With --extend, a sweep of half the configurations runs to its end first, untouched; the kills then land in
`danlu extend chaos sweep.num_samples=10` (its decision under the lock, Tune's own experiment of the extension,
ASHA's carried rungs), and the same extend command runs once more to the end (a finished extension's "nothing to
extend" is followed by `danlu resume chaos`, which prints its summary again). The store must then hold the same, for
the whole sweep: one parent, one child per trial of both parts, the extension's runs tagged danlu.extension=1 and
no configuration twice.

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
EXTEND: list[bool] = [False]  # --extend: the kills land in an extension of a sweep that ended


def command(extra: list[str] = ()) -> list[str]:
    return [sys.executable, "-m", "orchestrator", "--config-dir", str(ROOT / "conf"), "sweep", *SWEEP, *extra]


def base_command() -> list[str]:
    """--extend: the sweep before its extension, half the configurations."""
    return [a if not a.startswith("sweep.num_samples=") else f"sweep.num_samples={SAMPLES // 2}" for a in command()]


def extend_command(verb: str = "extend") -> list[str]:
    return [sys.executable, "-m", "orchestrator", "--config-dir", str(ROOT / "conf"), verb, "chaos",
            *([f"sweep.num_samples={SAMPLES}"] if verb == "extend" else [])]


PHASES = ("any", "startup", "restore", "trials", "rung", "end")


def journal_ends(cwd: Path, early: bool = False) -> int:
    """Trial ends in the sweep's journal (stopped early by ASHA only, with `early`)."""
    path = cwd / "outputs" / "chaos" / "danlu" / "mlflow_journal.jsonl"
    try:
        lines = [ln for ln in path.read_bytes().splitlines() if ln.startswith(b'{"op": "end"')]
    except FileNotFoundError:
        return 0
    return sum(1 for ln in lines if b'"danlu.stopped_early": "true"' in ln) if early else len(lines)


def kill_moment(rng: random.Random, phase: str, window: float):
    """A condition (cwd, log text since this start, seconds since it) -> kill now?, for one phase (see above)."""
    delay = {"any": rng.uniform(0.5, window), "startup": rng.uniform(0.5, 8), "restore": rng.uniform(0, 2),
             "trials": rng.uniform(0, 9), "rung": rng.uniform(0, 1), "end": rng.uniform(0, 2)}[phase]
    more = rng.randint(2, 5)
    if EXTEND[0]:  # an extension runs half the trials: a kill after its last end would find it ended
        more = min(more, 3)
    state: dict = {}

    def due(cwd: Path, text: str, elapsed: float) -> bool:
        if phase in ("any", "startup"):
            return elapsed >= delay
        if "base" not in state:
            state["base"] = journal_ends(cwd, early=phase == "rung")
        if "since" not in state:
            if phase == "restore":
                hit = "danlu: resuming" in text or "danlu: sweep chaos" in text or "danlu: restarting" in text \
                    or "danlu: extending" in text
            elif phase == "end":
                hit = journal_ends(cwd) >= SAMPLES * len(SEEDS)
            elif phase == "rung":
                hit = journal_ends(cwd, early=True) > state["base"]
            else:
                hit = journal_ends(cwd) >= state["base"] + more
            if hit:
                state["since"] = elapsed
        return "since" in state and elapsed >= state["since"] + delay

    due.describe = f"{phase}+{delay:.2f}s" + (f" after {more} more ends" if phase == "trials" else "")
    return due


def run_once(cwd: Path, log: Path, kill_when, timeout: float = 600, args: list[str] | None = None) -> int | None:
    """The sweep's driver in its own process group; killed (with all it started) once `kill_when(cwd, text,
    elapsed)` holds (None: never). Returns its exit code, or None if it was killed."""
    with open(log, "a") as out:
        out.write(f"\n===== start (kill at {getattr(kill_when, 'describe', kill_when)}) =====\n")
        out.flush()
        begin = log.stat().st_size
        proc = subprocess.Popen(args or (extend_command() if EXTEND[0] else command()), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < timeout:
                code = proc.poll()
                if code is not None:
                    return code
                if kill_when is not None:
                    with open(log, errors="replace") as f:
                        f.seek(begin)
                        text = f.read()
                    if kill_when(cwd, text, time.monotonic() - t0):
                        return None
                time.sleep(0.05)
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
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags and "danlu.orphaned" not in r.data.tags]
    orphans = [r for r in runs if "danlu.orphaned" in r.data.tags]
    problems += [f"set-aside run {r.info.run_name} is RUNNING" for r in orphans if r.info.status == "RUNNING"]
    if len(parents) != 1:
        problems.append(f"{len(parents)} parent runs")
    else:
        p = parents[0]
        if p.info.status != "FINISHED":
            problems.append(f"parent is {p.info.status}")
        if p.data.tags.get("danlu.report") != "made":
            problems.append(f"parent's report tag is {p.data.tags.get('danlu.report')!r}")
        for key in ("trials_total", "best_mean_score"):
            values = [m.value for m in sorted(client.get_metric_history(p.info.run_id, key), key=lambda m: m.timestamp)]
            if any(a == b for a, b in zip(values, values[1:], strict=False)):
                problems.append(f"parent's {key} logged again with the same value: {values}")
        if p.data.metrics.get("trials_total") != len(children):
            problems.append(f"parent counts {p.data.metrics.get('trials_total')} trials, {len(children)} child runs")
        strays = [r for r in children if r.data.tags["mlflow.parentRunId"] != p.info.run_id]
        if strays:
            problems.append(f"{len(strays)} child runs under another parent")
    per_trial = Counter(r.data.tags.get("ray.trial_id") for r in children)
    if len(children) != SAMPLES * len(SEEDS):
        problems.append(f"{len(children)} child runs for {SAMPLES * len(SEEDS)} trials")
    ended = "nothing to run" in final_out and "report.html" in final_out  # a kill after the report, as it exited:
    if "danlu: report:" not in final_out and not ended:  # the summary again, its report's link in it (made before)
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
    if EXTEND[0]:
        extended = [r for r in children if r.data.tags.get("danlu.extension") == "1"]
        if len(extended) != (SAMPLES - SAMPLES // 2) * len(SEEDS):
            problems.append(f"{len(extended)} runs of the extension, {(SAMPLES - SAMPLES // 2) * len(SEEDS)} expected")
        configs = Counter(r.data.tags.get("danlu.config_id") for r in children)
        if len(configs) != SAMPLES:
            problems.append(f"{len(configs)} configurations for {SAMPLES} (one drawn twice?)")
        if len(parents) == 1 and parents[0].data.tags.get("danlu.extensions") != "1":
            problems.append(f"the parent counts {parents[0].data.tags.get('danlu.extensions')!r} extensions")
    return problems


def iteration(seed: int, kills: int, window: float, keep: bool, phases: tuple[str, ...] = PHASES) -> list[str]:
    rng = random.Random(seed)
    cwd = Path(tempfile.mkdtemp(prefix=f"danlu-chaos-{seed}-"))
    log = cwd / "driver.log"
    whens = [kill_moment(rng, rng.choice(phases), window) for _ in range(kills)]
    moments = [w.describe for w in whens]
    landed = 0
    if EXTEND[0]:  # the sweep to extend, run to its end without a kill
        code = run_once(cwd, log, None, args=base_command())
        if code != 0:
            return [f"the sweep before the extension exited {code}"]
    for when in whens:
        code = run_once(cwd, log, when)
        if code is not None:  # the sweep ended before the kill came: the rest of the kills have nothing to kill
            break
        landed += 1
    start = log.stat().st_size if log.exists() else 0
    code = run_once(cwd, log, None)
    final_out = log.read_text()[start:]
    if EXTEND[0] and code == 2 and "nothing to extend" in final_out:  # it had ended: its summary, as a resume says it
        start = log.stat().st_size
        code = run_once(cwd, log, None, args=extend_command("resume"))
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
    ap.add_argument("--extend", action="store_true", help="the kills land in `danlu extend` of an ended sweep")
    ap.add_argument("--phases", default=",".join(PHASES), help=f"the phases kills are drawn from ({', '.join(PHASES)})")
    args = ap.parse_args(argv)
    phases = tuple(args.phases.split(","))
    if not set(phases) <= set(PHASES):
        ap.error(f"--phases: each of {', '.join(PHASES)}")
    SEEDS[:] = list(range(args.seeds))
    EXTEND[0] = args.extend
    SWEEP.extend([f"search={args.search}", f"sweep.seeds=[{','.join(map(str, SEEDS))}]"])
    t0, failed = time.monotonic(), []
    for i in range(args.iterations):
        if iteration(args.seed + i, args.kills, args.window, args.keep, phases):
            failed.append(args.seed + i)
    print(f"chaos: {args.iterations} iterations x {args.kills} kills: {len(failed)} with violations"
          f"{' (seeds ' + ', '.join(map(str, failed)) + ')' if failed else ''}; {time.monotonic() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
