"""The thread that drives a sweep's writes to its tracking store (one parent run per sweep, one nested child run per
trial, all written from the driver).

Tune's callbacks only enqueue; one writer thread applies each operation to the store (a RunStore: MLflow's,
orchestrator/tracking/mlflow_store.py, unless tracking.store names another), which sends metrics, params and tags
together every `tracking.flush_s` seconds and when a trial ends. Every operation is first in the journal
(orchestrator/tracking/journal.py); an unreachable store is waited out in order; a refusal is parked and reported;
the thread never dies quietly (`Tracker.dead`, which stops the sweep).

Why not Ray's MLflowLoggerCallback: it logs each result synchronously on Tune's event loop (a sqlite or
HTTP round trip per report), keeps its trial->run map in memory only (a restored driver duplicates
runs), and knows nothing of parent runs or of early stops.
"""

from __future__ import annotations

import os
import queue
import re
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import BadInput
from orchestrator.tracking.journal import OPS, TRIAL_OPS, Journal, Op, op

if TYPE_CHECKING:
    from orchestrator.storage.disk import Fault
    from orchestrator.tracking import RunStore


class Tracker:
    """A sweep's MLflow writer. Methods enqueue and return at once; `close()` waits until all is sent.

    With `storage` (the sweep's Ray directory) every operation is first appended to the journal there; a
    restarted driver replays what MLflow never confirmed, and sends the parked operations again.
    """

    JOURNAL = Journal.JOURNAL

    def __init__(self, uri: str, experiment: str, flush_s: float = 2.0, storage: Path | None = None,
                 retry_s: float = 30.0, sweep_id: str | None = None, on_fault=None, store: str = "mlflow"):
        self.uri, self.experiment, self.flush_s, self.retry_s = uri, experiment, flush_s, retry_s
        self.kind = store  # tracking.store: which RunStore (orchestrator.tracking.store_class)
        self.sweep_id = sweep_id
        self.on_fault = on_fault  # called with an orchestrator.storage.disk.Fault: the journal or the store cannot be written
        self.halted: Fault | None = None  # the Fault that stopped the writer (MLflow's store is on a full disk): ops wait in the journal
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
        self.store: RunStore | None = None  # the RunStore, made in the writer thread (importing MLflow takes seconds)
        self._applied: int | None = None  # journal offset that MLflow holds up to (as ops are applied)
        self._closed = False
        self._outage_since: float | None = None
        self._verdict: str | None = None  # "ok", "outage" or why the store can never work
        self._checked = threading.Event()
        self._opened = threading.Event()
        # nothing is sent (an earlier driver's backlog, parked operations) before the sweep is opened: a sweep that
        # turns out not to be restorable, or a command refused, leaves the store as it found it
        self._go = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        for o, end in backlog:  # what an earlier driver journaled but MLflow never confirmed: first
            self._queue.put((o, end))
        self._thread = threading.Thread(target=self._main, name="danlu-mlflow", daemon=True)
        self._thread.start()

    @property
    def parent_id(self) -> str | None:
        """The sweep's parent run, once the store has it."""
        return self.store.parent_id if self.store else None

    @property
    def notes(self) -> list[str]:
        """What the store did that the user should hear of (runs set aside, ends logged late)."""
        return self.store.notes if self.store else []

    def check_store(self, timeout: float = 120.0) -> None:
        """Before anything launches: BadInput if the store can never work (a scheme MLflow does not serve,
        a sqlite file that cannot be opened, credentials refused). A server that does not answer yet is an
        outage, waited out by the writer as the sweep goes on."""
        self._checked.wait(timeout)
        if self._verdict not in (None, "ok", "outage"):
            from orchestrator.storage.disk import is_full, sqlite_path, where

            if is_full(self._verdict):  # not the user's mistake: the store's disk is full
                from orchestrator.errors import SweepFailed

                raise SweepFailed(f"disk full at {where(sqlite_path(self.uri) or self.uri)}: the MLflow store cannot be "
                                  f"written ({self._verdict}). Nothing was launched; free space on that disk, then run "
                                  "the same command again.")
            raise BadInput(f"tracking.uri={self.uri}: {self._verdict}")

    def _put(self, kind: str, /, **fields) -> None:
        if self._closed:  # after close() (e.g. a second Ctrl-C while closing): the journal is shut
            return
        o = op(kind, **fields)
        end = None
        if self.journal is not None:
            try:
                end = self.journal.append(o)
            except OSError as exc:  # a full disk (or a failing one): MLflow may still take it; the sweep stops
                self._fault("the MLflow journal", self.journal.path, exc)
        self._queue.put((o, end))

    def _fault(self, what: str, path, exc: BaseException) -> Fault:
        from orchestrator.storage.disk import Fault, is_full

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
        """Journal and queue the sweep's open: its parent run, created or found again, with its settings as params
        and its config and space as artifacts."""
        self.begin()
        self._put("open", name=name, config=config, space=space, root=str(root), command=command,
                  extra_tags=tags or {}, settings=settings)

    def wait_parent(self, timeout: float = 120.0) -> str | None:
        """Wait until the open was applied; the parent run's id, or None."""
        self._opened.wait(timeout)
        return self.parent_id

    def close_sweep(self, metrics: dict[str, float], tags: dict[str, str], status: str,
                    trials: dict[str, dict | None] | None = None, report_pending: bool = False) -> None:
        """End the sweep's runs. `trials`: every trial Tune holds, with how it ended for those that did (see
        RunStore.close_sweep); `report_pending`: the parent stays RUNNING until its report is attached."""
        self._put("close_sweep", metrics=metrics, tags=tags, status=status, trials=trials, report_pending=report_pending)

    def discard(self) -> None:
        """Delete every run of this sweep (a sweep stopped before it measured anything)."""
        self._put("discard")

    # -- trials ---------------------------------------------------------------------------------
    def trial_start(self, trial_id: str, name: str, params: dict[str, str], tags: dict[str, str],
                    start_ms: int | None = None) -> None:
        """Journal and queue a trial's start: its child run, created or found again by its trial id."""
        self._put("start", trial_id=trial_id, name=name, params=params, tags=tags, start_ms=start_ms)

    def trial_meta(self, trial_id: str, meta: dict) -> None:
        """Journal and queue where a trial runs and its resolved config."""
        self._put("meta", trial_id=trial_id, meta=meta)

    def trial_metrics(self, trial_id: str, step: int, ts_ms: int, values: dict[str, float]) -> None:
        """Journal and queue a report's metrics (sent in batches every tracking.flush_s)."""
        self._put("metrics", trial_id=trial_id, step=step, ts=ts_ms, values=values)

    def sweep_metrics(self, step: int, values: dict[str, float]) -> None:
        """Journal and queue metrics of the sweep's parent run (its budget used, as it goes)."""
        import time

        self._put("sweep_metrics", step=step, ts=int(time.time() * 1000), values=values)

    def trial_tags(self, trial_id: str, tags: dict) -> None:
        """Journal and queue tags of a trial's run."""
        self._put("tags", trial_id=trial_id, tags=tags)

    def trial_end(self, trial_id: str, status: str, tags: dict, log_path: str | None, error_text: str | None,
                  end_ms: int | None = None):
        """Journal and queue a trial's end: its status, tags, output log and error text, and when it ended."""
        self._put("end", trial_id=trial_id, status=status, tags=tags, log_path=log_path, error_text=error_text,
                  end_ms=end_ms)

    @property
    def backlog(self) -> int:
        """Operations queued and not yet applied."""
        return self._queue.qsize()

    def close(self, timeout: float = 300.0) -> bool:
        """Send what is queued; False if MLflow did not take it all in time (it stays in the journal)."""
        self._closed = True
        if self._thread.is_alive():
            self._queue.put((None, "stop"))
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
            if self._connect() and self._begun():
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
        """Make the store (importing MLflow takes seconds: while Ray starts), reach it, find or create the
        experiment. False if the store can never work (the verdict says why)."""
        from orchestrator.tracking import store_class

        cls = store_class(self.kind)
        refused = cls.refuses(self.uri)
        if refused:
            self._verdict = refused
            return False
        try:
            self.store = cls(self.uri, self.experiment, self.sweep_id, self.storage)
            self.store.experiment_id()
        except Exception as exc:
            if not self.uri.startswith("sqlite") and cls.transient(exc):
                self._verdict = "outage"
                self._checked.set()
                self._retrying("connect", lambda: self.store.experiment_id() if self.store else self._reconnect())
            else:
                self._verdict = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
                if "duplicate column" in str(exc) or "alembic" in str(exc).lower():
                    self._verdict += (" (the store looks half-created or half-migrated, e.g. by a process killed "
                                      "while MLflow built its tables: move the file aside, or use another)")
                return False
        self._verdict = self._verdict or "ok"
        self._checked.set()
        return True

    def begin(self) -> None:
        """Let the writer send: first what the journal held from an earlier driver, then the parked operations,
        then what is queued. open_sweep() calls it; until then nothing reaches the store."""
        self._go.set()

    def _begun(self) -> bool:
        """Wait for the sweep's open (see _go); False if the tracker is closed first: then nothing was sent, and
        what the journal holds waits for the next driver."""
        while not self._go.wait(0.2):
            if self._closed:
                return False
        return True

    def _reconnect(self) -> None:
        from orchestrator.tracking import store_class

        self.store = store_class(self.kind)(self.uri, self.experiment, self.sweep_id, self.storage)
        self.store.experiment_id()

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
        for o, _ in entries:
            why = self._apply(o, replay=True, park=False)
            if why:
                still.append((o, why))
        self.journal.set_parked(still)
        self.parked += len(still)

    def _loop(self) -> None:
        last = time.monotonic()
        while True:
            try:
                o, end = self._queue.get(timeout=self.flush_s)
            except queue.Empty:
                o, end = None, None
            if end == "stop":
                if self.halted is None:
                    self._flush_all()
                    self._mark_applied()
                return
            if self.halted is not None:  # the store's disk is full: what is queued waits in the journal
                if o is not None:
                    self.unsent += 1
                continue
            if o is not None:
                replay = end is not None and self._backlog_end is not None and end <= self._backlog_end
                self._apply(o, replay)
                if o.name == "open":
                    self._opened.set()
                if end is not None and self.halted is None:
                    self._applied = end
            if time.monotonic() - last >= self.flush_s:
                self._flush_all()
                self._mark_applied()
                last = time.monotonic()

    def _apply(self, o: Op, replay: bool, park: bool = True) -> str | None:
        """Apply one operation, waiting out an outage; a refusal is parked (and returned)."""
        method = getattr(self.store, o.name, None) if o.name in OPS else None
        if method is None:
            return self._refused(o, f"unknown operation {o.name!r}", park)
        kwargs = {"replay": True} if replay and o.name in ("open", "start", "end", "close_sweep") else {}
        why = self._retrying(o.name, lambda: method(**o.fields, **kwargs))
        return self._refused(o, why, park) if why else None

    def _refused(self, o: Op, why: str, park: bool) -> str:
        subject = f" of trial {o.get('trial_id')}" if o.name in TRIAL_OPS else ""
        self._warn(f"MLflow refused {o.name}{subject}: {why}")
        if park and self.journal is not None:
            try:
                self.journal.park(o, why)
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
                from orchestrator.storage.disk import is_full

                if is_full(exc):  # not an outage: the store's own disk is full; stop sending, keep the journal
                    from orchestrator.storage.disk import sqlite_path

                    self.halted = self._fault("the MLflow store", sqlite_path(self.uri) or self.uri, exc)
                    return None
                if not self.store_transient(exc):
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
        store = self.store
        if self.halted is not None or store is None:
            return
        for rid in store.pending_runs():
            why = self._retrying("flush", lambda rid=rid: store.flush(rid))
            if why:  # refused: the buffer is parked as a "batch" operation, and the sweep goes on
                fields = store.drop(rid)
                if fields:
                    self._refused(op("batch", **fields), why, park=True)

    def _mark_applied(self) -> None:
        """Everything up to self._applied is in MLflow (or parked), no metrics left in buffers: record it."""
        if self.journal is None or self._applied is None or self.store is None or self.store.pending or \
                self.halted is not None:
            return
        self.journal.mark_applied(self._applied)

    def store_transient(self, exc: Exception) -> bool:
        """An outage or a busy store (retry), as the store's kind judges it."""
        from orchestrator.tracking import store_class

        return (type(self.store) if self.store is not None else store_class(self.kind)).transient(exc)

    def _warn(self, msg: str) -> None:
        self.errors.append(msg)
        print(f"danlu: warning: {msg}", file=sys.stderr, flush=True)
