"""Search spaces, kept as data: YAML files, built in (``search_spaces/*.yaml``) or a user's own.

``--space`` takes a built-in's name or the path of a YAML file written like
``search_spaces/cifar.yaml``.

- ``_schema``: parsing and validating a space written as plain data (``SearchSpace``, ``Param``, ``Budget``).
- ``objectives``: a space's further objectives (a trade-off), the Pareto front of a search's trials and the
  ``select`` rule that picks its registered model.
- ``overrides``: ``--param NAME=SPEC``, a parameter's bounds, choices or value changed.
- ``exceptions``: every error the project raises for a user, under ``HpsearchError``
  (at the bottom of the layers, so every package can raise them).

>>> from search_spaces import get_space
>>> get_space("cifar").param("lr").describe()
'log[3, 30]'
"""

from __future__ import annotations

from pathlib import Path

import yaml

from search_spaces._schema import (
    INACTIVE,
    Budget,
    Param,
    SearchSpace,
    Smoke,
    check_budget,
    condition_holds,
    conditions,
    drop_inactive,
    mark_inactive,
    parse_space,
    smoke_of,
)
from search_spaces.exceptions import SpaceError
from search_spaces.objectives import PARETO, Bound, Objective, SelectRule, eligible, pareto_mask, rule_from_data
from search_spaces.overrides import apply_overrides

BUILTIN_DIR = Path(__file__).resolve().parent
SUFFIXES = (".yaml", ".yml")


def space_names() -> list[str]:
    """The names of the built-in spaces, sorted."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def is_path(text: str) -> bool:
    """Whether ``--space`` names a file (a YAML suffix or a folder in it) rather than a built-in."""
    return text.endswith(SUFFIXES) or "/" in text


def load_space_file(path: str | Path) -> SearchSpace:
    """Read and validate the space in the YAML file ``path``; every error names the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpaceError(
            f"no space file {path}: check the path, or use a built-in space ({', '.join(space_names())})"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceError(f"space file {path} cannot be read ({e}): pass a readable YAML file") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpaceError(f"{path}: not valid YAML{where} ({problem}): fix the syntax") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: a space file holds keys such as name, task, metric, params: see {_example()}")
    raw.setdefault("name", path.stem)
    try:
        return parse_space(raw, source="" if path.parent == BUILTIN_DIR else str(path))
    except SpaceError as e:
        raise SpaceError(f"{path}: {e}") from None


def get_space(name: str) -> SearchSpace:
    """The built-in space ``name``, or the space in the YAML file at that path."""
    if is_path(name):
        return load_space_file(name)
    builtin = BUILTIN_DIR / f"{name}.yaml"
    if not builtin.is_file():
        raise SpaceError(
            f"unknown search space '{name}'; known spaces: {', '.join(space_names())} "
            f"(or the path of a space file such as {_example()})"
        )
    return load_space_file(builtin)


def _example() -> str:
    return "search_spaces/cifar.yaml"


def searched_space(ref: str, *, smoke_test: bool, params: list[str]) -> SearchSpace:
    """What a search searched: the space ``ref`` (a built-in's name or a file) with the smoke test's and the
    ``--param`` overrides applied."""
    space = get_space(ref)
    if smoke_test:
        space = apply_overrides(space, smoke_of(space).params)
    return apply_overrides(space, params)


def format_spaces() -> str:
    """A readable listing of every built-in space (parameters, units, bounds), and how to write one."""
    lines = []
    for name in space_names():
        space = get_space(name)
        b = space.budget
        lines.append(f"{name}: {space.description}")
        lines.append(f"  task {space.task}, metric {space.metric or 'as its task decides'} ({space.mode or '-'})"
                     + "".join(f", objective {o.metric} ({o.mode})" for o in space.objectives))
        lines.append(
            f"  default budget: {b.num_samples} trials, max {b.max_epochs} epochs, "
            f"grace period {b.grace_period}, reduction factor {b.reduction_factor}, "
            f"{space.trials_per_gpu} trial(s) per GPU"
        )
        for p in space.params:
            unit = f" ({p.unit})" if p.unit else ""
            mutable = " [mutable]" if p.mutable else ""
            lines.append(f"  {p.name:<16} {p.describe():<22} {p.description}{unit}{mutable}")
        if space.constants:
            fixed = ", ".join(f"{k}={v}" for k, v in space.constants.items())
            lines.append(f"  fixed: {fixed}")
    lines.append(
        f"\nA space of your own: copy {_example()}, change its params, budget and reference, "
        "and pass the file: --space my_space.yaml\n[mutable]: a value that may change in the middle of a trial, "
        "which --scheduler pbt perturbs (mark one with mutable: true)"
    )
    return "\n".join(lines)


__all__ = [
    "INACTIVE",
    "PARETO",
    "Bound",
    "Objective",
    "SelectRule",
    "eligible",
    "pareto_mask",
    "rule_from_data",
    "BUILTIN_DIR",
    "Budget",
    "Param",
    "SearchSpace",
    "Smoke",
    "SpaceError",
    "apply_overrides",
    "check_budget",
    "condition_holds",
    "conditions",
    "drop_inactive",
    "mark_inactive",
    "format_spaces",
    "get_space",
    "is_path",
    "load_space_file",
    "parse_space",
    "searched_space",
    "smoke_of",
    "space_names",
]
