"""MLflow as danlu's RunStore (orchestrator/tracking/__init__.py): one parent run per sweep, one nested child run per
trial, every operation idempotent. The only module of danlu that imports MLflow.

A driver can be killed between any two MLflow calls, and a restarted driver replays what its journal
holds (orchestrator/tracking/journal.py). So no operation depends on anything this process remembers:
- the parent run is found by its sweep's identity tag (danlu.sweep_id, kept in the sweep's storage)
  before one is created; a trial's run by its parent and its trial id (ray.trial_id). A run that was
  created just before a kill is found, never created twice, whatever the map file (mlflow_runs.json, a
  cache of those look-ups) or the journal's offset said;
- a (metric, step) that MLflow already holds is never logged again: a run this process did not create
  is read once (each metric's last step) before anything is logged to it;
- ending a run, tagging it, logging its artifacts: repeating them changes nothing.

Methods raise what MLflow raises; transient() says what is an outage (the writer, orchestrator/tracking/writer.py,
waits and retries in order) and what is a refusal (park the operation, say so, exit non-zero).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from orchestrator import tags as T
from orchestrator.config.compose import flatten
from orchestrator.errors import BadInput
from orchestrator.tracking import RunRecord, SweepRecord
from orchestrator.tracking import mlflow_tags as M
from orchestrator.tracking.mlflow_internals import log_text
from orchestrator.tracking.provenance import git_state

# MLflow 3 sends usage telemetry from a thread of its own in every process that logs: py-spy found it in 12% of a
# sweep driver's active samples (32 trials; mostly waiting on the network, the driver's CPU seconds did not change
# measurably without it), and a cluster's nodes often have no way out. Off unless the user says otherwise
# (MLFLOW_DISABLE_TELEMETRY=false).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
LIMITS = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's limits per log_batch call
TERMINAL = ("FINISHED", "FAILED", "KILLED")
SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "file")


class Refused(Exception):
    """An operation that cannot be applied as it stands (e.g. a trial with no run): park it, never drop it."""


def create_sqlite_store(uri: str) -> None:
    """Create a new sqlite store whole, or not at all. MLflow creates its tables and runs its migrations in
    place: a driver killed meanwhile (while Ray starts) leaves a half-migrated file that MLflow then refuses
    for good ("duplicate column name"). So a store that does not exist yet is built in a file beside it and
    linked into place once complete (a concurrent sweep that got there first wins; its store is as good)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return
    path = Path(uri[len(prefix):])
    if path.exists():
        return
    from mlflow.tracking import MlflowClient

    tmp = path.with_name(f".{path.name}.{os.getpid()}.creating")
    tmp.unlink(missing_ok=True)
    try:
        MlflowClient(prefix + str(tmp)).search_experiments(max_results=1)  # tables, migrations, Default
        try:
            os.link(tmp, path)  # never replaces a store that appeared meanwhile
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def mark_training(client, exp) -> None:
    """Tag an experiment as model training (unless it says otherwise), so that MLflow's UI opens it on its
    runs, not on the GenAI overview that MLflow 3 shows by default."""
    if M.EXPERIMENT_KIND not in (exp.tags or {}):
        client.set_experiment_tag(exp.experiment_id, M.EXPERIMENT_KIND, M.TRAINING)


def source_name(command: list[str]) -> str:
    """The command as the run's source: without --config-dir DIR, since MLflow's UI shows a local source's text
    after its last '/' (the whole command stays in danlu.command)."""
    out, skip = [], False
    for word in command:
        if skip or word == "--config-dir":
            skip = not skip
            continue
        if word.startswith("--config-dir="):
            continue
        out.append(word)
    return " ".join(out)[:500]


def share_runs_view(client, exp_id: str, sweep: str, metric: str, mode: str, hyperparameters: list[str]) -> bool:
    """Write the sweep's runs table as MLflow's shared view (orchestrator/tracking/links.py); False if the store refused."""
    import json

    from orchestrator.tracking import links

    try:
        client.set_experiment_tag(exp_id, M.SHARED_VIEW.format(links.view_key(sweep)),
                                  json.dumps(links.runs_view(sweep, metric, mode, hyperparameters)))
        return True
    except Exception:  # the link then carries the filter and order alone
        return False


def params_of(tree: dict) -> dict[str, str]:
    """A config tree as MLflow params: flattened keys, values cut to MLflow's limit."""
    return {k: str(v)[:MAX_PARAM_LEN] for k, v in flatten(tree) if k}


