#!/usr/bin/env python
"""Reading one sweep back from an MLflow store that holds many runs: how the reads grow with the store.

    .venv/bin/python scripts/bench/reads.py                          # stores of 10,000 and 20,000 runs, sqlite
    .venv/bin/python scripts/bench/reads.py --store server           # scripts/mlflow-server on PostgreSQL
    .venv/bin/python scripts/bench/reads.py --sizes 2000,4000 --sweep 500   # a quick look

The store holds sweeps of `--sweep` trials, each a parent run and one child run per trial with danlu's tags
(danlu.sweep, the parent's id), a trial's params and `--steps` steps of its metric. One such sweep is logged through
MLflow's own client into a scratch sqlite store (the rows MLflow writes, as danlu's sweeps write them); the store
measured is filled by copying those rows, once per sweep, with new run ids and the sweep's name, into its database
(the sqlite file, or the server's PostgreSQL database: through the server's REST API a run took ~1 s here, ~3 h for
10,000). At each size it times, for the sweep filled last (the newest) and the first (the oldest):
- `search_runs` of the sweep's children (MlflowStore.trial_runs: by the parent's tag, paged),
- `find_sweep` (the parent, by its tags),
- the curves of all its trials in bulk (MlflowStore.histories) against one `get_metric_history` per run,
- `danlu report` of the sweep, end to end (its process: import, reads, statistics, figures, HTML),
and prints how each grew from the smaller store to the larger, with the time at 50,000 runs extrapolated on a line
through the two sizes (said as such: not measured).

    .venv/bin/python scripts/bench/reads.py --widen STORE.db SWEEP --times 4 --output-dir DIR

widens a real sweep instead (one `scale.py --keep` ran): its child runs copied `--times` times inside the sqlite store
(new run ids, trial ids and configuration ids, a new value of each swept key: the shape of a sweep that many times as
large, every tag, param and step as danlu wrote them), then times `danlu report` of it twice.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from scale import start_server, stop_server  # noqa: E402  (one server recipe for the benches)


def fill(uri: str, sweeps: range, trials: int, steps: int) -> None:
    """Sweeps of `trials` child runs each, logged through MLflow's client as danlu logs them (the template)."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("danlu")
    exp_id = exp.experiment_id if exp else client.create_experiment("danlu")
    for s in sweeps:
        name = f"sweep-{s:03d}"
        parent = client.create_run(exp_id, run_name=name, tags={"danlu.sweep": name, "danlu.kind": "sweep"})
        pid = parent.info.run_id
        client.log_batch(pid, params=[Param("sweep.metric", "score"), Param("sweep.mode", "max"),
                                      Param("job.name", "sleep")])
        for t in range(trials):
            tid = f"t{t:05d}"
            run = client.create_run(exp_id, run_name=f"{tid} lr=0.{t}", tags={
                "mlflow.parentRunId": pid, "danlu.sweep": name, "danlu.trial": tid, "ray.trial_id": tid,
                "danlu.config_id": f"c{t}", "danlu.seed": "0", "danlu.outcome": "completed"})
            client.log_batch(run.info.run_id, metrics=[Metric("score", (t % 97) / 97 + i / 100, 1000 + i, i)
                                                       for i in range(1, steps + 1)],
                             params=[Param("lr", f"0.{t}"), Param("seed", "0")],
                             tags=[RunTag("danlu.stopped_early", "false")])
            client.set_terminated(run.info.run_id, "FINISHED")
        client.set_terminated(pid, "FINISHED")


TABLES = ("runs", "tags", "params", "metrics", "latest_metrics")  # a run's rows; the experiment is the store's own


