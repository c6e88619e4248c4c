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

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

# What a user's task imports lives in the modules below and is named here too: ``from trainables.task import ...``.
from search_spaces.exceptions import Diverged as Diverged  # raised by tasks: importable from here
from search_spaces.exceptions import TaskError as TaskError
from trainables.context import Reporter as Reporter
from trainables.context import TrialContext as TrialContext
from trainables.fingerprints import code_key as code_key
from trainables.fingerprints import data_key as data_key
from trainables.loading import BUILTIN as BUILTIN
from trainables.loading import DEFAULT_OBJECTIVE as DEFAULT_OBJECTIVE
from trainables.loading import LoadedTask as LoadedTask
from trainables.loading import check_config_keys as check_config_keys
from trainables.loading import load_data as load_data
from trainables.loading import load_task as load_task
from trainables.loading import metric_modes as metric_modes
from trainables.loading import predict as predict
from trainables.loading import resolve_objective as resolve_objective
from trainables.task_data import TaskData as TaskData
from trainables.task_data import class_frame as class_frame
from trainables.task_data import on_device as on_device


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
