"""Single-process trials: the Tune function's side of ``tuner.trial.process``.

``run_trial`` (called by ``tuner.trial.trainable``'s Tune function) trains the
space's task in the trial's own process on the device Ray assigned, continuing
from Tune's checkpoint when there is one, each report going out as one
``tune.report``. The data comes from Ray's object store (put there once per
search by ``tune.with_parameters``). DDP trials run through ``tuner.trial.ddp``.
Inside Tune functions only ``ray.tune.*`` is used (``ray.train.report`` raises
there).
"""

from __future__ import annotations

from typing import Any

import ray
from ray import tune

from tuner.trial.process import Channel, run_process, trial_device
from tuner.trial.settings import TrialSettings

__all__ = ["run_trial"]


def run_trial(config: dict[str, Any], *, data: Any, settings: TrialSettings) -> None:
    """Train one single-process trial of ``settings.task``, reporting every epoch, checkpointing as the policy says.

    ``data`` is what the task's ``load`` returned for trials.
    """
    channel = Channel(
        report=_tune_report,
        restored=tune.get_checkpoint(),
        trial_id=tune.get_context().get_trial_id(),
        device=trial_device(),
        where={"node_id": ray.get_runtime_context().get_node_id()},
    )
    run_process(config, data, settings=settings, channel=channel)


def _tune_report(metrics: dict[str, Any], folder: str | None) -> None:
    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)
