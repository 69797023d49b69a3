#!/usr/bin/env python
"""Many trials in one sweep: danlu against plain Ray Tune side by side, with the driver's memory and CPU.

    .venv/bin/python scripts/bench/scale.py                                  # 1,000 and 10,000 trials, sqlite
    .venv/bin/python scripts/bench/scale.py --trials 1000 --store server     # PostgreSQL via scripts/mlflow-server
    .venv/bin/python scripts/bench/scale.py --trials 200 --plain-max 200     # a quick look

Each side runs the same work in a process of its own (the driver), on an embedded Ray of `--slots` logical CPUs
started by that process: N trials of jobs/sleep.py's shape, each `--epochs` reports after `--epoch-s` of sleep,
FIFO so that every trial does all of its work.
- plain Tune: Tuner(reuse_actors=True) with Tune's defaults (its CSV/JSON/TensorBoard loggers on), no MLflow;
  run up to `--plain-max` trials only (it took ~800 s for 1,000 here), which the output says.
- danlu:      `python -m orchestrator sweep job=sleep sweep=sleep scheduler=fifo ... --no-preflight`, every step
  logged to MLflow (a sqlite file, or `--store server`: scripts/mlflow-server on PostgreSQL at 127.0.0.1:5432).
While a driver runs, this process samples every `--every` seconds, from /proc, the driver's resident memory and
its CPU seconds (user + system, that process alone: not Ray's raylet, GCS or trial workers), and how many trials
have finished and are running (plain Tune: a callback's file; danlu: its progress.json). It prints, per side and
size: wall time and its ratio to the ideal (work / slots), the driver's CPU seconds, its peak RSS and the RSS
slope in MB per 1,000 finished trials (least squares over the samples from a quarter of the trials finished to
the last: not the report danlu makes after them, whose libraries raise the peak),
the trials running on average against the slots, how busy the machine's CPUs were (all processes: on a machine
with few cores, starting and feeding 32 workers takes them all), for danlu the MLflow rows stored against expected
(runs; metric rows) and the time of `danlu report`; and, per trial done, the CPU of each side's whole process
tree by kind (TreeCpu: the driver, Ray's raylet and GCS, the trial workers, Ray's other processes). The samples go to OUT/scale.csv, the curves to
OUT/scale-rss.png, each driver's output to OUT/<side>-<trials>.log.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def plain_driver(trials: int, epochs: int, epoch_s: float, slots: int, storage: str, state: str) -> None:
    """The plain-Tune side, run as this script's child (`--plain-driver`): Tune's own loop, a state file for the
    sampler."""
    import logging

    import ray
    from ray import tune

    def work(config):
        for _ in range(epochs):
            time.sleep(epoch_s)
            tune.report({"score": config["x"]})

    class State(tune.Callback):
        def __init__(self):
            self.last = 0.0

        def on_step_end(self, iteration, trials, **info):
            if time.monotonic() - self.last >= 1.0:
                self.last = time.monotonic()
                write_state(state, sum(t.status in ("TERMINATED", "ERROR") for t in trials),
                            sum(t.status == "RUNNING" for t in trials))

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(address="local", num_cpus=slots, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    tuner = tune.Tuner(work, param_space={"x": tune.uniform(0, 1)},
                       tune_config=tune.TuneConfig(num_samples=trials, metric="score", mode="max", reuse_actors=True),
                       run_config=tune.RunConfig(name="plain", storage_path=storage, verbose=0, callbacks=[State()]))
    tuner.fit()
    write_state(state, trials, 0)
    ray.shutdown()


def write_state(path: str, done: int, running: int) -> None:
    with open(f"{path}.tmp", "w") as f:
        json.dump({"done": done, "running": running}, f)
    os.replace(f"{path}.tmp", path)


def read_state(path: Path) -> tuple[int, int] | None:
    try:
        s = json.loads(path.read_text())
        return int(s["done"]), int(s["running"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def proc_sample(pid: int) -> tuple[float, float] | None:
    """The process's resident memory (MB) and CPU seconds (user + system), from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return None
    return rss, (int(stat[11]) + int(stat[12])) / TICK  # utime, stime (fields 14, 15 of stat)


KINDS = ("driver", "raylet", "GCS", "trial workers", "Ray's other processes")


