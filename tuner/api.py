"""Searches from Python: ``tuner.search(...)`` runs one and ``tuner.load(folder)`` reads a finished one back.

Both give a ``SearchResult``: the results table as a DataFrame, the best trial
(config, score, test scores, checkpoint), the cost, the registered model's URI,
the report and the folder. ``search`` takes the command line's settings as
keyword arguments, validated before anything starts (``tuner.config.checks``); it
prints its progress to ``out`` (or nothing with ``quiet=True``), calls
``on_result`` with every epoch any trial reports, and leaves the process as it
found it: environment variables, log levels and signal handlers are put back
(``handle_signals=True``, the command line's, makes SIGTERM stop the search as
Ctrl-C does). It may be called again in the same process. A stop (Ctrl-C, or
a DDP trial that cannot be placed) raises ``SearchInterrupted``, whose message
says how to resume; ``search(name=..., resume=True)`` continues it.

    import tuner
    result = tuner.search("cifar", data_dir="data", smoke_test=True, params={"width": 0.125})
    result.table.head()
    result.best.config, result.best.score, result.model_uri
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
from ray import tune

import results
from results import storage
from results.report import HTML, REPORT_DIR
from search_spaces import PARETO
from search_spaces.exceptions import HpsearchError, Interrupted
from tuner.config.checks import make_settings
from tuner.config.resources import DEFAULT_START_TIMEOUT_S
from tuner.config.settings import SearchSettings
from tuner.driver.runner import run_search

__all__ = ["BestTrial", "HpsearchError", "SearchInterrupted", "SearchResult", "TrialUpdate", "load", "run", "search"]

SearchInterrupted = Interrupted  # the search stopped with its state saved; the message says how to resume it

# Loggers whose levels a search sets, put back when it ends.
_LOGGERS = ("ray", "ray.tune", "torch._export")


@dataclass(frozen=True)
class BestTrial:
    """The registered trial: its config, its score on the space's metric (at ``epoch``), and its test scores."""

    trial_id: str
    score: float
    epoch: int | None
    config: dict[str, Any]
    test_scores: dict[str, float]
    checkpoint: str  # the checkpoint's folder (or URI) in the search's storage


@dataclass(frozen=True)
class TrialUpdate:
    """One epoch a trial reported: what ``on_result`` receives."""

    trial_id: str
    config: dict[str, Any]
    metrics: dict[str, Any]


@dataclass(frozen=True)
class SearchResult:
    """A finished search, as ``search`` returns it and ``load`` reads it back."""

    name: str
    folder: str
    space: str
    metric: str
    mode: str
    table: pd.DataFrame = field(repr=False)  # results.csv: one row per trial, best first
    best: BestTrial | None  # None when no trial produced a usable checkpoint
    cost: dict[str, Any] = field(repr=False)  # trial-seconds, GPU-seconds, epochs saved, time to target
    model_uri: str | None  # the registered version (models:/<space>-best/<N>), None if not registered
    registered: str | None  # the summary's line: version, champion and why
    report: str | None  # the HTML report's path
    mlflow_uri: str
    settings: SearchSettings = field(repr=False)

    def leaderboard(self, *, all: bool = False) -> str:
        """The leaderboard as the summary prints it (the top 20, or every trial)."""
        top = None if all else results.table.DEFAULT_TOP
        return results.leaderboard(self.table, metric=self.metric, mode=self.mode, top=top, folder=self.folder,
                                   objectives=tuple(self.settings.objectives))  # fmt: skip

    @property
    def front(self) -> pd.DataFrame:
        """A trade-off's Pareto front: the rows of ``table`` no other trial beats on every objective (empty for a
        search with one objective)."""
        if PARETO not in self.table:
            return self.table.iloc[0:0]
        return self.table[self.table[PARETO].astype(str).str.lower() == "true"]

    def histories(self) -> dict[str, pd.DataFrame]:
        """Each trial's reports, epoch by epoch."""
        return results.load_histories(self.table)

    def load_model(self) -> Any:
        """The registered model as an MLflow pyfunc: ``predict`` takes raw inputs (see the README)."""
        if not self.model_uri:
            raise results.ResultsError(f"search '{self.name}' registered no model: sync it with "
                                       f"python run_tune.py --sync {self.folder}")  # fmt: skip
        import mlflow

        mlflow.set_tracking_uri(self.mlflow_uri)
        return mlflow.pyfunc.load_model(self.model_uri)


def load(folder: str | os.PathLike) -> SearchResult:
    """A finished search's results, read from its folder (a path or a URI)."""
    folder = str(folder)
    if not storage.is_uri(folder):
        folder = str(Path(folder).resolve())
    settings = SearchSettings.read(folder)
    if not storage.exists(storage.join(folder, results.RESULTS_CSV)):
        raise results.ResultsError(f"search '{settings.name}' has not finished: continue it with "
                                   f"tuner.search(name={settings.name!r}, storage_path={settings.run.storage_path!r}, "
                                   f"resume=True)")  # fmt: skip
    table = results.load_results(folder)
    record = (json.loads(storage.read_text(storage.join(folder, results.BEST_CONFIG)))
              if storage.exists(storage.join(folder, results.BEST_CONFIG)) else {})  # fmt: skip
    metric, mode = settings.metric, settings.mode
    best = None
    if record.get("trial_id") is not None:
        best = BestTrial(
            trial_id=str(record["trial_id"]),
            score=float(record[metric]),
            epoch=record.get("epoch"),
            config=dict(record.get("config") or {}),
            test_scores={k: float(record[k]) for k in record.get("test_metrics", []) if k in record},
            checkpoint=str(record.get("checkpoint", "")),
        )
    report = storage.join(folder, REPORT_DIR, HTML)
    return SearchResult(
        name=settings.name, folder=folder, space=settings.space_name, metric=metric, mode=mode, table=table,
        best=best, cost=dict(record.get("cost") or {}), model_uri=record.get("model_uri"),
        registered=record.get("registered"), report=report if storage.exists(report) else None,
        mlflow_uri=settings.run.mlflow_uri, settings=settings,
    )  # fmt: skip


