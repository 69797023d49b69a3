"""Tracking: where a sweep's runs live (one parent run per sweep, one child run per trial), behind one interface.

The wing has three parts:
- journal.py: every operation on disk before it is sent, how far the store confirmed it, and the operations the
  store refused (parked, never dropped);
- writer.py: `Tracker`, the thread that applies the journaled operations to the store, in order, waiting out
  outages;
- mlflow_store.py: `MlflowStore`, the RunStore of MLflow (sqlite, PostgreSQL, an MLflow server): with
  mlflow_internals.py (the non-public parts of MLflow it reads through), the only module of danlu that imports
  MLflow.

Everything else (the sweep, the report, compare, `danlu ui`) reaches runs through a `RunStore`. `tracking.store`
chooses one: "mlflow" (the default), or "package.module:Class" for another implementation of the protocol.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from orchestrator.errors import BadInput
from orchestrator.tracking.journal import OPS

STORES = {"mlflow": "orchestrator.tracking.mlflow_store:MlflowStore"}


@dataclass
class RunRecord:
    """A run as the store holds it: what the report, compare and the audits read."""

    run_id: str
    experiment_id: str
    name: str
    status: str  # RUNNING | FINISHED | FAILED | KILLED
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # each metric's latest value
    start_ms: int | None = None
    end_ms: int | None = None
    parent_id: str | None = None  # a trial's run: its sweep's parent run
    commit: str | None = None  # the project's git commit the run recorded (a sweep's parent holds it)
    description: str = ""  # what its page says of it (a sweep's parent: the morning summary)


@dataclass
class SweepRecord:
    """A sweep read back: its parent run, its trials' runs (those set aside included: tag danlu.orphaned), and
    its space.yaml artifact (the sweep as written; None for a parent without it)."""

    parent: RunRecord
    trials: list[RunRecord]
    space: dict | None


class RunStore(Protocol):
    """A tracking store of sweeps: one parent run per sweep, one child run per trial.

    Writing is done by the journaled operations (journal.OPS), applied in order by the writer thread. Each must
    be safe to repeat: a driver can be killed between any two calls, and its successor replays what the journal
    holds past the confirmed offset (`replay=True` for open, start, end and close_sweep). Metrics, params and
    tags may be buffered per run and sent by flush(). A method raises what its backend raises; transient() tells
    an outage (waited out, in order) from a refusal (the operation is parked, said, and the exit is non-zero).

    Reading serves the report, compare and the morning review: find_sweep, read_sweep, history, artifact_text.
    """

    uri: str
    ui: bool  # MLflow's UI shows this store's runs: danlu prints addresses of them (a store that is not MLflow: none)
    parent_id: str | None  # the sweep's parent run, once open
    exp_id: str | None  # the experiment's id, once known
    notes: list[str]  # what the user should hear of (said at the sweep's end)
    orphans: list[dict]  # runs set aside: {"run", "trial", "status", "config_id", "seed"}

    def __init__(self, uri: str, experiment: str, sweep_id: str | None = None, storage: Path | None = None):
        """Args:
            uri: the store's address (tracking.uri), already resolved (resolve_uri).
            experiment: the experiment (a folder of sweeps) to write to and read from.
            sweep_id: the sweep's identity (its storage's danlu/sweep.json): how its parent run is found again.
            storage: the sweep's danlu/ folder, for a cache of run look-ups (optional).
        """

    @staticmethod
    def check(uri: str) -> None:
        """BadInput if `uri` can never be this store, said without contacting it (cheap: before Ray starts)."""

    @staticmethod
    def refuses(uri: str) -> str | None:
        """Why the store at `uri` can never work (credentials refused, no such database), or None."""

    @staticmethod
    def transient(exc: Exception) -> bool:
        """True for an outage or a busy store (retry), False for a refusal of the request itself (park it)."""

    def experiment_id(self) -> str:
        """The experiment's id, creating it if needed."""

    # the journaled operations (journal.OPS: their fields are these keyword arguments)
    def open(self, name, config, space, root, command, extra_tags=None, settings=None, replay=False) -> None:
        """Create the sweep's parent run, or find it again by its sweep_id and continue it."""

    def close_sweep(self, metrics, tags, status, trials=None, report_pending=False, replay=False) -> None:
        """End the sweep: no run stays RUNNING; the parent stays RUNNING with report_pending (see attach_report)."""

    def discard(self) -> None:
        """Delete the sweep's runs (a sweep that measured nothing)."""

    def start(self, trial_id, name, params, tags, start_ms=None, replay=False) -> None:
        """Create a trial's child run, or continue the one that exists for this trial id."""

    def meta(self, trial_id, meta) -> None:
        """Where the trial runs (host, GPUs, pid, resources) and its resolved config."""

    def metrics(self, trial_id, step, ts, values) -> None:
        """A report's metrics at `step`; a (metric, step) the store holds already is not logged again."""

    def tags(self, trial_id, tags) -> None:
        """Tags of the trial's run."""

    def sweep_metrics(self, step, ts, values) -> None:
        """Metrics of the sweep's parent run at `step` (what its budget has used, as it goes)."""

    def end(self, trial_id, status, tags, log_path, error_text, end_ms=None, replay=False) -> None:
        """End the trial's run with `status`, its output log and error text attached; `end_ms`: when the trial
        ended (ms since the epoch; None: now), not when the store is written, which an outage may delay."""

    def batch(self, rid, metrics, params, tags) -> None:
        """A run's buffer that was refused before (parked), sent again."""

    def flush(self, rid: str) -> None:
        """Send a run's buffered metrics, params and tags."""

    def pending_runs(self) -> list[str]:
        """The runs with something buffered."""

    @property
    def pending(self) -> bool:
        """Whether anything is buffered, not yet sent (a property)."""

    def drop(self, rid: str) -> dict | None:
        """Take a run's buffer out, as the fields of a "batch" operation (to park it)."""

    # reading
    def find_sweep(self, name: str) -> RunRecord | None:
        """The newest parent run of sweep `name` in the experiment, or None."""

    def read_sweep(self, name: str) -> SweepRecord:
        """Sweep `name` with its trials' runs (BadInput naming the sweep if there is none)."""

    def trial_runs(self, parent_id: str) -> list[RunRecord]:
        """The trials' runs of a sweep, by its parent run's id."""

    def get_run(self, run_id: str) -> RunRecord | None:
        """One run, by its id (any experiment), or None where the store has none of that id."""

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of a run's metric, in the order logged."""

    def histories(self, run_ids: list[str], key: str) -> dict[str, list[tuple[int, float]]]:
        """run id -> (step, value) of its metric `key` (empty where it has none), in a number of queries that does
        not grow with each run (a report of 10,000 trials makes no 10,000 calls)."""

    def artifact_text(self, run_id: str, path: str) -> str | None:
        """A text artifact of a run (config.yaml), or None if it has none."""

    def sweeps(self, limit: int = 200) -> tuple[str | None, list[RunRecord]]:
        """(the experiment's id, its sweeps' parent runs, newest first); (None, []) where there is no experiment."""

    def sweeps_of_job(self, job: str) -> list[RunRecord]:
        """Parent runs of the experiment's sweeps of `job`, newest first (an earlier sweep's measured seed spread)."""

    # the end of a sweep
    def attach_report(self, parent_id: str, folder: Path, metrics: dict[str, float], tags: dict[str, str],
                      finish: str | None, description: str = "") -> None:
        """The report's files as the parent's artifacts (report/), its numbers as metrics (those that differ
        from what it holds), its tags and its description (the verdict: RunRecord.description); then, with
        `finish`, the parent ends with that status."""

    def end_parent(self, parent_id: str, status: str, tags: dict[str, str]) -> None:
        """Tag the parent and end it (a sweep whose report could not be attached)."""

    def attach_result(self, run_id: str, name: str, text: str, metrics: dict[str, float],
                      tags: dict[str, str]) -> None:
        """A result made after the sweep (danlu compare's verdict): a text artifact, metrics and tags."""

    def share_view(self, name: str, metric: str, mode: str, hyperparameters: list[str]) -> bool:
        """Save the sweep's runs table (filter, order, columns, grouping) where the store's UI opens it by a key
        (orchestrator/tracking/links.py); False where the store cannot."""


