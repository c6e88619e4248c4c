"""The trial schedulers a search can use, each of which keeps its state across a resume: a registry of specs.

``--scheduler`` picks one of Ray Tune's implementations:

- ``asha`` (the default): asynchronous successive halving; a trial is stopped
  at a rung (grace period, times the reduction factor, ...) unless it is in the
  top 1/reduction-factor of the trials recorded there.
- ``hyperband``: asynchronous HyperBand, ASHA over several brackets, one per
  early-stopping rate: a trial in bracket s is judged first at grace x rf^s
  epochs, so the trials of the higher brackets train longer before any
  judgement (a hedge against a first rung that misleads). Ray's
  ``AsyncHyperBandScheduler`` with ``brackets`` > 1.
- ``median``: the median stopping rule: after the grace period, a trial whose
  best score is worse than the median of the other trials' running means at
  the same epoch is stopped.
- ``pbt``: population based training. Every grace-period epochs a trial in
  the bottom quarter continues from the checkpoint of one in the top quarter,
  with the space's ``mutable`` parameters perturbed (x0.8 or x1.2, or
  resampled, kept within their bounds). Trials run to the full budget.
- ``fifo``: no scheduler; every trial trains its full budget (the baseline).

Ray 2.60's ``Tuner.restore`` brings back the trials and the searcher, not the
scheduler's state: a resumed scheduler would start empty and judge trials
against nothing. Each scheduler here writes what it has learnt to a file in
the search's folder after every decision and reads it back, keyed by trial id,
when a restored search adds its trials again.

Modules:

- ``base``: ``SchedulerSpec``, what the rest of the project asks of a
  scheduler (its label, state file, checkpoint epochs, expected epochs, checks,
  and behaviours such as ``early_stops``), without Ray.
- ``asha``: the ASHA and HyperBand specs (one class: HyperBand is ASHA with
  more brackets).
- ``median``: the median stopping rule's spec.
- ``pbt``: population based training's spec and its checks.
- ``fifo``: the spec of no scheduler.
- ``state``: the state file each persistent scheduler writes and reads back.
- ``persistent``: Ray Tune's schedulers subclassed to save their state (the
  only module here that imports Ray at its top; specs import it in ``build``).

Only ``get(name)`` and ``SCHEDULERS`` are needed to use one: importing them
imports no Ray, so the settings check a scheduler's flags before Ray starts.
"""

from __future__ import annotations

from search_spaces.exceptions import UsageError
from tuner.schedulers.asha import ASHA, HYPERBAND
from tuner.schedulers.base import SchedulerSpec
from tuner.schedulers.fifo import FIFO
from tuner.schedulers.median import MEDIAN
from tuner.schedulers.pbt import PBT

__all__ = ["SCHEDULERS", "SchedulerSpec", "get"]

SCHEDULERS: dict[str, SchedulerSpec] = {spec.name: spec for spec in (ASHA, HYPERBAND, MEDIAN, PBT, FIFO)}


def get(name: str) -> SchedulerSpec:
    """The spec of the scheduler ``name`` (a value of ``--scheduler``)."""
    try:
        return SCHEDULERS[name]
    except KeyError:
        raise UsageError(f"unknown scheduler {name!r}: pick one of {', '.join(SCHEDULERS)}") from None
