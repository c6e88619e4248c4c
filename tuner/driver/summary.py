"""Turn Tune's ``ResultGrid`` into rows, the best checkpoint and the list of failed trials."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY  # set for DDP trials' checkpoints

from results import storage
from results.table import EARLY_END_FLAGS, ranked, scored_epochs, seconds_spent, trial_status
from search_spaces import mark_inactive

FINAL_METRICS = ("val_loss", "train_loss", "images_per_s")


def _trial_id(result: tune.Result) -> str:
    return str((result.metrics or {}).get("trial_id") or Path(result.path).name)


def _error_log(result: tune.Result) -> str:
    return str(Path(result.path) / "error.txt")


def _ended(history) -> str | None:
    """The early-end flag a trial's history carries, if any."""
    if history is None:
        return None
    return next((f for f in EARLY_END_FLAGS if f in history and bool(history[f].fillna(0).any())), None)


def _best_score(history, *, metric: str, mode: str) -> float:
    """The best ``metric`` of the epochs that trained (the report that ends a trial early is no score)."""
    scores = scored_epochs(history, metric)[metric]
    if not len(scores):
        return float("nan")
    return float(scores.max() if mode == "max" else scores.min())


def _score(result: tune.Result, *, metric: str, mode: str) -> float:
    """The trial's best ``metric`` over its scored epochs (NaN when none scored): what results.csv ranks it by."""
    history = result.metrics_dataframe
    if history is None or metric not in history:
        return float("nan")
    return _best_score(history, metric=metric, mode=mode)


def ended_early(rows: list[dict[str, Any]], status: str) -> list[tuple[str, int]]:
    """(trial id, epoch) of the trials with ``status`` (diverged, infeasible)."""
    return [(r["trial_id"], r["epochs"]) for r in rows if r["status"] == status]


def end_reasons(grid: tune.ResultGrid) -> dict[str, str]:
    """Trial id -> why it ended early, as its last report says (``end_reason``: the config, and what would fit)."""
    return {_trial_id(r): str(r.metrics["end_reason"]) for r in grid if (r.metrics or {}).get("end_reason")}


def _at_best(history, *, metric: str, mode: str, names: Sequence[str]) -> dict[str, float]:
    """``names``' values at the trial's best scored epoch (its earliest of equals): the epoch its kept checkpoint
    is from, so a trade-off's objectives describe the model that checkpoint holds."""
    scored = scored_epochs(history, metric) if history is not None else None
    if scored is None or not len(scored):
        return dict.fromkeys(names, float("nan"))
    values = pd.to_numeric(scored[metric], errors="coerce")
    at = values.idxmax() if mode == "max" else values.idxmin()
    return {n: float(scored.at[at, n]) if n in scored and pd.notna(scored.at[at, n]) else float("nan") for n in names}


