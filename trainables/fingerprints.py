"""Fingerprints of what a trial computes from: the data a task loaded and the code that trains it.

A search records both (``tuner.driver.provenance``); a replay (``results.replay``)
refuses a record whose data or code has changed since.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainables.loading import BUILTIN


def data_key(data: Any) -> str:
    """A fingerprint of what ``Task.load`` gave the trials: SHA-256 over every array's bytes, shape and type.

    Dicts (by sorted key), lists and tuples are walked; arrays and tensors hash
    their contents; other values their ``repr``. The same data gives the same key
    on any machine; one changed pixel gives another.
    """
    import hashlib

    digest = hashlib.sha256()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                digest.update(f"key:{key};".encode())
                walk(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"seq:{len(value)};".encode())
            for item in value:
                walk(item)
        elif isinstance(value, (np.ndarray, torch.Tensor)):
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
            array = np.ascontiguousarray(array)
            digest.update(f"array:{array.dtype.str}:{array.shape};".encode())
            digest.update(array.tobytes())
        else:
            digest.update(f"value:{value!r};".encode())

    walk(data)
    return digest.hexdigest()


def code_key(ref: str) -> str:
    """A fingerprint of the code that trains task ``ref``: SHA-256 over ``trainables``' sources and the task's module.

    Edits elsewhere (the scheduler, tracking, the docs) leave it alone: they do
    not change what a trial computes.
    """
    import hashlib
    import importlib.util
    from pathlib import Path

    files = sorted(Path(__file__).resolve().parent.rglob("*.py"))
    module = BUILTIN.get(ref, ref).partition(":")[0]
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin and Path(spec.origin).resolve() not in files:
        files.append(Path(spec.origin).resolve())
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:".encode() + path.read_bytes())
    return digest.hexdigest()
