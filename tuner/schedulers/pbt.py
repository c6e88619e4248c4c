"""Population based training: the bottom of the population continues from the top's checkpoints, perturbed.

Every grace-period epochs a trial in the bottom quarter continues from the
checkpoint of one in the top quarter, with the space's ``mutable`` parameters
perturbed (x0.8 or x1.2, or resampled, kept within their bounds). Trials run to
the full budget, all of them at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from search_spaces import Budget, Param, SearchSpace
from search_spaces.exceptions import UsageError
from tuner.schedulers.base import SchedulerSpec

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler

PBT_QUANTILE = 0.25  # the bottom quarter exploits the top quarter
PBT_RESAMPLE = 0.25  # chance that an exploit resamples a mutable value instead of scaling it
PBT_MIN_CHECKPOINTS = 4  # checkpoints kept per trial under PBT: others restore from them


def mutable_params(space: SearchSpace) -> list[Param]:
    """The parameters PBT may change in the middle of a trial (``mutable: true`` in the space)."""
    return [p for p in space.params if p.mutable]


class PbtSpec(SchedulerSpec):
    """Ray's ``PopulationBasedTraining``, its population's scores and its exploits saved in ``pbt.state``."""

    def build(self, *, budget: Budget, space: SearchSpace, folder: str, seed: int) -> TrialScheduler:
        from tuner.schedulers.persistent import PersistentPBT

        return PersistentPBT(state_path=self.state_path(folder), mutable=mutable_params(space), seed=seed,
                             max_t=budget.max_epochs, time_attr="epoch", perturbation_interval=budget.grace_period,
                             quantile_fraction=PBT_QUANTILE, resample_probability=PBT_RESAMPLE)  # fmt: skip

    def check(self, *, space: SearchSpace, budget: Budget, search: str, max_concurrent: int | None) -> None:
        if search != "random":
            raise UsageError(
                "--scheduler pbt makes its own configs (by perturbing its best trials'), so it cannot follow "
                f"--search {search}: drop --search, or pick another --scheduler"
            )
        if not mutable_params(space):
            raise UsageError(
                f"--scheduler pbt perturbs the space's mutable parameters, and space '{space.name}' marks none: add "
                "`mutable: true` to the parameters that may change in the middle of a trial (such as lr), or pick "
                "another --scheduler"
            )
        if max_concurrent is not None:
            raise UsageError(
                "--scheduler pbt runs its whole population (--num-samples) together, taking turns where the cluster "
                "cannot run them all at once: drop --max-concurrent, or lower --num-samples"
            )
        if budget.grace_period >= budget.max_epochs:
            raise UsageError(
                f"--scheduler pbt exploits every --grace-period epochs ({budget.grace_period}), which must be below "
                f"--max-epochs ({budget.max_epochs}) for any exploit to happen: lower --grace-period"
            )


PBT = PbtSpec(name="pbt", label="PBT", state_file="pbt.state", early_stops=False, reads_every_epoch=True,
              min_checkpoints=PBT_MIN_CHECKPOINTS, whole_population=True)  # fmt: skip
