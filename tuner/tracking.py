"""MLflow tracking: one parent run per search, one child run per trial, the best model registered.

All logging happens in the driver, through a Tune ``Callback``: trials never
open connections to the tracking store, and a child run is found again by its
``trial_id`` tag, so a resumed search re-attaches to its runs instead of
duplicating them.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

import trainables
from results import _fs
from search_spaces import mark_inactive
from trainables.checkpoint import load_model
from trainables.task import BUILTIN

METRIC_KEYS = ("val_acc", "val_loss", "train_loss", "lr", "epoch_time_s", "images_per_s")  # and the space's metric
TRIAL_TAG = "hpsearch.trial_id"
SEARCH_TAG = "hpsearch.search"
PARENT_TAG = "mlflow.parentRunId"
MODEL_TAG = "hpsearch.model_uri"
MAX_PARAM_LENGTH = 6000
EXAMPLE_FILE = "model_example.json"  # the task's example inputs, kept in the search's folder

for noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def _tolerant(method):
    """Run a tracking call; if the store fails, go offline (one warning) instead of failing the search."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.offline:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # any failure of the tracking store, whatever its client raises
            self.go_offline(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            return None

    return wrapper


def artifact_location(uri: str) -> str | None:
    """For a local SQLite store, keep artifacts beside the database (not in the process's cwd)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


def code_paths(task: str) -> list[str]:
    """The code a registered model needs to load: ``trainables``, and a user's task module or package."""
    paths = [str(Path(trainables.__file__).parent)]
    if task not in BUILTIN:
        module = sys.modules.get(task.partition(":")[0])
        source = Path(getattr(module, "__file__", "") or "")
        if source.name:
            own = source.parent if source.name == "__init__.py" else source
            if not str(own).startswith(paths[0]):
                paths.append(str(own))
    return paths


def save_example(folder: str, example: np.ndarray) -> None:
    """Keep the task's example inputs with the search, for ``run_tune.py --sync`` to register the model later."""
    text = json.dumps({"dtype": str(example.dtype), "shape": list(example.shape), "values": example.ravel().tolist()})
    _fs.write_text(_fs.join(folder, EXAMPLE_FILE), text)


def load_example(folder: str) -> np.ndarray:
    saved = json.loads(_fs.read_text(_fs.join(folder, EXAMPLE_FILE)))
    return np.asarray(saved["values"], dtype=saved["dtype"]).reshape(saved["shape"])


def _params(values: dict[str, Any]) -> list[Param]:
    return [Param(str(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in sorted(values.items())]


class MlflowTracker(tune.Callback):
    """Mirrors a Tune search into MLflow as it runs."""

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
        conditions: dict | None = None,
    ) -> None:
        self.uri = uri
        self.conditions = conditions or {}  # conditional params: logged as "inactive" where they do not hold
        self.metric = metric
        self.metric_keys = tuple(dict.fromkeys((metric, *METRIC_KEYS)))  # logged for every epoch of every trial
        self.search_name = search_name
        self.folder = folder
        self.offline = False
        self.experiment_id: str | None = None
        self.parent_run_id = parent_run_id
        self._client: MlflowClient | None = None
        self._children: dict[str, str] = {}
        if offline_reason:
            self.go_offline(offline_reason)
        else:
            self._open(experiment, parent_run_id)

    @staticmethod
    def find_parent(uri: str, *, experiment: str, search_name: str) -> str | None:
        """The parent run of the search ``search_name``, if the store at ``uri`` has one (None if unreachable)."""
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

    def go_offline(self, reason: str) -> None:
        """Stop talking to the tracking store, and say once how to push the search later."""
        if self.offline:
            return
        self.offline = True
        print(
            f"warning: MLflow at {self.uri} is unavailable ({reason}); the search goes on and keeps everything "
            f"in {self.folder or 'its folder'}. Push it to MLflow later with: python run_tune.py --sync {self.folder}",
            file=sys.stderr,
            flush=True,
        )

    @_tolerant
    def _open(self, experiment: str, parent_run_id: str | None) -> None:
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=artifact_location(self.uri)
            )
        else:
            self.experiment_id = found.experiment_id
        if parent_run_id is None:
            run = self.client.create_run(
                self.experiment_id, run_name=self.search_name, tags={SEARCH_TAG: self.search_name}
            )
            parent_run_id = run.info.run_id
        else:
            self.client.update_run(parent_run_id, status="RUNNING")
        self.parent_run_id = parent_run_id

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        # Tune may pickle its callbacks with the run config; a client holds a DB engine.
        return {**self.__dict__, "_client": None}

    # --- the parent run -----------------------------------------------------------
    @_tolerant
    def log_search(self, *, params: dict[str, Any], tags: dict[str, str]) -> None:
        existing = self.client.get_run(self.parent_run_id).data.params
        new = {k: v for k, v in params.items() if k not in existing}
        self.client.log_batch(
            self.parent_run_id, params=_params(new), tags=[RunTag(k, str(v)) for k, v in tags.items()]
        )

    @_tolerant
    def log_metrics(self, metrics: dict[str, float], *, run_id: str | None = None, step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(run_id or self.parent_run_id, metrics=batch)

    @_tolerant
    def log_best(
        self, *, checkpoint_dir: str, task: str, example: np.ndarray, record: dict[str, Any], registered_name: str
    ) -> str:
        """The best checkpoint as artifacts, its network (rebuilt by ``task``) logged and registered.

        ``record`` is the best trial's entry of ``best_config.json`` (search, trial_id, its
        metric's value, the test scores): the registered version is tagged with it.
        ``example`` is a small batch of model inputs. Returns the model URI.
        """
        model, _ = load_model(checkpoint_dir, task=task)
        scores = (self.metric, *record.get("test_metrics", ()))
        tags = {"search": str(record["search"]), "trial_id": str(record["trial_id"])}
        tags.update({k: f"{record[k]:.4f}" for k in scores if isinstance(record.get(k), (int, float))})
        mlflow.set_tracking_uri(self.uri)
        self.client.log_artifacts(self.parent_run_id, checkpoint_dir, artifact_path="best_checkpoint")
        with mlflow.start_run(run_id=self.parent_run_id, experiment_id=self.experiment_id) as _run:
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                input_example=example,
                registered_model_name=registered_name,
                # Stated, not inferred: inference runs a subprocess that takes about 10 s.
                pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
                # The network's classes travel with it, so it loads where this project is not installed.
                code_paths=code_paths(task),
            )
        self.client.set_tag(self.parent_run_id, MODEL_TAG, info.model_uri)  # `run_tune.py --sync` skips it then
        version = info.registered_model_version
        if version is not None:
            for k, v in tags.items():
                self.client.set_model_version_tag(registered_name, str(version), k, v)
        return info.model_uri

    @_tolerant
    def end(self, *, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_run_id, status=status)

    # --- child runs, one per trial --------------------------------------------------
    def child_run(self, trial_id: str, *, config: dict[str, Any] | None = None) -> str:
        """The child run of ``trial_id``: found by tag when it exists, created otherwise."""
        if trial_id in self._children:
            return self._children[trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            tags = {PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial_id, SEARCH_TAG: self.search_name}
            run_id = self.client.create_run(self.experiment_id, run_name=trial_id, tags=tags).info.run_id
            if config:
                self.client.log_batch(run_id, params=_params(mark_inactive(config, self.conditions)))
        self._children[trial_id] = run_id
        return run_id

    @_tolerant
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.child_run(trial.trial_id, config=trial.config)

    @_tolerant
    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        run_id = self.child_run(trial.trial_id, config=trial.config)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        batch = [Metric(k, float(result[k]), now, step) for k in self.metric_keys if k in result]
        self.client.log_batch(run_id, metrics=batch)

    def _finish(self, trial: Any, status: RunStatus | str) -> None:
        run_id = self.child_run(trial.trial_id, config=trial.config)
        self.client.set_terminated(run_id, status=status)

    @_tolerant
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "FINISHED")

    @_tolerant
    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "FAILED")