def copy_sweeps(template: Path, db, exp_id: int, sweeps: range) -> None:
    """Copy the template's sweep-000 (parent and children) into `db` (a DB-API connection to an MLflow database of the
    same schema: sqlite or psycopg2) once per sweep in `sweeps`: new run ids, the sweep's name in its tags and the
    parent's name, the children pointing at the new parent, the store's experiment."""
    import sqlite3
    import uuid

    src = sqlite3.connect(template)
    ids = [r for (r,) in src.execute("select run_uuid from tags where key = 'danlu.sweep' and value = 'sweep-000'")]
    rows = {}
    for t in TABLES:
        cur = src.execute(f"select * from {t} where run_uuid in ({','.join('?' * len(ids))})", ids)
        rows[t] = ([d[0] for d in cur.description], cur.fetchall())
    src.close()
    pg = not isinstance(db, sqlite3.Connection)
    if pg:  # sqlite keeps booleans as 0/1
        from psycopg2.extras import execute_values

        with db.cursor() as cur:
            cur.execute("select table_name, column_name from information_schema.columns where data_type = 'boolean'")
            booleans = set(cur.fetchall())
    for s in sweeps:
        name, new = f"sweep-{s:03d}", {old: uuid.uuid4().hex for old in ids}
        cur = db.cursor()
        for t, (names, got) in rows.items():
            out = []
            for row in got:
                d = dict(zip(names, row, strict=True))
                d["run_uuid"] = new[d["run_uuid"]]
                if t == "runs":
                    d["experiment_id"], d["name"] = exp_id, d["name"].replace("sweep-000", name)
                    d["artifact_uri"] = d["artifact_uri"].replace(row[names.index("run_uuid")], d["run_uuid"])
                elif t == "tags" and d["key"] == "mlflow.parentRunId":
                    d["value"] = new[d["value"]]
                elif t == "tags":
                    d["value"] = d["value"].replace("sweep-000", name)
                out.append(tuple(bool(d[n]) if pg and (t, n) in booleans else d[n] for n in names))
            cols = ",".join(names)
            if pg:
                execute_values(cur, f"insert into {t} ({cols}) values %s", out, page_size=2000)
            else:
                cur.executemany(f"insert into {t} ({cols}) values ({','.join('?' * len(names))})", out)
        db.commit()


