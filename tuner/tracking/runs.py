"""MLflow tracking: one parent run per search, one child run per trial, the best model registered.

All logging happens in the driver, through a Tune ``Callback``: trials never
open connections to the tracking store, and a child run is found again by its
``trial_id`` tag, so a resumed search re-attaches to its runs instead of
duplicating them. Per-epoch metrics are written in batches (``tuner.tracking.epochs``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from results import storage
from results.table import EARLY_END_FLAGS, trial_status
from search_spaces import PARETO, SearchSpace, mark_inactive
from tuner import schedulers
from tuner.config.settings import SearchSettings, redact
from tuner.tracking import registry
from tuner.tracking.client import ResilientClient, artifact_location, fail_fast, tracked
from tuner.tracking.epochs import EpochMetrics

# And the space's metric. val_*_tta0: the cifar task's scores without test-time augmentation, at the epochs no
# scheduler judges (val_acc and val_loss are NaN there: trainables.loop.epoch_scores).
METRIC_KEYS = ("val_acc", "val_loss", "val_acc_tta0", "val_loss_tta0", "train_loss", "lr", "epoch_time_s",
               "images_per_s", "params", "latency_ms")  # fmt: skip
TRIAL_TAG = "hpsearch.trial_id"
OUTCOME_TAG = "hpsearch.outcome"  # completed, stopped (by the scheduler), diverged, infeasible, error
SEARCH_TAG = "hpsearch.search"
PARENT_TAG = "mlflow.parentRunId"
MODEL_TAG = "hpsearch.model_uri"
PARETO_TAG = "hpsearch.pareto"  # a trade-off's search: "true" for the trials on its Pareto front
SELECT_TAG = "hpsearch.select"  # the rule that chose the registered model
CONFIRMED_TAG = "hpsearch.confirmed"  # --confirm: the config's mean score and spread over seeds
NOTE_TAG = "mlflow.note.content"  # a run's description in the MLflow UI
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
MAX_PARAM_LENGTH = 6000
EXAMPLE_FILE = "model_example.json"  # the task's example inputs, kept in the search's folder


def save_example(folder: str, example: Any, *, shape: tuple[int, ...] | None = None) -> None:
    """Keep the task's example inputs (and the input ``shape`` its model accepts) with the search, for
    ``run_tune.py --sync`` to register the model later."""
    if example is None:  # a task without load gives none
        return
    if isinstance(example, pd.DataFrame):
        saved = {"frame": json.loads(example.to_json(orient="split", index=False)),
                 "dtypes": {str(k): str(v) for k, v in example.dtypes.items()}}  # fmt: skip
    else:
        example = np.asarray(example)
        saved = {"dtype": str(example.dtype), "shape": list(example.shape), "values": example.ravel().tolist()}
    saved["accepts"] = list(shape) if shape else None
    storage.write_text(storage.join(folder, EXAMPLE_FILE), json.dumps(saved))


def load_example(folder: str) -> tuple[Any, tuple[int, ...] | None]:
    """The example inputs ``save_example`` kept, and the input shape the model accepts (None: the example's)."""
    saved = json.loads(storage.read_text(storage.join(folder, EXAMPLE_FILE)))
    accepts = tuple(saved["accepts"]) if saved.get("accepts") else None
    if "frame" in saved:
        frame = pd.DataFrame(saved["frame"]["data"], columns=saved["frame"]["columns"])
        return frame.astype({k: v for k, v in saved["dtypes"].items() if k in frame}), accepts
    return np.asarray(saved["values"], dtype=saved["dtype"]).reshape(saved["shape"]), accepts


def where_to_browse(uri: str, *, experiment_id: str | None, run_id: str | None) -> str:
    """The summary's last line: where the search's runs are, for the tracking URI in use."""
    # workflowType: MLflow 3's UI otherwise opens an experiment on its GenAI pages, not on its training runs.
    page = ""
    if experiment_id and run_id:
        page = f"#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"MLflow: {redact(uri).rstrip('/')}/{page}"
    if uri.startswith("sqlite:///"):
        return (
            f"MLflow: {uri}; browse it with `make mlflow-ui` (from this folder) or `mlflow ui --backend-store-uri "
            f"{uri}`, then open http://127.0.0.1:5000/{page}"
        )
    return f"MLflow: {redact(uri)}" + (f" (experiment {experiment_id}, run {run_id})" if page else "")


def how_to_load(uri: str, registered: registry.Registered) -> str:
    """A line of Python that loads the registered model from any folder: the tracking URI is stated, absolute."""
    # @champion only when it is this version: otherwise it would load another search's model (other data, say).
    ref = f"models:/{registered.name}@champion" if registered.champion == registered.version else registered.uri
    return (f'load it from anywhere: import mlflow; mlflow.set_tracking_uri("{redact(uri)}"); '
            f'model = mlflow.pyfunc.load_model("{ref}"); model.predict(raw_inputs)')  # fmt: skip


def describe_search(settings: SearchSettings, space: SearchSpace) -> str:
    """The parent run's description in the MLflow UI (markdown)."""
    b, label = settings.budget, schedulers.get(settings.scheduler).label
    searched = ", ".join(p.name for p in space.params if p.kind != "fixed")
    return (
        f"**{settings.name}**: a {settings.search} search of the `{space.name}` space (task `{space.task}`): "
        f"{b.num_samples} trials of up to {b.max_epochs} epochs, {label} (grace period "
        f"{b.grace_period}, reduction factor {b.reduction_factor}) by `{settings.metric}` ({settings.mode})"
        + "".join(f", traded against `{k}` ({v})" for k, v in settings.objectives.items())
        + ".\n\n"
        f"Searched: {searched}.\n\n"
        f"Each trial is a child run (tag `hpsearch.outcome`: completed, stopped, diverged, infeasible, error); "
        f"the best model is registered as `{space.name}-best` (alias `champion`: the best of the searches "
        f"on the same data, task and metric; never a smoke test).\n\n"
        f"Files: `{redact(settings.folder)}` (`results.csv`, `best_config.json`)."
    )


def _params(values: dict[str, Any]) -> list[Param]:
    return [Param(str(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in sorted(values.items())]


class MlflowTracker(EpochMetrics, ResilientClient, tune.Callback):
    """Mirrors a Tune search into MLflow as it runs.

    Every call to the store goes through ``ResilientClient``: retried, skipped
    when refused, kept while the server is unreachable and replayed when it
    answers again; what is still kept when the search ends is in the search's
    folder for ``run_tune.py --sync``.
    """

    def __init__(
        self,
        *,
        uri: str,
        experiment: str,
        search_name: str,
        parent_run_id: str | None = None,
        offline_reason: str | None = None,
        folder: str = "",
        metric: str = "val_acc",
        objectives: tuple[str, ...] = (),
        conditions: dict | None = None,
        resume: bool = False,
    ) -> None:
        super().__init__(uri=uri, folder=folder, offline_reason=offline_reason)
        self.conditions = conditions or {}  # conditional params: logged as "inactive" where they do not hold
        self.metric = metric
        # Logged for every epoch of every trial: the metric, the space's further objectives, the usual ones.
        self.metric_keys = tuple(dict.fromkeys((metric, *objectives, *METRIC_KEYS)))
        self.search_name = search_name
        self._running: set[str] = set()  # trials whose child run is open
        self.experiment = experiment
        self.experiment_id: str | None = None
        self.parent_run_id = parent_run_id
        self._children: dict[str, str] = {}
        self.resume = resume  # a resumed search finds its parent run by name when it has no id saved
        self._setup_epochs()
        self._open()

    @staticmethod
    def find_parent(uri: str, *, experiment: str, search_name: str) -> str | None:
        """The parent run of the search ``search_name``, if the store at ``uri`` has one (None if unreachable)."""
        fail_fast()
        try:
            client = MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment)
            if found is None:
                return None
            runs = client.search_runs(
                [found.experiment_id],
                filter_string=f"tags.`{SEARCH_TAG}` = '{search_name}' and attributes.run_name = '{search_name}'",
            )
        except Exception:  # the store is down: the tracker that follows says so, once
            return None
        parents = [r for r in runs if PARENT_TAG not in r.data.tags]
        return parents[0].info.run_id if parents else None

    @tracked
    def _open(self) -> None:
        found = self.client.get_experiment_by_name(self.experiment)
        # A model-training experiment: the MLflow UI opens it on its runs, not on GenAI traces.
        kind = {EXPERIMENT_KIND: MODEL_TRAINING}
        if found is None:
            self.experiment_id = self.client.create_experiment(
                self.experiment, artifact_location=artifact_location(self.uri), tags=kind
            )
        else:
            self.experiment_id = found.experiment_id
            if EXPERIMENT_KIND not in found.tags:
                self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        # A resumed search whose server was down when it started has no run id saved: find its run by name.
        parent_run_id = self.parent_run_id
        if parent_run_id is None and self.resume:
            parent_run_id = self.find_parent(self.uri, experiment=self.experiment, search_name=self.search_name)
        if parent_run_id is None:
            run = self.client.create_run(
                self.experiment_id, run_name=self.search_name, tags={SEARCH_TAG: self.search_name}
            )
            parent_run_id = run.info.run_id
        else:
            self.client.update_run(parent_run_id, status="RUNNING")
        self.parent_run_id = parent_run_id

    # --- the parent run -----------------------------------------------------------
    @tracked
    def log_search(self, *, params: dict[str, Any], tags: dict[str, str]) -> None:
        existing = self.client.get_run(self.parent_run_id).data.params
        new = {k: v for k, v in params.items() if k not in existing}
        self.client.log_batch(
            self.parent_run_id, params=_params(new), tags=[RunTag(k, str(v)) for k, v in tags.items()]
        )

    @tracked
    def log_metrics(self, metrics: dict[str, float], *, run_id: str | None = None, step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(run_id or self.parent_run_id, metrics=batch)

    @tracked
    def log_best(
        self,
        *,
        checkpoint_dir: str,
        task: str,
        example: Any,
        record: dict[str, Any],
        registered_name: str,
        data_key: str,
        smoke: bool,
        example_shape: tuple[int, ...] | None = None,
    ) -> registry.Registered:
        """The best checkpoint as artifacts, and as a pyfunc on raw inputs registered under ``registered_name``.

        ``record`` is the best trial's entry of ``best_config.json``: the version
        is tagged with it, with ``task``, the ``data_key`` and ``smoke``, by which
        the champion rule compares versions (``tuner.tracking.registry``). ``example`` is a
        few raw inputs from the data.
        """
        found = registry.registered_by(self.client, registered_name, run_id=str(self.parent_run_id))
        if found is not None:  # a finish repeated (a resumed driver, --sync): the search's version, not a new one
            return found
        mlflow.set_tracking_uri(self.uri)
        self.client.log_artifacts(self.parent_run_id, checkpoint_dir, artifact_path="best_checkpoint")
        with mlflow.start_run(run_id=self.parent_run_id, experiment_id=self.experiment_id):
            info = registry.log_model(checkpoint_dir=checkpoint_dir, task=task, example=example,
                                      example_shape=example_shape, name=registered_name)  # fmt: skip
        version = str(info.registered_model_version)
        self.client.set_tag(self.parent_run_id, MODEL_TAG, f"models:/{registered_name}/{version}")  # --sync skips it
        tags = registry.version_tags(record, task=task, data_key=data_key, smoke=smoke)
        for k, v in tags.items():
            self.client.set_model_version_tag(registered_name, version, k, v)
        champion, reason = registry.crown(self.client, registered_name, version, tags=tags, mode=tags["mode"])
        held_metric, held_score = registry.champion_score(self.client, registered_name, champion)
        return registry.Registered(
            name=registered_name, version=version, metric=self.metric, champion=champion,
            champion_score=held_score, champion_metric=held_metric, reason=reason,
        )  # fmt: skip

    def end(self, *, status: str = "FINISHED") -> None:
        """Close the parent run (and the child runs still open: KILLED or FAILED with it); a last reconnect."""
        self.flush()
        for trial_id in sorted(self._running):
            self._terminate(trial_id, "FINISHED" if status == "FINISHED" else status)
        self._end(status=status)
        self.close()

    @tracked
    def _end(self, *, status: str) -> None:
        self.client.set_terminated(self.parent_run_id, status=status)

    @tracked
    def _terminate(self, trial_id: str, status: str, outcome: str | None = None) -> None:
        run_id = self.child_run(trial_id)
        if outcome:
            self.client.set_tag(run_id, OUTCOME_TAG, outcome)
        self.client.set_terminated(run_id, status=status)
        self._running.discard(trial_id)

    @tracked
    def log_report(self, folder: str, *, note: str) -> None:
        """The search's pictures and HTML report as artifacts of its run (``report/``), linked from its description."""
        self.client.log_artifacts(self.parent_run_id, folder, artifact_path="report")
        link = "Report: the artifact `report/report.html` of this run (download it and open it in a browser)."
        self.client.set_tag(self.parent_run_id, NOTE_TAG, f"{note}\n\n{link}")

    @tracked
    def log_confirmation(self, described: dict[str, str]) -> None:
        """``--confirm``: each confirmed trial's mean and spread over seeds, as a tag of its child run."""
        for trial_id, text in described.items():
            self.client.set_tag(self.child_run(trial_id), CONFIRMED_TAG, text)

    @tracked
    def log_trial_costs(self, rows: list[dict[str, Any]]) -> None:
        """Each trial's wall, GPU- and CPU-seconds, as metrics of its child run at its last epoch."""
        now = int(time.time() * 1000)
        names = {"seconds": "wall_seconds", "gpu_seconds": "gpu_seconds", "cpu_seconds": "cpu_seconds"}
        for row in rows:
            step = int(row.get("epochs") or 0)
            batch = [Metric(name, float(row[key]), now, step) for key, name in names.items()]
            self.client.log_batch(self.child_run(str(row["trial_id"])), metrics=batch)

    @tracked
    def log_front(self, rows: list[dict[str, Any]], *, rule: str) -> None:
        """A trade-off's Pareto front: each child run tagged ``hpsearch.pareto`` (true or false); the parent run
        with the front's size and the rule that chose the registered model."""
        for row in rows:
            self.client.set_tag(self.child_run(str(row["trial_id"])), PARETO_TAG, str(bool(row.get(PARETO))).lower())
        self.client.set_tag(self.parent_run_id, SELECT_TAG, rule)
        self.log_metrics({"pareto_trials": sum(bool(r.get(PARETO)) for r in rows)})

    # --- child runs, one per trial --------------------------------------------------
    def child_run(self, trial_id: str, *, config: dict[str, Any] | None = None, reopen: bool = False) -> str:
        """The child run of ``trial_id``: found by tag when it exists (RUNNING again with ``reopen``), else created."""
        if trial_id in self._children:
            return self._children[trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            if reopen:  # its trial starts again (a resumed search): only then is a finished run reopened
                self.client.update_run(run_id, status="RUNNING")
        else:
            tags = {PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial_id, SEARCH_TAG: self.search_name}
            run_id = self.client.create_run(self.experiment_id, run_name=trial_id, tags=tags).info.run_id
            if config:
                self.client.log_batch(run_id, params=_params(mark_inactive(config, self.conditions)))
        self._children[trial_id] = run_id
        return run_id

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_unsent": {}}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._running.add(trial.trial_id)
        if self.resume:
            self._restarted.add(trial.trial_id)
        self._start(trial.trial_id, trial.config)

    @tracked
    def _start(self, trial_id: str, config: dict[str, Any]) -> None:
        self.child_run(trial_id, config=config, reopen=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trial_ends(trial)
        result, budget = trial.last_result or {}, (trial.config or {}).get("epochs")
        outcome = trial_status(failed=False, ended=next((f for f in EARLY_END_FLAGS if result.get(f)), None),
                               epochs=int(result.get("epoch", 0) or 0),
                               max_epochs=int(budget) if budget is not None else 0)  # fmt: skip
        self._terminate(trial.trial_id, "FINISHED", outcome)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trial_ends(trial)
        self._terminate(trial.trial_id, "FAILED", "error")
