"""Hydra sweep grammar -> Ray Tune search space, parsed by Hydra's own parser."""

from __future__ import annotations

import pytest
from ray.tune.search import sample

from orchestrator.config.space import config_id, override, parse_space, short_label
from orchestrator.errors import BadInput

GROUPS = {"job/model": ["cnn", "mlp"], "scheduler": ["asha", "fifo"]}


def parse(entries: dict, seeds=(0,)):
    return parse_space(entries, list(seeds), lambda g: GROUPS.get(g, []))


def domain(expr: str, key: str = "x"):
    return parse({key: expr}).param_space()["hp"][key]


def test_choice_forms_map_to_categorical():
    for expr in ("32,64,128", "choice(32,64,128)"):
        d = domain(expr)
        assert isinstance(d, sample.Categorical) and d.categories == [32, 64, 128]


def test_range_maps_to_its_values():
    d = domain("range(1,10,2)")
    assert isinstance(d, sample.Categorical) and d.categories == [1, 3, 5, 7, 9]


def test_interval_is_uniform_float():
    d = domain("interval(0.1, 0.5)")
    assert isinstance(d, sample.Float) and (d.lower, d.upper) == (0.1, 0.5)
    assert isinstance(d.get_sampler(), sample.Float._Uniform)


def test_log_interval_is_loguniform():
    d = domain("tag(log, interval(1e-4, 1e-1))")
    assert isinstance(d, sample.Float) and isinstance(d.get_sampler(), sample.Float._LogUniform)
    assert (d.lower, d.upper) == (1e-4, 1e-1)


def test_int_interval_includes_its_high_end():
    d = domain("int(interval(8, 256))")
    assert isinstance(d, sample.Integer) and (d.lower, d.upper) == (8, 257)
    d = domain("int(tag(log, interval(8, 256)))")
    assert isinstance(d, sample.Integer) and isinstance(d.get_sampler(), sample.Integer._LogUniform)


def test_grid_tag_is_grid_search():
    assert domain("tag(grid, choice(1,2,3))") == {"grid_search": [1, 2, 3]}


def test_config_group_options_and_glob():
    assert domain("mlp,cnn", key="job/model").categories == ["mlp", "cnn"]
    assert sorted(domain("glob(*)", key="job/model").categories) == ["cnn", "mlp"]
    space = parse({"scheduler": "asha,fifo", "lr": "0.1,0.2"})
    assert space.group_keys == {"scheduler"}


def test_seeds_are_a_grid_beside_the_hyperparameters():
    space = parse({"lr": "interval(0.01, 0.1)"}, seeds=(0, 1, 2))
    ps = space.param_space()
    assert ps["seed"] == {"grid_search": [0, 1, 2]} and "seed" not in ps["hp"]
    # a seed sweep on the command line becomes replicates, never a hyperparameter
    space = parse({"seed": "1,2", "lr": "0.1,0.2"})
    assert space.seeds == [1, 2] and [p.key for p in space.params] == ["lr"]


@pytest.mark.parametrize(
    "entries, words",
    [
        ({"lr": "interval(0.5, 0.1)"}, ["sweep.space.lr", "low must be below high"]),
        ({"lr": "interval(0.1, 0.1)"}, ["sweep.space.lr", "low must be below high"]),
        ({"lr": "tag(log, interval(0, 1))"}, ["sweep.space.lr", "low > 0"]),
        ({"lr": "choice(1,2"}, ["sweep.space.lr", "malformed"]),
        ({"job/model": "mlp,resnet"}, ["job/model", "resnet", "valid options: cnn, mlp"]),
        ({"job/model": "glob(res*)"}, ["job/model", "matches no option"]),
        ({"job/model": "interval(0,1)"}, ["job/model", "list of options"]),
        ({"lr": "tag(fancy, choice(1,2))"}, ["sweep.space.lr", "unknown tag"]),
        ({"lr": "tag(grid, interval(0,1))"}, ["sweep.space.lr", "discrete"]),
        ({"seed": "interval(0,1)"}, ["sweep.space.seed", "discrete"]),
    ],
)
def test_unmappable_entries_name_the_key(entries, words):
    with pytest.raises(BadInput) as err:
        parse(entries)
    for w in words:
        assert w in str(err.value)


def test_bad_seeds():
    for seeds in ([], [0, 0], [0.5]):
        with pytest.raises(BadInput, match="sweep.seeds"):
            parse({}, seeds=seeds)


def test_overrides_round_trip_through_hydra():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for value in (0.0123, 64, "a b", True, None, [1, 2], "nan", "true", "1e3", "it's", "a\\b"):
        (ov,) = parser.parse_overrides([override("k", value)])
        assert ov.value() == value


def test_config_id_ignores_seed_and_order():
    assert config_id({"a": 1, "b": 2}) == config_id({"b": 2, "a": 1}) != config_id({"a": 1, "b": 3})


def test_short_label():
    assert short_label({"lr": 0.0123456, "batch_size": 64, "job.model.width": 128}) == "lr=0.01235 bs=64 width=128"
    assert short_label({"lr": "0.0123456", "batch_size": "64"}) == "lr=0.01235 bs=64"  # as MLflow params hold them
    assert short_label({"a.width": 1, "b.width": 2}) == "a.width=1 b.width=2"  # never two keys read alike
