"""Warm starts: a new search seeded with what a finished one learnt.

``--warm-start FOLDER`` reads the finished search's ``results.csv``: its best
``TOP`` configs are tried first (before the space's reference point's
successors), and with ``--search optuna`` every scored trial is also told to
Optuna as a prior observation (its parameters and its best score), so TPE
starts from the old search's model of the space instead of from scratch.
A config with a value the new space does not allow (after ``--param`` narrowed
it, say) is skipped and reported; a parameter the old search did not have is
sampled as usual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pandas as pd

import results
from results import storage
from results.table import ranked
from search_spaces import INACTIVE, Param, SearchSpace
from search_spaces.exceptions import UsageError

TOP = 5  # configs of the old search tried first


class Prior(NamedTuple):
    """A trial of the old search: its parameters, its best score, and the epochs it trained (it may have been
    stopped early: a searcher must not take that score for a full budget's)."""

    params: dict[str, Any]
    score: float
    epochs: int


@dataclass
class WarmStart:
    source: str
    points: list[dict[str, Any]] = field(default_factory=list)  # the top configs that fit the space, best first
    priors: list[Prior] = field(default_factory=list)  # every scored trial that fits, best first
    skipped: list[str] = field(default_factory=list)  # why a trial's config was left out

    def describe(self, *, model: bool) -> str:
        text = f"warm start from {self.source}: its best {len(self.points)} config(s) first"
        if model:
            text += f", {len(self.priors)} of its trials told to the searcher's model as prior observations"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} outside this space:\n" + "\n".join(f"  {s}" for s in self.skipped)
        return text


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _fit(row: dict[str, Any], searched: list[Param]) -> tuple[dict[str, Any] | None, str]:
    """The row's values of the space's searched parameters, or None and why one of them does not fit."""
    point = {}
    for p in searched:
        value = row.get(f"config/{p.name}")
        if value is None or value == INACTIVE or (isinstance(value, float) and math.isnan(value)):
            continue  # not searched then, or inactive: sampled (or left inactive) now
        value = _plain(value)
        if p.kind == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not p.contains(value):
            return None, f"{p.name} {value!r} is outside {p.describe()}"
        point[p.name] = value
    return point, ""


def load_warm_start(folder: str, space: SearchSpace, *, metric: str, mode: str, top: int = TOP) -> WarmStart:
    """What the finished search in ``folder`` gives a new search of ``space``; refuse a folder that cannot."""
    if not storage.exists(storage.join(folder, results.RESULTS_CSV)):
        raise UsageError(
            f"--warm-start {folder}: no {results.RESULTS_CSV} there; pass the folder of a finished search "
            f"(resume it first if it was interrupted)"
        )
    old_metric, old_mode = results.objective(folder)
    if (old_metric, old_mode) != (metric, mode):
        raise UsageError(
            f"--warm-start {folder}: that search ranked trials by {old_metric} ({old_mode}), this one by {metric} "
            f"({mode}); warm-start from a search of the same metric"
        )
    frame = results.load_results(folder)
    scored = ranked(frame[pd.notna(frame[metric])], metric=metric, mode=mode) if metric in frame else frame.iloc[0:0]
    searched = [p for p in space.params if p.kind != "fixed"]
    warm = WarmStart(source=folder)
    for row in scored.to_dict("records"):  # ranked best first
        point, why = _fit(row, searched)
        if point is None:
            warm.skipped.append(f"trial {row['trial_id']}: {why}")
            continue
        epochs = row.get("epochs")
        warm.priors.append(Prior(point, float(row[metric]), int(epochs) if pd.notna(epochs) else 0))
        if len(warm.points) < top and point and point not in warm.points:
            warm.points.append(point)
    return warm
