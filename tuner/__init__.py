"""Hyperparameter search for PyTorch on Ray Tune: the command line (``run_tune.py``) and the Python API.

    import tuner
    result = tuner.search("cifar", data_dir="data", smoke_test=True)
    result.table, result.best, result.model_uri
    tuner.load("ray_results/<name>")  # a finished search, read back

The API (``tuner.api``) is imported on first use: ``import tuner`` alone starts
nothing and imports neither Ray nor PyTorch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BestTrial", "HpsearchError", "SearchInterrupted", "SearchResult", "TrialUpdate", "load", "search"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tuner import api

        return getattr(api, name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
