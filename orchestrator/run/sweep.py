"""`danlu sweep`: plan -> the sweep's identity and lock -> the tracking store -> Ray -> the parent run -> Tuner.fit
-> the summary and the report.

Every check on the user's input runs in plan() (orchestrator/launch/plan.py), before Ray starts or MLflow is touched, so a
mistake costs nothing and leaves nothing behind.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator import tags as T
from orchestrator.config.compose import plain
from orchestrator.errors import BadInput, SweepFailed
from orchestrator.launch.plan import Plan, plan
from orchestrator.run.interrupts import Interrupts
from orchestrator.run.summary import counts_line, summarize, summary_lines, with_earlier
from orchestrator.storage.disk import write_json
from orchestrator.storage.sweep_files import FINISHED, MEASURED, PROGRESS

if TYPE_CHECKING:
    from ray.tune import Tuner

    from orchestrator.run.tuner import BudgetMeter, MetricGuard, TrialRuns, Trials
    from orchestrator.scheduler import Recording


def submission_tags() -> dict[str, str]:
    """For a driver started by danlu's supervisor (orchestrator/remote/supervise.py): which submission it belongs to
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


def run_sweep(overrides: list[str], config_dir: Path, verbose: bool = False, command: list[str] | None = None,
              stream=None, lead=None, planned: Plan | None = None, preflight: bool = True, extend=None) -> int:
    """Run a sweep, or resume it: a sweep whose storage already exists continues where it stopped.

    Args:
        overrides: the command line's Hydra overrides (sweep ones included).
        config_dir: the conf/ folder.
        verbose: Ray's own progress tables in place of danlu's progress line.
        command: the command line, as the parent run's danlu.command and source.
        stream: where the terminal lines go (stdout).
        lead: the verdict its report leads with, in place of the leaderboard's (orchestrator/report/_verdict.py).
        planned: plan(overrides, config_dir), where the caller made it already (danlu compare).
        preflight: a new sweep runs the fast checks first (orchestrator/launch/preflight.py); a resumed one ran them.
        extend: an orchestrator.launch.extension.Request: the sweep that `overrides` name has ended and grows by
            what they change (`danlu extend`), decided and kept under its lock before anything runs.
    """
    p = planned or plan(overrides, config_dir)

    from orchestrator.cluster.placement import check_local_fit, check_shared_storage, ray_session
    from orchestrator.launch.budget import Limits
    from orchestrator.tracking import check_uri
    from orchestrator.tracking.writer import Tracker

    check_uri(p.tracking_uri, p.store_kind)
    need = p.need
    check_local_fit(p.cfg.cluster, need)
    out = stream or sys.stdout
    limits = Limits.of(p.cfg.sweep)
    storage = p.storage
    new = not storage.begun()
    checked = _preflight(p, out) if preflight and new and extend is None else None
    if not preflight and new:
        _tracking_answers(p)
    interrupts = Interrupts(out)
    lock = storage.lock(str(p.cfg.sweep.name), float(p.cfg.storage.lock_ttl_s), interrupts.say, interrupts.stop_for)
    known = storage.begun()  # begun before (perhaps killed before Tune saved anything)
    status: str | None = "FAILED"  # what the parent run says if the sweep ends other than by _launch's own close
    failed_early = False  # bad input, or a sweep that cannot start: a new sweep leaves nothing behind
    tracker = None
    try:
        if extend is not None:
            from orchestrator.launch import extension
            from orchestrator.storage.sweep_files import read_identity

            earlier = read_identity(p.storage_dir)
            if earlier is None:
                raise BadInput(f"danlu extend {p.cfg.sweep.name}: no sweep of that name in {p.storage_dir}.")
            saved = extension.record(p, extend, earlier, interrupts.say)
        else:
            saved = storage.identify(p, overrides, p.resume)
        storage.part(saved)
        done = storage.finished()
        if done is not None:  # nothing to run: its summary again, without starting Ray or reading MLflow
            print(f"danlu: sweep {p.cfg.sweep.name} ended on {done['at']}: nothing to run. Its summary (`danlu report "
                  f"{p.cfg.sweep.name}` makes its report again):", file=out)
            print("\n".join(done["lines"]), file=out, flush=True)
            return 0
        meter = _budget_meter(p, limits, need)
        storage.check_free()
        # MLflow's import and connection happen on the tracker's thread, checked before Ray starts
        tracker = Tracker(p.tracking_uri, str(p.cfg.tracking.experiment), float(p.cfg.tracking.flush_s),
                          storage=storage.own, sweep_id=saved.get("sweep_id"), on_fault=interrupts.fault,
                          store=p.store_kind)
        tracker.check_store()
        # Tune's files checked (and repaired), the journal's damage said, restore limits written: before anything
        # is launched or sent, so that a sweep that cannot be restored changes nothing
        prep = storage.prepare(tracker.journal, interrupts.say)
        place = f"at {p.cfg.cluster.address}" if p.cfg.cluster.get("address") else "on this machine"
        print(f"danlu: starting Ray {place}...", file=out, flush=True)
        with storage.watch(interrupts.fault) as watch, ray_session(p.cfg.cluster, need, verbose), \
                interrupts.installed():
            interrupts.watch = watch  # stopped once the trials have ended: then a write that fails is said
            check_shared_storage(p.storage_dir)
            from orchestrator.cluster import slurm

            slurm_tags, cut = slurm.here_recorded(storage.own, interrupts.say)
            tags = submission_tags() | slurm_tags | {T.SEARCH_SEED: str(saved.get("search_seed", ""))} | \
                p.forecast.as_tags() | (checked.as_tags() if checked is not None else {})
            if checked is None and not known:
                tags[T.PREFLIGHT] = "skipped (--no-preflight)" if not preflight else "skipped"
            extended = _extension_tags(saved)
            tracker.open_sweep(str(p.cfg.sweep.name), plain(p.cfg), p.space.describe(), p.project_root,
                               command or ["danlu", *sys.argv[1:]], tags | extended[0], p.settings | extended[1])
            code = _launch(p, tracker, verbose, out, known, interrupts, saved.get("search_seed"), prep, lead, meter,
                           keep_failed=checked is None, cut=cut)
            status = None
            return code
    except (BadInput, SweepFailed):  # the store, a full disk, damaged state; or, once Ray was up, a remote
        status, failed_early = None, True  # cluster's nodes, its storage, the metric
        raise
    except OSError as exc:  # a write that failed outside danlu's own handling (a marker, a report file)
        from orchestrator.storage.disk import is_full

        if not is_full(exc):
            raise
        status = "KILLED"
        raise SweepFailed(f"{storage.fault(exc).describe()}. Free space on that disk, then resume with: {p.resume}") \
            from None
    except KeyboardInterrupt:
        status = "KILLED"
        print(f"\ndanlu: stopped at once; the sweep can still be resumed: {p.resume}", file=out, flush=True)
        raise
    finally:
        if tracker is not None:
            if status:
                tracker.close_sweep({}, {T.OUTCOME: "interrupted"}, status)
            tracker.close(timeout=30 if failed_early or interrupts.faults else 300)
        lock.release()
        if failed_early and not known:  # nothing half-written: the sweep's directory goes too
            storage.discard()


