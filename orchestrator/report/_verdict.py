"""The verdict that leads every report: on the terminal, at the top of report.html and report.json, and as the sweep's
parent run description in MLflow (its run page shows it). Three things, each valid for the n seeds at hand:

- the headline: the winner; or the set of configurations that cannot be told from it; or that nothing can be
  decided with these seeds (too few for the exact test to reach p < 0.05), or at all (one seed);
- the evidence: n seeds, the test, the smallest effect this design could detect;
- the next step, as a command: `danlu compare <best> --vs <runner-up> --seeds N --set ...`, N from the observed
  spread of their paired differences (orchestrator.stats.seeds_for).

A `danlu compare` sweep leads with its own verdict instead (orchestrator/review/compare.py passes it in).
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field

from orchestrator import stats

# the overrides of a sweep's command that do not carry over to a comparison of two of its configurations
_NOT_SHARED = ("sweep.", "search", "scheduler", "report", "hydra", "storage.", "output_dir", "+sweep", "~sweep")


@dataclass
class Verdict:
    headline: str
    evidence: str
    next_step: str | None = None
    data: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The verdict for the terminal: Verdict, Evidence, Next."""
        out = [f"Verdict: {self.headline}", f"Evidence: {self.evidence}"]
        return out + ([f"Next: {self.next_step}"] if self.next_step else [])

    def markdown(self) -> str:
        """The verdict as Markdown (the parent run's description)."""
        out = f"**Verdict:** {self.headline}\n\n**Evidence:** {self.evidence}\n"
        return out + (f"\n**Next:** `{self.next_step}`\n" if self.next_step else "")

    def as_json(self) -> dict:
        """The verdict's part of report.json."""
        return {"headline": self.headline, "evidence": self.evidence, "next_step": self.next_step, **self.data}


def shared_overrides(command: str) -> list[str]:
    """The plain `key=value` overrides of a sweep's command line (danlu.command on its parent run) that a
    comparison of two of its configurations keeps: the job, its fixed settings, the tracking store."""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    out = []
    for w in words:
        key, eq, value = w.partition("=")
        if not eq or w.startswith("-") or key.startswith(_NOT_SHARED):
            continue
        if "," in value or "(" in value:  # a sweep expression: the configurations' own values
            continue
        out.append(w)
    return out


def compare_command(best, runner, n: int, shared: list[str]) -> str:
    """The `danlu compare` command that would decide best against runner-up with n seeds, keeping the sweep's own
    settings (`shared`) that the arms do not set."""
    def arm(config) -> str:  # a run's params hold each value as its override's text
        return " ".join(shlex.quote(f"{k}={v}") for k, v in config.hp.items())

    keep = [w for w in shared if w.split("=", 1)[0] not in best.hp]
    return (f"danlu compare {arm(best)} --vs {arm(runner)} --seeds {n}"
            + (f" --set {' '.join(shlex.quote(w) for w in keep)}" if keep else ""))


def _f(x) -> str:
    return "-" if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))) else f"{x:.4g}"


def block(data, rows, shared: list[str] | None = None) -> Verdict:
    """The verdict that leads the report: the winner, the set that cannot be told from it, or that nothing can be
    decided with these seeds (and how many could); the evidence; the next step as a command. Under a scheduler that
    changes a trial's hyperparameters as it runs, a row is a trial's starting values: said first, and no compare
    command is made of it (a compare holds two configurations fixed, which these trials were not)."""
    from orchestrator import scheduler

    made = _block(data, rows, shared)
    if rows and scheduler.schedule(data.scheduler or {}).mutates:
        name = (data.scheduler or {}).get("name", "the scheduler")
        made = Verdict(f"scheduler {name} changed hyperparameters as the trials ran: a row is a trial's starting "
                       f"values, not a configuration it held. {made.headline}", made.evidence + " Comparing two rows "
                       "with danlu compare would test configurations held fixed, which these trials were not.", None,
                       made.data | {"mutated": True})
    return made


