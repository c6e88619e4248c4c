"""Read a finished search back: ``load_results(folder)`` and the leaderboard.

python -m results ray_results/<name>
``record``: a search's ``search.json`` read back typed, whichever layout wrote it: ``read_record(folder)``.
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
    objective,
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
    "objective",
    "read_record",
    "write",
]
