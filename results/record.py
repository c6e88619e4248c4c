"""A search's ``search.json``, read back typed: ``read(folder) -> SearchRecord``, whichever layout wrote it.

A search saves its settings once, when it starts (``tuner.config.settings``
writes them; ``--resume``, the report, a replay, ``tuner.load`` and ``--sync``
read them). Every reader goes through this module, so the file is parsed in
one place, and a search written in an older layout reads like a new one:

- the current layout: the search's own settings at the top level, and its
  parts as objects, ``budget`` (trials, epochs, the scheduler's knobs),
  ``resources`` (what each trial asked of the cluster) and ``run`` (where it
  is written and tracked, what it keeps, how it recovers);
- the flat layout written before that split: every setting at the top level;
- a file that leaves out settings added since (``scheduler``, ``metric``,
  ``mode``, ...): what a search without them did.

No Ray, no ``tuner``: the report and a replay read it as well as the driver.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from results import storage
from search_spaces import Budget, Objective, SelectRule, rule_from_data
from search_spaces.exceptions import ResultsError
from search_spaces.objectives import objectives_of

SEARCH_JSON = "search.json"
DEFAULT_OBJECTIVE = ("val_acc", "max")  # searches from before spaces named their metric

# The keys of each part, for the flat layout, which does not group them. They are the fields of
# search_spaces.Budget, tuner.config.settings.Resources and RunSettings (tests/test_record.py holds them equal).
BUDGET_KEYS = tuple(f.name for f in dataclasses.fields(Budget))
RESOURCES_KEYS = ("gpus_per_trial", "cpus_per_trial", "workers_per_trial", "max_concurrent", "worker_start_timeout_s")
RUN_KEYS = ("name", "storage_path", "mlflow_uri", "keep_checkpoints", "keep_trials", "max_failures",
            "checkpoint_period_s", "resume", "mlflow_run_id")  # fmt: skip
PARTS = {"budget": BUDGET_KEYS, "resources": RESOURCES_KEYS, "run": RUN_KEYS}


@dataclass(frozen=True)
class SearchRecord:
    """What a search's ``search.json`` holds: what was searched, on which data, how, and its three parts.

    A setting the file leaves out reads as what a search without it did (no
    ``scheduler``: ASHA; no ``metric``: ``val_acc``, maximised). ``budget`` is
    None only for a file that names no whole budget; ``resources`` and ``run``
    are the parts' settings as saved (``tuner.config.settings`` types them), read
    through the properties below.
    """

    space_name: str = ""  # the space's name: the MLflow experiment and the registered model are named after it
    space_file: str = ""  # the YAML file the space was read from (absolute), unless it is a built-in
    data_dir: str = ""
    params: tuple[str, ...] = ()  # --param overrides of the space, NAME=VALUE
    smoke_test: bool = False
    compile: bool = False
    search: str = "random"
    scheduler: str = "asha"
    seed: int = 0
    metric: str = DEFAULT_OBJECTIVE[0]
    mode: str = DEFAULT_OBJECTIVE[1]
    target: float | None = None
    confirm: int = 0
    warm_start: str = ""
    objectives: Mapping[str, str] = field(default_factory=dict)  # further objectives, metric -> mode
    select: Mapping[str, Any] = field(default_factory=dict)  # the select rule as data (search_spaces.objectives)
    budget: Budget | None = None
    resources: Mapping[str, Any] = field(default_factory=dict)
    run: Mapping[str, Any] = field(default_factory=dict)
    saved: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the file, as written

    @property
    def space_source(self) -> str:
        """What finds the space again (``search_spaces.searched_space``): its YAML file, or a built-in's name."""
        return self.space_file or self.space_name

    def all_objectives(self) -> tuple[Objective, ...]:
        """The metric first, then the further objectives (a search from before objectives has one)."""
        return objectives_of(self.metric, self.mode, self.objectives)

    def rule(self) -> SelectRule:
        """The rule that picked the registered model (the best by the metric, for a search without one)."""
        return rule_from_data(dict(self.select), metric=self.metric)

    @property
    def name(self) -> str:
        """The search's name (``--name``); empty when the file names none."""
        return str(self.run.get("name") or "")

    @property
    def storage_path(self) -> str:
        return str(self.run.get("storage_path") or "")

    @property
    def mlflow_uri(self) -> str:
        return str(self.run.get("mlflow_uri") or "")

    @property
    def gpus_per_trial(self) -> float:
        """The GPUs each trial had; 0.0 for none, or for a search that stopped before it resolved them."""
        value = self.resources.get("gpus_per_trial", 0.0)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0

    @property
    def cpus_per_trial(self) -> float:
        return float(self.resources.get("cpus_per_trial", 1.0))

    @property
    def workers_per_trial(self) -> int:
        """How many processes each trial ran on (> 1: a DDP trial)."""
        return int(self.resources.get("workers_per_trial", 1))


