"""The trial schedulers a search can use, each of which keeps its state across a resume.

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
against nothing. Each class here writes what it has learnt to a JSON file in
the search's folder after every decision and reads it back, keyed by trial id,
when a restored search adds its trials again.
"""

from __future__ import annotations

import json
import random
from typing import Any

from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
    TrialScheduler,
)

from results import storage
from results.cost import hyperband_brackets, scheduler_epochs, scheduler_rungs
from results.table import EARLY_END_FLAGS
from search_spaces import Budget, Param, SearchSpace
from tuner.config.settings import SCHEDULERS

LABELS = {"asha": "ASHA", "hyperband": "HyperBand", "median": "the median stopping rule", "pbt": "PBT",
          "fifo": "no early stopping"}  # fmt: skip
MEDIAN_MIN_SAMPLES = 3  # other trials' running means needed before the median rule judges one
PBT_QUANTILE = 0.25  # the bottom quarter exploits the top quarter
PBT_RESAMPLE = 0.25  # chance that an exploit resamples a mutable value instead of scaling it
PBT_MIN_CHECKPOINTS = 4  # checkpoints kept per trial under PBT: others restore from them


def state_file(scheduler: str) -> str:
    """The file in a search's folder that holds ``scheduler``'s state, as JSON (``asha.state``, ``pbt.state``, ...).

    Not ``*.json``: a restored Tune copies the folder's ``.json`` and ``.pkl`` files
    into its staging folder and uploads them back at every experiment checkpoint,
    which would put the state of the moment of the restore over the newer one.
    """
    return f"{'asha' if scheduler == 'hyperband' else scheduler}.state"


LEGACY_STATE_FILE = "asha_state.json"  # what searches before --scheduler wrote (ASHA only)


def _ended_early(result: dict[str, Any]) -> bool:
    # A diverged or out-of-memory trial's last report carries no score: never judge others by it.
    return any(result.get(flag) for flag in EARLY_END_FLAGS)


class _Saved:
    """A scheduler state kept in a JSON file: written after each decision, read lazily after a restore."""

    state_path: str
    _saved: dict[str, Any] | None

    def _setup_saving(self, state_path: str) -> None:
        self.state_path, self._saved = state_path, None

    def saved(self) -> dict[str, Any]:
        """What the file held when this instance first looked (empty for a new search)."""
        if self._saved is None:
            path = self.state_path
            if not storage.exists(path) and path.endswith("asha.state"):
                path = path.removesuffix("asha.state") + LEGACY_STATE_FILE
            self._saved = json.loads(storage.read_text(path)) if storage.exists(path) else {}
        return self._saved

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _save(self) -> None:
        storage.write_text(self.state_path, json.dumps(self.state()))

    def __getstate__(self) -> dict[str, Any]:
        # A restored instance is unpickled from when the search began: it reads the file again.
        return {**self.__dict__, "_saved": None}


