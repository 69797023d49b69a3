"""Grid search: every combination of the space's listed values (choice(...), comma lists, ranges, tag(grid, ...)
and config-group options), each once per seed. Intervals have no grid: they are refused, naming the key.
`sweep.num_samples` does not apply (Tune would run the whole grid that many times)."""

from __future__ import annotations

from orchestrator.errors import BadInput
from orchestrator.search import Search
from orchestrator.search.random import variant_generator


def check(space, search_cfg) -> None:
    """Every key a list of values: an interval has no grid."""
    for p in space.params:
        if p.kind not in ("choice", "grid"):
            raise BadInput(f"sweep.space.{p.key}={p.expr}: search=grid needs a list of values (a,b,c, choice(...) "
                           "or range(...)); an interval has no grid. Use search=random or search=optuna for it.")


def count(space, cfg) -> int:
    """Every combination: the product of the lists' lengths."""
    points = 1
    for p in space.params:
        points *= len(p.values)
    return points


def build(space, cfg, seed) -> Search:
    """Tune's grid search over every combination of the listed values, crossed with the seeds."""
    from ray import tune

    points = count(space, cfg)
    return Search(variant_generator(space, cfg, seed), space.param_space(lambda p: tune.grid_search(list(p.values))),
                  1, f"grid, {points} configurations (sweep.num_samples does not apply)")


def more(space, cfg, seed: int, seen: set[str], ran: int) -> list[dict]:
    """The combinations of the (grown) space that have not run: what an extension of a grid adds."""
    import itertools

    from orchestrator.config.space import config_id

    out = []
    for values in itertools.product(*(p.values for p in space.params)):
        hp = {p.key: v for p, v in zip(space.params, values, strict=True)}
        if config_id(hp) not in seen:
            out.append(hp)
    return out
