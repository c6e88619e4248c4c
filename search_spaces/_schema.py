"""Parsing and validation of search spaces written as plain data.

A space is a dict, written as a YAML file (see ``cifar.yaml``): a name, a
description, the ``task`` that trains it, the ``metric`` trials report and its
``mode`` (``max`` or ``min``), ``objectives`` and ``select`` (further metrics
to trade against it, and which trial is registered: see ``objectives``), ``params`` (one
entry per hyperparameter, with its distribution, bounds, unit and a one-line
description), ``constants`` (fixed settings every trial receives), ``budget``
(the search's default size), ``trials_per_gpu`` (how many trials share a GPU
when ``--gpus-per-trial`` is not given) and ``smoke`` (the tiny budget and data
slice that ``--smoke-test`` runs). ``parse_space`` turns that dict into typed
objects and refuses anything malformed with a message that says what to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from search_spaces.exceptions import SpaceError
from search_spaces.objectives import Objective, SelectRule, check_names, parse_objectives, parse_select

KINDS = ("loguniform", "uniform", "int", "choice", "fixed")
MODES = ("max", "min")
TASKS = ("cifar", "imagefolder")  # the built-in tasks (trainables.task.BUILTIN)
SPACE_KEYS = ("name", "description", "task", "dataset", "metric", "mode", "objectives", "select", "params",
              "reference", "constants", "budget", "trials_per_gpu", "smoke")  # fmt: skip
SMOKE_KEYS = ("budget", "params", "train_size", "val_size", "test_size")
BUDGET_KEYS = ("num_samples", "max_epochs", "grace_period", "reduction_factor")


@dataclass(frozen=True)
class Param:
    """One hyperparameter: a distribution over values, with unit and meaning."""

    name: str
    kind: str
    description: str = ""
    unit: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None
    positive: bool = False  # every value must be > 0, whatever the distribution
    limits: tuple[float, float] | None = None  # every value must lie in [lo, hi]
    allowed: tuple[Any, ...] = ()  # for choices and fixed values: the only values that work
    when: dict[str, tuple[Any, ...]] | None = None  # active only where these params take one of these values
    mutable: bool = False  # may change in the middle of a trial (PBT's exploits): never a shape of the model

    def contains(self, value: Any) -> bool:
        """Whether a searcher may suggest ``value`` for this parameter (never, for a fixed one)."""
        if isinstance(value, bool):
            return self.kind == "choice" and value in self.choices
        if self.kind in ("loguniform", "uniform"):
            return isinstance(value, (int, float)) and self.low <= value <= self.high
        if self.kind == "int":
            return isinstance(value, int) and self.low <= value <= self.high
        if self.kind == "choice":
            return value in self.choices
        return False

    def describe(self) -> str:
        """The distribution in a few characters, e.g. ``log[0.001, 0.1]``."""
        if self.kind == "loguniform":
            return f"log[{self.low:g}, {self.high:g}]"
        if self.kind == "uniform":
            return f"[{self.low:g}, {self.high:g}]"
        if self.kind == "int":
            return f"int[{int(self.low)}, {int(self.high)}]"
        if self.kind == "choice":
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        return f"= {self.value}"


@dataclass(frozen=True)
class Budget:
    """How big a search is: ASHA's knobs and the number of trials."""

    num_samples: int
    max_epochs: int
    grace_period: int
    reduction_factor: int


@dataclass(frozen=True)
class Smoke:
    """What ``--smoke-test`` shrinks: the budget, some params, the data."""

    budget: Budget
    params: dict[str, Any] = field(default_factory=dict)
    train_size: int = 4000
    val_size: int = 1000
    test_size: int = 1000


