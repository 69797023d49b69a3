"""HyperOpt's Tree-structured Parzen Estimator through Ray Tune's HyperOptSearch: learns from finished
configurations, as search=optuna does, with HyperOpt's own TPE (the searcher of many published sweeps, so its
suggestions can be compared with theirs).

The space maps as for Optuna (orchestrator/search/_domains.py): interval -> uniform, tag(log, ...) -> loguniform,
int(interval(...)) -> integers, an integer range(lo,hi,step) -> integers with that step, choice(...), comma
lists and config-group options -> categorical (any value: HyperOpt's choice holds lists too).

Seeds are replicates (orchestrator/search/_replicates.py): HyperOpt suggests a configuration once, it runs under
every seed of sweep.seeds, and HyperOpt is told the mean over them. search.max_concurrent bounds the
configurations suggested and not yet finished (TPE learns only from finished ones). sweep.search_seed seeds
HyperOpt's sampler (random_state_seed).
"""

from __future__ import annotations

from orchestrator.config import checks
from orchestrator.errors import BadInput
from orchestrator.search import Search

LEARNS = True  # Tune's SearchGenerator: learns from finished configurations


def check(space, search_cfg) -> None:
    """A space to learn over, and n_initial_points: configurations drawn at random before TPE learns."""
    c = search_cfg
    if not space.params:
        raise BadInput("sweep.space: empty, so search=hyperopt has nothing to learn; sweep at least one key "
                       "(e.g. lr='tag(log, interval(1e-3,1e-1))'), or use search=random for replicates of one configuration.")
    checks.integer("search.n_initial_points", c.get("n_initial_points"), 1,
                   note="(configurations sampled at random before TPE learns)")


def count(space, cfg) -> int:
    """sweep.num_samples configurations, suggested one after another."""
    return int(cfg.sweep.num_samples)


def build(space, cfg, seed) -> Search:
    """HyperOptSearch over the space's domains, wrapped so that seeds are replicates."""
    import logging

    from ray.tune.search.hyperopt import HyperOptSearch

    from orchestrator.search._domains import domains
    from orchestrator.search._replicates import learning_search

    logging.getLogger("hyperopt").setLevel(logging.WARNING)  # not a line per suggestion on the terminal
    c = cfg.search
    searcher = HyperOptSearch(space=HyperOptSearch.convert_search_space(domains(space)), metric=cfg.sweep.metric,
                              mode=cfg.sweep.mode, n_initial_points=int(c.n_initial_points), random_state_seed=seed)
    return learning_search(searcher, space, cfg, "hyperopt (TPE)", seed)
