"""Config composition: every group option composes; mistakes become one clear BadInput."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from orchestrator.config.compose import compose, hydra_context, split_overrides
from orchestrator.errors import BadInput
from orchestrator.launch.plan import plan

PACKAGE_CONF = Path(__file__).resolve().parents[1] / "orchestrator" / "conf"


def group_options(conf_dir):
    """Every (group, option) under the project's conf/ and danlu's own (orchestrator/conf/), nested groups
    (job/model) included."""
    out = set()
    for root in (conf_dir, PACKAGE_CONF):
        for path in sorted(root.rglob("*.yaml")):
            rel = path.relative_to(root)
            if rel.parent != rel.parent.__class__("."):
                out.add((rel.parent.as_posix(), rel.stem))
    return sorted(out)


def test_every_config_group_option_composes(conf_dir):
    options = group_options(conf_dir)
    groups = {g for g, _ in options}
    assert {"job", "job/model", "sweep", "scheduler", "search", "resources", "cluster", "tracking", "experiment"} <= groups
    with hydra_context(conf_dir):
        for group, option in options:
            cfg = compose([f"{group}={option}"])
            OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
            assert cfg.sweep.metric and cfg.job.fn


def test_every_option_plans_a_valid_sweep(conf_dir, tmp_path):
    """Each sweep/experiment/job option yields a space that maps onto Tune and a probe that composes."""
    for group, option in group_options(conf_dir):
        if group in ("sweep", "experiment"):
            extra = [f"job={option}", f"sweep={option}"] if option in ("sleep", "hartmann", "noisy") else []
            p = plan([*extra, f"{group}={option}"], conf_dir, cwd=str(tmp_path))
            p.space.param_space()
            assert p.storage_dir.parent == tmp_path / "outputs"


def test_default_config_shape(conf_dir):
    with hydra_context(conf_dir):
        cfg = compose([])
    assert cfg.job.fn == "jobs.digits:train" and cfg.job.model.name == "mlp"
    assert cfg.scheduler.max_t == cfg.epochs  # ASHA never runs a trial past the job's own length
    assert cfg.tracking.uri == "sqlite:///mlflow.db"
    assert cfg.cluster.address is None


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["lrr=0.1"], ["Unknown config key 'lrr'", "Did you mean: lr"]),
        (["job.model.widht=3"], ["job.model.widht", "job.model.width"]),
        (["job/model=resnet"], ["job/model", "resnet", "Available options", "cnn", "mlp"]),
        (["scheduler=hyperband"], ["scheduler", "hyperband", "asha", "fifo"]),
    ],
)
def test_composition_mistakes(conf_dir, overrides, words):
    with hydra_context(conf_dir), pytest.raises(BadInput) as err:
        compose(overrides)
    for w in words:
        assert w in str(err.value)


@pytest.mark.parametrize(
    "overrides, words, absent",
    [
        # the default sweep's space (written for the digits job) on a job without its keys: the space is named
        (["job=sleep"], ["sweep.space.lr", "the sweep your conf/config.yaml chooses", "job sleep", "sweep=NAME",
                         "~sweep.space.lr", "danlu run --cfg job=sleep"], ["Did you mean"]),
        (["job=sleep", "sweep=default"], ["sweep.space.lr", "sweep=default sweeps 'lr'"], ["Did you mean"]),
        # typed on the command line: most often a typo, and Hydra's message with the keys near it says so
        (["job=sleep", "sweep=sleep", "xx=interval(0,1)"], ["Unknown config key 'xx'"], ["sweep.space.xx"]),
    ],
)
def test_a_swept_key_the_job_lacks_is_named_with_where_it_came_from(tmp_path, overrides, words, absent):
    with pytest.raises(BadInput) as err:
        plan(overrides, Path(__file__).resolve().parents[1] / "conf", cwd=str(tmp_path))
    for w in words:
        assert w in str(err.value)
    for w in absent:
        assert w not in str(err.value)


def test_split_overrides_uses_hydras_parser():
    cl = split_overrides(["epochs=3", "lr=tag(log, interval(1e-4, 1e-1))", "batch_size=32,64", "job/model=mlp,cnn"])
    assert cl.fixed == ["epochs=3"]
    assert cl.sweep == {"lr": "tag(log, interval(1e-4, 1e-1))", "batch_size": "32,64", "job/model": "mlp,cnn"}
    with pytest.raises(BadInput, match="Malformed override 'lr=interval\\(1,'"):
        split_overrides(["lr=interval(1,"])


def test_command_line_wins_over_the_sweep_file(conf_dir, tmp_path):
    p = plan(["lr=0.01,0.02", "batch_size=64"], conf_dir, cwd=str(tmp_path))
    space = {q.key: q for q in p.space.params}
    assert space["lr"].values == (0.01, 0.02)  # replaced by the command line
    assert "batch_size" not in space  # fixed on the command line: no longer swept
    assert "job.model.width" in space  # still from conf/sweep/default.yaml


def test_sweep_keys_are_checked_before_launch(conf_dir, tmp_path):
    with pytest.raises(BadInput, match="lrr"):
        plan(["lrr=0.1,0.2"], conf_dir, cwd=str(tmp_path))
    with pytest.raises(BadInput, match="scheduler.grace_period"):
        plan(["scheduler.grace_period=50"], conf_dir, cwd=str(tmp_path))
    with pytest.raises(BadInput, match="sweep.mode"):
        plan(["sweep.mode=maximum"], conf_dir, cwd=str(tmp_path))
    with pytest.raises(BadInput, match="job.fn"):
        plan(["job.fn=jobs.nothere:train"], conf_dir, cwd=str(tmp_path))


@pytest.mark.parametrize(
    "fixed, hp, group_keys",
    [
        ([], {"lr": 0.0123}, set()),
        (["job/model=cnn"], {"job.model.width": 32, "dropout": 0.3}, set()),
        ([], {"job/model": "cnn", "job.model.width": 32, "dropout": 0.3}, {"job/model"}),
        (["experiment=digits_lr", "epochs=4"], {"lr_schedule": "constant"}, set()),
        (["job=sleep", "sweep=sleep"], {"x": 0.25}, set()),
        (["epochs=3", "+extra.note=hi", "~job.name"], {"optimizer": "adamw", "lr": 1}, set()),
    ],
)
def test_trial_config_equals_hydra_compose(conf_dir, fixed, hp, group_keys):
    """A trial's config as workers build it (the driver's composition, or their own when the trial chooses
    a config option, then its values set without Hydra's parser) is exactly Hydra's compose of the same
    overrides; and the driver's shortcut (compose the chosen options once, apply the rest) is too."""
    from orchestrator.config.compose import apply_overrides, split_fixed
    from orchestrator.config.space import override
    from orchestrator.trial.trainable import trial_config

    strings = [override(k, v) for k, v in hp.items()] + ["seed=5"]
    with hydra_context(conf_dir):
        expected = compose(fixed + strings)
        groups, _, rest = split_fixed(fixed, GlobalHydra.instance().config_loader())
        base = apply_overrides(compose(groups), rest)
        assert OmegaConf.to_container(base, resolve=False) == OmegaConf.to_container(compose(fixed), resolve=False)
    for _ in range(2):  # the second call takes the cached path
        got = trial_config(base, str(conf_dir), fixed, group_keys, hp, 5)
        assert OmegaConf.to_container(got, resolve=False) == OmegaConf.to_container(expected, resolve=False)
        assert OmegaConf.is_struct(got) == OmegaConf.is_struct(expected)
    with hydra_context(conf_dir):  # the trial changed a copy, never the driver's composition
        assert OmegaConf.to_container(base, resolve=False) == OmegaConf.to_container(compose(fixed), resolve=False)


def test_settings_of_the_wrong_type(conf_dir, tmp_path):
    with pytest.raises(BadInput, match="sweep.seeds=3: a list"):
        plan(["sweep.seeds=3"], conf_dir, cwd=str(tmp_path))
    with pytest.raises(BadInput, match="checkpoint.every"):
        plan(["checkpoint.every=0"], conf_dir, cwd=str(tmp_path))
    with pytest.raises(BadInput, match="config: .*NO_SUCH_VARIABLE"):
        plan(["epochs=${oc.env:NO_SUCH_VARIABLE}"], conf_dir, cwd=str(tmp_path))
