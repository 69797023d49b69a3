"""A second RunStore (orchestrator/tracking/__init__.py), written for the tests: runs kept in this process's
memory, no MLflow anywhere. A real implementation of the protocol, not a mock: it keeps parents, children, params,
tags, metric histories and text artifacts, finds a sweep's parent again by its identity and a trial's run by its
trial id, logs a (metric, step) once, and ends runs as MLflow's store does.

Chosen with tracking.store=memory_store:MemoryStore (tests/ on PYTHONPATH) and tracking.uri=memory:///PATH. At the
process's exit it writes what it holds to PATH as JSON, with whether MLflow was ever imported in the process, so
a test can check a whole sweep against it."""

from __future__ import annotations

import atexit
import json
import sys
import threading
import time
import uuid
from pathlib import Path

from orchestrator import tags as T
from orchestrator.errors import BadInput
from orchestrator.tracking import RunRecord, SweepRecord
from orchestrator.tracking import mlflow_tags as M  # the same tag names as MLflow's, so tests read both alike

_STATES: dict[str, dict] = {}  # uri -> {"experiments": {name: id}, "runs": {run_id: run}}: one per process
_LOCK = threading.RLock()


def _state(uri: str) -> dict:
    with _LOCK:
        if uri not in _STATES:
            _STATES[uri] = {"experiments": {}, "runs": {}, "views": {}}
            atexit.register(_dump, uri)
        return _STATES[uri]


def _dump(uri: str) -> None:
    path = Path(uri[len("memory://"):])
    path.write_text(json.dumps({**_STATES[uri], "mlflow_imported": "mlflow" in sys.modules}, default=str))


