"""Searchers (orchestrator/search/): the sweep grammar mapped onto each, seeds as replicates under a
searcher that learns, reproducible sampling, and a searcher that survives a driver SIGKILL.

The mapping and replicate tests drive real Optuna through Ray Tune's OptunaSearch without starting Ray;
the sweeps (marked slow) run on a real local Ray with a real sqlite MLflow store."""

from __future__ import annotations

import io
import math
import pickle
from collections import defaultdict
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from orchestrator.errors import BadInput
from orchestrator.space import Param, Space
from orchestrator.sweep import plan


def optuna_space(conf_dir, tmp_path, *overrides):
    from ray.tune.search.optuna import OptunaSearch

    from orchestrator.search.optuna import domains

    p = plan(["search=optuna", "sweep.name=m", *overrides], conf_dir, cwd=str(tmp_path))
    return p, OptunaSearch.convert_search_space(domains(p.space))


def test_every_sweep_expression_maps_onto_optuna_with_nothing_lost(conf_dir, tmp_path):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    _, d = optuna_space(conf_dir, tmp_path, "lr=tag(log, interval(1e-4,1e-1))", "dropout=interval(0,0.5)",
                        "job.model.width=tag(log, int(interval(16,256)))", "epochs=range(2,12,3)",
                        "batch_size=int(interval(16,64))", "optimizer=sgd,adamw", "lr_schedule=choice(constant,cosine)",
                        "job/model=mlp,cnn")
    assert d["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert d["dropout"] == FloatDistribution(0.0, 0.5)
    assert d["job.model.width"] == IntDistribution(16, 256, log=True)  # Hydra's interval includes its high end
    assert d["batch_size"] == IntDistribution(16, 64)
    assert d["epochs"] == IntDistribution(2, 11, step=3)  # range(2,12,3) = 2,5,8,11: ordered integers
    assert d["optimizer"] == CategoricalDistribution(["sgd", "adamw"])
    assert d["lr_schedule"] == CategoricalDistribution(["constant", "cosine"])
    assert d["job:model"] == CategoricalDistribution(["mlp", "cnn"])  # a config group's options; "/" would nest


def test_what_a_searcher_cannot_take_is_refused_naming_the_key(conf_dir, tmp_path):
    from orchestrator import search

    with pytest.raises(BadInput, match=r"sweep.space.lr=.*search=grid needs a list"):
        plan(["search=grid", "sweep.name=g"], conf_dir, cwd=str(tmp_path))
    lists = Space(params=[Param(key="hidden", expr="[64,64],[128]", kind="grid", values=([64, 64], [128]))])
    cfg = OmegaConf.create({"name": "optuna", "sampler": "tpe", "n_startup_trials": 10, "max_concurrent": 4})
    with pytest.raises(BadInput, match=r"sweep.space.hidden=.*\[64, 64\] is not"):
        search.check(lists, cfg)
    with pytest.raises(BadInput, match="search.n_startup_trials=-1"):
        search.check(Space(), OmegaConf.merge(cfg, {"n_startup_trials": -1}))
    with pytest.raises(BadInput, match="search.name=nope: no such searcher; valid: grid, optuna, random"):
        search.check(Space(), OmegaConf.merge(cfg, {"name": "nope"}))


def test_grid_crosses_every_listed_value_once_per_seed(conf_dir, tmp_path):
    from ray.tune.search.variant_generator import generate_variants

    from orchestrator import search

    p = plan(["job=sleep", "sweep=sleep", "search=grid", "sweep.name=g", "x=0.1,0.2,0.3", "epochs=range(2,4)",
              "sweep.seeds=[0,1]"], conf_dir, cwd=str(tmp_path))
    s = search.build(p.space, p.cfg, 0)
    configs = [c for _, c in generate_variants(s.param_space)]
    assert s.num_samples == 1 and len(configs) == 12 and "6 configurations" in s.describe
    assert sorted((c["hp"]["x"], c["hp"]["epochs"], c["seed"]) for c in configs) == sorted(
        (x, e, seed) for x in (0.1, 0.2, 0.3) for e in (2, 3) for seed in (0, 1))


def replicates(seeds, max_concurrent=None, seed=3):
    from optuna.samplers import TPESampler
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from orchestrator.search.replicates import Replicates

    space = OptunaSearch.convert_search_space({"lr": tune.loguniform(1e-3, 1.0), "job:model": tune.choice(["a", "b"])})
    inner = OptunaSearch(space=space, metric="acc", mode="max", sampler=TPESampler(seed=seed))
    return inner, Replicates(inner, seeds, ["lr", "job/model"], max_concurrent)


def test_each_configuration_runs_once_per_seed_and_optuna_sees_their_mean():
    inner, rep = replicates([0, 1, 2])
    configs = {f"t{i}": rep.suggest(f"t{i}") for i in range(6)}
    first, second = [configs[f"t{i}"] for i in range(3)], [configs[f"t{i}"] for i in range(3, 6)]
    assert [c["seed"] for c in first] == [0, 1, 2] == [c["seed"] for c in second]  # paired seeds
    assert first[0]["hp"] == first[1]["hp"] == first[2]["hp"] != second[0]["hp"]
    assert set(first[0]["hp"]) == {"lr", "job/model"}  # the config group's key, as Hydra writes it
    for i, acc in enumerate([0.5, 0.6, 0.7]):
        rep.on_trial_complete(f"t{i}", {"acc": acc})
    rep.on_trial_complete("t3", {"acc": 0.9})  # a configuration whose other seeds have not ended yet
    study = inner._ot_study
    done = [t for t in study.trials if t.value is not None]
    assert len(done) == 1 and math.isclose(done[0].value, 0.6)  # one observation: the mean over three seeds
    assert done[0].params["lr"] == first[0]["hp"]["lr"]
    assert [h["mean"] for h in rep.history()] == [pytest.approx(0.6)]


def test_a_failed_seed_is_left_out_of_the_mean_and_the_bound_counts_configurations():
    inner, rep = replicates([0, 1], max_concurrent=1)
    a, b = rep.suggest("a"), rep.suggest("b")
    assert a["hp"] == b["hp"] and rep.suggest("c") is None  # the next configuration waits for this one
    rep.on_trial_complete("a", {"acc": 0.8})
    assert rep.suggest("c") is None  # one seed is still running
    rep.on_trial_complete("b", None, error=True)
    c = rep.suggest("c")
    assert c is not None and c["seed"] == 0 and c["hp"] != a["hp"]
    assert [t.value for t in inner._ot_study.trials if t.value is not None] == [pytest.approx(0.8)]


def test_the_same_search_seed_suggests_the_same_configurations():
    runs = []
    for _ in range(2):
        inner, rep = replicates([0], seed=11)
        out = []
        for i in range(12):  # past TPE's 10 random start-up trials, each told its result before the next
            c = rep.suggest(f"t{i}")
            out.append(c["hp"])
            rep.on_trial_complete(f"t{i}", {"acc": -abs(math.log10(c["hp"]["lr"]) + 1.5)})
        runs.append(out)
    assert runs[0] == runs[1]
    other = [replicates([0], seed=12)[1].suggest("t0")["hp"]]
    assert other != runs[0][:1]