def store_class(kind: str = "mlflow") -> type[RunStore]:
    """The RunStore class that `tracking.store` names (BadInput naming the key if there is none)."""
    target = STORES.get(kind, kind)
    module, _, name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        cls = None
    needs = ("check", "refuses", "transient", "experiment_id", "read_sweep", *OPS)
    if not isinstance(cls, type) or not all(callable(getattr(cls, n, None)) for n in needs):
        raise BadInput(f"tracking.store={kind}: no such store; valid: {', '.join(STORES)}, or package.module:Class "
                       "of a RunStore (orchestrator/tracking/__init__.py).")
    return cls


def open_store(uri: str, experiment: str, kind: str = "mlflow") -> RunStore:
    """A store to read sweeps from (and attach what is made after them), by its address."""
    return store_class(kind)(uri, experiment)


def resolve_uri(uri: str, cwd: str | None = None) -> str:
    """Make a relative sqlite path absolute, so trials and `mlflow ui` agree on the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(cwd or os.getcwd(), uri[len(prefix):]).resolve())
    return uri


def check_uri(uri: str, kind: str = "mlflow") -> None:
    """What the store can say of a tracking URI without being contacted (BadInput naming tracking.uri)."""
    store_class(kind).check(uri)


def check_held(uri: str, kind: str = "mlflow") -> None:
    """check_uri, for a command that reads runs (report, rerun): a sqlite store must exist already, not be made
    empty by the reading."""
    check_uri(uri, kind)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise BadInput(f"tracking.uri={uri}: no such MLflow store (the file does not exist); give the sweep's, "
                       "e.g. tracking.uri=sqlite:///path/to/mlflow.db.")