class PersistentASHA(_Saved, AsyncHyperBandScheduler):
    """``AsyncHyperBandScheduler`` (ASHA with one bracket, HyperBand with several) that survives a resume.

    Saved: every bracket's rungs (trial id -> score at each milestone), the
    number of trials stopped, and which bracket each trial was put in (Ray draws
    it at random when a trial is added, also when a restored one is added again).
    """

    def __init__(self, *, state_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._setup_saving(state_path)
        self._bracket_of: dict[str, int] = {}
        self._loaded = False

    def state(self) -> dict[str, Any]:
        brackets = [[[milestone, dict(recorded)] for milestone, recorded in b._rungs] for b in self._brackets]
        return {"brackets": brackets, "num_stopped": self._num_stopped, "trial_brackets": self._bracket_of}

    def _load_once(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        saved = self.saved()
        if not saved:
            return
        for bracket, rungs in zip(self._brackets, saved["brackets"], strict=True):
            by_milestone = {float(m): recorded for m, recorded in rungs}
            for milestone, recorded in bracket._rungs:
                recorded.update(by_milestone.get(float(milestone), {}))
        self._num_stopped = saved["num_stopped"]
        self._bracket_of.update(saved.get("trial_brackets", {}))

    def on_trial_add(self, tune_controller, trial) -> None:
        self._load_once()
        super().on_trial_add(tune_controller, trial)
        if trial.trial_id in self._bracket_of:  # restored: back into the bracket it was judged in
            self._trial_info[trial.trial_id] = self._brackets[self._bracket_of[trial.trial_id]]
        else:
            self._bracket_of[trial.trial_id] = self._brackets.index(self._trial_info[trial.trial_id])

    def milestones(self) -> tuple[int, ...]:
        """The epochs (``time_attr`` values) at which rungs judge trials, smallest first."""
        return tuple(sorted({int(m) for b in self._brackets for m, _ in b._rungs}))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        self._load_once()
        if _ended_early(result):
            # Recorded in a rung, its NaN or 0.0 would move the cut-off the other trials are judged by.
            return self.CONTINUE  # the trial's function has returned: it ends anyway
        action = super().on_trial_result(tune_controller, trial, result)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._load_once()
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_loaded": False}


class PersistentMedian(_Saved, MedianStoppingRule):
    """The median stopping rule, stopping (never pausing) trials, with each trial's scores saved.

    Ray's rule pauses a trial while too few others have reached its epoch; a
    paused function trial restarts from its last checkpoint and repeats the
    epochs since, so here it continues instead, and is judged once enough
    trials have caught up.
    """

    def __init__(self, *, state_path: str, **kwargs: Any) -> None:
        super().__init__(hard_stop=True, **kwargs)
        self._setup_saving(state_path)

    def state(self) -> dict[str, Any]:
        scores = {
            t.trial_id: [[r[self._time_attr], r[self._metric]] for r in results] for t, results in self._results.items()
        }
        return {"scores": scores, "stopped": sorted(t.trial_id for t in self._stopped_trials)}

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        saved = self.saved()
        if trial.trial_id in saved.get("scores", {}):
            self._results[trial] = [{self._time_attr: t, self._metric: s} for t, s in saved["scores"][trial.trial_id]]
        if trial.trial_id in saved.get("stopped", ()):
            self._stopped_trials.add(trial)

    def _on_insufficient_samples(self, tune_controller, trial, time: float) -> str:
        return TrialScheduler.CONTINUE

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if _ended_early(result) or self._metric not in result:
            return TrialScheduler.CONTINUE
        action = super().on_trial_result(tune_controller, trial, result)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result and not _ended_early(result) and self._metric in result:
            super().on_trial_complete(tune_controller, trial, result)
        self._save()


def clip_to_space(config: dict[str, Any], params: list[Param]) -> dict[str, Any]:
    """``config`` with each of ``params`` (a PBT perturbation of it) put back within the space's bounds."""
    for p in params:
        value = config.get(p.name)
        if value is None or p.kind == "choice":
            continue  # PBT moves a choice to a neighbouring value of its list: always valid
        value = min(max(float(value), float(p.low)), float(p.high))
        config[p.name] = int(round(value)) if p.kind == "int" else value
    return config


class PersistentPBT(_Saved, PopulationBasedTraining):
    """Population based training whose population's scores survive a resume, and which records its exploits.

    Saved per trial: its last score, when it was last perturbed and trained;
    and every exploit (which trial, from which, at which epoch, the values
    before and after). A restored search has no checkpoint in hand for its top
    trials until they report again, so the first exploits wait for the next
    perturbation interval.
    """

    def __init__(self, *, state_path: str, mutable: list[Param], seed: int, max_t: int, **kwargs: Any) -> None:
        from tuner.driver.space import domain

        super().__init__(
            hyperparam_mutations={p.name: list(p.choices) if p.kind == "choice" else domain(p) for p in mutable},
            custom_explore_fn=_Clip(mutable),
            quantile_fraction=PBT_QUANTILE,
            resample_probability=PBT_RESAMPLE,
            log_config=False,  # the exploits are recorded here and in each trial's MLflow run
            **kwargs,
        )
        self._setup_saving(state_path)
        self._mutable = [p.name for p in mutable]
        self._max_t = max_t
        self.exploits: list[dict[str, Any]] = []
        random.seed(seed)  # PBT draws the donors and the perturbations from Python's random

    def state(self) -> dict[str, Any]:
        trials = {
            t.trial_id: {"last_score": s.last_score, "last_perturbation_time": s.last_perturbation_time,
                         "last_train_time": s.last_train_time}  # fmt: skip
            for t, s in self._trial_state.items()
        }
        return {"trials": trials, "exploits": self.exploits, "num_perturbations": self._num_perturbations}

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        saved = self.saved()
        if not self.exploits and saved.get("exploits"):
            self.exploits = list(saved["exploits"])
            self._num_perturbations = saved.get("num_perturbations", 0)
        # An exploit decided just before the driver died may have missed Tune's saved state: the restored
        # trial then has its old values, and the exploit never happened. Its record goes.
        while True:
            mine = [e for e in self.exploits if e["trial_id"] == trial.trial_id]
            if not mine or mine[-1]["after"] == {k: trial.config.get(k) for k in self._mutable}:
                break
            self.exploits.remove(mine[-1])
        known = saved.get("trials", {}).get(trial.trial_id)
        if known:
            state = self._trial_state[trial]
            state.last_score = known["last_score"]
            state.last_perturbation_time = known["last_perturbation_time"]
            state.last_train_time = known["last_train_time"]

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        # A trial's last epoch is no time to exploit: it would restart from another's last checkpoint,
        # train nothing, and end with that trial's results as its own.
        if _ended_early(result) or result.get(self._time_attr, 0) >= self._max_t:
            return TrialScheduler.CONTINUE
        action = super().on_trial_result(tune_controller, trial, result)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def _exploit(self, tune_controller, trial, trial_to_clone) -> None:
        before = {k: trial.config.get(k) for k in self._mutable}
        donor = {k: trial_to_clone.config.get(k) for k in self._mutable}
        super()._exploit(tune_controller, trial, trial_to_clone)
        self.exploits.append({
            "trial_id": trial.trial_id,
            "from": trial_to_clone.trial_id,
            "epoch": int(self._trial_state[trial_to_clone].last_result.get(self._time_attr, 0)),
            "before": before,
            "donor": donor,
            "after": {k: trial.config.get(k) for k in self._mutable},
        })  # fmt: skip


class _Clip:
    """PBT's ``custom_explore_fn``: perturbed values back within the space's bounds (a class: Tune pickles it)."""

    def __init__(self, params: list[Param]) -> None:
        self.params = params

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        return clip_to_space(config, self.params)


def mutable_params(space: SearchSpace) -> list[Param]:
    return [p for p in space.params if p.mutable]


def build_scheduler(name: str, *, budget: Budget, space: SearchSpace, folder: str, seed: int) -> TrialScheduler:
    """The scheduler ``name`` (one of ``SCHEDULERS``) for a search of ``budget``, its state kept in ``folder``."""
    path = storage.join(folder, state_file(name))
    common = {"time_attr": "epoch"}  # the metric and mode reach it from TuneConfig (giving both raises)
    if name in ("asha", "hyperband"):
        brackets = 1
        if name == "hyperband":
            brackets = len(hyperband_brackets(budget.max_epochs, budget.grace_period, budget.reduction_factor))
        return PersistentASHA(state_path=path, max_t=budget.max_epochs, grace_period=budget.grace_period,
                              reduction_factor=budget.reduction_factor, brackets=brackets, **common)  # fmt: skip
    if name == "median":
        return PersistentMedian(state_path=path, grace_period=budget.grace_period,
                                min_samples_required=MEDIAN_MIN_SAMPLES, **common)  # fmt: skip
    if name == "pbt":
        return PersistentPBT(state_path=path, mutable=mutable_params(space), seed=seed, max_t=budget.max_epochs,
                             perturbation_interval=budget.grace_period, **common)  # fmt: skip
    if name == "fifo":
        return FIFOScheduler()
    raise ValueError(f"unknown scheduler {name!r}: one of {', '.join(SCHEDULERS)}")


def _knobs(budget: Budget) -> dict[str, int]:
    return {k: getattr(budget, k) for k in ("max_epochs", "grace_period", "reduction_factor")}


def checkpoint_epochs(name: str, budget: Budget) -> tuple[int, ...]:
    """The epochs a trial always saves: where the scheduler reads checkpoints (rungs, perturbations) and the last."""
    return (*scheduler_rungs(name, **_knobs(budget)), budget.max_epochs)


def expected_epochs(name: str, budget: Budget) -> float:
    """Epochs the scheduler is expected to train per trial (the progress line's ETA)."""
    return scheduler_epochs(name, **_knobs(budget))