class _OnResult(tune.Callback):
    """Calls the caller's function with every epoch a trial reports; a function that raises is dropped, once said."""

    def __init__(self, fn: Callable[[TrialUpdate], Any]) -> None:
        self.fn = fn

    def __getstate__(self) -> dict[str, Any]:  # Tune saves its callbacks with the search: the function stays here
        return {"fn": None}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        if self.fn is None:
            return
        metrics = {k: v for k, v in result.items() if k != "config"}
        try:
            self.fn(TrialUpdate(trial_id=trial.trial_id, config=dict(trial.config), metrics=metrics))
        except Exception as e:
            print(f"warning: on_result raised {type(e).__name__}: {e}; it is not called again in this search",
                  file=sys.stderr)  # fmt: skip
            self.fn = None


@contextlib.contextmanager
def _as_found() -> Iterator[None]:
    """Put back the environment, the log levels and ``sys.path`` as they were before the search.

    The signal handlers are put back too. The search, Ray and MLflow set environment variables (Ray's address and
    auth mode, MLflow's tracking URI) and MLflow puts a registered model's code
    folder on ``sys.path`` when it checks the model; all of it goes. What a
    package adds to ``sys.path`` when it is first imported (Ray's vendored
    libraries) stays: the package, imported, still needs it.
    """
    env = dict(os.environ)
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    path = list(sys.path)
    # ray.init installs a SIGTERM handler that exits the process, and leaves it after ray.shutdown.
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    # A task of the user's (task: package.module:attribute) is imported from the working directory, by this
    # process and by Ray's workers, which start with this process's sys.path.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        yield
    finally:
        kept = [p for p in sys.path if p not in path and "site-packages" in p]
        sys.path[:] = path + kept
        os.environ.clear()
        os.environ.update(env)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for s, handler in handlers.items():
            signal.signal(s, handler)


def run(
    settings: SearchSettings,
    *,
    out: TextIO | None = None,
    quiet: bool = False,
    on_result: Callable[[TrialUpdate], Any] | None = None,
    handle_signals: bool = False,
) -> SearchResult:
    """Run (or resume) the search ``settings`` describes (``tuner.config.checks.make_settings``); return its result."""
    stream = io.StringIO() if quiet else (out or sys.stdout)
    hooks = [_OnResult(on_result)] if on_result is not None else []
    with _as_found():
        run_search(settings, out=stream, hooks=hooks, handle_signals=handle_signals)
    return load(settings.folder)


def search(
    space: str = "cifar",
    *,
    data_dir: str = "./data",
    name: str | None = None,
    storage_path: str = "./ray_results",
    mlflow_uri: str | None = None,
    resume: bool = False,
    num_samples: int | None = None,
    max_epochs: int | None = None,
    grace_period: int | None = None,
    reduction_factor: int | None = None,
    params: Mapping[str, Any] | Sequence[str] = (),
    searcher: str = "random",
    scheduler: str = "asha",
    seed: int = 0,
    gpus_per_trial: float | str | None = None,
    cpus_per_trial: float = 1.0,
    workers_per_trial: int = 1,
    max_concurrent: int | None = None,
    worker_start_timeout: float = DEFAULT_START_TIMEOUT_S,
    keep_checkpoints: int = 2,
    keep_trials: int = 5,
    max_failures: int = 2,
    checkpoint_period: float = 30.0,
    smoke_test: bool = False,
    compile: bool = False,
    target: float | None = None,
    confirm: int = 0,
    warm_start: str | None = None,
    out: TextIO | None = None,
    quiet: bool = False,
    on_result: Callable[[TrialUpdate], Any] | None = None,
    handle_signals: bool = False,
) -> SearchResult:
    """Run a search and return its result; each keyword is the command line's flag of that name (README).

    ``space``: a built-in space's name or a space file's path. ``params``: overrides, e.g.
    ``{"lr": "0.001:0.1", "batch_size": [256, 512], "width": 0.5}`` (a range, choices, a fixed value).
    ``searcher``: ``random``, ``optuna`` or ``bohb`` (the flag ``--search``). Relative paths are taken from the
    working directory. ``out``: where progress and the summary are printed (default: standard output);
    ``quiet``: print nothing. ``on_result``: called with a ``TrialUpdate`` for every epoch any trial reports.
    """
    with _as_found():  # the space's task is checked now, imported from where the search imports it
        settings = make_settings(
            space, cwd=Path.cwd(), data_dir=data_dir, name=name, storage_path=storage_path, mlflow_uri=mlflow_uri,
            resume=resume, num_samples=num_samples, max_epochs=max_epochs, grace_period=grace_period,
            reduction_factor=reduction_factor, params=params, searcher=searcher, scheduler=scheduler, seed=seed,
            gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial, workers_per_trial=workers_per_trial,
            max_concurrent=max_concurrent, worker_start_timeout=worker_start_timeout, keep_checkpoints=keep_checkpoints,
            keep_trials=keep_trials, max_failures=max_failures, checkpoint_period=checkpoint_period,
            smoke_test=smoke_test, compile=compile, target=target, confirm=confirm, warm_start=warm_start,
        )  # fmt: skip
    return run(settings, out=out, quiet=quiet, on_result=on_result, handle_signals=handle_signals)

