"""Random search, danlu's default: Tune's BasicVariantGenerator.

Every dimension is sampled `sweep.num_samples` times (comma lists too: `bs=32,64` is a choice); values
tagged `tag(grid, ...)` are crossed with each sample; `sweep.seeds` is a grid beside the hyperparameters, and
constant_grid_search keeps one sampled configuration fixed across its seeds (paired replicates).
Seeded with the sweep's search seed: the same command draws the same configurations in the same order,
and a restored sweep draws again the configurations its lost trials had.
"""

from __future__ import annotations

from orchestrator.search import Search


def check(space, search_cfg) -> None:
    """Random search takes every sweep expression."""
    pass  # every sweep expression has a Tune domain (Param.tune_domain)


def variant_generator(space, cfg, seed):
    """BasicVariantGenerator with the sweep's bounds: search.max_concurrent configurations (each one trial
    per seed) and sweep.max_concurrent_trials trials, whichever is lower."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    bounds = [n for n in (cfg.sweep.get("max_concurrent_trials"),) if n]
    if cfg.search.get("max_concurrent"):
        bounds.append(cfg.search.max_concurrent * len(space.seeds))
    return BasicVariantGenerator(constant_grid_search=True, max_concurrent=min(bounds, default=0), random_state=seed)


def count(space, cfg) -> int:
    """sweep.num_samples draws, each crossed with the tag(grid, ...) values."""
    grid = 1
    for p in space.params:
        grid *= len(p.values) if p.kind == "grid" else 1
    return int(cfg.sweep.num_samples) * grid


def build(space, cfg, seed) -> Search:
    """Tune's BasicVariantGenerator over the param space, seeded, num_samples draws (each crossed with tag(grid,
    ...) values and the seeds)."""
    n = cfg.sweep.num_samples
    grid = count(space, cfg) // n
    return Search(variant_generator(space, cfg, seed), space.param_space(), n,
                  f"random, {n} samples" + (f" x {grid} grid points" if grid > 1 else "") + f", search seed {seed}")


def more(space, cfg, seed: int, seen: set[str], ran: int) -> list[dict]:
    """The configurations an extension adds (`danlu extend`, orchestrator/launch/extension.py): sweep.num_samples less
    the `ran` draws before, each crossed with the tag(grid, ...) values, drawn from the space with Tune's own domains
    by a generator seeded with `seed` (the sweep's search seed and the extension's number: the same extension
    draws the same points), never a configuration whose id is in `seen` nor one twice. Fewer where a discrete space
    has no more to give."""
    import itertools

    import numpy as np

    from orchestrator.config.space import config_id

    rng = np.random.default_rng(seed)
    drawn = [p for p in space.params if p.kind != "grid"]
    crossed = [p for p in space.params if p.kind == "grid"]
    wanted = (int(cfg.sweep.num_samples) - int(ran)) * max(1, len(list(itertools.product(*(p.values for p in crossed)))))
    out, ids = [], set(seen)
    for _ in range(max(0, int(cfg.sweep.num_samples) - int(ran)) * 50):  # a discrete space may hold no more
        base = {p.key: _plain(p.tune_domain().sample(random_state=rng)) for p in drawn}
        for values in itertools.product(*(p.values for p in crossed)):
            hp = {q.key: (base[q.key] if q.key in base else values[crossed.index(q)]) for q in space.params}
            if config_id(hp) not in ids:
                ids.add(config_id(hp))
                out.append(hp)
        if len(out) >= wanted:
            break
    return out[:wanted]


def _plain(value):
    """A value as JSON keeps it: numpy's scalars as Python's."""
    return value.item() if hasattr(value, "item") else value
