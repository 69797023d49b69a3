"""What a sweep will cost, before it runs: its trials, the scheduler's rungs with the trials expected at each, the
trial-steps it is expected to run (against FIFO's, every trial to its end), and, given a measured step time,
resource-hours and wall time. Pure arithmetic: `danlu plan` prints it, the parent run keeps it, and the report
sets it beside the steps the sweep really ran.

Under successive halving (ASHA) a share 1/reduction_factor of the trials at a rung goes on to the next, so

    expected steps = sum over rungs k of (trials expected to reach rung k) x (steps from rung k to the next),

counting from step 0 (every trial) to the first rung, and from the last rung to max_t. Ray Tune's ASHA is
asynchronous: the first trial to reach a rung always goes on (there is nothing yet to compare it with), so at least
one trial (one configuration's seeds, for seed-aware ASHA) is expected at every rung; the forecast takes the larger
of the halving's share and that one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rung:
    step: float  # where the scheduler decides (or max_t, the end)
    configurations: float  # expected to reach it
    trials: float  # ...times the seeds: trials expected to reach it


@dataclass
class Forecast:
    configurations: int
    seeds: int
    max_t: float | None  # a trial's length (None: the job decides; no step count can be forecast)
    rungs: list[Rung] = field(default_factory=list)  # the decision points, then max_t
    steps: float | None = None  # expected trial-steps under the scheduler
    fifo_steps: float | None = None  # every trial to max_t

    @property
    def trials(self) -> int:
        """Configurations times seeds."""
        return self.configurations * self.seeds

    def as_tags(self) -> dict[str, str]:
        """The forecast as the parent run keeps it (danlu.forecast.*), for the report's forecast against actual."""
        out = {"trials": str(self.trials)}
        if self.steps is not None:
            out |= {"steps": f"{self.steps:.1f}", "fifo_steps": f"{self.fifo_steps:.0f}"}
        from orchestrator import tags as T

        return {T.FORECAST.format(k): v for k, v in out.items()}


def forecast(configurations: int, seeds: int, schedule) -> Forecast:
    """The expected trials at each rung and trial-steps of a sweep of `configurations` x `seeds` under `schedule`
    (orchestrator.scheduler.Schedule: max_t, the rungs below it, the reduction factor). A scheduler without rungs
    (FIFO, the median rule: it may stop at any step, so no count is promised) is forecast as FIFO: every trial to
    its end."""
    f = Forecast(int(configurations), int(seeds), schedule.max_t)
    if schedule.max_t is None or f.configurations == 0:
        return f
    rf = max(float(schedule.reduction_factor), 1.0)
    points = [float(r) for r in schedule.rungs if 0 < r < schedule.max_t] + [float(schedule.max_t)]
    reaching = float(f.configurations)  # every configuration reaches the first rung
    before, steps = 0.0, 0.0
    for k, step in enumerate(points):
        if k:
            reaching = max(reaching / rf, 1.0) if rf > 1 else reaching
        steps += reaching * f.seeds * (step - before)
        f.rungs.append(Rung(step, reaching, reaching * f.seeds))
        before = step
    f.steps = steps
    f.fifo_steps = float(f.trials) * float(schedule.max_t)
    return f


def halving_short(f: Forecast, reduction_factor: float) -> int | None:
    """The configurations successive halving needs for one to reach max_t by the halving alone
    (reduction_factor ** rungs), where the sweep has fewer; else None."""
    decisions = len(f.rungs) - 1
    if decisions <= 0 or reduction_factor <= 1:
        return None
    need = int(round(float(reduction_factor) ** decisions))
    return need if f.configurations < need else None


@dataclass(frozen=True)
class Cost:
    step_s: float  # seconds per step (report) of one trial
    resource: str  # "GPU" or "CPU": what a trial holds that is counted
    per_trial: float  # how much of it one trial holds (fractional GPUs count their fraction)
    concurrent: int  # trials at once
    resource_hours: float  # expected steps x step_s x per_trial
    fifo_resource_hours: float
    wall_s: float  # expected steps x step_s / concurrent: a lower bound (the last rungs run fewer at once)


def cost(f: Forecast, step_s: float, gpu: float, cpu: float, concurrent: int) -> Cost | None:
    """Resource-hours and wall time of a forecast at `step_s` seconds per step, `concurrent` trials at once; None
    where the forecast has no step count."""
    if f.steps is None or concurrent < 1:
        return None
    resource, per = ("GPU", float(gpu)) if gpu > 0 else ("CPU", float(cpu))
    return Cost(step_s, resource, per, concurrent, f.steps * step_s * per / 3600,
                f.fifo_steps * step_s * per / 3600, f.steps * step_s / concurrent)
