"""The reference job: a small torch model on sklearn's digits (1,797 8x8 images, shipped with sklearn).

    danlu run                                  # one trial in-process, default hyperparameters
    danlu run job/model=cnn lr=0.02 epochs=5
    danlu sweep lr='tag(log, interval(1e-3, 3e-1))' batch_size=32,64

It knows nothing of Ray or MLflow: it reads `cfg`, reports through `ctx`, and checkpoints everything a
resumed run needs to continue exactly (model, optimizer, lr schedule, every RNG, the epoch).
It uses the GPU the trial was given (CUDA_VISIBLE_DEVICES), the CPU otherwise.
"""

from __future__ import annotations

import functools
import math
import random

import numpy as np
import torch
from torch import nn


@functools.lru_cache(maxsize=4)
def load_split(val_fraction: float, split_seed: int):
    """Digits, scaled to [0, 1], with a fixed stratified train/validation split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xt, xv, yt, yv = train_test_split(x, y, test_size=val_fraction, random_state=split_seed, stratify=y)
    return xt, yt, xv, yv


class MLP(nn.Module):
    def __init__(self, width: int, depth: int, dropout: float):
        super().__init__()
        layers, d = [], 64
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU(), nn.Dropout(dropout)]
            d = width
        self.body = nn.Sequential(*layers, nn.Linear(d, 10))

    def forward(self, x):
        return self.body(x)


class CNN(nn.Module):
    def __init__(self, width: int, depth: int, dropout: float):
        super().__init__()
        chans, layers, c = max(4, width // 2), [], 1
        for i in range(depth):
            out = chans if i < depth - 1 else width
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU()]
            c = out
        self.body = nn.Sequential(*layers, nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * 16, 10))

    def forward(self, x):
        return self.body(x.view(-1, 1, 8, 8))


MODELS = {"mlp": MLP, "cnn": CNN}
INITS = {
    "default": None,  # torch's own
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "xavier_normal": nn.init.xavier_normal_,
}


def build_model(cfg) -> nn.Module:
    m = cfg.job.model
    if m.name not in MODELS:
        raise ValueError(f"job.model.name={m.name}: valid models are {', '.join(MODELS)}")
    if cfg.init not in INITS:
        raise ValueError(f"init={cfg.init}: valid inits are {', '.join(INITS)}")
    model = MODELS[m.name](int(m.width), int(m.depth), float(cfg.dropout))
    init = INITS[cfg.init]
    if init is not None:
        for mod in model.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                init(mod.weight)
                nn.init.zeros_(mod.bias)
    return model


def build_optimizer(cfg, model):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer={cfg.optimizer}: valid optimizers are sgd, adamw")


def build_schedule(cfg, opt):
    if cfg.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.lr_schedule == "cosine_restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.restart_period)
    if cfg.lr_schedule == "lr_range":  # the LR range test: lr to lr_max, geometrically, over the epochs
        growth = (float(cfg.lr_max) / float(cfg.lr)) ** (1 / max(1, int(cfg.epochs) - 1))
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: growth**e)
    raise ValueError(f"lr_schedule={cfg.lr_schedule}: valid schedules are constant, cosine, cosine_restarts, lr_range")


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too
    return torch.Generator().manual_seed(seed)  # the data order's own stream


def rng_state(gen: torch.Generator) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "data": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, gen: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def evaluate(model, x, y, loss_fn):
    model.eval()
    with torch.no_grad():
        logits = model(x)
        return loss_fn(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def train(cfg, ctx) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = seed_everything(int(cfg.seed))
    xt, yt, xv, yv = (torch.as_tensor(a, device=device) for a in load_split(cfg.val_fraction, cfg.split_seed))
    if cfg.get("subset"):  # the first `subset` training examples only (the preflight's tiny batch)
        xt, yt = xt[: int(cfg.subset)], yt[: int(cfg.subset)]
    model = build_model(cfg).to(device)
    opt = build_optimizer(cfg, model)
    sched = build_schedule(cfg, opt)
    loss_fn = nn.CrossEntropyLoss()

    start = 0
    state = ctx.restore()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        set_rng_state(state["rng"], gen)
        start = state["epoch"]
        print(f"restored at epoch {start}")

    n, bs = len(xt), int(cfg.batch_size)
    for epoch in range(start + 1, cfg.epochs + 1):
        model.train()
        total, seen, grad_norm = 0.0, 0, 0.0
        for idx in torch.randperm(n, generator=gen).to(device).split(bs):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            grad_norm = max(grad_norm, torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf).item())
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        val_loss, val_acc = evaluate(model, xv, yv, loss_fn)
        train_loss = total / seen
        metrics = {"train_loss": train_loss, "val_loss": val_loss, "val_acc": val_acc, "lr": lr, "grad_norm": grad_norm}
        state = {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "schedule": sched.state_dict(), "rng": rng_state(gen)}
        ctx.report(epoch, metrics, checkpoint=state)
        if not math.isfinite(train_loss):
            print(f"epoch {epoch}: train_loss is {train_loss}; stopping")
            return


def predict(cfg, state):
    """Class probabilities of the model in a checkpoint `state` on the validation split, and its labels (numpy).
    For the report's ensemble section (prediction averaging); the job contract's optional second function."""
    xt, yt, xv, yv = load_split(cfg.val_fraction, cfg.split_seed)
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(torch.as_tensor(xv)), dim=1).numpy()
    return probs, np.asarray(yv)
