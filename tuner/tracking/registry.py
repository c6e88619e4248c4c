"""The model registry: a search's best checkpoint as a pyfunc on raw inputs, registered, and who is champion.

Every version carries what it can be compared by (``COMPARABLE``: the metric,
its mode, the task and the key of the data it was trained and validated on;
and the space's select rule, where one chose it) and its score. The
``champion`` alias moves only between versions that share all of them, and
only to a better score; a smoke test's version (a slice of the
data) never holds it.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import trainables
from search_spaces import SelectRule
from trainables.loading import BUILTIN

CHAMPION = "champion"  # the alias of the best comparable version: models:/<space>-best@champion
COMPARABLE = ("metric", "mode", "task", "data_key")  # version tags two versions must share to be compared
SCORE_TAG = "score"  # the version's value of its metric, in full
SELECT_TAG = "select"  # the space's select rule that chose the version (absent: the best by its metric)
SMOKE_TAG = "smoke"  # "true": a --smoke-test search's version, never the champion
SMOKE_REASON = "a --smoke-test search trains on a slice of the data, and its versions never become the champion"
SERVED_MODEL = Path(__file__).with_name("served_model.py")  # the pyfunc's code, saved with every version
REQUIREMENTS = ("torch", "torchvision", "numpy", "pandas", "mlflow")  # what loading a version needs


@dataclass(frozen=True)
class Registered:
    """What registering a search's best model did: its version, and who holds ``champion`` afterwards."""

    name: str
    version: str
    metric: str
    champion: str | None  # the version holding the alias now (None: no version holds it)
    champion_score: float | None  # its score, by its own metric
    champion_metric: str = ""
    reason: str = ""  # why this version is not the champion, when it is not
    earlier: bool = False  # registered by an earlier finish of the same search (found, not registered again)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def describe(self) -> str:
        """``registered as cifar-best v3; champion: v1 (val_acc 0.9100)``, with why not this one when it is not."""
        if self.champion is None:
            held = "none"
        else:
            metric = self.champion_metric or self.metric
            score = f" ({metric} {self.champion_score:.4f})" if self.champion_score is not None else ""
            held = f"v{self.champion}{score}"
        again = " (by this search's earlier finish; not registered again)" if self.earlier else ""
        line = f"registered as {self.name} v{self.version}{again}; champion: {held}"
        return line + (f"\n  not the champion: {self.reason}" if self.reason else "")


def code_paths(task: str) -> list[str]:
    """The code a registered model needs to load: ``trainables``, and the top package of a user's task module.

    The task is imported by its full name (``examples.tabular.task``) where the
    model is loaded, so the whole top-level package (or module) travels with it.
    """
    paths = [str(Path(trainables.__file__).parent)]
    if task not in BUILTIN:
        module = sys.modules.get(task.partition(":")[0])
        source = Path(getattr(module, "__file__", "") or "")
        if source.name:
            depth = task.partition(":")[0].count(".") + (source.name == "__init__.py")
            top = source.parents[depth - 1] if depth else source
            if top != Path(paths[0]) and Path(paths[0]) not in top.parents:
                paths.append(str(top))
    return paths


def requirements() -> list[str]:
    """Pinned to what this search ran with: stated, because inferring them runs a subprocess (about 10 s)."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def signature(example: Any, outputs: Any, *, shape: tuple[int, ...] | None) -> Any:
    """The inputs' and outputs' schemas from real inputs; an array's shape as the task accepts it (any batch)."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import Schema, TensorSpec

    inferred = infer_signature(example, outputs)
    if isinstance(example, np.ndarray):
        accepted = shape or (-1, *example.shape[1:])
        inferred = ModelSignature(inputs=Schema([TensorSpec(example.dtype, tuple(accepted))]),
                                  outputs=inferred.outputs)  # fmt: skip
    return inferred


def example_outputs(checkpoint_dir: str, *, task: str, example: Any) -> Any:
    """What the model answers for ``example``: the signature's outputs, computed as the registered model will."""
    from trainables.checkpoint import load
    from trainables.loading import load_task, predict

    found = load_task(task)
    state = load(checkpoint_dir, map_location="cpu")
    return predict(found, found.build_model(state).to("cpu").eval(), state, example)


def log_model(
    *, checkpoint_dir: str, task: str, example: Any, example_shape: tuple[int, ...] | None, name: str
) -> Any:
    """Log the checkpoint as a pyfunc model in the active run and register it under ``name``; MLflow's ModelInfo."""

    outputs = example_outputs(checkpoint_dir, task=task, example=example)
    with warnings.catch_warnings():
        # The signature below is the schema; MLflow would otherwise ask for type hints on predict, and warn
        # that the example's whole-number columns cannot hold missing values (rows read as the CSV is read can't).
        warnings.filterwarnings("ignore", message=".*[Tt]ype hint", category=UserWarning)
        return _log(checkpoint_dir=checkpoint_dir, task=task, example=example, example_shape=example_shape,
                    name=name, outputs=outputs)  # fmt: skip


