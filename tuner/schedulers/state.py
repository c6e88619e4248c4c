"""A scheduler's state in a JSON file of the search's folder: written after each decision, read after a resume.

Ray 2.60's ``Tuner.restore`` brings back the trials and the searcher, not the
scheduler's state: a resumed scheduler would start empty and judge trials
against nothing. Each scheduler in ``persistent`` mixes in ``Saved``: it writes
what it has learnt after every decision, and a restored one reads it back,
keyed by trial id, when the search adds its trials again.

The file (``asha.state``, ``median.state``, ``pbt.state``: each spec's
``state_file``) is not ``*.json``: a restored Tune copies the folder's ``.json``
and ``.pkl`` files into its staging folder and uploads them back at every
experiment checkpoint, which would put the state of the moment of the restore
over the newer one. No Ray here.
"""

from __future__ import annotations

import json
from typing import Any

from results import storage
from results.table import EARLY_END_FLAGS

LEGACY_STATE_FILE = "asha_state.json"  # what searches before --scheduler wrote (ASHA only), read in asha.state's place


def ended_early(result: dict[str, Any]) -> bool:
    """A diverged or out-of-memory trial's last report: it carries no score, so never judge others by it."""
    return any(result.get(flag) for flag in EARLY_END_FLAGS)


class Saved:
    """A scheduler state kept in a JSON file: written after each decision, read lazily after a restore."""

    state_path: str
    _saved: dict[str, Any] | None

    def _setup_saving(self, state_path: str) -> None:
        self.state_path, self._saved = state_path, None
        self._written: str | None = None  # what the file holds, as this instance last wrote it

    def saved(self) -> dict[str, Any]:
        """What the file held when this instance first looked (empty for a new search)."""
        if self._saved is None:
            path = self.state_path
            if not storage.exists(path) and path.endswith("asha.state"):
                path = path.removesuffix("asha.state") + LEGACY_STATE_FILE
            self._saved = json.loads(storage.read_text(path)) if storage.exists(path) else {}
        return self._saved

    def state(self) -> dict[str, Any]:
        """What to write: the scheduler's learnt state, as plain JSON values."""
        raise NotImplementedError

    def _save(self) -> None:
        """Write the state if it changed (ASHA's does only at its rungs): a trial waits while the driver does this."""
        text = json.dumps(self.state())
        if text != self._written:
            storage.write_text(self.state_path, text)
            self._written = text

    def __getstate__(self) -> dict[str, Any]:
        # A restored instance is unpickled from when the search began: it reads the file again.
        return {**self.__dict__, "_saved": None, "_written": None}
