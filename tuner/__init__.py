"""Hyperparameter search for PyTorch on Ray Tune: the command line (``run_tune.py``) and the Python API.

    import tuner
    result = tuner.search("cifar", data_dir="data", smoke_test=True)
    result.table, result.best, result.model_uri
    tuner.load("ray_results/<name>")  # a finished search, read back

The API (``tuner.api``) is imported on first use: ``import tuner`` alone starts
nothing and imports neither Ray nor PyTorch.

Its rooms, each with its own ``__init__`` saying what it holds:

- ``api``: ``search``, ``load``, ``SearchResult``; ``cli``: the command line over it.
- ``config``: settings, resources and every check, before anything starts (no Ray).
- ``driver``: the search on Ray Tune from start to end: runner, progress, stopping,
  lease, warm starts, confirmation, the end (test, register, results, report).
- ``schedulers``: the schedulers by name, each keeping its state across a resume.
- ``trial``: the Ray side of a trial, one process or N DDP workers, and their placement.
- ``packing``: GPU shares, measured by probes.
- ``tracking``: MLflow runs, the model registry, ``--sync``, the UI.
- ``processes``: the processes below this one, for stopping all a command started.

Errors are in ``search_spaces.exceptions``, under one base, ``HpsearchError``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BestTrial", "HpsearchError", "SearchInterrupted", "SearchResult", "TrialUpdate", "load", "search"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tuner import api

        return getattr(api, name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