def _extension_tags(saved: dict) -> tuple[dict[str, str], dict[str, str]]:
    """(tags, params) of the parent run for a sweep's extensions: their count, and each one's time, command and
    changes as a tag; each changed setting's new value as a param of its own (extension<k>.<key>: MLflow's params
    keep their first value, so the parent's own params stay the settings the sweep began with)."""
    import json

    exts = saved.get("extensions") or []
    if not exts:
        return {}, {}
    tags = {T.EXTENSIONS: str(len(exts))}
    params = {}
    for e in exts:
        tags[T.EXTENSION_RECORD.format(e["n"])] = json.dumps(
            {"at": e["at"], "command": e["command"], "changed": e["changed"], "first_trial": e["first_trial"]})[:5000]
        for line in e["changed"]:
            key, _, change = line.partition(": ")
            params[f"extension{e['n']}.{key}"] = change.rpartition(" -> ")[2][:6000]
    return tags, params


def _preflight(p: Plan, out):
    """The fast checks of a new sweep (orchestrator/launch/preflight.py), before anything is created: a metric the job
    never reports, or a tracking server that has never answered, is bad input (exit 2); any other FAIL stops the
    sweep (exit 1). An outage that begins once the sweep has begun is waited out (its journal keeps every
    result)."""
    from orchestrator.launch import preflight

    print("danlu: preflight (the fast checks; --no-preflight skips them):", file=out, flush=True)
    res = preflight.Preflight(p, say=lambda line: print(line, file=out, flush=True)).run(preflight.FAST, first_fail=True)
    bad = res.failed
    for c in bad:
        if c.bad_input:
            raise BadInput(c.reason)
    if bad:
        raise SweepFailed(f"preflight: {', '.join(c.name for c in bad)} failed ({bad[0].reason}). Nothing was "
                          "launched; `danlu preflight` runs the checks alone, --no-preflight launches anyway.")
    return res