@dataclass(frozen=True)
class SearchSpace:
    """A named search space: what to search, and the default budget."""

    name: str
    description: str
    dataset: str
    params: tuple[Param, ...]
    constants: dict[str, Any]
    budget: Budget
    smoke: Smoke | None  # None: the file has no smoke section, and --smoke-test is refused
    reference: dict[str, Any] = field(default_factory=dict)  # a known-good config, tried first
    trials_per_gpu: int = 1  # trials sharing each GPU when --gpus-per-trial is not given
    task: str = "cifar"  # what trains a trial: one of TASKS
    # Reported by every trial each epoch; ASHA, the searcher and the results go by it. None where the file
    # names none: its task decides (trainables.task.resolve_objective), and the search's settings hold the result.
    metric: str | None = None
    mode: str | None = None  # whether a higher or a lower metric is better (None: the metric's direction)
    # Further metrics to trade against the metric (search_spaces.objectives), and which trial is registered.
    objectives: tuple[Objective, ...] = ()
    select: SelectRule | None = None
    source: str = ""  # the YAML file the space was read from

    @property
    def ref(self) -> str:
        """What finds this space again (``--space``, ``search.json``): its file, or a built-in's name."""
        return self.source or self.name

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.params)
        raise SpaceError(f"space '{self.name}' has no parameter '{name}'; its parameters are: {known}")

    def with_param(self, new: Param) -> SearchSpace:
        """A copy with one parameter replaced (validated)."""
        _check_param(new, space=self.name)
        params = tuple(new if p.name == new.name else p for p in self.params)
        return replace(self, params=params)


