"""The reference job on real digits data, run through the local context (no Ray)."""

from __future__ import annotations

import pytest

from orchestrator.config.compose import compose, hydra_context
from orchestrator.errors import BadInput
from orchestrator.trial.ctx import LocalContext
from orchestrator.trial.trainable import load_job, run_local


def cfg_for(conf_dir, *overrides):
    with hydra_context(conf_dir):
        return compose(list(overrides))


def run(conf_dir, *overrides, ctx=None):
    cfg = cfg_for(conf_dir, *overrides)
    ctx = ctx or LocalContext(metric="val_acc", stream=open("/dev/null", "w"))
    load_job(cfg.job.fn, conf_dir.parent)(cfg, ctx)
    return ctx


def test_mlp_learns_digits(conf_dir):
    ctx = run(conf_dir, "epochs=8", "lr=0.05")
    steps = [s for s, _ in ctx.history]
    accs = [m["val_acc"] for _, m in ctx.history]
    assert steps == list(range(1, 9))
    assert accs[-1] > 0.9 and accs[-1] > accs[0]
    assert set(ctx.history[0][1]) == {"train_loss", "val_loss", "val_acc", "lr", "grad_norm"}
    assert all(0 < m["grad_norm"] < 100 for _, m in ctx.history)  # the largest gradient norm of each epoch


@pytest.mark.parametrize(
    "overrides",
    [
        ["job/model=cnn", "job.model.width=16"],
        ["init=kaiming_normal", "optimizer=adamw", "lr=0.003"],
        ["init=xavier_normal", "lr_schedule=cosine_restarts", "restart_period=1"],
        ["lr_schedule=constant", "dropout=0.5", "batch_size=256"],
    ],
)
def test_knobs_train(conf_dir, overrides):
    ctx = run(conf_dir, "epochs=2", *overrides)
    assert len(ctx.history) == 2 and all(0 <= m["val_acc"] <= 1 for _, m in ctx.history)


def test_same_seed_same_run_different_seed_different_run(conf_dir):
    a = run(conf_dir, "epochs=2", "seed=1").history
    b = run(conf_dir, "epochs=2", "seed=1").history
    c = run(conf_dir, "epochs=2", "seed=2").history
    assert a == b and a != c


class _Interrupted(Exception):
    pass


class _StopAfter(LocalContext):
    def __init__(self, n, **kw):
        super().__init__(**kw)
        self.n = n

    def report(self, step, metrics, checkpoint=None):
        super().report(step, metrics, checkpoint)
        if len(self.history) == self.n:
            raise _Interrupted


@pytest.mark.parametrize("schedule", ["cosine", "cosine_restarts"])
def test_restore_continues_exactly(conf_dir, schedule):
    """Stopped after 3 epochs and restored from the checkpoint, the job reproduces the uninterrupted run."""
    quiet = open("/dev/null", "w")
    overrides = ["epochs=6", f"lr_schedule={schedule}", "restart_period=2", "dropout=0.2", "seed=3"]
    full = run(conf_dir, *overrides).history
    first = _StopAfter(3, metric="val_acc", stream=quiet)
    with pytest.raises(_Interrupted):
        run(conf_dir, *overrides, ctx=first)
    resumed = LocalContext(metric="val_acc", stream=quiet)
    resumed.checkpoint = first.checkpoint
    run(conf_dir, *overrides, ctx=resumed)
    assert [s for s, _ in resumed.history] == [4, 5, 6]
    assert first.history + resumed.history == full


def test_local_context_checks_metric_and_values():
    ctx = LocalContext(metric="val_acc", stream=open("/dev/null", "w"))
    with pytest.raises(BadInput, match="sweep.metric=val_acc.*reports: loss"):
        ctx.report(1, {"loss": 0.5})
    with pytest.raises(TypeError, match="step must be an int"):
        ctx.report(1.5, {"val_acc": 0.5})
    with pytest.raises(TypeError, match="metric 'val_acc' must be a number"):
        ctx.report(1, {"val_acc": "high"})


def test_run_local_prints_each_report(conf_dir, capsys):
    assert run_local(cfg_for(conf_dir, "job=sleep", "sweep=sleep", "epochs=3", "epoch_s=0"), conf_dir) == 0
    out = capsys.readouterr().out
    assert out.count("step") >= 3 and "done: 3 reports" in out


def test_checkpoint_state_round_trips_with_and_without_torch(tmp_path):
    """What TuneContext puts in a Tune checkpoint: torch.save when torch is loaded, pickle otherwise."""
    import sys

    import torch

    from orchestrator.trial.trainable import load_state, save_state

    state = {"epoch": 3, "w": torch.arange(4.0), "rng": torch.get_rng_state()}
    save_state(state, str(tmp_path))
    back = load_state(str(tmp_path))
    assert back["epoch"] == 3 and torch.equal(back["w"], state["w"]) and torch.equal(back["rng"], state["rng"])
    plain = tmp_path / "plain"
    plain.mkdir()
    saved_torch = sys.modules.pop("torch")  # a job that never imported torch
    try:
        save_state({"epoch": 5}, str(plain))
    finally:
        sys.modules["torch"] = saved_torch
    assert (plain / "state.pkl").exists() and load_state(str(plain)) == {"epoch": 5}
