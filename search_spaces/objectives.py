"""Searches over a trade-off: a space's further objectives, the Pareto front of its trials, and the select rule.

A space names its metric (``metric``, ``mode``) and may name more under
``objectives``, each a metric its trials report with its mode::

    metric: val_acc
    mode: max
    objectives:
      latency_ms: min
    select:                     # which trial of the search becomes its registered model
      best: val_acc             # the best by this objective (default: the metric) ...
      where:                    # ... among the trials within these bounds
        latency_ms: {max: 2.0}  # at most 2.0 ms

The first metric is still the one schedulers judge trials by (ASHA, HyperBand,
the median rule and PBT stop or exploit on it alone); the searcher models every
objective; results.csv marks the trials no other trial beats on every objective
(``pareto``), and the select rule picks the registered model among them.
Plain data and pandas: no Ray, no tuner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from search_spaces.exceptions import SpaceError

MODES = ("max", "min")
BOUND_KEYS = {"max": "<=", "min": ">="}  # {max: 2.0}: at most 2.0; {min: 0.9}: at least 0.9
SELECT_KEYS = ("best", "where")
PARETO = "pareto"  # results.csv's column: True for the trials on the front


@dataclass(frozen=True)
class Objective:
    """A metric the trials report, and whether higher (max) or lower (min) is better."""

    metric: str
    mode: str


@dataclass(frozen=True)
class Bound:
    """A limit on one metric that a selected trial must keep: ``latency_ms <= 2``."""

    metric: str
    side: str  # "max": the value may be at most ``value``; "min": at least
    value: float

    def holds(self, value: Any) -> bool:
        try:
            v = float(value)
        except (TypeError, ValueError):
            return False
        if not math.isfinite(v):
            return False
        return v <= self.value if self.side == "max" else v >= self.value

    def describe(self) -> str:
        return f"{self.metric} {BOUND_KEYS[self.side]} {self.value:g}"


@dataclass(frozen=True)
class SelectRule:
    """Which trial a search registers: the best by ``best`` among those within every bound of ``where``."""

    best: str  # "" until resolved: the search's metric
    where: tuple[Bound, ...] = ()

    def describe(self, *, mode: str) -> str:
        """``best val_acc (max) among trials with latency_ms <= 2``."""
        text = f"best {self.best} ({mode})"
        if self.where:
            text += " among trials with " + " and ".join(b.describe() for b in self.where)
        return text

    def as_data(self) -> dict[str, Any]:
        where: dict[str, dict[str, float]] = {}
        for b in self.where:  # a metric bounded on both sides keeps both
            where.setdefault(b.metric, {})[b.side] = b.value
        return {"best": self.best, "where": where}

    def plain(self, *, metric: str) -> bool:
        """Whether the rule is what a search without one does: the best by ``metric``, no bounds."""
        return not self.where and self.best in ("", metric)


def _metric_name(raw: Any, *, where: str) -> str:
    if not isinstance(raw, str) or not raw.isidentifier():
        raise SpaceError(f"{where}: {raw!r} is not a metric's name (a name its trials report, e.g. latency_ms)")
    return raw


def parse_objectives(raw: Any, *, space: str) -> tuple[Objective, ...]:
    """The space's ``objectives:`` (a mapping of metric to max or min) beside its metric; () where it has none."""
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(
            f"space '{space}': objectives must map each further metric to max or min, e.g. "
            f"`objectives: {{latency_ms: min}}`"
        )
    out = []
    for name, mode in raw.items():
        name = _metric_name(name, where=f"space '{space}': objectives")
        if mode not in MODES:
            raise SpaceError(
                f"space '{space}': objective {name} has mode {mode!r}, but must be max (higher is better) or min"
            )
        out.append(Objective(name, mode))
    return tuple(out)


