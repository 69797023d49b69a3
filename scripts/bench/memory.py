#!/usr/bin/env python
"""What grows in danlu's driver with every finished trial, by tracemalloc.

    .venv/bin/python scripts/bench/memory.py                       # 400 trials x 3 reports on 8 slots
    .venv/bin/python scripts/bench/memory.py --trials 1000 --top 30

Runs `danlu sweep job=sleep sweep=sleep scheduler=fifo` in this process (an embedded Ray, a sqlite store in a temp
folder) with tracemalloc on (8 frames), snapshots the Python heap when a quarter and when three quarters of the
trials have finished (from the sweep's progress.json), and prints the allocations that grew between the two, per
finished trial, grouped by the innermost line of danlu, Tune or MLflow that made them. tracemalloc sees Python's own allocations only (not Ray's C++ core, nor memory freed but kept by the
allocator): scale.py's RSS slope is the figure that counts; this says where to look.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

OURS = ("orchestrator/", "ray/tune/", "ray/train/", "mlflow/", "sqlalchemy/")


def where(tb: tracemalloc.Traceback) -> str:
    """The innermost frame in danlu, Tune or MLflow (else the innermost)."""
    for frame in reversed(tb):  # tracemalloc lists the oldest call first
        if any(k in frame.filename for k in OURS):
            return f"{frame.filename.split('site-packages/')[-1].split(str(ROOT) + '/')[-1]}:{frame.lineno}"
    return f"{tb[-1].filename}:{tb[-1].lineno}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--frames", type=int, default=3, help="show where the largest N groups were allocated")
    args = ap.parse_args()
    from orchestrator.config.compose import find_config_dir
    from orchestrator.run.sweep import run_sweep

    shots: dict[int, tracemalloc.Snapshot] = {}
    with tempfile.TemporaryDirectory(prefix="danlu-memory-") as tmp:
        name = "memory"
        progress = Path(tmp, "outputs", name, "danlu", "progress.json")
        marks = [args.trials // 4, 3 * args.trials // 4]
        done_at: dict[int, int] = {}

        def watch():
            while len(shots) < len(marks):
                try:
                    done = int(json.loads(progress.read_text())["done"])
                except (OSError, ValueError, KeyError):
                    done = 0
                for m in marks:
                    if m not in shots and done >= m:
                        done_at[m] = done
                        shots[m] = tracemalloc.take_snapshot()
                time.sleep(0.5)

        tracemalloc.start(8)
        threading.Thread(target=watch, daemon=True).start()
        overrides = ["job=sleep", "sweep=sleep", "scheduler=fifo", f"sweep.num_samples={args.trials}",
                     f"epochs={args.epochs}", "epoch_s=0.05", f"cluster.num_cpus={args.slots}", f"sweep.name={name}",
                     f"output_dir={tmp}/outputs", f"tracking.uri=sqlite:///{tmp}/mlflow.db", "progress.every_s=1"]
        with open(Path(tmp, "out.txt"), "w") as quiet:
            code = run_sweep(overrides, find_config_dir(str(ROOT / "conf")), stream=quiet, preflight=False)
        tracemalloc.stop()
    if len(shots) < 2:
        print(f"the sweep ended (exit {code}) before both snapshots were taken")
        return 1
    a, b = marks
    n = done_at[b] - done_at[a]
    grown: dict[str, int] = {}
    example: dict[str, tuple[int, tracemalloc.Traceback]] = {}
    for stat in shots[b].compare_to(shots[a], "traceback"):
        key = where(stat.traceback)
        grown[key] = grown.get(key, 0) + stat.size_diff
        if stat.size_diff > example.get(key, (0, None))[0]:
            example[key] = (stat.size_diff, stat.traceback)
    total = sum(grown.values())
    print(f"{args.trials} trials x {args.epochs} reports on {args.slots} slots (exit {code}): the Python heap grew "
          f"{total / 2**20:.1f} MB over {n} finished trials ({done_at[a]} -> {done_at[b]}), "
          f"{total / max(1, n) / 1024:.1f} KB per trial; the largest, per trial:")
    for i, (key, size) in enumerate(sorted(grown.items(), key=lambda kv: -kv[1])[:args.top]):
        print(f"  {size / max(1, n) / 1024:7.2f} KB  {key}")
        if i < args.frames and key in example:  # the largest allocation of the group, where it was made
            for frame in reversed(example[key][1]):
                print(f"              {frame.filename.split('site-packages/')[-1]}:{frame.lineno}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