def _tracking_answers(p: Plan) -> None:
    """A new sweep launched without the preflight still starts only against a tracking store that answers: one
    that never has is a wrong address (bad input), not an outage to wait out for the night."""
    from orchestrator.launch import reach

    try:
        reach.tracking(p.tracking_uri, str(p.cfg.tracking.experiment), kind=p.store_kind)
    except reach.Unreachable as exc:
        raise BadInput(f"tracking.uri={p.tracking_uri}: {exc}. A new sweep starts only against a store that answers: "
                       "check the address, or use tracking=local.") from None


def _budget_meter(p: Plan, limits, need: dict):
    """The sweep's budget meter (what earlier sessions used, from its storage); SweepFailed, before anything is
    launched, where a limit is spent already."""
    from orchestrator.launch.budget import Meter, Used

    ext = p.storage.extension  # an extension's budget counts what it has used itself
    meter = Meter(limits, p.storage.own, need.get("GPU", 0.0), need.get("CPU", 0.0),
                  Used.of(ext.get("budget_base")) if ext else None)
    spent = meter.reached()
    if spent:
        whose = f"extension {ext['n']}'s" if ext else "the sweep's"
        raise SweepFailed(f"{whose} budget is spent: {spent}. Nothing was launched; resume it with a larger one: "
                          f"{p.resume} sweep.budget.<gpu_hours|cpu_hours|wall_time>=<more>")
    return meter


def _budget_end(p: Plan, tracker, parts, out, lead) -> int:
    """The end of a sweep its budget stopped: its running trials' runs KILLED (they resume from their last
    checkpoint), the parent tagged with the limit, the report of what ended, and how to go on (exit 1: trials
    are parked)."""
    why = parts.budget.reached
    trials = parts.ledger.trials
    from orchestrator.trial.names import trial_name

    cut = parts.budget.cut  # running when the limit was reached: Tune's clean-up marks them TERMINATED too
    names = {name for name, _ in cut}
    ended = [t for t in trials if t.status in ("TERMINATED", "ERROR") and trial_name(t) not in names]
    killed = ", ".join(f"{name} at step {step}" if step is not None else f"{name} before its first report"
                       for name, step in cut)
    line = (f"stopped by its budget: {why}; {len(ended)} of {len(trials)} trial(s) ended, "
            + (f"{len(cut)} killed mid-run ({killed}), " if cut else "")
            + f"{len(trials) - len(ended)} parked (they resume from their last checkpoint)")
    tracker.close_sweep(parts.budget.meter.used.as_metrics(), {T.OUTCOME: "budget", T.BUDGET: why}, "KILLED",
                        report_pending=True)
    complete = tracker.close()
    made = _report(p, tracker.store, parts.scheduler, out, "KILLED", lead, [line]) if complete else None
    if made is None:
        _finish_parent(tracker.store, tracker.parent_id, "KILLED")
    print(f"danlu: {line}", file=out)
    print(f"danlu: used {parts.budget.meter.describe()}. Resume with a larger budget: {p.resume} "
          "sweep.budget.<gpu_hours|cpu_hours|wall_time>=<more>", file=out, flush=True)
    return 1


