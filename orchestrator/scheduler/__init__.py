"""Schedulers: when a sweep stops trials early. One module per scheduler, chosen by the `scheduler` config group.

`danlu sweep scheduler=fifo` composes orchestrator/conf/scheduler/fifo.yaml, whose `name` is the module here that builds it.
A scheduler module provides what `SchedulerModule` states (check, make, schedule); make() gets a `SchedulerContext`
(the settings, seeds, metric and mode, space and checkpoint settings); the Tune scheduler that it returns also provides what `Recording` states (the early-stopped trials, the decisions, the state to carry
over a resume). A new scheduler is one module here plus one orchestrator/conf/scheduler/<name>.yaml; nothing outside this
package names a scheduler. Modules named _<name> are helpers (_tune_asha, _group_rungs: seed-aware ASHA).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler as _Scheduler

    from orchestrator.config.space import Space
    from orchestrator.trial.retries import RetryPolicy
else:
    _Scheduler = object  # Recording is mixed in before Tune's scheduler class; nothing of Ray imported here

from orchestrator import plugins


@dataclass(frozen=True)
class Schedule:
    """What a scheduler's settings say of a trial's length, before any trial runs: the progress line's ETA and
    the report's "Survivors per rung" read it."""

    max_t: float | None  # a trial's last step (None: the job decides; learnt from trials that complete)
    rungs: tuple[float, ...] = ()  # the steps below max_t where the scheduler decides to stop trials or not
    reduction_factor: float = 1.0  # at each rung, about 1 in this many trials goes on (1: all do)
    mutates: bool = False  # a trial's hyperparameters change as it runs (PBT): a trial is no fixed configuration


@dataclass(frozen=True)
class SchedulerContext:
    """What a scheduler is made with: its own settings and the facts of the sweep a scheduler may need (a
    population-based one mutates the space's values and copies checkpoints between trials)."""

    sch: Any  # the `scheduler` config group, checked (scheduler.name and this scheduler's own settings)
    seeds: list[int] = field(default_factory=lambda: [0])  # sweep.seeds: replicates, judged together
    metric: str = ""  # sweep.metric, what the trials report and the sweep ranks on
    mode: str = "max"  # sweep.mode: max | min
    space: Space | None = None  # the sweep's space: its params, each with key, kind, values and expr
    checkpoint_every: int = 1  # checkpoint.every: a trial keeps a checkpoint every this many reports
    say: Callable[[str], None] = print  # prints a line on the sweep's terminal (a decision worth hearing of at once)
    max_concurrent_trials: int | None = None  # sweep.max_concurrent_trials (None: as many as the resources allow)
    searcher_learns: bool = False  # the searcher learns from finished configurations (Tune's SearchGenerator)
    length: float | None = None  # a trial's reports (cfg.epochs; None: the job decides)

    @classmethod
    def of(cls, cfg, space: Space, say: Callable[[str], None] = print) -> SchedulerContext:
        """The context of a composed sweep config (its checkpoint settings checked) and its space."""
        from orchestrator import search

        return cls(cfg.scheduler, list(space.seeds), str(cfg.sweep.metric), str(cfg.sweep.mode), space,
                   int(cfg.checkpoint.every), say, cfg.sweep.get("max_concurrent_trials"), search.learns(cfg.search),
                   _length(cfg.get("epochs")))


