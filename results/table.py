"""A finished search as a table: ``results.csv``, ``best_config.json`` and the leaderboard.

One row per trial: ``trial_id``, ``status`` (completed, stopped early by the scheduler,
or error), ``epochs``, ``seconds``, ``val_acc`` (the trial's best, the value
its kept checkpoint scored), the final metrics, and the config as
``config/<name>`` columns. A search over a trade-off adds its further
objectives (their values at the trial's best epoch) and ``pareto``: whether
the trial is on the front (no other trial as good on every objective and
better on one).
"""

from __future__ import annotations

import io
import json
import shlex
from collections.abc import Sequence
from typing import Any

import pandas as pd

from results import storage
from results.record import SEARCH_JSON as SEARCH_JSON  # its home is results.record; still importable from here
from results.record import read as read_record
from search_spaces import PARETO, Objective, SelectRule, eligible, pareto_mask
from search_spaces.exceptions import ResultsError

RESULTS_CSV = "results.csv"
BEST_CONFIG = "best_config.json"
PROVENANCE_JSON = "provenance.json"  # the keys of a search's data and training code (tuner.driver.provenance)
DEFAULT_TOP = 20  # rows of the leaderboard; python -m results FOLDER --all shows every one


EARLY_END_FLAGS = ("diverged", "infeasible")  # a report that ends a trial for good and carries no score


