"""The Tune function trainable. With ``trainables.distributed`` (DDP trials), the only Ray code in ``trainables``.

It fetches the dataset from Ray's object store (put there once per search by
``tune.with_parameters``), keeps it on the trial's device across reused
actors, resumes from Tune's checkpoint when there is one, and turns each epoch
of ``loop.train`` into one ``tune.report`` with a checkpoint. Inside Tune
functions only ``ray.tune.*`` is used (``ray.train.report`` raises there).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from trainables import checkpoint
from trainables.loop import DeviceData, early_end, format_metrics, train

# (dataset key, device) -> tensors: a reused actor keeps its data on the device.
_DEVICE_DATA: dict[tuple[str, str], DeviceData] = {}


@dataclass(frozen=True)
class TrialSettings:
    """Infrastructure every trial receives beside its hyperparameters."""

    tracking_uri: str  # absolute, so a trial's chdir cannot change where MLflow writes
    workers: int = 1  # > 1: a DDP trial on Ray Train workers
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # below 1: a share of one GPU, and its memory is capped to it
    compile: bool = False
    keep_checkpoints: int = 2  # DDP trials: Train keeps this many (Tune keeps them otherwise)
    max_failures: int = 2  # DDP trials: restarts of the worker group after a worker dies
    train_storage: str = ""  # DDP trials: where their Train runs write, under the search's folder
    checkpoint_epochs: tuple[int, ...] = ()  # always saved: the scheduler's rungs and the last epoch
    checkpoint_period_s: float = 0.0  # other epochs are saved once this long has passed (0: every epoch)
    metric: str = "val_acc"  # the space's: what the best checkpoints are kept by
    mode: str = "max"

    def checkpoint_policy(self) -> checkpoint.CheckpointPolicy:
        return checkpoint.CheckpointPolicy(epochs=self.checkpoint_epochs, period_s=self.checkpoint_period_s)


@dataclass(frozen=True)
class DataRef:
    """The dataset as one object in Ray's store, put there once per search by the driver.

    DDP trials receive this instead of the arrays: their coordinator never
    fetches the data, and the workers read the one copy instead of a new one
    put by every trial.
    """

    ref: ray.ObjectRef


def prepare_device(device: torch.device, settings: TrialSettings) -> None:
    """Threads for the CPUs this process was given; on a shared GPU, a cap on its memory."""
    torch.set_num_threads(max(1, int(settings.cpus_per_worker)))
    if device.type == "cuda" and 0 < settings.gpus_per_worker < 1:
        # Ray's GPU shares are only bookkeeping: cap real memory, so that a trial that
        # runs out of it fails alone instead of taking its neighbours down.
        torch.cuda.set_per_process_memory_fraction(settings.gpus_per_worker, device)


def trial_device() -> torch.device:
    """The GPU Ray assigned to this process (it narrows CUDA_VISIBLE_DEVICES to it), else the CPU.

    Ray's assignment decides, not whether CUDA is available: a trial given no
    GPU still sees every GPU of the machine (Ray leaves CUDA_VISIBLE_DEVICES
    alone when it assigns none), and must not train on them unaccounted.
    """
    return device_for(ray.get_gpu_ids())


def device_for(gpu_ids: list) -> torch.device:
    """``cuda:0`` (the first GPU Ray made visible) when ``gpu_ids`` names any and CUDA works, else the CPU."""
    return torch.device("cuda", 0) if gpu_ids and torch.cuda.is_available() else torch.device("cpu")


def device_data(data: dict[str, Any], device: torch.device) -> DeviceData:
    key = (str(data["key"]), str(device))
    if key not in _DEVICE_DATA:
        _DEVICE_DATA.clear()  # one dataset at a time per process
        _DEVICE_DATA[key] = DeviceData.from_arrays(data, device=device)
    return _DEVICE_DATA[key]


def train_cifar(config: dict[str, Any], *, data: dict[str, np.ndarray] | Any, settings: TrialSettings) -> None:
    """Train one trial, reporting ``val_acc`` every epoch and a checkpoint when its policy says so.

    ``data`` holds the arrays, or for DDP trials a ``distributed.DataRef`` to them.
    """
    os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    if settings.workers > 1:
        from trainables.distributed import run_ddp_trial

        run_ddp_trial(config, data=data, settings=settings)
        return
    device = trial_device()
    prepare_device(device, settings)
    print(f"trial {tune.get_context().get_trial_id()} on {device}: {config}", flush=True)
    start = checkpoint.load_restored(tune.get_checkpoint(), map_location=device)

    last_epoch = [int(start["epoch"]) if start else 0]
    policy = settings.checkpoint_policy()

    def report(metrics: dict[str, Any], state) -> None:
        # One line per epoch in the trial's own stdout file.
        print(format_metrics(metrics), flush=True)
        last_epoch[0] = metrics["epoch"]
        if not policy.due(metrics["epoch"]):
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            checkpoint.save(state(), folder)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        train(
            config, data=device_data(data, device), device=device, report=report, start=start, compile=settings.compile
        )
    except Exception as e:
        ended = early_end(e, epoch=last_epoch[0] + 1)
        if ended is None:
            raise
        ended.setdefault(settings.metric, float("nan"))  # no score: Tune still wants the metric in every report
        # Not errors to retry or to flood the logs with: the trial ends, and says why.
        print(f"ended early: {type(e).__name__}: {e}", flush=True)
        del e  # its traceback holds the failed step's tensors
        if device.type == "cuda":
            torch.cuda.empty_cache()  # a reused actor's next trial starts with its whole share
        tune.report(ended)
