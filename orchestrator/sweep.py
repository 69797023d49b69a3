"""`danlu sweep`: compose -> space -> checks -> Ray -> MLflow parent -> Tuner.fit -> summary.

Every check on the user's input runs before Ray starts or MLflow is touched, so a mistake costs
nothing and leaves nothing behind.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator import tags as T
from orchestrator.compose import apply_overrides, compose, hydra_context, split_overrides
from orchestrator.errors import BadInput, SweepFailed


@dataclass
class Plan:
    """A validated sweep, ready to launch."""

    cfg: object  # the composed base config (DictConfig)
    space: object  # orchestrator.space.Space
    base_overrides: list[str]  # what every trial composes with, before its own values
    trial_base: object  # their composition, unresolved: what a trial that chooses no config option starts from
    config_dir: Path
    storage_dir: Path  # <output_dir>/<sweep.name>, Ray's experiment directory
    tracking_uri: str


def plan(overrides: list[str], config_dir: Path, cwd: str | None = None) -> Plan:
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from orchestrator import report, search
    from orchestrator import scheduler as schedulers
    from orchestrator.cluster import check_address, trial_resources
    from orchestrator.space import override, parse_space
    from orchestrator.tracking import resolve_uri
    from orchestrator.trial import check_job
    from orchestrator.types import check_overrides

    cwd = cwd or os.getcwd()
    cl = split_overrides(overrides)
    with hydra_context(config_dir):
        # One composition (Hydra's defaults tree: the slow part) of the options chosen; the other fixed
        # overrides are applied to copies of it, as Hydra's compose applies them last.
        loader = GlobalHydra.instance().config_loader()
        groups, values, rest = _split_fixed(cl.fixed, loader)
        chosen = compose(groups)
        cfg = apply_overrides(copy.deepcopy(chosen), rest)
        fixed_keys = {o.lstrip("+~").split("=", 1)[0] for o in cl.fixed}
        entries = {k: v for k, v in (cfg.sweep.get("space") or {}).items() if k not in fixed_keys}
        entries.update(cl.sweep)  # command line wins
        seeds = cfg.sweep.seeds
        if not OmegaConf.is_list(seeds):
            raise BadInput(f"sweep.seeds={seeds}: a list of integers, e.g. sweep.seeds=[0,1,2].")
        space = parse_space(entries, list(seeds), lambda g: loader.get_group_options(g))
        # every swept key exists and every first value composes (a trial chooses options in the worker)
        probe = list(zip(space.probe_overrides(), space.params, strict=True))
        probe_groups = [o for o, prm in probe if prm.is_group]
        probed = apply_overrides(compose(groups + probe_groups), rest) if probe_groups else copy.deepcopy(cfg)
        apply_overrides(probed, [o for o, prm in probe if not prm.is_group])
        check_overrides(OmegaConf.to_container(chosen, resolve=False), values, space.params)
        try:
            OmegaConf.resolve(cfg)  # once, here: sweep.name's ${now:...} is fixed for every trial
        except OmegaConfBaseException as exc:
            raise BadInput(f"config: {' '.join(str(exc).split())}") from None
        name = str(cfg.sweep.name)
        cfg.sweep.name = name  # `sweep.name=nan` or `=2024` read as numbers; a name is a string
        trial_base = apply_overrides(apply_overrides(copy.deepcopy(chosen), rest), [override("sweep.name", name)])
    _check_sweep(cfg.sweep, name)
    schedulers.check(cfg.scheduler)
    search.check(space, cfg.search)
    report.check(cfg.report)
    trial_resources(cfg.resources)
    check_address(cfg.cluster)
    check_job(cfg.job.fn, config_dir.parent)
    if not all(isinstance(v, int) and v >= 1 for v in (cfg.checkpoint.every, cfg.checkpoint.keep)):
        raise BadInput("checkpoint.every and checkpoint.keep: integers >= 1.")
    storage = Path(cwd, cfg.output_dir).resolve() / name
    return Plan(cfg, space, cl.fixed + [override("sweep.name", name)], trial_base, config_dir, storage,
                resolve_uri(str(cfg.tracking.uri), cwd))


def sweep_settings(cfg: dict, space) -> dict[str, str]:
    """What the sweep is, as its parent run's params: the job, the space as written, num_samples, seeds, metric and
    mode, the scheduler and the searcher with their settings, the resources per trial. Not the base config's
    values (lr 0.05, batch 64: they would read as the sweep's result): those are its config.yaml artifact."""
    from orchestrator.compose import flatten

    out: dict[str, object] = {"job.name": cfg["job"]["name"], "job.fn": cfg["job"]["fn"]}
    out |= {f"sweep.{k}": cfg["sweep"].get(k) for k in ("metric", "mode", "num_samples", "seeds",
                                                        "max_concurrent_trials", "search_seed")}
    out |= {f"space.{k}": expr for k, expr in space.describe()["space"].items()}
    for section in ("scheduler", "search", "resources"):
        out |= {f"{section}.{k}": v for k, v in flatten(cfg.get(section) or {}) if k}
    if "epochs" in cfg:  # how long a trial runs (ASHA's max_t follows it)
        out["epochs"] = cfg["epochs"]
    return {k: str(v)[:6000] for k, v in out.items() if v is not None}


def _split_fixed(fixed: list[str], loader) -> tuple[list[str], list[tuple[str, object]], list[str]]:
    """The overrides that choose config-group options (they shape the defaults); the (key, value) of the
    plain ones, whose values must fit those defaults (orchestrator/types.py); and the text of every
    override that sets, adds or deletes a value (Hydra's `hydra.*` settings leave the job's config alone)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    groups, values, rest = [], [], []
    for text in fixed:
        (ov,) = parser.parse_overrides([text])
        key = ov.key_or_group
        if ov.package is not None or "/" in key or loader.get_group_options(key):
            groups.append(text)
        elif not key.startswith("hydra"):
            rest.append(text)
            if not (ov.is_add() or ov.is_delete() or ov.is_force_add()):
                values.append((key, ov.value()))
    return groups, values, rest


def _check_sweep(sweep, name: str) -> None:
    if sweep.mode not in ("max", "min"):
        raise BadInput(f"sweep.mode={sweep.mode}: valid modes are max, min.")
    if not isinstance(sweep.num_samples, int) or sweep.num_samples < 1:
        raise BadInput(f"sweep.num_samples={sweep.num_samples}: an integer >= 1.")
    if not sweep.metric or not isinstance(sweep.metric, str):
        raise BadInput("sweep.metric: the name of a metric the job reports, e.g. val_acc.")
    if not name or "/" in name or name.startswith("."):
        raise BadInput(f"sweep.name={name!r}: a plain directory name (letters, digits, - and _).")
    seed = sweep.get("search_seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise BadInput(f"sweep.search_seed={seed}: null (a fresh seed), or an integer >= 0.")
    limit = sweep.get("max_concurrent_trials")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise BadInput(f"sweep.max_concurrent_trials={limit}: null, or an integer >= 1.")


# danlu's own files live in <storage>/danlu/, not beside Ray's: on a restore, Tune copies every *.json and
# *.pkl at the top of its experiment directory into a staging directory and syncs that back up later, which
# would put stale copies of danlu's files back (and leave a half-written one when the driver is killed then)
STATE_DIR = "danlu"
SAVED = "sweep.json"  # the overrides the sweep started with (for `danlu resume`), its id and search seed
PROGRESS = "progress.json"  # trials done/total, the best so far (orchestrator/progress.py; `danlu list` reads it)
FINISHED = "finished.json"  # a sweep that ended whole: its last lines, so that its command prints them again
_OLD_LAYOUT = ("danlu.json", "mlflow_runs.json", "mlflow_journal.jsonl", "mlflow_journal.offset")


def state_dir(storage_dir: Path) -> Path:
    """Where danlu keeps a sweep's identity, its MLflow journal and trial->run map (the sweep's own files).
    A sweep stored by an earlier danlu (these files beside Ray's) has them moved here."""
    d = storage_dir / STATE_DIR
    if (storage_dir / _OLD_LAYOUT[0]).exists():
        d.mkdir(exist_ok=True)
        for name in _OLD_LAYOUT:
            target = d / (SAVED if name == "danlu.json" else name)
            if (storage_dir / name).exists() and not target.exists():
                os.replace(storage_dir / name, target)
    return d


def _identity(overrides: list[str]) -> list[str]:
    """The overrides that define a sweep: its name, where its storage lives and how it guards that storage
    (storage.*: a lower free-space margin to resume on a fuller disk) are not part of it."""
    return [o for o in overrides if not o.lstrip("+").startswith(("sweep.name=", "output_dir=", "storage."))]


SAVED_COPY = "sweep.copy.json"  # the identity twice: a file cut at any byte leaves the other


def read_identity(storage_dir: Path) -> dict | None:
    """The sweep's identity (danlu/sweep.json, or its copy where that one is damaged); None for a new sweep."""
    d = state_dir(storage_dir)
    damaged = []
    for name in (SAVED, SAVED_COPY):
        try:
            saved = json.loads((d / name).read_text())
            if isinstance(saved, dict) and isinstance(saved.get("overrides"), list):
                return saved
            damaged.append(f"{name}: not a sweep's identity")
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            damaged.append(f"{name}: {type(exc).__name__}")
    if damaged:
        raise SweepFailed(f"the sweep's identity in {d} cannot be read ({'; '.join(damaged)}): danlu cannot tell which "
                          "sweep this storage holds, nor find its MLflow runs. Nothing was changed. Its MLflow parent "
                          "run carries the same facts (tags danlu.sweep_id, danlu.search_seed, danlu.command): write "
                          f"them back into {d / SAVED} as {{\"overrides\": [...], \"sweep_id\": ..., "
                          "\"search_seed\": ...}, or choose another sweep.name.")
    return None


def saved_overrides(storage_dir: Path) -> list[str] | None:
    saved = read_identity(storage_dir)
    return saved["overrides"] if saved else None


def resume_command(p: Plan) -> str:
    parts = ["danlu"]
    if p.config_dir != Path.cwd() / "conf":
        parts += ["--config-dir", str(p.config_dir)]
    parts += ["resume", str(p.cfg.sweep.name)]
    if p.storage_dir.parent != Path.cwd() / "outputs":
        parts.append(f"output_dir={p.storage_dir.parent}")
    return " ".join(shlex.quote(x) for x in parts)


def submission_tags() -> dict[str, str]:
    """For a driver started by danlu's supervisor (orchestrator/supervise.py): which submission it belongs to
    and, for a resubmitted one, why the previous driver ended; kept on the sweep's parent run."""
    sid = os.environ.get("DANLU_SUBMISSION_ID")
    if not sid:
        return {}
    tags = {T.SUBMISSION_ID: sid}
    attempt = int(os.environ.get("DANLU_ATTEMPT", "0"))
    if attempt:
        tags |= {T.RESUBMISSIONS: str(attempt),
                 T.RESUBMISSION.format(attempt): os.environ.get("DANLU_RESUBMIT_REASON", "")[:1000]}
    return tags


def _identify(p: Plan, overrides: list[str]) -> dict:
    """The sweep's identity in its storage (danlu/sweep.json): the overrides it started with, an id that its MLflow
    parent run carries (so a restarted driver finds that run, whatever else it lost), and the seed of its
    search. Written before anything is launched; a later command with the same name must match it."""
    import random
    import uuid

    path = state_dir(p.storage_dir) / SAVED
    saved = read_identity(p.storage_dir)
    if saved is not None:
        if _identity(saved["overrides"]) != _identity(overrides):
            raise BadInput(
                f"sweep.name={p.cfg.sweep.name}: {p.storage_dir} holds a sweep started with other settings "
                f"({' '.join(_identity(saved['overrides'])) or 'unknown'}). Resume it with `{resume_command(p)}`, "
                "or choose another sweep.name.")
        return saved
    seed = p.cfg.sweep.get("search_seed")
    saved = {"overrides": list(overrides), "sweep_id": uuid.uuid4().hex,
             "search_seed": seed if seed is not None else random.randrange(2**31),
             "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"output_dir={p.storage_dir.parent}: the sweep's storage cannot be created there "
                       f"({exc.strerror or exc}); give a folder you can write, e.g. output_dir=outputs.") from None
    try:
        for name in (SAVED_COPY, SAVED):
            tmp = path.with_name(name + ".tmp")
            tmp.write_text(json.dumps(saved, indent=1))
            os.replace(tmp, path.with_name(name))  # atomic: a driver killed here leaves no half-written identity
    except OSError as exc:
        from orchestrator.disk import Fault, is_full

        fault = Fault("the sweep's identity (danlu/sweep.json)", str(path.parent), exc.strerror or str(exc),
                      is_full(exc))
        raise SweepFailed(f"{fault.describe()}. Nothing was launched; fix that, then run the same command again.") \
            from None
    return saved


def run_sweep(overrides: list[str], config_dir: Path, verbose: bool = False, command: list[str] | None = None,
              stream=None, lead=None) -> int:
    """Run a sweep, or resume it: a sweep whose storage already exists continues where it stopped. `lead`: the
    verdict its report leads with, in place of the leaderboard's (orchestrator/report/verdict.py)."""
    p = plan(overrides, config_dir)
    from omegaconf import OmegaConf

    from orchestrator import recovery
    from orchestrator.cluster import check_local_fit, check_shared_storage, ray_session, trial_resources
    from orchestrator.disk import FreeSpace, low, mb, watched, where
    from orchestrator.lock import Busy, SweepLock
    from orchestrator.tracking import Tracker, check_uri

    check_uri(p.tracking_uri)
    need = trial_resources(p.cfg.resources)
    check_local_fit(p.cfg.cluster, need)
    out = stream or sys.stdout
    interrupts = _Interrupts(out)
    lock = SweepLock(state_dir_path(p.storage_dir), float(p.cfg.storage.lock_ttl_s), say=interrupts.say,
                     on_lost=interrupts.stop_for)
    try:
        lock.acquire(wait_s=float(os.environ.get("DANLU_LOCK_WAIT_S", "0")))  # set for a supervisor's resubmission
    except Busy as exc:
        raise BadInput(exc.describe(str(p.cfg.sweep.name))) from None
    except OSError as exc:
        raise BadInput(f"output_dir={p.storage_dir.parent}: the sweep's storage cannot be created there "
                       f"({exc.strerror or exc}); give a folder you can write, e.g. output_dir=outputs.") from None
    known = begun(p.storage_dir)  # begun before (perhaps killed before Tune saved anything)
    status = "FAILED"  # what the parent run says if the sweep ends other than by _launch's own close
    failed_early = False  # bad input, or a sweep that cannot start: a new sweep leaves nothing behind
    tracker = None
    min_free = int(p.cfg.storage.min_free_mb) * 2**20
    paths = watched(p.storage_dir, p.tracking_uri)
    try:
        saved = _identify(p, overrides)
        done = _finished(p)
        if done is not None:  # nothing to run: its summary again, without starting Ray or reading MLflow
            print(f"danlu: sweep {p.cfg.sweep.name} ended on {done['at']}: nothing to run. Its summary (`danlu report "
                  f"{p.cfg.sweep.name}` makes its report again):", file=out)
            print("\n".join(done["lines"]), file=out, flush=True)
            return 0
        full = low(paths, min_free)
        if full:
            raise SweepFailed(f"disk full at {where(full)}: less than storage.min_free_mb={mb(min_free)} is free, "
                              "so the sweep would stop at once. Nothing was launched; free space on that disk (or lower "
                              "storage.min_free_mb), then run the same command again.")
        # MLflow's import and connection happen on the tracker's thread, checked before Ray starts
        tracker = Tracker(p.tracking_uri, str(p.cfg.tracking.experiment), float(p.cfg.tracking.flush_s),
                          storage=state_dir(p.storage_dir), sweep_id=saved.get("sweep_id"), on_fault=interrupts.fault)
        tracker.check_store()
        # Tune's files checked (and repaired), the journal's damage said, restore limits written: before anything
        # is launched or sent, so that a sweep that cannot be restored changes nothing (orchestrator/recovery.py)
        prep = recovery.prepare(p.storage_dir, state_dir(p.storage_dir), tracker.journal, interrupts.say)
        where = f"at {p.cfg.cluster.address}" if p.cfg.cluster.get("address") else "on this machine"
        print(f"danlu: starting Ray {where}...", file=out, flush=True)
        with FreeSpace(paths, min_free, interrupts.fault) as watch, ray_session(p.cfg.cluster, need, verbose), \
                interrupts.installed():
            interrupts.watch = watch  # stopped once the trials have ended: then a write that fails is said
            check_shared_storage(p.storage_dir)
            config = OmegaConf.to_container(p.cfg, resolve=True)
            tracker.open_sweep(str(p.cfg.sweep.name), config, p.space.describe(), p.config_dir.parent,
                               command or ["danlu", *sys.argv[1:]],
                               submission_tags() | {T.SEARCH_SEED: str(saved.get("search_seed", ""))},
                               sweep_settings(config, p.space))
            code = _launch(p, tracker, verbose, out, known, interrupts, saved.get("search_seed"), prep, lead)
            status = None
            return code
    except (BadInput, SweepFailed):  # the store, a full disk, damaged state; or, once Ray was up, a remote
        status, failed_early = None, True  # cluster's nodes, its storage, the metric
        raise
    except OSError as exc:  # a write that failed outside danlu's own handling (a marker, a report file)
        from orchestrator.disk import Fault, is_full

        if not is_full(exc):
            raise
        status = "KILLED"
        fault = Fault("the sweep's files", str(p.storage_dir), " ".join(str(exc).split())[:300])
        raise SweepFailed(f"{fault.describe()}. Free space on that disk, then resume with: {resume_command(p)}") \
            from None
    except KeyboardInterrupt:
        status = "KILLED"
        print(f"\ndanlu: stopped at once; the sweep can still be resumed: {resume_command(p)}", file=out, flush=True)
        raise
    finally:
        if tracker is not None:
            if status:
                tracker.close_sweep({}, {T.OUTCOME: "interrupted"}, status)
            tracker.close(timeout=30 if failed_early or interrupts.faults else 300)
        lock.release()
        if failed_early and not known:  # nothing half-written: the sweep's directory goes too
            shutil.rmtree(p.storage_dir, ignore_errors=True)


def state_dir_path(storage_dir: Path) -> Path:
    """danlu's folder of a sweep (not created, not migrated: for the lock, taken before anything is read)."""
    return storage_dir / STATE_DIR


def begun(storage_dir: Path) -> bool:
    """Whether the sweep was begun before: its identity exists (damaged or not: read_identity says which)."""
    d = storage_dir / STATE_DIR
    return (d / SAVED).exists() or (d / SAVED_COPY).exists() or (storage_dir / _OLD_LAYOUT[0]).exists()


class _Interrupts:
    """Why a sweep stops before its end. Ctrl-C and SIGTERM: the first asks Tune to stop gracefully (it saves
    its state and fit() returns); a second stops at once. Tune's own SIGINT handler is turned off
    (TUNE_DISABLE_SIGINT_HANDLER) so that danlu knows the sweep was interrupted; SIGUSR1 is Tune's other,
    always-installed stop signal. A storage fault (a full disk: orchestrator/disk.py) or a lost lock
    (orchestrator/lock.py), from any thread, stops it the same graceful way, once, and is said."""

    def __init__(self, out=None):
        self.count = 0
        self.in_fit = False
        self.out = out or sys.stdout
        self.faults: list = []  # orchestrator.disk.Fault, in the order they came
        self.stopped: str | None = None  # the first reason the sweep was stopped for, other than a signal
        self.watch = None  # the free-space watch (orchestrator/disk.FreeSpace) while trials run
        self._lock = threading.Lock()

    def say(self, msg: str) -> None:
        print(("\n" if self.out.isatty() else "") + msg, file=self.out, flush=True)

    def fault(self, fault) -> None:
        """The sweep's storage could not take a write: stop gracefully (resumable), and say it once."""
        with self._lock:
            self.faults.append(fault)
            if len(self.faults) > 1:
                return
        self.stop_for(fault.describe())

    def stop_for(self, why: str) -> None:
        with self._lock:
            if self.stopped is not None:
                return
            self.stopped = why
        self.say(f"danlu: {why}")
        if self.in_fit and not self.count:
            self.say("danlu: stopping the sweep: Tune saves its state, running trials stop at their last checkpoint")
            signal.raise_signal(signal.SIGUSR1)

    def handler(self, signum, frame):
        self.count += 1
        if self.count > 1 or not self.in_fit:
            raise KeyboardInterrupt
        print("\ndanlu: stopping: Tune saves its state (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
        signal.raise_signal(signal.SIGUSR1)

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield self
            return
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        previous = {sig: signal.signal(sig, self.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            if not self.count:
                for sig, h in previous.items():
                    signal.signal(sig, h)
            # else ours stays: once interrupted, any further signal (even during Ray's shut-down) means
            # "stop at once", never Ray's own SIGTERM handler (sys.exit(15))


def _launch(p: Plan, tracker, verbose: bool, out, known: bool, interrupts: _Interrupts, search_seed, prep,
            lead=None) -> int:
    from orchestrator import scheduler as schedulers
    from orchestrator import search as searchers
    from orchestrator.context import missing_metric_message
    from orchestrator.disk import Fault
    from orchestrator.progress import Progress, Work
    from orchestrator.ray_internals import on_storage_fault
    from orchestrator.snapshots import Keeper
    from orchestrator.space import config_id, override, short_label
    from orchestrator.trial import make_trainable
    from orchestrator.tuner import (
        KeepSnapshots,
        MetricGuard,
        RestoreLimits,
        SchedulerState,
        TrialRuns,
        Trials,
        build_tuner,
        can_restore,
        restore_tuner,
        trial_index,
    )

    cfg, sweep, say = p.cfg, p.cfg.sweep, interrupts.say
    resuming = prep.rebuild_tuner or can_restore(str(p.storage_dir))
    verb = "resuming" if resuming else ("restarting" if known else "sweep")
    search = searchers.build(p.space, cfg, search_seed)
    print(f"danlu: {verb} {sweep.name}: search {search.describe}; {len(p.space.seeds)} seed(s) per configuration; "
          f"metric {sweep.metric} ({sweep.mode}), scheduler {cfg.scheduler.name}", file=out)
    print(f"danlu: MLflow {p.tracking_uri} · experiment '{cfg.tracking.experiment}' · run '{sweep.name}'",
          file=out, flush=True)

    scheduler = schedulers.make(cfg.scheduler, p.space.seeds, say)
    early = getattr(scheduler, "stopped_early", set())
    multi_seed = len(p.space.seeds) > 1

    def label(trial) -> str:
        return f"t{trial_index(trial):03d}"

    def describe(trial):
        hp, seed = trial.config["hp"], trial.config["seed"]
        name = f"{label(trial)} {short_label(hp)}".strip() + (f" s={seed}" if multi_seed else "")
        params = {k: override(k, v).split("=", 1)[1] for k, v in hp.items()} | {"seed": str(seed)}
        tags = {T.TRIAL_ID: trial.trial_id, T.TRIAL: label(trial), T.SWEEP: sweep.name,
                T.CONFIG_ID: config_id(hp), T.SEED: str(seed),
                T.OVERRIDES: " ".join(f"{k}={v}" for k, v in params.items())}
        return name, params, tags

    log_dir = str(p.storage_dir / "logs")
    runs = TrialRuns(tracker, describe, lambda tid: tid in early, log_dir, say=say,
                     max_failures=int(cfg.failure.max_failures), on_fault=interrupts.fault)
    progress = Progress(sweep.metric, sweep.mode, label, lambda tid: tid in early, stream=out,
                        every_s=float(cfg.progress.every_s), work=Work.of(cfg.scheduler, cfg.get("epochs")),
                        state_file=str(state_dir(p.storage_dir) / PROGRESS))
    guard, ledger = MetricGuard(sweep.metric), Trials()
    keeper = Keeper(p.storage_dir, on_error=lambda exc, path: interrupts.fault(
        Fault("danlu's copy of Tune's state", path, exc.strerror or " ".join(str(exc).split())[:300])))
    # the order is part of Tune's saved callback state (by index): SchedulerState stays first
    callbacks = [SchedulerState(scheduler), runs, ledger, KeepSnapshots(keeper),
                 RestoreLimits(prep.limits, state_dir(p.storage_dir))] + ([] if verbose else [progress])
    on_storage_fault(lambda exc, what: interrupts.fault(Fault(what, str(p.storage_dir), " ".join(str(exc).split())[:300])))
    trainable = make_trainable(str(p.config_dir), p.trial_base, p.base_overrides, p.space.group_keys, log_dir,
                               cfg.checkpoint.every, float(cfg.resources.cpu), bool(cfg.failure.stop_on_nan))
    if resuming:
        if prep.rebuild_tuner:  # tuner.pkl was damaged and set aside: a Tuner of this sweep's settings writes it
            build_tuner(trainable, search, cfg, scheduler, callbacks, guard, str(p.storage_dir.parent), verbose)
        tuner = restore_tuner(str(p.storage_dir), trainable, cfg, search, scheduler, callbacks, guard)
    else:  # new, or killed before Tune's first snapshot: the trials start (again) from nothing
        tuner = build_tuner(trainable, search, cfg, scheduler, callbacks, guard, str(p.storage_dir.parent), verbose)
    interrupts.in_fit = True
    threading.Thread(target=_preload_report, daemon=True, name="danlu-report-imports").start()
    try:
        if interrupts.stopped is None:
            tuner.fit()
    except Exception:
        if tracker.dead is None and interrupts.stopped is None:
            raise
    finally:
        interrupts.in_fit = False
        on_storage_fault(None)
        if interrupts.watch is not None:
            interrupts.watch.stop()
    if tracker.dead is not None:  # said on the terminal by the writer; Tune has saved its state
        tracker.close_sweep({}, {T.OUTCOME: "interrupted"}, "FAILED")
        tracker.close(timeout=10)
        print(f"danlu: the sweep stopped because its MLflow writer did; what it had not sent is kept in "
              f"{state_dir(p.storage_dir) / tracker.JOURNAL}. Resume with: {resume_command(p)}", file=out, flush=True)
        return 1
    if guard.missing is not None:
        tracker.discard()  # a sweep that measured nothing leaves no runs behind
        raise BadInput(missing_metric_message(sweep.metric, guard.missing))
    if interrupts.stopped is not None and not interrupts.count:
        return _stopped(p, tracker, interrupts, out)
    if interrupts.count:
        tracker.close_sweep({}, {T.OUTCOME: "interrupted"}, "KILLED")
        tracker.close()
        print(f"danlu: interrupted; Ray's state is saved. Resume with: {resume_command(p)}", file=out, flush=True)
        return 130
    summary, code = _summarize(ledger.trials, sweep, early, label, cfg.failure.max_failed_fraction)
    status = "FINISHED" if code == 0 else "FAILED"
    tracker.close_sweep(summary["metrics"], summary["tags"], status, runs.ends(ledger.trials), report_pending=True)
    complete = tracker.close()  # the report waits until MLflow holds every result: it is made of them
    if interrupts.faults:  # a full disk while the sweep ended (its last writes): the same stop, said the same way
        return _stopped(p, tracker, interrupts, out, closed=True)
    if not complete:
        print(f"danlu: warning: MLflow has not taken everything yet ({tracker.backlog} operations); they are kept "
              f"in {state_dir(p.storage_dir) / tracker.JOURNAL} and sent by `{resume_command(p)}`.", file=out)
        code = code or 1
    for note in runs.restores:
        print(f"danlu: restored {note}", file=out)
    for note in tracker.notes:
        print(f"danlu: {note}", file=out)
    for msg in tracker.errors:
        print(f"danlu: not logged to MLflow: {msg}", file=out)
    code = _account(p, tracker, ledger.trials, out, complete) or code
    unlogged = tracker.unlogged_message(resume_command(p))
    if unlogged:
        print(f"danlu: {unlogged}", file=out)
        code = code or 1
    failures = [f"{label(t)} failed: {runs.failure(t)[:200]}" for t in ledger.trials
                if t.status == "ERROR" and t.trial_id not in runs.disk_full][:10]
    made = _report(p, scheduler, out, status, lead, [_counts(summary), *failures]) if complete and not unlogged \
        else None
    if made is None:
        code = code or 1
        _finish_parent(p, tracker.parent_id, status)
    lines = _summary_lines(summary, sweep, p, tracker.parent_id, tracker.writer.exp_id if tracker.writer else None, made)
    print("\n".join(lines), file=out, flush=True)
    if code == 0 and made is not None:  # whole: the same command prints this again, without Ray
        _atomic_json(state_dir(p.storage_dir) / FINISHED, {"at": time.strftime("%Y-%m-%d %H:%M:%S"), "lines": lines,
                                                          "parent": tracker.parent_id})
    return code


def _finished(p: Plan) -> dict | None:
    """The record of a sweep that ended whole (danlu/finished.json), or None: not ended, or damaged (then the
    sweep's command restores it through Tune, as for any sweep, and writes the record again)."""
    try:
        done = json.loads((state_dir(p.storage_dir) / FINISHED).read_text())
        return done if isinstance(done, dict) and isinstance(done.get("lines"), list) and done.get("at") else None
    except (OSError, ValueError):
        return None


def _atomic_json(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(value, indent=1))
        os.replace(tmp, path)
    except OSError:  # a full disk: the next run of the command restores it through Tune instead
        pass


def _account(p: Plan, tracker, trials, out, complete: bool) -> int:
    """What the storage's damage cost, said: journal lines that came back or did not (orchestrator/recovery.py),
    and finished runs set aside whose configuration and seed no trial ran again (kept in MLflow, not in the
    report). 1 if anything was lost or left out, else 0."""
    from orchestrator import recovery
    from orchestrator.space import config_id

    code = 0
    damage = tracker.journal.damage if tracker.journal is not None else []
    if damage and complete:
        recovered, lost = recovery.audit(p.tracking_uri, tracker.parent_id, damage, str(p.cfg.sweep.metric),
                                         tracker.journal.names)
        for line in recovered:
            print(f"danlu: recovered: {line}", file=out)
        for line in lost:
            print(f"danlu: lost: {line}", file=out)
        code = 1 if lost else 0
    elif damage:
        print(f"danlu: {len(damage)} damaged journal line(s) could not be checked against MLflow (it has not taken "
              f"everything yet): {'; '.join(d.describe(tracker.journal.names) for d in damage)}", file=out)
        code = 1
    ran = {(config_id(t.config["hp"]), str(t.config["seed"])) for t in trials}
    for o in tracker.writer.orphans if tracker.writer else []:
        if o["status"] == "FINISHED" and (o["config_id"], o["seed"]) not in ran:
            print(f"danlu: left out of the report: run {o['run']} (trial {o['trial']}, configuration {o['config_id']}, "
                  f"seed {o['seed']}) FINISHED, but no trial of this sweep ran it again; its results are kept in "
                  f"MLflow, tagged {T.ORPHANED}", file=out)
            code = 1
    return code


def _stopped(p: Plan, tracker, interrupts: _Interrupts, out, closed: bool = False) -> int:
    """The end of a sweep stopped by a storage fault or a lost lock: what was saved, and how to go on (exit 1)."""
    if not closed:
        outcome = "disk_full" if any(f.full for f in interrupts.faults) else "interrupted"
        tracker.close_sweep({}, {T.OUTCOME: outcome}, "KILLED")
        tracker.close(timeout=30)
    print(f"danlu: the sweep stopped: {interrupts.stopped}", file=out)
    if tracker.halted is not None:
        mlflow = (f"MLflow's store is on that disk: what it could not take waits in "
                  f"{state_dir(p.storage_dir) / tracker.JOURNAL}, and its running runs are marked KILLED by the next "
                  "run of the sweep")
    else:
        mlflow = "MLflow holds every result reported so far; running trials' runs are KILLED"
    print(f"danlu: saved: Tune's state of the sweep as of its last snapshot (and danlu's copy of it), each trial's "
          f"last whole checkpoint. {mlflow}.", file=out)
    for f in interrupts.faults[1:4]:
        print(f"danlu: also: {f.describe()}", file=out)
    fix = "free space on that disk" if interrupts.faults else "make sure no other driver runs this sweep"
    print(f"danlu: {fix}, then resume with: {resume_command(p)}", file=out, flush=True)
    return 1


def _finish_parent(p: Plan, parent_id: str | None, status: str) -> None:
    """A parent whose report could not be attached still ends (no run stays RUNNING); its tag says the report is
    missing, and the next run of the sweep makes it. Best effort: MLflow may be what failed."""
    if parent_id is None:
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(p.tracking_uri)
        client.set_tag(parent_id, T.REPORT, "pending")
        client.set_terminated(parent_id, status)
    except Exception:  # noqa: S110 - said already: the sweep exits 1 with the command that resumes it
        pass


def _preload_report() -> None:
    """Import what the report needs while the trials run (2-3 s here, in a driver that mostly waits), not after
    them. Only a head start: an import that fails here fails again in _report, which says so."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        import optuna.importance  # noqa: F401
        import scipy.stats  # noqa: F401
    except Exception:  # noqa: S110
        pass


def _counts(summary: dict) -> str:
    c = summary["counts"]
    return (f"{sum(c.values())} trials: {c['completed']} completed, {c['stopped_early']} stopped early by ASHA, "
            f"{c['failed']} failed")


def _report(p: Plan, scheduler, out, status: str, lead=None, summary: list[str] | None = None) -> dict | None:
    """The morning report (orchestrator/report/), as the parent run's artifacts; its table on the terminal. The
    parent run ends (with `status`) once the report is attached. What publish.make returns, or None."""
    from dataclasses import asdict

    from orchestrator.report.publish import make

    try:
        made = make(p.tracking_uri, str(p.cfg.tracking.experiment), str(p.cfg.sweep.name), p.cfg.report,
                    p.storage_dir / "report", [asdict(d) for d in getattr(scheduler, "decisions", [])],
                    p.storage_dir, p.config_dir.parent, finish=status, lead=lead, summary=summary)
    except Exception as exc:  # the sweep's runs are all in MLflow; only the report is missing
        print(f"danlu: the report could not be made ({type(exc).__name__}: {exc}); "
              f"`danlu report {p.cfg.sweep.name}` tries again", file=out, flush=True)
        return None
    print("\n".join(made["text"]), file=out)
    print(f"danlu: report: {made['dir'] / 'report.html'} (and the parent run's artifacts, report/)", file=out)
    return made


def _summarize(trials, sweep, early: set[str], label, max_failed_fraction=None) -> tuple[dict, int]:
    """Counts and the best trial, ranked by each trial's last reported metric (Tune's scope="last")."""
    counts = {"completed": 0, "stopped_early": 0, "failed": 0}
    best = None
    for t in trials:
        if t.status == "ERROR":
            counts["failed"] += 1
            continue
        counts["stopped_early" if t.trial_id in early else "completed"] += 1
        v = (t.last_result or {}).get(sweep.metric)
        if isinstance(v, (int, float)) and v == v:
            if best is None or (v > best[0] if sweep.mode == "max" else v < best[0]):
                best = (float(v), label(t), t.trial_id)
    total = sum(counts.values())
    summary = {
        "metrics": {f"trials_{k}": v for k, v in counts.items()} | {"trials_total": total},
        "tags": {},
        "counts": counts,
    }
    if best is not None:
        summary["metrics"][f"best_{sweep.metric}"] = best[0]
        summary["tags"] = {T.BEST_TRIAL: best[1], T.BEST_TRIAL_ID: best[2],
                           T.BEST.format(sweep.metric): f"{best[0]:.6g}"}
        summary["best"] = best
    too_many = max_failed_fraction is not None and counts["failed"] > max_failed_fraction * total
    code = 1 if total == 0 or counts["failed"] == total or too_many else 0
    return summary, code


def _summary_lines(summary: dict, sweep, p: Plan, parent_id, exp_id, made: dict | None = None) -> list[str]:
    """The sweep's last lines: the counts; the two bests, each labelled and linked (the best configuration: its mean
    over seeds with its interval, what the report ranks; the best single trial: its last reported value); and where
    to review it: the runs table, the parent run and the report in MLflow's UI (orchestrator/links.py)."""
    from orchestrator import links

    out = [f"danlu: {_counts(summary)}"]
    base = links.ui_base(p.tracking_uri)
    board = (made or {}).get("json", {}).get("leaderboard") or {}
    best = board.get("best")
    if best and exp_id:
        ci = (f", 95% CI {best['ci_low']:.4g} to {best['ci_high']:.4g}" if best.get("ci_low") is not None else "")
        runs = list(best.get("runs", {}).values())
        link = links.compare(base, exp_id, runs) if len(runs) > 1 else links.run(base, exp_id, runs[0]) if runs else ""
        out.append(f"danlu: best configuration: {best['label']}: mean {sweep.metric} {best['mean']:.4g}{ci} over "
                   f"{best['n_seeds']} seed(s) ({' '.join(best.get('trials', {}).values())}) {link}".rstrip())
    if "best" in summary:
        v, label, tid = summary["best"]
        rid, label = (made or {}).get("trial_runs", {}).get(tid, (None, label))
        link = f" {links.run(base, exp_id, rid)}" if rid and exp_id else ""
        out.append(f"danlu: best single trial: {label}: {sweep.metric} {v:.4g} (its last report){link}")
    where = "`danlu ui` serves it here" if base == links.LOCAL_UI else f"at {base}"
    out.append(f"danlu: review it in MLflow's UI ({where}): experiment '{p.cfg.tracking.experiment}', run "
               f"'{sweep.name}' ({parent_id}); Ray storage: {p.storage_dir}")
    if exp_id and parent_id:
        table = links.runs_table(base, exp_id, str(sweep.name), str(sweep.metric), str(sweep.mode),
                                 shared=bool((made or {}).get("shared_view")))
        out += [f"  runs:   {table}",
                f"  sweep:  {links.run(base, exp_id, parent_id)}"]
        if made:
            out.append(f"  report: {links.report(base, exp_id, parent_id)} (and {made['dir'] / 'report.html'})")
    return out
