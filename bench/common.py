"""What the benchmarks share: data, the default recipe, and plain-text tables."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from search_spaces import get_space  # noqa: E402
from trainables import data  # noqa: E402


def default_recipe(*, epochs: int) -> dict[str, Any]:
    """The cifar space's reference config (airbench94's settings) with its fixed values."""
    space = get_space("cifar")
    config = {p.name: p.value for p in space.params if p.kind == "fixed"}
    config.update(space.reference, **space.constants, epochs=epochs, seed=0)
    return config


def load_splits(data_dir: str | None, *, train_size: int | None = None) -> data.Splits:
    """Real CIFAR-10 from ``data_dir``, or synthetic stand-ins when it is None."""
    if data_dir is None:
        train, test = data.synthetic_images(6000, seed=1), data.synthetic_images(1000, seed=2)
        return data.split(*train, *test, train_size=train_size)
    return data.split(*data.load(Path(data_dir)), train_size=train_size)


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()}: {torch.get_num_threads()} CPU threads, {gpu}, torch {torch.__version__}"


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def table(rows: list[dict[str, Any]]) -> str:
    headers = list(dict.fromkeys(k for r in rows for k in r))  # rows may differ: a column one row lacks is blank there
    cells = [[_cell(r.get(h, "")) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)) for c in cells]
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN: a figure that was not measured is null
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_json(path: str | Path | None, figures: dict[str, Any]) -> None:
    """Write a benchmark's key figures to ``path`` (``--json``), for bench/gpu_check.py to read; None: nothing.

    Written whole or not at all (a temporary file renamed), so a reader never sees half a file, even when the
    benchmark is stopped while it writes; non-finite floats become null.
    """
    if path is None:
        return
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_plain(figures), indent=1) + "\n")
    os.replace(tmp, path)
