"""MLflow: one parent run per sweep, one nested child run per trial, all written from the driver.

Three parts, each in its own module:
- orchestrator/journal.py: every operation on disk before it is sent, how far MLflow confirmed it, and the
  operations MLflow refused (parked, never dropped);
- orchestrator/mlflow_writer.py: the operations themselves, idempotent (safe to repeat after any crash);
- here, `Tracker`: the thread that drives them. Tune's callbacks only enqueue; one writer thread sends
  metrics/params/tags together with log_batch every `tracking.flush_s` seconds and when a trial ends; an
  unreachable store is waited out in order; a refusal is parked and reported; the thread never dies
  quietly (`Tracker.dead`, which stops the sweep).

Why not Ray's MLflowLoggerCallback: it logs each result synchronously on Tune's event loop (a sqlite or
HTTP round trip per report), keeps its trial->run map in memory only (a restored driver duplicates
runs), and knows nothing of parent runs or of ASHA's early stops.
"""

from __future__ import annotations

import os
import queue
import re
import sys
import threading
import time
from pathlib import Path

from orchestrator.errors import BadInput
from orchestrator.journal import Journal

OPS = ("open", "close_sweep", "discard", "start", "meta", "metrics", "tags", "end", "batch")  # RunWriter methods
MLFLOW_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "file")


def resolve_uri(uri: str, cwd: str | None = None) -> str:
    """Make a relative sqlite path absolute, so trials and `mlflow ui` agree on the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(cwd or os.getcwd(), uri[len(prefix):]).resolve())
    return uri


def check_uri(uri: str) -> None:
    """What can be said of a tracking URI without importing MLflow: its scheme, and a sqlite file's folder."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
    if scheme not in MLFLOW_SCHEMES:
        raise BadInput(f"tracking.uri={uri}: MLflow cannot store runs there; valid stores are "
                       "sqlite:///path.db, postgresql://..., mysql://..., http(s)://server (an MLflow server).")
    if scheme == "sqlite":
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise BadInput(f"tracking.uri={uri}: the folder {folder} does not exist.")
        if not os.access(folder, os.W_OK):
            raise BadInput(f"tracking.uri={uri}: the folder {folder} cannot be written.")


