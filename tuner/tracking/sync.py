"""``python run_tune.py --sync <search-folder>``: push a finished search to MLflow, idempotently.

For a search that ran while the tracking server was down (or any search whose
runs are missing). Everything comes from the search's folder: ``search.json``,
``results.csv``, each trial's ``progress.csv``, ``best_config.json`` and the
best checkpoint. Runs that exist are found again (the parent by the search's
name, children by trial id) and only what they lack is logged, so a second
sync changes nothing.
"""

from __future__ import annotations

import math
import sys
from typing import Any, TextIO

import results
from results import storage
from results.report import make_report
from search_spaces import PARETO
from search_spaces.exceptions import SyncError
from tuner.config.settings import SearchSettings, redact
from tuner.driver import provenance
from tuner.tracking.runs import MODEL_TAG, MlflowTracker, describe_search, load_example


def _sync_trial(tracker: MlflowTracker, row: dict[str, Any]) -> int:
    """Log what the trial's child run lacks; returns how many epochs were added."""
    config = {k.removeprefix("config/"): v for k, v in row.items() if k.startswith("config/")}
    run_id = tracker.child_run(row["trial_id"], config=config)
    added = tracker.catch_up(row["trial_id"], row["path"]) or 0  # None: the server went away (sync() says so)
    tracker.client.set_terminated(run_id, status="FAILED" if row["status"] == "error" else "FINISHED")
    return added


def sync(folder: str, *, uri: str | None = None, out: TextIO | None = None) -> dict[str, int]:
    """Push the search in ``folder`` to MLflow at ``uri`` (default: the one it ran with)."""
    out = out or sys.stdout
    settings = SearchSettings.read(folder)
    frame = results.load_results(folder)
    uri = uri or settings.run.mlflow_uri
    parent = MlflowTracker.find_parent(uri, experiment=settings.space_name, search_name=settings.name)
    tracker = MlflowTracker(uri=uri, experiment=settings.space_name, search_name=settings.name, folder=folder,
                            parent_run_id=parent, metric=settings.metric,
                            objectives=tuple(settings.objectives))  # fmt: skip
    if tracker.offline:
        raise SyncError(f"MLflow at {redact(uri)} is still unavailable: start it, or pass --mlflow-uri")
    tracker.log_search(params=settings.mlflow_params(), tags={"synced_from": folder})
    epochs = sum(_sync_trial(tracker, row) for row in frame.to_dict("records"))
    if PARETO in frame:  # a trade-off's front, as the search's finish tags it
        best = results.load_best(folder) if storage.exists(storage.join(folder, results.BEST_CONFIG)) else {}
        rows = [{**row, PARETO: str(row[PARETO]).lower() == "true"} for row in frame.to_dict("records")]
        rule = settings.rule()
        tracker.log_front(rows, rule=str(best.get("select") or rule.describe(mode=settings.mode_of(rule.best))))
    _sync_best(tracker, folder, settings, out=out)
    if not tracker.client.list_artifacts(tracker.parent_run_id, "report"):
        tracker.log_report(str(make_report(folder)), note=describe_search(settings, settings.space()))
    tracker.end(status="FINISHED")
    if tracker.offline:
        raise SyncError(f"MLflow at {redact(uri)} failed during the sync; run it again once it is back")
    report = {"trials": len(frame), "epochs_added": epochs}
    print(f"synced {settings.name} to {redact(uri)}: {report['trials']} trials, {epochs} epochs added", file=out)
    return report


def _sync_best(tracker: MlflowTracker, folder: str, settings: SearchSettings, *, out: TextIO) -> None:
    if not storage.exists(storage.join(folder, results.BEST_CONFIG)):
        return
    best = results.load_best(folder)
    parent = tracker.client.get_run(tracker.parent_run_id)
    scores = ((f"best_{settings.metric}", best[settings.metric]),
              *((k, best[k]) for k in best.get("test_metrics", ("test_acc",))))  # fmt: skip
    missing = {k: v for k, v in scores
               if k not in parent.data.metrics and v is not None and not math.isnan(v)}  # fmt: skip
    if missing:
        tracker.log_metrics(missing)
    if MODEL_TAG not in parent.data.tags:
        example, shape = load_example(folder)
        registered = tracker.log_best(
            checkpoint_dir=best["checkpoint"], task=settings.space().task, example=example, example_shape=shape,
            record=best, registered_name=f"{settings.space_name}-best", data_key=provenance.data_key(folder),
            smoke=settings.smoke_test,
        )  # fmt: skip
        if registered is not None:
            print(registered.describe(), file=out)
