"""``--param NAME=SPEC`` overrides of a space's parameters.

``SPEC`` is one of: ``LOW:HIGH`` (new bounds, same distribution), ``A,B,C``
(a choice), or a single value (fixed for every trial).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from search_spaces._schema import Param, SearchSpace
from search_spaces.exceptions import SpaceError


def _value(text: str, *, where: str) -> Any:
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if not text:
        raise SpaceError(f"{where}: empty value")
    return text


def parse_override(p: Param, spec: str) -> Param:
    """The parameter ``p`` changed as ``spec`` says (not yet validated)."""
    where = f"--param {p.name}={spec}"
    if ":" in spec:
        if p.kind not in ("loguniform", "uniform", "int"):
            raise SpaceError(f"{where}: '{p.name}' is a {p.kind}; give values as A,B,C or a single value")
        low_s, _, high_s = spec.partition(":")
        low, high = _value(low_s, where=where), _value(high_s, where=where)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise SpaceError(f"{where}: bounds must be numbers, e.g. --param {p.name}=0.01:0.1")
        return replace(p, low=float(low), high=float(high))
    if "," in spec:
        return replace(p, kind="choice", choices=tuple(_value(v, where=where) for v in spec.split(",")))
    return replace(p, kind="fixed", value=_value(spec, where=where), mutable=False)


def apply_overrides(space: SearchSpace, overrides: dict[str, Any] | list[str]) -> SearchSpace:
    """Apply ``NAME=SPEC`` strings (or a ``{name: value-or-list}`` dict) to ``space``."""
    items: list[tuple[str, Any]]
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for text in overrides:
            name, sep, spec = text.partition("=")
            if not sep or not name.strip():
                raise SpaceError(f"--param '{text}' must look like NAME=LOW:HIGH, NAME=A,B or NAME=VALUE")
            items.append((name.strip(), spec))
    for name, spec in items:
        p = space.param(name)
        if isinstance(spec, str):
            new = parse_override(p, spec)
        elif isinstance(spec, (list, tuple)):
            new = replace(p, kind="choice", choices=tuple(spec))
        else:
            new = replace(p, kind="fixed", value=spec, mutable=False)
        space = space.with_param(new)
    return space
