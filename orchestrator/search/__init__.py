"""Searchers: which configurations a sweep tries. One module per searcher, chosen by the `search` config group.

`danlu sweep search=optuna` composes conf/search/optuna.yaml, whose `name` is the module here that builds it.
Each module has two functions:
- check(space, search_cfg): refuse, as BadInput naming the key, a space or setting it cannot take. Runs in
  plan(), before Ray starts; cheap (no Ray import).
- build(space, cfg, seed) -> Search: Tune's search algorithm for the sweep, with the param_space and
  num_samples that go with it. `seed` (sweep.search_seed, or the fresh one kept in the sweep's storage)
  makes its sampling reproducible.

Seeds are replicates under every searcher: each configuration runs once per seed of `sweep.seeds`, the same
seeds for every configuration, and a searcher that learns sees one observation per configuration (the mean
over its seeds: orchestrator.search.replicates). A trial's config is always {"hp": {...}, "seed": s}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator import parts
from orchestrator.errors import BadInput


@dataclass
class Search:
    algorithm: Any  # a ray.tune.search.SearchAlgorithm or Searcher
    param_space: dict  # what Tuner(param_space=...) gets
    num_samples: int  # Tune's num_samples: trials (not configurations) where the searcher repeats seeds itself
    describe: str  # for the sweep's header line: which searcher, with which settings


_HELPERS = ("replicates",)


def available() -> list[str]:
    return parts.names(__name__, _HELPERS)


def module(search_cfg):
    return parts.load(__name__, str(search_cfg.get("name")), _HELPERS, "search", "searcher")


def check(space, search_cfg) -> None:
    """The settings every searcher shares, then the searcher's own checks."""
    mc = search_cfg.get("max_concurrent")
    if mc is not None and (isinstance(mc, bool) or not isinstance(mc, int) or mc < 1):
        raise BadInput(f"search.max_concurrent={mc}: an integer >= 1 (configurations suggested and not yet "
                       "finished), or null for no bound.")
    module(search_cfg).check(space, search_cfg)


def build(space, cfg, seed: int | None) -> Search:
    return module(cfg.search).build(space, cfg, seed)
