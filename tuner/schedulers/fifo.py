"""No scheduler: every trial trains its full budget (the baseline the others are measured against)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from search_spaces import Budget, SearchSpace
from tuner.schedulers.base import SchedulerSpec

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler


class FifoSpec(SchedulerSpec):
    """Ray's ``FIFOScheduler``: it judges nothing, so it learns nothing and keeps no state file."""

    def build(self, *, budget: Budget, space: SearchSpace, folder: str, seed: int) -> TrialScheduler:
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()


FIFO = FifoSpec(name="fifo", label="no early stopping", early_stops=False)