def _block(data, rows, shared: list[str] | None = None) -> Verdict:
    from orchestrator.report._data import label

    m = data.metric
    if not rows:
        return Verdict(f"no trial reported {m}: nothing to compare.", "no data.")
    shared = shared if shared is not None else shared_overrides(getattr(data, "command", "") or "")
    best = rows[0]
    top = [r for r in rows if r.config.rung == best.config.rung]
    n = max(r.stats.n for r in rows)
    res = stats.resolution([v for r in rows for v in r.config.values.values()])
    resolution = f" Intervals are never narrower than the metric's resolution ({_f(res)})." if res == res else ""
    runner = top[1] if len(top) > 1 else None
    if n < 2:
        return _one_seed(data, rows, best, runner, shared, resolution)
    others = top[1:]
    states = {r.config.id: r.vs_best.get("state") for r in others}
    worse = [r for r in others if states[r.config.id] == "worse"]
    tied = [r for r in others if states[r.config.id] == "indistinguishable"]
    open_ = [r for r in others if states[r.config.id] in ("undecided", "untested")]
    comparisons = sum(1 for r in others if r.vs_best.get("pairs", 0) >= 2)
    need = stats.seeds_to_decide(max(1, comparisons))
    b = f"{label(best.config)} ({m} {_f(best.stats.mean)}, 95% CI {_f(best.stats.low)} to {_f(best.stats.high)})"
    if not others:
        headline = f"{b} is the only configuration that reached step {best.config.rung}: nothing to compare it with."
    elif len(worse) == len(others):
        headline = f"{b} wins: it is better than each of the {len(others)} other configurations at step " \
                   f"{best.config.rung}, beyond seed noise."
    elif open_ and not worse and not tied:
        headline = (f"cannot be decided with {n} seeds: {b} has the best mean, but with {comparisons} comparison(s) "
                    f"the exact test's smallest adjusted p-value is {_f(comparisons * stats.min_p(n))} >= "
                    f"{stats.ALPHA}; {need} seeds could decide.")
    else:
        parts = [f"{b} has the best mean"]
        if tied:
            parts.append(f"it cannot be told apart from {len(tied)} configuration(s) ("
                         + "; ".join(label(r.config) for r in tied[:4]) + (" ..." if len(tied) > 4 else "") + ")")
        if worse:
            parts.append(f"{len(worse)} are worse beyond seed noise")
        if open_:
            parts.append(f"{len(open_)} cannot be decided with the seeds they share with it")
        headline = "; ".join(parts) + "."
    evidence = (f"{n} seeds per configuration; {stats.TEST_NAME} over the seeds each shares with the best, "
                f"Holm-adjusted over {comparisons} comparison(s)." if comparisons else
                f"{n} seeds per configuration; no other configuration reached step {best.config.rung} to be compared "
                "with it (an early-stopped mean is of another fidelity).")
    nxt, data_out = None, {"seeds": n, "test": stats.TEST_NAME, "comparisons": comparisons, "resolution": res}
    if runner is not None:
        r = stats.paired(best.config.values, runner.config.values)
        data_out |= {"runner_up": label(runner.config), "effect_vs_runner_up": r.effect, "detectable": r.detectable}
        evidence += (f" Against the runner-up ({label(runner.config)}): effect {_f(r.effect)}; "
                     + (f"the smallest effect this design could detect (80% power, alpha 0.05) is {_f(r.detectable)}."
                        if math.isfinite(r.detectable) else
                        f"no effect can be detected with {r.n} paired seeds (the exact test's smallest p-value is "
                        f"{_f(stats.min_p(r.n))})."))
        seeds = stats.seeds_for(r.effect, r.sd, res) or (need if not math.isfinite(r.detectable) else None)
        if seeds and states.get(runner.config.id) != "worse":
            nxt = compare_command(best.config, runner.config, seeds, shared)
            data_out["next_seeds"] = seeds
    return Verdict(headline, evidence + resolution, nxt, data_out)


def _one_seed(data, rows, best, runner, shared, resolution) -> Verdict:
    from orchestrator.report._data import label

    m = data.metric
    headline = (f"untested: one seed per configuration. {label(best.config)} had the best single run ({m} "
                f"{_f(best.stats.mean)}), which may be seed luck: no claim of a difference can be made.")
    evidence = "1 seed per configuration; no test can tell a configuration from seed luck."
    earlier = data.earlier_seed_sd
    out = {"seeds": 1, "test": None}
    sd = math.nan
    if earlier:
        sd = earlier["sd"]
        evidence += (f" For scale: sweep {earlier['sweep']} (the same job, metric and step {earlier.get('step')}) "
                     f"measured a seed-to-seed sd of {_f(sd)}.")
        out["borrowed_sd"] = earlier
    nxt = None
    if runner is not None:
        effect = best.stats.mean - runner.stats.mean
        seeds = stats.seeds_for(effect, sd * math.sqrt(2)) if sd == sd else None
        nxt = compare_command(best.config, runner.config, seeds or stats.seeds_to_decide(1), shared)
    return Verdict(headline, evidence + resolution, nxt, out)
