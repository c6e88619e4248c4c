"""DDP trials: a Tune trial that runs its task's ``train`` on N Ray Train workers.

The Tune function (``tuner.trial.trainable``) builds a ``TorchTrainer`` and waits for
it; the workers run the task's training as single-process trials do, with
world size N (gloo on CPU, NCCL on GPU). Every rank calls ``ray.train.report``
each epoch (it is a barrier); rank 0 passes the checkpoint. Ray's
``TuneReportCallback`` forwards rank 0's metrics and checkpoint path to Tune,
so ASHA sees every epoch and stops DDP trials like any other. The Train run is
named after the trial: a retried or resumed trial finds its checkpoints there
and continues on all ranks. Inside workers only ``ray.train.*`` is used.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import ray
import ray.train
import torch
from ray import tune
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from search_spaces import drop_inactive
from trainables import checkpoint
from trainables.loading import load_task
from trainables.loop import format_metrics
from trainables.task import Diverged, TrialContext, seed_everything
from tuner.trial.placement import not_placed
from tuner.trial.run import DataRef, TrialSettings, early_end, exploit_note, prepare_device

__all__ = ["run_ddp_trial", "train_worker"]


def train_worker(config: dict[str, Any], *, data_ref: ray.ObjectRef, settings: TrialSettings, trial_id: str) -> None:
    """One rank of a DDP trial: the task's training at world size N."""
    task = load_task(settings.task)
    config = drop_inactive(config, settings.conditions or {})  # inactive parameters never reach the task
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    prepare_device(device, settings)
    start = checkpoint.load_restored(ray.train.get_checkpoint(), map_location=device)
    policy = settings.checkpoint_policy()

    # Which nodes the ranks run on (rank 0 reports it): a DDP trial may span nodes.
    nodes = [ray.get_runtime_context().get_node_id()]
    if world_size > 1:
        nodes = [None] * world_size
        torch.distributed.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    where = {"node_id": nodes[0], "nodes": len(set(nodes))}
    note = [exploit_note(start, config=config, trial_id=trial_id)]  # said once, in the first report

    def report(metrics: dict[str, Any], state) -> None:
        metrics = {**metrics, **note[0], **where, "reported_at": time.time()}
        note[0] = {}
        # Rank 0 alone asks the policy (and keeps its best score): it alone passes a checkpoint.
        due = rank == 0 and state is not None
        if not due or not policy.due(metrics["epoch"], score=metrics.get(settings.metric), mode=settings.mode):
            ray.train.report(metrics)  # every rank reports: it is a barrier
            return
        print(format_metrics(metrics), flush=True)
        with checkpoint.saved(state(), epoch=metrics["epoch"], config=config, trial_id=trial_id) as folder:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    context = TrialContext(device=device, reporter=report, start=start, rank=rank, world_size=world_size,
                           compile=settings.compile)  # fmt: skip
    seed_everything(int(config.get("seed", 0)))  # the same on every rank: the same initial weights
    try:
        task.train(config, ray.get(data_ref), context)
    except Diverged as e:
        # A task all-reduces its loss, so every rank sees the divergence and reports it (a barrier).
        ray.train.report(early_end(e, epoch=e.epoch, metric=settings.metric))


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
                checkpoint_score_attribute=settings.metric,
                checkpoint_score_order=settings.mode,
            ),
            callbacks=[TuneReportCallback()],
            # A worker group not placed in time fails the trial (Train's default retries it without end).
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures, controller_failure_limit=0),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as e:
        # Train's ControllerError wraps its (internal) WorkerGroupStartupTimeoutError.
        if type(getattr(e, "controller_failure", None)).__name__ == "WorkerGroupStartupTimeoutError":
            raise not_placed(workers=settings.workers, per_worker=resources,
                             timeout_s=settings.worker_start_timeout_s) from None  # fmt: skip
        raise
    if result.error is not None:
        raise result.error
