"""ASHA and asynchronous HyperBand: one spec for both, as Ray runs both with one class.

HyperBand is ASHA over several brackets (Ray's ``AsyncHyperBandScheduler`` with
``brackets`` > 1): the same rungs, the same saved state (``asha.state``, each
trial's bracket with it), the same checks; only the number of brackets differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from results.cost import hyperband_brackets
from search_spaces import Budget, SearchSpace
from tuner.schedulers.base import SchedulerSpec

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler


@dataclass(frozen=True)
class HalvingSpec(SchedulerSpec):
    """Asynchronous successive halving over one bracket (ASHA) or one per early-stopping rate (HyperBand)."""

    every_bracket: bool = False  # HyperBand: a bracket for each first rung, grace x rf^s epochs
    judges_at_rungs: bool = True

    def brackets(self, budget: Budget) -> int:
        """How many brackets Ray lays out for ``budget``."""
        if not self.every_bracket:
            return 1
        return len(hyperband_brackets(budget.max_epochs, budget.grace_period, budget.reduction_factor))

    def build(self, *, budget: Budget, space: SearchSpace, folder: str, seed: int) -> TrialScheduler:
        from tuner.schedulers.persistent import PersistentASHA

        # The metric and mode reach it from TuneConfig (giving both raises).
        return PersistentASHA(state_path=self.state_path(folder), time_attr="epoch", max_t=budget.max_epochs,
                              grace_period=budget.grace_period, reduction_factor=budget.reduction_factor,
                              brackets=self.brackets(budget))  # fmt: skip


ASHA = HalvingSpec(name="asha", label="ASHA", state_file="asha.state")
HYPERBAND = HalvingSpec(name="hyperband", label="HyperBand", state_file="asha.state", every_bracket=True)
