"""MLflow: one parent run per sweep, one nested child run per trial, written from the driver.

Why not Ray's MLflowLoggerCallback: it logs each result synchronously on Tune's event loop (one HTTP
or sqlite round trip per report), keeps no record of which run belongs to which trial, and knows
nothing of parent runs or of ASHA's early stops. Here a Tune Callback only enqueues; one writer
thread sends metrics in batches (MlflowClient.log_batch) every `tracking.flush_s` seconds and when a
trial ends, so logging never stalls the scheduling loop.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ray.tune import Callback

from orchestrator.compose import flatten
from orchestrator.trial import META_KEY

MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
BATCH = 1000  # MLflow's limit on metrics per log_batch (params: 100)


def resolve_uri(uri: str, cwd: str | None = None) -> str:
    """Make a relative sqlite path absolute, so trials and `mlflow ui` agree on the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(cwd or os.getcwd(), uri[len(prefix):]).resolve())
    return uri


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(mlf, name: str) -> str:
    exp = mlf.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return mlf.create_experiment(name)
    except Exception:  # created concurrently by another sweep
        return mlf.get_experiment_by_name(name).experiment_id


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


def log_params(mlf, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):
        mlf.log_batch(run_id, params=items[i : i + 100], synchronous=True)


def open_parent(mlf, exp_id: str, name: str, config: dict, space: dict, root: Path, command: list[str]) -> str:
    import yaml

    from orchestrator import __version__

    commit, dirty = git_state(root)
    tags = {
        "mlflow.runName": name,
        "danlu.sweep": name,
        "danlu.kind": "sweep",
        "danlu.version": __version__,
        "danlu.command": " ".join(command),
        "mlflow.source.git.commit": commit,
        "danlu.git_dirty": dirty,
    }
    run = mlf.create_run(exp_id, run_name=name, tags=tags)
    rid = run.info.run_id
    log_params(mlf, rid, params_of(config))
    mlf.log_text(rid, yaml.safe_dump(config, sort_keys=False), "config.yaml")
    mlf.log_text(rid, yaml.safe_dump(space, sort_keys=False), "space.yaml")
    return rid


def close_parent(mlf, run_id: str, summary: dict, status: str) -> None:
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in summary.get("metrics", {}).items() if v is not None]
    tags = [RunTag(k, str(v)) for k, v in summary.get("tags", {}).items()]
    mlf.log_batch(run_id, metrics=metrics, tags=tags, synchronous=True)
    mlf.set_terminated(run_id, status)


