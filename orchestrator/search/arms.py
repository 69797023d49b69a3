"""Explicit configurations: configuration i takes the i-th listed value of every key (the lists zipped, not
crossed), each once per seed. What `danlu compare` runs (its two arms); usable by hand:
    danlu sweep search=arms sweep.space={} lr=0.1,0.01 batch_size=64,32      two configurations
"""

from __future__ import annotations

from orchestrator.errors import BadInput
from orchestrator.search import Search


def check(space, search_cfg) -> None:
    """Every key a list of values, all of the same length (the i-th values together are configuration i)."""
    lengths = {p.key: len(p.values) for p in space.params}
    for p in space.params:
        if p.kind not in ("choice", "grid"):
            raise BadInput(f"sweep.space.{p.key}={p.expr}: search=arms needs a list of values (one per "
                           "configuration); an interval has none.")
    if len(set(lengths.values())) > 1:
        raise BadInput("sweep.space: search=arms zips the lists, so every key needs as many values: "
                       + ", ".join(f"{k} has {n}" for k, n in lengths.items()) + ".")


def count(space, cfg) -> int:
    """One configuration per position in the lists."""
    return len(configurations(space))


def configurations(space) -> list[dict]:
    """The arms: the i-th value of every key together, for each i."""
    n = len(space.params[0].values) if space.params else 1
    return [{p.key: p.values[i] for p in space.params} for i in range(n)]


def build(space, cfg, seed) -> Search:
    """A grid over the arms' index and the seeds: each arm once per seed."""
    from ray import tune

    from orchestrator.config.space import SEED_KEY
    from orchestrator.search.random import variant_generator

    arms = configurations(space)
    seeds = tune.grid_search(list(space.seeds)) if len(space.seeds) > 1 else space.seeds[0]
    hp = tune.grid_search(arms) if len(arms) > 1 else arms[0]
    return Search(variant_generator(space, cfg, seed), {"hp": hp, SEED_KEY: seeds}, 1,
                  f"arms, {len(arms)} configuration(s) (sweep.num_samples does not apply)")