@dataclass
class _Parts:
    """What a sweep runs with once Ray is up: made by _assemble, driven by _fit, read by _finish."""

    scheduler: Recording  # a Tune scheduler with Recording mixed in
    names: TrialNames
    runs: TrialRuns  # the callback that feeds the tracker
    ledger: Trials  # every trial Tune holds
    guard: MetricGuard  # the metric the job never reported, if so
    tuner: Tuner  # Tune's, built or restored
    budget: BudgetMeter | None = None  # what the trials used, and the limit that stopped them, if one did


class TrialNames:
    """How a trial is called: its label (t003), its run's name, params and tags (the seed apart from its
    hyperparameters, as danlu.seed and a param of its own)."""

    def __init__(self, sweep_name: str, seeds: list[int], extension: int = 0):
        self.sweep, self.multi_seed, self.extension = sweep_name, len(seeds) > 1, extension

    def label(self, trial) -> str:
        """The trial's label: t and its number in the sweep (t003)."""
        from orchestrator.trial.names import trial_name

        return trial_name(trial)

    def describe(self, trial) -> tuple[str, dict, dict]:
        """(run name, params, tags) of the trial's run: its values as override text, its seed as a param and a
        tag, its configuration's id."""
        from orchestrator.config.space import config_id, override, short_label

        hp, seed = trial.config["hp"], trial.config["seed"]
        name = f"{self.label(trial)} {short_label(hp)}".strip() + (f" s={seed}" if self.multi_seed else "")
        params = {k: override(k, v).split("=", 1)[1] for k, v in hp.items()} | {"seed": str(seed)}
        tags = {T.TRIAL_ID: trial.trial_id, T.TRIAL: self.label(trial), T.SWEEP: self.sweep,
                T.CONFIG_ID: config_id(hp), T.SEED: str(seed),
                T.OVERRIDES: " ".join(f"{k}={v}" for k, v in params.items())}
        if self.extension:
            tags[T.EXTENSION] = str(self.extension)
        return name, params, tags


def _launch(p: Plan, tracker, verbose: bool, out, known: bool, interrupts: Interrupts, search_seed, prep,
            lead=None, meter=None, keep_failed: bool = False, cut: str | None = None) -> int:
    """The sweep on Ray, in three steps: its parts assembled (searcher, scheduler, callbacks, Tune's Tuner), Tune's
    fit, then its end (a stop said, or the summary and the report). `cut`: the tag for trials the previous Slurm
    allocation's end cut short (orchestrator/cluster/slurm.py)."""
    parts = _assemble(p, tracker, verbose, out, known, interrupts, search_seed, prep, meter, cut)
    _fit(parts.tuner, tracker, interrupts, len(p.space.params))
    if parts.budget is not None:
        parts.budget.flush()
    if parts.budget is not None and parts.budget.reached and interrupts.stopped == parts.budget.reached \
            and not interrupts.count and tracker.dead is None and parts.guard.missing is None:
        return _budget_end(p, tracker, parts, out, lead)
    early = _ended_early(p, tracker, interrupts, parts.guard, out, keep_failed)
    return early if early is not None else _finish(p, tracker, interrupts, parts, out, lead)