def scored_epochs(history: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The epochs of a trial's history that scored: not the report that ended it early, not a missing metric."""
    for flag in EARLY_END_FLAGS:
        if flag in history:
            history = history[history[flag].fillna(0) == 0]
    return history.dropna(subset=[metric]) if metric in history else history.iloc[0:0]


def seconds_spent(history: pd.DataFrame) -> pd.Series:
    """The seconds a trial had trained by each report: the sum of its reports' own times.

    Not Tune's ``time_total_s``: a trial that PBT continues from another's
    checkpoint takes that trial's total with it, which would count its time twice.
    """
    if "time_this_iter_s" in history:
        return history["time_this_iter_s"].astype(float).fillna(0.0).cumsum()
    return history["time_total_s"].astype(float)


def trial_status(*, failed: bool, ended: str | None, epochs: int, max_epochs: int) -> str:
    """``error``, the early-end flag that ended it (``diverged``, ``infeasible``), ``completed`` or ``stopped``."""
    if failed:
        return "error"
    if ended:
        return ended
    return "completed" if epochs >= max_epochs else "stopped"



def _rank_key(column: pd.Series) -> pd.Series:
    # trial ids compare as text whatever read_csv made of them; a score that is not a number is no score
    return column.astype(str) if column.name == "trial_id" else pd.to_numeric(column, errors="coerce")


def ranked(frame: pd.DataFrame, *, metric: str, mode: str) -> pd.DataFrame:
    """``frame`` best first: the rule every ranking of trials follows (results.csv, the best trial, pruning).

    By ``metric`` (each trial's best scored epoch; highest first for mode max,
    lowest for min), ties broken by the smaller ``trial_id``; trials without a
    score last. A stable sort, so equal keys keep the order they came in.
    """
    by = [c for c in (metric, "trial_id") if c in frame]
    if not by:
        return frame
    ascending = [mode == "min" if c == metric else True for c in by]
    return frame.sort_values(by, ascending=ascending, na_position="last", kind="stable", key=_rank_key)


def mark_front(rows: list[dict[str, Any]], objectives: Sequence[Objective]) -> list[str]:
    """Set each row's ``pareto`` (True: no other trial is as good on every objective and better on one); return the
    trial ids on the front, best first by the metric. A search with one objective has no such column."""
    if len(objectives) < 2 or not rows:
        return []
    frame = pd.DataFrame(rows)
    front = pareto_mask(frame, objectives)
    for row, on in zip(rows, front.tolist(), strict=True):
        row[PARETO] = bool(on)
    first = objectives[0]  # the metric: the front listed as results.csv ranks it
    return [str(t) for t in ranked(frame[front], metric=first.metric, mode=first.mode)["trial_id"]]


def select_order(rows: list[dict[str, Any]], rule: SelectRule, objectives: Sequence[Objective]) -> list[str]:
    """The trial ids the select ``rule`` allows, best first by ``rule.best``.

    Equal values of ``rule.best`` are ranked by the other ``objectives`` in
    turn, then by the smaller trial id: the first is then on the Pareto front
    (no allowed trial beats it on every objective), not one that an equally
    accurate, smaller or faster trial beats.
    """
    frame = pd.DataFrame(rows)
    if frame.empty or rule.best not in frame:
        return []
    scored = pd.Series(True, index=frame.index)
    for name in {rule.best, *(o.metric for o in objectives)}:  # a trial missing one (failed, diverged) is no choice
        scored &= pd.to_numeric(frame[name], errors="coerce").notna() if name in frame else False
    allowed = frame[eligible(frame, rule) & scored]
    modes = {o.metric: o.mode for o in objectives}
    by = [rule.best, *(o.metric for o in objectives if o.metric != rule.best and o.metric in frame), "trial_id"]
    order = allowed.sort_values(by, ascending=[c == "trial_id" or modes[c] == "min" for c in by], na_position="last",
                                kind="stable", key=_rank_key)  # fmt: skip
    return [str(t) for t in order["trial_id"]]


def unmet(rows: list[dict[str, Any]], rule: SelectRule, objectives: Sequence[Objective]) -> bool:
    """Whether trials scored on every objective but none kept within the rule's bounds (nothing to register)."""
    unbounded = SelectRule(best=rule.best)
    return bool(rule.where) and not select_order(rows, rule, objectives) and bool(select_order(rows, unbounded,
                                                                                              objectives))


def objective(folder: str) -> tuple[str, str]:
    """The metric and mode a search went by, from its ``search.json`` (``val_acc``, max, where it has none)."""
    record = read_record(folder, missing_ok=True)
    return record.metric, record.mode


def write(
    folder: str, rows: list[dict[str, Any]], best: dict[str, Any] | None, *, metric: str, mode: str
) -> pd.DataFrame:
    """Write ``results.csv`` (one row per trial) and, when there is a best trial, ``best_config.json``.

    Returns the table as written, best first by ``metric`` and ``mode``.
    """
    frame = ranked(pd.DataFrame(rows), metric=metric, mode=mode)
    storage.write_text(storage.join(folder, RESULTS_CSV), frame.to_csv(index=False))
    if best is not None:
        storage.write_text(storage.join(folder, BEST_CONFIG), json.dumps(best, indent=2, default=str) + "\n")
    return frame


def load(folder: str) -> pd.DataFrame:
    """A finished search's trials as a DataFrame, best first."""
    path = storage.join(str(folder), RESULTS_CSV)
    if not storage.exists(path):
        if storage.exists(str(folder)):
            raise ResultsError(
                f"{folder} has no {RESULTS_CSV}: the search did not finish; "
                f"continue it with: python run_tune.py --name <name> --resume"
            )
        raise ResultsError(f"no search folder at {folder}: pass the folder a search wrote, e.g. ray_results/<name>")
    return _read_csv(path)


def _read_csv(path: str) -> pd.DataFrame:
    # A trial id is text: read as a number, "00012345" would lose its zeros and "98e71646" become inf.
    return pd.read_csv(io.StringIO(storage.read_text(path)), dtype={"trial_id": str})


def load_history(trial_path: str) -> pd.DataFrame | None:
    """One trial's reports as its progress.csv in ``trial_path`` holds them; None if it has none."""
    path = storage.join(trial_path, "progress.csv")
    return _read_csv(path) if trial_path and storage.exists(path) else None


def load_histories(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each trial's progress.csv, from the trial folders results.csv names."""
    found = {str(row["trial_id"]): load_history(str(row.get("path") or "")) for row in frame.to_dict("records")}
    return {trial_id: history for trial_id, history in found.items() if history is not None}


def load_best(folder: str) -> dict[str, Any]:
    """The contents of ``best_config.json``."""
    return json.loads(storage.read_text(storage.join(str(folder), BEST_CONFIG)))


def _fmt(value: Any) -> str:
    if isinstance(value, str):  # a column read back as text (a conditional parameter's "inactive" beside numbers)
        try:
            value = float(value) if "." in value or "e" in value.lower() else value
        except ValueError:
            pass
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.4g}"
    return str(value)


def leaderboard(
    frame: pd.DataFrame,
    *,
    metric: str,
    mode: str,
    top: int | None = DEFAULT_TOP,
    folder: str | None = None,
    objectives: Sequence[str] = (),
) -> str:
    """The trials best first (``ranked``), at most ``top`` of them (None: every one): config, metric, epochs, seconds.

    The first row is the trial ranked first, whose checkpoint the search registers
    as its best (``tuner.driver.summary.best_trial``). When some trials are left out, the
    last line says how many are shown of how many and, given the search's
    ``folder``, the command that shows every one.
    """
    if top is not None and top < 1:
        raise ValueError(f"top is {top}, but must be >= 1 (or None for every trial)")
    if frame.empty:
        return "(no trials)"
    config_cols = [c for c in frame.columns if c.startswith("config/")]
    varying = [c for c in config_cols if frame[c].nunique(dropna=False) > 1] or config_cols
    cols = ["trial_id", metric, *objectives, PARETO, "confirmed", "epochs", "seconds", "status", *varying]
    cols = [c for c in cols if c in frame]
    order = ranked(frame, metric=metric, mode=mode)
    shown = (order if top is None else order.head(top))[cols]
    headers = [c.removeprefix("config/") for c in cols]
    cells = [[str(v) if c == "trial_id" else _fmt(v) for c, v in zip(cols, row, strict=True)]
             for row in shown.itertuples(index=False)]  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    if len(shown) < len(frame):
        every = f" ({RESULTS_CSV} has every one)"
        if folder:
            every = f"; every one: python -m results {shlex.quote(folder)} --all"
        lines.append(f"{len(shown)} of {len(frame)} trials shown{every}")
    return "\n".join(lines)
