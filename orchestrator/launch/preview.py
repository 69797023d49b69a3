"""`danlu plan`: a sweep composed and costed, nothing launched. The base config, the space as a table, the trial
count, the scheduler's rungs with the trials expected at each, the expected trial-steps beside FIFO's, resource-
hours and wall time at a measured step time (--probe runs the base config a few steps; else the job's last sweep
in MLflow measured it), whether a trial fits the cluster and how many run at once, and warnings."""

from __future__ import annotations

import sys

from orchestrator.config.compose import plain
from orchestrator.config.space import LR_KEY
from orchestrator.launch.forecast import cost, halving_short


def space_rows(space) -> list[tuple[str, str, str, str]]:
    """(key, distribution, bounds or values, log scale) per swept key."""
    rows = []
    for prm in space.params:
        if prm.values:
            bounds = ", ".join(str(v) for v in prm.values)
        else:
            bounds = f"[{prm.low:g}, {prm.high:g}]"
        rows.append((prm.key, prm.kind, bounds, "yes" if prm.kind.startswith("log") else "no"))
    return rows


def warnings(p, f) -> list[str]:
    """What the plan should not be launched without hearing: a seed swept as a hyperparameter, an lr interval over
    a decade without log scale, fewer configurations than the halving needs."""
    out = []
    for prm in p.space.params:
        last = prm.key.split(".")[-1]
        if "seed" in last:
            out.append(f"{prm.key} is swept as a hyperparameter: a seed's effect is noise, and the best seed does not "
                       "carry over; run seeds as replicates (sweep.seeds=[0,1,2]) instead")
        if LR_KEY.search(prm.key) and prm.kind in ("uniform", "randint") and prm.low is not None and \
                prm.low > 0 and prm.high / prm.low > 10:
            out.append(f"{prm.key}={prm.expr} spans {prm.high / prm.low:.0f}x without log scale: uniform sampling puts "
                       f"{100 * (1 - (prm.high / 10 - prm.low) / (prm.high - prm.low)):.0f}% of draws in its top decade; "
                       f"write {prm.key}='tag(log, interval({prm.low:g}, {prm.high:g}))'")
        if LR_KEY.search(prm.key) and prm.kind in ("uniform", "loguniform") and prm.low is not None and prm.low <= 0:
            out.append(f"{prm.key}={prm.expr}: a learning rate of {prm.low:g} or below trains nothing")
    need = halving_short(f, float(p.cfg.scheduler.get("reduction_factor") or 1))
    if need is not None:
        out.append(f"{f.configurations} configuration(s) < {need} = reduction_factor^{len(f.rungs) - 1}: by halving "
                   f"alone fewer than one would reach step {f.max_t:g}; Tune's asynchronous rule lets early arrivals "
                   "through instead, so the last rungs compare few configurations (raise sweep.num_samples to "
                   f"{need}, or grace_period)")
    return out


def previous_step_s(p) -> tuple[float, float, str] | None:
    """Seconds per step the job's newest earlier sweep measured: one under output_dir (its danlu/measured.json:
    read in milliseconds), else the tracking store's (its parent's step_s metric: MLflow's import alone takes
    seconds). None where neither has one; a sqlite store that does not exist yet is not created."""
    import json

    from orchestrator.storage.disk import sqlite_path
    from orchestrator.storage.sweep_files import MEASURED, STATE_DIR

    found = []
    for path in p.storage_dir.parent.glob(f"*/{STATE_DIR}/{MEASURED}"):
        try:
            rec = json.loads(path.read_text())
            if rec.get("job") == str(p.cfg.job.name) and float(rec["step_s"]) > 0:
                found.append((path.stat().st_mtime, float(rec["step_s"]), float(rec.get("startup_s") or 0),
                              path.parent.parent.name))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if found:
        _, step_s, startup_s, name = max(found)
        return step_s, startup_s, f"sweep {name} (under {p.storage_dir.parent})"

    path = sqlite_path(p.tracking_uri)
    if path is not None:
        import os

        if not os.path.isfile(path):
            return None
    try:
        from orchestrator.tracking import open_store

        store = open_store(p.tracking_uri, str(p.cfg.tracking.experiment), p.store_kind)
        for run in store.sweeps_of_job(str(p.cfg.job.name)):
            v = run.metrics.get("step_s")
            if v and v > 0:
                return float(v), float(run.metrics.get("trial_startup_s") or 0), \
                    f"sweep {run.tags.get('danlu.sweep', run.run_id)} in MLflow"
    except Exception as exc:  # a store that cannot be read only costs the estimate
        print(f"danlu: plan: the tracking store could not be read for a step time ({type(exc).__name__})",
              file=sys.stderr)
    return None


