#!/usr/bin/env python
"""A sweep extended against a fresh sweep of the same size, side by side in one run: Optuna's TPE on Hartmann-6.

    .venv/bin/python scripts/bench/extend.py                   # 3 search seeds, 24 -> 48 trials
    .venv/bin/python scripts/bench/extend.py --seeds 5 --first 24 --total 48

For each search seed S, in one temp dir with a sqlite MLflow store, through the `danlu` command a user types:
1. `danlu sweep job=hartmann sweep=hartmann search=optuna scheduler=fifo sweep.num_samples=24 sweep.search_seed=S`;
2. `danlu extend NAME sweep.num_samples=48` (Optuna told the first 24, then suggesting 24 more);
3. a fresh `danlu sweep ... sweep.num_samples=48` with the same seed.
FIFO, so that every trial is a whole evaluation (9 steps) and "best" is the best last reported value. Printed per
seed: the best of the first 24; the best after the extension; the number of the extension's trials it needed to
reach the first sweep's best (- if none did); the fresh 48's best and the trial at which it first reached the
first sweep's best; and the true Hartmann value of each best (regret to the optimum -3.32237), since the reported
value carries noise. Medians over the seeds last. No claim is made across so few seeds; the table is the evidence.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
BASE = ["job=hartmann", "sweep=hartmann", "search=optuna", "scheduler=fifo", "cluster.num_cpus=2"]


def danlu(cwd: Path, *args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "orchestrator", "--config-dir", str(ROOT / "conf"), *args], cwd=cwd,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"danlu {' '.join(args)} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def trials(cwd: Path, name: str) -> list[tuple[str, float, float]]:
    """(trial label, last reported value, true value) of every trial of a sweep, in trial order."""
    from mlflow.tracking import MlflowClient

    from jobs.hartmann import hartmann6

    c = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    exp = c.get_experiment_by_name("danlu")
    runs = [r for r in c.search_runs([exp.experiment_id], max_results=5000)
            if r.data.tags.get("danlu.sweep") == name and "mlflow.parentRunId" in r.data.tags]
    out = []
    for r in runs:
        x = [float(r.data.params[f"x{i}"]) for i in range(1, 7)]
        out.append((r.data.tags["danlu.trial"], float(r.data.metrics["value"]), hartmann6(x)))
    return sorted(out)


def reached(rows, target: float, start: int = 0) -> int | None:
    """The 1-based number, counted from `start`, of the first trial whose value is at or below target."""
    for i, (_, v, _) in enumerate(rows[start:], 1):
        if v <= target:
            return i
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first", type=int, default=24)
    ap.add_argument("--total", type=int, default=48)
    args = ap.parse_args()
    from jobs.hartmann import OPTIMUM

    rows = []
    print(f"{'seed':>4} {'first best':>10} {'extended best':>13} {'ext. trials to reach':>20} {'fresh best':>10} "
          f"{'fresh trial to reach':>20} {'regret first/ext/fresh':>24}")
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory(prefix="danlu-bench-extend-") as tmp:
            cwd = Path(tmp)
            danlu(cwd, "sweep", "--no-preflight", *BASE, f"sweep.num_samples={args.first}", f"sweep.search_seed={seed}",
                  "sweep.name=ext")
            first = trials(cwd, "ext")
            danlu(cwd, "extend", "ext", f"sweep.num_samples={args.total}")
            extended = trials(cwd, "ext")
            danlu(cwd, "sweep", "--no-preflight", *BASE, f"sweep.num_samples={args.total}",
                  f"sweep.search_seed={seed}", "sweep.name=fresh")
            fresh = trials(cwd, "fresh")
        b1, be, bf = (min(rs, key=lambda r: r[1]) for rs in (first, extended, fresh))
        n_ext = reached(extended, b1[1], start=args.first)
        n_fresh = reached(fresh, b1[1])
        regrets = [b[2] - OPTIMUM for b in (b1, be, bf)]
        rows.append((b1[1], be[1], n_ext, bf[1], n_fresh, regrets))
        print(f"{seed:>4} {b1[1]:>10.4f} {be[1]:>13.4f} {n_ext if n_ext else '-':>20} {bf[1]:>10.4f} "
              f"{n_fresh if n_fresh else '-':>20} {' / '.join(f'{r:.3f}' for r in regrets):>24}", flush=True)
    med = [statistics.median(r[i] for r in rows) for i in (0, 1, 3)]
    print(f"median best: first {args.first} {med[0]:.4f}, extended to {args.total} {med[1]:.4f}, fresh {args.total} "
          f"{med[2]:.4f}; median regret first/extended/fresh "
          f"{' / '.join(f'{statistics.median(r[5][i] for r in rows):.3f}' for i in range(3))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
