"""The ``cifar`` task: CIFAR-10 with the airbench-class network and the device-resident loop. Never imports Ray.

Implements ``trainables.task.Task``: the data is read and split once per search
(``trainables.data``), every trial holds it as uint8 tensors on its device
(kept across trials when Ray reuses the process), and ``trainables.loop``
trains, on one process or many.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from trainables import data as cifar_data
from trainables.loop import RECIPE_KEYS, DeviceData, evaluate, logits, train
from trainables.models import build_model
from trainables.task import TaskData, TaskError, TrialContext, class_frame, on_device


class CifarTask:
    """CIFAR-10 classification; reports ``val_acc``, ``val_loss``, ``train_loss`` and speed every epoch."""

    supports_ddp = True  # trainables.loop shards every global batch over the ranks

    def load(self, *, data_dir: str, smoke: dict[str, int] | None, constants: dict[str, Any]) -> TaskData:
        """Read, validate and split CIFAR-10 (downloaded when absent); a slice of it for the smoke test."""
        try:
            arrays = cifar_data.load(Path(data_dir))
        except cifar_data.DataError as e:
            raise TaskError(str(e)) from None
        splits = cifar_data.split(*arrays, **(smoke or {}))
        digest = hashlib.sha1(splits.train_y.tobytes() + splits.val_y.tobytes() + splits.train_x[:64].tobytes())
        trial = {k: getattr(splits, k) for k in ("train_x", "train_y", "val_x", "val_y")}
        trial["key"] = f"{digest.hexdigest()}-{len(splits.train_y)}-{len(splits.val_y)}"
        example = to_hwc(splits.test_x[:2])  # raw test images, as a user holds them
        return TaskData(trial, (splits.test_x, splits.test_y), splits.sizes(), example)

    def metrics(self, constants: dict[str, Any]) -> dict[str, str]:
        return {"val_acc": "max", "val_loss": "min", "train_loss": "min", "images_per_s": "max",
                "epoch_time_s": "min", "params": "min", "latency_ms": "min"}  # fmt: skip

    def config_keys(self, constants: dict[str, Any]) -> tuple[str, ...]:
        return RECIPE_KEYS

    def train(self, config: dict[str, Any], data: dict[str, Any], context: TrialContext) -> None:
        train(
            config,
            data=on_device(data["key"], context.device, lambda: DeviceData.from_arrays(data, device=context.device)),
            device=context.device,
            report=context.report,
            start=context.start,
            rank=context.rank,
            world_size=context.world_size,
            compile=context.compile,
            judged_epochs=context.judged_epochs,
        )

    def evaluate(self, state: dict[str, Any], held_out: Any, *, device: torch.device) -> dict[str, Any]:
        """Test accuracy, loss and confusion matrix of the checkpoint, with the test-time augmentation it used."""
        model = self.build_model(state).to(device)
        x, y = (torch.from_numpy(np.asarray(a)).to(device) for a in held_out)
        counts = torch.zeros(len(cifar_data.CLASSES), len(cifar_data.CLASSES), dtype=torch.int64, device=device)
        loss, acc = evaluate(model, x, y, tta=int(state["config"]["tta"]), confusion=counts)
        return {"test_acc": acc, "test_loss": loss, "confusion_matrix": counts.tolist(),
                "classes": list(cifar_data.CLASSES)}  # fmt: skip

    def predict(self, model: nn.Module, state: dict[str, Any], inputs: Any) -> pd.DataFrame:
        """Class names and probabilities for uint8 images (N, 32, 32, 3), as CIFAR-10's arrays hold them.

        The network's normalisation and the test-time augmentation the search
        scored it with are applied here, so the scores match the search's test
        accuracy.
        """
        images = np.asarray(inputs)
        if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
            raise ValueError(f"inputs are {images.shape}, but must be images (N, 32, 32, 3), 0-255 pixels in HWC order")
        x = torch.from_numpy(np.ascontiguousarray(images.astype(np.uint8).transpose(0, 3, 1, 2)))
        device = next(model.parameters()).device
        return class_frame(logits(model, x.to(device), tta=int(state["config"]["tta"])), cifar_data.CLASSES)

    def build_model(self, state: dict[str, Any]) -> nn.Module:
        model = build_model(state["config"])
        model.load_state_dict(state["model"])
        return model.eval()


def to_hwc(images: np.ndarray) -> np.ndarray:
    """(N, 3, 32, 32) -> (N, 32, 32, 3): the layout of torchvision's ``CIFAR10.data`` and of decoded image files."""
    return np.ascontiguousarray(np.asarray(images).transpose(0, 2, 3, 1))


TASK = CifarTask()
