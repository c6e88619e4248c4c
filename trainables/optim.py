"""Optimizer, learning-rate schedule and lookahead averaging. Never imports Ray.

Hyperparameters follow airbench's decoupled form: ``lr`` and ``weight_decay``
are per 1024 examples and independent of momentum; the summed (not averaged)
loss makes the batch size enter through the number of examples per step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

BIAS_SCALER = 64.0  # BatchNorm shifts learn this much faster (airbench)
# Indices of the param groups; WHITEN only for networks with a whitening layer.
NORM, OTHER, WHITEN = 0, 1, 2


def kilostep_scale(momentum: float) -> float:
    """How much larger Nesterov steps are than the per-example gradients, per 1024 examples."""
    return 1024 * (1 + 1 / (1 - momentum))


def build_optimizer(model: nn.Module, config: dict[str, Any]) -> torch.optim.SGD:
    """Nesterov SGD with airbench's decoupled lr and weight decay.

    Groups: BatchNorm shifts (lr scaled by ``BIAS_SCALER``), everything else,
    and the whitening layer's bias on its own so that the schedule can freeze
    it after ``whiten_bias_epochs`` (its lr drops to zero: the parameter keeps
    receiving gradients, which multi-process training needs, but stops moving).
    """
    norm_ids = {
        id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()
    }
    whiten = getattr(model, "whiten", None)
    whiten_ids = {id(whiten.bias)} if whiten is not None and whiten.bias is not None else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    params = [  # indexed by NORM, OTHER, WHITEN
        [p for p in trainable if id(p) in norm_ids],
        [p for p in trainable if id(p) not in norm_ids | whiten_ids],
    ]
    if whiten_ids:
        params.append([whiten.bias])
    groups = [{"params": ps, **h} for ps, h in zip(params, group_hyperparams(config, len(params)), strict=False)]
    # One fused kernel for the whole update on a GPU (the step is a few ms: launches count).
    fused = all(p.is_cuda for g in groups for p in g["params"]) and bool(trainable)
    return torch.optim.SGD(groups, momentum=float(config["momentum"]), nesterov=True, fused=fused or None)


def group_hyperparams(config: dict[str, Any], groups: int) -> list[dict[str, float]]:
    """The peak ``lr``, ``weight_decay`` and ``momentum`` of each param group (NORM, OTHER[, WHITEN]) for ``config``."""
    momentum = float(config["momentum"])
    lr = float(config["lr"]) / kilostep_scale(momentum)
    wd = float(config["weight_decay"]) * int(config["batch_size"]) / kilostep_scale(momentum)
    lr_norm = lr * BIAS_SCALER
    values = [
        {"lr": lr_norm, "weight_decay": wd / lr_norm, "momentum": momentum},
        {"lr": lr, "weight_decay": wd / lr, "momentum": momentum},
        {"lr": lr, "weight_decay": wd / lr, "momentum": momentum},
    ]
    return values[:groups]


def retune(optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LambdaLR, config: dict) -> None:
    """Give a restored optimizer ``config``'s lr, weight decay and momentum, at the step its schedule reached.

    A checkpoint restores the values it was saved with; when a trial continues
    another's checkpoint with perturbed values (PBT), the schedule keeps its
    position (its step, so the warm-up and decay stay laid over the same
    budget) and scales the new peak lr from there. With the saved values this
    changes nothing, so an ordinary resume stays exact.
    """
    values = group_hyperparams(config, len(optimizer.param_groups))
    for i, (group, v) in enumerate(zip(optimizer.param_groups, values, strict=True)):
        group.update(initial_lr=v["lr"], weight_decay=v["weight_decay"], momentum=v["momentum"])
        schedule.base_lrs[i] = v["lr"]
        group["lr"] = v["lr"] * schedule.lr_lambdas[i](schedule.last_epoch)
    schedule._last_lr = [group["lr"] for group in optimizer.param_groups]


def build_schedule(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup: float, freeze_whiten_after: int | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0.2x to the peak over ``warmup`` of the budget, then linear decay to 0.07x.

    The whitening bias's group (if any) follows the same curve until step
    ``freeze_whiten_after`` and has lr 0 from then on.
    """
    knots = [0, max(1, int(warmup * total_steps)), max(2, total_steps)]

    def curve(step: int) -> float:
        return float(np.interp(step, knots, [0.2, 1.0, 0.07]))

    def whiten_curve(step: int) -> float:
        return curve(step) if freeze_whiten_after is None or step < freeze_whiten_after else 0.0

    lambdas = [curve] * len(optimizer.param_groups)
    if len(lambdas) > WHITEN:
        lambdas[WHITEN] = whiten_curve
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


class Lookahead:
    """airbench's lookahead: every ``every`` steps, pull an average of the weights and reset the net to it.

    The average's decay grows as ``0.95**every * (step / total_steps)**3``, so
    it is plain training early on and strong averaging towards the end; after
    the last step the network holds the average. BatchNorm statistics are
    averaged with the weights. The state rides in checkpoints, so a resumed
    trial continues exactly.
    """

    def __init__(self, model: nn.Module, *, total_steps: int, every: int = 5) -> None:
        self.total_steps, self.every = max(1, total_steps), every
        self._live = [t for t in model.state_dict().values() if t.is_floating_point()]
        self.average = [t.detach().clone() for t in self._live]

    @torch.no_grad()
    def step(self, step: int) -> None:
        """Call after optimizer step number ``step`` (1-based)."""
        if step >= self.total_steps:
            torch._foreach_copy_(self._live, self.average)
        elif step % self.every == 0:
            decay = 0.95**self.every * (step / self.total_steps) ** 3
            torch._foreach_lerp_(self.average, self._live, 1 - decay)
            torch._foreach_copy_(self._live, self.average)

    def state_dict(self) -> dict[str, Any]:
        return {"average": [t.clone() for t in self.average]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for t, saved in zip(self.average, state["average"], strict=True):
            t.copy_(saved)
