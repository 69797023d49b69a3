"""Optuna's samplers through Ray Tune's OptunaSearch: TPE by default, learning from finished configurations.

Every sweep expression maps with nothing lost: interval -> float, tag(log, ...) -> log-scaled float,
int(interval(...)) -> integers (log-scaled under tag(log, ...)), an integer range(lo,hi,step) -> integers
with that step, choice(...), comma lists, float ranges and config-group options -> categorical. Categorical values must be what Optuna can store (strings, numbers,
booleans, null); a list among them is refused, naming the key.

Seeds are replicates (orchestrator/search/_replicates.py): Optuna suggests a configuration once, it runs
under every seed of sweep.seeds, and Optuna is told the mean over them.

search.max_concurrent (default 4) bounds the configurations suggested and not yet finished. TPE's next
suggestion learns only from finished ones: asked for many at once it is close to random search, so the
bound trades idle slots for better suggestions. Under a bound above 1, TPE's constant_liar keeps concurrent
suggestions apart.

sweep.search_seed seeds the sampler. The configurations Optuna draws before it learns (n_startup_trials)
are the same for the same seed; the ones after depend on which results it has when asked, so they repeat
exactly when search.max_concurrent=1 and the job is deterministic.
"""

from __future__ import annotations

from orchestrator.config import checks
from orchestrator.errors import BadInput
from orchestrator.search import Search

LEARNS = True  # Tune's SearchGenerator: learns from finished configurations
TOLD = True  # an extension tells it the earlier results (OptunaSearch.add_evaluated_point: orchestrator/launch/extension.py)


def _tpe(seed, c):
    import warnings

    from optuna.exceptions import ExperimentalWarning
    from optuna.samplers import TPESampler

    with warnings.catch_warnings():  # multivariate and constant_liar are "experimental" in Optuna's words
        warnings.simplefilter("ignore", ExperimentalWarning)
        return TPESampler(seed=seed, n_startup_trials=c.n_startup_trials, multivariate=bool(c.get("multivariate", True)),
                          constant_liar=(c.max_concurrent or 2) > 1)


def _gp(seed, c):
    from optuna.samplers import GPSampler

    return GPSampler(seed=seed, n_startup_trials=c.n_startup_trials)


def _cmaes(seed, c):
    from optuna.samplers import CmaEsSampler

    return CmaEsSampler(seed=seed, n_startup_trials=c.n_startup_trials)


def _random(seed, c):
    from optuna.samplers import RandomSampler

    return RandomSampler(seed=seed)


def _qmc(seed, c):
    from optuna.samplers import QMCSampler

    return QMCSampler(seed=seed)


SAMPLERS = {"tpe": _tpe, "gp": _gp, "cmaes": _cmaes, "random": _random, "qmc": _qmc}
STORABLE = (str, int, float, bool, type(None))  # what an Optuna categorical can hold


def check(space, search_cfg) -> None:
    """Optuna stores what it samples: a space to learn over, a known sampler, values it can store."""
    c = search_cfg
    if not space.params:
        raise BadInput("sweep.space: empty, so search=optuna has nothing to learn; sweep at least one key "
                       "(e.g. lr='tag(log, interval(1e-3,1e-1))'), or use search=random for replicates of one configuration.")
    if c.get("sampler") not in SAMPLERS:
        raise BadInput(f"search.sampler={c.get('sampler')}: valid samplers are {', '.join(SAMPLERS)}.")
    checks.integer("search.n_startup_trials", c.get("n_startup_trials"), 0,
                   note="(configurations sampled at random before the sampler learns)")
    for p in space.params:
        bad = [v for v in p.values if not isinstance(v, STORABLE)]
        if bad:
            raise BadInput(f"sweep.space.{p.key}={p.expr}: search=optuna takes values that are strings, numbers, "
                           f"booleans or null; {bad[0]!r} is not. Use search=random for it.")


def count(space, cfg) -> int:
    """sweep.num_samples configurations, suggested one after another."""
    return int(cfg.sweep.num_samples)


def build(space, cfg, seed) -> Search:
    """Tune's OptunaSearch with the chosen sampler, seeded, over the space's domains, wrapped so that seeds are
    replicates; bounded by search.max_concurrent and sweep.max_concurrent_trials."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from orchestrator.search._domains import domains
    from orchestrator.search._replicates import learning_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study and trial on the terminal
    c = cfg.search
    searcher = OptunaSearch(space=OptunaSearch.convert_search_space(domains(space)), metric=cfg.sweep.metric,
                            mode=cfg.sweep.mode, sampler=SAMPLERS[c.sampler](seed, c))
    return learning_search(searcher, space, cfg, f"optuna ({c.sampler})", seed)