def _log(*, checkpoint_dir: str, task: str, example: Any, example_shape: tuple[int, ...] | None, name: str,
         outputs: Any) -> Any:  # fmt: skip
    import mlflow

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(SERVED_MODEL),
        artifacts={"checkpoint": checkpoint_dir},
        model_config={"task": task},
        code_paths=code_paths(task),
        signature=signature(example, outputs, shape=example_shape),
        input_example=example,
        registered_model_name=name,
        pip_requirements=requirements(),
    )


def _score(tags: dict[str, str]) -> float | None:
    try:
        return float(tags[SCORE_TAG])
    except (KeyError, ValueError):
        return None


def _champion(client: Any, name: str) -> Any:
    """The version holding ``champion`` (None: no version does)."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # MLflow says "no such alias" with an error
        return None


def crown(client: Any, name: str, version: str, *, tags: dict[str, str], mode: str) -> tuple[str | None, str]:
    """Point ``champion`` at ``version`` when it may hold it; return (the version holding it now, why not this one).

    A smoke test's version never holds it. Otherwise it takes the alias when no
    version holds it, when the holder predates these tags, or when the holder
    shares metric, mode, task and data with it and scored worse.
    """
    held = _champion(client, name)
    holder = str(held.version) if held is not None else None  # an int or a string, by store
    if tags.get(SMOKE_TAG) == "true":
        return holder, SMOKE_REASON
    if held is not None and all(k in held.tags for k in COMPARABLE):
        differ = [k for k in COMPARABLE if held.tags[k] != tags.get(k)]
        if held.tags.get(SELECT_TAG, "") != tags.get(SELECT_TAG, ""):  # no tag: the best by the metric
            differ.append(SELECT_TAG)
        if differ:
            said = [_DIFFERENT[k] for k in differ]
            because = said[0] if len(said) == 1 else ", ".join(said[:-1]) + " and " + said[-1]
            theirs = ", ".join(f"{k} {held.tags.get(k, 'none')[:60 if k == SELECT_TAG else 12]}" for k in differ)
            return holder, (
                f"v{holder}, the champion, {because} ({theirs}), so the two are not compared; to make v{version} the "
                f"champion anyway, set the alias in the MLflow UI or with "
                f"MlflowClient().set_registered_model_alias('{name}', 'champion', '{version}')"
            )
        new, old = _score(tags), _score(held.tags)
        if new is None or math.isnan(new) or (old is not None and not (new > old if mode == "max" else new < old)):
            said = f"{old:.4f}" if old is not None else "unknown"
            return holder, f"v{holder}, the champion, scored as well or better ({tags['metric']} {said})"
    client.set_registered_model_alias(name, CHAMPION, version)
    return version, ""


_DIFFERENT = {"metric": "goes by another metric", "mode": "another mode", "task": "another task",
              "data_key": "was trained on other data", "select": "was chosen by another select rule"}  # fmt: skip


def version_tags(record: dict[str, Any], *, task: str, data_key: str, smoke: bool) -> dict[str, str]:
    """What a version is compared by and what it scored (``record``: the best trial's entry of best_config.json)."""
    # A select rule may pick by another objective (the lowest latency_ms among accurate enough trials, say):
    # its versions are compared, and crowned, by that one.
    chosen_by = record.get("chosen_by") or {}
    metric, mode = str(chosen_by.get("metric") or record["metric"]), str(chosen_by.get("mode") or record["mode"])
    tags = {"search": str(record["search"]), "trial_id": str(record["trial_id"]), "metric": metric,
            "mode": mode, "task": task, "data_key": data_key, SMOKE_TAG: str(smoke).lower(),
            SCORE_TAG: repr(float(record[metric]))}  # fmt: skip
    shown = (record["metric"], metric, *record.get("objectives", ()), *record.get("test_metrics", ()))
    for key in dict.fromkeys(shown):
        if isinstance(record.get(key), (int, float)):
            tags[key] = f"{record[key]:.4f}"
    if record.get("select") and record["select"] != SelectRule(best=metric).describe(mode=mode):  # not a plain rule
        tags[SELECT_TAG] = str(record["select"])
    return tags


def registered_by(client: Any, name: str, *, run_id: str) -> Registered | None:
    """The version of ``name`` that the search whose parent run is ``run_id`` registered (None: none yet), and
    who is champion now."""
    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except Exception:  # no such registered model yet
        return None
    if not versions:
        return None
    version = versions[0]
    held = _champion(client, name)
    holder = str(held.version) if held is not None else None
    metric, score = champion_score(client, name, holder)
    smoke = version.tags.get(SMOKE_TAG) == "true" and holder != str(version.version)
    return Registered(name=name, version=str(version.version), metric=version.tags.get("metric", ""),
                      champion=holder, champion_score=score, champion_metric=metric,
                      reason=SMOKE_REASON if smoke else "", earlier=True)  # fmt: skip


def champion_score(client: Any, name: str, version: str | None) -> tuple[str, float | None]:
    """The metric and score of ``version`` of ``name`` ("", None without one)."""
    if version is None:
        return "", None
    tags = client.get_model_version(name, version).tags
    return tags.get("metric", ""), _score(tags)
