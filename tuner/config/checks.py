"""A search's settings from keyword arguments, every check done: what the Python API and the command line share.

``make_settings`` validates each value and resolves paths against ``cwd``; it
touches nothing on disk and starts nothing. A mistake raises ``UsageError``
(or ``SpaceError``, ``TaskError``, ``DataError``) with a message that names the
fix, in the command line's words (``--max-epochs``), which are the keyword
arguments' names with dashes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from results import storage
from search_spaces import Budget, Objective, SearchSpace, get_space, is_path
from search_spaces.exceptions import SpaceError, UsageError
from search_spaces.objectives import check_names
from trainables.loading import check_config_keys, load_task, metric_modes, resolve_objective
from trainables.task import TaskError
from tuner import schedulers
from tuner.config.resources import DEFAULT_START_TIMEOUT_S
from tuner.config.settings import (
    SCHEDULERS,
    SEARCH_ALGORITHMS,
    Resources,
    RunSettings,
    SearchSettings,
    budget_from,
    check_name,
    default_name,
    parse_gpus_per_trial,
    resolve_storage,
    resolve_tracking_uri,
    resume_settings,
)
from tuner.driver.warm import load_warm_start

__all__ = ["check_batch_split", "make_settings", "param_specs"]


def param_specs(params: Mapping[str, Any] | Sequence[str]) -> list[str]:
    """``--param`` strings from a mapping: a string is a spec as on the command line (``"0.01:0.1"``, ``"64,128"``),
    a list or tuple the values to choose from, anything else one fixed value."""
    if isinstance(params, str):
        raise UsageError(f"params={params!r}: give a mapping such as {{'lr': '0.01:0.1', 'batch_size': [64, 128]}}")
    if not isinstance(params, Mapping):
        return [str(p) for p in params]
    specs = []
    for name, value in params.items():
        if isinstance(value, str):
            spec = value
        elif isinstance(value, (list, tuple)):
            spec = ",".join(_literal(v) for v in value)
        else:
            spec = _literal(value)
        specs.append(f"{name}={spec}")
    return specs


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _whole(name: str, value: Any, *, low: int, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UsageError(f"--{name.replace('_', '-')} is {value!r}, but must be a whole number >= {low}")


def _real(name: str, value: Any, *, positive: bool, zero_means: str = "") -> None:
    flag = f"--{name.replace('_', '-')}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise UsageError(f"{flag} is {value!r}, but must be a number")
    if (value <= 0) if positive else (value < 0):
        raise UsageError(f"{flag} is {value:g}, but must be {'> 0' if positive else '>= 0'}{zero_means}")


def make_settings(
    space: str | SearchSpace = "cifar",
    *,
    cwd: Path,
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
) -> SearchSettings:
    """Validate every value and resolve paths against ``cwd``; touches nothing on disk.

    ``space``: a built-in space's name, the path of a space file, or a ``SearchSpace``.
    ``resume``: continue the search ``name`` with the settings it started with (the others are ignored).
    """
    root = resolve_storage(storage_path, cwd=cwd)
    if resume:
        if not name:
            raise UsageError("--resume needs --name: the name of the search to continue")
        return resume_settings(name=check_name(name), storage_path=root)
    if isinstance(space, SearchSpace):
        if not space.source:
            raise UsageError(f"space '{space.name}' was not read from a file: pass its name or the path of its file")
        space = space.source
    space = get_space(str((cwd / space).resolve()) if is_path(space) else space)
    name = check_name(name or default_name(space.name))
    for key, value in (("num_samples", num_samples), ("max_epochs", max_epochs), ("grace_period", grace_period),
                       ("reduction_factor", reduction_factor)):  # fmt: skip
        _whole(key, value, low=1, none_ok=True)
    budget = budget_from(space, smoke_test=smoke_test, given={"num_samples": num_samples, "max_epochs": max_epochs,
                                                             "grace_period": grace_period,
                                                             "reduction_factor": reduction_factor})  # fmt: skip
    _check_values(budget, searcher=searcher, scheduler=scheduler, seed=seed, cpus_per_trial=cpus_per_trial,
                  workers_per_trial=workers_per_trial, max_concurrent=max_concurrent,
                  worker_start_timeout=worker_start_timeout, keep_checkpoints=keep_checkpoints,
                  keep_trials=keep_trials, max_failures=max_failures, checkpoint_period=checkpoint_period,
                  confirm=confirm, target=target)  # fmt: skip
    # A task of the user's that does not import, a metric it never reports or a mode against the metric's
    # direction fails here, before Ray starts; a space that names no metric goes by its task's.
    task, constants = load_task(space.task), dict(space.constants)
    try:
        metric, mode = resolve_objective(task, space.metric, space.mode, constants)
        objectives = {o.metric: _objective_mode(task, o, constants) for o in space.objectives}
        check_names(space.objectives, space.select, metric=metric, space=space.name)
    except (TaskError, SpaceError) as e:  # a space file's mistake: say which file
        raise type(e)(f"{space.source or space.name}: {e}") from None
    _check_trade_off(space, searcher=searcher, confirm=confirm)
    select = dataclasses.replace(space.select, best=space.select.best or metric).as_data() if space.select else {}
    gpus = parse_gpus_per_trial(None if gpus_per_trial is None else str(gpus_per_trial))
    settings = SearchSettings(
        space_name=space.name,
        space_file=space.source,
        metric=metric,
        mode=mode,
        objectives=objectives,
        select=select,
        data_dir=str((cwd / data_dir).resolve()),
        budget=budget,
        resources=Resources(gpus_per_trial=gpus, cpus_per_trial=float(cpus_per_trial),
                            workers_per_trial=workers_per_trial, max_concurrent=max_concurrent,
                            worker_start_timeout_s=float(worker_start_timeout)),  # fmt: skip
        run=RunSettings(name=name, storage_path=root, mlflow_uri=resolve_tracking_uri(mlflow_uri, cwd=cwd),
                        keep_checkpoints=keep_checkpoints, keep_trials=keep_trials, max_failures=max_failures,
                        checkpoint_period_s=float(checkpoint_period)),  # fmt: skip
        search=searcher,
        scheduler=scheduler,
        seed=seed,
        smoke_test=bool(smoke_test),
        compile=bool(compile),
        params=param_specs(params),
        target=None if target is None else float(target),
        confirm=confirm,
        warm_start=_resolve(warm_start, cwd=cwd),
    )
    # The overrides must make a valid space, one the scheduler can work with.
    schedulers.get(scheduler).check(space=settings.space(), budget=budget, search=searcher,
                                    max_concurrent=max_concurrent)  # fmt: skip
    check_config_keys(task, {p.name for p in space.params} | set(constants) | {"epochs", "seed"}, constants)
    if workers_per_trial > 1 and not task.supports_ddp:
        raise UsageError(
            f"--workers-per-trial {workers_per_trial}: task '{space.task}' does not say it trains data-parallel, "
            f"so {workers_per_trial} workers would train {workers_per_trial} unsynchronised copies. Make its train "
            f"use context.distributed(model), context.shard(batch indices) and context.mean(metric), then set "
            f"supports_ddp = True on the task (README, Multi-GPU trials); or run with --workers-per-trial 1"
        )
    check_batch_split(settings)
    if settings.warm_start:  # a folder that cannot seed the search is refused here, before Ray starts
        load_warm_start(settings.warm_start, settings.space(), metric=settings.metric, mode=settings.mode)
    if not settings.resources.pending:  # DDP workers need whole GPUs: refuse before starting Ray
        settings.resources.shape()
    if storage.exists(settings.folder):
        raise UsageError(
            f"a search named '{name}' already exists in {root}: continue it with --resume, or pick another --name"
        )
    return settings


def _objective_mode(task: Any, objective: Objective, constants: dict[str, Any]) -> str:
    """An objective's mode, checked as the metric's is (the task reports it, in that direction)."""
    modes = metric_modes(task, constants)
    if modes is not None and objective.metric not in modes:
        listed = ", ".join(f"{k} ({v})" if v else k for k, v in modes.items())
        raise TaskError(f"objectives: its task does not report {objective.metric} (it reports {listed}): name one of "
                        f"those under objectives, or report {objective.metric} from the task")  # fmt: skip
    direction = (modes or {}).get(objective.metric)
    if direction and direction != objective.mode:
        raise TaskError(f"objectives: its task reports {objective.metric} as {direction}, not {objective.mode}: "
                        f"write `{objective.metric}: {direction}` under objectives")  # fmt: skip
    return objective.mode


def _check_trade_off(space: SearchSpace, *, searcher: str, confirm: int) -> None:
    """Refuse what cannot search over several objectives, or pick its model by a select rule, naming what can."""
    if confirm and space.select is not None and not space.select.plain(metric=space.metric or ""):
        raise UsageError(
            f"--confirm registers the config with the best mean by one metric, and space '{space.name}' picks its "
            f"model by its select rule: leave out --confirm, or remove select from the space"
        )
    if not space.objectives:
        return
    names = ", ".join(o.metric for o in space.objectives)
    if searcher == "bohb":
        raise UsageError(
            f"--search bohb models one metric, and space '{space.name}' trades it against {names}: use --search "
            f"optuna (multi-objective TPE) or random, or remove objectives from the space"
        )
    if confirm:
        raise UsageError(
            f"--confirm retrains the best configs by one metric, and space '{space.name}' picks its model from "
            f"the trade-off with {names} by its select rule: leave out --confirm, or remove objectives"
        )


def _resolve(folder: str | None, *, cwd: Path) -> str:
    if folder is None:
        return ""
    return folder if storage.is_uri(folder) else str((cwd / folder).resolve())


def _check_values(budget: Budget, *, searcher: str, scheduler: str, seed: Any, cpus_per_trial: Any,
                  workers_per_trial: Any, max_concurrent: Any, worker_start_timeout: Any, keep_checkpoints: Any,
                  keep_trials: Any, max_failures: Any, checkpoint_period: Any, confirm: Any,
                  target: Any) -> None:  # fmt: skip
    if searcher not in SEARCH_ALGORITHMS:
        raise UsageError(f"--search is {searcher!r}: pick one of {', '.join(SEARCH_ALGORITHMS)}")
    if scheduler not in SCHEDULERS:
        raise UsageError(f"--scheduler is {scheduler!r}: pick one of {', '.join(SCHEDULERS)}")
    _whole("seed", seed, low=-(2**63))
    _whole("workers_per_trial", workers_per_trial, low=1)
    _whole("max_concurrent", max_concurrent, low=1, none_ok=True)
    _whole("keep_checkpoints", keep_checkpoints, low=1)
    _whole("keep_trials", keep_trials, low=1)
    _whole("max_failures", max_failures, low=0)
    _real("checkpoint_period", checkpoint_period, positive=False, zero_means=" (0: every epoch)")
    _real("worker_start_timeout", worker_start_timeout, positive=True, zero_means=" (seconds)")
    _real("cpus_per_trial", cpus_per_trial, positive=True)
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, (int, float)) or math.isnan(target):
            raise UsageError(f"--target is {target!r}, but must be a number (a score of the space's metric)")
    _whole("confirm", confirm, low=0)
    if confirm > budget.num_samples:
        raise UsageError(
            f"--confirm is {confirm}, but must be between 0 and --num-samples ({budget.num_samples}): it "
            f"retrains that many of the search's best configs"
        )


def check_batch_split(settings: SearchSettings) -> None:
    """Every batch size the search can draw must split evenly over the DDP workers."""
    workers = settings.resources.workers_per_trial
    space = settings.space()
    if workers == 1 or not any(p.name == "batch_size" for p in space.params):  # a task may have no batches
        return
    p = space.param("batch_size")
    sizes = p.choices if p.kind == "choice" else (p.value,) if p.kind == "fixed" else ()
    uneven = [b for b in sizes if int(b) % workers]
    if uneven:
        raise UsageError(
            f"batch_size {', '.join(map(str, uneven))} cannot be split evenly over --workers-per-trial {workers}: "
            f"use batch sizes that are multiples of {workers} (--param batch_size=...)"
        )