class MemoryStore:
    """Runs in a dict; every write is applied at once (nothing buffered), so flush() has nothing to send."""

    ui = False  # no UI shows these runs: danlu prints no addresses of them

    def __init__(self, uri: str, experiment: str, sweep_id: str | None = None, storage: Path | None = None):
        self.uri, self.experiment, self.sweep_id = uri, experiment, sweep_id
        self.db = _state(uri)
        self.exp_id: str | None = None
        self.parent_id: str | None = None
        self.notes: list[str] = []
        self.orphans: list[dict] = []

    @staticmethod
    def check(uri: str) -> None:
        if not uri.startswith("memory:///"):
            raise BadInput(f"tracking.uri={uri}: the memory store takes memory:///path/of/its/dump.json")

    @staticmethod
    def refuses(uri: str) -> str | None:
        return None

    @staticmethod
    def transient(exc: Exception) -> bool:
        return False  # nothing to reach: every error is a refusal

    def experiment_id(self) -> str:
        with _LOCK:
            self.exp_id = self.db["experiments"].setdefault(self.experiment, str(len(self.db["experiments"]) + 1))
            return self.exp_id

    # -- runs ----------------------------------------------------------------------------------------
    def _new(self, name: str, tags: dict, start_ms=None) -> str:
        rid = uuid.uuid4().hex
        self.db["runs"][rid] = {"experiment_id": self.experiment_id(), "name": name, "status": "RUNNING",
                                "params": {}, "tags": {M.RUN_NAME: name, **{k: str(v) for k, v in tags.items()}},
                                "metrics": {}, "artifacts": {}, "start": start_ms or int(time.time() * 1000),
                                "end": None}
        return rid

    def _runs(self, **tags) -> list[tuple[str, dict]]:
        return [(rid, r) for rid, r in self.db["runs"].items() if r["experiment_id"] == self.experiment_id()
                and all(r["tags"].get(k) == v for k, v in tags.items())]

    def _params(self, rid: str, params: dict) -> None:
        held = self.db["runs"][rid]["params"]
        for k, v in (params or {}).items():
            held.setdefault(k, str(v))  # params are immutable, as in MLflow

    def _end(self, rid: str, status: str, end_ms: int | None = None) -> None:
        self.db["runs"][rid].update(status=status, end=end_ms or int(time.time() * 1000))

    def find_parent(self) -> str | None:
        if self.parent_id is None and self.sweep_id:
            found = [rid for rid, r in self._runs(**{T.SWEEP_ID: self.sweep_id}) if M.PARENT not in r["tags"]]
            self.parent_id = found[0] if found else None
        return self.parent_id

    def _trial_run(self, trial_id: str) -> str:
        found = [rid for rid, r in self._runs(**{M.PARENT: self.find_parent() or "", T.TRIAL_ID: trial_id})
                 if T.ORPHANED not in r["tags"]]
        if not found:
            raise KeyError(f"trial {trial_id} has no run (its start was never applied)")
        return found[0]

    # -- the journaled operations --------------------------------------------------------------------
    def open(self, name, config, space, root, command, extra_tags=None, settings=None, replay=False) -> None:
        import yaml

        with _LOCK:
            rid = self.find_parent()
            grown = False  # an extension's first driver: the config and space are the extended ones now
            if rid is None:
                from orchestrator.tracking.provenance import git_state

                commit, dirty = git_state(Path(root))
                rid = self.parent_id = self._new(name, {T.SWEEP: name, T.KIND: "sweep", T.COMMAND: " ".join(command),
                                                        T.SWEEP_ID: self.sweep_id or "", M.GIT_COMMIT: commit,
                                                        T.GIT_DIRTY: dirty, **(extra_tags or {})})
            elif not replay:
                run = self.db["runs"][rid]
                resumes = int(run["tags"].get(T.RESUMES, "0")) + 1
                grown = (extra_tags or {}).get(T.EXTENSIONS, run["tags"].get(T.EXTENSIONS)) != run["tags"].get(
                    T.EXTENSIONS)
                run["status"] = "RUNNING"
                run["tags"].update({T.RESUMES: str(resumes), **{k: str(v) for k, v in (extra_tags or {}).items()}})
            self._params(rid, settings or {})
            arts = self.db["runs"][rid]["artifacts"]
            for key, what in (("config.yaml", config), ("space.yaml", space)):
                if grown or key not in arts:
                    arts[key] = yaml.safe_dump(what, sort_keys=False)

    def close_sweep(self, metrics, tags, status, trials=None, report_pending=False, replay=False) -> None:
        with _LOCK:
            parent = self.find_parent()
            for rid, run in self._runs(**{M.PARENT: parent or ""}):
                ended = (trials or {}).get(run["tags"].get(T.TRIAL_ID)) if not replay else None
                if run["status"] == "RUNNING":
                    if ended:
                        run["tags"].update({k: str(v) for k, v in (ended.get("tags") or {}).items()})
                        self._end(rid, ended["status"])
                    else:
                        run["tags"][T.OUTCOME] = "killed"
                        self._end(rid, "KILLED")
            self.db["runs"][parent]["metrics"].update({k: [[0, float(v), 0]] for k, v in metrics.items()})
            self.db["runs"][parent]["tags"].update({k: str(v) for k, v in tags.items()})
            if report_pending:
                self.db["runs"][parent]["tags"][T.REPORT] = "pending"
            else:
                self._end(parent, status)

    def discard(self) -> None:
        with _LOCK:
            parent = self.find_parent()
            for rid, _ in self._runs(**{M.PARENT: parent or ""}):
                del self.db["runs"][rid]
            self.db["runs"].pop(parent, None)

    def start(self, trial_id, name, params, tags, start_ms=None, replay=False) -> None:
        with _LOCK:
            try:
                rid = self._trial_run(trial_id)
                if not replay:
                    self.db["runs"][rid]["status"] = "RUNNING"
            except KeyError:
                rid = self._new(name, {M.PARENT: self.find_parent(), T.TRIAL_ID: trial_id, **tags}, start_ms)
            self._params(rid, params)

    def meta(self, trial_id, meta) -> None:
        import yaml

        with _LOCK:
            rid = self._trial_run(trial_id)
            if meta.get("config"):
                self.db["runs"][rid]["artifacts"]["config.yaml"] = yaml.safe_dump(meta["config"], sort_keys=False)
            self.db["runs"][rid]["tags"][T.NODE] = str(meta.get("hostname", ""))

    def metrics(self, trial_id, step, ts, values) -> None:
        with _LOCK:
            held = self.db["runs"][self._trial_run(trial_id)]["metrics"]
            for k, v in values.items():
                points = held.setdefault(k, [])
                if not points or step > points[-1][0]:  # a step it holds is never logged again
                    points.append([step, float(v), ts])

    def sweep_metrics(self, step, ts, values) -> None:
        with _LOCK:
            held = self.db["runs"][self.parent_id]["metrics"]
            for k, v in values.items():
                held.setdefault(k, []).append([step, float(v), ts])

    def tags(self, trial_id, tags) -> None:
        with _LOCK:
            self.db["runs"][self._trial_run(trial_id)]["tags"].update({k: str(v) for k, v in tags.items()})

    def end(self, trial_id, status, tags, log_path, error_text, end_ms=None, replay=False) -> None:
        with _LOCK:
            rid = self._trial_run(trial_id)
            run = self.db["runs"][rid]
            if replay and run["status"] != "RUNNING":
                return
            run["tags"].update({k: str(v) for k, v in tags.items()})
            if error_text:
                run["artifacts"]["error.txt"] = error_text
            self._end(rid, status, end_ms)

    def batch(self, rid, metrics, params, tags) -> None:
        with _LOCK:
            run = self.db["runs"][rid]
            for m in metrics:
                run["metrics"].setdefault(m["key"], []).append([m["step"], m["value"], m["timestamp"]])
            self._params(rid, params)
            run["tags"].update(tags)

    def flush(self, rid: str) -> None:
        pass  # written at once

    def pending_runs(self) -> list[str]:
        return []

    @property
    def pending(self) -> bool:
        return False

    def drop(self, rid: str) -> dict | None:
        return None

    # -- reading --------------------------------------------------------------------------------------
    def _record(self, rid: str) -> RunRecord:
        r = self.db["runs"][rid]
        return RunRecord(rid, r["experiment_id"], r["name"], r["status"], dict(r["params"]), dict(r["tags"]),
                         {k: pts[-1][1] for k, pts in r["metrics"].items() if pts}, r["start"], r["end"],
                         r["tags"].get(M.PARENT), r["tags"].get(M.GIT_COMMIT), r.get("description", ""))

    def find_sweep(self, name: str) -> RunRecord | None:
        with _LOCK:
            found = sorted(self._runs(**{T.SWEEP: name, T.KIND: "sweep"}), key=lambda x: -x[1]["start"])
            return self._record(found[0][0]) if found else None

    def read_sweep(self, name: str) -> SweepRecord:
        import yaml

        parent = self.find_sweep(name)
        if parent is None:
            raise BadInput(f"sweep {name!r}: no such sweep in the memory store")
        text = self.artifact_text(parent.run_id, "space.yaml")
        return SweepRecord(parent, self.trial_runs(parent.run_id), yaml.safe_load(text) if text else None)

    def trial_runs(self, parent_id: str) -> list[RunRecord]:
        with _LOCK:
            return [self._record(rid) for rid, _ in self._runs(**{M.PARENT: parent_id})]

    def get_run(self, run_id: str) -> RunRecord | None:
        with _LOCK:
            return self._record(run_id) if run_id in self.db["runs"] else None

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        with _LOCK:
            return [(s, v) for s, v, _ in self.db["runs"][run_id]["metrics"].get(key, [])]

    def histories(self, run_ids: list[str], key: str) -> dict[str, list[tuple[int, float]]]:
        return {rid: self.history(rid, key) for rid in run_ids}

    def artifact_text(self, run_id: str, path: str) -> str | None:
        return self.db["runs"][run_id]["artifacts"].get(path)

    def sweeps(self, limit: int = 200) -> tuple[str | None, list[RunRecord]]:
        with _LOCK:
            found = sorted(self._runs(**{T.KIND: "sweep"}), key=lambda x: -x[1]["start"])[:limit]
            return self.experiment_id(), [self._record(rid) for rid, _ in found]

    def sweeps_of_job(self, job: str) -> list[RunRecord]:
        return [r for r in self.sweeps()[1] if r.params.get("job.name") == job]

    def attach_report(self, parent_id, folder, metrics, tags, finish, description="") -> None:
        with _LOCK:
            run = self.db["runs"][parent_id]
            run["description"] = description
            for f in Path(folder).iterdir():
                if f.suffix in (".html", ".json"):
                    run["artifacts"][f"report/{f.name}"] = f.read_text()
            for k, v in metrics.items():
                run["metrics"].setdefault(k, []).append([0, float(v), 0])
            run["tags"].update(tags)
            if finish:
                self._end(parent_id, finish)

    def end_parent(self, parent_id, status, tags) -> None:
        with _LOCK:
            self.db["runs"][parent_id]["tags"].update(tags)
            self._end(parent_id, status)

    def attach_result(self, run_id, name, text, metrics, tags) -> None:
        with _LOCK:
            run = self.db["runs"][run_id]
            run["artifacts"][name] = text
            run["tags"].update(tags)
            for k, v in metrics.items():
                run["metrics"].setdefault(k, []).append([0, float(v), 0])

    def share_view(self, name, metric, mode, hyperparameters) -> bool:
        self.db["views"][name] = {"metric": metric, "mode": mode, "columns": list(hyperparameters)}
        return False  # no UI to open it in
