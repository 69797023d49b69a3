#!/usr/bin/env python
"""How long `danlu plan` takes (no --probe; the bar: 3 s on this 2-core machine), each run a fresh process
(`python -m orchestrator`, what the `danlu` script runs), `--repeats` times per case:

    .venv/bin/python scripts/bench/plan.py [--repeats 5]

Cases, side by side in one run:
  fresh      the default sweep in an empty folder (no store, no earlier sweep): no step time to cost with
  measured   after one sweep of the job here: its step time read from outputs/<sweep>/danlu/measured.json
  mlflow     the same store with outputs/ moved away: the step time read from the sweep's parent run in MLflow
             (MLflow's import alone takes about 3 s here: the reason for the local record)
  --help     `danlu --help`, the floor: Python and danlu's CLI only
Printed: each case's median and slowest wall time, and whether its output has a cost line.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SLEEP = ["job=sleep", "sweep=sleep", "epochs=3", "epoch_s=0.05", "sweep.num_samples=2"]


def danlu(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "orchestrator", "--config-dir", str(ROOT / "conf"), *args], cwd=cwd,
                       capture_output=True, text=True)
    return time.perf_counter() - t0, r


def timed(args: list[str], cwd: Path, repeats: int) -> tuple[list[float], str]:
    times, out = [], ""
    for _ in range(repeats):
        t, r = danlu(args, cwd)
        if r.returncode != 0:
            raise SystemExit(f"danlu {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        times.append(t)
        out = r.stdout
    return times, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="danlu-bench-plan-") as tmp:
        fresh, here = Path(tmp, "fresh"), Path(tmp, "here")
        fresh.mkdir()
        here.mkdir()
        rows.append(("--help", *timed(["--help"], fresh, args.repeats)))
        rows.append(("fresh", *timed(["plan"], fresh, args.repeats)))
        t, r = danlu(["sweep", *SLEEP, "sweep.name=bench-plan", "cluster.num_cpus=2"], here)
        if r.returncode != 0:
            raise SystemExit(f"the sweep failed:\n{r.stdout}\n{r.stderr}")
        print(f"(one sweep of the sleep job to measure a step time: {t:.1f} s)")
        rows.append(("measured", *timed(["plan", *SLEEP], here, args.repeats)))
        shutil.move(str(here / "outputs"), str(Path(tmp, "elsewhere")))
        rows.append(("mlflow", *timed(["plan", *SLEEP], here, args.repeats)))
    print(f"\n{'case':<10} {'median s':>9} {'slowest s':>10}  cost line")
    for name, times, out in rows:
        cost = next((ln.strip() for ln in out.splitlines() if ln.startswith("cost:")), "-")
        print(f"{name:<10} {statistics.median(times):>9.2f} {max(times):>10.2f}  {cost[:90]}")
    slow = [name for name, times, _ in rows if name in ("fresh", "measured") and statistics.median(times) > 3]
    print("\nthe bar (danlu plan <= 3 s, without --probe):", "met" if not slow else f"NOT met: {', '.join(slow)}")
    return 1 if slow else 0


if __name__ == "__main__":
    raise SystemExit(main())
