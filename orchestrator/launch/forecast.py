"""What a sweep will cost, before it runs: its trials, the scheduler's rungs with the trials expected at each, the
trial-steps it is expected to run (against FIFO's, every trial to its end), and, given a measured step time,
resource-hours and wall time. Pure arithmetic: `danlu plan` prints it, the parent run keeps it, and the report
sets it beside the steps the sweep really ran.

Under successive halving (ASHA) about a share 1/reduction_factor of the trials at a rung goes on to the next, and

    expected steps = sum over rungs k of (trials expected to reach rung k) x (steps from rung k to the next),

counting from step 0 (every trial) to the first rung, and from the last rung to max_t. Ray Tune's ASHA is
asynchronous: a trial arriving at a rung is compared with those recorded there before it, and the first always goes
on; with few trials that promotes well more than 1/rf. The trials expected at each rung are therefore simulated
under Tune's own rule (`reaching`), not taken as n / rf^k. Seed-aware ASHA decides per configuration, so a
configuration's seeds count together.
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


def forecast(configurations: int, seeds: int, schedule, sims: int | None = None) -> Forecast:
    """The expected trials at each rung and trial-steps of a sweep of `configurations` x `seeds` under `schedule`
    (orchestrator.scheduler.Schedule: max_t, the rungs below it, the reduction factor), by simulating Tune's rule
    (`reaching`). A scheduler without rungs (FIFO, the median rule: it may stop at any step, so no count is
    promised) is forecast as FIFO: every trial to its end."""
    f = Forecast(int(configurations), int(seeds), schedule.max_t)
    if schedule.max_t is None or f.configurations == 0:
        return f
    points = [float(r) for r in schedule.rungs if 0 < r < schedule.max_t] + [float(schedule.max_t)]
    counts = reaching(f.configurations, len(points) - 1, float(schedule.reduction_factor), sims)
    before, steps = 0.0, 0.0
    for step, n in zip(points, counts, strict=True):
        steps += n * f.seeds * (step - before)
        f.rungs.append(Rung(step, n, n * f.seeds))
        before = step
    f.steps = steps
    f.fifo_steps = float(f.trials) * float(schedule.max_t)
    return f


def reaching(n: int, rungs: int, rf: float, sims: int | None = None, seed: int = 0) -> list[float]:
    """Expected configurations reaching each of `rungs` decision points and then the end, under Ray Tune's
    asynchronous rule: a configuration arriving at a rung goes on unless its value is below the (1 - 1/rf)
    quantile (numpy's, linear) of the values recorded there before it; the first arrival always goes on.

    Why simulated: that rule promotes more than the textbook 1/rf while few configurations have arrived (with
    8 configurations and rf 3, about twice as many reach the top rung), and its expectation has no closed form.
    Values are exchangeable (nothing known of the space), a configuration keeps its rank from rung to rung, and
    configurations arrive in order. `sims` repeats (default: enough for a steady mean, fewer for large n, where
    one is steady already), from a fixed seed: the same plan prints the same forecast."""
    import bisect
    import random

    if n <= 0:
        return [0.0] * (rungs + 1)
    if rf <= 1 or rungs == 0:
        return [float(n)] * (rungs + 1)
    sims = sims or max(2, min(400, 40_000 // n))
    q = 1 - 1 / rf
    rng = random.Random(seed)
    totals = [0] * (rungs + 1)
    for _ in range(sims):
        recorded: list[list[float]] = [[] for _ in range(rungs)]
        for _config in range(n):
            value = rng.random()
            totals[0] += 1
            for k in range(rungs):
                held = recorded[k]
                cutoff = _quantile(held, q) if held else None
                bisect.insort(held, value)
                if cutoff is not None and value < cutoff:
                    break
                totals[k + 1] += 1
    return [t / sims for t in totals]


def _quantile(ordered: list[float], q: float) -> float:
    """numpy.percentile's default (linear) of a sorted list, without numpy (plan() imports nothing heavy)."""
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])


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
    step_s: float  # seconds per step (report) of one trial, once it runs
    startup_s: float  # seconds from a trial's start to its first report (its process, imports, data)
    resource: str  # "GPU" or "CPU": what a trial holds that is counted
    per_trial: float  # how much of it one trial holds (fractional GPUs count their fraction)
    concurrent: int  # trials at once
    resource_hours: float  # (expected steps x step_s + trials x startup_s) x per_trial
    fifo_resource_hours: float
    wall_s: float  # the same seconds over `concurrent` slots: a lower bound (the last rungs run fewer at once)


def cost(f: Forecast, step_s: float, gpu: float, cpu: float, concurrent: int, startup_s: float = 0.0) -> Cost | None:
    """Resource-hours and wall time of a forecast at `step_s` seconds per step and `startup_s` per trial,
    `concurrent` trials at once; None where the forecast has no step count."""
    if f.steps is None or f.fifo_steps is None or concurrent < 1:
        return None
    resource, per = ("GPU", float(gpu)) if gpu > 0 else ("CPU", float(cpu))
    busy = f.steps * step_s + f.trials * startup_s
    fifo = f.fifo_steps * step_s + f.trials * startup_s
    return Cost(step_s, startup_s, resource, per, concurrent, busy * per / 3600, fifo * per / 3600, busy / concurrent)


def sweep_forecast(p) -> Forecast:
    """The forecast of plan `p`: its searcher's configurations, its seeds, its scheduler's schedule."""
    from orchestrator import scheduler, search

    return forecast(search.count(p.space, p.cfg), len(p.space.seeds),
                    scheduler.schedule(p.cfg.scheduler, p.cfg.get("epochs")))