def _assemble(p: Plan, tracker, verbose: bool, out, known: bool, interrupts: Interrupts, search_seed, prep,
              meter=None, cut: str | None = None) -> _Parts:
    """The searcher and the scheduler (said on the terminal), the callbacks that feed the tracker, the progress line
    and danlu's snapshots, and Tune's Tuner: built new, or restored from the sweep's storage."""
    from orchestrator import scheduler as schedulers
    from orchestrator import search as searchers
    from orchestrator.ray_internals import on_storage_fault
    from orchestrator.run.progress import Progress, Work
    from orchestrator.run.stalls import StallWatch
    from orchestrator.run.tuner import (
        BudgetMeter,
        KeepSnapshots,
        MetricGuard,
        RestoreLimits,
        SchedulerState,
        TrialRuns,
        Trials,
        build_tuner,
        can_restore,
        restore_tuner,
    )
    from orchestrator.storage.disk import Fault
    from orchestrator.storage.snapshots import Keeper
    from orchestrator.trial import names as trial_names
    from orchestrator.trial.retries import RetryPolicy
    from orchestrator.trial.trainable import make_trainable

    cfg, sweep, say = p.cfg, p.cfg.sweep, interrupts.say
    tune_dir, ext = p.storage.tune, p.storage.extension
    resuming = prep.rebuild_tuner or can_restore(str(tune_dir))
    verb = "resuming" if resuming else ("restarting" if known and not ext else "sweep")
    if ext is not None:
        # the extension's own seed: a sampler seeded as the sweep's was draws its first points again (TPE did here)
        own = None if search_seed is None else int(search_seed) + int(ext["n"])
        search, told = searchers.extension(p.space, cfg, own, ext)
        verb = f"{'resuming' if resuming else 'extending'} (extension {ext['n']})"
        trial_names.FIRST = int(ext["first_trial"])
    else:
        search, told = searchers.build(p.space, cfg, search_seed), ""
        trial_names.FIRST = 0
    print(f"danlu: {verb} {sweep.name}: search {search.describe}; {len(p.space.seeds)} seed(s) per configuration; "
          f"metric {sweep.metric} ({sweep.mode}), scheduler {cfg.scheduler.name}", file=out)
    if told and not resuming:
        print(f"danlu: {told}", file=out)
    print(f"danlu: MLflow {p.tracking_uri} · experiment '{cfg.tracking.experiment}' · run '{sweep.name}'",
          file=out, flush=True)
    scheduler = schedulers.make(schedulers.SchedulerContext.of(cfg, p.space, say))
    if ext is not None:
        from orchestrator.config.space import config_id

        grown = {config_id(hp) for hp in ext["points"]} if ext.get("kind") == "seeds" else set()
        scheduler.carry(ext.get("carry") or [], grown, 1.0 if sweep.mode == "max" else -1.0, ext.get("decisions") or [])
    scheduler.retries = retries = RetryPolicy(int(cfg.failure.max_failures), int(cfg.failure.get("retry_job_errors", 0)))
    early = scheduler.stopped_early
    names = TrialNames(str(sweep.name), list(p.space.seeds), ext["n"] if ext else 0)
    log_dir = str(p.storage_dir / "logs")
    runs = TrialRuns(tracker, names.describe, lambda tid: tid in early, log_dir, say=say,
                     max_failures=int(cfg.failure.max_failures), on_fault=interrupts.fault, cut=cut,
                     started=prep.limits, max_output_mb=cfg.tracking.get("max_output_mb"), retries=retries)
    progress = Progress(sweep.metric, sweep.mode, names.label, lambda tid: tid in early, stream=out,
                        every_s=float(cfg.progress.every_s), work=Work.of(cfg.scheduler, cfg.get("epochs")),
                        state_file=str(p.storage.own / PROGRESS))
    guard, ledger = MetricGuard(sweep.metric), Trials()
    keeper = Keeper(tune_dir, on_error=lambda exc, path: interrupts.fault(
        Fault("danlu's copy of Tune's state", path, exc.strerror or " ".join(str(exc).split())[:300])))
    # the order is part of Tune's saved callback state (by index): SchedulerState stays first
    callbacks = [SchedulerState(scheduler), runs, ledger, KeepSnapshots(keeper),
                 RestoreLimits(prep.limits, p.storage.limits_dir),
                 StallWatch(cfg.failure.get("stall_s", "auto"), retries, names.label, say)] + ([] if verbose else [progress])
    budget = BudgetMeter(meter, tracker, interrupts.stop_for) if meter is not None else None
    if budget is not None:  # last: the callbacks' saved states are Tune's by index
        callbacks.append(budget)
    on_storage_fault(lambda exc, what: interrupts.fault(Fault(what, str(p.storage_dir), " ".join(str(exc).split())[:300])))
    trainable = make_trainable(str(p.config_dir), p.trial_base, p.base_overrides, p.space.group_keys, log_dir,
                               cfg.checkpoint.every, float(cfg.resources.cpu), bool(cfg.failure.stop_on_nan), p.app,
                               cfg.resources.get("memory_mb"))
    if resuming:
        if prep.rebuild_tuner:  # tuner.pkl was damaged and set aside: a Tuner of this sweep's settings writes it
            build_tuner(trainable, search, cfg, scheduler, callbacks, guard, tune_dir, verbose)
        tuner = restore_tuner(str(tune_dir), trainable, cfg, search, scheduler, callbacks, guard)
    else:  # new, or killed before Tune's first snapshot: the trials start (again) from nothing
        tuner = build_tuner(trainable, search, cfg, scheduler, callbacks, guard, tune_dir, verbose)
    return _Parts(scheduler, names, runs, ledger, guard, tuner, budget)


