"""Everything a search runs with, resolved and validated before anything is written.

``SearchSettings`` is infrastructure and budget (the *how*); the search space
is the *what*. The settings are saved as ``search.json`` in the search's folder
so that ``--resume`` continues with exactly what the search started with.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from results import SEARCH_JSON, SearchRecord, read_record, storage
from results.record import parse as parse_record
from search_spaces import (
    Budget,
    Objective,
    SearchSpace,
    SelectRule,
    check_budget,
    rule_from_data,
    searched_space,
    smoke_of,
)
from search_spaces.exceptions import ResultsError, UsageError
from search_spaces.objectives import objectives_of
from tuner import schedulers
from tuner.config.resources import DEFAULT_START_TIMEOUT_S, TrialShape, trial_shape

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SEARCH_ALGORITHMS = ("random", "optuna", "bohb")
SCHEDULERS = tuple(schedulers.SCHEDULERS)  # --scheduler's choices: the registry's names (no Ray imported)
GPUS_AUTO, GPUS_DEFAULT = "auto", "default"  # --gpus-per-trial values resolved once Ray has started


@dataclass(frozen=True)
class Resources:
    """What each trial asks of the cluster, and how many trials may run at once (Tune's resources)."""

    # A number once resolved; until the search has started Ray: "auto" (probe, then pack) or
    # "default" (flag not given: the space's trials per GPU where there are GPUs, else CPU).
    gpus_per_trial: float | str = GPUS_DEFAULT
    cpus_per_trial: float = 1.0
    workers_per_trial: int = 1  # > 1: each trial is a DDP run on that many Ray Train workers
    max_concurrent: int | None = None
    worker_start_timeout_s: float = DEFAULT_START_TIMEOUT_S  # DDP: how long a worker group may wait to be placed

    @property
    def pending(self) -> bool:
        """True while ``gpus_per_trial`` waits for Ray to show the cluster ("auto" or "default")."""
        return self.gpus_per_trial in (GPUS_AUTO, GPUS_DEFAULT)

    def shape(self) -> TrialShape:
        """Each trial's workers and their CPUs and GPUs (``gpus_per_trial`` must be resolved to a number)."""
        return trial_shape(
            gpus_per_trial=float(self.gpus_per_trial),
            cpus_per_trial=self.cpus_per_trial,
            workers=self.workers_per_trial,
        )


@dataclass(frozen=True)
class RunSettings:
    """Where a search is written and tracked, what it keeps, and how it survives failures (Tune's RunConfig)."""

    name: str
    storage_path: str
    mlflow_uri: str
    keep_checkpoints: int = 2
    keep_trials: int = 5  # after the search, only the best trials keep their checkpoints
    max_failures: int = 2  # retries of a trial whose process died, each from its last checkpoint
    checkpoint_period_s: float = 30.0  # besides ASHA's rungs and the last epoch; 0: every epoch
    resume: bool = False
    mlflow_run_id: str | None = None  # the parent run, set once the search has started

    @property
    def folder(self) -> str:
        """Where Tune writes this search: ``<storage_path>/<name>``."""
        return storage.join(self.storage_path, self.name)


_PARTS = {"budget": Budget, "resources": Resources, "run": RunSettings}


@dataclass(frozen=True)
class SearchSettings:
    """A search's flags, resolved: what is searched, on which data, by which searcher, and its three parts.

    ``budget`` (how many trials and epochs, ASHA's knobs), ``resources`` (what a
    trial asks of the cluster) and ``run`` (where it is written, what it keeps,
    how it recovers) follow Tune's own split, so a new flag touches one of them.
    """

    space_name: str  # the space's name: the MLflow experiment and the registered model are named after it
    data_dir: str
    budget: Budget
    resources: Resources
    run: RunSettings
    search: str = "random"
    scheduler: str = "asha"  # one of SCHEDULERS (a search.json from before --scheduler ran ASHA)
    seed: int = 0
    smoke_test: bool = False
    compile: bool = False
    params: list[str] = field(default_factory=list)
    space_file: str = ""  # the YAML file the space was read from (absolute), unless it is a built-in
    metric: str = "val_acc"  # the space's: what ASHA, the searcher and the results go by
    mode: str = "max"
    # The space's further objectives, metric -> mode (a trade-off: the searcher models them all, results.csv
    # marks the Pareto front), and its select rule as data (search_spaces.objectives.SelectRule.as_data).
    objectives: dict[str, str] = field(default_factory=dict)
    select: dict[str, Any] = field(default_factory=dict)
    target: float | None = None  # --target: a score whose time to reach the summary reports
    confirm: int = 0  # --confirm K: the top K configs retrained over more seeds before one is registered
    warm_start: str = ""  # --warm-start: a finished search's folder whose best configs (and trials) seed this one

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def folder(self) -> str:
        return self.run.folder

    def space(self) -> SearchSpace:
        """The named space with the smoke test's and the user's overrides applied."""
        space = searched_space(self.space_file or self.space_name, smoke_test=self.smoke_test, params=self.params)
        # The metric and mode as resolved when the search started (a space may leave them to its task).
        return dataclasses.replace(space, metric=self.metric, mode=self.mode, objectives=self.all_objectives()[1:],
                                   select=self.rule() if self.objectives else None)  # fmt: skip

    def all_objectives(self) -> tuple[Objective, ...]:
        """The metric first, then the space's further objectives."""
        return objectives_of(self.metric, self.mode, self.objectives)

    def rule(self) -> SelectRule:
        """Which trial is registered: the space's select rule, or the best by the metric."""
        return rule_from_data(self.select, metric=self.metric)

    def mode_of(self, metric: str) -> str:
        return next(o.mode for o in self.all_objectives() if o.metric == metric)

    def with_gpus(self, gpus_per_trial: float) -> SearchSettings:
        return dataclasses.replace(self, resources=dataclasses.replace(self.resources, gpus_per_trial=gpus_per_trial))

    def with_run(self, **changes: Any) -> SearchSettings:
        return dataclasses.replace(self, run=dataclasses.replace(self.run, **changes))

    def mlflow_params(self) -> dict[str, Any]:
        """The settings as flat MLflow params of the search's parent run, with credentials masked."""
        params: dict[str, Any] = {}
        for key, value in dataclasses.asdict(self).items():
            params.update(value if key in _PARTS else {key: value})
        for key in ("resume", "mlflow_run_id"):
            params.pop(key)
        for key in ("mlflow_uri", "storage_path", "data_dir"):
            params[key] = redact(str(params[key]))
        return params

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SearchSettings:
        """The settings in ``text``, a ``search.json`` of any layout a search wrote (``results.record``)."""
        return cls.from_record(parse_record(text))

    @classmethod
    def read(cls, folder: str) -> SearchSettings:
        """The settings saved in ``folder``'s ``search.json`` (``ResultsError``, saying what to do, if none)."""
        return cls.from_record(read_record(folder))

    @classmethod
    def from_record(cls, record: SearchRecord) -> SearchSettings:
        """The settings ``record`` holds, its parts typed; ``ResultsError`` when one the driver needs is missing."""
        if record.budget is None:
            raise _incomplete(record, "no whole budget: num_samples, max_epochs, grace_period and reduction_factor")
        try:
            resources, run = _typed_part(Resources, record.resources), _typed_part(RunSettings, record.run)
        except TypeError as e:
            raise _incomplete(record, str(e)) from None
        own = {f.name: getattr(record, f.name) for f in dataclasses.fields(cls) if f.name not in _PARTS}
        own["params"] = list(record.params)
        return cls(**own, budget=record.budget, resources=resources, run=run)


def _incomplete(record: SearchRecord, what: str) -> ResultsError:
    return ResultsError(f"the {SEARCH_JSON} of search '{record.name}' lacks settings ({what}): it was edited or cut "
                        "short; restore it from a copy")  # fmt: skip


def _typed_part(part: type[Any], saved: Mapping[str, Any]) -> Any:
    """``part`` (Resources, RunSettings) from what a search saved of it; settings it no longer has are left out."""
    names = {f.name for f in dataclasses.fields(part)}
    return part(**{k: v for k, v in saved.items() if k in names})


def parse_gpus_per_trial(text: str | None) -> float | str:
    """``auto``, ``default`` (the flag was not given), or a number of GPUs that Ray can schedule."""
    if text is None:
        return GPUS_DEFAULT
    if text.strip().lower() == GPUS_AUTO:
        return GPUS_AUTO
    try:
        value = float(text)
    except ValueError:
        raise UsageError(
            f"--gpus-per-trial {text!r} must be 0, a fraction such as 0.25, a whole number, or auto"
        ) from None
    return check_gpus_per_trial(value)


def check_gpus_per_trial(value: float) -> float:
    if value < 0 or value != value:
        raise UsageError(
            f"--gpus-per-trial is {value:g}, but must be 0 (CPU), a fraction such as 0.25, or a whole number"
        )
    if value > 1 and value != int(value):
        raise UsageError(f"--gpus-per-trial is {value:g}: above 1 it must be a whole number of GPUs (e.g. 2)")
    return value


def resolve_storage(storage_path: str, *, cwd: Path) -> str:
    """An absolute path (or a URI as given) whose nearest existing folder is writable."""
    if storage.is_uri(storage_path):
        return storage_path
    path = (cwd / storage_path).resolve()
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(
            f"--storage-path {path} is not writable ({probe} is read-only or not a folder): pass a writable folder"
        )
    return str(path)


def resolve_tracking_uri(uri: str | None, *, cwd: Path) -> str:
    """An absolute MLflow tracking URI (whether a server answers is ``tracking_unreachable``'s question).

    Trials chdir into their own folders, so a relative URI would scatter runs
    over one ``mlflow.db`` per trial: it is made absolute here, once.
    """
    if uri is None:
        return f"sqlite:///{cwd / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        path = path if path.is_absolute() else (cwd / path).resolve()
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            raise UsageError(f"--mlflow-uri {uri}: folder {path.parent} does not exist or is not writable")
        return f"sqlite:///{path}"
    if uri.startswith(("http://", "https://")):
        return uri  # a server that is down is not bad input: see tracking_unreachable
    if "://" in uri or uri.startswith("databricks"):
        return uri
    if uri.endswith(".db"):
        return resolve_tracking_uri(f"sqlite:///{uri}", cwd=cwd)
    raise UsageError(f"--mlflow-uri {uri!r} is not a tracking URI: use sqlite:///path/mlflow.db or http://host:5000")


_SECRET_QUERY = re.compile(r"(?i)([?&](?:token|password|secret|signature|x-amz-[a-z-]+|sig)=)[^&]*")


def redact(uri: str) -> str:
    """``uri`` fit for logs and MLflow params: no password, token or signature in it."""
    uri = re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", uri)
    return _SECRET_QUERY.sub(r"\1***", uri)


def tracking_unreachable(uri: str, *, timeout: float = 3.0) -> str | None:
    """Why the MLflow server at ``uri`` cannot be reached within ``timeout`` seconds, or None."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as e:
        return str(getattr(e, "reason", e))
    return None


def default_name(space: str) -> str:
    return f"{space}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise UsageError(
            f"--name {name!r} must start with a letter or digit and hold only letters, digits, '.', '_' and '-'"
        )
    return name


def resume_settings(*, name: str, storage_path: str) -> SearchSettings:
    """The settings an interrupted search started with, read from its ``search.json``."""
    folder = storage.join(storage_path, name)
    saved = storage.join(folder, SEARCH_JSON)
    if not storage.exists(saved):
        where = "no search" if not storage.exists(folder) else f"no {SEARCH_JSON} for search"
        raise UsageError(
            f"--resume: {where} '{name}' in {storage_path}; check --name and --storage-path "
            f"(existing searches are the folders of {storage_path})"
        )
    return SearchSettings.read(folder).with_run(resume=True)


def budget_from(space: SearchSpace, *, smoke_test: bool, given: dict[str, Any]) -> Budget:
    """The space's default budget (or its smoke budget), with the flags the user gave on top."""
    base = smoke_of(space).budget if smoke_test else space.budget
    values = dataclasses.asdict(base)
    values.update({k: v for k, v in given.items() if v is not None})
    budget = Budget(**values)
    check_budget(budget)
    return budget
