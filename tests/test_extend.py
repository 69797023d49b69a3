"""`danlu extend NAME`: a sweep that has ended grows in the same sweep: more configurations (random, optuna, grid),
more seeds (all, or the report's top K), a new space. Each on real sweeps (the sleeping job on the shared Ray, real
MLflow): one parent run, one child per (configuration, seed), no configuration twice, the searcher told the history,
ASHA's rungs holding the earlier trials. What an extension may not change is refused (exit 2), changing nothing."""

from __future__ import annotations

import json

import pytest
from conftest import danlu_cli, mlflow_runs

from orchestrator.scheduler._group_rungs import GroupRungs

BASE = ["--no-preflight", "job=sleep", "sweep=sleep", "epochs=4", "sweep.search_seed=3"]


def test_group_rungs_carry_judges_a_grown_group_and_keeps_the_others():
    rungs = GroupRungs([1.0, 2.0, 4.0], 2, [0, 1])
    earlier = [{"config": "a", "seed": 0, "last": 4, "values": [[1, 0.9], [2, 0.9], [4, 0.9]]},
               {"config": "b", "seed": 0, "last": 2, "values": [[1, 0.1], [2, 0.1]]},
               {"config": "c", "seed": 0, "last": 4, "values": [[1, 0.5], [2, 0.5], [4, 0.5]]}]
    decisions = [{"rung": 1.0, "config": "a", "mean": 0.9, "seeds": 1, "cutoff": None, "stop": False}]
    rungs.carry(earlier, {"c"}, decisions)
    assert rungs.means[1.0] == {"a": 0.9, "b": 0.1}  # c's group grows: decided again
    assert rungs.decisions[0].config == "a"
    stop, made = rungs.result("c", 1, 1, 0.3)  # its new seed at rung 1: the mean of 0.5 and 0.3 against a and b
    assert [(d.config, d.rung, d.seeds, round(d.mean, 3)) for d in made] == [("c", 1.0, 2, 0.4)]
    assert made[0].cutoff == pytest.approx(0.5)  # the median of 0.9 and 0.1: the earlier groups' means
    assert stop


def test_random_and_grid_add_only_configurations_that_did_not_run(conf_dir):
    from omegaconf import OmegaConf

    from orchestrator.config.space import config_id, parse_space
    from orchestrator.search import grid, random

    space = parse_space({"bs": "16,32,64", "x": "interval(0, 1)"}, [0], lambda g: [])
    cfg = OmegaConf.create({"sweep": {"num_samples": 10}})
    first = random.more(space, cfg, 1, set(), 4)
    assert len(first) == 6 and len({config_id(h) for h in first}) == 6
    again = random.more(space, cfg, 1, {config_id(h) for h in first}, 4)
    assert not {config_id(h) for h in again} & {config_id(h) for h in first}
    small = parse_space({"bs": "16,32,64"}, [0], lambda g: [])
    seen = {config_id({"bs": 16})}
    assert random.more(small, OmegaConf.create({"sweep": {"num_samples": 8}}), 1, seen, 1) in (
        [{"bs": 32}, {"bs": 64}], [{"bs": 64}, {"bs": 32}])  # only two left to draw, however many are asked
    assert grid.more(small, cfg, 1, seen, 0) == [{"bs": 32}, {"bs": 64}]


def test_a_searcher_that_cannot_be_told_the_history_is_refused_more_configurations(conf_dir):
    from types import SimpleNamespace

    from orchestrator.errors import BadInput
    from orchestrator.launch.extension import Request, _work
    from orchestrator.launch.plan import plan

    p = plan(["job=sleep", "sweep=sleep", "search=hyperopt", "sweep.num_samples=8", "sweep.name=h"], conf_dir)
    with pytest.raises(BadInput, match="search.name=hyperopt: this searcher cannot be told the earlier results"):
        _work(p, Request([]), {"search_seed": 1}, SimpleNamespace(ids=[]), [], {"sweep.num_samples": "4"},
              ["sweep.num_samples"])


