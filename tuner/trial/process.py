"""One training process of a trial, written once for a single-process trial and for every rank of a DDP trial.

``run_process`` loads the space's task, seeds, continues from the restored
checkpoint, and turns each ``context.report`` of the task into one report to
Tune, with a checkpoint when the checkpoint policy says so (rank 0 alone asks
it and saves). What differs between the two kinds of trial is a ``Channel``:
how a report reaches Tune (``ray.tune.report`` in a Tune function,
``ray.train.report`` on every rank of a Train worker group), which checkpoint
was restored, the device, rank and world size. A trial that ends for good (a
diverged loss, running out of GPU memory) reports its early end as its last
result; a rank that runs out of memory alone raises ``TrialEnded`` instead,
since its peers may be waiting for it in a collective: Ray Train then stops the
whole group, and the trial's coordinator reports the early end
(``tuner.trial.ddp``).
"""

from __future__ import annotations

import gc
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
import torch

from search_spaces import drop_inactive
from search_spaces.exceptions import TaskError
from trainables import checkpoint
from trainables.device import prepare_cuda
from trainables.loading import load_task
from trainables.loop import format_metrics
from trainables.task import Diverged, TrialContext, is_out_of_memory, seed_everything
from tuner.trial.settings import TrialSettings

__all__ = ["Channel", "TrialEnded", "device_for", "early_end", "exploit_note", "prepare_device", "release_memory",
           "run_process", "trial_device"]  # fmt: skip

END_REASON = "end_reason"  # the report's field that says why a trial ended early, and what would do instead


@dataclass(frozen=True)
class Channel:
    """What one training process is given by the kind of trial it runs in.

    ``report(metrics, folder)`` hands one epoch's metrics to Tune, with the
    checkpoint saved in ``folder`` (None: no checkpoint this epoch); every rank
    calls it each epoch, rank 0 alone with a folder.
    """

    report: Callable[[dict[str, Any], str | None], None]
    restored: Any  # the checkpoint Tune or Train restored the trial from, else None
    trial_id: str
    device: torch.device
    rank: int = 0
    world_size: int = 1
    where: Mapping[str, Any] = field(default_factory=dict)  # the node(s) it runs on: added to every report


class TrialEnded(Exception):
    """One rank's early end that its peers cannot share (out of GPU memory on that rank alone).

    Raised so that Ray Train stops the whole worker group; ``report`` is what
    the trial reports for it, which the trial's coordinator passes to Tune.
    """

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(report.get(END_REASON, "the trial ended early"))
        self.report = report

    def __reduce__(self) -> tuple:  # pickled on its way from the worker: rebuilt from the report, not the message
        return (TrialEnded, (self.report,))


def prepare_device(device: torch.device, settings: TrialSettings) -> None:
    """Threads for the CPUs this process was given; on a GPU, cuDNN autotuning and, on a share of it, a memory cap.

    Ray's GPU shares are only bookkeeping: the cap (``trainables.device``) makes a
    trial that runs out of memory fail alone instead of taking its neighbours down.
    """
    torch.set_num_threads(max(1, int(settings.cpus_per_worker)))
    prepare_cuda(device, share=settings.gpus_per_worker)


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


def early_end(error: BaseException, *, epoch: int, metric: str, config: dict[str, Any] | None = None,
              settings: TrialSettings | None = None) -> dict[str, Any] | None:  # fmt: skip
    """What a trial reports when ``error`` ends it for good (no retry could help), else None.

    A non-finite loss is ``diverged``; running out of GPU memory makes the
    configuration ``infeasible`` (on its share of the GPU), while other trials go
    on. Either way the report has no score: its ``metric`` is NaN (``results.table.EARLY_END_FLAGS``),
    and its ``end_reason`` says why, naming the ``config`` and what would fit.
    A trade-off's further objectives are NaN as well: Tune requires every
    metric its searcher models in every report.
    """
    unscored = dict.fromkeys((metric, *(settings.objectives if settings else ())), math.nan)
    if isinstance(error, Diverged):
        return {"epoch": error.epoch, "train_loss": error.loss, **unscored, "diverged": 1,
                END_REASON: f"diverged: the training loss was {error.loss} at epoch {error.epoch}"}  # fmt: skip
    if is_out_of_memory(error):
        return {"epoch": epoch, **unscored, "infeasible": 1,
                END_REASON: out_of_memory_reason(config or {}, epoch=epoch, settings=settings)}  # fmt: skip
    return None


