"""Ray Tune's schedulers, each subclassed to keep its state across a resume (``state.Saved``).

The specs (``asha``, ``median``, ``pbt``) build these; FIFO learns nothing and
needs none. Tune pickles a search's scheduler when the search begins and
unpickles it on ``--resume``: each class reads its state file again then.
"""

from __future__ import annotations

import random
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, MedianStoppingRule, PopulationBasedTraining, TrialScheduler

from search_spaces import Param
from tuner.schedulers.state import Saved, ended_early


class PersistentASHA(Saved, AsyncHyperBandScheduler):
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
        if ended_early(result):
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


class PersistentMedian(Saved, MedianStoppingRule):
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
        if ended_early(result) or self._metric not in result:
            return TrialScheduler.CONTINUE
        action = super().on_trial_result(tune_controller, trial, result)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result and not ended_early(result) and self._metric in result:
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


class PersistentPBT(Saved, PopulationBasedTraining):
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
        if ended_early(result) or result.get(self._time_attr, 0) >= self._max_t:
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
