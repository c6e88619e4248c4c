"""Read a finished search back: ``load_results(folder)`` and the leaderboard.

python -m results ray_results/<name>

view: a finished search read back for its report (SearchView, load_view, the fANOVA importances).
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
