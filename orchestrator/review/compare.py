"""`danlu compare A --vs B --seeds N`: a paired-seed A/B test of a tuning claim.

Both arms run under the same seeds 0..N-1 (paired: a seed fixes the data order and initialisation luck both
arms share), as one sweep (search=arms, no early stopping), so it is logged as a parent run with both arms'
children and resumes like a sweep: the same command again continues it. It prints the effect of A over B
with its 95 % interval, the exact sign-flip permutation test's p-value, and a one-line verdict with the smallest
effect the design could detect (orchestrator.stats.paired); the same verdict leads the sweep's report. With fewer
seeds than the test needs to reach p < 0.05 (6), it warns before launching and its verdict says the question
cannot be decided with them.

Arms that differ only in their seed (`seed=42 --vs seed=0`) are the seed-luck demonstration: one
configuration runs under both seeds and N others, and the verdict says where the two fall among them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import checks
from orchestrator.errors import BadInput


@dataclass
class Arms:
    a: dict[str, str]  # key -> value text, as written
    b: dict[str, str]
    seeds: list[int]
    seed_arms: bool  # the arms differ in their seed only
    named: dict | None = None  # with seed arms: {"seed_a": 42, "seed_b": 0}


def _parse(arm: list[str], side: str) -> dict[str, str]:
    out = {}
    for text in arm:
        key, eq, value = text.partition("=")
        if not eq or not key or key.startswith(("+", "~")):
            raise BadInput(f"danlu compare: '{text}' in arm {side}: an arm is key=value overrides, e.g. batch_size=64.")
        if "," in value or "(" in value:
            raise BadInput(f"danlu compare: {text} in arm {side}: one value per key (an arm is one configuration).")
        out[key] = value
    return out


def arms(a: list[str], b: list[str], n_seeds: int, base_cfg) -> Arms:
    """The two arms of `danlu compare` as a sweep: their overrides checked (one value per key, the same keys, no
    seed), the seeds both run under, and the keys they share."""
    from omegaconf import OmegaConf

    checks.integer("--seeds", n_seeds, 1, note="(the seeds both arms run under)")
    pa, pb = _parse(a, "A"), _parse(b, "B")
    if not pa or not pb:
        raise BadInput("danlu compare: both arms need an override, e.g. danlu compare batch_size=64 --vs batch_size=63.")
    if pa == pb:
        raise BadInput(f"danlu compare: the arms are the same ({' '.join(a)}); nothing to compare.")
    if set(pa) == {"seed"} == set(pb):
        try:
            sa, sb = int(pa["seed"]), int(pb["seed"])
        except ValueError:
            raise BadInput("danlu compare: seed=... takes an integer.") from None
        return Arms({}, {}, sorted({sa, sb} | set(range(n_seeds))), True, {"seed_a": sa, "seed_b": sb})
    if "seed" in pa or "seed" in pb:
        raise BadInput("danlu compare: seed= in an arm: seeds are replicates, shared by both arms (--seeds N). "
                       "Compare seeds on their own: danlu compare seed=42 --vs seed=0.")
    for key in set(pa) ^ set(pb):  # a key set in one arm only takes the base config's value in the other
        if "/" in key:
            raise BadInput(f"danlu compare: {key} is set in one arm only; give it in both.")
        value = OmegaConf.select(base_cfg, key, default=None)
        if value is None or OmegaConf.is_config(value):
            raise BadInput(f"danlu compare: {key} is set in one arm only and has no plain value in the config; "
                           "give it in both arms.")
        (pb if key in pa else pa)[key] = str(value)
    return Arms(pa, pb, list(range(n_seeds)), False)


def sweep_overrides(arm: Arms, shared: list[str], name: str | None, job: str) -> list[str]:
    """The sweep that runs the comparison: its space lists each key's value in A then B (search=arms zips them)."""
    entries = [f"{k}={arm.a[k]},{arm.b[k]}" for k in sorted(arm.a)]
    seeds = ",".join(str(s) for s in arm.seeds)
    ident = "|".join([*sorted(shared), *entries, seeds, str(arm.named or "")])
    name = name or f"compare-{job}-{hashlib.sha1(ident.encode()).hexdigest()[:8]}"
    return [*shared, "search=arms", "scheduler=fifo", "sweep.num_samples=1", "~sweep.space", "+sweep.space={}",
            f"sweep.seeds=[{seeds}]", f"sweep.name={name}", "report.sections=[leaderboard,curves]", *entries]


