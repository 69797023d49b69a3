#!/usr/bin/env python
"""The command of a sweep that has ended, run again: it prints the sweep's summary and links without starting Ray
or reading MLflow (its danlu/finished.json). Measured here against the first run, side by side:

    .venv/bin/python scripts/bench/finished.py [--repeats 5]

A sweep of the sleep job (4 trials, FIFO) runs once; then its command runs `--repeats` times, each a fresh
process (`python -m orchestrator`, what the `danlu` script runs). Printed: the first run's wall time, each
repeat's, their median, and whether any repeat created a Ray session directory (it must not). The bar: under 5 s
on a 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["sweep", "job=sleep", "sweep=sleep", "scheduler=fifo", "sweep.num_samples=4", "epochs=3", "epoch_s=0.05",
        "sweep.name=bench-finished", "cluster.num_cpus=2"]


def danlu(cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "orchestrator", "--config-dir", str(ROOT / "conf"), *ARGS], cwd=cwd,
                       capture_output=True, text=True)
    return time.perf_counter() - t0, r


def sessions() -> set[Path]:
    return set(Path(tempfile.gettempdir(), "ray").glob("session_2*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        first, r = danlu(Path(tmp))
        if r.returncode != 0:
            print(r.stdout + r.stderr)
            return 1
        before = sessions()
        times = []
        for _ in range(args.repeats):
            took, again = danlu(Path(tmp))
            if again.returncode != 0 or "ended on" not in again.stdout:
                print(again.stdout + again.stderr)
                return 1
            times.append(took)
        new = sessions() - before
    median = statistics.median(times)
    print(f"first run (Ray, 4 trials, report): {first:.1f} s")
    print(f"its command again, {args.repeats} times: {' '.join(f'{t:.2f}' for t in times)} s; median {median:.2f} s "
          f"({median / first:.3f} of the first run)")
    print(f"Ray sessions created by the repeats: {len(new)}")
    ok = median < 5.0 and not new
    print("OK: under 5 s, no Ray" if ok else "NOT OK: the bar is under 5 s and no Ray session")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
