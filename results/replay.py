"""Retrain one trial of a finished search from its record, and say whether it reproduces what it reported.

``python -m results replay <folder> [--trial ID]`` (the best trial by default)
reads the trial's config (its ``params.json``, seed included), the search's
settings (``search.json``: space, overrides, smoke test, data folder) and its
provenance (``provenance.json``: the keys of the data and of the training
code), loads the task's data as the search did, and refuses, with the reason,
when the data or the code differ from what was recorded, when the trial was a
DDP trial or continued another trial's checkpoint (PBT), or when it trained on
a GPU and this machine has none. Then it trains the trial in this process, on
the kind of device the trial had, for the epochs the trial reported, and
compares every epoch's metric and training loss with the recorded ones: on CPU
they must be identical (bit for bit); on a GPU within ``GPU_TOLERANCE``
(bfloat16 kernels and cuDNN's algorithm choice are not deterministic).
No Ray, no MLflow: the task's own ``train``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from results import storage
from results.record import read as read_record
from results.table import BEST_CONFIG, PROVENANCE_JSON, load, load_histories, scored_epochs
from search_spaces.exceptions import ReplayRefused

GPU_TOLERANCE = 0.01  # absolute difference allowed in each epoch's metric (and training loss) on a GPU
COMPARED = ("train_loss",)  # compared beside the space's metric, where the trial reported them



@dataclass
class Replay:
    """What a replay found: the recorded and replayed values per epoch, and whether they agree."""

    trial_id: str
    device: str
    tolerance: float  # 0.0: bit for bit
    epochs: list[int]
    recorded: dict[str, list[float]]  # key -> one value per epoch
    replayed: dict[str, list[float]]
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether the replay reached every recorded epoch (a replay that diverged sooner did not)."""
        return all(len(self.replayed[k]) == len(self.recorded[k]) for k in self.recorded)

    @property
    def max_difference(self) -> float:
        if not self.complete:
            return math.inf
        diffs = [abs(a - b) for k in self.recorded for a, b in zip(self.recorded[k], self.replayed[k], strict=True)]
        return max(diffs, default=0.0)

    @property
    def reproduced(self) -> bool:
        if not self.complete:
            return False
        if self.tolerance == 0.0:
            return all(self.recorded[k] == self.replayed[k] for k in self.recorded)
        return self.max_difference <= self.tolerance

    def describe(self) -> str:
        how = "bit for bit" if self.tolerance == 0.0 else f"within {self.tolerance:g}"
        verdict = "reproduced" if self.reproduced else "NOT reproduced"
        lines = [f"trial {self.trial_id}, {len(self.epochs)} epoch(s) on {self.device}: {verdict} ({how}; "
                 f"largest difference {self.max_difference:.3g})"]  # fmt: skip
        for i, epoch in enumerate(self.epochs):
            cells = [f"{k} {self.recorded[k][i]:.6g} -> "
                     + (f"{self.replayed[k][i]:.6g}" if i < len(self.replayed[k]) else "not reached")
                     for k in self.recorded]  # fmt: skip
            lines.append(f"  epoch {epoch}: " + ", ".join(cells))
        return "\n".join(self.notes + lines)


class _Enough(Exception):
    """Raised from ``report`` once the replay has trained as many epochs as the trial did."""


def _read_json(folder: str, name: str, *, missing: str) -> dict[str, Any]:
    path = storage.join(folder, name)
    if not storage.exists(path):
        raise ReplayRefused(missing)
    return json.loads(storage.read_text(path))


def _pick_trial(folder: str, frame: pd.DataFrame, trial_id: str | None) -> dict[str, Any]:
    if trial_id is None:
        best = _read_json(folder, BEST_CONFIG, missing=f"{folder} has no {BEST_CONFIG}: name a trial with --trial")
        trial_id = str(best["trial_id"])
    rows = frame[frame["trial_id"].astype(str) == trial_id]
    if rows.empty:
        known = ", ".join(frame["trial_id"].astype(str))
        raise ReplayRefused(f"no trial {trial_id} in {folder}; its trials are: {known}")
    return rows.iloc[0].to_dict()


def _recorded(history: pd.DataFrame, metric: str, epochs: int) -> tuple[list[int], dict[str, list[float]]]:
    """The trial's reported values per epoch (the last report of an epoch trained twice after a retry)."""
    scored = scored_epochs(history, metric).drop_duplicates("epoch", keep="last").sort_values("epoch")
    scored = scored[scored["epoch"] <= epochs]
    keys = [metric, *(k for k in COMPARED if k in scored and k != metric)]
    return [int(e) for e in scored["epoch"]], {k: [float(v) for v in scored[k]] for k in keys}


