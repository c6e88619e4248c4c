"""A finished search read back from its folder. Plain pandas: no Ray, no MLflow.

- ``table``: ``results.csv``, ``best_config.json``, the ranking and the leaderboard.
- ``cost``: what a search cost in GPU- and CPU-seconds, what its scheduler saved, time to target.
- ``view``: a finished search read back for its report (``SearchView``, the fANOVA importances).
- ``report``: the PNGs for MLflow and the one-file HTML report.
- ``replay``: one trial retrained from its record, and whether it reproduces.
- ``record``: a search's ``search.json`` read back typed, whichever layout wrote it (``read_record``).
- ``storage``: the file calls for a search's folder on disk or at a URI.
- ``__main__``: ``python -m results ray_results/<name>`` (leaderboard), ``report``, ``replay``.
"""

from __future__ import annotations

from results.record import SEARCH_JSON, SearchRecord
from results.record import read as read_record
from results.table import (
    BEST_CONFIG,
    RESULTS_CSV,
    ResultsError,
    leaderboard,
    load_best,
    load_histories,
    mark_front,
    objective,
    select_order,
    unmet,
    write,
)
from results.table import load as load_results

__all__ = [
    "BEST_CONFIG",
    "RESULTS_CSV",
    "SEARCH_JSON",
    "ResultsError",
    "SearchRecord",
    "leaderboard",
    "load_best",
    "load_histories",
    "load_results",
    "mark_front",
    "objective",
    "select_order",
    "unmet",
    "read_record",
    "write",
]
