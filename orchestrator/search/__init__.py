"""Searchers: which configurations a sweep tries. One module per searcher, chosen by the `search` config group.

`danlu sweep search=optuna` composes orchestrator/conf/search/optuna.yaml, whose `name` is the module here that builds it.
A searcher module provides what `Searcher` below states (check, count, build); a new searcher is one module here
plus one orchestrator/conf/search/<name>.yaml. Modules named _<name> are helpers (_replicates: seeds as replicates).

Seeds are replicates under every searcher: each configuration runs once per seed of `sweep.seeds`, the same
seeds for every configuration, and a searcher that learns sees one observation per configuration (the mean
over its seeds: orchestrator.search._replicates). A trial's config is always {"hp": {...}, "seed": s}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator import plugins
from orchestrator.config import checks


@dataclass
class Search:
    algorithm: Any  # a ray.tune.search.SearchAlgorithm or Searcher
    param_space: dict  # what Tuner(param_space=...) gets
    num_samples: int  # Tune's num_samples: trials (not configurations) where the searcher repeats seeds itself
    describe: str  # for the sweep's header line: which searcher, with which settings


class Searcher(Protocol):
    """What a searcher module provides (its functions; a module, not a class). Optionally LEARNS = True: it learns
    from finished configurations (Tune's SearchGenerator), which a scheduler that changes a trial's hyperparameters
    as it runs cannot be combined with.

    A searcher that learns wraps Tune's searcher in `orchestrator.search._replicates.Replicates`, so that each
    configuration it suggests runs once per seed and it is told the mean over them (see optuna.py, hyperopt.py);
    one that does not learn samples a param_space of {"hp": {...}, "seed": tune.grid_search(seeds)} (random.py).
    """

    def check(self, space, search_cfg) -> None:
        """Refuse, as BadInput naming the key, a space or setting this searcher cannot take.

        Runs in plan(), before Ray starts or MLflow is touched: cheap, and imports no Ray.

        Args:
            space: the sweep's orchestrator.config.space.Space (its params, each with key, kind, values, expr).
            search_cfg: the `search` config group (search.name and this searcher's own settings).
        """

    def build(self, space, cfg, seed: int | None) -> Search:
        """Tune's search algorithm for the sweep, with the param_space and num_samples that go with it.

        Args:
            space: the sweep's orchestrator.config.space.Space.
            cfg: the whole composed config (cfg.search, cfg.sweep.metric/mode/num_samples, ...).
            seed: sweep.search_seed, or the fresh one kept in the sweep's storage: makes sampling reproducible.
        """


    def count(self, space, cfg) -> int:
        """How many configurations the sweep runs (each once per seed): what `danlu plan` counts, before Ray.

        Args:
            space: the sweep's orchestrator.config.space.Space.
            cfg: the whole composed config (cfg.sweep.num_samples, ...).
        """


# A searcher that learns and can be told earlier results (TOLD = True in its module: Tune's wrapper of it has
# add_evaluated_point) grows an extended sweep from its history; one that learns and cannot (HyperOpt's) is refused.


class GrowsBySampling(Protocol):
    """Optional, for a searcher that does not learn: `danlu extend` (orchestrator/launch/extension.py) asks it for the
    configurations an extension adds. A searcher that learns needs none: it is told the earlier results
    (orchestrator/search/_replicates.py Replicates.warm) and suggests on."""

    def more(self, space, cfg, seed: int, seen: set[str], ran: int) -> list[dict]:
        """The new configurations ({key: value}), none whose config_id is in `seen`, none twice.

        Args:
            space: the sweep's Space as the extension has it.
            cfg: the whole composed config (cfg.sweep.num_samples: the new total).
            seed: the extension's own seed (the sweep's search seed and the extension's number).
            seen: the config_ids of every earlier configuration.
            ran: the sweep.num_samples the sweep ran before.
        """


def available() -> list[str]:
    """The searchers' names (conf/search options map onto these modules)."""
    return plugins.names(__name__)


def module(search_cfg):
    """The searcher module that search_cfg.name chooses (BadInput naming search.name if there is none)."""
    return plugins.load(__name__, str(search_cfg.get("name")), "search", "searcher")


def check(space, search_cfg) -> None:
    """The settings every searcher shares, then the searcher's own checks."""
    checks.integer("search.max_concurrent", search_cfg.get("max_concurrent"), 1, optional=True,
                   note="(configurations suggested and not yet finished; null: no bound)")
    module(search_cfg).check(space, search_cfg)


def learns(search_cfg) -> bool:
    """Whether the chosen searcher learns from finished configurations (its module says LEARNS = True)."""
    return bool(getattr(module(search_cfg), "LEARNS", False))


def count(space, cfg) -> int:
    """The chosen searcher's number of configurations (see Searcher.count)."""
    return int(module(cfg.search).count(space, cfg))


def build(space, cfg, seed: int | None) -> Search:
    """The chosen searcher's Search for this sweep (see Searcher.build)."""
    return module(cfg.search).build(space, cfg, seed)


def extension(space, cfg, seed: int | None, rec: dict) -> tuple[Search, str]:
    """The Search of an extension (`rec`, as orchestrator/launch/extension.py keeps it): its configurations under its
    seeds, or the chosen searcher for its new configurations, told the earlier ones first. With a line that says
    what the searcher was told."""
    import copy

    if rec.get("points") is not None:
        explicit = module({"name": "arms"}).explicit  # arms' grid of given configurations (loaded as a plug-in: no cycle)
        points, seeds = rec["points"], rec["seeds"]
        return explicit(points, seeds, space, cfg, seed, f"extension {rec['n']}: {len(points)} configuration(s) x "
                        f"seed(s) {seeds}"), ""
    grown = copy.deepcopy(cfg)
    grown.sweep.num_samples = int(rec["learn"])
    search = build(space, grown, seed)
    told, outside = _unwrapped(search.algorithm).warm(rec.get("history") or [])
    note = f"the searcher was told {told} earlier configuration(s)" + (
        f"; {outside} outside the new space are in the history and the report, not in its model" if outside else "")
    return Search(search.algorithm, search.param_space, search.num_samples,
                  f"extension {rec['n']}: {search.describe}"), note


def _unwrapped(alg):
    """The Replicates (orchestrator/search/_replicates.py) inside Tune's ConcurrencyLimiter, if one wraps it."""
    while not hasattr(alg, "warm"):
        alg = alg.searcher
    return alg
