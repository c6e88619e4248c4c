"""The training loop, written once for one process or many. Never imports Ray.

World size 1 is a plain loop; world size N > 1 wraps the model in DDP (the
process group must already be initialised), gives each rank a strided slice
of every global batch of a shared per-epoch permutation (what
``DistributedSampler`` does), and averages metrics across ranks. Every rank
calls ``report`` each epoch; the caller decides that only rank 0 writes
checkpoints and talks to the scheduler (nanoGPT's ``master_process``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from trainables import augment
from trainables.context import Reporter
from trainables.footprint import footprint
from trainables.models import build_model
from trainables.optim import OTHER, Lookahead, build_optimizer, build_schedule, kilostep_scale, retune
from trainables.task import Diverged

WHITEN_SAMPLES = 5000
EVAL_BATCH = 1000
# Every value the recipe reads, all from the trial's config: the cifar space's parameters
# and constants, and ``epochs`` and ``seed`` from the search. No defaults live in this code.
RECIPE_KEYS = ("arch", "width", "lr", "momentum", "weight_decay", "batch_size", "label_smoothing", "flip",
               "lookahead", "tta", "warmup", "translate", "whiten_bias_epochs", "epochs", "seed")  # fmt: skip


def check_recipe(config: dict[str, Any]) -> None:
    missing = [k for k in RECIPE_KEYS if k not in config]
    if missing:
        raise ValueError(
            f"the config lacks {', '.join(missing)}: the cifar recipe takes every value from its space "
            f"(search_spaces/cifar.yaml, params and constants)"
        )


def format_metrics(metrics: dict[str, Any]) -> str:
    """One log line: ``epoch=3 val_acc=0.912 ...``."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


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


def autocast(device: torch.device):
    # bf16 on GPU (no loss scaling needed); full precision on CPU, where bf16 is slower.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _all_sum(t: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _tta_logits(model: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
    """Logits averaged over flips (level 1) and one-pixel shifts (level 2), as airbench evaluates."""

    # Each view's logits in float32 before they are combined: sums of bf16 logits lose digits.
    def view(images: torch.Tensor) -> torch.Tensor:
        return model(images).float()

    if level == 0:
        return view(x)
    logits = 0.5 * (view(x) + view(x.flip(3)))
    if level == 1:
        return logits
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")  # (B, C, H+2, W+2)
    h, w = x.shape[2:]
    shifted = [padded[:, :, :h, :w], padded[:, :, 2:, 2:]]
    return 0.5 * logits + 0.25 * sum(0.5 * (view(s) + view(s.flip(3))) for s in shifted)


def batch_logits(model: nn.Module, images: torch.Tensor, *, tta: int) -> torch.Tensor:
    """float32 logits (B, classes) of uint8 ``images`` (B, 3, H, W): normalised, then averaged over TTA views."""
    x = augment.normalize(images)
    if images.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(images.device):
        return _tta_logits(model, x, tta)