def open_database(uri: str, pg: str | None):
    """(a connection to the store's database, the id of its `danlu` experiment, made through MLflow's client)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("danlu")
    exp_id = int(exp.experiment_id if exp else client.create_experiment("danlu"))
    if pg:
        import psycopg2

        return psycopg2.connect(pg), exp_id
    import sqlite3

    return sqlite3.connect(uri.removeprefix("sqlite:///")), exp_id


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(uri: str, name: str, trials: int, tmp: Path) -> dict[str, float]:
    from orchestrator.tracking.mlflow_store import MlflowStore

    store = MlflowStore(uri, "danlu")
    find_s, parent = timed(lambda: store.find_sweep(name))
    search_s, runs = timed(lambda: store.trial_runs(parent.run_id, parent.experiment_id))
    assert len(runs) == trials, (name, len(runs))
    ids = [r.run_id for r in runs]
    bulk_s, curves = timed(lambda: store.histories(ids, "score"))
    one_s, _ = timed(lambda: [store.history(rid, "score") for rid in ids[:200]])
    assert all(curves[rid] for rid in ids)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "orchestrator", "report", name, f"output_dir={tmp}/out",
                        f"tracking.uri={uri}"], cwd=ROOT, capture_output=True, text=True)
    report_s = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"danlu report {name} exited {r.returncode}:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return {"find_sweep": find_s, "search_runs": search_s, "histories": bulk_s,
            "history x1 per run": one_s * trials / min(200, trials), "danlu report": report_s}


def widen(db: Path, parent_id: str, times: int, swept: list[str]) -> int:
    """Copy the child runs of `parent_id` `times` times in a sqlite MLflow store (see the module's doc)."""
    import random
    import sqlite3
    import uuid

    con = sqlite3.connect(db)
    kids = [r for (r,) in con.execute("select run_uuid from tags where key = 'mlflow.parentRunId' and value = ?",
                                      (parent_id,))]
    tables = ("runs", "tags", "params", "metrics", "latest_metrics")
    cols = {t: [r[1] for r in con.execute(f"pragma table_info({t})")] for t in tables}
    renamed = ("danlu.config_id", "danlu.trial_id", "danlu.trial", "mlflow.runName")
    rnd = random.Random(0)
    for k in range(1, times + 1):
        for kid in kids:
            new = uuid.uuid4().hex
            drawn = {key: repr(rnd.random()) for key in swept}
            for t, names in cols.items():
                out = []
                for row in con.execute(f"select {','.join(names)} from {t} where run_uuid = ?", (kid,)):
                    d = dict(zip(names, row, strict=True), run_uuid=new)
                    if t == "runs":
                        d["name"] = f"{d['name']}c{k}"
                    elif t == "tags" and d["key"] in renamed:
                        d["value"] = f"{d['value']}c{k}"
                    elif t == "params" and d["key"] in drawn:
                        d["value"] = drawn[d["key"]]
                    out.append(tuple(d[n] for n in names))
                con.executemany(f"insert into {t} ({','.join(names)}) values ({','.join('?' * len(names))})", out)
        con.commit()
    con.close()
    return len(kids) * (times + 1)


def _bad(message: str) -> int:
    print(f"reads.py: error: {message}", file=sys.stderr)
    return 2


def widened(args) -> int:
    from orchestrator.tracking.mlflow_store import MlflowStore

    db, name = Path(args.widen[0]).resolve(), args.widen[1]
    if not db.is_file():  # MLflow would make a new, empty store there
        return _bad(f"--widen {args.widen[0]}: no such sqlite file (give the store a `scale.py --keep` kept)")
    if args.times < 1:
        return _bad(f"--times {args.times}: an integer >= 1 (copies of the sweep's runs)")
    uri = f"sqlite:///{db}"
    store = MlflowStore(uri, "danlu")
    if store.find_sweep(name) is None:
        return _bad(f"--widen {args.widen[0]} {name}: no sweep of that name in that store")
    record = store.read_sweep(name)
    parent, space = record.parent, sorted((record.space or {}).get("space") or {})
    t = time.perf_counter()
    total = widen(db, parent.run_id, args.times, space)
    print(f"sweep {name}: {total} trial runs after copying ({args.times} copies, swept {space}; "
          f"{time.perf_counter() - t:.0f} s)", flush=True)
    for attempt in (1, 2):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "orchestrator", "report", name, f"output_dir={args.output_dir}",
                            f"tracking.uri={uri}"], cwd=ROOT, capture_output=True, text=True)
        print(f"  danlu report ({attempt}): {time.perf_counter() - t:.1f} s, exit {r.returncode}", flush=True)
        if r.returncode != 0:
            print(r.stdout[-2000:] + r.stderr[-2000:])
            return 1
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,20000", help="runs in the store, comma-separated, ascending")
    ap.add_argument("--sweep", type=int, default=1000, help="trials per sweep")
    ap.add_argument("--steps", type=int, default=10, help="steps of the metric per trial")
    ap.add_argument("--store", choices=("sqlite", "server"), default="sqlite")
    ap.add_argument("--widen", nargs=2, metavar=("STORE_DB", "SWEEP"), help="widen a real sweep (see above)")
    ap.add_argument("--times", type=int, default=4, help="copies of the sweep's runs (--widen)")
    ap.add_argument("--output-dir", default="outputs", help="the sweep's output_dir (--widen: where its report goes)")
    args = ap.parse_args()
    if args.widen:
        return widened(args)
    sizes = [int(x) for x in args.sizes.split(",")]
    results: dict[int, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="danlu-reads-") as tmpdir:
        tmp = Path(tmpdir)
        server = start_server(tmp) if args.store == "server" else None
        uri = server[1] if server else f"sqlite:///{tmp}/mlflow.db"
        try:
            t = time.perf_counter()
            fill(f"sqlite:///{tmp}/template.db", range(1), args.sweep, args.steps)
            print(f"one sweep of {args.sweep} trials logged through MLflow's client (sqlite): "
                  f"{time.perf_counter() - t:.0f} s", flush=True)
            db, exp_id = open_database(uri, server[2] if server else None)
            filled = 0
            for size in sizes:
                per = args.sweep + 1
                sweeps = range(filled // per, max(filled // per + 1, size // per))
                t = time.perf_counter()
                copy_sweeps(tmp / "template.db", db, exp_id, sweeps)
                filled = (sweeps.stop) * per
                print(f"store of {filled} runs ({sweeps.stop} sweeps of {args.sweep} trials; copied in "
                      f"{time.perf_counter() - t:.0f} s)", flush=True)
                results[filled] = {}
                for which, name in (("newest", f"sweep-{sweeps.stop - 1:03d}"), ("oldest", "sweep-000")):
                    results[filled][which] = got = measure(uri, name, args.sweep, tmp)
                    print(f"  the {which} sweep ({args.sweep} trials): " +
                          ", ".join(f"{k} {v:.2f} s" for k, v in got.items()), flush=True)
        finally:
            if "db" in locals():
                db.close()
            if server:
                stop_server(server[0], server[2])
    if len(results) >= 2:
        (a, ra), (b, rb) = sorted(results.items())[:2]
        print(f"from {a} to {b} runs in the store ({args.store}), and on a line through them to 50,000 (extrapolated, "
              "not measured):")
        for which in ("newest", "oldest"):
            for key in ra[which]:
                x, y = ra[which][key], rb[which][key]
                at = max(y, y + (y - x) / (b - a) * (50_000 - b))  # a drop between two sizes is noise: flat
                print(f"  {which:6s} {key:20s} {x:6.2f} s -> {y:6.2f} s ({y / x if x else float('nan'):.2f}x); "
                      f"at 50,000 ~{at:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
