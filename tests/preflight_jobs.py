"""Real jobs with real bugs, for the preflight's tests: each one fails one check (tests/test_preflight.py).

    job.fn=tests.preflight_jobs:zero_grad_after_backward   cannot overfit: the gradient is cleared before the step
    job.fn=tests.preflight_jobs:crash_at_first_step        every trial would crash at step 1
"""

from __future__ import annotations

import torch
from torch import nn

from jobs.digits import build_model, build_optimizer, load_split, seed_everything


def zero_grad_after_backward(cfg, ctx) -> None:
    """The digits job with a classic bug: zero_grad() between backward() and step(), so no step moves a weight
    (SGD's weight decay aside). Its loss stays where it started: the overfit check must FAIL."""
    gen = seed_everything(int(cfg.seed))
    xt, yt, xv, yv = (torch.as_tensor(a) for a in load_split(cfg.val_fraction, cfg.split_seed))
    if cfg.get("subset"):
        xt, yt = xt[: int(cfg.subset)], yt[: int(cfg.subset)]
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, cfg.epochs + 1):
        total = 0.0
        for idx in torch.randperm(len(xt), generator=gen).split(int(cfg.batch_size)):
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.zero_grad()  # the bug: the gradient is gone before the optimizer sees it
            opt.step()
            total += loss.item() * len(idx)
        with torch.no_grad():
            acc = (model(xv).argmax(1) == yv).float().mean().item()
        ctx.report(epoch, {"train_loss": total / len(xt), "val_acc": acc})


def crash_at_first_step(cfg, ctx) -> None:
    """A job that raises before its first report (a shape mistake): the metric check must FAIL, nothing launched."""
    model = nn.Linear(3, 10)
    model(torch.zeros(4, 64))  # 64 features into a layer that takes 3
