"""The Tune function of a search: one per task, for single-process and DDP trials alike."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from tuner.trial import TrialSettings, run_trial


def trainable_for(space: str) -> Callable[..., None]:
    """The Tune function of a search over ``space``, named ``train_<space>`` (Tune names trial folders after it).

    Which task it trains is in the ``TrialSettings`` every trial receives.
    """

    def trainable(config: dict[str, Any], *, data: Any, settings: TrialSettings) -> None:
        os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
        if settings.workers > 1:
            from tuner.ddp import run_ddp_trial  # Ray Train: imported only where it runs

            run_ddp_trial(config, data=data, settings=settings)
        else:
            run_trial(config, data=data, settings=settings)

    name = "train_" + "".join(c if c.isalnum() else "_" for c in space)
    trainable.__name__ = trainable.__qualname__ = name
    return trainable
