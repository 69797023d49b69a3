"""Seeds as replicates under a searcher that learns: Tune's Repeater, with each replicate's index turned into
its seed, and a bound on the configurations outstanding.

Why Tune's Repeater, and not our own: it already keeps a configuration's group of trials, hands the searcher
one observation per configuration (the mean over the group's last results, once every seed has ended, NaN
for a failed seed left out), and Tune's SearchGenerator saves and restores its groups beside the searcher in
the experiment checkpoint. What it lacks, added here:
- the seed: Repeater sets `__trial_index__`; a danlu trial's config is {"hp": {...}, "seed": seeds[index]},
  the seed beside the hyperparameters, never among them;
- parameter names: the searcher sees names without "/" (Tune's searchers unflatten "/" into nested dicts,
  and config groups such as job/model have one), mapped back here;
- search.max_concurrent: configurations suggested and not yet finished. Inside the group logic, so that it
  counts configurations, not trials, and so that the only ConcurrencyLimiter is Tune's own (sweep.max_concurrent_trials):
  two would share one name in Tune's saved searcher state.

A configuration whose seeds ASHA stops early reports what they reached (Tune passes a stopped trial's last
result). With several seeds ASHA judges a configuration's seeds together (orchestrator/scheduler/asha.py), so
they stop together.
"""

from __future__ import annotations

from ray.tune.search import Repeater
from ray.tune.search.repeater import TRIAL_INDEX

from orchestrator.config.space import SEED_KEY
from orchestrator.ray_internals import group_trial_ids, repeater_groups, repeater_starts_group
from orchestrator.search import Search


def searcher_name(key: str) -> str:
    """A key as the searcher sees it: without '/', which Tune's searchers would unflatten into nesting."""
    return key.replace("/", ":")  # Hydra keys have no ":"


class Replicates(Repeater):
    def __init__(self, searcher, seeds: list[int], keys: list[str], max_concurrent: int | None = None):
        super().__init__(searcher, repeat=len(seeds), set_index=True)
        self.seeds = list(seeds)
        self.keys = {searcher_name(k): k for k in keys}
        self.max_concurrent = max_concurrent

    def outstanding(self) -> int:
        """Configurations suggested whose seeds have not all ended."""
        return sum(not g.finished_reporting() for g in repeater_groups(self))

    def suggest(self, trial_id: str):
        """The next trial's config {"hp": {...}, "seed": s}: the next seed of the current configuration, or a new
        configuration from the searcher (None while search.max_concurrent configurations are outstanding)."""
        if repeater_starts_group(self) and self.max_concurrent and self.outstanding() >= self.max_concurrent:
            return None  # Tune asks again when a trial ends
        config = super().suggest(trial_id)
        if not isinstance(config, dict):
            return config  # None (not now) or Searcher.FINISHED
        index = config.pop(TRIAL_INDEX)
        return {"hp": {self.keys[name]: value for name, value in config.items()}, SEED_KEY: self.seeds[index]}

    def warm(self, history: list[dict]) -> tuple[int, int]:
        """Tell the searcher configurations that ran before it (a sweep's extension: `danlu extend`), each with its
        mean over seeds, through Tune's add_evaluated_point (Optuna adds each as a finished trial of its study,
        HyperOpt to its trials). Returns (told, outside): a configuration outside the searcher's space (a narrowed
        one) is not told; its runs stay in the sweep's history and report."""
        told = outside = 0
        for h in history:
            params = {searcher_name(k): v for k, v in h["hp"].items()}
            try:
                self.searcher.add_evaluated_point(params, float(h["mean"]))
                told += 1
            except (ValueError, KeyError):  # outside the space's distributions, or a key it does not have
                outside += 1
        return told, outside

    def history(self) -> list[dict]:
        """What the searcher has been told: each finished configuration's hyperparameters and its mean."""
        out = []
        for g in repeater_groups(self):
            if g.finished_reporting():
                out.append({"hp": {self.keys[n]: v for n, v in g.config.items()}, "trial_ids": group_trial_ids(g),
                            "mean": _mean(g.scores())})
        return out


def learning_search(searcher, space, cfg, name: str, seed) -> Search:
    """The Search of a searcher that learns (Optuna's, HyperOpt's): wrapped in Replicates (seeds as replicates,
    search.max_concurrent configurations outstanding), then Tune's ConcurrencyLimiter for
    sweep.max_concurrent_trials; sweep.num_samples configurations, each one trial per seed.

    Args:
        searcher: Tune's Searcher, over the space's domains (orchestrator.search._domains).
        space: the sweep's Space.
        cfg: the composed config.
        name: how the sweep's header line names the searcher, e.g. "optuna (tpe)".
        seed: the search seed, for the header line.
    """
    from ray.tune.search import ConcurrencyLimiter

    outstanding = cfg.search.get("max_concurrent")
    alg: Replicates | ConcurrencyLimiter = Replicates(searcher, space.seeds, [p.key for p in space.params], outstanding)
    limit = cfg.sweep.get("max_concurrent_trials")
    if limit:
        alg = ConcurrencyLimiter(alg, max_concurrent=limit)
    n = cfg.sweep.num_samples
    return Search(alg, {}, n * len(space.seeds), f"{name}, {n} configurations, at most {outstanding or 'any number'} "
                  f"outstanding, search seed {seed}")


def _mean(scores):
    import numpy as np

    return float(np.nanmean(scores)) if any(s == s for s in scores) else float("nan")