class MlflowStore:
    """The RunStore of MLflow: its sweep's operations (the journal's), and reading sweeps back."""

    RUNS = "mlflow_runs.json"
    ui = True  # MLflow's UI shows its runs: danlu prints their addresses (orchestrator/tracking/links.py)
    SAVE_S = 5.0  # the trial -> run cache is written at most this often as trials start (see _save)

    def __init__(self, uri: str, experiment: str, sweep_id: str | None = None, storage: Path | None = None):
        import logging

        from mlflow.tracking import MlflowClient

        # "Creating tables..." notices, and the traceback MLflow logs before it raises a database error: the
        # writer handles every error it raises (waits out an outage, parks a refusal, stops on a full disk) and says so
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        create_sqlite_store(uri)
        self.uri = uri
        self.mlf = MlflowClient(tracking_uri=uri)
        self.experiment, self.sweep_id, self.storage = experiment, sweep_id, storage
        self.exp_id: str | None = None
        self.parent_id: str | None = None
        self.run_ids: dict[str, str] = {}  # trial_id -> run_id (a cache; MLflow's tags are the truth)
        self._listed: dict[str, list[str]] | None = None  # trial_id -> its runs, first started first (run_of)
        if storage is not None and (storage / self.RUNS).exists():
            try:
                saved = json.loads((storage / self.RUNS).read_text())
                self.parent_id, self.run_ids = saved["parent"], dict(saved["runs"])
            except (ValueError, KeyError, TypeError, AttributeError):
                pass  # only a cache (damaged, or cut by a kill): look-ups find the runs again
        self.notes: list[str] = []  # what the writer did that the user should hear of (runs set aside)
        self.orphans: list[dict] = []  # runs set aside: {"run", "trial", "status", "config_id", "seed"}
        self._last_step: dict[str, dict[str, int]] = {}  # run_id -> metric -> last step MLflow holds or will
        self._replayed: dict[str, set[int]] = {}  # run_id -> steps reported again (after a restore)
        self._redoing: dict[str, list] = {}  # run_id -> [first step, its ms, steps] of a restored trial's redo
        self._born_ms = int(time.time() * 1000)  # reports older than this are the journal's, not a trial's redo
        self._known: set[str] = set()  # runs whose MLflow contents this process knows (created or read)
        self._ended: set[str] = set()  # runs this process ended
        self._pending: dict[str, dict] = {}  # run_id -> {"metrics": [...], "params": {...}, "tags": {...}}
        self._params: dict[str, set[str]] = {}  # run_id -> param keys MLflow holds (params are immutable)
        self._artifact_uri: dict[str, str] = {}  # run_id -> where its artifacts go (as MLflow said when asked)
        self._saved_at = float("-inf")  # when the trial -> run cache was last written

    # -- look-ups --------------------------------------------------------------------------------------
    def experiment_id(self) -> str:
        """The experiment's id, created (tagged as model training) if it does not exist; Refused if it is deleted."""
        if self.exp_id is None:
            exp = self.mlf.get_experiment_by_name(self.experiment)
            if exp is None:
                try:
                    self.exp_id = self.mlf.create_experiment(self.experiment, tags={M.EXPERIMENT_KIND: M.TRAINING})
                except Exception:  # created at the same moment by another sweep
                    exp = self.mlf.get_experiment_by_name(self.experiment)
                    if exp is None:
                        raise
                    self.exp_id = exp.experiment_id
            else:
                if exp.lifecycle_stage == "deleted":
                    raise Refused(f"MLflow experiment '{self.experiment}' is deleted; restore it "
                                  f"(mlflow experiments restore) or set tracking.experiment")
                self.exp_id = exp.experiment_id
                mark_training(self.mlf, exp)
        return self.exp_id

    def _search(self, query: str) -> list:
        out: list = []
        token = None
        while True:
            page = self.mlf.search_runs([self.experiment_id()], filter_string=query, max_results=1000,
                                        order_by=["attributes.start_time ASC"], page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    def find_parent(self) -> str | None:
        """The sweep's parent run, found by its identity tag (danlu.sweep_id) where not known yet."""
        if self.parent_id is None and self.sweep_id:
            found = self._search(f"tags.`{T.SWEEP_ID}` = '{self.sweep_id}'")
            parents = [r for r in found if M.PARENT not in r.data.tags]
            if parents:
                self.parent_id = parents[0].info.run_id
                self._save(now=True)
        return self.parent_id

    def children(self) -> list:
        """Every child run of the sweep's parent (MLflow's runs, for the close)."""
        return self._search(f"tags.`{M.PARENT}` = '{self.find_parent()}'") if self.find_parent() else []

    def run_of(self, trial_id: str) -> str | None:
        """The trial's run (an orphaned run, set aside for a trial Tune forgot, is never the trial's): the cache's,
        else the first started of the sweep's runs tagged with its id. Those are read once, the first time the cache
        lacks a trial (every trial's start asks): a search by tags per trial grew with the sweep (MLflow scans the
        tag's values), 11 ms a trial at 400 trials. The sweep's lock makes this driver the only one creating its
        runs, and every run it creates goes into the cache."""
        rid = self.run_ids.get(trial_id)
        parent = self.find_parent() if rid is None else None
        if parent is not None:
            if self._listed is None:
                listed: dict[str, list[str]] = {}
                for r in sorted(self.trial_runs(parent, self.experiment_id()),
                                key=lambda r: (r.start_ms or 0, r.run_id)):
                    if r.tags.get(T.TRIAL_ID) and T.ORPHANED not in r.tags:
                        listed.setdefault(r.tags[T.TRIAL_ID], []).append(r.run_id)
                self._listed = listed  # only once whole: a read cut by an outage is tried again
            found = self._listed.get(trial_id)
            if found:
                rid = self.run_ids[trial_id] = found[0]
                self._save()
        return rid

    def _save(self, now: bool = False) -> None:
        """The trial -> run cache; only a cache (look-ups find the runs again), so a disk that cannot take it
        costs nothing here (the sweep hears of a full disk from the journal and its own watch). Written whole,
        so at most every SAVE_S seconds as trials start (every start: quadratic in the trials, 7 GB of JSON
        over a 10,000-trial sweep), and `now` where it must be current (the parent found, a run set aside, the
        sweep's close); a driver killed meanwhile finds its newest runs again by their tags."""
        if self.storage is None or not (now or time.monotonic() - self._saved_at >= self.SAVE_S):
            return
        self._saved_at = time.monotonic()
        tmp = self.storage / (self.RUNS + ".tmp")
        try:
            tmp.write_text(json.dumps({"parent": self.parent_id, "runs": self.run_ids}))
            os.replace(tmp, self.storage / self.RUNS)
        except OSError:
            pass

    def _orphan(self, run, why: str) -> None:
        """Set a run aside that no trial of Tune's can own any more: tagged (excluded from the report and the
        counts), never deleted, since its results may be the only copy of them; it stays RUNNING never."""
        rid, status, trial_id = run.info.run_id, run.info.status, run.data.tags.get(T.TRIAL_ID)
        self.orphans.append({"run": rid, "trial": trial_id, "status": status,
                             "config_id": run.data.tags.get(T.CONFIG_ID), "seed": run.data.tags.get(T.SEED)})
        self.add(rid, tags={T.ORPHANED: why[:5000]})
        self.flush(rid)
        if status == "RUNNING":
            self.mlf.set_terminated(rid, "KILLED")
        self.notes.append(f"run {rid} of trial {trial_id} is kept but set aside (tag {T.ORPHANED}): {why}")
        if self.run_ids.get(trial_id) == rid:
            self.run_ids.pop(trial_id)
            self._save(now=True)
        if self._listed is not None and rid in self._listed.get(trial_id, ()):
            self._listed[trial_id].remove(rid)

    def _read(self, rid: str):
        """Learn what MLflow holds of a run this process did not create: its params and each metric's last
        step (a journal replay or a restored trial may report steps that MLflow already has)."""
        run = self.mlf.get_run(rid)
        self._artifact_uri[rid] = run.info.artifact_uri
        if rid not in self._known:
            self._params.setdefault(rid, set()).update(run.data.params)
            last = self._last_step.setdefault(rid, {})
            for key in run.data.metrics:
                steps = [m.step for m in self.mlf.get_metric_history(rid, key)]
                last[key] = max(max(steps, default=-1), last.get(key, -1))  # nor forget what is buffered here
            self._known.add(rid)
        return run

    # -- the sweep --------------------------------------------------------------------------------------
    def open(self, name, config, space, root, command, extra_tags=None, settings=None, replay=False) -> None:
        """Create the sweep's parent run, or (found by its identity) continue it. An earlier driver's open,
        replayed, only makes sure the parent exists with its params and artifacts. Its params are the sweep's
        `settings` (sweep_settings: what the sweep is, not a trial's values), the resolved base config an artifact;
        an earlier danlu's journal has no settings: its parent keeps the flattened config as params."""
        import yaml

        from orchestrator import __version__

        existing = self.find_parent()
        grown = False  # an extension's first driver: the parent's config and space are the extended ones now
        if existing is None:
            commit, dirty = git_state(Path(root))
            tags = {M.RUN_NAME: name, T.SWEEP: name, T.KIND: "sweep", T.VERSION: __version__,
                    T.COMMAND: " ".join(command), M.GIT_COMMIT: commit, T.GIT_DIRTY: dirty,
                    M.SOURCE_NAME: source_name(command), M.SOURCE_TYPE: "LOCAL",
                    **({T.SWEEP_ID: self.sweep_id} if self.sweep_id else {}), **(extra_tags or {})}
            self.parent_id = self.mlf.create_run(self.experiment_id(), run_name=name, tags=tags).info.run_id
            self._known.add(self.parent_id)
            self._save(now=True)
        elif not replay:  # this driver continues a sweep begun before
            parent = self._read(existing)
            if parent.data.tags.get(T.REPORT) == "pending":
                self.notes.append("the sweep's parent run was left without its report (the driver that ended its "
                                  "trials stopped before making it); this run makes it and then finishes the run")
            resumes = int(parent.data.tags.get(T.RESUMES, "0")) + 1
            grown = (extra_tags or {}).get(T.EXTENSIONS, parent.data.tags.get(T.EXTENSIONS)) != \
                parent.data.tags.get(T.EXTENSIONS)
            if parent.info.status != "RUNNING":
                self.mlf.update_run(existing, status="RUNNING")
            self.add(existing, tags={T.RESUMES: resumes, T.RESUME_COMMAND.format(resumes): " ".join(command),
                                     **(extra_tags or {})})
        rid = self.parent_id
        if rid is None:  # made or found above: never None here
            raise RuntimeError("the sweep's parent run was neither found nor created")
        self._read(rid)
        self.add(rid, params=settings if settings is not None else params_of(config))  # only what MLflow lacks
        self.flush(rid)
        if grown or "space.yaml" not in {a.path for a in self.mlf.list_artifacts(rid)}:  # logged last
            self.mlf.log_text(rid, yaml.safe_dump(config, sort_keys=False), "config.yaml")
            self.mlf.log_text(rid, yaml.safe_dump(space, sort_keys=False), "space.yaml")

    def close_sweep(self, metrics, tags, status, trials=None, report_pending=False, replay=False) -> None:
        """End the sweep: no run of it stays RUNNING.

        `trials`: every trial Tune holds, trial id -> how it ended ({"status", "tags", "log"}) or None (not
        ended: its run is KILLED). A run whose trial ended in Tune but whose end never reached MLflow (lost with
        a damaged journal) is ended as Tune says. A run of a trial Tune no longer holds (started after the
        snapshot a restore used, or of a snapshot that could not be read) is set aside (`_orphan`), never deleted.
        Without `trials` (an interrupted sweep) every RUNNING run is KILLED. The parent's summary metrics are
        logged when they differ from what it holds (a rerun adds no points); with `report_pending` the parent
        stays RUNNING, tagged, until orchestrator/report/_publish.py attaches the report and finishes it.
        A replayed close (an earlier driver's) judges no run: the trials it names may have moved on since.
        """
        from mlflow.entities import Metric

        parent = self._require_parent()
        if isinstance(trials, list):  # a journal written by an earlier danlu: the ids alone
            trials = {tid: None for tid in trials}
        judge = bool(trials) and not replay
        for run in self.children():
            rid, now_status = run.info.run_id, run.info.status
            tid = run.data.tags.get(T.TRIAL_ID)
            if T.ORPHANED in run.data.tags:
                continue
            if judge and tid not in trials:
                self._pending.pop(rid, None)
                self._orphan(run, "Tune's state of the sweep does not hold its trial (the trial started after the "
                             "snapshot the sweep was restored from; its configuration ran again as another trial, "
                             "or was not drawn again)")
                continue
            ended = (trials or {}).get(tid) if judge else None
            if ended and now_status in ("RUNNING", "KILLED") and rid not in self._ended:
                self._read(rid)
                self.add(rid, tags=ended.get("tags") or {})
                self.flush(rid)
                log = ended.get("log")
                if log and os.path.exists(log):
                    with open(log, errors="replace") as f:
                        self.mlf.log_text(rid, f.read(), "output.log")
                self.mlf.set_terminated(rid, ended["status"])
                self.notes.append(f"run {rid} of trial {tid} was {now_status} in MLflow although its trial had ended "
                                  f"({ended['status']}); its end had not reached MLflow, and is logged now")
                continue
            if now_status == "RUNNING" and rid not in self._ended:
                self.flush(rid)
                self.mlf.set_tag(rid, T.OUTCOME, "killed")
                self.mlf.set_terminated(rid, "KILLED")
        now = int(time.time() * 1000)
        held = self._read(parent).data.metrics
        fresh = {k: float(v) for k, v in metrics.items() if held.get(k) != float(v)}
        self.add(parent, metrics=[Metric(k, v, now, 0) for k, v in fresh.items()],
                 tags={**tags, **({T.REPORT: "pending"} if report_pending else {})})
        self.flush(parent)
        self._save(now=True)
        if not report_pending:
            self.mlf.set_terminated(parent, status)

    def discard(self) -> None:
        """Delete every run of this sweep (a sweep stopped before it measured anything)."""
        parent = self.find_parent()
        for run in self.children():
            self._pending.pop(run.info.run_id, None)
            self.mlf.delete_run(run.info.run_id)
        if parent:
            self._pending.pop(parent, None)
            self.mlf.delete_run(parent)

    def _require_parent(self) -> str:
        parent = self.find_parent()
        if parent is None:
            raise Refused("the sweep has no parent run in MLflow (its open was never applied)")
        return parent

    # -- trials -----------------------------------------------------------------------------------------
    def start(self, trial_id, name, params, tags, start_ms=None, replay=False) -> None:
        """Create the trial's run, or continue the one that exists. A run found for this trial id but of
        another configuration belongs to a trial Tune forgot (its id was given again): it is set aside."""
        parent = self._require_parent()
        rid = self.run_of(trial_id)
        if rid is not None:
            run = self._read(rid)
            same = all(run.data.tags.get(k) == str(tags[k]) for k in (T.CONFIG_ID, T.SEED) if k in tags)
            if same:
                if run.info.status != "RUNNING" and not replay:  # a trial restored by this driver continues
                    self.mlf.update_run(rid, status="RUNNING")
                    self._ended.discard(rid)
                    if T.ERROR in run.data.tags:  # the error that ended it before (a full disk, a failed try)
                        self.mlf.delete_tag(rid, T.ERROR)
                self.add(rid, params=params)
                return
            self._orphan(run, "its trial id was given again, to another configuration (the trial was lost with a "
                         "snapshot of Tune's that the sweep could not restore)")
            self.run_ids.pop(trial_id, None)
        tags = {M.PARENT: parent, M.RUN_NAME: name, T.TRIAL_ID: trial_id, **tags}
        run = self.mlf.create_run(self.experiment_id(), run_name=name, tags=tags, start_time=start_ms)
        rid = run.info.run_id
        self._known.add(rid)
        self._artifact_uri[rid] = run.info.artifact_uri
        self.run_ids[trial_id] = rid
        self._save()
        # its hyperparameters go with the first batch of its metrics and where it runs (within tracking.flush_s):
        # one MLflow transaction fewer per trial than sending them now
        self.add(rid, params=params)

    def _trial_run(self, trial_id) -> str:
        rid = self.run_of(trial_id)
        if rid is None:
            raise Refused(f"trial {trial_id} has no MLflow run (its start was never applied)")
        if rid not in self._known:
            self._read(rid)
        return rid

    def meta(self, trial_id, meta) -> None:
        """Where the trial runs (host, GPUs, pid, resources, a restore's checkpoint) as tags; its resolved config
        as config.yaml and params."""
        import yaml

        rid = self._trial_run(trial_id)
        config = meta.get("config")
        if config:  # the resolved config as a mapping (YAML text in a journal written by an earlier danlu)
            config = yaml.safe_load(config) if isinstance(config, str) else config
            self._log_text(rid, yaml.safe_dump(config, sort_keys=False), "config.yaml")
            self.add(rid, params=params_of(config))
        tags = {T.NODE: meta.get("hostname", ""), T.GPU_IDS: meta.get("gpu_ids", ""),
                T.CUDA_VISIBLE_DEVICES: meta.get("cuda_visible_devices", ""), T.PID: meta.get("pid", ""),
                T.RESOURCES: meta.get("resources", "")}
        if meta.get("restored_from"):
            tags[T.RESTORED_FROM] = meta["restored_from"]
        self.add(rid, tags=tags)

    def metrics(self, trial_id, step, ts, values) -> None:
        """Buffer a report's metrics at `step`; a (metric, step) MLflow holds or will hold is not logged again (a
        restored trial reports steps again)."""
        from mlflow.entities import Metric

        rid = self._trial_run(trial_id)
        last = self._last_step.setdefault(rid, {})
        fresh = {k: v for k, v in values.items() if step > last.get(k, float("-inf"))}
        if len(fresh) < len(values):  # a restored trial reporting steps it had reported before
            self._replayed.setdefault(rid, set()).add(step)
            if ts >= self._born_ms:  # the work lost since its checkpoint, being done again
                redo = self._redoing.setdefault(rid, [step, ts, 0, ts])
                redo[2:] = [redo[2] + 1, ts]
        elif rid in self._redoing:  # the redo is over: its steps and the seconds they took, again
            self._redone(rid, ts)
        for k in fresh:
            last[k] = step
        self.add(rid, metrics=[Metric(k, float(v), ts, step) for k, v in fresh.items()])

    def _redone(self, rid: str, ts: int | None) -> None:
        """Tag the run with a finished redo: its first step, how many steps, and their seconds (up to the report
        after it; a trial that ended within its redo: its steps' span, stretched by one step)."""
        first, since, n, last = self._redoing.pop(rid)
        span = (ts - since) if ts is not None else (last - since) * n / max(1, n - 1)
        self.add(rid, tags={T.REDONE.format(first): f"{n} {max(0.0, span / 1000):.1f}"})

    def sweep_metrics(self, step, ts, values) -> None:
        """Buffer metrics of the parent run at `step`."""
        from mlflow.entities import Metric

        self.add(self._require_parent(), metrics=[Metric(k, float(v), ts, step) for k, v in values.items()])

    def tags(self, trial_id, tags) -> None:
        """Buffer tags of the trial's run."""
        self.add(self._trial_run(trial_id), tags=tags)

    def end(self, trial_id, status, tags, log_path, error_text, end_ms=None, replay=False) -> None:
        """End the trial's run: its tags (steps replayed counted), its output log and error text as artifacts, its
        status. A replayed end of a run already ended changes nothing."""
        rid = self._trial_run(trial_id)
        if replay and self.mlf.get_run(rid).info.status in TERMINAL:  # applied before the crash already
            self._ended.add(rid)
            self._forget(rid)
            return
        if self._replayed.get(rid):
            tags = {**tags, T.STEPS_REPLAYED: len(self._replayed[rid])}
        if rid in self._redoing:
            self._redone(rid, None)
        self.add(rid, tags=tags)
        self.flush(rid)
        if log_path and os.path.exists(log_path):
            with open(log_path, errors="replace") as f:
                self._log_text(rid, f.read(), "output.log")
        if error_text:
            self._log_text(rid, error_text, "error.txt")
        self.mlf.set_terminated(rid, status, end_time=end_ms)
        self._ended.add(rid)
        self._forget(rid)

    def _forget(self, rid: str) -> None:
        """What this process knew of an ended run's contents (its param keys, metrics' last steps, steps replayed):
        read again from MLflow should the run start again (a restored trial), so that the driver's memory does not
        grow with every finished trial."""
        for held in (self._params, self._last_step, self._replayed, self._artifact_uri):
            held.pop(rid, None)
        self._known.discard(rid)

    def _log_text(self, rid: str, text: str, name: str) -> None:
        """A text artifact of a trial's run, written where MLflow said its artifacts go when the run was created
        or read (MlflowClient.log_text asks the store for the run first: a query per run, a third of a short
        trial's MLflow time on sqlite)."""
        uri = self._artifact_uri.get(rid)
        if uri is None:
            self.mlf.log_text(rid, text, name)
        else:
            log_text(uri, self.uri, text, name)

    # -- batching ---------------------------------------------------------------------------------------
    def add(self, rid, metrics=(), params=None, tags=None) -> None:
        """Buffer metrics, params (only those MLflow lacks: params are immutable) and tags of a run."""
        buf = self._pending.setdefault(rid, {"metrics": [], "params": {}, "tags": {}})
        buf["metrics"].extend(metrics)
        sent = self._params.get(rid, ())
        for k, v in (params or {}).items():  # a param keeps its first value, sent or still buffered
            if k not in sent:
                buf["params"].setdefault(k, str(v))
        buf["tags"].update({k: str(v) for k, v in (tags or {}).items()})

    @property
    def pending(self) -> bool:
        """Whether anything is buffered, not yet sent."""
        return any(b["metrics"] or b["params"] or b["tags"] for b in self._pending.values())

    def pending_runs(self) -> list[str]:
        """The runs with a buffer."""
        return list(self._pending)

    def drop(self, rid) -> dict | None:
        """Take a run's buffer out, as the fields of a "batch" operation (to park it, when MLflow refuses it)."""
        buf = self._pending.pop(rid, None)
        if not buf:
            return None
        metrics = [{"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step} for m in buf["metrics"]]
        return {"rid": rid, "metrics": metrics, "params": buf["params"], "tags": buf["tags"]}

    def flush(self, rid) -> None:
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

    def batch(self, rid, metrics, params, tags) -> None:
        """A parked buffer, sent again (op "batch")."""
        from mlflow.entities import Metric

        self.add(rid, metrics=[Metric(m["key"], m["value"], m["timestamp"], m["step"]) for m in metrics],
                 params=params, tags=tags)
        self.flush(rid)

    # -- what the store can say before it is contacted ---------------------------------------------------
    @staticmethod
    def check(uri: str) -> None:
        """What can be said of a tracking URI without importing MLflow: its scheme, and a sqlite file's folder."""
        scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
        if scheme not in SCHEMES:
            raise BadInput(f"tracking.uri={uri}: MLflow cannot store runs there; valid stores are "
                           "sqlite:///path.db, postgresql://..., mysql://..., http(s)://server (an MLflow server).")
        if scheme == "sqlite":
            folder = Path(uri[len("sqlite:///"):]).parent
            if not folder.is_dir():
                raise BadInput(f"tracking.uri={uri}: the folder {folder} does not exist.")
            if not os.access(folder, os.W_OK):
                raise BadInput(f"tracking.uri={uri}: the folder {folder} cannot be written.")

    @staticmethod
    def refuses(uri: str) -> str | None:
        """For a SQL database store, why it can never work (credentials, no such database, no driver), or None."""
        return _database_refuses(uri)

    @staticmethod
    def transient(exc: Exception) -> bool:
        """An outage or a busy store (retry, in order) as opposed to MLflow refusing the request itself (park)."""
        return _transient(exc)

    # -- reading sweeps back --------------------------------------------------------------------------------
    def _record(self, run) -> RunRecord:
        i, d = run.info, run.data
        return RunRecord(i.run_id, i.experiment_id, i.run_name or "", i.status, dict(d.params), dict(d.tags),
                         dict(d.metrics), i.start_time, i.end_time, d.tags.get(M.PARENT), d.tags.get(M.GIT_COMMIT),
                         d.tags.get(M.NOTE, ""))

    def _exp(self) -> str | None:
        exp = self.mlf.get_experiment_by_name(self.experiment)
        return None if exp is None else exp.experiment_id

    def find_sweep(self, name: str) -> RunRecord | None:
        """The newest parent run of sweep `name` in the experiment, or None."""
        exp = self._exp()
        runs = [] if exp is None else self.mlf.search_runs(
            [exp], f"tags.`{T.SWEEP}` = '{name}' and tags.`{T.KIND}` = 'sweep'",
            order_by=["attributes.start_time DESC"], max_results=1)
        return self._record(runs[0]) if runs else None

    def read_sweep(self, name: str) -> SweepRecord:
        """Sweep `name`: its parent, every child run (paged), its space.yaml; BadInput naming the sweep if there
        is none."""
        import yaml

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bar in the table
        parent = self.find_sweep(name)
        if parent is None:
            raise BadInput(f"sweep {name!r}: no such sweep in MLflow experiment '{self.experiment}' "
                           f"({self.uri}); `danlu ui` lists the sweeps there.")
        text = self.artifact_text(parent.run_id, "space.yaml")
        try:
            space = (yaml.safe_load(text) or {}) if text is not None else None
        except yaml.YAMLError:
            space = None
        return SweepRecord(parent, self.trial_runs(parent.run_id, parent.experiment_id),
                           space if isinstance(space, dict) else None)

    def trial_runs(self, parent_id: str, experiment_id: str | None = None) -> list[RunRecord]:
        """The child runs of a parent, paged."""
        from orchestrator.tracking.mlflow_internals import child_runs

        exp = experiment_id or self.mlf.get_run(parent_id).info.experiment_id
        found = child_runs(self.mlf, exp, M.PARENT, parent_id)  # a database: only the columns it needs
        if found is not None:
            return [RunRecord(**run, parent_id=parent_id, commit=run["tags"].get(M.GIT_COMMIT),
                              description=run["tags"].get(M.NOTE, "")) for run in found]
        children, token = [], None
        while True:  # paged: a sweep may hold more runs than one page
            page = self.mlf.search_runs([exp], f"tags.`{M.PARENT}` = '{parent_id}'", max_results=5000,
                                        page_token=token)
            children += [self._record(r) for r in page]
            token = page.token
            if not token:
                return children

    def get_run(self, run_id: str) -> RunRecord | None:
        """One run by its id, or None (MLflow raises for an id it does not hold)."""
        from mlflow.exceptions import MlflowException

        try:
            return self._record(self.mlf.get_run(run_id))
        except MlflowException:
            return None

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of a run's metric, as MLflow holds it."""
        return [(m.step, m.value) for m in self.mlf.get_metric_history(run_id, key)]

    def histories(self, run_ids: list[str], key: str) -> dict[str, list[tuple[int, float]]]:
        """run id -> (step, value) of its metric `key`, for many runs at once: a query per 500 runs from a
        database, a request per 100 runs from a server (mlflow_internals.py), else one call per run."""
        from orchestrator.tracking.mlflow_internals import bulk_history

        got = bulk_history(self.mlf, list(run_ids), key)
        return got if got is not None else {rid: self.history(rid, key) for rid in run_ids}

    def artifact_text(self, run_id: str, path: str) -> str | None:
        """A text artifact of a run, or None where it has none."""
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bar on the terminal
        try:
            local = self.mlf.download_artifacts(run_id, path)
        except Exception:  # none of that name (MLflow raises its own error, or OSError, by store)
            return None
        with open(local, errors="replace") as f:
            return f.read()

    def sweeps_of_job(self, job: str) -> list[RunRecord]:
        """The experiment's sweeps of `job` (parent runs), newest first, at most 50."""
        exp = self._exp()
        if exp is None:
            return []
        runs = self.mlf.search_runs([exp], f"params.`job.name` = '{job}' and tags.`{T.KIND}` = 'sweep'",
                                    order_by=["attributes.start_time DESC"], max_results=50)
        return [self._record(r) for r in runs]

    # -- the end of a sweep ------------------------------------------------------------------------------------
    def attach_report(self, parent_id: str, folder: Path, metrics: dict[str, float], tags: dict[str, str],
                      finish: str | None, description: str = "") -> None:
        """The report folder as the parent's artifacts under report/, metrics that differ from what it holds,
        tags, the description (MLflow's note: its run page shows it); then the parent ends with `finish`, if given."""
        from mlflow.entities import Metric, RunTag

        tags = {**tags, **({M.NOTE: description[:5000]} if description else {})}

        self.mlf.log_artifacts(parent_id, str(folder), "report")
        held = self.mlf.get_run(parent_id).data.metrics
        now = int(time.time() * 1000)
        self.mlf.log_batch(parent_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()
                                               if held.get(k) != float(v)],
                           tags=[RunTag(k, str(v)) for k, v in tags.items()])
        if finish:
            self.mlf.set_terminated(parent_id, finish)

    def end_parent(self, parent_id: str, status: str, tags: dict[str, str]) -> None:
        """Tag the parent and end it with `status`."""
        for k, v in tags.items():
            self.mlf.set_tag(parent_id, k, v)
        self.mlf.set_terminated(parent_id, status)

    def attach_result(self, run_id: str, name: str, text: str, metrics: dict[str, float],
                      tags: dict[str, str]) -> None:
        """A text artifact, metrics and tags on a run (danlu compare's verdict)."""
        self.mlf.log_text(run_id, text, name)
        for k, tag in tags.items():
            self.mlf.set_tag(run_id, k, tag)
        for k, value in metrics.items():
            self.mlf.log_metric(run_id, k, float(value))

    def share_view(self, name: str, metric: str, mode: str, hyperparameters: list[str]) -> bool:
        """The sweep's runs table as MLflow's shared view (an experiment tag the UI opens by key); False if
        refused."""
        exp = self.exp_id or self._exp()
        return exp is not None and share_runs_view(self.mlf, exp, name, metric, mode, hyperparameters)

    def sweeps(self, limit: int = 200) -> tuple[str | None, list[RunRecord]]:
        """(the experiment's id, its sweeps' parent runs, newest first), for `danlu ui`, which opens the
        experiment in MLflow's UI: it is tagged as model training. (None, []) where there is no such experiment."""
        exp = self.mlf.get_experiment_by_name(self.experiment)
        if exp is None:
            return None, []
        mark_training(self.mlf, exp)
        runs = self.mlf.search_runs([exp.experiment_id], f"tags.`{T.KIND}` = 'sweep'",
                                    order_by=["attributes.start_time DESC"], max_results=limit)
        return exp.experiment_id, [self._record(r) for r in runs]
def _database_refuses(uri: str) -> str | None:
    """For a SQL database store, why it can never work (no such database or user, credentials refused, no
    driver), or None (it works, or is unreachable: an outage). Asked once, before MLflow, whose own engine
    retries any failure with backoff for the better part of an hour."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in ("postgresql", "mysql", "mssql"):
        return None
    import sqlalchemy

    engine = None
    try:
        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": 10} if scheme == "postgresql" else {})
        with engine.connect():
            return None
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc} (the database driver is not installed)"
    except Exception as exc:
        text = " ".join(str(exc).split())
        permanent = ("does not exist", "authentication failed", "password", "access denied", "unknown database",
                     "pg_hba.conf", "permission denied")
        if any(w in text.lower() for w in permanent):
            return f"{type(exc).__name__}: {text.split('(Background on this error')[0].strip()[:400]}"
        return None
    finally:
        if engine is not None:
            engine.dispose()


def _transient(exc: Exception) -> bool:
    """An outage or a busy store (retry), as opposed to MLflow refusing the request itself (park)."""
    from mlflow.exceptions import MlflowException



    if isinstance(exc, Refused):
        return False
    if isinstance(exc, MlflowException):
        refused = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST",
                   "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED", "FEATURE_DISABLED"}
        text = str(exc)
        denied = any(f"error code {c}" in text for c in (400, 401, 403, 404))  # the server said no
        return exc.error_code not in refused and not denied and "unsupported URI" not in text
    return isinstance(exc, (OSError, ConnectionError, TimeoutError)) or "OperationalError" in type(exc).__name__
