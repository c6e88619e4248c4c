"""ASHA whose rungs survive a resume.

Ray 2.60's ``Tuner.restore`` brings back the trials and the searcher but not the
scheduler's state: a resumed ``AsyncHyperBandScheduler`` starts with empty
rungs and would promote trials that the uninterrupted search had measured
against. This subclass writes its rung records to a JSON file in the search's
folder after every decision and reads them back the first time a restored
instance is used.
"""

from __future__ import annotations

import json
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler

from results import _fs
from results.table import EARLY_END_FLAGS

STATE_FILE = "asha_state.json"


class PersistentASHA(AsyncHyperBandScheduler):
    """``AsyncHyperBandScheduler`` that saves its rungs to ``state_path`` and reloads them on resume."""

    def __init__(self, *, state_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state_path = state_path
        self._loaded = False

    def state(self) -> dict[str, Any]:
        brackets = [[[milestone, dict(recorded)] for milestone, recorded in b._rungs] for b in self._brackets]
        return {"brackets": brackets, "num_stopped": self._num_stopped}

    def _load_once(self) -> None:
        # A restored instance is unpickled from when the search began: read what it has seen since.
        if self._loaded:
            return
        self._loaded = True
        if not _fs.exists(self.state_path):
            return
        saved = json.loads(_fs.read_text(self.state_path))
        for bracket, rungs in zip(self._brackets, saved["brackets"], strict=True):
            by_milestone = {float(m): recorded for m, recorded in rungs}
            for milestone, recorded in bracket._rungs:
                recorded.update(by_milestone.get(float(milestone), {}))
        self._num_stopped = saved["num_stopped"]

    def _save(self) -> None:
        _fs.write_text(self.state_path, json.dumps(self.state()))

    def on_trial_add(self, tune_controller, trial) -> None:
        self._load_once()
        super().on_trial_add(tune_controller, trial)

    def milestones(self) -> tuple[int, ...]:
        """The epochs (``time_attr`` values) at which rungs judge trials, smallest first."""
        return tuple(sorted({int(m) for b in self._brackets for m, _ in b._rungs}))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        self._load_once()
        if any(result.get(flag) for flag in EARLY_END_FLAGS):
            # A diverged or out-of-memory trial's last report is no score: recorded in a
            # rung, its 0.0 would lower the cut-off that the other trials are judged by.
            return self.CONTINUE  # the trial's function has returned: it ends anyway
        action = super().on_trial_result(tune_controller, trial, result)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._load_once()
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_loaded": False}
