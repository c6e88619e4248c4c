"""A user's task found, loaded and checked against its space, before anything starts.

``load_task`` imports a task by name (a built-in's, or ``package.module:attribute``)
and wraps it in ``LoadedTask``, which fills in what the task leaves out;
``resolve_objective`` and ``check_config_keys`` refuse a space its task cannot
honour; ``load_data`` and ``predict`` are how the service calls the task's own
``load`` and ``predict``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from search_spaces.exceptions import TaskError
from trainables.context import TrialContext
from trainables.task_data import TaskData

BUILTIN = {"cifar": "trainables.cifar:TASK", "imagefolder": "trainables.imagefolder:TASK"}  # name -> where it lives


DEFAULT_OBJECTIVE = ("val_acc", "max")  # a space that names no metric, of a task that names none either


def metric_modes(task: Any, constants: dict[str, Any]) -> dict[str, str | None] | None:
    """The metrics ``task`` reports, each with its direction (None: not said); None when the task does not say."""
    reports = getattr(task, "metrics", None)
    if not callable(reports):
        return None
    named = reports(constants)
    if isinstance(named, dict):
        return {str(k): (str(v) if v is not None else None) for k, v in named.items()}
    return dict.fromkeys(map(str, named))


def _listed(modes: dict[str, str | None]) -> str:
    return ", ".join(f"{k} ({v})" if v else k for k, v in modes.items())


def resolve_objective(task: Any, metric: str | None, mode: str | None, constants: dict[str, Any]) -> tuple[str, str]:
    """The ``(metric, mode)`` a search of ``task`` goes by: the space's, checked against what the task reports.

    A space may leave out ``metric`` (the task's ``objective`` then decides,
    else ``val_acc``) and ``mode`` (the metric's direction, as the task gives it,
    else ``max``). A metric the task never reports, or a mode against the
    metric's direction, is refused with the fix.
    """
    modes = metric_modes(task, constants)
    default = getattr(task, "objective", None)
    chosen = tuple(default(constants)) if callable(default) else None
    hint = (f"; or leave metric and mode out of the space: its task then goes by {chosen[0]} ({chosen[1]})"
            if chosen else "")  # fmt: skip
    if metric is None:
        metric = chosen[0] if chosen else DEFAULT_OBJECTIVE[0]
        if mode is None:
            mode = chosen[1] if chosen else None
    if modes is not None and metric not in modes:
        raise TaskError(
            f"the space's metric '{metric}' is not one its task reports ({_listed(modes)}): set metric to one of "
            f"them{hint}"
        )
    direction = (modes or {}).get(metric)
    if mode is None:
        mode = direction or DEFAULT_OBJECTIVE[1]
    if direction and mode != direction:
        better = "higher" if direction == "max" else "lower"
        raise TaskError(
            f"the space says mode: {mode} for {metric}, but its task reports {metric} as {better} is better: set "
            f"mode: {direction}{hint}"
        )
    return metric, mode


def predict(task: Any, model: nn.Module, state: dict[str, Any], inputs: Any) -> Any:
    """What the registered model returns for raw ``inputs``: the task's ``predict``, else the network's outputs."""
    with torch.no_grad():
        own = getattr(task, "predict", None)
        if callable(own):
            return own(model, state, inputs)
        values = inputs.to_numpy() if isinstance(inputs, pd.DataFrame) else np.asarray(inputs)
        return model(torch.as_tensor(values, dtype=torch.float32)).numpy()


def check_config_keys(task: Any, given: set[str], constants: dict[str, Any]) -> None:
    """Refuse a space that lacks a config key ``task`` reads (tasks without ``config_keys`` are trusted).

    ``given`` is what every trial's config holds: the space's parameters and
    constants, ``epochs`` and ``seed``.
    """
    wanted = getattr(task, "config_keys", None)
    if callable(wanted):
        missing = [k for k in wanted(constants) if k not in given]
        if missing:
            raise TaskError(
                f"the space gives no value for {', '.join(missing)}, which its task reads: add each as a "
                f"parameter (params:) or a constant (constants:)"
            )


def load_data(space: Any, *, data_dir: str, smoke_test: bool) -> TaskData:
    """What ``space``'s task loads from ``data_dir`` for a search (a slice of it for the smoke test)."""
    smoke = None
    if smoke_test:
        from search_spaces import smoke_of

        s = smoke_of(space)
        smoke = {"train_size": s.train_size, "val_size": s.val_size, "test_size": s.test_size}
    return load_task(space.task).load(data_dir=data_dir, smoke=smoke, constants=dict(space.constants))