def _number(raw: Any, *, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise SpaceError(f"{what} is {raw!r}, but must be a finite number")
    return float(raw)


def _check_param(p: Param, *, space: str) -> None:
    where = f"space '{space}', parameter '{p.name}'"
    if p.kind not in KINDS:
        raise SpaceError(f"{where}: kind is '{p.kind}', but must be one of {', '.join(KINDS)}")
    if p.kind in ("loguniform", "uniform", "int"):
        low = _number(p.low, what=f"{where}: low")
        high = _number(p.high, what=f"{where}: high")
        if low >= high:
            raise SpaceError(
                f"{where}: low ({low:g}) must be below high ({high:g}); "
                f"swap them, or fix the value with a single number"
            )
        if (p.kind == "loguniform" or p.positive) and low <= 0:
            raise SpaceError(
                f"{where}: low is {low:g}, but must be > 0 "
                f"({'a log scale' if p.kind == 'loguniform' else 'the value'} cannot reach zero or below)"
            )
        if p.kind == "int" and (low != int(low) or high != int(high)):
            raise SpaceError(f"{where}: bounds {low:g}, {high:g} must be whole numbers")
    elif p.kind == "choice":
        if not p.choices:
            raise SpaceError(f"{where}: a choice needs at least one value")
        if p.positive:
            for c in p.choices:
                if _number(c, what=f"{where}: choice") <= 0:
                    raise SpaceError(f"{where}: choice {c!r} must be > 0")
    elif p.positive and _number(p.value, what=f"{where}: value") <= 0:
        raise SpaceError(f"{where}: value is {p.value!r}, but must be > 0")
    if not isinstance(p.mutable, bool):
        raise SpaceError(f"{where}: mutable is {p.mutable!r}, but must be true or false")
    if p.mutable and p.kind == "fixed":
        raise SpaceError(f"{where}: a fixed value cannot be mutable; give it a range or choices, or drop mutable")
    if p.allowed and p.kind in ("choice", "fixed"):
        for v in p.choices if p.kind == "choice" else (p.value,):
            if v not in p.allowed:
                raise SpaceError(f"{where}: {v!r} is not one of {', '.join(map(str, p.allowed))}")
    if p.limits is not None:
        lo, hi = p.limits
        values = (p.low, p.high) if p.kind in ("loguniform", "uniform", "int") else p.choices or (p.value,)
        for v in values:
            if not lo <= _number(v, what=f"{where}: value") <= hi:
                raise SpaceError(f"{where}: {v!r} is outside the allowed range [{lo:g}, {hi:g}]")


def _check_keys(raw: Any, known: tuple[str, ...] | None, *, where: str) -> dict[str, Any]:
    """``raw`` as a dict whose keys are all ``known`` (any, if None): a typo is refused, not ignored."""
    if not isinstance(raw, dict):
        raise SpaceError(f"{where} must be a mapping of keys to values, not {type(raw).__name__}")
    unknown = [] if known is None else [k for k in raw if k not in known]
    if unknown:
        raise SpaceError(f"{where}: unknown key '{unknown[0]}'; the keys allowed there are: {', '.join(known)}")
    return raw


def _parse_budget(raw: Any, *, where: str) -> Budget:
    raw = _check_keys(raw, BUDGET_KEYS, where=where)
    try:
        values = {k: raw[k] for k in BUDGET_KEYS}
    except KeyError as e:
        raise SpaceError(f"{where} lacks {e.args[0]}: give it as a whole number") from None
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpaceError(f"{where}: {k} is {v!r}, but must be a whole number")
    budget = Budget(**values)
    check_budget(budget)
    return budget


def _parse_metric(raw: dict[str, Any], *, space: str) -> tuple[str | None, str | None]:
    metric, mode = raw.get("metric"), raw.get("mode")
    if metric is not None and (not isinstance(metric, str) or not metric.isidentifier()):
        raise SpaceError(f"space '{space}': metric is {metric!r}, but must be the name of a metric its trials report")
    if mode is not None and mode not in MODES:
        raise SpaceError(f"space '{space}': mode is {mode!r}, but must be max (higher is better) or min")
    return metric, mode


def _parse_task(raw: Any, *, space: str) -> str:
    """A built-in task's name or ``package.module:attribute`` (whether it imports is checked before a search)."""
    if raw in TASKS:
        return raw
    module, sep, attribute = str(raw).partition(":")
    if not isinstance(raw, str) or not sep or not all(p.isidentifier() for p in (*module.split("."), attribute)):
        raise SpaceError(
            f"space '{space}': task is {raw!r}, but must be one of the built-in tasks ({', '.join(TASKS)}) "
            f"or your own as package.module:attribute"
        )
    return raw


def _parse_trials_per_gpu(raw: Any, *, space: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise SpaceError(f"space '{space}': trials_per_gpu is {raw!r}, but must be a whole number >= 1")
    return raw


def check_budget(budget: Budget) -> None:
    """Refuse a budget ASHA cannot run, naming the flag to change."""
    if budget.num_samples < 1:
        raise SpaceError(f"--num-samples is {budget.num_samples}, but must be >= 1")
    if budget.max_epochs < 1:
        raise SpaceError(f"--max-epochs is {budget.max_epochs}, but must be >= 1")
    if not 1 <= budget.grace_period <= budget.max_epochs:
        raise SpaceError(
            f"--grace-period is {budget.grace_period}, but must be between 1 and --max-epochs ({budget.max_epochs})"
        )
    if budget.reduction_factor < 2:
        raise SpaceError(f"--reduction-factor is {budget.reduction_factor}, but must be >= 2")


def smoke_of(space: SearchSpace) -> Smoke:
    """The space's smoke section, which ``--smoke-test`` runs; refused with the fix where the file has none."""
    if space.smoke is None:
        raise SpaceError(
            f"--smoke-test runs the space's smoke section, and space '{space.name}' has none: add one to "
            f"{space.source or 'the space'}, e.g. `smoke: {{budget: {{num_samples: 2, max_epochs: 2, grace_period: 1, "
            f"reduction_factor: 2}}}}` (see search_spaces/cifar.yaml), or run without --smoke-test"
        )
    return space.smoke


def parse_space(raw: dict[str, Any], *, source: str = "") -> SearchSpace:
    """Validate a space written as plain data (read from the file ``source``, if any) and return it typed."""
    raw = _check_keys(raw, SPACE_KEYS, where="the space")
    name = raw.get("name") or "<unnamed>"
    if not isinstance(name, str):
        raise SpaceError(f"the space's name is {name!r}, but must be a string")
    params = []
    param_keys = tuple(f.name for f in fields(Param) if f.name != "name")
    for pname, spec in _check_keys(raw.get("params", {}), None, where=f"space '{name}': params").items():
        spec = dict(_check_keys(spec, param_keys, where=f"space '{name}', parameter '{pname}'"))
        for key in ("choices", "limits", "allowed"):
            if key in spec:
                if not isinstance(spec[key], (list, tuple)):
                    raise SpaceError(f"space '{name}', parameter '{pname}': {key} must be a list, e.g. [1, 2]")
                spec[key] = tuple(spec[key])
        if "when" in spec:
            when = _check_keys(spec["when"], None, where=f"space '{name}', parameter '{pname}': when")
            spec["when"] = {k: tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in when.items()}
        if "kind" not in spec:
            raise SpaceError(f"space '{name}', parameter '{pname}' needs a kind (loguniform, uniform, int, choice "
                             f"or fixed)")  # fmt: skip
        p = Param(name=pname, **spec)
        _check_param(p, space=name)
        params.append(p)
    if not params:
        raise SpaceError(f"space '{name}' has no params")
    smoke = None
    if raw.get("smoke") is not None:  # optional: without it, only --smoke-test is refused
        smoke_raw = _check_keys(raw["smoke"], SMOKE_KEYS, where=f"space '{name}': smoke")
        smoke = Smoke(
            budget=_parse_budget(smoke_raw.get("budget", {}), where=f"space '{name}': smoke budget"),
            params=dict(_check_keys(smoke_raw.get("params", {}), None, where=f"space '{name}': smoke params")),
            **{k: int(smoke_raw[k]) for k in ("train_size", "val_size", "test_size") if k in smoke_raw},
        )
    metric, mode = _parse_metric(raw, space=name)
    space = SearchSpace(
        name=name,
        description=raw.get("description", ""),
        dataset=raw.get("dataset", ""),
        params=tuple(params),
        constants=dict(_check_keys(raw.get("constants", {}), None, where=f"space '{name}': constants")),
        budget=_parse_budget(raw.get("budget", {}), where=f"space '{name}': budget"),
        smoke=smoke,
        reference=dict(_check_keys(raw.get("reference", {}), None, where=f"space '{name}': reference")),
        trials_per_gpu=_parse_trials_per_gpu(raw.get("trials_per_gpu", 1), space=name),
        task=_parse_task(raw.get("task", "cifar"), space=name),
        metric=metric,
        mode=mode,
        objectives=parse_objectives(raw.get("objectives"), space=name),
        select=parse_select(raw.get("select"), space=name),
        source=source,
    )
    if metric is not None:  # else its task names the metric, and the search's settings check them then
        check_names(space.objectives, space.select, metric=metric, space=name)
    for pname in (*(smoke.params if smoke else {}), *space.reference):
        space.param(pname)  # smoke overrides and the reference name real parameters
    return order_conditions(space)


def order_conditions(space: SearchSpace) -> SearchSpace:
    """Check every ``when`` and order the parameters so that each comes after those it depends on.

    A condition names another parameter of the space with discrete values (a
    choice or a fixed value) and values it can take; conditions cannot go round
    in a circle. The order of the other parameters is kept.
    """
    by_name = {p.name: p for p in space.params}
    for p in space.params:
        for parent, values in (p.when or {}).items():
            where = f"space '{space.name}', parameter '{p.name}': when {parent}"
            q = by_name.get(parent)
            if q is None or q is p:
                raise SpaceError(f"{where}: '{parent}' is not another parameter of this space")
            if q.kind not in ("choice", "fixed"):
                raise SpaceError(f"{where}: '{parent}' is {q.kind}; a condition needs a choice or a fixed value")
            possible = q.choices if q.kind == "choice" else (q.value,)
            missing = [v for v in values if v not in possible]
            if missing:
                raise SpaceError(f"{where}: {missing[0]!r} is not one of its values ({', '.join(map(str, possible))})")
    ordered: list[Param] = []
    remaining = list(space.params)
    while remaining:
        ready = [p for p in remaining if all(parent in {q.name for q in ordered} for parent in (p.when or {}))]
        if not ready:
            names = ", ".join(p.name for p in remaining)
            raise SpaceError(f"space '{space.name}': the conditions of {names} depend on each other in a circle")
        ordered += ready
        remaining = [p for p in remaining if p not in ready]
    return replace(space, params=tuple(ordered))


def conditions(space: SearchSpace) -> dict[str, dict[str, tuple[Any, ...]]]:
    """The space's conditional parameters as plain data, parents first: name -> ``when`` (what trials receive)."""
    return {p.name: dict(p.when) for p in space.params if p.when}


INACTIVE = "inactive"  # how results.csv and MLflow show a parameter whose condition does not hold


def condition_holds(when: dict[str, tuple[Any, ...]] | None, config: dict[str, Any]) -> bool:
    """Whether every parent named in ``when`` is in ``config`` with one of its listed values."""
    return all(parent in config and config[parent] in values for parent, values in (when or {}).items())


def drop_inactive(config: dict[str, Any], conds: dict[str, dict[str, tuple[Any, ...]]]) -> dict[str, Any]:
    """``config`` without the conditional parameters whose conditions do not hold (in the space's order)."""
    out = dict(config)
    for name, when in conds.items():  # parents come first: order_conditions put them there
        if not condition_holds(when, out):
            out.pop(name, None)
    return out


def mark_inactive(config: dict[str, Any], conds: dict[str, dict[str, tuple[Any, ...]]]) -> dict[str, Any]:
    """``config`` with every inactive conditional parameter shown as ``INACTIVE``, for people to read."""
    active = drop_inactive(config, conds)
    return {**config, **{name: INACTIVE for name in conds if name not in active}}