def _typed(saved: Mapping[str, Any]) -> dict[str, Any]:
    """The record's own settings among ``saved``'s top-level keys, as the record's field types."""
    cast = {"params": lambda v: tuple(str(p) for p in v), "smoke_test": bool, "compile": bool, "seed": int,
            "confirm": int, "target": lambda v: None if v is None else float(v), "objectives": dict,
            "select": dict}  # fmt: skip
    own = {f.name for f in dataclasses.fields(SearchRecord)} - set(PARTS) - {"saved"}
    return {k: cast.get(k, str)(v) for k, v in saved.items() if k in own and v is not None}


def _part(saved: Mapping[str, Any], key: str) -> dict[str, Any]:
    """One part's settings: its object in the current layout, its keys at the top level in the flat one."""
    if isinstance(saved.get(key), Mapping):
        return dict(saved[key])
    return {k: saved[k] for k in PARTS[key] if k in saved}


def parse(text: str, *, where: str = SEARCH_JSON) -> SearchRecord:
    """The record in ``text``, the contents of a ``search.json`` (``where``: the file, for messages)."""
    try:
        saved = json.loads(text)
    except ValueError as e:
        raise ResultsError(f"{where} is not JSON ({e}): it was cut short or edited; restore it from a copy "
                           "(a search writes it once, when it starts)") from None  # fmt: skip
    if not isinstance(saved, dict):
        raise ResultsError(f"{where} holds a {type(saved).__name__}, not a search's settings: restore it from a copy")
    budget = _part(saved, "budget")
    try:
        return SearchRecord(
            **_typed(saved),
            budget=Budget(**{k: budget[k] for k in BUDGET_KEYS}) if set(BUDGET_KEYS) <= set(budget) else None,
            resources=_part(saved, "resources"),
            run=_part(saved, "run"),
            saved=saved,
        )
    except (TypeError, ValueError) as e:
        raise ResultsError(f"{where} holds a setting of the wrong type ({e}): restore it from a copy") from None


def read(folder: str | os.PathLike, *, missing_ok: bool = False) -> SearchRecord:
    """The record of the search in ``folder`` (a path or a URI).

    Raises ``ResultsError``, saying what to do, when the file is missing or
    unreadable; with ``missing_ok`` a missing file reads as ``SearchRecord()``,
    what a search that saved no settings went by.
    """
    folder = str(folder)
    path = storage.join(folder, SEARCH_JSON)
    if not storage.exists(path):
        if missing_ok:
            return SearchRecord()
        raise ResultsError(f"{folder} holds no search (no {SEARCH_JSON} in {folder}): pass the folder a search "
                           "wrote, <storage_path>/<name>, e.g. ray_results/<name>")  # fmt: skip
    try:
        text = storage.read_text(path)
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path} cannot be read ({e}): check its permissions, or the storage it is on") from None
    return parse(text, where=path)