def _fit(tuner, tracker, interrupts: Interrupts, swept: int) -> None:
    """Tune's fit, unless the sweep was stopped meanwhile; an error that a stop explains (the writer's death, a full
    disk, a lost lock) is the stop's, said by _ended_early."""
    from orchestrator.ray_internals import on_storage_fault

    interrupts.in_fit = True
    threading.Thread(target=_preload_report, args=(swept,), daemon=True, name="danlu-report-imports").start()
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


def _ended_early(p: Plan, tracker, interrupts: Interrupts, guard, out, keep_failed: bool = False) -> int | None:
    """A sweep that did not run to its end: its writer died (1), it measured nothing (bad input: its runs go; with
    `keep_failed`, a sweep that ran no preflight, its parent stays, FAILED with the reason), it was stopped by a
    fault or a lost lock (1) or by the user (130). None for a sweep that ran to its end."""
    from orchestrator.trial.ctx import missing_metric_message

    if tracker.dead is not None:  # said on the terminal by the writer; Tune has saved its state
        tracker.close_sweep({}, {T.OUTCOME: "interrupted"}, "FAILED")
        tracker.close(timeout=10)
        print(f"danlu: the sweep stopped because its MLflow writer did; what it had not sent is kept in "
              f"{p.storage.own / tracker.JOURNAL}. Resume with: {p.resume}", file=out, flush=True)
        return 1
    if guard.missing is not None:
        message = missing_metric_message(str(p.cfg.sweep.metric), guard.missing)
        if keep_failed:  # no preflight caught it before: the parent says why the sweep failed
            tracker.close_sweep({}, {T.OUTCOME: "failed", T.ERROR: message}, "FAILED")
        else:
            tracker.discard()  # a new sweep that measured nothing leaves no runs behind
        raise BadInput(message)
    if interrupts.stopped is not None and not interrupts.count:
        return _stopped(p, tracker, interrupts, out)
    if interrupts.count:
        tracker.close_sweep({}, {T.OUTCOME: "interrupted"}, "KILLED")
        tracker.close()
        print(f"danlu: interrupted; Ray's state is saved. Resume with: {p.resume}", file=out, flush=True)
        return 130
    return None


