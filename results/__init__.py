"""A finished search read back from its folder. Plain pandas: no Ray, no MLflow.

- ``table``: ``results.csv``, ``best_config.json``, the ranking and the leaderboard.
- ``cost``: what a search cost in GPU- and CPU-seconds, what its scheduler saved, time to target.
- ``report``: the PNGs for MLflow and the one-file HTML report.
- ``replay``: one trial retrained from its record, and whether it reproduces.
- ``storage``: the file calls for a search's folder on disk or at a URI.
- ``__main__``: ``python -m results ray_results/<name>`` (leaderboard), ``report``, ``replay``.
"""

from __future__ import annotations

from results.table import (
    BEST_CONFIG,
    RESULTS_CSV,
    SEARCH_JSON,
    ResultsError,
    leaderboard,
    load_best,
    load_histories,
    objective,
    write,
)
from results.table import load as load_results

__all__ = [
    "BEST_CONFIG",
    "RESULTS_CSV",
    "SEARCH_JSON",
    "ResultsError",
    "leaderboard",
    "load_best",
    "load_histories",
    "load_results",
    "objective",
    "write",
]
