"""The median stopping rule: after the grace period, a trial worse than the others' median is stopped."""

from __future__ import annotations

from typing import TYPE_CHECKING

from search_spaces import Budget, SearchSpace
from tuner.schedulers.base import SchedulerSpec

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler

MEDIAN_MIN_SAMPLES = 3  # other trials' running means needed before the median rule judges one


class MedianSpec(SchedulerSpec):
    """Ray's ``MedianStoppingRule``, stopping (never pausing) trials, its scores saved in ``median.state``."""

    def build(self, *, budget: Budget, space: SearchSpace, folder: str, seed: int) -> TrialScheduler:
        from tuner.schedulers.persistent import PersistentMedian

        return PersistentMedian(state_path=self.state_path(folder), time_attr="epoch",
                                grace_period=budget.grace_period, min_samples_required=MEDIAN_MIN_SAMPLES)  # fmt: skip


    def answer_epochs(self, budget: Budget) -> tuple[int, ...]:
        return tuple(range(budget.grace_period, budget.max_epochs + 1))  # it judges every epoch from then on


MEDIAN = MedianSpec(name="median", label="the median stopping rule", state_file="median.state",
                    reads_every_epoch=True)