def trial_rows(
    grid: tune.ResultGrid,
    *,
    max_epochs: int,
    metric: str,
    mode: str,
    conditions: dict | None = None,
    objectives: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One row per trial: status, epochs, seconds, best and final ``metric`` and other metrics, and its config.

    A conditional parameter whose condition did not hold shows as ``inactive``.
    The space's further ``objectives`` are their values at the trial's best epoch.
    """
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        history = result.metrics_dataframe
        epochs = int(metrics.get("epoch", 0) or 0)
        # infeasible: out of GPU memory on its share, this configuration cannot run there
        status = trial_status(failed=result.error is not None, ended=_ended(history), epochs=epochs,
                              max_epochs=max_epochs)  # fmt: skip
        row: dict[str, Any] = {
            "trial_id": _trial_id(result),
            "status": status,
            "epochs": epochs,
            # What it trained, summed over its reports (a PBT exploit brings another trial's time_total_s).
            "seconds": round(float(seconds_spent(history).iloc[-1]) if history is not None and len(history)
                             else float(metrics.get("time_total_s", 0.0) or 0.0), 2),  # fmt: skip
            metric: _score(result, metric=metric, mode=mode),
            f"final_{metric}": metrics.get(metric, float("nan")),
        }
        row.update({k: metrics.get(k, float("nan")) for k in FINAL_METRICS if k != metric})
        if objectives:
            row.update(_at_best(history, metric=metric, mode=mode, names=objectives))
        row.update({f"config/{k}": v for k, v in mark_inactive(result.config or {}, conditions or {}).items()})
        row["path"] = result.path
        row["error_log"] = _error_log(result) if result.error is not None else ""
        rows.append(row)
    return rows


def trial_histories(grid: tune.ResultGrid) -> dict[str, pd.DataFrame]:
    """Every trial's per-epoch reports (its progress.csv), by trial id."""
    return {_trial_id(result): result.metrics_dataframe for result in grid if result.metrics_dataframe is not None}


def _checkpoints(result: tune.Result) -> list[tuple[tune.Checkpoint, dict[str, Any]]]:
    """The trial's kept checkpoints with the metrics they were reported with.

    Tune tracks the checkpoints of single-process trials; a DDP trial's are kept by
    Ray Train and reach Tune as a ``checkpoint_path`` in the reported metrics.
    """
    if result.best_checkpoints:
        return list(result.best_checkpoints)
    history = result.metrics_dataframe
    if history is None or CHECKPOINT_PATH_KEY not in history:
        return []
    kept = []
    for row in history.dropna(subset=[CHECKPOINT_PATH_KEY]).to_dict("records"):
        if storage.exists(row[CHECKPOINT_PATH_KEY]):  # Train deletes all but the best few
            kept.append((tune.Checkpoint(row[CHECKPOINT_PATH_KEY]), row))
    return kept


def _best_checkpoint(result: tune.Result, *, metric: str, mode: str) -> tuple[tune.Checkpoint, dict[str, Any]] | None:
    """The trial's kept checkpoint with the best ``metric`` (the earliest epoch of equals); None when none scored."""
    kept = [(c, m) for c, m in _checkpoints(result) if m.get(metric) is not None and m[metric] == m[metric]]
    if not kept:
        return None
    sign = -1.0 if mode == "max" else 1.0
    return min(kept, key=lambda cm: (sign * float(cm[1][metric]), float(cm[1].get("epoch") or 0)))


def best_trial(
    grid: tune.ResultGrid, *, metric: str, mode: str, only: str | None = None
) -> tuple[tune.Checkpoint, dict, tune.Result] | None:
    """The trial ranked first (results.csv's first row, or trial ``only``): its best kept checkpoint and its metrics.

    Trials rank by ``results.table.ranked``: their best scored epoch, ties to the
    smaller trial id. A trial's best epoch is always checkpointed
    (``CheckpointPolicy``); should the first trial have no kept checkpoint (it
    failed before its first, or a search from before that rule), the next one
    in rank that has one is taken.
    """
    by_id = {_trial_id(result): result for result in grid}
    if only is not None:
        by_id = {only: by_id[only]} if only in by_id else {}
    scores = pd.DataFrame(
        {"trial_id": list(by_id), metric: [_score(r, metric=metric, mode=mode) for r in by_id.values()]}
    )
    for trial_id in ranked(scores, metric=metric, mode=mode)["trial_id"]:
        found = _best_checkpoint(by_id[trial_id], metric=metric, mode=mode)
        if found is not None:
            return (*found, by_id[trial_id])
    return None


def failed_trials(grid: tune.ResultGrid) -> list[tuple[str, str, str]]:
    """(trial id, the error's last line, path of its error log) for every failed trial."""
    failed = []
    for result in grid:
        if result.error is not None:
            lines = [line for line in str(result.error).strip().splitlines() if line.strip()]
            failed.append((_trial_id(result), lines[-1] if lines else type(result.error).__name__, _error_log(result)))
    return failed


def prune_checkpoints(
    rows: list[dict[str, Any]], *, folder: str, keep_trials: int, metric: str, mode: str, keep: Collection[str] = ()
) -> list[str]:
    """Delete the checkpoints of all but the ``keep_trials`` best trials and those in ``keep`` (a trade-off's
    front, the selected trial); return the trial ids pruned.

    Tune (single-process trials) keeps them in the trial's folder; Ray Train (DDP
    trials) in ``<folder>/train/train-<trial id>``.
    """
    order = ranked(pd.DataFrame(rows), metric=metric, mode=mode)  # as results.csv ranks them
    pruned = []
    for row in order.iloc[keep_trials:].to_dict("records"):
        trial_id = row["trial_id"]
        if trial_id in keep:
            continue
        targets = storage.subfolders(row["path"], prefix="checkpoint_")
        targets += storage.subfolders(storage.join(folder, "train", f"train-{trial_id}"), prefix="checkpoint_")
        for target in targets:
            storage.remove_tree(target)
        if targets:
            pruned.append(trial_id)
    return pruned