def test_more_seeds_and_more_configurations_are_two_extensions_the_seeds_first():
    from types import SimpleNamespace

    from orchestrator.launch.extension import Target, steps

    before = {"sweep.seeds": "[0]", "sweep.num_samples": "4", "epochs": "4"}
    own = ["sweep.seeds=[0,1]", "sweep.num_samples=8", "sweep.budget.wall_time=1h"]
    t = Target("s", {"settings": before, "extensions": []}, own, [], [])
    p = SimpleNamespace(identity={"sweep.seeds": "[0, 1]", "sweep.num_samples": "8", "epochs": "4"})
    assert steps(p, t, 2) == [(["sweep.seeds=[0,1]", "sweep.budget.wall_time=1h"], 2), (own, None)]
    assert steps(SimpleNamespace(identity={**p.identity, "epochs": "8"}), t, None) == [(own, None)]  # refused whole
    # the same command again, stopped in its second part: its seeds are the sweep's, its --top was the first part's
    after = {"settings": {**before, "sweep.seeds": "[0, 1]"}, "extensions": [{"kind": "seeds", "top": 2}]}
    assert steps(p, Target("s", after, own, [], []), 2) == [(own, None)]
    assert steps(SimpleNamespace(identity=before | {"sweep.num_samples": "8"}), t, None) == [(own, None)]


def _children(tmp_path, name):
    _, parents, children = mlflow_runs(tmp_path / "mlflow.db", name)
    return parents, children


