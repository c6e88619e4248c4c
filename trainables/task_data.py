"""The data a task hands the service, and the helpers a task uses with it.

``TaskData`` is what ``Task.load`` returns; ``on_device`` keeps a dataset on the
GPU across the trials of one process; ``class_frame`` turns a classifier's
outputs into what its user reads. Users import them from ``trainables.task``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch


@dataclass(frozen=True)
class TaskData:
    """What ``Task.load`` returns."""

    trial: Any  # what every trial receives, through Ray's object store
    held_out: Any  # what the final test evaluation uses, kept on the driver
    description: str  # e.g. "45000 train / 5000 val / 10000 test"
    example: Any  # a few raw inputs (an array, a DataFrame): the registered model's signature and input example
    # The shape of the inputs the registered model accepts, -1 for any size (default: the example's, any batch).
    example_shape: tuple[int, ...] | None = None


# (dataset key, device) -> what a task uploaded there: one dataset per process, whichever task.
_ON_DEVICE: dict[tuple[str, str], Any] = {}


def on_device(key: str, device: torch.device, upload: Callable[[], Any]) -> Any:
    """The dataset ``key`` as ``upload()`` puts it on ``device``, uploaded once per process.

    Ray reuses a trial's process for the next trial, so a task that holds its data
    on the device pays the upload once per search, not once per trial. Another
    dataset (or device) replaces it: a process holds one at a time.
    """
    slot = (str(key), str(device))
    if slot not in _ON_DEVICE:
        _ON_DEVICE.clear()
        _ON_DEVICE[slot] = upload()
    return _ON_DEVICE[slot]


def class_frame(logits: torch.Tensor, classes: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """A classifier's predictions as a user reads them: ``label`` (the class name) and ``prob_<class>`` columns."""
    probs = torch.softmax(logits.detach().float(), dim=1).cpu().numpy()
    frame = pd.DataFrame({"label": [str(classes[i]) for i in probs.argmax(1)]})
    for i, name in enumerate(classes):
        frame[f"prob_{name}"] = probs[:, i]
    return frame
