"""What a trial's ``train`` is given beside its config and data: ``TrialContext``.

It reports each epoch to the service (which decides when to checkpoint),
restores the last checkpoint, and gives a task the little it needs to train
the same on one process or many (DDP, a rank's shard, a mean over the ranks).
Users import it from ``trainables.task``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from search_spaces.exceptions import TaskError

# report(metrics, state): state() builds the dict a checkpoint saves.
Reporter = Callable[[dict[str, Any], Callable[[], dict[str, Any]]], None]


@dataclass(frozen=True)
class TrialContext:
    """What ``Task.train`` is given beside the config and the data."""

    device: torch.device  # the GPU Ray assigned to this process, else the CPU
    reporter: Reporter  # the service's end of ``report``
    start: dict[str, Any] | None = None  # the last checkpoint's state, when the trial continues
    rank: int = 0
    world_size: int = 1
    compile: bool = False  # --compile: torch.compile the network
    # The epochs whose score the scheduler reads (its rungs) or ranks by (the last); None: every epoch. A task
    # may score other epochs more cheaply (the cifar task: without test-time augmentation), as long as it reports
    # NaN under the metric there: a cheaper score under it would be judged and ranked beside exact ones.
    judged_epochs: frozenset[int] | None = None

    def report(self, metrics: dict[str, Any], state: Callable[[], dict[str, Any]] | None = None, *,
               model: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None) -> None:  # fmt: skip
        """Once per epoch, on every rank: ``metrics`` holds ``epoch`` and the space's metric.

        What a checkpoint saves, when the service decides to save one: ``state()``,
        or the ``model``'s (and ``optimizer``'s) state dicts, which ``restore``
        puts back. With neither, the trial saves no checkpoint: a retried or
        resumed trial starts over, and no model is registered from it.
        """
        if state is None and model is not None:
            state = functools.partial(_module_state, model, optimizer)
        self.reporter(metrics, state)

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
        """Put the last checkpoint (saved by ``report(model=..., optimizer=...)``) back; the first epoch to train.

        1 on a fresh start. Under ``--scheduler pbt`` the checkpoint may be another
        trial's and ``config`` may change a mutable value such as the learning rate:
        set it on the optimizer after ``restore``.
        """
        if not self.start:
            return 1
        if "model" not in self.start:
            raise TaskError("the checkpoint holds no 'model': restore() reads what report(model=...) saved")
        _bare(model).load_state_dict(self.start["model"])
        if optimizer is not None and "optimizer" in self.start:
            optimizer.load_state_dict(self.start["optimizer"])
        return int(self.start["epoch"]) + 1

    # Data parallelism without Ray: what a task uses to train the same on one process or many
    # (declare it with ``supports_ddp = True``). Every rank runs ``train`` with the same seed.

    def distributed(self, model: nn.Module) -> nn.Module:
        """``model`` as the trial trains it: wrapped in DDP at world size > 1 (gradients averaged over the
        ranks after each backward), else itself. Save and restore go through the wrapper by themselves."""
        if self.world_size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def shard(self, items: Any) -> Any:
        """This rank's part of ``items`` (a tensor, an array, a list): every ``world_size``-th item from ``rank``.

        Give it a global batch's indices, drawn the same on every rank (seeded): the
        ranks then train on the batch one process would, each on its part. Batches
        whose size the world size divides keep the parts equal, and DDP's average of
        the ranks' mean losses equal to the batch's mean loss.
        """
        return items[self.rank :: self.world_size]

    def mean(self, value: float | torch.Tensor) -> float:
        """``value`` averaged over the ranks (itself at world size 1): a metric each rank computed on its part."""
        if self.world_size == 1:
            return float(value)
        import torch.distributed as dist

        where = self.device if self.device.type == "cuda" else torch.device("cpu")  # NCCL reduces on the GPU
        total = torch.as_tensor(value, dtype=torch.float64).detach().to(where).reshape(())
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.item() / self.world_size


def _bare(model: nn.Module) -> nn.Module:
    """The module itself, under DDP's and torch.compile's wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _module_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    state: dict[str, Any] = {"model": _bare(model).state_dict()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    return state
