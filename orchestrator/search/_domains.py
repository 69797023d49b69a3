"""The sweep's space as Tune domains for a searcher that learns (Optuna, HyperOpt): every sweep expression mapped
with nothing lost. interval -> float, tag(log, ...) -> log-scaled float, int(interval(...)) -> integers (log-scaled
under tag(log, ...)), an integer range(lo,hi,step) -> integers with that step, choice(...), comma lists, float
ranges and config-group options -> categorical."""

from __future__ import annotations


def domains(space) -> dict:
    """The searcher's space: {name: Tune domain}, names without "/" (see _replicates.searcher_name)."""
    from ray import tune

    from orchestrator.search._replicates import searcher_name

    def domain(p):
        step = int_step(p)
        if step:  # range(lo,hi,step): an integer range, ordered, not a set of names
            return tune.qrandint(p.values[0], p.values[-1], step)
        return tune.choice(list(p.values)) if p.kind == "grid" else p.tune_domain()

    return {searcher_name(p.key): domain(p) for p in space.params}


def int_step(p) -> int | None:
    """The step of an integer range(...) of 3 or more values (Hydra expands it to a list), else None."""
    v = p.values
    if not p.expr.replace(" ", "").startswith("range(") or len(v) < 3 or not all(type(x) is int for x in v):
        return None
    step = v[1] - v[0]
    return step if step > 0 and all(b - a == step for a, b in zip(v, v[1:], strict=False)) else None