class TreeCpu:
    """CPU seconds (user + system) of the driver's process tree (the driver, the Ray it started, Ray's workers) by
    kind, summed over every process seen in it at a sample: each one's own CPU when last seen (Ray's raylet does not
    wait for the workers it ends, so their CPU never reaches its cutime). A process that ended between two samples
    is counted up to the last sample that saw it; one that lived less than a sampling interval may be missed."""

    def __init__(self, root: int):
        self.root, self.seen = root, {}  # pid -> (kind, CPU seconds when last seen)

    def sample(self) -> None:
        parent, info = {}, {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                raw = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            f = raw.rsplit(")", 1)[1].split()  # state, ppid, ..., utime [11], stime [12]
            parent[int(d)] = int(f[1])
            info[int(d)] = (raw[raw.index("(") + 1:raw.rindex(")")], (int(f[11]) + int(f[12])) / TICK)
        kids: dict[int, list[int]] = {}
        for pid, ppid in parent.items():
            kids.setdefault(ppid, []).append(pid)
        stack = [self.root]
        while stack:
            pid = stack.pop()
            if pid not in info:
                continue
            comm, own = info[pid]
            kind = self.seen.get(pid, ("",))[0]
            if kind in ("", "Ray's other processes"):  # a new worker is "python" until Ray names it ray::...
                kind = ("driver" if pid == self.root else "raylet" if comm == "raylet" else "GCS"
                        if comm == "gcs_server" else "trial workers" if comm.startswith("ray::")
                        and not comm.startswith(("ray::Dashboard", "ray::RuntimeEnv")) else "Ray's other processes")
            self.seen[pid] = (kind, own)
            stack.extend(kids.get(pid, []))

    def by_kind(self) -> dict[str, float]:
        out = dict.fromkeys(KINDS, 0.0)
        for kind, own in self.seen.values():
            out[kind] += own
        return out


def machine_cpu() -> tuple[int, int]:
    """(busy, total) clock ticks of all of the machine's CPUs so far, from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


def run_side(side: str, cmd: list[str], state: Path, n: int, every: float, log: Path, rows, deadline: float) -> dict:
    """Run one driver, sampling it until it ends (each sample written to `rows`, a csv writer, at once); its wall,
    CPU, memory and occupancy, and how busy the machine's CPUs were meanwhile (driver, Ray's processes and the
    trials' workers together). Past `deadline` seconds the driver is interrupted (SIGINT: the sweep stops as on
    Ctrl-C) and what it did so far is measured: `done` says how many trials finished."""
    t0, m0 = time.monotonic(), machine_cpu()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    samples, cpu, stopped, tree = [], 0.0, None, TreeCpu(proc.pid)
    try:
        while proc.poll() is None:
            got, counts = proc_sample(proc.pid), read_state(state)
            tree.sample()
            if got is not None:
                cpu = got[1]
                done, running = counts or (0, 0)
                samples.append((time.monotonic() - t0, got[0], got[1], done, running))
                rows.writerow([side, n, *(round(v, 3) for v in samples[-1])])
            if stopped is None and time.monotonic() - t0 > deadline:
                stopped = samples[-1][3] if samples else 0
                os.kill(proc.pid, signal.SIGINT)
            time.sleep(every)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    wall, m1 = time.monotonic() - t0, machine_cpu()
    if proc.returncode != 0 and stopped is None:
        raise SystemExit(f"{side} at {n} trials exited {proc.returncode}; its output: {log}")
    end = n if stopped is None else stopped  # the samples after it: the report, or the stop
    late = [(s[3], s[1]) for s in samples if n / 4 <= s[3] < end]
    busy = [s[4] for s in samples if 0 < s[3] < end]
    return {"wall": wall, "cpu": cpu, "done": end, "stopped": stopped is not None,
            "peak": max((s[1] for s in samples), default=0.0),
            "peak_trials": max((s[1] for s in samples if s[3] < end), default=0.0),
            "slope": slope(late) * 1000 if len(late) >= 3 else None,
            "running": sum(busy) / len(busy) if busy else None,
            "machine": (m1[0] - m0[0]) / max(1, m1[1] - m0[1]), "tree": tree.by_kind()}


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y on x (MB per finished trial)."""
    mx, my = sum(x for x, _ in points) / len(points), sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def stored(uri: str, name: str, pg: str | None) -> tuple[int, int]:
    """(child runs, metric rows) of the sweep, counted in the store's own database (no per-run call)."""
    query = ("select count(distinct r.run_uuid), count(m.step) from runs r join tags t on t.run_uuid = r.run_uuid "
             "and t.key = 'danlu.sweep' and t.value = %s left join metrics m on m.run_uuid = r.run_uuid and m.key = 'score' "
             "where r.run_uuid in (select run_uuid from tags where key = 'mlflow.parentRunId')")
    if pg:
        import psycopg2

        conn = psycopg2.connect(pg)
    else:
        import sqlite3

        conn = sqlite3.connect(uri.removeprefix("sqlite:///"))
        query = query.replace("%s", "?")
    try:
        cur = conn.cursor()
        cur.execute(query, (name,))
        runs, rows = cur.fetchone()
        return int(runs), int(rows)
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path) -> tuple[subprocess.Popen, str, str]:
    """scripts/mlflow-server on a database of its own (dropped by stop_server)."""
    import urllib.request

    db, port = f"danlu_scale_{secrets.token_hex(4)}", free_port()
    pg = f"postgresql://postgres@127.0.0.1:5432/{db}"
    proc = subprocess.Popen([str(ROOT / "scripts" / "mlflow-server"), "--port", str(port), "--backend-store-uri", pg,
                             "--artifacts-destination", str(tmp / "artifacts")],
                            env={**os.environ, "PYTHON": sys.executable}, stdout=open(tmp / "server.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    for _ in range(600):  # ~2 min on a machine a sweep keeps busy (MLflow's four workers import it)
        try:
            if urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200:
                return proc, uri, pg
        except OSError:
            if proc.poll() is not None:
                break
        time.sleep(0.5)
    stop_server(proc, pg)
    raise SystemExit(f"scripts/mlflow-server did not come up: {tmp / 'server.log'}")


def stop_server(proc: subprocess.Popen, pg: str) -> None:
    import psycopg2

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:  # the server's own stop is slow on a busy machine
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    conn = psycopg2.connect(pg.rsplit("/", 1)[0] + "/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{pg.rsplit("/", 1)[1]}" WITH (FORCE)')
    conn.close()


def plot(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key in sorted({(r[0], r[1]) for r in rows}):
        pts = [(r[5], r[3]) for r in rows if (r[0], r[1]) == key]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"{key[0]}, {key[1]} trials")
    ax.set_xlabel("trials finished")
    ax.set_ylabel("driver RSS (MB)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", default="1000,10000", help="sizes, comma-separated")
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--epoch-s", type=float, default=0.1)
    ap.add_argument("--plain-max", type=int, default=1000, help="plain Tune only up to this many trials")
    ap.add_argument("--store", choices=("sqlite", "server"), default="sqlite")
    ap.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    ap.add_argument("--out", default="scale-out", help="folder for scale.csv and scale-rss.png")
    ap.add_argument("--keep", action="store_true", help="keep the sweeps' folders and store (say where)")
    ap.add_argument("--deadline-s", type=float, default=float("inf"),
                    help="interrupt a driver after this many seconds and measure what it did (a partial run, said)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for the danlu side only (repeatable), e.g. --set checkpoint_state=true: "
                         "the sleep job passes a checkpoint with each report (plain Tune's side does not)")
    ap.add_argument("--plain-driver", nargs=3, metavar=("TRIALS", "STORAGE", "STATE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain_driver:
        plain_driver(int(args.plain_driver[0]), args.epochs, args.epoch_s, args.slots, args.plain_driver[1],
                     args.plain_driver[2])
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    sheet = open(out / "scale.csv", "w", newline="", buffering=1)
    rows = csv.writer(sheet)
    rows.writerow(["side", "trials", "t_s", "rss_mb", "cpu_s", "done", "running"])
    with sheet, tempfile.TemporaryDirectory(prefix="danlu-scale-") as tmpdir:
        tmp = Path(tmpdir)
        if args.keep:  # the sweeps' storage and MLflow store stay, for a look or another measure (reads.py --widen)
            tmp = Path(tempfile.mkdtemp(prefix="danlu-scale-kept-"))
            print(f"kept: {tmp} (sqlite store {tmp / 'mlflow.db'})", flush=True)
        server = start_server(tmp) if args.store == "server" else None
        try:
            for n in [int(x) for x in args.trials.split(",")]:
                ideal = n * args.epochs * args.epoch_s / args.slots
                results, first = {}, len(lines)
                if n <= args.plain_max:
                    state = tmp / f"plain-{n}.json"
                    results["plain Tune"] = run_side(
                        "plain Tune", [sys.executable, __file__, "--slots", str(args.slots), "--epochs",
                                       str(args.epochs), "--epoch-s", str(args.epoch_s), "--plain-driver", str(n),
                                       str(tmp / f"plain-{n}"), str(state)],
                        state, n, args.every, out / f"plain-{n}.log", rows, args.deadline_s)
                name = f"scale-{n}"
                uri = server[1] if server else f"sqlite:///{tmp}/mlflow.db"
                track = ["tracking=server"] if server else []
                state = tmp / f"danlu-{n}" / name / "danlu" / "progress.json"
                results["danlu"] = run_side(
                    "danlu", [sys.executable, "-m", "orchestrator", "sweep", "--no-preflight", "job=sleep",
                              "sweep=sleep", "scheduler=fifo", f"sweep.num_samples={n}", f"epochs={args.epochs}",
                              f"epoch_s={args.epoch_s}", f"cluster.num_cpus={args.slots}", f"sweep.name={name}",
                              f"output_dir={tmp}/danlu-{n}", *track, f"tracking.uri={uri}", "progress.every_s=2",
                              *args.set],
                    state, n, args.every, out / f"danlu-{n}.log", rows, args.deadline_s)
                runs, metric_rows = stored(uri, name, server[2] if server else None)
                t = time.monotonic()
                r = subprocess.run([sys.executable, "-m", "orchestrator", "report", name, f"output_dir={tmp}/danlu-{n}",
                                    *track, f"tracking.uri={uri}"], cwd=ROOT, capture_output=True, text=True)
                report_s = time.monotonic() - t
                lines.append(f"{n} trials x {args.epochs * args.epoch_s:g} s on {args.slots} slots ({args.store}): "
                             f"ideal {ideal:.0f} s" + (f"; danlu with {' '.join(args.set)}" if args.set else ""))
                for side, res in results.items():
                    slope_txt = f"{res['slope']:+.1f} MB/1k trials" if res["slope"] is not None else "slope -"
                    busy = f"{res['running']:.1f}" if res["running"] is not None else "-"
                    if res["stopped"]:
                        lines.append(f"  {side}: STOPPED after {args.deadline_s:.0f} s (--deadline-s) with {res['done']} "
                                     f"of {n} trials done: the numbers below are of those, not of {n}")
                    lines.append(f"  {side:10s} wall {res['wall']:7.1f} s ({res['wall'] / ideal:4.2f}x ideal)  "
                                 f"driver CPU {res['cpu']:7.1f} s  peak RSS {res['peak_trials']:4.0f} MB while trials ran, "
                                 f"{res['peak']:4.0f} MB in all  {slope_txt}  "
                                 f"running {busy} of {args.slots}  machine CPU {res['machine']:.0%} busy of "
                                 f"{os.cpu_count()} cores")
                for side, res in results.items():
                    done_n = max(1, res["done"])
                    lines.append(f"  {side:10s} CPU of its process tree, per trial done: " + ", ".join(
                        f"{k} {v * 1000 / done_n:.0f} ms" for k, v in res["tree"].items()) +
                        f"; in all {sum(res['tree'].values()) * 1000 / done_n:.0f} ms")
                if "plain Tune" in results:
                    p, d = results["plain Tune"], results["danlu"]
                    lines.append(f"  danlu / plain Tune: wall {d['wall'] / p['wall']:.2f}, driver CPU "
                                 f"{d['cpu'] / p['cpu']:.2f}, peak RSS {d['peak'] / p['peak']:.2f}")
                else:
                    lines.append(f"  plain Tune not run at {n} trials (--plain-max {args.plain_max})")
                done = results["danlu"]["done"]  # n, or those done when it was stopped
                cut = " and those it stopped mid-way (KILLED)" if results["danlu"]["stopped"] else ""
                lines.append(f"  MLflow: {runs} child runs, {metric_rows} metric rows, for {done} trials done "
                             f"({done * args.epochs} steps){cut}; "
                             f"danlu report {report_s:.1f} s (exit {r.returncode})")
                print("\n".join(lines[first:]), flush=True)
        finally:
            if server:
                stop_server(server[0], server[2])
    with open(out / "scale.csv", newline="") as f:
        plot([[r[0], int(r[1]), *map(float, r[2:])] for r in list(csv.reader(f))[1:]], out / "scale-rss.png")
    print(f"samples: {out / 'scale.csv'}; RSS curves: {out / 'scale-rss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