@torch.no_grad()
def logits(model: nn.Module, images: torch.Tensor, *, tta: int) -> torch.Tensor:
    """The logits ``evaluate`` scores, for uint8 ``images`` (N, 3, H, W), in batches of ``EVAL_BATCH``."""
    model.eval()
    parts = [batch_logits(model, images[i : i + EVAL_BATCH], tta=tta) for i in range(0, len(images), EVAL_BATCH)]
    return torch.cat(parts) if parts else torch.zeros(0, 0)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    tta: int = 0,
    rank: int = 0,
    world_size: int = 1,
    confusion: torch.Tensor | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over uint8 ``images`` (sharded across ranks).

    ``confusion``, a (classes, classes) int64 tensor on the images' device, gathers
    [true, predicted] counts when given (single process).
    """
    device = images.device
    was_training = model.training
    model.eval()
    x_all, y_all = images[rank::world_size], labels[rank::world_size]
    sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss sum, correct, count
    for i in range(0, len(y_all), EVAL_BATCH):
        logits = batch_logits(model, x_all[i : i + EVAL_BATCH], tta=tta)
        y = y_all[i : i + EVAL_BATCH]
        sums[0] += F.cross_entropy(logits, y, reduction="sum")
        predicted = logits.argmax(1)
        sums[1] += (predicted == y).sum()
        if confusion is not None:
            confusion.index_put_((y, predicted), torch.ones_like(y), accumulate=True)
        sums[2] += len(y)
    _all_sum(sums, world_size)
    model.train(was_training)
    loss, correct, count = sums.tolist()
    return loss / max(count, 1), correct / max(count, 1)


def epoch_scores(val_loss: float, val_acc: float, *, exact: bool) -> dict[str, float]:
    """An epoch's validation scores as reported: under ``val_loss``/``val_acc`` when ``exact``, else apart.

    At an epoch no scheduler judges, the loop evaluates without test-time
    augmentation (one forward pass per image instead of six at level 2: most of the evaluation saved)
    and reports that cheaper score as ``val_loss_tta0``/``val_acc_tta0``, with NaN
    under the scores themselves: NaN is no score to every reader of a metric
    (the checkpoint policy's best, the ranking, the kept checkpoints, the progress
    table's best), so trials are ranked, judged and registered on exactly the
    scores they were before, never on a cheaper one.
    """
    if exact:
        return {"val_loss": val_loss, "val_acc": val_acc}
    return {"val_loss": math.nan, "val_acc": math.nan, "val_loss_tta0": val_loss, "val_acc_tta0": val_acc}


def prepare_model(config: dict[str, Any], data: DeviceData, *, device: torch.device) -> nn.Module:
    """Build the network for ``config`` on ``device``, seeded, with its whitening layer set from data."""
    torch.manual_seed(int(config["seed"]))
    model = build_model(config).to(device)
    if hasattr(model, "init_whitening"):
        model.init_whitening(augment.normalize(data.train_x[:WHITEN_SAMPLES]))
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


@dataclass
class _Run:
    """What one trial's epochs share."""

    config: dict[str, Any]
    data: DeviceData
    device: torch.device
    model: nn.Module  # what the steps call: DDP-wrapped and/or compiled
    raw_model: nn.Module  # what is evaluated and saved
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    lookahead: Lookahead | None
    flips: str  # one of augment.FLIPS
    flip_base: torch.Tensor | None  # per-image flips of odd epochs, for alternating flips
    batch_size: int
    steps_per_epoch: int
    rank: int
    world_size: int

    def step(self, idx: torch.Tensor, d: augment.AugmentDraw) -> torch.Tensor:
        """One optimizer step on this rank's images ``idx``; returns the summed loss."""
        c = self.config
        x = augment.normalize(self.data.train_x[idx])
        x = augment.apply(x, d, translate=int(c["translate"]), flip=self.flips != "none")
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device):
            logits = self.model(x)
        # Summed loss (airbench); DDP averages gradients over ranks, so scale back up.
        smoothing = float(c["label_smoothing"])
        loss = F.cross_entropy(logits.float(), self.data.train_y[idx], label_smoothing=smoothing, reduction="sum")
        self.optimizer.zero_grad(set_to_none=True)
        (loss * self.world_size).backward()
        self.optimizer.step()
        self.schedule.step()
        if self.lookahead is not None:
            self.lookahead.step(self.schedule.last_epoch)
        return loss.detach()

    def epoch(self, epoch: int, generator: torch.Generator) -> float:
        """Train one epoch; returns the mean training loss over all ranks."""
        n, b = len(self.data.train_y), self.batch_size
        # The same permutation and draws on every rank, seeded by epoch: a resumed
        # trial continues exactly where it stopped.
        generator.manual_seed(int(self.config["seed"]) * 100_003 + epoch)
        order = torch.randperm(n, device=self.device, generator=generator)
        local = slice(self.rank, None, self.world_size)
        translate = int(self.config["translate"])
        self.model.train()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        for step in range(self.steps_per_epoch):
            idx = order[step * b : (step + 1) * b]
            d = augment.draw(len(idx), translate=translate, generator=generator, device=self.device)
            if self.flip_base is not None:
                d = d.with_flips(augment.alternating_flips(self.flip_base, idx, epoch=epoch))
            loss_sum += self.step(idx[local], d.take(local))
        return _all_sum(loss_sum, self.world_size).item() / (self.steps_per_epoch * b)

    def warm_up(self, generator: torch.Generator) -> float:
        """Compile the step on a throwaway update, then restore the state; returns the seconds it took."""
        t0 = time.perf_counter()
        saved = copy.deepcopy(self._states())
        idx = torch.arange(self.rank, self.batch_size, self.world_size, device=self.device)
        translate = int(self.config["translate"])
        d = augment.draw(self.batch_size, translate=translate, generator=generator, device=self.device)
        self.step(idx, d.take(slice(self.rank, None, self.world_size)))
        _sync(self.device)
        self.load(saved)
        return time.perf_counter() - t0

    def _states(self) -> dict[str, Any]:
        states = {
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
        }
        if self.lookahead is not None:
            states["lookahead"] = self.lookahead.state_dict()
        return states

    def load(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's (or a saved) state, with this run's hyperparameters (PBT may change them)."""
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        retune(self.optimizer, self.schedule, self.config)
        if self.lookahead is not None:
            self.lookahead.load_state_dict(state["lookahead"])

    def state(self, epoch: int) -> dict[str, Any]:
        return {**self._states(), "epoch": epoch, "config": dict(self.config)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup(
    config: dict[str, Any], data: DeviceData, *, device: torch.device, rank: int, world_size: int, compile: bool
) -> _Run:
    check_recipe(config)
    batch_size = int(config["batch_size"])
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} must divide evenly across {world_size} workers")
    n = len(data.train_y)
    raw_model = prepare_model(config, data, device=device)
    model: nn.Module = raw_model
    if world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        # No buffer broadcast at every forward: BatchNorm trains on batch statistics, and
        # rank 0's running statistics are broadcast once per epoch, before evaluation.
        model = nn.parallel.DistributedDataParallel(raw_model, device_ids=ids, broadcast_buffers=False)
    if compile:
        model = torch.compile(model)
    optimizer = build_optimizer(raw_model, config)
    steps = max(1, n // batch_size)  # drop the last partial batch: equal steps on every rank
    total_steps = int(config["epochs"]) * steps
    whiten_epochs = config["whiten_bias_epochs"]  # None: never frozen
    schedule = build_schedule(
        optimizer,
        total_steps=total_steps,
        warmup=float(config["warmup"]),
        freeze_whiten_after=None if whiten_epochs is None else int(whiten_epochs) * steps,
    )
    lookahead = Lookahead(raw_model, total_steps=total_steps) if config["lookahead"] else None
    flips, flip_base = augment.flip_mode(config["flip"]), None
    if flips == "alternate":
        # The same draw on every rank (seeded), so N processes flip as one does.
        generator = torch.Generator(device=device).manual_seed(int(config["seed"]) * 100_003 + 99)
        flip_base = torch.rand(n, device=device, generator=generator) < 0.5
    return _Run(config, data, device, model, raw_model, optimizer, schedule, lookahead, flips, flip_base,
                min(batch_size, n), steps, rank, world_size)  # fmt: skip


def train(
    config: dict[str, Any],
    *,
    data: DeviceData,
    device: torch.device,
    report: Reporter,
    start: dict[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    compile: bool = False,
    judged_epochs: Collection[int] | None = None,
) -> nn.Module:
    """Train for ``config["epochs"]`` epochs from scratch or from the checkpoint state ``start``.

    Each epoch ends with ``report(metrics, checkpoint_state)`` on every rank.
    ``judged_epochs`` are the epochs whose score the scheduler reads (its rungs;
    ``TrialContext.judged_epochs``), None for every epoch: those and the last are
    evaluated with the config's test-time augmentation (``epoch_scores``).
    With ``compile``, the training step goes through ``torch.compile``; the
    compilation is done up front and reported as ``compile_time_s``, apart from
    the epochs' times. Returns the trained network (unwrapped). Raises
    ``Diverged`` when the loss stops being finite.
    """
    run = _setup(config, data, device=device, rank=rank, world_size=world_size, compile=compile)
    generator = torch.Generator(device=device)
    compile_time = run.warm_up(generator) if compile else 0.0
    first_epoch = 1
    if start is not None:
        run.load(start)
        first_epoch = int(start["epoch"]) + 1
    momentum = float(config["momentum"])
    # What the model costs to keep and to answer one image with (its test-time augmentation): every epoch's report.
    size = footprint(run.raw_model, lambda: logits(run.raw_model, data.val_x[:1], tta=int(config["tta"])),
                     device=device)  # fmt: skip
    for epoch in range(first_epoch, int(config["epochs"]) + 1):
        t0 = time.perf_counter()
        train_loss = run.epoch(epoch, generator)
        _sync(device)
        train_seconds = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise Diverged(epoch=epoch, loss=train_loss)
        if world_size > 1:
            # Each rank's last step moved its own BatchNorm statistics: evaluate (and
            # checkpoint) rank 0's on every rank, so the reported score is the checkpoint's.
            for buffer in run.raw_model.buffers():
                dist.broadcast(buffer, src=0)
        judged = judged_epochs is None or epoch in judged_epochs or epoch == int(config["epochs"])
        tta = int(config["tta"]) if judged else 0
        scores = evaluate(run.raw_model, data.val_x, data.val_y, tta=tta, rank=rank, world_size=world_size)
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            **epoch_scores(*scores, exact=judged or int(config["tta"]) == 0),
            "lr": run.optimizer.param_groups[OTHER]["lr"] * kilostep_scale(momentum),
            "epoch_time_s": time.perf_counter() - t0,
            "train_time_s": train_seconds,
            "images_per_s": run.steps_per_epoch * run.batch_size / train_seconds,
            "compile_time_s": compile_time,
            **size,
        }
        report(metrics, lambda epoch=epoch: run.state(epoch))
    return run.raw_model
