"""What the rest of the project asks of a scheduler, without Ray: its spec.

A ``SchedulerSpec`` names a scheduler, says in words what it does, where it
keeps its state, which epochs a trial must checkpoint for it, how many epochs
it is expected to train, what a search must satisfy to use it, and what it
does that others must allow for (stopping trials early, restoring trials from
each other's checkpoints, running the whole population at once). ``build``
makes Ray Tune's scheduler; it is the one part that imports Ray, so the
settings' checks stay cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from results import storage
from results.cost import scheduler_epochs, scheduler_rungs
from search_spaces import Budget, SearchSpace
from search_spaces.exceptions import UsageError

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler


@dataclass(frozen=True)
class SchedulerSpec(ABC):
    """One scheduler ``--scheduler`` can pick: its name, its behaviour, and how to build it."""

    name: str  # the value of --scheduler, saved in search.json as "scheduler"
    label: str  # in words, for the progress line and the MLflow description ("ASHA", "the median rule", ...)
    state_file: str = ""  # the file in the search's folder that holds its state (state.py); "": it learns nothing
    early_stops: bool = True  # ends trials before --max-epochs; False: every trial trains its full budget
    min_checkpoints: int = 0  # checkpoints each trial keeps at least, because other trials restore from them
    whole_population: bool = False  # every trial is made at once and they take turns on the cluster
    reads_every_epoch: bool = False  # it reads a trial's score at every epoch, not only at its rungs
    judges_at_rungs: bool = False  # it stops trials at fixed epochs only (rungs): --search bohb fits its model there

    @abstractmethod
    def build(self, *, budget: Budget, space: SearchSpace, folder: str, seed: int) -> TrialScheduler:
        """Ray Tune's scheduler for a search of ``budget`` over ``space``, its state kept in ``folder``."""

    def check(self, *, space: SearchSpace, budget: Budget, search: str, max_concurrent: int | None) -> None:
        """Raise ``UsageError`` where the space, budget, searcher or ``--max-concurrent`` leave this scheduler
        nothing to do, or cannot run with it. The message names the fix."""
        if search == "bohb" and not self.judges_at_rungs:
            raise UsageError(
                f"--search bohb fits its model to the scores trials reach at the epochs a halving scheduler judges "
                f"them, and --scheduler {self.name} ({self.label}) has none: use --scheduler asha or hyperband, or "
                f"another --search"
            )

    def state_path(self, folder: str) -> str:
        """Where the state of a search in ``folder`` is kept (``state_file`` must be set)."""
        return storage.join(folder, self.state_file)

    def rungs(self, budget: Budget) -> list[int]:
        """The epochs below ``max_epochs`` at which it judges trials (or, for PBT, may exploit them)."""
        return scheduler_rungs(self.name, **_knobs(budget))  # results.cost: what the report reads too

    def checkpoint_epochs(self, budget: Budget) -> tuple[int, ...]:
        """The epochs a trial always saves: where the scheduler reads checkpoints (rungs, exploits) and the last."""
        return (*self.rungs(budget), budget.max_epochs)

    def answer_epochs(self, budget: Budget) -> tuple[int, ...]:
        """The epochs whose report may get a decision back (stop, pause, exploit): there a trial waits for it.

        Its rungs and the last epoch (``tuner.trial.run``); the others' reports go on without waiting.
        A scheduler (or a stop criterion) that may stop a trial at any epoch must name every epoch here:
        a trial stopped at another epoch would train on until its next report.
        """
        return self.checkpoint_epochs(budget)

    def judged_epochs(self, budget: Budget) -> tuple[int, ...] | None:
        """The epochs whose score it reads (its rungs) or ranks by (the last), None for every epoch.

        A trial scores these exactly (the cifar task: with its test-time augmentation)
        and may score the others more cheaply. The median rule averages every epoch's
        score and PBT compares the trials' latest ones, so they read every epoch; a
        search without early stopping (FIFO) scores every epoch as well.
        """
        # FIFO judges nothing, but its curves are the baseline others are measured against (time to target).
        return None if self.reads_every_epoch or not self.early_stops else self.checkpoint_epochs(budget)

    def expected_epochs(self, budget: Budget) -> float:
        """Epochs it is expected to train per trial (the progress line's ETA)."""
        return scheduler_epochs(self.name, **_knobs(budget))


def _knobs(budget: Budget) -> dict[str, int]:
    return {k: getattr(budget, k) for k in ("max_epochs", "grace_period", "reduction_factor")}
