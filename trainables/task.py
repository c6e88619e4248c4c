"""The task contract: what the service calls to train a user's model on a user's data.

A task is a function ``train(config, context)``, or any object (a class
instance, or a module) with the methods of ``Task`` below, of which only
``train`` is required: without ``load`` the task reads its own data (``train``
receives None), without ``evaluate`` the search gives no test score, and
without ``build_model`` no model is registered; the summary says what was
left out. A task imports neither Ray nor MLflow: the service owns scheduling,
checkpoints, retries, resume, ASHA, MLflow and the results, and calls the task
at these points.

The smallest task (README, "Your own model and data")::

    def train(config, context):
        model, optimizer = ..., ...
        for epoch in range(context.restore(model, optimizer), config["epochs"] + 1):
            ...  # one epoch of training and validation
            context.report({"epoch": epoch, "val_acc": acc}, model=model, optimizer=optimizer)

1. ``load`` runs once per search, on the driver, with ``--data-dir``, the
   space's ``smoke`` sizes under ``--smoke-test`` (else None) and the space's
   ``constants`` (settings such as a target column). It reads and validates the
   data (raise ``TaskError`` with the fix when something is wrong: the search
   then stops before any trial starts) and returns a ``TaskData``: ``trial``, what
   every trial receives (put once in Ray's object store, so plain arrays and
   values), ``held_out``, what the final test evaluation keeps back, a
   ``description`` for the log, and ``example``, a few of the user's raw inputs
   as they hold them (uint8 pixels, a DataFrame of a table's own columns): the
   registered model's signature and input example.
2. ``train`` runs one trial: build the model from ``config`` (the space's
   parameters and constants, plus ``epochs``, the trial's budget, and ``seed``),
   train on ``context.device``, continue from ``context.start`` when it is not
   None (a retried or resumed trial), and call ``context.report(metrics, state)``
   once per epoch. ``metrics`` holds ``epoch`` (1, 2, ...) and the space's
   metric; ``state`` is a function returning everything needed to continue
   (a dict of tensors and plain values, called only when the service decides
   to checkpoint; the service adds ``epoch`` and ``config`` to what it saves,
   so ``context.start["epoch"]`` is the last epoch done). Or pass
   ``model=`` (and ``optimizer=``) instead of ``state``: their state dicts are
   saved, and ``context.restore(model, optimizer)`` puts them back and returns
   the first epoch to train. Python's, NumPy's and PyTorch's generators are
   seeded with ``config["seed"]`` before ``train`` runs. Under
   ``--scheduler pbt`` the start may be another trial's checkpoint and
   ``config`` may differ from ``context.start["config"]`` in the space's
   ``mutable`` parameters: continue the state with ``config``'s values (for
   instance, set the restored optimizer's lr from ``config``). With
   ``context.world_size > 1`` the process group is already initialised and
   every rank calls ``report``. Raise ``Diverged`` when the
   loss stops being finite; running out of GPU memory is recognised by itself.
3. ``evaluate`` scores a saved ``state`` on ``held_out``: a dict of metrics,
   e.g. ``{"test_acc": 0.93}``. A classifier may add, from the same pass,
   ``confusion_matrix`` (``[true][predicted]`` counts) and ``classes`` (their
   names): the search's report then draws the best trial's confusion matrix.
4. ``build_model`` rebuilds the trained network from a saved ``state``, in
   eval mode, for the model registry.

The registered model takes the user's raw inputs: ``predict(model, state,
inputs)``, optional, turns inputs like ``TaskData.example`` into predictions
with the network ``build_model`` rebuilt (preprocessing such as resizing,
scaling or one-hot encoding inside it, from values kept in ``state``), and
returns what a user reads: a classifier's class names (``class_frame``), a
regression's values in the target's units. Without it, inputs are taken as the
network's own input tensor and its raw outputs come back.

Optionally, ``metrics(constants)`` names the metrics ``train`` reports, with
each one's direction (``{"val_acc": "max", "val_loss": "min"}``; a plain list
of names is trusted without directions), ``objective(constants)`` the
``(metric, mode)`` a space that names none goes by, and
``config_keys(constants)`` the config keys ``train`` reads: a space whose metric
is not among the first, whose mode disagrees with the metric's direction, or
that lacks one of the config keys (as a parameter or a constant), is then
refused before the search starts. Read the config with
``config[key]``, never ``config.get(key, default)``: the space is the one place
a recipe's values live.

A space file names its task: ``task: cifar`` for a built-in one, or
``task: package.module:attribute`` for your own, importable from the working
directory (see ``examples/``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from torch import nn

from search_spaces.exceptions import Diverged as Diverged  # raised by tasks: importable from here
from search_spaces.exceptions import TaskError as TaskError

# report(metrics, state): state() builds the dict a checkpoint saves.
Reporter = Callable[[dict[str, Any], Callable[[], dict[str, Any]]], None]




@dataclass(frozen=True)
class TaskData:
    """What ``Task.load`` returns."""

    trial: Any  # what every trial receives, through Ray's object store
    held_out: Any  # what the final test evaluation uses, kept on the driver
    description: str  # e.g. "45000 train / 5000 val / 10000 test"
    example: Any  # a few raw inputs (an array, a DataFrame): the registered model's signature and input example
    # The shape of the inputs the registered model accepts, -1 for any size (default: the example's, any batch).
    example_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class TrialContext:
    """What ``Task.train`` is given beside the config and the data."""

    device: torch.device  # the GPU Ray assigned to this process, else the CPU
    reporter: Reporter  # the service's end of ``report``
    start: dict[str, Any] | None = None  # the last checkpoint's state, when the trial continues
    rank: int = 0
    world_size: int = 1
    compile: bool = False  # --compile: torch.compile the network

    def report(self, metrics: dict[str, Any], state: Callable[[], dict[str, Any]] | None = None, *,
               model: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None) -> None:  # fmt: skip
        """Once per epoch, on every rank: ``metrics`` holds ``epoch`` and the space's metric.

        What a checkpoint saves, when the service decides to save one: ``state()``,
        or the ``model``'s (and ``optimizer``'s) state dicts, which ``restore``
        puts back. With neither, the trial saves no checkpoint: a retried or
        resumed trial starts over, and no model is registered from it.
        """
        if state is None and model is not None:
            state = functools.partial(_module_state, model, optimizer)
        self.reporter(metrics, state)

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
        """Put the last checkpoint (saved by ``report(model=..., optimizer=...)``) back; the first epoch to train.

        1 on a fresh start. Under ``--scheduler pbt`` the checkpoint may be another
        trial's and ``config`` may change a mutable value such as the learning rate:
        set it on the optimizer after ``restore``.
        """
        if not self.start:
            return 1
        if "model" not in self.start:
            raise TaskError("the checkpoint holds no 'model': restore() reads what report(model=...) saved")
        _bare(model).load_state_dict(self.start["model"])
        if optimizer is not None and "optimizer" in self.start:
            optimizer.load_state_dict(self.start["optimizer"])
        return int(self.start["epoch"]) + 1

    # Data parallelism without Ray: what a task uses to train the same on one process or many
    # (declare it with ``supports_ddp = True``). Every rank runs ``train`` with the same seed.

    def distributed(self, model: nn.Module) -> nn.Module:
        """``model`` as the trial trains it: wrapped in DDP at world size > 1 (gradients averaged over the
        ranks after each backward), else itself. Save and restore go through the wrapper by themselves."""
        if self.world_size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def shard(self, items: Any) -> Any:
        """This rank's part of ``items`` (a tensor, an array, a list): every ``world_size``-th item from ``rank``.

        Give it a global batch's indices, drawn the same on every rank (seeded): the
        ranks then train on the batch one process would, each on its part. Batches
        whose size the world size divides keep the parts equal, and DDP's average of
        the ranks' mean losses equal to the batch's mean loss.
        """
        return items[self.rank :: self.world_size]

    def mean(self, value: float | torch.Tensor) -> float:
        """``value`` averaged over the ranks (itself at world size 1): a metric each rank computed on its part."""
        if self.world_size == 1:
            return float(value)
        import torch.distributed as dist

        where = self.device if self.device.type == "cuda" else torch.device("cpu")  # NCCL reduces on the GPU
        total = torch.as_tensor(value, dtype=torch.float64).detach().to(where).reshape(())
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.item() / self.world_size


def _bare(model: nn.Module) -> nn.Module:
    """The module itself, under DDP's and torch.compile's wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _module_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    state: dict[str, Any] = {"model": _bare(model).state_dict()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    return state


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and PyTorch's generators, seeded before ``train`` runs (the trial's ``seed``)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@runtime_checkable
class Task(Protocol):
    """The methods a task may provide (see the module docstring): ``train`` is the one it must."""

    def load(self, *, data_dir: str, smoke: dict[str, int] | None, constants: dict[str, Any]) -> TaskData: ...

    def train(self, config: dict[str, Any], data: Any, context: TrialContext) -> None: ...

    def evaluate(self, state: dict[str, Any], held_out: Any, *, device: torch.device) -> dict[str, Any]: ...

    def build_model(self, state: dict[str, Any]) -> nn.Module: ...