def _sweep(tmp_path, *args):
    r = danlu_cli(["sweep", *BASE, *args], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def _extend(tmp_path, name, *args, code=0):
    r = danlu_cli(["extend", name, *args], tmp_path)
    assert r.returncode == code, r.stdout + r.stderr
    return r


def _carried(storage) -> dict:
    """The scheduler state Tune saved last in an extension's experiment (SchedulerState's, first callback)."""
    from orchestrator.storage.snapshots import newest_loadable

    return newest_loadable(storage, "callback-states-*.pkl")[0]["scheduler"]


@pytest.mark.integration
def test_random_sweep_grows_by_samples_then_seeds_for_the_top_then_a_narrowed_space(tmp_path):
    _sweep(tmp_path, "sweep.num_samples=4", "sweep.name=grow")
    storage = tmp_path / "outputs" / "grow"
    before = json.loads((storage / "danlu" / "sweep.json").read_text())

    # refused, changing nothing: another fidelity and another metric; seeds that drop one; nothing at all
    r = _extend(tmp_path, "grow", "epochs=8", "sweep.metric=loss", code=2)
    assert "epochs: 4 -> 8 (another fidelity" in r.stderr and "sweep.metric: score -> loss (another metric)" in r.stderr
    assert "Start a new sweep, or compare them with `danlu compare`" in r.stderr and "Traceback" not in r.stderr
    assert "a superset of [0]" in _extend(tmp_path, "grow", "sweep.seeds=[1,2]", code=2).stderr
    assert "nothing to extend" in _extend(tmp_path, "grow", code=2).stderr
    assert json.loads((storage / "danlu" / "sweep.json").read_text()) == before
    assert len(_children(tmp_path, "grow")[1]) == 4

    # its plan: the new work only, nothing run or kept
    r = _extend(tmp_path, "grow", "--plan", "sweep.num_samples=7")
    assert "new trials: 3 (3 configuration(s) x 1 seed(s)), numbered from t004" in r.stdout, r.stdout
    assert json.loads((storage / "danlu" / "sweep.json").read_text()) == before

    # more configurations: 3 new ones, never one that ran, numbered after the earlier trials
    r = _extend(tmp_path, "grow", "sweep.num_samples=7")
    assert "extension 1 of grow: 3 new configuration(s)" in r.stdout
    parents, children = _children(tmp_path, "grow")
    assert len(parents) == 1 and len(children) == 7
    assert len({c.data.tags["danlu.config_id"] for c in children}) == 7
    new = sorted(c.data.tags["danlu.trial"] for c in children if c.data.tags.get("danlu.extension") == "1")
    assert new == ["t004", "t005", "t006"]
    tags, params = parents[0].data.tags, parents[0].data.params
    assert tags["danlu.extensions"] == "1" and params["extension1.sweep.num_samples"] == "7"
    assert json.loads(tags["danlu.extension.1"])["changed"] == ["sweep.num_samples: 4 -> 7"]
    assert "Extension 1 (" in r.stdout and "trials t004-t006 (3)" in r.stdout
    carried = [k for rung in _carried(storage / "extensions" / "1")["rungs"][0] for k in rung if k.startswith("earlier:")]
    assert carried, "ASHA's rungs hold the earlier trials' values"

    # more seeds for the report's top 2: each gets seeds 1 and 2, judged as a group of 3
    r = _extend(tmp_path, "grow", "--top", "2", "sweep.seeds=[0,1,2]")
    assert "2 earlier configuration(s) (the top 2) x new seed(s) [1, 2]" in r.stdout
    parents, children = _children(tmp_path, "grow")
    assert len(parents) == 1 and len(children) == 11
    by_config: dict[str, set[str]] = {}
    for c in children:
        by_config.setdefault(c.data.tags["danlu.config_id"], set()).add(c.data.tags["danlu.seed"])
    assert sorted(len(s) for s in by_config.values()) == [1, 1, 1, 1, 1, 3, 3]
    groups = _carried(storage / "extensions" / "2")["groups"]
    assert any(len(seeds) == 3 for rung, configs in groups["values"] for seeds in configs.values())

    # a narrowed space: new configurations inside it; the earlier ones outside it stay, marked
    r = _extend(tmp_path, "grow", "sweep.space.x=interval(0.5,1.0)", "sweep.num_samples=9")
    parents, children = _children(tmp_path, "grow")
    assert len(parents) == 1 and len(children) == 11 + 2 * 3
    xs = [float(c.data.params["x"]) for c in children if c.data.tags.get("danlu.extension") == "3"]
    assert xs and all(0.5 <= x <= 1.0 for x in xs)
    rows = json.loads((storage / "report" / "report.json").read_text())["leaderboard"]["rows"]
    assert len(rows) == 9
    for row in rows:
        assert bool(row["earlier_space"]) == (float(row["hp"]["x"]) < 0.5), row
    assert "(earlier space: x)" in r.stdout


@pytest.mark.integration
def test_optuna_is_told_every_earlier_configuration(tmp_path):
    from orchestrator.ray_internals import saved_optuna_study

    _sweep(tmp_path, "search=optuna", "search.n_startup_trials=2", "sweep.num_samples=4", "sweep.name=tpe")
    r = _extend(tmp_path, "tpe", "sweep.num_samples=7")
    assert "the searcher was told 4 earlier configuration(s)" in r.stdout
    parents, children = _children(tmp_path, "tpe")
    assert len(parents) == 1 and len(children) == 7 and len({c.data.tags["danlu.config_id"] for c in children}) == 7
    study = saved_optuna_study(tmp_path / "outputs" / "tpe" / "extensions" / "1")
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(finished) == 7  # the 4 earlier ones, told, and the 3 it suggested
    earlier = {round(float(c.data.params["x"]), 9) for c in children if "danlu.extension" not in c.data.tags}
    assert earlier <= {round(t.params["x"], 9) for t in finished}


@pytest.mark.integration
def test_grid_adds_what_a_widened_space_adds(tmp_path):
    _sweep(tmp_path, "search=grid", "x=0.2,0.4", "sweep.name=g")
    r = _extend(tmp_path, "g", "x=0.2,0.4,0.6")
    assert "extension 1 of g: 1 new configuration(s)" in r.stdout
    _, children = _children(tmp_path, "g")
    assert sorted(float(c.data.params["x"]) for c in children) == [0.2, 0.4, 0.6]
    added = next(c for c in children if c.data.tags.get("danlu.extension") == "1")
    r = danlu_cli(["rerun", added.info.run_id], tmp_path)  # a trial of an extension reruns as any trial does
    assert r.returncode == 0 and "reproduced exactly" in r.stdout, r.stdout + r.stderr
    assert "add no configuration that has not run" in _extend(tmp_path, "g", "x=0.2,0.4", code=2).stderr
    r = _extend(tmp_path, "g", "sweep.seeds=[0,1]")  # a new seed for every configuration (no --top)
    assert "3 earlier configuration(s) x new seed(s) [1]" in r.stdout, r.stdout
    parents, children = _children(tmp_path, "g")
    assert len(parents) == 1 and sorted((c.data.params["x"], c.data.tags["danlu.seed"]) for c in children) == [
        (x, s) for x in ("0.2", "0.4", "0.6") for s in ("0", "1")]
    # the same command again (a requeued job's, a second terminal's): the extension has ended, nothing to run
    r = _extend(tmp_path, "g", "sweep.seeds=[0,1]")
    assert "sweep g ended on" in r.stdout and "nothing to run" in r.stdout, r.stdout
    assert len(_children(tmp_path, "g")[1]) == 6
    # more seeds and a grown space in one command: two extensions, the new seed first, then x=0.8 under every seed
    r = _extend(tmp_path, "g", "x=0.2,0.4,0.6,0.8", "sweep.seeds=[0,1,2]")
    assert r.stdout.index("extension 3 of g: 3 earlier configuration(s) x new seed(s) [2]") < \
        r.stdout.index("extension 4 of g: 1 new configuration(s)"), r.stdout
    parents, children = _children(tmp_path, "g")
    assert len(parents) == 1 and sorted((c.data.params["x"], c.data.tags["danlu.seed"]) for c in children) == [
        (x, s) for x in ("0.2", "0.4", "0.6", "0.8") for s in ("0", "1", "2")]
