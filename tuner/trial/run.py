"""The Ray side of a trial, written once for every task: settings, device, checkpoints, early ends.

``run_trial`` (called by ``tuner.trial.trainable``'s Tune function) loads the
space's task (``trainables.task``), fetches the task's data from Ray's object
store (put there once per search by ``tune.with_parameters``), picks the
device Ray assigned, continues from Tune's checkpoint when there is one, and
turns each ``context.report`` of the task into one ``tune.report``, with a
checkpoint when the checkpoint policy says so. A diverged trial or one out of
GPU memory ends quietly with its flag; DDP trials run through ``tuner.trial.ddp``.
Inside Tune functions only ``ray.tune.*`` is used (``ray.train.report`` raises
there).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import ray
import torch
from ray import tune

from search_spaces import drop_inactive
from trainables import checkpoint
from trainables.loading import load_task
from trainables.loop import format_metrics
from trainables.task import Diverged, TrialContext, is_out_of_memory, seed_everything
from tuner.config.resources import DEFAULT_START_TIMEOUT_S


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
    worker_start_timeout_s: float = DEFAULT_START_TIMEOUT_S  # DDP trials: how long workers may wait to be placed
    train_storage: str = ""  # DDP trials: where their Train runs write, under the search's folder
    checkpoint_epochs: tuple[int, ...] = ()  # always saved: the scheduler's rungs and the last epoch
    checkpoint_period_s: float = 0.0  # other epochs are saved once this long has passed (0: every epoch)
    metric: str = "val_acc"  # the space's: what the best checkpoints are kept by
    mode: str = "max"
    task: str = "cifar"  # the space's task: a built-in's name or package.module:attribute
    conditions: dict[str, dict[str, tuple]] | None = None  # conditional params: dropped where inactive

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


def early_end(error: BaseException, *, epoch: int, metric: str) -> dict[str, Any] | None:
    """What a trial reports when ``error`` ends it for good (no retry could help), else None.

    A non-finite loss is ``diverged``; running out of GPU memory makes the
    configuration ``infeasible`` (on its share of the GPU), while other trials go
    on. Either way the report has no score: its ``metric`` is NaN (``results.table.EARLY_END_FLAGS``).
    """
    if isinstance(error, Diverged):
        return {"epoch": error.epoch, "train_loss": error.loss, metric: math.nan, "diverged": 1}
    if is_out_of_memory(error):
        return {"epoch": epoch, metric: math.nan, "infeasible": 1}
    return None


def exploit_note(start: dict[str, Any] | None, *, config: dict[str, Any], trial_id: str) -> dict[str, Any]:
    """What a trial adds to its first report when it starts from another trial's checkpoint (PBT's exploit).

    ``exploited_from`` (that trial's id), ``exploit_epoch`` (the epoch its
    checkpoint ended) and ``exploit``, the values that changed as JSON
    (``{"lr": [old, new]}``); nothing for a fresh start, a retry or a resume.
    """
    if not start or not start.get("trial_id") or start["trial_id"] == trial_id:
        return {}
    before = start.get("config", {})
    changes = {k: [before.get(k), v] for k, v in config.items() if before.get(k) != v}
    return {"exploited_from": str(start["trial_id"]), "exploit_epoch": int(start["epoch"]),
            "exploit": json.dumps(changes, sort_keys=True)}  # fmt: skip


def run_trial(config: dict[str, Any], *, data: Any, settings: TrialSettings) -> None:
    """Train one single-process trial of ``settings.task``, reporting every epoch, checkpointing as the policy says.

    ``data`` is what the task's ``load`` returned for trials.
    """
    task = load_task(settings.task)
    config = drop_inactive(config, settings.conditions or {})  # inactive parameters never reach the task
    device = trial_device()
    prepare_device(device, settings)
    print(f"trial {tune.get_context().get_trial_id()} on {device}: {config}", flush=True)
    start = checkpoint.load_restored(tune.get_checkpoint(), map_location=device)
    trial_id = tune.get_context().get_trial_id()

    last_epoch = [int(start["epoch"]) if start else 0]
    policy = settings.checkpoint_policy()

    node = ray.get_runtime_context().get_node_id()
    note = [exploit_note(start, config=config, trial_id=trial_id)]  # said once, in the first report

    def report(metrics: dict[str, Any], state) -> None:
        # One line per epoch in the trial's own stdout file.
        print(format_metrics(metrics), flush=True)
        # Where and when it ran, in its progress.csv: for clusters, and for the search's time to target.
        metrics = {**metrics, **note[0], "node_id": node, "reported_at": time.time()}
        note[0] = {}
        last_epoch[0] = metrics["epoch"]
        # A new best for the trial is always saved: the search registers the first trial's best epoch.
        if state is None or not policy.due(metrics["epoch"], score=metrics.get(settings.metric), mode=settings.mode):
            tune.report(metrics)
            return
        with checkpoint.saved(state(), epoch=metrics["epoch"], config=config, trial_id=trial_id) as folder:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    context = TrialContext(device=device, reporter=report, start=start, compile=settings.compile)
    seed_everything(int(config.get("seed", 0)))
    try:
        task.train(config, data, context)
    except Exception as e:
        ended = early_end(e, epoch=last_epoch[0] + 1, metric=settings.metric)
        if ended is None:
            raise
        # Not errors to retry or to flood the logs with: the trial ends, and says why.
        print(f"ended early: {type(e).__name__}: {e}", flush=True)
        del e  # its traceback holds the failed step's tensors
        if device.type == "cuda":
            torch.cuda.empty_cache()  # a reused actor's next trial starts with its whole share
        tune.report(ended)