# (dataset key, device) -> what a task uploaded there: one dataset per process, whichever task.
_ON_DEVICE: dict[tuple[str, str], Any] = {}


def on_device(key: str, device: torch.device, upload: Callable[[], Any]) -> Any:
    """The dataset ``key`` as ``upload()`` puts it on ``device``, uploaded once per process.

    Ray reuses a trial's process for the next trial, so a task that holds its data
    on the device pays the upload once per search, not once per trial. Another
    dataset (or device) replaces it: a process holds one at a time.
    """
    slot = (str(key), str(device))
    if slot not in _ON_DEVICE:
        _ON_DEVICE.clear()
        _ON_DEVICE[slot] = upload()
    return _ON_DEVICE[slot]


# What cuBLAS, cuDNN and the CUDA runtime say when they cannot allocate: PyTorch raises
# these as plain RuntimeErrors, not as torch.cuda.OutOfMemoryError.
_OOM_MESSAGES = (
    "out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_NOT_ENOUGH_MEMORY",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_NOT_INITIALIZED",  # what cuBLAS says when it cannot allocate its handle's workspace
)


def is_out_of_memory(error: BaseException) -> bool:
    """True when ``error`` says the GPU ran out of memory, whichever library noticed it."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error) for m in _OOM_MESSAGES)


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


def class_frame(logits: torch.Tensor, classes: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """A classifier's predictions as a user reads them: ``label`` (the class name) and ``prob_<class>`` columns."""
    probs = torch.softmax(logits.detach().float(), dim=1).cpu().numpy()
    frame = pd.DataFrame({"label": [str(classes[i]) for i in probs.argmax(1)]})
    for i, name in enumerate(classes):
        frame[f"prob_{name}"] = probs[:, i]
    return frame


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


