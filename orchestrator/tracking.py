"""MLflow: one parent run per sweep, one nested child run per trial, all written from the driver.

Why not Ray's MLflowLoggerCallback: it logs each result synchronously on Tune's event loop (a sqlite
or HTTP round trip per report), keeps its trial->run map in memory only, and knows nothing of parent
runs or of ASHA's early stops. Here every MLflow call of a sweep goes through one writer thread, in
order: Tune's callbacks only enqueue, metrics/params/tags go out together with log_batch every
`tracking.flush_s` seconds and when a trial ends, and even the import of mlflow (~2.5 s) and the
parent run's creation overlap with Ray's start instead of delaying the first trial.
"""

from __future__ import annotations

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
    """A sweep's MLflow writer. Methods enqueue and return at once; `close()` waits until all is sent."""

    def __init__(self, uri: str, experiment: str, flush_s: float = 2.0):
        self.uri, self.experiment, self.flush_s = uri, experiment, flush_s
        self.parent_id: str | None = None
        self.run_ids: dict[str, str] = {}  # trial_id -> run_id
        self.errors: list[str] = []
        self._opened = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._pending: dict[str, dict] = {}  # run_id -> {"metrics": [...], "params": {...}, "tags": {...}}
        self._params: dict[str, set[str]] = {}  # run_id -> param keys already sent (params are immutable)
        self._thread = threading.Thread(target=self._loop, name="danlu-mlflow", daemon=True)
        self._thread.start()

    # -- the sweep ------------------------------------------------------------------------------
    def open_sweep(self, name: str, config: dict, space: dict, root: Path, command: list[str]) -> None:
        self._queue.put(("open", name, config, space, root, command))

    def wait_parent(self, timeout: float = 120.0) -> str | None:
        self._opened.wait(timeout)
        return self.parent_id

    def close_sweep(self, metrics: dict[str, float], tags: dict[str, str], status: str) -> None:
        self._queue.put(("close_sweep", metrics, tags, status))

    def discard(self) -> None:
        """Delete every run of this sweep (a sweep stopped before it measured anything)."""
        self._queue.put(("discard",))

    # -- trials ---------------------------------------------------------------------------------
    def trial_start(self, trial_id: str, name: str, params: dict[str, str], tags: dict[str, str]) -> None:
        self._queue.put(("start", trial_id, name, params, tags))

    def trial_meta(self, trial_id: str, meta: dict) -> None:
        self._queue.put(("meta", trial_id, meta))

    def trial_metrics(self, trial_id: str, step: int, ts_ms: int, values: dict[str, float]) -> None:
        self._queue.put(("metrics", trial_id, step, ts_ms, values))

    def trial_end(self, trial_id: str, status: str, tags: dict, log_path: str | None, error_text: str | None):
        self._queue.put(("end", trial_id, status, tags, log_path, error_text))

    def close(self, timeout: float = 300.0) -> None:
        if self._thread.is_alive():
            self._queue.put(("stop",))
            self._thread.join(timeout)

    # -- the writer thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            import logging

            from mlflow.tracking import MlflowClient

            logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating tables..." notices
            self.mlf = MlflowClient(tracking_uri=self.uri)
            self.mlf.search_experiments(max_results=1)  # connect (create a new store's tables) while Ray starts
        except Exception as exc:
            self._warn(f"MLflow client for {self.uri} failed: {exc}")
            self._opened.set()
            return
        last = time.monotonic()
        while True:
            try:
                op = self._queue.get(timeout=self.flush_s)
            except queue.Empty:
                op = None
            if op is not None and op[0] == "stop":
                self._flush_all()
                return
            if op is not None:
                try:
                    getattr(self, "_op_" + op[0])(*op[1:])
                except Exception as exc:  # tracking never kills the sweep; say what was not logged
                    self._warn(f"MLflow {op[0]} {op[1] if len(op) > 1 and op[0] != 'open' else ''} failed: {exc}")
                finally:
                    if op[0] == "open":
                        self._opened.set()
            if time.monotonic() - last >= self.flush_s:
                self._flush_all()
                last = time.monotonic()

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

    def _op_open(self, name, config, space, root, command):
        import yaml

        from orchestrator import __version__

        self.exp_id = self._experiment_id()
        commit, dirty = git_state(root)
        tags = {"mlflow.runName": name, "danlu.sweep": name, "danlu.kind": "sweep", "danlu.version": __version__,
                "danlu.command": " ".join(command), "mlflow.source.git.commit": commit, "danlu.git_dirty": dirty}
        rid = self.mlf.create_run(self.exp_id, run_name=name, tags=tags).info.run_id
        self.parent_id = rid
        self._add(rid, params=params_of(config))
        self._flush(rid)
        self.mlf.log_text(rid, yaml.safe_dump(config, sort_keys=False), "config.yaml")
        self.mlf.log_text(rid, yaml.safe_dump(space, sort_keys=False), "space.yaml")

    def _op_close_sweep(self, metrics, tags, status):
        from mlflow.entities import Metric

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
        tags = {"mlflow.parentRunId": self.parent_id, "mlflow.runName": name, **tags}
        rid = self.mlf.create_run(self.exp_id, run_name=name, tags=tags).info.run_id
        self.run_ids[trial_id] = rid
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

    def _op_metrics(self, trial_id, step, ts, values):
        from mlflow.entities import Metric

        rid = self.run_ids[trial_id]
        self._add(rid, metrics=[Metric(k, float(v), ts, step) for k, v in values.items()])

    def _op_end(self, trial_id, status, tags, log_path, error_text):
        rid = self.run_ids.get(trial_id)
        if rid is None:  # ended before it started (e.g. could not be scheduled): still one run for it
            self._op_start(trial_id, trial_id, {}, {"ray.trial_id": trial_id})
            rid = self.run_ids[trial_id]
        self._add(rid, tags=tags)
        self._flush(rid)
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
        from mlflow.entities import Param, RunTag

        buf = self._pending.pop(rid, None)
        if not buf:
            return
        metrics = buf["metrics"]
        params = [Param(k, v) for k, v in buf["params"].items()]
        tags = [RunTag(k, v) for k, v in buf["tags"].items()]
        self._params.setdefault(rid, set()).update(buf["params"])
        while metrics or params or tags:
            m, p, t = (metrics[: LIMITS["metrics"]], params[: LIMITS["params"]], tags[: LIMITS["tags"]])
            metrics, params, tags = metrics[len(m):], params[len(p):], tags[len(t):]
            self.mlf.log_batch(rid, metrics=m, params=p, tags=t, synchronous=True)

    def _flush_all(self) -> None:
        for rid in list(self._pending):
            try:
                self._flush(rid)
            except Exception as exc:
                self._warn(f"MLflow batch for run {rid} failed: {exc}")