def verdict(arm: Arms, data) -> dict:
    """The comparison's numbers and its one-line verdict, from the sweep's runs (orchestrator/report/_data.py).
    Valid for the n seeds at hand: below the seeds the exact test needs to reach p < 0.05 it says the question
    cannot be decided with them (and how many could), never that there is no difference."""
    from orchestrator import stats

    m, better = data.metric, ("higher" if data.mode == "max" else "lower")
    if arm.seed_arms:
        named = arm.named or {}
        sa, sb = named["seed_a"], named["seed_b"]
        values = data.configs[0].values if len(data.configs) == 1 else {}
        if sa not in values or sb not in values:
            return {"kind": "missing", "metric": m, "verdict": f"seed {sa} or seed {sb} has no finished trial with "
                    f"{m} in MLflow; nothing to compare."}
        spread = stats.t_interval(values.values())
        rank = sorted(values, key=lambda s: -values[s] if data.mode == "max" else values[s])
        diff = values[sa] - values[sb]
        z = diff / spread.sd if spread.sd == spread.sd and spread.sd > 0 else math.nan
        line = (f"seed {sa}: {m}={values[sa]:.4g} (rank {rank.index(sa) + 1} of {len(values)} seeds), seed {sb}: "
                f"{values[sb]:.4g} (rank {rank.index(sb) + 1}); the difference {diff:+.3g} is {abs(z):.2g} sd of "
                f"this configuration's seed-to-seed spread (sd {spread.sd:.3g} over {spread.n} seeds): seed luck, "
                "by construction, since nothing else differs.")
        return {"kind": "seeds", "metric": m, "values": {str(s): v for s, v in sorted(values.items())},
                "difference": diff, "sd": spread.sd, "z": z, "verdict": line}
    by_hp = {tuple(sorted(c.hp.items())): c for c in data.configs}
    ca = by_hp.get(tuple(sorted((k, _norm(v)) for k, v in arm.a.items())))
    cb = by_hp.get(tuple(sorted((k, _norm(v)) for k, v in arm.b.items())))
    if ca is None or cb is None or not ca.values or not cb.values:
        return {"kind": "missing", "metric": m, "verdict": "an arm has no finished trial with the metric in MLflow "
                f"(found: {', '.join(str(c.hp) for c in data.configs) or 'none'}); nothing to compare."}
    r = stats.paired(ca.values, cb.values)
    a_txt, b_txt = " ".join(f"{k}={v}" for k, v in arm.a.items()), " ".join(f"{k}={v}" for k, v in arm.b.items())
    need = stats.seeds_to_decide(1)
    seeds = stats.seeds_for(r.effect, r.sd, r.resolution) if r.n >= 2 else None
    if r.n < 2:
        line = f"only {r.n} paired seed(s): no claim can be made; run with --seeds {need} or more."
    elif r.p < stats.ALPHA:
        winner = a_txt if (r.effect > 0) == (data.mode == "max") else b_txt
        line = (f"{winner} gives {better} {m}: the effect {r.effect:+.3g} (95% CI {r.low:+.3g} to {r.high:+.3g}) "
                f"is beyond seed noise at n={r.n} ({stats.TEST_NAME}, p={r.p:.3g}).")
    elif not r.decidable:
        line = (f"cannot be decided with {r.n} seeds: the smallest p-value {r.n} paired seeds can give is "
                f"{stats.min_p(r.n):.3g} (2/2^{r.n}), not below {stats.ALPHA} ({stats.TEST_NAME}; here p={r.p:.2g}). "
                f"{need} seeds could decide" + (f"; about {seeds} would detect an effect of the size seen here "
                                                f"({r.effect:+.3g}) 80% of the time." if seeds else "."))
    else:
        line = (f"no detectable difference at n={r.n} ({stats.TEST_NAME}, p={r.p:.2g}); the smallest effect this "
                f"design could detect (80% power, alpha 0.05) is {r.detectable:.3g}.")
    return {"kind": "arms", "metric": m, "a": a_txt, "b": b_txt, "n": r.n, "effect": r.effect, "ci_low": r.low,
            "ci_high": r.high, "p": r.p, "detectable": r.detectable, "resolution": r.resolution,
            "test": stats.TEST_NAME, "decidable": r.decidable, "next_seeds": seeds or (need if not r.decidable else None),
            "verdict": line, "values_a": {str(s): v for s, v in sorted(ca.values.items())},
            "values_b": {str(s): v for s, v in sorted(cb.values.items())}}


