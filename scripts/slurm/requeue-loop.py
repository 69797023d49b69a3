"""The requeue loop: sbatch the recipe with a sweep, requeue the job at seeded random moments, check MLflow.

    .venv/bin/python scripts/slurm/requeue-loop.py                      # 10 iterations of 2 requeues each
    .venv/bin/python scripts/slurm/requeue-loop.py --iterations 20 --requeues 3 --seed 100
    .venv/bin/python scripts/slurm/requeue-loop.py --seed 107 --iterations 1 --keep   # replay one iteration

It starts a one-node Slurm here (scripts/slurm/local-slurm; stopped at the end), then each iteration sbatches
scripts/slurm/ray-cluster.sbatch with the kill loop's sweep (scripts/chaos.py: an ASHA sweep of the sleeping job,
10 trials, checkpoints every report) in a fresh directory, and requeues the job R times, each time
either with `scontrol requeue` or by preempting it (a job of local-slurm's `urgent` partition, which preempts
the default one by requeueing it: SIGTERM, SIGKILL after its GraceTime). Each lands at a moment drawn from one of:
- startup: 0-15 s after the allocation began running (Ray's start, the submission, the driver's restore);
- trials: 0-8 s after this allocation's trials have reported (trials mid-step, checkpoints, rung decisions).
Slurm then kills the allocation (SIGTERM, SIGKILL after KillWait) and runs the job again, which resumes the sweep.
Once the job has ended, the store must hold what the kill loop checks (one parent FINISHED with its report, one
child run per trial, every step once, ...) and, for Slurm: the job COMPLETED after R restarts, the parent counting
R+1 allocations and R preemptions, no trial retried (a preemption is not a failure), and no trial redoing more
than one checkpoint interval per restore. Prints the work lost per preemption (steps and seconds redone).
Exit 0 when no iteration violated anything, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from chaos import SWEEP, check  # noqa: E402  (the kill loop's sweep and its checks of the store)

RECIPE = ROOT / "scripts" / "slurm" / "ray-cluster.sbatch"
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")
EVERY = 1  # the sweep checkpoints at every report (chaos.SWEEP's checkpoint.every is the default, 1)


def slurm(env, *args: str) -> str:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60).stdout


def job_info(env, job: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in slurm(env, "scontrol", "-o", "show", "job", job).split() if "=" in kv)


def wait(cond, timeout: float, give_up=lambda: False) -> bool:
    """Whether `cond` came true within `timeout` s (False at once when `give_up` does)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        if give_up():
            return False
        time.sleep(0.5)
    return False