class Tracker:
    """A sweep's MLflow writer. Methods enqueue and return at once; `close()` waits until all is sent.

    With `storage` (the sweep's Ray directory) every operation is first appended to the journal there; a
    restarted driver replays what MLflow never confirmed, and sends the parked operations again.
    """

    JOURNAL = Journal.JOURNAL

    def __init__(self, uri: str, experiment: str, flush_s: float = 2.0, storage: Path | None = None,
                 retry_s: float = 30.0, sweep_id: str | None = None, on_fault=None):
        self.uri, self.experiment, self.flush_s, self.retry_s = uri, experiment, flush_s, retry_s
        self.sweep_id = sweep_id
        self.on_fault = on_fault  # called with an orchestrator.disk.Fault: the journal or the store cannot be written
        self.halted = None  # the Fault that stopped the writer (MLflow's store is on a full disk): ops wait in the journal
        # MLflow's HTTP client would retry each request for minutes on its own; the writer retries itself,
        # in order, and can then say at once that the server is unreachable.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        # a "View run ... at" pair of lines per finished run, on a server: danlu's summary says where to look
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.storage = storage
        self.journal = Journal(storage) if storage is not None else None
        backlog = self.journal.unapplied() if self.journal else []
        self.replayed_ops = len(backlog)
        self._backlog_end = backlog[-1][1] if backlog else None  # ops up to here are an earlier driver's
        self.errors: list[str] = []  # what MLflow refused (and where it is kept)
        self.parked = 0
        self.unsent = 0  # operations not sent because the store's disk was full (kept in the journal)
        self.dead: BaseException | None = None  # the writer thread's end, if it ended other than by close()
        self.writer = None
        self._applied: int | None = None  # journal offset that MLflow holds up to (as ops are applied)
        self._closed = False
        self._outage_since: float | None = None
        self._verdict: str | None = None  # "ok", "outage" or why the store can never work
        self._checked = threading.Event()
        self._opened = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        for op, end in backlog:  # what an earlier driver journaled but MLflow never confirmed: first
            self._queue.put((op, end))
        self._thread = threading.Thread(target=self._main, name="danlu-mlflow", daemon=True)
        self._thread.start()

    @property
    def parent_id(self) -> str | None:
        return self.writer.parent_id if self.writer else None

    @property
    def notes(self) -> list[str]:
        return self.writer.notes if self.writer else []

    def check_store(self, timeout: float = 120.0) -> None:
        """Before anything launches: BadInput if the store can never work (a scheme MLflow does not serve,
        a sqlite file that cannot be opened, credentials refused). A server that does not answer yet is an
        outage, waited out by the writer as the sweep goes on."""
        self._checked.wait(timeout)
        if self._verdict not in (None, "ok", "outage"):
            from orchestrator.disk import is_full, sqlite_path, where

            if is_full(self._verdict):  # not the user's mistake: the store's disk is full
                from orchestrator.errors import SweepFailed

                raise SweepFailed(f"disk full at {where(sqlite_path(self.uri) or self.uri)}: the MLflow store cannot be "
                                  f"written ({self._verdict}). Nothing was launched; free space on that disk, then run "
                                  "the same command again.")
            raise BadInput(f"tracking.uri={self.uri}: {self._verdict}")

    def _put(self, *op) -> None:
        if self._closed:  # after close() (e.g. a second Ctrl-C while closing): the journal is shut
            return
        end = None
        if self.journal is not None:
            try:
                end = self.journal.append(op)
            except OSError as exc:  # a full disk (or a failing one): MLflow may still take it; the sweep stops
                self._fault("the MLflow journal", self.journal.path, exc)
        self._queue.put((op, end))

    def _fault(self, what: str, path, exc: BaseException) -> None:
        from orchestrator.disk import Fault, is_full

        text = " ".join(str(exc).split())
        sql = re.search(r"\((sqlite3\.\w+|psycopg2\.[\w.]+)\) ([^\[(]+)", text)  # the database's own words
        fault = Fault(what, str(path), f"{sql.group(1)}: {sql.group(2).strip()}" if sql else text[:300], is_full(exc))
        if self.on_fault is not None:
            self.on_fault(fault)
        else:
            print(f"danlu: {fault.describe()}", file=sys.stderr, flush=True)
        return fault

    # -- the sweep ------------------------------------------------------------------------------
    def open_sweep(self, name: str, config: dict, space: dict, root: Path, command: list[str],
                   tags: dict[str, str] | None = None, settings: dict[str, str] | None = None) -> None:
        self._put("open", name, config, space, str(root), command, tags or {}, settings)

    def wait_parent(self, timeout: float = 120.0) -> str | None:
        self._opened.wait(timeout)
        return self.parent_id

    def close_sweep(self, metrics: dict[str, float], tags: dict[str, str], status: str,
                    trials: dict[str, dict | None] | None = None, report_pending: bool = False) -> None:
        """End the sweep's runs. `trials`: every trial Tune holds, with how it ended for those that did (see
        RunWriter.close_sweep); `report_pending`: the parent stays RUNNING until its report is attached."""
        self._put("close_sweep", metrics, tags, status, trials, report_pending)

    def discard(self) -> None:
        """Delete every run of this sweep (a sweep stopped before it measured anything)."""
        self._put("discard")

    # -- trials ---------------------------------------------------------------------------------
    def trial_start(self, trial_id: str, name: str, params: dict[str, str], tags: dict[str, str],
                    start_ms: int | None = None) -> None:
        self._put("start", trial_id, name, params, tags, start_ms)

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
        if self.journal is not None:
            self.journal.close()
        return not self._thread.is_alive() and self._queue.empty() and self.dead is None and self.halted is None

    def unlogged_message(self, resume: str) -> str | None:
        """What the summary says when anything did not reach MLflow, and how to send it again."""
        if not (self.errors or self.dead):
            return None
        where = f" They are kept in {self.storage / Journal.PARKED}" if self.parked and self.storage else ""
        return (f"{len(self.errors)} tracking operation(s) were not logged to MLflow (listed above).{where}; "
                f"`{resume}` sends them again once the cause is fixed.")

    # -- the writer thread ----------------------------------------------------------------------
    def _main(self) -> None:
        try:
            if self._connect():
                self._retry_parked()
                self._loop()
        except BaseException as exc:  # a bug, not MLflow: the sweep must hear of it (see tuner.TrialRuns)
            self.dead = exc
            import traceback

            print(f"danlu: error: the MLflow writer stopped: {type(exc).__name__}: {exc}\n"
                  f"{''.join(traceback.format_exception(exc))}", file=sys.stderr, flush=True)
        finally:
            self._checked.set()
            self._opened.set()

    def _connect(self) -> bool:
        """Import MLflow, reach the store, find or create the experiment (while Ray starts). False if the
        store can never work (the verdict says why)."""
        import logging

        # "Creating tables..." notices, and the traceback MLflow logs before it raises a database error: the
        # writer handles every error it raises (waits out an outage, parks a refusal, stops on a full disk) and says so
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        from orchestrator.mlflow_writer import RunWriter

        refused = _database_refuses(self.uri)
        if refused:
            self._verdict = refused
            return False
        try:
            self.writer = RunWriter(self.uri, self.experiment, self.sweep_id, self.storage)
            self.writer.experiment_id()
        except Exception as exc:
            if not self.uri.startswith("sqlite") and _transient(exc):
                self._verdict = "outage"
                self._checked.set()
                self._retrying("connect", lambda: self.writer.experiment_id() if self.writer else self._reconnect())
            else:
                self._verdict = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
                if "duplicate column" in str(exc) or "alembic" in str(exc).lower():
                    self._verdict += (" (the store looks half-created or half-migrated, e.g. by a process killed "
                                      "while MLflow built its tables: move the file aside, or use another)")
                return False
        self._verdict = self._verdict or "ok"
        self._checked.set()
        return True

    def _reconnect(self) -> None:
        from orchestrator.mlflow_writer import RunWriter

        self.writer = RunWriter(self.uri, self.experiment, self.sweep_id, self.storage)
        self.writer.experiment_id()

    def _retry_parked(self) -> None:
        """Operations MLflow refused before (this sweep's earlier drivers): sent again first. What it still
        refuses stays parked; the file is replaced only once all were tried (a kill meanwhile keeps it)."""
        if self.journal is None:
            return
        entries = self.journal.parked()
        if not entries:
            return
        print(f"danlu: sending {len(entries)} tracking operation(s) MLflow refused before", file=sys.stderr, flush=True)
        still = []
        for op, _ in entries:
            why = self._apply(op, replay=True, park=False)
            if why:
                still.append((op, why))
        self.journal.set_parked(still)
        self.parked += len(still)

    def _loop(self) -> None:
        last = time.monotonic()
        while True:
            try:
                op, end = self._queue.get(timeout=self.flush_s)
            except queue.Empty:
                op, end = None, None
            if op is not None and op[0] == "stop":
                if self.halted is None:
                    self._flush_all()
                    self._mark_applied()
                return
            if self.halted is not None:  # the store's disk is full: what is queued waits in the journal
                if op is not None:
                    self.unsent += 1
                continue
            if op is not None:
                replay = end is not None and self._backlog_end is not None and end <= self._backlog_end
                self._apply(op, replay)
                if op[0] == "open":
                    self._opened.set()
                if end is not None and self.halted is None:
                    self._applied = end
            if time.monotonic() - last >= self.flush_s:
                self._flush_all()
                self._mark_applied()
                last = time.monotonic()

    def _apply(self, op: tuple, replay: bool, park: bool = True) -> str | None:
        """Apply one operation, waiting out an outage; a refusal is parked (and returned)."""
        kind, args = op[0], list(op[1:])
        method = getattr(self.writer, kind, None) if kind in OPS else None
        if method is None:
            return self._refused(op, f"unknown operation {kind!r}", park)
        kwargs = {"replay": True} if replay and kind in ("open", "start", "end", "close_sweep") else {}
        why = self._retrying(kind, lambda: method(*args, **kwargs))
        return self._refused(op, why, park) if why else None

    def _refused(self, op: tuple, why: str, park: bool) -> str:
        subject = f" of trial {op[1]}" if op[0] in ("start", "meta", "metrics", "tags", "end") else ""
        self._warn(f"MLflow refused {op[0]}{subject}: {why}")
        if park and self.journal is not None:
            try:
                self.journal.park(op, why)
                self.parked += 1
            except OSError as exc:  # still in the journal, past its confirmed offset: sent again next time
                self._fault("the list of operations MLflow refused", self.journal.dir / self.journal.PARKED, exc)
        return why

    def _retrying(self, what: str, fn) -> str | None:
        """Run fn until MLflow takes it; an unreachable or busy store is waited out, in order, with a warning
        while it lasts. A refusal (a bad request, or an operation that cannot apply) is returned as text."""
        delay = 0.5
        while True:
            if self.halted is not None:
                return None
            try:
                fn()
            except Exception as exc:
                from orchestrator.disk import is_full

                if is_full(exc):  # not an outage: the store's own disk is full; stop sending, keep the journal
                    from orchestrator.disk import sqlite_path

                    self.halted = self._fault("the MLflow store", sqlite_path(self.uri) or self.uri, exc)
                    return None
                if not _transient(exc):
                    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    kept = f" in {self.storage / Journal.JOURNAL}" if self.storage else ""
                    print(f"danlu: warning: MLflow at {self.uri} is unreachable ({type(exc).__name__}); the sweep "
                          f"goes on, and what it logs is kept{kept} until MLflow is back.", file=sys.stderr, flush=True)
                time.sleep(delay)
                delay = min(delay * 2, self.retry_s)
                continue
            if self._outage_since is not None:
                print(f"danlu: MLflow is reachable again after {time.monotonic() - self._outage_since:.0f} s; "
                      "sending what was kept.", file=sys.stderr, flush=True)
                self._outage_since = None
            return None

    def _flush_all(self) -> None:
        from orchestrator.mlflow_writer import buffer_op

        if self.halted is not None:
            return
        for rid in self.writer.pending_runs():
            why = self._retrying("flush", lambda rid=rid: self.writer.flush(rid))
            if why:  # refused: the buffer is parked as a "batch" operation, and the sweep goes on
                buf = self.writer.drop(rid)
                if buf:
                    self._refused(buffer_op(rid, buf), why, park=True)

    def _mark_applied(self) -> None:
        """Everything up to self._applied is in MLflow (or parked), no metrics left in buffers: record it."""
        if self.journal is None or self._applied is None or self.writer.pending or self.halted is not None:
            return
        self.journal.mark_applied(self._applied)

    def _warn(self, msg: str) -> None:
        self.errors.append(msg)
        print(f"danlu: warning: {msg}", file=sys.stderr, flush=True)


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

    from orchestrator.mlflow_writer import Refused

    if isinstance(exc, Refused):
        return False
    if isinstance(exc, MlflowException):
        refused = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST",
                   "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED", "FEATURE_DISABLED"}
        text = str(exc)
        denied = any(f"error code {c}" in text for c in (400, 401, 403, 404))  # the server said no
        return exc.error_code not in refused and not denied and "unsupported URI" not in text
    return isinstance(exc, (OSError, ConnectionError, TimeoutError)) or "OperationalError" in type(exc).__name__
