"""MLflow: one parent run per sweep, one nested child run per trial, all written from the driver.

Why not Ray's MLflowLoggerCallback: it logs each result synchronously on Tune's event loop (a sqlite
or HTTP round trip per report), keeps its trial->run map in memory only, and knows nothing of parent
runs or of ASHA's early stops. Here every MLflow call of a sweep goes through one writer thread, in
order: Tune's callbacks only enqueue, metrics/params/tags go out together with log_batch every
`tracking.flush_s` seconds and when a trial ends, and even the import of mlflow (~2.5 s) and the
parent run's creation overlap with Ray's start instead of delaying the first trial.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from orchestrator.compose import flatten

MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
LIMITS = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's limits per log_batch call


def resolve_uri(uri: str, cwd: str | None = None) -> str:
    """Make a relative sqlite path absolute, so trials and `mlflow ui` agree on the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(cwd or os.getcwd(), uri[len(prefix):]).resolve())
    return uri


def git_state(root: Path) -> tuple[str, str]:
    """(commit, dirty) of the project, or ("unknown", "unknown") outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    if commit.returncode:
        return "unknown", "unknown"
    return commit.stdout.strip(), str(bool(status.stdout.strip())).lower()


def params_of(tree: dict) -> dict[str, str]:
    return {k: str(v)[:MAX_PARAM_LEN] for k, v in flatten(tree) if k}


class Tracker:
    """A sweep's MLflow writer. Methods enqueue and return at once; `close()` waits until all is sent.

    With `storage` (the sweep's Ray directory) every operation is first appended to a journal there
    (mlflow_journal.jsonl) and the writer records how far MLflow has durably received it
    (mlflow_journal.offset). A driver that dies, or an MLflow server that is down, loses nothing: a
    restarted driver replays the journal from that offset, and an outage only delays the writer,
    which retries in order. Replays are idempotent: runs are found again through mlflow_runs.json
    (trial -> run), and a (metric, step) already in MLflow is never logged twice.
    """

    JOURNAL, OFFSET, RUNS = "mlflow_journal.jsonl", "mlflow_journal.offset", "mlflow_runs.json"

    def __init__(self, uri: str, experiment: str, flush_s: float = 2.0, storage: Path | None = None,
                 retry_s: float = 30.0):
        self.uri, self.experiment, self.flush_s, self.retry_s = uri, experiment, flush_s, retry_s
        # MLflow's HTTP client would retry each request for minutes on its own; the writer retries itself,
        # in order, and can then say at once that the server is unreachable.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        # a "View run ... at" pair of lines per finished run, on a server: danlu's summary says where to look
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.parent_id: str | None = None
        self.run_ids: dict[str, str] = {}  # trial_id -> run_id
        self.errors: list[str] = []
        self.storage = storage
        backlog: list[tuple[tuple, int]] = []
        if storage is not None:
            runs = storage / self.RUNS
            if runs.exists():
                saved = json.loads(runs.read_text())
                self.parent_id, self.run_ids = saved["parent"], dict(saved["runs"])
            backlog = self._unapplied()
            self._journal = open(storage / self.JOURNAL, "a", encoding="utf-8")
        self.resumed = self.parent_id is not None
        self.replayed_ops = len(backlog)
        self._applied: int | None = None  # journal offset that MLflow holds up to (as ops are applied)
        self._backlog_end = backlog[-1][1] if backlog else None  # ops up to here are an earlier driver's
        self.exp_id: str | None = None
        self._replaying = False
        self._last_step: dict[str, dict[str, int]] = {}  # run_id -> metric -> last step logged
        self._replayed: dict[str, set[int]] = {}  # run_id -> steps reported again (after a restore)
        self._ended: set[str] = set()  # runs this driver terminated
        self._synced: set[str] = set()  # runs whose MLflow contents this driver has read (_sync)
        self._closed = False
        self._outage_since: float | None = None
        self._opened = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        for op, end in backlog:  # what an earlier driver journaled but MLflow never confirmed: first
            self._queue.put((op, end))
        self._pending: dict[str, dict] = {}  # run_id -> {"metrics": [...], "params": {...}, "tags": {...}}
        self._params: dict[str, set[str]] = {}  # run_id -> param keys already sent (params are immutable)
        self._thread = threading.Thread(target=self._loop, name="danlu-mlflow", daemon=True)
        self._thread.start()

    def _unapplied(self) -> list[tuple[tuple, int]]:
        path, off = self.storage / self.JOURNAL, self.storage / self.OFFSET
        if not path.exists():
            return []
        start = int(off.read_text()) if off.exists() else 0
        out = []
        with open(path, "rb") as f:
            f.seek(start)
            for line in f:
                start += len(line)
                if line.endswith(b"\n"):  # a line cut short by a crash was never acknowledged: skip it
                    out.append((tuple(json.loads(line)), start))
        return out

    def _put(self, *op) -> None:
        if self._closed:  # after close() (e.g. a second Ctrl-C while closing): the journal is shut
            return
        end = None
        if self.storage is not None:
            self._journal.write(json.dumps(op, default=str) + "\n")
            self._journal.flush()  # in the OS's hands: survives this process being killed
            end = self._journal.tell()
        self._queue.put((op, end))

    # -- the sweep ------------------------------------------------------------------------------
    def open_sweep(self, name: str, config: dict, space: dict, root: Path, command: list[str],
                   tags: dict[str, str] | None = None) -> None:
        self._put("open", name, config, space, str(root), command, tags or {})

    def wait_parent(self, timeout: float = 120.0) -> str | None:
        self._opened.wait(timeout)
        return self.parent_id

    def close_sweep(self, metrics: dict[str, float], tags: dict[str, str], status: str) -> None:
        self._put("close_sweep", metrics, tags, status)

    def discard(self) -> None:
        """Delete every run of this sweep (a sweep stopped before it measured anything)."""
        self._put("discard")

    # -- trials ---------------------------------------------------------------------------------
    def trial_start(self, trial_id: str, name: str, params: dict[str, str], tags: dict[str, str]) -> None:
        self._put("start", trial_id, name, params, tags)

    def trial_meta(self, trial_id: str, meta: dict) -> None:
        self._put("meta", trial_id, meta)

    def trial_metrics(self, trial_id: str, step: int, ts_ms: int, values: dict[str, float]) -> None:
        self._put("metrics", trial_id, step, ts_ms, values)

    def trial_tags(self, trial_id: str, tags: dict) -> None:
        self._put("tags", trial_id, tags)

    def trial_end(self, trial_id: str, status: str, tags: dict, log_path: str | None, error_text: str | None):
        self._put("end", trial_id, status, tags, log_path, error_text)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 300.0) -> bool:
        """Send what is queued; False if MLflow did not take it all in time (it stays in the journal)."""
        self._closed = True
        if self._thread.is_alive():
            self._queue.put((("stop",), None))
            self._thread.join(timeout)
        if self.storage is not None:
            self._journal.close()
        return not self._thread.is_alive() and self._queue.empty()

    # -- the writer thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating tables..." notices
        self.mlf = MlflowClient(tracking_uri=self.uri)
        # connect (and create a new store's tables) while Ray starts
        self._retrying("connect", lambda: self.mlf.search_experiments(max_results=1))
        last = time.monotonic()
        while True:
            try:
                op, end = self._queue.get(timeout=self.flush_s)
            except queue.Empty:
                op, end = None, None
            if op is not None and op[0] == "stop":
                self._retrying("flush", self._flush_all)
                self._mark_applied()
                return
            if op is not None:
                self._replaying = end is not None and self._backlog_end is not None and end <= self._backlog_end
                self._retrying(op[0], lambda op=op: getattr(self, "_op_" + op[0])(*op[1:]))
                if op[0] == "open":
                    self._opened.set()
                if end is not None:
                    self._applied = end
            if time.monotonic() - last >= self.flush_s:
                self._retrying("flush", self._flush_all)
                self._mark_applied()
                last = time.monotonic()

    def _retrying(self, what: str, fn) -> None:
        """Run fn until MLflow takes it. A refusal (bad request) is reported and skipped; an unreachable
        or busy store is waited out, in order, with a warning while it lasts."""
        delay = 0.5
        while True:
            try:
                fn()
            except Exception as exc:
                if not _transient(exc):
                    self._warn(f"MLflow refused {what}: {exc}")
                    return
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    print(f"danlu: warning: MLflow at {self.uri} is unreachable ({type(exc).__name__}); the sweep "
                          f"goes on, and what it logs is kept{' in ' + str(self.storage / self.JOURNAL) if self.storage else ''}"
                          " until MLflow is back.", file=sys.stderr, flush=True)
                time.sleep(delay)
                delay = min(delay * 2, self.retry_s)
                continue
            if self._outage_since is not None:
                print(f"danlu: MLflow is reachable again after {time.monotonic() - self._outage_since:.0f} s; "
                      "sending what was kept.", file=sys.stderr, flush=True)
                self._outage_since = None
            return

    def _mark_applied(self) -> None:
        """Everything up to self._applied is in MLflow (no metrics left in buffers): record it."""
        if self.storage is None or self._applied is None or self._pending:
            return
        tmp = self.storage / (self.OFFSET + ".tmp")
        tmp.write_text(str(self._applied))
        os.replace(tmp, self.storage / self.OFFSET)

    def _warn(self, msg: str) -> None:
        self.errors.append(msg)
        print(f"danlu: warning: {msg}", file=sys.stderr, flush=True)

    def _experiment_id(self) -> str:
        exp = self.mlf.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.mlf.create_experiment(self.experiment)
        except Exception:  # created at the same moment by another sweep
            return self.mlf.get_experiment_by_name(self.experiment).experiment_id

    def _save_state(self) -> None:
        if self.storage is None:
            return
        tmp = self.storage / (self.RUNS + ".tmp")
        tmp.write_text(json.dumps({"parent": self.parent_id, "runs": self.run_ids}, indent=1))
        os.replace(tmp, self.storage / self.RUNS)  # atomic: a crash leaves the old map or the new one

    def _op_open(self, name, config, space, root, command, extra_tags=None):
        import yaml

        from orchestrator import __version__

        if self._replaying and self.parent_id is not None:  # an earlier driver's open, applied before it died
            return
        if self.parent_id is not None:  # this driver's own open of a sweep begun before: the same parent again
            parent = self.mlf.get_run(self.parent_id)
            self.exp_id = parent.info.experiment_id
            resumes = int(parent.data.tags.get("danlu.resumes", "0")) + 1
            self.mlf.update_run(self.parent_id, status="RUNNING")
            self._add(self.parent_id, tags={"danlu.resumes": resumes, f"danlu.command.resume{resumes}": " ".join(command),
                                            **(extra_tags or {})})
            self._flush(self.parent_id)
            return
        self.exp_id = self._experiment_id()
        commit, dirty = git_state(root)
        tags = {"mlflow.runName": name, "danlu.sweep": name, "danlu.kind": "sweep", "danlu.version": __version__,
                "danlu.command": " ".join(command), "mlflow.source.git.commit": commit, "danlu.git_dirty": dirty,
                **(extra_tags or {})}
        rid = self.mlf.create_run(self.exp_id, run_name=name, tags=tags).info.run_id
        self.parent_id = rid
        self._save_state()
        self._add(rid, params=params_of(config))
        self._flush(rid)
        self.mlf.log_text(rid, yaml.safe_dump(config, sort_keys=False), "config.yaml")
        self.mlf.log_text(rid, yaml.safe_dump(space, sort_keys=False), "space.yaml")

    def _op_close_sweep(self, metrics, tags, status):
        from mlflow.entities import Metric

        for run_id in self.run_ids.values():  # nothing of this sweep stays RUNNING
            if run_id not in self._ended and self.mlf.get_run(run_id).info.status == "RUNNING":
                self._flush(run_id)
                self.mlf.set_tag(run_id, "danlu.outcome", "killed")
                self.mlf.set_terminated(run_id, "KILLED")
        rid = self.parent_id
        now = int(time.time() * 1000)
        self._add(rid, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()], tags=tags)
        self._flush(rid)
        self.mlf.set_terminated(rid, status)

    def _op_discard(self):
        for rid in [*self.run_ids.values(), self.parent_id]:
            if rid:
                self._pending.pop(rid, None)
                self.mlf.delete_run(rid)

    def _op_start(self, trial_id, name, params, tags):
        rid = self.run_ids.get(trial_id)
        if rid is not None:  # a trial restored by a new driver: its run continues
            if not (self._replaying and self._terminal(rid)):  # a replayed start of a run that has ended since
                self._continue(rid)
            return
        tags = {"mlflow.parentRunId": self.parent_id, "mlflow.runName": name, **tags}
        if self.exp_id is None:  # a replayed start, before this driver's own open: the parent's experiment
            self.exp_id = self.mlf.get_run(self.parent_id).info.experiment_id
        rid = self.mlf.create_run(self.exp_id, run_name=name, tags=tags).info.run_id
        self.run_ids[trial_id] = rid
        self._save_state()
        self._add(rid, params=params)
        self._flush(rid)  # a trial's hyperparameters are visible in the UI from its start

    def _op_meta(self, trial_id, meta):
        import yaml

        rid = self.run_ids[trial_id]
        if meta.get("config"):
            self.mlf.log_text(rid, meta["config"], "config.yaml")
            self._add(rid, params=params_of(yaml.safe_load(meta["config"])))
        tags = {"danlu.node": meta.get("hostname", ""), "danlu.gpu_ids": meta.get("gpu_ids", ""),
                "danlu.cuda_visible_devices": meta.get("cuda_visible_devices", ""), "danlu.pid": meta.get("pid", "")}
        self._add(rid, tags=tags)

    def _continue(self, rid: str) -> None:
        """Reopen a run left by an earlier driver; what it already holds is never logged twice."""
        run = self._sync(rid)
        if run.info.status != "RUNNING":
            self.mlf.update_run(rid, status="RUNNING")

    def _sync(self, rid: str):
        """Learn what MLflow holds of a run this driver has not written to yet: its params, and each metric's
        last step (the journal may replay steps that an earlier driver sent but never confirmed)."""
        run = self.mlf.get_run(rid)
        self._params.setdefault(rid, set()).update(run.data.params)
        last = self._last_step.setdefault(rid, {})
        for key in run.data.metrics:
            steps = [m.step for m in self.mlf.get_metric_history(rid, key)]
            last[key] = max(max(steps, default=-1), last.get(key, -1))  # nor forget what is buffered here
        self._synced.add(rid)
        return run

    def _op_tags(self, trial_id, tags):
        self._add(self.run_ids[trial_id], tags=tags)

    def _op_metrics(self, trial_id, step, ts, values):
        from mlflow.entities import Metric

        rid = self.run_ids[trial_id]
        if self._replaying and rid not in self._synced:  # an earlier driver may have sent some of these
            self._sync(rid)
        last = self._last_step.setdefault(rid, {})
        fresh = {k: v for k, v in values.items() if step > last.get(k, float("-inf"))}
        if len(fresh) < len(values):  # a restored trial reporting steps it had reported before
            self._replayed.setdefault(rid, set()).add(step)
        for k in fresh:
            last[k] = step
        self._add(rid, metrics=[Metric(k, float(v), ts, step) for k, v in fresh.items()])

    def _terminal(self, rid: str) -> bool:
        return self.mlf.get_run(rid).info.status in ("FINISHED", "FAILED", "KILLED")

    def _op_end(self, trial_id, status, tags, log_path, error_text):
        rid = self.run_ids.get(trial_id)
        if rid is not None and self._replaying and self._terminal(rid):  # applied before the crash already
            self._ended.add(rid)
            return
        if rid is None:  # ended before it started (e.g. could not be scheduled): still one run for it
            self._op_start(trial_id, trial_id, {}, {"ray.trial_id": trial_id})
            rid = self.run_ids[trial_id]
        if self._replayed.get(rid):
            tags = {**tags, "danlu.steps_replayed": len(self._replayed[rid])}
        self._add(rid, tags=tags)
        self._flush(rid)
        self._ended.add(rid)
        if log_path and os.path.exists(log_path):
            with open(log_path, errors="replace") as f:
                self.mlf.log_text(rid, f.read(), "output.log")
        if error_text:
            self.mlf.log_text(rid, error_text, "error.txt")
        self.mlf.set_terminated(rid, status)

    def _add(self, rid, metrics=(), params=None, tags=None) -> None:
        buf = self._pending.setdefault(rid, {"metrics": [], "params": {}, "tags": {}})
        buf["metrics"].extend(metrics)
        sent = self._params.setdefault(rid, set())
        buf["params"].update({k: str(v) for k, v in (params or {}).items() if k not in sent})
        buf["tags"].update({k: str(v) for k, v in (tags or {}).items()})

    def _flush(self, rid) -> None:
        """Send a run's buffered metrics, params and tags; what was sent leaves the buffer chunk by chunk,
        so a retry after an outage sends only the rest."""
        from mlflow.entities import Param, RunTag

        buf = self._pending.get(rid)
        if not buf:
            return
        metrics, params, tags = buf["metrics"], list(buf["params"].items()), list(buf["tags"].items())
        while metrics or params or tags:
            m, p, t = metrics[: LIMITS["metrics"]], params[: LIMITS["params"]], tags[: LIMITS["tags"]]
            self.mlf.log_batch(rid, metrics=m, params=[Param(k, v) for k, v in p],
                               tags=[RunTag(k, v) for k, v in t], synchronous=True)
            metrics, params, tags = metrics[len(m):], params[len(p):], tags[len(t):]
            buf["metrics"], buf["params"], buf["tags"] = metrics, dict(params), dict(tags)
            self._params.setdefault(rid, set()).update(k for k, _ in p)
        del self._pending[rid]

    def _flush_all(self) -> None:
        for rid in list(self._pending):
            try:
                self._flush(rid)
            except Exception as exc:
                if _transient(exc):
                    raise  # kept, and retried in order
                self._warn(f"MLflow batch for run {rid} refused: {exc}")


def _transient(exc: Exception) -> bool:
    """An outage or a busy store (retry), as opposed to MLflow refusing the request itself (skip)."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        refused = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST",
                   "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED"}
        return exc.error_code not in refused
    return isinstance(exc, (OSError, ConnectionError, TimeoutError)) or "OperationalError" in type(exc).__name__