def iteration(seed: int, requeues: int, env: dict, keep: bool) -> tuple[list[str], list[tuple[str, int, float]]]:
    """One sweep through `requeues` requeues; (violations, work lost per preempted trial)."""
    rng = random.Random(seed)
    cwd = Path(tempfile.mkdtemp(prefix=f"danlu-requeue-{seed}-"))
    for part in ("conf", "jobs"):
        (cwd / part).symlink_to(ROOT / part)
    sweep = [a for a in SWEEP if not a.startswith("cluster.")] + [
        f"output_dir={cwd}/outputs", f"tracking.uri=sqlite:///{cwd}/mlflow.db", "progress.every_s=1"]
    out = subprocess.run(["sbatch", "--parsable", "--nodes=1", "--cpus-per-task=2", "--gpus-per-task=0", "--time=30",
                          str(RECIPE), *sweep], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return [f"sbatch failed: {out.stderr.strip()}"], []
    job = out.stdout.strip().split(";")[0]
    log = cwd / f"danlu-ray-{job}.log"
    text = lambda: log.read_text(errors="replace") if log.exists() else ""  # noqa: E731
    problems, landed = [], 0
    over = lambda: job_info(env, job).get("JobState") in ENDED  # noqa: E731
    for k in range(1, requeues + 1):
        phase = rng.choice(("startup", "trials"))
        if phase == "startup":
            ok = wait(lambda k=k: job_info(env, job).get("JobState") == "RUNNING"
                      and text().count("danlu-ray: head ") >= k, 300, over)
            delay = rng.uniform(0, 15)
        else:
            ok = wait(lambda k=k: len(parts := text().split("danlu-ray: head ")) > k  # allocation k's lines
                      and re.search(r"running [1-9]\d* \(t\d+@\d+", parts[k]) is not None, 300, over)
            delay = rng.uniform(0, 8)
        if not ok:
            if over():
                print(f"  seed {seed}: the sweep ended before requeue {k} ({phase}): not landed", flush=True)
            else:
                problems.append(f"requeue {k}: the allocation never reached its {phase} phase")
            break
        time.sleep(delay)
        if job_info(env, job).get("JobState") != "RUNNING":
            break  # the sweep ended before the moment came
        how = rng.choice(("requeue", "preempt"))
        if how == "requeue":
            done = subprocess.run(["scontrol", "requeue", job], env=env, capture_output=True, timeout=60)
        else:  # a job of the urgent partition takes the node: Slurm preempts this one (requeue, after GraceTime)
            done = subprocess.run(["sbatch", "-p", "urgent", "--exclusive", "--nodes=1", "-o", "/dev/null",
                                   "--wrap", "sleep 2"], env=env, capture_output=True, timeout=60)
            preempted = wait(lambda n=landed: int(job_info(env, job).get("Restarts", 0)) > n, 120)
            done.returncode = done.returncode or int(not preempted)
        if done.returncode == 0:
            landed += 1
            print(f"  seed {seed}: {how} {k} at {phase} +{delay:.1f} s", flush=True)
    ended = wait(over, 900)
    info = job_info(env, job)
    if not ended:
        problems.append(f"job {job} did not end ({info.get('JobState')})")
        subprocess.run(["scancel", job], env=env, timeout=60)
        wait(lambda: job_info(env, job).get("JobState") == "CANCELLED", 120)
    # the allocations the sweep ran in: a preemption that lands after the sweep has ended still requeues the job,
    # whose next allocation finds it ended ("nothing to run") and counts for nothing
    allocs = text().split("danlu-ray: head ")[1:]
    ran = max((k for k, a in enumerate(allocs, 1) if "nothing to run" not in a), default=0)
    final = allocs[ran - 1].split("danlu: submitted sweep ")[-1] if ran else ""
    problems += check(cwd, 0 if info.get("JobState") == "COMPLETED" else 1, final)
    if info.get("Restarts") != str(landed):
        problems.append(f"{landed} requeue(s) landed, Slurm counts {info.get('Restarts')} restart(s)")
    lost = []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("danlu")
    runs = [r for r in (client.search_runs([exp.experiment_id], max_results=5000) if exp else [])
            if r.data.tags.get("danlu.sweep") == "chaos"]
    for r in runs:
        tags = r.data.tags
        if "mlflow.parentRunId" not in tags:
            want = (str(ran), str(ran - 1))
            got = (tags.get("danlu.slurm.allocations"), tags.get("danlu.slurm.preemptions"))
            if got != want:
                problems.append(f"parent counts (allocations, preemptions) {got}, expected {want}")
            continue
        if int(tags.get("danlu.retries", 0)):
            problems.append(f"{r.info.run_name}: retried {tags['danlu.retries']} time(s): a preemption counted as failure")
        for key, value in tags.items():
            if key.startswith("danlu.redone."):
                n, s = value.split()
                lost.append((tags.get("danlu.trial", "?"), int(n), float(s)))
                if int(n) > EVERY:
                    problems.append(f"{r.info.run_name}: redid {n} steps from {key[13:]} (checkpoints every {EVERY})")
    shutil.rmtree(f"/tmp/ray-{os.environ.get('USER') or 'root'}-{job}", ignore_errors=True)
    if problems or keep:
        print(f"  seed {seed}: kept {cwd} (job {job})", flush=True)
    else:
        shutil.rmtree(cwd, ignore_errors=True)
    return problems, lost


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--requeues", type=int, default=2)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--keep", action="store_true", help="keep every iteration's directory")
    ap.add_argument("--first-job", type=int, default=21, help="Slurm's first job id: its Ray ports (the recipe "
                    "derives them from the job id) stay apart from the tests' jobs 1-5")
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="danlu-slurm-"))
    r = subprocess.run([str(ROOT / "scripts" / "slurm" / "local-slurm"), "start", str(base)], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "DANLU_SLURM_FIRST_JOB_ID": str(args.first_job)})
    if r.returncode != 0:
        print(r.stdout + r.stderr, file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_", "DANLU_"))}
    env.update(SLURM_CONF=str(base / "slurm.conf"), DANLU_VENV=str(Path(sys.executable).parents[1]),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    bad, all_lost, t0 = 0, [], time.time()
    try:
        for i in range(args.iterations):
            seed = args.seed + i
            problems, lost = iteration(seed, args.requeues, env, args.keep)
            all_lost += lost
            print(f"iteration {i + 1} (seed {seed}): " + ("ok" if not problems else "; ".join(problems)) +
                  f"; work lost per preempted trial (steps, s): {[(n, s) for _, n, s in lost]}", flush=True)
            bad += bool(problems)
    finally:
        subprocess.run([str(ROOT / "scripts" / "slurm" / "local-slurm"), "stop", str(base)], capture_output=True,
                       timeout=300)
        shutil.rmtree(base, ignore_errors=True)
    steps = [n for _, n, _ in all_lost]
    print(f"requeue loop: {args.iterations} iteration(s), {bad} with violations, {time.time() - t0:.0f} s; "
          f"{len(all_lost)} redo(s) after preemptions: {sum(steps)} step(s), "
          f"{sum(s for _, _, s in all_lost):.1f} s in all, at most {max(steps, default=0)} step(s) each")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