class Recording(_Scheduler):
    """What danlu reads of the Tune scheduler a module makes: mix it in before Tune's class.

    Attributes:
        stopped_early: the trial ids this scheduler stopped before their end (their runs are tagged
            danlu.outcome=stopped_early, and the counts say so).
        retries: the sweep's orchestrator.trial.retries.RetryPolicy (set by the sweep), asked whenever Tune puts a
            failed trial back to retry it: only the scheduler's hooks are given Tune's controller.
        keeps_all_checkpoints: a trial may go on from another trial's checkpoint at any time (PBT): Tune then keeps
            every checkpoint, not checkpoint.keep per trial.
    """

    retries: RetryPolicy | None = None
    keeps_all_checkpoints: bool = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stopped_early: set[str] = set()
        self._waiting: dict = {}  # Tune's trials that may run, in the order Tune holds them (choose_trial_to_run)

    def __getstate__(self):  # Tune pickles the scheduler into tuner.pkl: never its trials
        return {k: v for k, v in self.__dict__.items() if k != "_waiting"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._waiting = {}

    def on_trial_add(self, tune_controller, trial):
        """Tune's hook: a trial added (or put back at the end of its list, to be retried): it may run, unless the
        retry policy says a retry cannot help; then it fails here, as if Tune had not retried it."""
        super().on_trial_add(tune_controller, trial)
        self._waiting.pop(trial, None)
        self._waiting[trial] = None
        if self.retries is not None and tune_controller is not None and trial.status == "PENDING":
            from orchestrator.ray_internals import put_back_after_failure

            if put_back_after_failure(trial):
                self._judge_retry(tune_controller, trial)

    def _judge_retry(self, tune_controller, trial) -> None:
        from orchestrator.ray_internals import fail_requeued, stored_result
        from orchestrator.trial.retries import Failure, kind_of, last_line

        retries = self.retries
        if retries is None:  # set by the sweep before Tune runs; a scheduler made without it judges nothing
            return
        failure = retries.killed.pop(trial.trial_id, None)
        if failure is None:
            error = trial_error(trial)
            failure = Failure(kind_of(error), stored_result(trial).get("step"), last_line(str(error)))
        why = retries.judge(trial.trial_id, failure)
        if why is not None:
            fail_requeued(tune_controller, trial, why)

    def on_trial_complete(self, tune_controller, trial, result):
        """Tune's hook: the trial ended; it runs no more (unless added again)."""
        super().on_trial_complete(tune_controller, trial, result)
        self._waiting.pop(trial, None)

    def on_trial_error(self, tune_controller, trial):
        """Tune's hook: the trial failed; a retry adds it again."""
        super().on_trial_error(tune_controller, trial)
        self._waiting.pop(trial, None)

    def on_trial_remove(self, tune_controller, trial):
        """Tune's hook: the trial was stopped before it ran (or while paused)."""
        super().on_trial_remove(tune_controller, trial)
        self._waiting.pop(trial, None)

    def choose_trial_to_run(self, tune_controller):
        """Tune's FIFO choice (the first PENDING trial in Tune's order, else the first PAUSED), from the trials that
        may still run. Why not Tune's own: it scans every trial the sweep ever had at each step of Tune's loop, 3 %
        of the driver's CPU at 1,700 trials and growing with them (py-spy). Trials that ended leave the list as the
        scan meets them; a trial that comes back is added again (on_trial_add), and Tune starts any PENDING trial
        this does not name anyway."""
        paused = None
        for trial in list(self._waiting):
            status = trial.status
            if status == "PENDING":
                return trial
            if status in ("TERMINATED", "ERROR"):
                del self._waiting[trial]
            elif status == "PAUSED" and paused is None:
                paused = trial
        return paused

    @property
    def decisions(self) -> list:
        """The scheduler's decisions worth reporting, as dataclasses (the report's "Survivors per rung" lists the
        ones with stop=True: config, rung, mean, seeds, cutoff). None made by default."""
        return []

    def carry(self, earlier: list[dict], grown: set[str], sign: float, decisions: list[dict]) -> None:
        """An extension's scheduler starts with what the sweep's earlier trials reached (`danlu extend`:
        orchestrator/launch/extension.py). None is carried by default; ASHA carries its rungs.

        Args:
            earlier: each earlier trial: {"config", "seed", "last" (its last step), "values": [[step, value], ...]
                at the rungs}.
            grown: the configurations the extension gives more seeds (their groups are judged again, grown).
            sign: 1 for mode=max, -1 for min (the rungs keep signed values: larger is better).
            decisions: the earlier parts' decisions, kept for the report.
        """

    def state(self) -> dict:
        """What a resumed sweep needs of this scheduler: plain data, saved with every Tune snapshot
        (orchestrator.run.tuner.SchedulerState), since Tune writes the scheduler itself only once, at the start."""
        from dataclasses import asdict

        return {"stopped_early": sorted(self.stopped_early), "decisions": [asdict(d) for d in self.decisions]}

    def load_state(self, state: dict) -> None:
        """Take back what state() saved (after Tuner.restore)."""
        self.stopped_early.update(state.get("stopped_early") or [])


def trial_error(trial):
    """A failed Tune trial's newest error: Ray's exception as Tune pickled it, else the text of its error file."""
    try:
        from ray import cloudpickle

        with open(trial.pickled_error_file, "rb") as f:
            return cloudpickle.load(f)
    except Exception:  # noqa: BLE001 - none pickled (a TuneError), or unreadable: its text says enough
        pass
    try:
        with open(trial.error_file, errors="replace") as f:
            text = f.read()
    except Exception:  # noqa: BLE001 - no file, or no folder named yet (Tune raises RuntimeError): nothing to read
        return "trial failed"
    _, header, newest = text.rpartition("Failure # ")  # Tune appends "Failure # N (occurred at ...)" and the error
    return newest.split("\n", 1)[-1] if header else text


class SchedulerModule(Protocol):
    """What a scheduler module provides (its functions; a module, not a class). Optionally HOLDS_SEEDS = True: it
    holds a seed at a rung until its configuration's other seeds get there (check_slots refuses too few slots)."""

    def check(self, ctx: SchedulerContext) -> None:
        """Refuse, as BadInput naming the key (scheduler.max_t=...), settings this scheduler cannot take, or a
        sweep it cannot run (its seeds, its space, its checkpoints, its searcher).

        Runs in plan(), before Ray starts: imports no Ray (orchestrator/config/checks.py has the numeric checks).

        Args:
            ctx: the scheduler's settings (ctx.sch: scheduler.name and its own settings) and the sweep's facts.
        """

    def make(self, ctx: SchedulerContext):
        """The Tune TrialScheduler for the sweep: a `Recording` subclass of one of Tune's.

        Args:
            ctx: the scheduler's settings (ctx.sch, checked) and the sweep's facts: ctx.seeds (a scheduler may
                judge a configuration's seeds together: seeds are replicates), ctx.metric and ctx.mode, ctx.space,
                ctx.checkpoint_every, and ctx.say to print a line on the sweep's terminal.
        """

    def schedule(self, sch, epochs) -> Schedule:
        """What the settings say of a trial's length; `sch` may hold strings (as the parent run's params do).

        Args:
            sch: the `scheduler` settings (a config or a plain dict).
            epochs: the job's own length setting (cfg.epochs), or None.
        """


def tune_class(module: str, name: str, base: Callable[[], type], methods: dict | None = None):
    """A module-level __getattr__ that makes `module`.`name`, a Recording subclass of the Tune scheduler class
    `base()` returns (with `methods` of its own), when first used. Why: the class must live at module level (Tune pickles the scheduler into
    tuner.pkl, and pickle finds a class by module and name), but a scheduler module is imported by plan(),
    before Ray, where importing Tune would cost seconds."""
    import sys

    def __getattr__(attr: str):
        if attr != name:
            raise AttributeError(f"module {module!r} has no attribute {attr!r}")
        cls = type(name, (Recording, base()), {"__module__": module, "__qualname__": name, **(methods or {})})
        setattr(sys.modules[module], name, cls)  # made once: pickle checks that it finds this very class
        return cls

    return __getattr__


def available() -> list[str]:
    """The schedulers' names (conf/scheduler options map onto these modules)."""
    return plugins.names(__name__)


def module(sch):
    """The scheduler module that sch.name chooses (BadInput naming scheduler.name if there is none)."""
    return plugins.load(__name__, str(sch.get("name")), "scheduler", "scheduler")


def check(ctx: SchedulerContext) -> None:
    """The chosen scheduler's checks (see SchedulerModule.check), then the slots it needs (check_slots)."""
    module(ctx.sch).check(ctx)
    check_slots(ctx)


def check_slots(ctx: SchedulerContext) -> None:
    """A scheduler that holds a seed at a rung until its configuration's other seeds get there (its module says
    HOLDS_SEEDS = True) needs those seeds able to run at once: sweep.max_concurrent_trials below the number of seeds
    would leave a held seed waiting for a sibling Tune never creates. BadInput naming the key."""
    from orchestrator.errors import BadInput

    sch, seeds, limit = ctx.sch, len(ctx.seeds), ctx.max_concurrent_trials
    if getattr(module(sch), "HOLDS_SEEDS", False) and seeds > 1 and limit and limit < seeds:
        raise BadInput(f"sweep.max_concurrent_trials={limit} is fewer than the {seeds} seeds of a configuration: "
                       f"scheduler {sch.get('name')} holds a seed at each rung until its configuration's other seeds "
                       f"get there, so they must be able to run at once. Set it to at least {seeds}, or leave it "
                       "null.")


def make(ctx: SchedulerContext):
    """The chosen scheduler, made for this sweep (see SchedulerModule.make)."""
    return module(ctx.sch).make(ctx)


def schedule(sch, epochs=None) -> Schedule:
    """What the chosen scheduler's settings say of a trial's length; a scheduler this danlu does not have (an
    older sweep's, read back from MLflow) says nothing: no rungs, the job's length."""
    from orchestrator.errors import BadInput

    try:
        return module(sch).schedule(sch, epochs)
    except BadInput:
        return Schedule(_length(epochs))


def _length(epochs) -> float | None:
    return float(epochs) if isinstance(epochs, (int, float)) and not isinstance(epochs, bool) else None


def saved_decisions(storage_dir) -> list[dict] | None:
    """The scheduler's decisions as Tune's newest readable snapshot in a sweep's storage holds them (callback
    states, SchedulerState first: orchestrator.run.tuner), or None. A file cut short is passed over for the one
    before (orchestrator.storage.snapshots.newest_loadable)."""
    from orchestrator.storage.snapshots import newest_loadable

    states = newest_loadable(storage_dir, "callback-states-*.pkl")
    saved = ((states if isinstance(states, dict) else {}).get(0) or {}).get("scheduler") or {}
    if "decisions" in saved:
        return list(saved["decisions"])
    groups = saved.get("groups")  # a sweep of an earlier danlu: seed-aware ASHA's own record
    return list(groups["decisions"]) if groups else None