def fit(p, address: str | None) -> tuple[int, str]:
    """Trials at once (0: a trial fits no node), and where: the cluster at `address` (or cluster.address), read
    from Ray; else this machine, as an embedded Ray would see it."""
    from orchestrator.cluster.placement import local_capacity, trials_at_once

    need = p.need
    address = address or p.cfg.cluster.get("address")
    if address:
        from orchestrator.launch.reach import nodes_at

        nodes = nodes_at(str(address))
        where = f"the cluster at {address} ({len(nodes)} node(s))"
    else:
        nodes = {"this machine": local_capacity(p.cfg.cluster)}
        where = "this machine"
    offers = "; ".join(", ".join(f"{k}={v:g}" for k, v in sorted(n.items()) if k in need) for n in nodes.values())
    return trials_at_once(need, nodes), f"{where}: {offers}"


def show(p, probe: bool = False, address: str | None = None, out=None) -> int:
    """Print the plan of `p` (orchestrator.launch.plan.Plan); 0, or 2 where a probe finds the metric missing."""
    from omegaconf import OmegaConf

    from orchestrator.errors import BadInput

    out = out or sys.stdout
    cfg, sweep = p.cfg, p.cfg.sweep

    def say(line=""):
        print(line, file=out)

    at_once, where = fit(p, address)  # first: a cluster that does not answer is said before any of the plan
    say(f"danlu plan: sweep {sweep.name} of job {cfg.job.name} ({cfg.job.fn}); nothing is launched")
    base = plain(cfg)
    base["sweep"].pop("space", None)
    say("\nbase config (what every trial starts from):")
    say("\n".join("  " + ln for ln in OmegaConf.to_yaml(base).rstrip().splitlines()))
    rows = space_rows(p.space)
    say(f"\nsearch space ({len(rows)} key(s)):")
    if rows:
        w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(("key", "distribution", "bounds/values"))]
        say(f"  {'key':<{w[0]}}  {'distribution':<{w[1]}}  {'bounds/values':<{w[2]}}  log")
        for r in rows:
            say(f"  {r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}")
    f = p.forecast
    say(f"\ntrials: {f.configurations} configuration(s) (search={cfg.search.name}) x {f.seeds} seed(s) "
        f"{list(p.space.seeds)} = {f.trials} trial(s)")
    sch = cfg.scheduler
    settings = ", ".join(f"{k}={v}" for k, v in plain(sch).items() if k != "name")
    say(f"\nschedule: {sch.name}" + (f" ({settings})" if settings else ""))
    if f.steps is None:
        say("  the trials' length is the job's own: no step count can be forecast")
    else:
        say(f"  {'step':>8}  {'configurations':>14}  {'trials':>8}")
        for k, rung in enumerate(f.rungs):
            what = "end" if k == len(f.rungs) - 1 else "rung"
            say(f"  {rung.step:>8g}  {rung.configurations:>14.2f}  {rung.trials:>8.2f}   {what}")
        saving = 1 - f.steps / f.fifo_steps if f.fifo_steps else 0.0
        say(f"  expected trial-steps: {f.steps:.1f}; FIFO (every trial to step {f.max_t:g}): {f.fifo_steps:.0f}"
            + (f"; {sch.name} saves {100 * saving:.0f}%" if saving > 0.005 else ""))
    step_s, startup_s = None, 0.0
    source = "no measured step time: run `danlu plan --probe`, or one sweep of this job first"
    if probe:
        from orchestrator.launch.preflight import Preflight

        pf = Preflight(p, say=lambda _: None)
        try:
            b = pf.base()
            check = pf.check_metric()
        finally:
            pf.close()
        if check.status == "FAIL":
            raise BadInput(check.reason) if str(sweep.metric) not in b.keys and b.history else \
                BadInput(f"--probe: {check.reason}")
        step_s, source = b.step_s(), f"--probe: {len(b.history)} report(s) of the base config here"
        startup_s = max(0.0, (b.times[0] if b.times else 0.0) - (step_s or 0.0))
    else:
        found = previous_step_s(p)
        if found:
            step_s, startup_s, source = found
    need = p.need
    limit = sweep.get("max_concurrent_trials")
    concurrent = min(x for x in (at_once, f.trials, limit or at_once) if x is not None)
    say("\nfit: " + (f"{at_once} trial(s) at once on {where}" if at_once else
                     f"a trial asking {', '.join(f'{k}={v:g}' for k, v in need.items() if v)} fits no node of {where}")
        + (f"; sweep.max_concurrent_trials={limit}" if limit else ""))
    say(f"\ncost: {source}" + (f": {step_s:.3g} s per step, {startup_s:.3g} s per trial to its first report"
                              if step_s else ""))
    c = cost(f, step_s, need.get("GPU", 0.0), need.get("CPU", 1.0), concurrent, startup_s) if step_s else None
    if c is not None:
        say(f"  {c.resource}-hours: {c.resource_hours:.3g} (FIFO: {c.fifo_resource_hours:.3g}) at {c.per_trial:g} "
            f"{c.resource} per trial; wall time about {_duration(c.wall_s)} with {c.concurrent} trial(s) at once "
            "(a lower bound: the last rungs run fewer at once)")
    warned = warnings(p, f)
    say("\nwarnings:" if warned else "\nwarnings: none")
    for warning in warned:
        say(f"  - {warning}")
    return 0


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