class TrialRuns(Callback):
    """Child runs for trials. Tune calls these hooks on its event loop; they only enqueue, _Writer does the I/O."""

    def __init__(self, uri: str, exp_id: str, parent_id: str, describe: Callable, stopped_early: Callable,
                 log_dir: str, flush_s: float = 2.0):
        self._describe = describe  # trial -> (run name, params, tags)
        self._stopped_early = stopped_early  # trial_id -> bool
        self._log_dir = log_dir
        self._args = (uri, exp_id, parent_id, flush_s)
        self._writer = _Writer(*self._args)
        self._keys: dict[str, list[str]] = {}  # trial_id -> the metric names its job reports

    def __getstate__(self):  # Tune pickles its callbacks into tuner.pkl; the writer thread stays behind
        return {k: v for k, v in self.__dict__.items() if k != "_writer"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._writer = _Writer(*self._args)

    def setup(self, **info):
        self._writer.start()

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id not in self._keys:
            self._keys[trial.trial_id] = []
            self._writer.put(("start", trial.trial_id, *self._describe(trial)))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        meta = result.get(META_KEY)
        if meta:
            self._keys[trial.trial_id] = list(meta.get("metrics", ()))
            self._writer.put(("meta", trial.trial_id, meta))
        values = {k: result[k] for k in self._keys.get(trial.trial_id, ()) if k in result}
        step = int(result.get("step", result.get("training_iteration", 0)))
        ts = int(result.get("timestamp", time.time()) * 1000)
        self._writer.put(("metrics", trial.trial_id, step, ts, values))

    def on_trial_complete(self, iteration, trials, trial, **info):
        early = self._stopped_early(trial.trial_id)
        outcome = "stopped_early" if early else "completed"
        self._end(trial, "FINISHED", {"danlu.stopped_early": str(early).lower(), "danlu.outcome": outcome}, None)

    def on_trial_error(self, iteration, trials, trial, **info):
        text = ""
        if trial.error_file and os.path.exists(trial.error_file):
            with open(trial.error_file, errors="replace") as f:
                text = f.read()
        text = text or str(trial.get_error() or "trial failed")
        last = next((ln for ln in reversed(text.strip().splitlines()) if ln.strip()), "trial failed")
        self._end(trial, "FAILED", {"danlu.error": last[:5000], "danlu.outcome": "failed"}, text)

    def _end(self, trial, status, tags, error_text):
        log = os.path.join(self._log_dir, f"{trial.trial_id}.log")
        self._writer.put(("end", trial.trial_id, status, tags, log, error_text))

    def on_experiment_end(self, trials, **info):
        self.close()

    def close(self) -> None:
        """Send everything still queued (also after Ctrl-C)."""
        self._writer.close()

    @property
    def run_ids(self) -> dict[str, str]:
        return dict(self._writer.run_ids)

    @property
    def errors(self) -> list[str]:
        return list(self._writer.errors)


class _Writer(threading.Thread):
    """Applies tracking operations in order; metrics are buffered and sent with log_batch."""

    def __init__(self, uri: str, exp_id: str, parent_id: str, flush_s: float):
        super().__init__(name="danlu-mlflow", daemon=True)
        self.uri, self.exp_id, self.parent_id, self.flush_s = uri, exp_id, parent_id, flush_s
        self.queue: queue.Queue = queue.Queue()
        self.run_ids: dict[str, str] = {}
        self._pending: dict[str, list] = {}
        self._params: dict[str, set[str]] = {}
        self._closed = False
        self.errors: list[str] = []

    def put(self, op: tuple) -> None:
        self.queue.put(op)

    def close(self, timeout: float = 120.0) -> None:
        if self._closed:
            return
        self._closed = True
        if self.is_alive():
            self.queue.put(("stop",))
            self.join(timeout)

    def run(self) -> None:
        self.mlf = client(self.uri)
        last = time.monotonic()
        while True:
            try:
                op = self.queue.get(timeout=self.flush_s)
            except queue.Empty:
                op = None
            if op is not None and op[0] == "stop":
                self._flush_all()
                return
            if op is not None:
                try:
                    getattr(self, "_op_" + op[0])(*op[1:])
                except Exception as exc:  # never let tracking kill the sweep; say what was not logged
                    self._warn(f"MLflow {op[0]} for trial {op[1]} failed: {exc}")
            if time.monotonic() - last >= self.flush_s:
                self._flush_all()
                last = time.monotonic()

    def _warn(self, msg: str) -> None:
        self.errors.append(msg)
        print(f"danlu: warning: {msg}", file=sys.stderr, flush=True)

    def _op_start(self, trial_id, name, params, tags):
        tags = {"mlflow.parentRunId": self.parent_id, "mlflow.runName": name, **tags}
        run = self.mlf.create_run(self.exp_id, run_name=name, tags=tags)
        self.run_ids[trial_id] = run.info.run_id
        self._params[trial_id] = set(params)
        log_params(self.mlf, run.info.run_id, params)

    def _op_meta(self, trial_id, meta):
        import yaml
        from mlflow.entities import RunTag

        rid = self.run_ids[trial_id]
        config = meta.get("config")
        if config:
            self.mlf.log_text(rid, config, "config.yaml")
            known = self._params.setdefault(trial_id, set())
            fresh = {k: v for k, v in params_of(yaml.safe_load(config)).items() if k not in known}
            log_params(self.mlf, rid, fresh)
            known.update(fresh)
        tags = {"danlu.node": meta.get("hostname", ""), "danlu.gpu_ids": meta.get("gpu_ids", ""),
                "danlu.cuda_visible_devices": meta.get("cuda_visible_devices", ""), "danlu.pid": meta.get("pid", "")}
        self.mlf.log_batch(rid, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)

    def _op_metrics(self, trial_id, step, ts, values):
        from mlflow.entities import Metric

        buf = self._pending.setdefault(trial_id, [])
        buf.extend(Metric(k, float(v), ts, step) for k, v in values.items())

    def _op_end(self, trial_id, status, tags, log_path, error_text):
        from mlflow.entities import RunTag

        rid = self.run_ids.get(trial_id)
        if rid is None:  # ended before it started (e.g. failed to schedule): still one run for it
            self._op_start(trial_id, trial_id, {}, {"ray.trial_id": trial_id})
            rid = self.run_ids[trial_id]
        self._flush(trial_id)
        if os.path.exists(log_path):
            with open(log_path, errors="replace") as f:
                self.mlf.log_text(rid, f.read(), "output.log")
        if error_text:
            self.mlf.log_text(rid, error_text, "error.txt")
        self.mlf.log_batch(rid, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)
        self.mlf.set_terminated(rid, status)

    def _flush(self, trial_id) -> None:
        buf = self._pending.pop(trial_id, None)
        rid = self.run_ids.get(trial_id)
        if not buf or rid is None:
            return
        for i in range(0, len(buf), BATCH):
            self.mlf.log_batch(rid, metrics=buf[i : i + BATCH], synchronous=True)

    def _flush_all(self) -> None:
        for trial_id in list(self._pending):
            try:
                self._flush(trial_id)
            except Exception as exc:
                self._warn(f"MLflow metrics for trial {trial_id} failed: {exc}")
