"""The training loop, written once for one process or many. Never imports Ray.

World size 1 is a plain loop; world size N > 1 wraps the model in DDP (the
process group must already be initialised), gives each rank a strided slice
of every global batch of a shared per-epoch permutation (what
``DistributedSampler`` does), and averages metrics across ranks. Every rank
calls ``report`` each epoch; the caller decides that only rank 0 writes
checkpoints and talks to the scheduler (nanoGPT's ``master_process``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from trainables import augment
from trainables.models import build_model
from trainables.optim import build_optimizer, build_schedule

WHITEN_SAMPLES = 5000
EVAL_BATCH = 1000

# report(metrics, checkpoint_state): checkpoint_state() builds the state dict to save.
Reporter = Callable[[dict[str, Any], Callable[[], dict[str, Any]]], None]


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class DeviceData:
    """The splits a trial trains on, as tensors on its device: uint8 (N, 3, 32, 32) and int64 (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], *, device: torch.device) -> DeviceData:
        def put(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(a, copy=True)).to(device, non_blocking=True)

        return cls(*(put(arrays[k]) for k in ("train_x", "train_y", "val_x", "val_y")))


def _autocast(device: torch.device):
    # bf16 on GPU (no loss scaling needed); full precision on CPU, where bf16 is slower.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _all_sum(t: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over uint8 ``images`` (sharded across ranks)."""
    device = images.device
    was_training = model.training
    model.eval()
    x_all, y_all = images[rank::world_size], labels[rank::world_size]
    sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss sum, correct, count
    for i in range(0, len(y_all), EVAL_BATCH):
        x = augment.normalize(x_all[i : i + EVAL_BATCH])
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        y = y_all[i : i + EVAL_BATCH]
        with _autocast(device):
            logits = model(x)
        sums[0] += F.cross_entropy(logits.float(), y, reduction="sum")
        sums[1] += (logits.argmax(1) == y).sum()
        sums[2] += len(y)
    _all_sum(sums, world_size)
    model.train(was_training)
    loss, correct, count = sums.tolist()
    return loss / max(count, 1), correct / max(count, 1)


def prepare_model(config: dict[str, Any], data: DeviceData, *, device: torch.device) -> nn.Module:
    """Build the network for ``config`` on ``device``, seeded, with its whitening layer set from data."""
    torch.manual_seed(int(config["seed"]))
    model = build_model(config).to(device)
    if hasattr(model, "init_whitening"):
        model.init_whitening(augment.normalize(data.train_x[:WHITEN_SAMPLES]))
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def train(
    config: dict[str, Any],
    *,
    data: DeviceData,
    device: torch.device,
    report: Reporter,
    start: dict[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> None:
    """Train for ``config["epochs"]`` epochs from scratch or from the checkpoint state ``start``.

    Each epoch ends with ``report(metrics, checkpoint_state)`` on every rank.
    Raises ``Diverged`` when the loss stops being finite.
    """
    epochs, batch_size = int(config["epochs"]), int(config["batch_size"])
    n = len(data.train_y)
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} must divide evenly across {world_size} workers")
    steps_per_epoch = max(1, n // batch_size)  # drop the last partial batch: equal steps on every rank
    batch_size = min(batch_size, n)

    raw_model = prepare_model(config, data, device=device)
    model: nn.Module = raw_model
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = build_optimizer(raw_model, config)
    schedule = build_schedule(optimizer, total_steps=epochs * steps_per_epoch, warmup=float(config.get("warmup", 0.23)))
    first_epoch = 1
    if start is not None:
        raw_model.load_state_dict(start["model"])
        optimizer.load_state_dict(start["optimizer"])
        schedule.load_state_dict(start["schedule"])
        first_epoch = int(start["epoch"]) + 1

    translate, flip = int(config.get("translate", 2)), bool(config.get("flip", True))
    smoothing = float(config.get("label_smoothing", 0.0))
    local = slice(rank, None, world_size)
    generator = torch.Generator(device=device)
    for epoch in range(first_epoch, epochs + 1):
        t0 = time.perf_counter()
        # Same permutation and draws on every rank, seeded by epoch: a resumed trial
        # continues exactly where it stopped.
        generator.manual_seed(int(config["seed"]) * 100_003 + epoch)
        order = torch.randperm(n, device=device, generator=generator)
        model.train()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            d = augment.draw(len(idx), translate=translate, generator=generator, device=device)
            idx, d = idx[local], d.take(local)
            x = augment.apply(augment.normalize(data.train_x[idx]), d, translate=translate, flip=flip)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device):
                logits = model(x)
            # Summed loss (airbench); DDP averages gradients over ranks, so scale back up.
            loss = F.cross_entropy(logits.float(), data.train_y[idx], label_smoothing=smoothing, reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            (loss * world_size).backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach()
        train_loss = _all_sum(loss_sum, world_size).item() / (steps_per_epoch * batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss is {train_loss} at epoch {epoch}")
        val_loss, val_acc = evaluate(raw_model, data.val_x, data.val_y, rank=rank, world_size=world_size)
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": optimizer.param_groups[1]["lr"] * 1024 * (1 + 1 / (1 - float(config["momentum"]))),
            "epoch_time_s": time.perf_counter() - t0,
            "images_per_s": steps_per_epoch * batch_size / train_seconds,
        }

        def state(epoch: int = epoch) -> dict[str, Any]:
            return {
                "model": raw_model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "epoch": epoch,
                "config": dict(config),
            }

        report(metrics, state)