def load_task(ref: str) -> LoadedTask:
    """The task ``ref`` names: a built-in's name, or ``package.module:attribute`` importable from here.

    The attribute may be a task object, a module with the methods, a class whose
    instances are tasks (it is called with no arguments), or a plain function
    ``train(config, context)``.
    """
    import importlib
    import inspect

    target = BUILTIN.get(ref, ref)
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise TaskError(f"task '{ref}' is neither a built-in task ({', '.join(BUILTIN)}) nor package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # whatever the user's module raises while importing
        raise TaskError(
            f"task '{ref}': importing {module_name} failed ({type(e).__name__}: {e}); it must be importable "
            f"from the working directory (run from the folder that holds it, or install it)"
        ) from None
    task = getattr(module, attribute, None)
    if task is None:
        raise TaskError(f"task '{ref}': module {module_name} has no attribute '{attribute}'")
    if inspect.isclass(task):
        task = task()
    if inspect.isfunction(task) or (callable(task) and not hasattr(task, "train")):
        return LoadedTask(task, ref=ref, function=True)
    if not callable(getattr(task, "train", None)):
        raise TaskError(
            f"task '{ref}' has no train: a task is a function train(config, context), or an object with the method "
            f"train(config, data, context) and, optionally, load, evaluate and build_model (see trainables/task.py)"
        )
    return LoadedTask(task, ref=ref)


class LoadedTask:
    """A user's task with what it leaves out filled in: only ``train`` is required.

    Without ``load`` the task reads its own data (``train`` receives None);
    without ``evaluate`` the search has no test score; without ``build_model``
    no model is registered (``skipped`` says so, for the summary). A plain
    function ``train(config, context)`` is a task with ``train`` alone. Every
    other attribute (``metrics``, ``objective``, ``predict``, ...) is the task's own.
    """

    def __init__(self, task: Any, *, ref: str, function: bool = False) -> None:
        self.wrapped, self.ref, self.function = task, ref, function

    def __getattr__(self, name: str) -> Any:
        if name in ("wrapped", "ref", "function"):  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        if self.function:
            raise AttributeError(f"task '{self.ref}' is a function: it has no {name}")
        return getattr(self.wrapped, name)

    @property
    def supports_ddp(self) -> bool:
        """Whether the task trains data-parallel at ``context.world_size > 1`` (it says so: ``supports_ddp = True``)."""
        return bool(getattr(self.wrapped, "supports_ddp", False))

    def provides(self, method: str) -> bool:
        """Whether the task itself has ``method`` (``load``, ``evaluate``, ``build_model``, ...)."""
        return not self.function and callable(getattr(self.wrapped, method, None))

    def skipped(self) -> list[str]:
        """What a search of this task leaves out, and why: one line each."""
        said = {"evaluate": "no test score: the task has no evaluate(state, held_out, device=...)",
                "build_model": "no registered model: the task has no build_model(state)"}  # fmt: skip
        return [line for method, line in said.items() if not self.provides(method)]

    def load(self, *, data_dir: str, smoke: dict[str, int] | None, constants: dict[str, Any]) -> TaskData:
        if self.provides("load"):
            return self.wrapped.load(data_dir=data_dir, smoke=smoke, constants=constants)
        return TaskData(trial=None, held_out=None, description=f"data read by task {self.ref} itself", example=None)

    def train(self, config: dict[str, Any], data: Any, context: TrialContext) -> None:
        if self.function:
            return self.wrapped(config, context)
        return self.wrapped.train(config, data, context)

    def evaluate(self, state: dict[str, Any], held_out: Any, *, device: torch.device) -> dict[str, Any]:
        if not self.provides("evaluate"):
            raise TaskError(f"task '{self.ref}' has no evaluate: it gives no test score")
        return self.wrapped.evaluate(state, held_out, device=device)

    def build_model(self, state: dict[str, Any]) -> nn.Module:
        if not self.provides("build_model"):
            raise TaskError(f"task '{self.ref}' has no build_model: its trained network cannot be rebuilt")
        return self.wrapped.build_model(state)
