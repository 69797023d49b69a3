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
    arms = configurations(space)
    return explicit(arms, list(space.seeds), space, cfg, seed, f"arms, {len(arms)} configuration(s) (sweep.num_samples "
                    "does not apply)")


def explicit(points: list[dict], seeds: list[int], space, cfg, seed, describe: str) -> Search:
    """A grid over the given configurations and seeds: each configuration once per seed (also what an extension
    runs: orchestrator/launch/extension.py)."""
    from ray import tune

    from orchestrator.config.space import SEED_KEY
    from orchestrator.search.random import variant_generator

    grown = tune.grid_search(list(seeds)) if len(seeds) > 1 else seeds[0]
    hp = tune.grid_search(points) if len(points) > 1 else points[0]
    return Search(variant_generator(space, cfg, seed), {"hp": hp, SEED_KEY: grown}, 1, describe)


def more(space, cfg, seed: int, seen: set[str], ran: int) -> list[dict]:
    """The arms that have not run: what an extension adds (longer lists)."""
    from orchestrator.config.space import config_id

    return [hp for hp in configurations(space) if config_id(hp) not in seen]
