"""A finished search read back for its report: the data the pictures draw, and what mattered.

Everything comes from the search's folder (``search.json``, ``results.csv``,
``best_config.json`` and each trial's ``progress.csv``), so a resumed or synced
search reads back the same. No Ray, no MLflow; Optuna's fANOVA gives the
importances.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from results import cost, storage
from results.record import SearchRecord
from results.record import read as read_record
from results.table import BEST_CONFIG, load, load_histories, scored_epochs, seconds_spent

INACTIVE = "inactive"


@dataclass
class SearchView:
    """What the report draws, read back from a search's folder."""

    name: str
    metric: str
    mode: str
    frame: pd.DataFrame  # results.csv
    histories: dict[str, pd.DataFrame]  # each trial's progress.csv
    record: SearchRecord  # search.json
    best: dict[str, Any] | None  # best_config.json

    @property
    def settings(self) -> dict[str, Any]:
        """``search.json`` as written."""
        return dict(self.record.saved)

    @property
    def gpus_per_trial(self) -> float:
        return self.record.gpus_per_trial

    @property
    def spend(self) -> tuple[float, str]:
        """What the x axes count: GPU-seconds where trials had GPUs, else trial-seconds."""
        return (self.gpus_per_trial, "GPU-seconds") if self.gpus_per_trial else (1.0, "trial-seconds")

    @property
    def scheduler(self) -> str:
        return self.record.scheduler

    @property
    def rungs(self) -> list[int]:
        """The epochs at which the scheduler judged the trials (PBT: where it could exploit them)."""
        b = self.record.budget
        if b is None:
            return []
        return cost.scheduler_rungs(self.scheduler, max_epochs=b.max_epochs, grace_period=b.grace_period,
                                    reduction_factor=b.reduction_factor)  # fmt: skip

    @property
    def rungs_label(self) -> str:
        return {"pbt": "PBT's exploits", "median": "the median rule's grace period"}.get(
            self.scheduler, f"{'HyperBand' if self.scheduler == 'hyperband' else 'ASHA'}'s rungs"
        )

    @functools.cached_property
    def curve(self) -> pd.DataFrame:
        """The search's best score so far after every report, with what it had spent (``results.cost``)."""
        return cost.progress_curve(self.histories, metric=self.metric, mode=self.mode, gpus_per_trial=self.spend[0])

    def searched(self) -> list[str]:
        """The parameters that varied over the trials."""
        cols = [c for c in self.frame.columns if c.startswith("config/")]
        return [c.removeprefix("config/") for c in cols if self.frame[c].nunique(dropna=False) > 1]


def load_view(folder: str, *, histories: dict[str, pd.DataFrame] | None = None) -> SearchView:
    """The search in ``folder``; ``histories`` (trial id -> per-epoch reports) when the caller holds them already."""
    folder = str(folder)
    frame = load(folder)
    record = read_record(folder, missing_ok=True)
    best_path = storage.join(folder, BEST_CONFIG)
    best = json.loads(storage.read_text(best_path)) if storage.exists(best_path) else None
    if histories is None:
        histories = load_histories(frame)
    return SearchView(record.name or Path(folder).name, record.metric, record.mode, frame, histories, record,
                      best)  # fmt: skip


def trial_curves(view: SearchView) -> list[dict[str, Any]]:
    """Each trial's learning curve: epochs, scores, what it had spent, and whether its scheduler stopped it."""
    status = dict(zip(view.frame["trial_id"].astype(str), view.frame["status"], strict=True))
    rate, _ = view.spend
    curves = []
    for trial_id, history in view.histories.items():
        h = scored_epochs(history, view.metric)
        if not len(h):
            continue
        curves.append({"trial_id": trial_id, "status": status.get(trial_id, ""), "epoch": h["epoch"].tolist(),
                       "value": h[view.metric].astype(float).tolist(),
                       "spent": (rate * seconds_spent(history).loc[h.index]).tolist()})  # fmt: skip
    return curves


def importances(view: SearchView) -> dict[str, float] | None:
    """Parameter importances by Optuna's fANOVA on the scored trials; None when there is too little to learn from."""
    import optuna

    searched = [p for p in view.searched() if p not in ("seed",)]
    scored = view.frame.dropna(subset=[view.metric]) if view.metric in view.frame else view.frame.iloc[0:0]
    if len(searched) < 2 or len(scored) < 3:
        return None
    distributions = {}
    for name in searched:
        values = [v for v in scored[f"config/{name}"] if v != INACTIVE and not _missing(v)]
        numeric = [float(v) for v in values if _is_number(v)]
        if values and len(numeric) == len(values):
            low, high = min(numeric), max(numeric)
            log = low > 0 and high / low > 20
            distributions[name] = optuna.distributions.FloatDistribution(low, high if high > low else low + 1e-12,
                                                                         log=log)  # fmt: skip
        elif values:
            distributions[name] = optuna.distributions.CategoricalDistribution(sorted({str(v) for v in values}))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if view.mode == "max" else "minimize")
    for row in scored.to_dict("records"):
        params, dists = {}, {}
        for name, dist in distributions.items():
            v = row[f"config/{name}"]
            if v == INACTIVE or _missing(v):
                continue
            params[name] = float(v) if isinstance(dist, optuna.distributions.FloatDistribution) else str(v)
            dists[name] = dist
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(row[view.metric])))
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except (RuntimeError, ValueError):  # e.g. no parameter that every trial had
        return None


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return not isinstance(v, bool)