def data_key(data: Any) -> str:
    """A fingerprint of what ``Task.load`` gave the trials: SHA-256 over every array's bytes, shape and type.

    Dicts (by sorted key), lists and tuples are walked; arrays and tensors hash
    their contents; other values their ``repr``. The same data gives the same key
    on any machine; one changed pixel gives another.
    """
    import hashlib

    digest = hashlib.sha256()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                digest.update(f"key:{key};".encode())
                walk(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"seq:{len(value)};".encode())
            for item in value:
                walk(item)
        elif isinstance(value, (np.ndarray, torch.Tensor)):
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
            array = np.ascontiguousarray(array)
            digest.update(f"array:{array.dtype.str}:{array.shape};".encode())
            digest.update(array.tobytes())
        else:
            digest.update(f"value:{value!r};".encode())

    walk(data)
    return digest.hexdigest()


def code_key(ref: str) -> str:
    """A fingerprint of the code that trains task ``ref``: SHA-256 over ``trainables``' sources and the task's module.

    Edits elsewhere (the scheduler, tracking, the docs) leave it alone: they do
    not change what a trial computes.
    """
    import hashlib
    import importlib.util
    from pathlib import Path

    files = sorted(Path(__file__).resolve().parent.rglob("*.py"))
    module = BUILTIN.get(ref, ref).partition(":")[0]
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin and Path(spec.origin).resolve() not in files:
        files.append(Path(spec.origin).resolve())
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:".encode() + path.read_bytes())
    return digest.hexdigest()


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