def out_of_memory_reason(config: dict[str, Any], *, epoch: int, settings: TrialSettings | None) -> str:
    """Why an out-of-memory trial ended: which config, on what share, and what would fit instead."""
    shown = ", ".join(f"{k}={v}" for k, v in sorted(config.items()))
    settings = settings or TrialSettings(tracking_uri="")
    gpus = f"{settings.gpus_per_worker:g} GPU" if settings.gpus_per_worker else "no GPU"
    share = f"{gpus} each for {settings.workers} workers" if settings.workers > 1 else gpus
    return (f"out of GPU memory at epoch {epoch} with config {shown} on {share}: this configuration is infeasible "
            f"there; a smaller batch, or fewer trials or workers per GPU (a larger --gpus-per-trial), would fit")


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


def run_process(config: dict[str, Any], data: Any, *, settings: TrialSettings, channel: Channel) -> None:
    """Train ``settings.task`` in this process, reporting every epoch through ``channel``, checkpointing as due.

    ``data`` is what the task's ``load`` returned for trials.
    """
    task = load_task(settings.task)
    config = drop_inactive(config, settings.conditions or {})  # inactive parameters never reach the task
    device, rank = channel.device, channel.rank
    prepare_device(device, settings)
    if rank == 0:
        print(f"trial {channel.trial_id} on {device}: {config}", flush=True)
    start = checkpoint.load_restored(channel.restored, map_location=device)
    policy = settings.checkpoint_policy()
    last_epoch = [int(start["epoch"]) if start else 0]
    note = [exploit_note(start, config=config, trial_id=channel.trial_id)]  # said once, in the first report

    def report(metrics: dict[str, Any], state: Callable[[], dict[str, Any]] | None) -> None:
        missing = [m for m in settings.objectives if m not in metrics]
        if missing:  # the searcher models it: a report without it would stop the search (Tune checks each one)
            raise TaskError(
                f"task '{settings.task}' reported epoch {metrics.get('epoch')} without {', '.join(missing)}, which the "
                f"space names under objectives: report it every epoch (trainables.footprint measures params and "
                f"latency_ms), or remove it from the space's objectives"
            )
        if rank == 0:
            print(format_metrics(metrics), flush=True)  # one line per epoch in the trial's own stdout file
        # Where and when it ran, in its progress.csv: for clusters, and for the search's time to target.
        metrics = {**metrics, **note[0], **channel.where, "reported_at": time.time()}
        note[0] = {}
        last_epoch[0] = metrics["epoch"]
        # Rank 0 alone asks the policy (and keeps its best score): it alone passes a checkpoint.
        # A new best for the trial is always saved: the search registers the first trial's best epoch.
        if rank != 0 or state is None or not policy.due(metrics["epoch"], score=metrics.get(settings.metric),
                                                        mode=settings.mode):  # fmt: skip
            channel.report(metrics, None)
            return
        with checkpoint.saved(state(), epoch=metrics["epoch"], config=config, trial_id=channel.trial_id) as folder:
            channel.report(metrics, folder)

    judged = None if settings.judged_epochs is None else frozenset(settings.judged_epochs)
    context = TrialContext(device=device, reporter=report, start=start, rank=rank, world_size=channel.world_size,
                           compile=settings.compile, judged_epochs=judged)  # fmt: skip
    seed_everything(int(config.get("seed", 0)))  # the same on every rank: the same initial weights
    ended = None
    try:
        task.train(config, data, context)
    except Exception as e:
        ended = early_end(e, epoch=last_epoch[0] + 1, metric=settings.metric, config=config, settings=settings)
        if ended is None:
            raise
        # Not errors to retry or to flood the logs with: the trial ends, and says why.
        print(f"ended early: {type(e).__name__}: {e}\n{ended[END_REASON]}", flush=True)
    if ended is None:
        return
    # Out of the except block: the error and its traceback, whose frames hold the failed step's
    # tensors, are released; only now can their memory go back, for a reused actor's next trial.
    release_memory(device)
    if channel.world_size > 1 and ended.get("infeasible"):
        # Out of memory on this rank alone: its peers may wait for it in a collective and would
        # not reach the report (a barrier). Train stops the whole group when a rank raises.
        raise TrialEnded(ended)
    # A diverged loss is all-reduced by the task: every rank sees it and reports it together.
    channel.report(ended, None)


def release_memory(device: torch.device) -> None:
    """Free what an ended trial left: tensors kept alive by reference cycles, then the cached GPU blocks.

    Call it outside any ``except`` block: while an error is being handled, its
    traceback keeps the frames (and their tensors) that raised it.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # a reused actor's next trial starts with its whole share
