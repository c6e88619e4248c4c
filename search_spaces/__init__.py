"""Named search spaces, kept as plain data.

>>> from search_spaces import get_space
>>> get_space("cifar").param("lr").describe()
'log[3, 30]'
"""

from __future__ import annotations

from search_spaces import cifar
from search_spaces._schema import Budget, Param, SearchSpace, Smoke, check_budget, parse_space
from search_spaces.exceptions import SpaceError
from search_spaces.overrides import apply_overrides

_RAW = {raw["name"]: raw for raw in (cifar.SPACE,)}


def space_names() -> list[str]:
    """The names of all registered spaces, sorted."""
    return sorted(_RAW)


def get_space(name: str) -> SearchSpace:
    """The space registered as ``name``; an unknown name lists the known ones."""
    if name not in _RAW:
        raise SpaceError(f"unknown search space '{name}'; known spaces: {', '.join(space_names())}")
    return parse_space(_RAW[name])


def format_spaces() -> str:
    """A readable listing of every space: its parameters, units and bounds."""
    lines = []
    for name in space_names():
        space = get_space(name)
        b = space.budget
        lines.append(f"{name}: {space.description}")
        lines.append(
            f"  default budget: {b.num_samples} trials, max {b.max_epochs} epochs, "
            f"grace period {b.grace_period}, reduction factor {b.reduction_factor}, "
            f"{space.trials_per_gpu} trial(s) per GPU"
        )
        for p in space.params:
            unit = f" ({p.unit})" if p.unit else ""
            lines.append(f"  {p.name:<16} {p.describe():<22} {p.description}{unit}")
        if space.constants:
            fixed = ", ".join(f"{k}={v}" for k, v in space.constants.items())
            lines.append(f"  fixed: {fixed}")
    return "\n".join(lines)


__all__ = [
    "Budget",
    "Param",
    "SearchSpace",
    "Smoke",
    "SpaceError",
    "apply_overrides",
    "check_budget",
    "format_spaces",
    "get_space",
    "parse_space",
    "space_names",
]