def _refuse_if_exploited(folder: str, trial_id: str) -> None:
    path = storage.join(folder, "pbt.state")
    if not storage.exists(path):
        return
    for exploit in json.loads(storage.read_text(path)).get("exploits", []):
        if exploit["trial_id"] == trial_id:
            raise ReplayRefused(
                f"trial {trial_id} continued trial {exploit['from']}'s checkpoint at epoch {exploit['epoch']} (PBT): "
                f"its weights are not its own config's to retrain; replay a trial that was never exploited"
            )


def replay(folder: str, *, trial_id: str | None = None) -> Replay:
    """Retrain ``trial_id`` (default: the best) of the search in ``folder`` and compare it with its record."""
    import torch

    from search_spaces import conditions, drop_inactive, searched_space
    from trainables.fingerprints import code_key, data_key
    from trainables.loading import load_data, load_task
    from trainables.task import Diverged, TrialContext

    record = read_record(folder)
    provenance = _read_json(folder, PROVENANCE_JSON, missing=f"{folder} holds no {PROVENANCE_JSON}: the search "
                            "ran before searches recorded their data and code, so a replay could not check them")
    frame = load(folder)
    row = _pick_trial(folder, frame, trial_id)
    trial_id = str(row["trial_id"])
    if record.workers_per_trial > 1:
        raise ReplayRefused(f"trial {trial_id} was a DDP trial on {record.workers_per_trial} workers, whose "
                            "numbers depend on that many processes; replay covers single-process trials")  # fmt: skip
    _refuse_if_exploited(folder, trial_id)
    params_path = storage.join(str(row["path"]), "params.json")
    if not storage.exists(params_path):
        raise ReplayRefused(f"trial {trial_id} has no params.json in {row['path']}: its config is not recorded")
    config = json.loads(storage.read_text(params_path))

    on_gpu = record.gpus_per_trial > 0
    if on_gpu and not torch.cuda.is_available():
        raise ReplayRefused(f"trial {trial_id} trained on a GPU ({record.gpus_per_trial:g} per trial); replay it on a "
                            "machine with one")  # fmt: skip
    device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")

    space = searched_space(record.space_source, smoke_test=record.smoke_test, params=list(record.params))
    metric = record.metric
    code = code_key(space.task)
    if code != provenance["code_key"]:
        raise ReplayRefused(
            f"the training code differs from what trial {trial_id} ran (git commit {provenance.get('git_commit')}): "
            f"check that commit out (trainables/ and the task's module) and replay again"
        )
    task = load_task(space.task)
    data = load_data(space, data_dir=record.data_dir, smoke_test=record.smoke_test)
    if data_key(data.trial) != provenance["data_key"]:
        raise ReplayRefused(f"the data in {record.data_dir} differs from what the search trained on: put the "
                            "same files back (or pass the folder the search read) and replay again")  # fmt: skip

    histories = load_histories(frame[frame["trial_id"].astype(str) == trial_id])
    if trial_id not in histories:
        raise ReplayRefused(f"trial {trial_id} has no progress.csv in {row['path']}: nothing to compare with")
    epochs, recorded = _recorded(histories[trial_id], metric, int(row["epochs"]))
    if not epochs:
        raise ReplayRefused(f"trial {trial_id} reported no {metric}: nothing to compare with")

    # as many threads as the trial had: the sums' order depends on them
    torch.set_num_threads(max(1, int(record.cpus_per_trial)))
    config = drop_inactive(config, conditions(space))
    replayed: dict[str, list[float]] = {k: [] for k in recorded}
    last = epochs[-1]

    def report(metrics: dict[str, Any], state) -> None:
        if int(metrics["epoch"]) in epochs:
            for k in replayed:
                replayed[k].append(float(metrics.get(k, math.nan)))
        if int(metrics["epoch"]) >= last:
            raise _Enough

    context = TrialContext(device=device, reporter=report, compile=record.compile)
    try:
        task.train(config, data.trial, context)
    except _Enough:
        pass
    except Diverged as e:  # the record says otherwise, or it would have ended at this epoch too
        replayed = {k: v[: epochs.index(e.epoch)] if e.epoch in epochs else v for k, v in replayed.items()}
    notes = [f"code: git commit {provenance.get('git_commit')} (training code unchanged); data: unchanged"]
    return Replay(trial_id=trial_id, device=str(device), tolerance=GPU_TOLERANCE if on_gpu else 0.0, epochs=epochs,
                  recorded=recorded, replayed=replayed, notes=notes)  # fmt: skip
