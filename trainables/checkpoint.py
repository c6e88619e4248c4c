"""Checkpoint files: one ``checkpoint.pt`` per checkpoint folder. Never imports Ray.

Files hold only tensors and plain Python values and are read with
``torch.load(weights_only=True)``, so loading a checkpoint cannot run code.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

FILENAME = "checkpoint.pt"


def save(state: dict[str, Any], folder: str | Path) -> Path:
    """Write ``state`` (model, optimizer, schedule, epoch, config) into ``folder``."""
    path = Path(folder) / FILENAME
    torch.save(state, path)
    return path


def load(folder: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read the state saved by ``save`` from ``folder``."""
    path = Path(folder) / FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"no {FILENAME} in {folder}: is it a checkpoint folder of this project?")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_restored(restored: Any, *, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The state in a checkpoint Ray hands back on retry or resume (``tune``'s or ``ray.train``'s), or None."""
    if restored is None:
        return None
    with restored.as_directory() as folder:
        return load(folder, map_location=map_location)


@contextmanager
def saved(state: dict[str, Any], *, epoch: int, config: dict[str, Any], trial_id: str = "") -> Iterator[str]:
    """A temporary checkpoint folder holding ``state`` with the ``epoch`` it ends, the trial's ``config`` and id.

    What a trial hands to Ray (which copies it into the search's storage); the
    folder is removed when the ``with`` block ends.
    """
    with tempfile.TemporaryDirectory() as folder:
        save({**state, "epoch": epoch, "config": dict(config), "trial_id": trial_id}, folder)
        yield folder


def load_model(
    folder: str | Path, *, task: str = "cifar", device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network, rebuilt by its ``task`` in eval mode, and the trial config it was trained with."""
    from trainables.task import load_task

    state = load(folder, map_location=device)
    return load_task(task).build_model(state).to(device).eval(), state["config"]


class CheckpointPolicy:
    """Which epochs a trial saves: ASHA's rungs and the last epoch always, others once ``period_s`` has passed.

    The scheduler only reads checkpoints where it decides (its rungs) and where a
    trial ends, so on a GPU, where an epoch takes a fraction of a second, saving
    every epoch mostly costs time. ``period_s`` bounds what a killed trial can
    lose (it resumes from its last checkpoint); 0 saves every epoch.
    """

    def __init__(self, *, epochs: tuple[int, ...] = (), period_s: float = 0.0) -> None:
        self.epochs, self.period_s = frozenset(epochs), period_s
        self._last = time.monotonic()

    def due(self, epoch: int) -> bool:
        """True when ``epoch`` should be saved; the clock restarts at every saved epoch."""
        now = time.monotonic()
        if epoch in self.epochs or now - self._last >= self.period_s:
            self._last = now
            return True
        return False