def parse_select(raw: Any, *, space: str) -> SelectRule | None:
    """The space's ``select:`` rule (None where it has none: the best by the metric is registered)."""
    if raw is None:
        return None
    where = f"space '{space}': select"
    if not isinstance(raw, dict) or any(k not in SELECT_KEYS for k in raw):
        raise SpaceError(
            f"{where} takes `best` (the objective to maximise or minimise) and `where` (bounds, e.g. "
            f"`where: {{latency_ms: {{max: 2.0}}}}`)"
        )
    best = "" if raw.get("best") is None else _metric_name(raw["best"], where=f"{where}: best")
    bounds = []
    limits = raw.get("where") or {}
    if not isinstance(limits, dict):
        raise SpaceError(f"{where}: where must map metrics to bounds, e.g. `where: {{latency_ms: {{max: 2.0}}}}`")
    for name, spec in limits.items():
        name = _metric_name(name, where=f"{where}: where")
        if not isinstance(spec, dict) or not spec or any(k not in BOUND_KEYS for k in spec):
            raise SpaceError(
                f"{where}: the bound on {name} is {spec!r}; write {{max: VALUE}} (at most) or {{min: VALUE}} "
                f"(at least), or both"
            )
        for side, value in spec.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SpaceError(f"{where}: {name}'s {side} is {value!r}, but must be a finite number")
            bounds.append(Bound(name, side, float(value)))
    return SelectRule(best=best, where=tuple(bounds))


def objectives_of(metric: str, mode: str, further: Mapping[str, str]) -> tuple[Objective, ...]:
    """A search's objectives: its metric first, then the further ones (metric -> mode, as search.json keeps them)."""
    return (Objective(metric, mode), *(Objective(str(k), str(v)) for k, v in further.items()))


def rule_from_data(raw: dict[str, Any] | None, *, metric: str) -> SelectRule:
    """The rule a search saved (``SelectRule.as_data``), or the plain one: the best by ``metric``."""
    if not raw:
        return SelectRule(best=metric)
    rule = parse_select(raw, space="saved")
    return SelectRule(best=rule.best or metric, where=rule.where)


def check_names(
    objectives: Sequence[Objective], rule: SelectRule | None, *, metric: str, space: str
) -> None:
    """Every objective differs from the metric and from each other; the rule names only the space's objectives."""
    names = [metric, *(o.metric for o in objectives)]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise SpaceError(f"space '{space}': {twice} is named twice among metric and objectives; name each once")
    if rule is None:
        return
    for name in [rule.best or metric, *(b.metric for b in rule.where)]:
        if name not in names:
            raise SpaceError(
                f"space '{space}': select names {name}, which is not one of the search's objectives "
                f"({', '.join(names)}); add it under objectives, or bound one of those"
            )


def _missing(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(np.nan, index=frame.index, dtype=float)


def pareto_mask(frame: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series:
    """True for each row that no other row beats: at least as good on every objective and better on one.

    A row missing an objective's value (a trial that failed, diverged or never
    reported it) is never on the front; equal rows are on it together.
    """
    if frame.empty:
        return pd.Series([], dtype=bool, index=frame.index)
    cols = []
    for o in objectives:
        values = pd.to_numeric(frame[o.metric], errors="coerce") if o.metric in frame else _missing(frame)
        cols.append((-values if o.mode == "max" else values).to_numpy(dtype=float))  # lower is better, each
    costs = np.stack(cols, axis=1)
    valid = np.isfinite(costs).all(axis=1)
    front = np.zeros(len(frame), dtype=bool)
    points = costs[valid]
    if len(points):
        no_worse = (points[:, None, :] <= points[None, :, :]).all(axis=2)  # [j, i]: j is no worse than i anywhere
        better = (points[:, None, :] < points[None, :, :]).any(axis=2)
        dominated = (no_worse & better).any(axis=0)
        front[np.flatnonzero(valid)] = ~dominated
    return pd.Series(front, index=frame.index, name=PARETO)


def eligible(frame: pd.DataFrame, rule: SelectRule) -> pd.Series:
    """True for each row within every bound of ``rule`` (a row missing a bounded value is not)."""
    mask = pd.Series(True, index=frame.index)
    for b in rule.where:
        column = frame[b.metric] if b.metric in frame else _missing(frame)
        mask &= column.map(b.holds).astype(bool)
    return mask