def interval_text(result: dict) -> str:
    """The effect's 95 % interval in words, or why it is unbounded (too few paired seeds)."""
    lo, hi = result["ci_low"], result["ci_high"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"unbounded: {result['n']} paired seeds cannot reach p < 0.05"
    return f"{lo:+.4g} to {hi:+.4g}"


def lead(arm: Arms, shared: list[str]):
    """The compare sweep's report leads with the comparison's own verdict (orchestrator/report/_verdict.py)."""
    from orchestrator import stats
    from orchestrator.report._verdict import Verdict

    def block(data, rows) -> Verdict:
        r = verdict(arm, data)
        if r["kind"] == "seeds":
            return Verdict(r["verdict"], f"one configuration under {len(arm.seeds)} seeds; its seeds' spread (sd "
                           f"{r['sd']:.3g}) is the yardstick; no test: the two arms differ in nothing but their seed.",
                           None, r)
        if r["kind"] != "arms":
            return Verdict(r["verdict"], "no data to compare.", None, r)
        evidence = (f"{r['n']} paired seeds; {stats.TEST_NAME}; effect A - B {r['effect']:+.4g}, 95% interval "
                    f"{interval_text(r)} (the test inverted, never narrower than the metric's resolution "
                    f"{r['resolution']:.3g}); the smallest effect this design could detect: "
                    + (f"{r['detectable']:.3g}." if math.isfinite(r["detectable"]) else "none at this n."))
        nxt = None
        if r["p"] != r["p"] or r["p"] >= stats.ALPHA:
            n = r["next_seeds"]
            if n:
                nxt = (f"danlu compare {r['a']} --vs {r['b']} --seeds {n}"
                       + (f" --set {' '.join(shared)}" if shared else ""))
        return Verdict(f"A = {r['a']} vs B = {r['b']}: {r['verdict']}", evidence, nxt, r)

    return block


def _norm(text: str) -> str:
    """A value as its run's param holds it (MLflow params are the override's value text)."""
    from orchestrator.config.space import override, read_value

    return override("k", read_value(text)).split("=", 1)[1]


def run_compare(a: list[str], b: list[str], n_seeds: int, shared: list[str], name: str | None, config_dir: Path,
                command: list[str]) -> int:
    """`danlu compare A --vs B`: run both arms under the same seeds as one sweep, then print and log the paired
    test's verdict (exit 0, 1 if a seed's result is missing)."""
    import json

    from orchestrator.config.compose import compose, hydra_context, split_overrides
    from orchestrator.launch.plan import plan
    from orchestrator.run.sweep import run_sweep

    fixed = split_overrides(shared).fixed
    with hydra_context(config_dir):
        base = compose(fixed)
    if not a and not b and base.get("compare"):  # a ready experiment: conf/experiment/lore_*.yaml
        a, b = list(base.compare.a), list(base.compare.b)
        n_seeds = int(base.compare.seeds) if n_seeds is None else n_seeds
    if not b:
        raise BadInput("danlu compare A --vs B: arm B is missing, e.g. danlu compare batch_size=64 --vs batch_size=63.")
    arm = arms(a, b, 5 if n_seeds is None else n_seeds, base)
    overrides = sweep_overrides(arm, shared, name, str(base.job.name))
    p = plan(overrides, config_dir)  # every check, before anything runs
    from orchestrator import stats

    need = stats.seeds_to_decide(1)
    if not arm.seed_arms and len(arm.seeds) < need:
        print(f"danlu compare: warning: with {len(arm.seeds)} seeds no difference can be declared: the exact test's "
              f"smallest p-value with {len(arm.seeds)} pairs is {stats.min_p(len(arm.seeds)):.3g}, not below "
              f"{stats.ALPHA}; {need} seeds can reach {stats.min_p(need):.3g} (--seeds {need} or more).", flush=True)
    code = run_sweep(overrides, config_dir, command=command, lead=lead(arm, shared), planned=p)
    if code not in (0, 1):
        return code
    from orchestrator.report import load
    from orchestrator.tracking import open_store

    store = open_store(p.tracking_uri, str(p.cfg.tracking.experiment), p.store_kind)
    data = load(store, str(p.cfg.sweep.name))
    result = verdict(arm, data)
    if result["kind"] == "arms":
        print(f"danlu compare: A = {result['a']}  vs  B = {result['b']}, {result['n']} paired seeds, {data.metric}:")
        if result["n"] >= 2:
            print(f"  effect A - B: {result['effect']:+.4g}  (95% interval {interval_text(result)}), "
                  f"sign-flip permutation test p = {result['p']:.3g}")
        else:
            print(f"  difference A - B: {result['effect']:+.4g} (no interval or test from {result['n']} pair)")
    print(f"  verdict: {result['verdict']}")
    if result.get("next_seeds") and (result["p"] != result["p"] or result["p"] >= stats.ALPHA):
        print(f"  next: danlu compare {result['a']} --vs {result['b']} --seeds {result['next_seeds']}"
              + (f" --set {' '.join(shared)}" if shared else ""))
    if result["kind"] == "missing":
        return 1
    numbers = {f"compare_{k}": float(result[k]) for k in ("effect", "ci_low", "ci_high", "p", "detectable",
                                                           "difference", "z")
               if isinstance(result.get(k), (int, float)) and math.isfinite(result[k])}
    store.attach_result(data.parent_id, "compare.json", json.dumps(result, indent=1, default=str), numbers,
                        {"danlu.verdict": result["verdict"][:5000]})
    return code
