"""A search space (plain data) as Ray Tune's ``param_space``."""

from __future__ import annotations

from typing import Any

from ray import tune

from search_spaces import Param, SearchSpace


def _domain(p: Param) -> Any:
    if p.kind == "loguniform":
        return tune.loguniform(p.low, p.high)
    if p.kind == "uniform":
        return tune.uniform(p.low, p.high)
    if p.kind == "int":
        return tune.randint(int(p.low), int(p.high) + 1)  # Tune's upper bound is exclusive
    if p.kind == "choice":
        return tune.choice(list(p.choices))
    return p.value


def param_space(space: SearchSpace, *, max_epochs: int, seed: int) -> dict[str, Any]:
    """Every trial's config: sampled params, the space's constants, the epoch budget and the seed.

    ``epochs`` is the trial's full budget (ASHA's ``max_t``): the lr schedule is
    laid over it, whether or not ASHA lets the trial get there.
    """
    config: dict[str, Any] = {p.name: _domain(p) for p in space.params}
    config.update(space.constants)
    config.update(epochs=max_epochs, seed=seed)
    return config


def _contains(p: Param, value: Any) -> bool:
    if p.kind in ("loguniform", "uniform"):
        return isinstance(value, (int, float)) and p.low <= value <= p.high
    if p.kind == "int":
        return isinstance(value, int) and p.low <= value <= p.high
    if p.kind == "choice":
        return value in p.choices
    return False  # fixed parameters need no suggestion


def reference_point(space: SearchSpace) -> dict[str, Any]:
    """The space's known-good values that still lie inside its (possibly overridden) bounds.

    Searchers try this point first; parameters left out of it are sampled as usual.
    """
    return {k: v for k, v in space.reference.items() if _contains(space.param(k), v)}
