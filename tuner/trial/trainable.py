"""The Tune function of a search: one per task, for single-process and DDP trials alike, with its resources."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tuner.trial.run import run_trial
from tuner.trial.settings import DataRef, TrialSettings

if TYPE_CHECKING:
    from search_spaces import SearchSpace
    from trainables.task import TaskData
    from tuner.config.settings import SearchSettings
    from tuner.schedulers import SchedulerSpec


def trainable_for(space: str) -> Callable[..., None]:
    """The Tune function of a search over ``space``, named ``train_<space>`` (Tune names trial folders after it).

    Which task it trains is in the ``TrialSettings`` every trial receives.
    """

    def trainable(config: dict[str, Any], *, data: Any, settings: TrialSettings) -> None:
        os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
        if settings.workers > 1:
            from tuner.trial.ddp import run_ddp_trial  # Ray Train: imported only where it runs

            run_ddp_trial(config, data=data, settings=settings)
        else:
            run_trial(config, data=data, settings=settings)

    name = "train_" + "".join(c if c.isalnum() else "_" for c in space)
    trainable.__name__ = trainable.__qualname__ = name
    return trainable


def make_trainable(
    settings: SearchSettings,
    space: SearchSpace,
    dataset: TaskData,
    *,
    keep: int,
    scheduler: SchedulerSpec,
) -> Any:
    """The search's Tune function with its data, trial settings and resources (a search's, or a confirmation's).

    ``scheduler`` says which epochs a trial always checkpoints, waits for the driver's answer at, and scores exactly.
    """
    import ray
    from ray import tune

    from results import storage
    from search_spaces import conditions

    shape = settings.resources.shape()
    trial_settings = TrialSettings(
        tracking_uri=settings.run.mlflow_uri,
        workers=shape.workers,
        cpus_per_worker=shape.cpus_per_worker,
        gpus_per_worker=shape.gpus_per_worker,
        compile=settings.compile,
        keep_checkpoints=keep,
        max_failures=settings.run.max_failures,
        worker_start_timeout_s=settings.resources.worker_start_timeout_s,
        train_storage=storage.join(settings.folder, "train"),
        checkpoint_epochs=scheduler.checkpoint_epochs(settings.budget),
        answer_epochs=scheduler.answer_epochs(settings.budget),
        judged_epochs=scheduler.judged_epochs(settings.budget),
        metric=settings.metric,
        mode=settings.mode,
        objectives=tuple(settings.objectives),
        task=space.task,
        conditions=conditions(space),
        checkpoint_period_s=settings.run.checkpoint_period_s,
    )
    data: Any = dataset.trial
    if shape.workers > 1:
        # The trial's own process only coordinates; Ray Train schedules the workers,
        # which read the dataset from the one copy put here.
        trial_resources = {"cpu": shape.coordinator_cpus}
        data = DataRef(ray.put(dataset.trial))
    else:
        trial_resources = {"cpu": shape.cpus, "gpu": shape.gpus}
    return tune.with_resources(
        tune.with_parameters(trainable_for(space.name), data=data, settings=trial_settings), trial_resources
    )
