"""Searchers (orchestrator/search/): the sweep grammar mapped onto each, seeds as replicates under a
searcher that learns, reproducible sampling, and a searcher that survives a driver SIGKILL.

The mapping and replicate tests drive real Optuna through Ray Tune's OptunaSearch without starting Ray;
the sweeps (marked slow) run on a real local Ray with a real sqlite MLflow store."""

from __future__ import annotations

import io
import math
from collections import defaultdict

import pytest
from omegaconf import OmegaConf

from orchestrator import ray_internals
from orchestrator.config.space import Param, Space
from orchestrator.errors import BadInput
from orchestrator.launch.plan import plan


def optuna_space(conf_dir, tmp_path, *overrides):
    from ray.tune.search.optuna import OptunaSearch

    from orchestrator.search._domains import domains

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
    one = Space(params=[Param(key="lr", expr="interval(0,1)", kind="uniform", low=0.0, high=1.0)])
    search.check(one, cfg)
    with pytest.raises(BadInput, match="search.n_startup_trials=-1"):
        search.check(one, OmegaConf.merge(cfg, {"n_startup_trials": -1}))
    with pytest.raises(BadInput, match="sweep.space: empty, so search=optuna has nothing to learn"):
        search.check(Space(), cfg)
    with pytest.raises(BadInput, match="search.name=nope: no such searcher; valid: arms, grid, hyperopt, optuna, random"):
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

    from orchestrator.search._replicates import Replicates

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
    study = ray_internals.optuna_study(inner)
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
    assert [t.value for t in ray_internals.optuna_study(inner).trials if t.value is not None] == [pytest.approx(0.8)]


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


# -- sweeps on a real Ray and a real MLflow store ----------------------------------------------------------
def by_trial(children) -> list[tuple[str, dict, int]]:
    """(trial name, hyperparameters, seed) of each child run, in trial order."""
    rows = []
    for r in children:  # danlu.overrides: the trial's swept values and its seed, as key=value
        params = dict(o.split("=", 1) for o in r.data.tags["danlu.overrides"].split() if not o.startswith("seed="))
        rows.append((r.data.tags["danlu.trial"], params, int(r.data.tags["danlu.seed"])))
    return sorted(rows, key=lambda row: row[0])


def run(conf_dir, tmp_path, name, *overrides):
    from orchestrator.run.sweep import run_sweep

    out = io.StringIO()
    code = run_sweep([f"sweep.name={name}", f"output_dir={tmp_path}/outputs", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                      "job=sleep", "sweep=sleep", "scheduler=fifo", "epoch_s=0.01", *overrides], conf_dir, stream=out,
                     preflight=False)
    assert code == 0, out.getvalue()
    return out.getvalue()


@pytest.mark.integration
def test_optuna_runs_each_configuration_under_every_seed_and_learns_their_mean(ray_gpus, conf_dir, tmp_path):
    from tests.conftest import mlflow_runs

    out = run(conf_dir, tmp_path, "reps", "search=optuna", "sweep.seeds=[0,1,2]", "sweep.num_samples=4", "epochs=3",
              "search.n_startup_trials=2", "search.max_concurrent=2")
    assert "search optuna (tpe), 4 configurations, at most 2 outstanding" in out and "12 trials" in out
    client, _, children = mlflow_runs(tmp_path / "mlflow.db", "reps")
    groups = defaultdict(dict)
    for r in children:
        groups[r.data.tags["danlu.config_id"]][int(r.data.tags["danlu.seed"])] = r
    assert len(children) == 12 and len(groups) == 4
    assert all(set(g) == {0, 1, 2} for g in groups.values())  # paired: the same seeds for every configuration
    study = ray_internals.saved_optuna_study(tmp_path / "outputs" / "reps")
    told = [t for t in study.trials if t.value is not None]
    assert len(told) == 4  # one observation per configuration, not one per trial
    for g in groups.values():
        x = float(g[0].data.params["x"])
        mean = sum(r.data.metrics["score"] for r in g.values()) / 3
        (t,) = [t for t in told if math.isclose(t.params["x"], x, rel_tol=1e-9)]
        assert math.isclose(t.value, mean, rel_tol=1e-9)


@pytest.mark.integration
@pytest.mark.parametrize("searcher", ["random", "optuna"])
def test_the_same_search_seed_gives_the_same_configurations_in_the_same_order(ray_gpus, conf_dir, tmp_path, searcher):
    from tests.conftest import mlflow_runs

    args = [f"search={searcher}", "sweep.seeds=[0,1]", "sweep.num_samples=5", "epochs=2", "sweep.search_seed=1234"]
    if searcher == "optuna":
        args += ["search.max_concurrent=1", "search.n_startup_trials=2"]  # TPE learns from the third on
    runs = []
    for name in ("first", "again"):
        run(conf_dir, tmp_path, name, *args)
        runs.append(by_trial(mlflow_runs(tmp_path / "mlflow.db", name)[2]))
    assert len(runs[0]) == 10 and runs[0] == runs[1]
    assert len({str(sorted(p.items())) for _, p, _ in runs[0]}) == 5  # five different configurations
    run(conf_dir, tmp_path, "other", *args[:-1], "sweep.search_seed=99")
    assert by_trial(mlflow_runs(tmp_path / "mlflow.db", "other")[2]) != runs[0]


@pytest.mark.integration
def test_a_killed_optuna_sweep_resumes_with_its_searcher(tmp_path):
    """A driver SIGKILL mid-sweep, then the same command: the configurations total num_samples, none twice,
    one MLflow run per trial, and Optuna's history after the resume holds what it had learned before."""
    from tests.conftest import danlu_cli, mlflow_runs, wait_for
    from tests.test_recovery import end_group, start_danlu
    from tests.test_resume import kill_driver

    args = ["sweep", "job=sleep", "sweep=sleep", "scheduler=fifo", "search=optuna", "sweep.seeds=[0,1]",
            "sweep.num_samples=6", "epochs=16", "epoch_s=0.2", "checkpoint_state=true", "search.n_startup_trials=2",
            "search.max_concurrent=2", "sweep.name=kill"]
    storage = tmp_path / "outputs" / "kill"

    def learned():
        study = ray_internals.saved_optuna_study(storage)
        return [] if study is None else [t.params for t in study.trials if t.value is not None]

    proc = start_danlu(args, tmp_path, tmp_path / "first.log")
    try:
        wait_for(lambda: len(learned()) >= 2, what="Optuna told of two configurations in Tune's snapshot")
        before = learned()
        kill_driver(proc)
    finally:
        end_group(proc)
    assert len(before) < 6, "the sweep ended before the kill"
    r = danlu_cli(args, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "danlu: resuming kill" in r.stdout and "12 trials" in r.stdout
    client, parents, children = mlflow_runs(tmp_path / "mlflow.db", "kill")
    assert len(parents) == 1 and len(children) == 12
    assert len({c.data.tags["ray.trial_id"] for c in children}) == 12  # one run per trial
    groups = defaultdict(set)
    for c in children:
        assert c.info.status == "FINISHED"
        groups[c.data.tags["danlu.config_id"]].add(int(c.data.tags["danlu.seed"]))
    assert len(groups) == 6 and all(seeds == {0, 1} for seeds in groups.values())  # none repeated
    after = learned()
    assert len(after) == 6 and all(p in after for p in before)