def _finish(p: Plan, tracker, interrupts: Interrupts, parts: _Parts, out, lead) -> int:
    """The end of a sweep that ran to its end: its runs closed, what storage damage cost, the report (once the store
    holds every result), the summary; and, for a whole sweep, the record its command prints again without Ray."""
    cfg, sweep, runs, trials = p.cfg, p.cfg.sweep, parts.runs, parts.ledger.trials
    summary, code = summarize(trials, sweep, parts.scheduler.stopped_early, parts.names.label,
                              cfg.failure.max_failed_fraction, stalled=runs.stalled)
    summary = with_earlier(summary, (p.storage.extension or {}).get("earlier_counts"), sweep)
    status = "FINISHED" if code == 0 else "FAILED"
    step_s, startup_s = runs.step_s(), runs.startup_s()
    if step_s is not None:  # what `danlu plan` costs this job's next sweep at (orchestrator/launch/preview.py)
        summary["metrics"] |= {"step_s": step_s} | ({"trial_startup_s": startup_s} if startup_s is not None else {})
        write_json(p.storage.own / MEASURED, {"job": str(cfg.job.name), "step_s": step_s,
                                                         "startup_s": startup_s or 0.0,
                                                         "at": time.strftime("%Y-%m-%d %H:%M:%S")})
    if parts.budget is not None:
        summary["metrics"] |= parts.budget.meter.used.as_metrics()
    earlier = {tid: None for tid in (p.storage.extension or {}).get("earlier_trials", [])}  # not this part's to judge
    tracker.close_sweep(summary["metrics"], summary["tags"], status, earlier | runs.ends(trials), report_pending=True)
    complete = tracker.close()  # the report waits until MLflow holds every result: it is made of them
    if interrupts.faults:  # a full disk while the sweep ended (its last writes): the same stop, said the same way
        return _stopped(p, tracker, interrupts, out, closed=True)
    if not complete:
        print(f"danlu: warning: MLflow has not taken everything yet ({tracker.backlog} operations); they are kept "
              f"in {p.storage.own / tracker.JOURNAL} and sent by `{p.resume}`.", file=out)
        code = code or 1
    for note in runs.restores:
        print(f"danlu: restored {note}", file=out)
    for note in tracker.notes:
        print(f"danlu: {note}", file=out)
    for msg in tracker.errors:
        print(f"danlu: not logged to MLflow: {msg}", file=out)
    code = _account(p, tracker, trials, out, complete) or code
    unlogged = tracker.unlogged_message(p.resume)
    if unlogged:
        print(f"danlu: {unlogged}", file=out)
        code = code or 1
    failures = [f"{parts.names.label(t)} failed: {runs.failure(t)[:200]}" for t in trials
                if t.status == "ERROR" and t.trial_id not in runs.disk_full][:10]
    made = _report(p, tracker.store, parts.scheduler, out, status, lead, [counts_line(summary), *failures]) \
        if complete and not unlogged else None
    if made is None:
        code = code or 1
        _finish_parent(tracker.store, tracker.parent_id, status)
    lines = summary_lines(summary, sweep, p, tracker.parent_id, tracker.store.exp_id if tracker.store else None, made)
    print("\n".join(lines), file=out, flush=True)
    if code == 0 and made is not None:  # whole: the same command prints this again, without Ray
        write_json(p.storage.own / FINISHED, {"at": time.strftime("%Y-%m-%d %H:%M:%S"), "lines": lines,
                                                         "parent": tracker.parent_id})
    return code


