"""Checkpoint files: one ``checkpoint.pt`` per checkpoint folder. Never imports Ray.

Files hold only tensors and plain Python values and are read with
``torch.load(weights_only=True)``, so loading a checkpoint cannot run code.
"""

from __future__ import annotations

import math
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


def load_model(folder: str | Path, *, task: str = "cifar", device: str | torch.device = "cpu") -> nn.Module:
    """The trained network of a checkpoint folder, rebuilt by its ``task`` in eval mode on ``device``.

    The trial config it was trained with is ``load(folder)["config"]``.
    """
    from trainables.loading import load_task

    state = load(folder, map_location=device)
    return load_task(task).build_model(state).to(device).eval()


class CheckpointPolicy:
    """Which epochs a trial saves: new bests, ASHA's rungs and the last epoch always, others after ``period_s``.

    The scheduler only reads checkpoints where it decides (its rungs) and where a
    trial ends, so on a GPU, where an epoch takes a fraction of a second, saving
    every epoch mostly costs time. An epoch that beats the trial's best score so
    far is saved too, so that the trial ranked first has the checkpoint of the
    epoch it ranks by (``tuner.driver.summary.best_trial`` registers it). ``period_s``
    bounds what a killed trial can lose (it resumes from its last checkpoint);
    0 saves every epoch.
    """

    def __init__(self, *, epochs: tuple[int, ...] = (), period_s: float = 0.0) -> None:
        self.epochs, self.period_s = frozenset(epochs), period_s
        self._last = time.monotonic()
        self._best: float | None = None  # the best score this trial has reported (since it last started)

    def due(self, epoch: int, *, score: float | None = None, mode: str = "max") -> bool:
        """True when ``epoch`` should be saved; the clock restarts at every saved epoch.

        ``score`` is the epoch's value of the search's metric, and ``mode`` whether
        higher (max) or lower (min) is better; a score better than every earlier
        one is a new best, and saved. None or NaN is never a new best.
        """
        if mode not in ("max", "min"):
            raise ValueError(f"mode is {mode!r}, but must be 'max' or 'min'")
        now = time.monotonic()
        score = None if score is None else float(score)
        new_best = (
            score is not None
            and not math.isnan(score)
            and (self._best is None or (score > self._best if mode == "max" else score < self._best))
        )
        if new_best:
            self._best = score
        if new_best or epoch in self.epochs or now - self._last >= self.period_s:
            self._last = now
            return True
        return False
