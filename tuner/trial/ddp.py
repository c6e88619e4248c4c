"""DDP trials: a Tune trial that runs its task's ``train`` on N Ray Train workers.

The Tune function (``tuner.trial.trainable``) builds a ``TorchTrainer`` and waits for
it; each worker runs ``tuner.trial.process.run_process``, as a single-process trial
does, with world size N (gloo on CPU, NCCL on GPU). Every rank calls
``ray.train.report`` each epoch (it is a barrier); rank 0 passes the checkpoint.
Ray's ``TuneReportCallback`` forwards rank 0's metrics and checkpoint path to Tune,
so ASHA sees every epoch and stops DDP trials like any other. The Train run is
named after the trial: a retried or resumed trial finds its checkpoints there
and continues on all ranks. Inside workers only ``ray.train.*`` is used.

A rank out of GPU memory raises ``TrialEnded``: Train stops the whole group
(ranks waiting for it in a collective included), is kept from retrying what
would run out of memory again, and this coordinator reports the trial
``infeasible`` to Tune, as a single-process trial reports it.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from typing import Any

import ray
import ray.train
import torch
from ray import tune
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2._internal.execution.callback import ControllerCallback, WorkerGroupCallback
from ray.tune.integration.ray_train import TuneReportCallback

from tuner.trial.placement import not_placed
from tuner.trial.process import Channel, TrialEnded, run_process
from tuner.trial.settings import DataRef, TrialSettings

__all__ = ["TRAIN_SCORE", "checkpoint_score", "run_ddp_trial", "train_worker"]

TRAIN_SCORE = "train_checkpoint_score"  # what Train ranks a DDP trial's checkpoints by (``checkpoint_score``)


def train_worker(config: dict[str, Any], *, data_ref: ray.ObjectRef, settings: TrialSettings, trial_id: str) -> None:
    """One rank of a DDP trial: the task's training at world size N."""
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    # Which nodes the ranks run on (rank 0 reports it): a DDP trial may span nodes.
    nodes = [ray.get_runtime_context().get_node_id()]
    if world_size > 1:
        nodes = [None] * world_size
        torch.distributed.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    channel = Channel(
        report=functools.partial(_train_report, metric=settings.metric, mode=settings.mode),
        restored=ray.train.get_checkpoint(),
        trial_id=trial_id,
        device=ray.train.torch.get_device(),
        rank=rank,
        world_size=world_size,
        where={"node_id": nodes[0], "nodes": len(set(nodes))},
    )
    run_process(config, ray.get(data_ref), settings=settings, channel=channel)


def _train_report(metrics: dict[str, Any], folder: str | None, *, metric: str, mode: str) -> None:
    metrics = {**metrics, TRAIN_SCORE: checkpoint_score(metrics.get(metric), mode=mode)}
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)


def checkpoint_score(value: Any, *, mode: str) -> float:
    """The metric as Train ranks a DDP trial's checkpoints by it: always a number.

    An epoch scored more cheaply reports NaN under the metric (``TrialContext.judged_epochs``);
    Train keeps its checkpoints' scores as JSON, where NaN comes back as None, and a
    resumed trial's controller then failed ranking them. Such an epoch ranks below every scored one.
    """
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return -sys.float_info.max if mode == "max" else sys.float_info.max


class _TuneReport(TuneReportCallback):
    """Ray's forwarding of rank 0's reports to Tune, without the score only Train ranks by."""

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        metrics = [{k: v for k, v in m.items() if k != TRAIN_SCORE} for m in metrics]
        super().after_report(run_context=run_context, metrics=metrics, checkpoint=checkpoint)


class _NoRetryOnTrialEnd(WorkerGroupCallback, ControllerCallback):
    """Keeps Train from restarting a worker group whose rank raised ``TrialEnded``: it would only end again.

    Train retries every worker error up to ``max_failures``; an error raised
    before its failure decision is a controller error, which it does not retry.
    """

    def __init__(self) -> None:
        self._ended: TrialEnded | None = None

    def after_worker_group_poll_status(self, worker_group_status: Any) -> None:
        self._ended = self._ended or next(filter(None, map(trial_ended, worker_group_status.errors.values())), None)

    def before_controller_execute_failure_decision(self, failure_decision: Any) -> None:
        if self._ended is not None:
            raise self._ended


def trial_ended(error: BaseException | None) -> TrialEnded | None:
    """The ``TrialEnded`` a rank raised, found inside the errors Train and Ray wrap it in; else None."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, TrialEnded):
            return e
        pending += [getattr(e, "controller_failure", None), getattr(e, "cause", None), e.__cause__, e.__context__]
        pending += list((getattr(e, "worker_failures", None) or {}).values())
    return None


def run_ddp_trial(config: dict[str, Any], *, data: DataRef, settings: TrialSettings) -> None:
    """Run one trial on ``settings.workers`` Train workers and wait for it (inside a Tune function)."""
    trial_id = tune.get_context().get_trial_id()
    # Train reads its start timeout from the environment; it passes this process's value on to its controller.
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(settings.worker_start_timeout_s)
    use_gpu = settings.gpus_per_worker > 0
    resources = {"CPU": settings.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = settings.gpus_per_worker
    trainer = TorchTrainer(
        functools.partial(train_worker, data_ref=data.ref, settings=settings, trial_id=trial_id),
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=settings.workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}",  # the same name again on retry or resume: Train restores from it
            storage_path=settings.train_storage,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=settings.keep_checkpoints,
                checkpoint_score_attribute=TRAIN_SCORE,
                checkpoint_score_order=settings.mode,
            ),
            callbacks=[_TuneReport(), _NoRetryOnTrialEnd()],
            # A worker group not placed in time fails the trial (Train's default retries it without end).
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures, controller_failure_limit=0),
        ),
    )
    try:
        result = trainer.fit()
        error = result.error
    except Exception as e:
        # Train's ControllerError wraps its (internal) WorkerGroupStartupTimeoutError.
        if type(getattr(e, "controller_failure", None)).__name__ == "WorkerGroupStartupTimeoutError":
            raise not_placed(workers=settings.workers, per_worker=resources,
                             timeout_s=settings.worker_start_timeout_s) from None  # fmt: skip
        error = e
    if error is None:
        return
    ended = trial_ended(error)
    if ended is None:
        raise error
    # As a single-process trial ends: its last report says infeasible, and why.
    print(f"ended early: {ended}", flush=True)
    tune.report(ended.report)