def _account(p: Plan, tracker, trials, out, complete: bool) -> int:
    """What the storage's damage cost, said: journal lines that came back or did not (orchestrator/storage/recovery.py),
    and finished runs set aside whose configuration and seed no trial ran again (kept in MLflow, not in the
    report). 1 if anything was lost or left out, else 0."""
    from orchestrator.config.space import config_id
    from orchestrator.storage import recovery

    code = 0
    damage = tracker.journal.damage if tracker.journal is not None else []
    if damage and complete:
        recovered, lost = recovery.audit(tracker.store, tracker.parent_id, damage, str(p.cfg.sweep.metric),
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
    for o in tracker.store.orphans if tracker.store else []:
        if o["status"] == "FINISHED" and (o["config_id"], o["seed"]) not in ran:
            print(f"danlu: left out of the report: run {o['run']} (trial {o['trial']}, configuration {o['config_id']}, "
                  f"seed {o['seed']}) FINISHED, but no trial of this sweep ran it again; its results are kept in "
                  f"MLflow, tagged {T.ORPHANED}", file=out)
            code = 1
    return code


def _stopped(p: Plan, tracker, interrupts: Interrupts, out, closed: bool = False) -> int:
    """The end of a sweep stopped by a storage fault or a lost lock: what was saved, and how to go on (exit 1)."""
    if not closed:
        outcome = "disk_full" if any(f.full for f in interrupts.faults) else "interrupted"
        tracker.close_sweep({}, {T.OUTCOME: outcome}, "KILLED")
        tracker.close(timeout=30)
    print(f"danlu: the sweep stopped: {interrupts.stopped}", file=out)
    if tracker.halted is not None:
        mlflow = (f"MLflow's store is on that disk: what it could not take waits in "
                  f"{p.storage.own / tracker.JOURNAL}, and its running runs are marked KILLED by the next "
                  "run of the sweep")
    else:
        mlflow = "MLflow holds every result reported so far; running trials' runs are KILLED"
    print(f"danlu: saved: Tune's state of the sweep as of its last snapshot (and danlu's copy of it), each trial's "
          f"last whole checkpoint. {mlflow}.", file=out)
    for f in interrupts.faults[1:4]:
        print(f"danlu: also: {f.describe()}", file=out)
    fix = "free space on that disk" if interrupts.faults else "make sure no other driver runs this sweep"
    print(f"danlu: {fix}, then resume with: {p.resume}", file=out, flush=True)
    return 1


def _finish_parent(store, parent_id: str | None, status: str) -> None:
    """A parent whose report could not be attached still ends (no run stays RUNNING); its tag says the report is
    missing, and the next run of the sweep makes it. Best effort: MLflow may be what failed."""
    if parent_id is None or store is None:
        return
    try:
        store.end_parent(parent_id, status, {T.REPORT: "pending"})
    except Exception:  # noqa: S110 - said already: the sweep exits 1 with the command that resumes it
        pass


def _preload_report(swept: int) -> None:
    """Import what the report needs while the trials run (2-3 s here, in a driver that mostly waits), not after
    them. Only a head start: an import that fails here fails again in _report, which says so. Optuna's fANOVA
    (scikit-learn: 2 CPU-s) only where `swept`, the space's keys, can give it something to rank: with one key or none
    the importance section fits nothing (orchestrator/report/importance.py)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        import scipy.stats  # noqa: F401

        if swept >= 2:
            import optuna.importance  # noqa: F401
    except Exception:  # noqa: S110
        pass


def _report(p: Plan, store, scheduler, out, status: str, lead=None, summary: list[str] | None = None) -> dict | None:
    """The morning report (orchestrator/report/), as the parent run's artifacts; its table on the terminal. The
    parent run ends (with `status`) once the report is attached. What publish.make returns, or None."""
    from dataclasses import asdict

    from orchestrator.report import make

    try:
        made = make(store, str(p.cfg.sweep.name), p.cfg.report,
                    p.storage_dir / "report", [asdict(d) for d in scheduler.decisions],
                    p.storage_dir, p.project_root, finish=status, lead=lead, summary=summary)
    except Exception as exc:  # the sweep's runs are all in MLflow; only the report is missing
        print(f"danlu: the report could not be made ({type(exc).__name__}: {exc}); "
              f"`danlu report {p.cfg.sweep.name}` tries again", file=out, flush=True)
        return None
    print("\n".join(made["text"]), file=out)
    print(f"danlu: report: {made['dir'] / 'report.html'} (and the parent run's artifacts, report/)", file=out)
    return made
