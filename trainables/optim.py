"""Optimizer and learning-rate schedule. Never imports Ray.

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


def build_optimizer(model: nn.Module, config: dict[str, Any]) -> torch.optim.SGD:
    """Nesterov SGD with airbench's decoupled lr and weight decay."""
    momentum = float(config["momentum"])
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = float(config["lr"]) / kilostep_scale
    wd = float(config["weight_decay"]) * int(config["batch_size"]) / kilostep_scale
    norm_ids = {
        id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()
    }
    trainable = [p for p in model.parameters() if p.requires_grad]
    norm = [p for p in trainable if id(p) in norm_ids]
    other = [p for p in trainable if id(p) not in norm_ids]
    lr_norm = lr * BIAS_SCALER
    groups = [
        {"params": norm, "lr": lr_norm, "weight_decay": wd / lr_norm},
        {"params": other, "lr": lr, "weight_decay": wd / lr},
    ]
    return torch.optim.SGD(groups, momentum=momentum, nesterov=True)


def build_schedule(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0.2x to the peak over ``warmup`` of the budget, then linear decay to 0.07x."""
    knots = [0, max(1, int(warmup * total_steps)), max(2, total_steps)]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: float(np.interp(step, knots, [0.2, 1.0, 0.07])))
