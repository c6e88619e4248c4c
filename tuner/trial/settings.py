"""What every trial receives beside its hyperparameters: ``TrialSettings``, and ``DataRef`` for DDP trials' data."""

from __future__ import annotations

from dataclasses import dataclass

import ray

from trainables import checkpoint
from tuner.config.resources import DEFAULT_START_TIMEOUT_S


@dataclass(frozen=True)
class TrialSettings:
    """Infrastructure every trial receives beside its hyperparameters."""

    tracking_uri: str  # absolute, so a trial's chdir cannot change where MLflow writes
    workers: int = 1  # > 1: a DDP trial on Ray Train workers
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # below 1: a share of one GPU; its memory is capped to it (trainables.device)
    compile: bool = False
    keep_checkpoints: int = 2  # DDP trials: Train keeps this many (Tune keeps them otherwise)
    max_failures: int = 2  # DDP trials: restarts of the worker group after a worker dies
    worker_start_timeout_s: float = DEFAULT_START_TIMEOUT_S  # DDP trials: how long workers may wait to be placed
    train_storage: str = ""  # DDP trials: where their Train runs write, under the search's folder
    checkpoint_epochs: tuple[int, ...] = ()  # always saved: the scheduler's rungs and the last epoch
    answer_epochs: tuple[int, ...] = ()  # the scheduler may decide there: the trial waits for the driver's answer
    judged_epochs: tuple[int, ...] | None = None  # whose score the scheduler reads or ranks by; None: every epoch
    checkpoint_period_s: float = 0.0  # other epochs are saved once this long has passed (0: every epoch)
    metric: str = "val_acc"  # the space's: what the best checkpoints are kept by
    mode: str = "max"
    objectives: tuple[str, ...] = ()  # a trade-off's further metrics: NaN too in the report that ends a trial early
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
