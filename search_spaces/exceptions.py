"""Every error the project raises for a user to act on, in one module, under one base: ``HpsearchError``.

The module sits at the bottom of the layers (``search_spaces`` imports nothing
else of the project's), so tasks, results and ``tuner`` all raise from it. Each
message says what went wrong and what to do; ``exit_code`` is the status the
command line exits with when the error reaches it, so a caller (the CLI, a
notebook) catches ``HpsearchError`` once:

======================  =========================================================  ====
error                   raised when                                                exit
======================  =========================================================  ====
``SpaceError``          a search space, or an override of one, is unusable          2
``UsageError``          a flag, a path or a server named cannot work                2
``SearchBusy``          another driver holds the search (a ``UsageError``)          2
``DataError``           the dataset is missing, unreadable or malformed             2
``TaskError``           the task's code, data or settings are unusable              2
``ResultsError``        a search folder has no readable results                     1
``ReplayRefused``       a trial cannot be replayed faithfully (a ``ResultsError``)  1
``SyncError``           a search cannot be pushed to an MLflow server               1
``Interrupted``         the search stopped with its state saved (resume it)         130 (Ctrl-C) or 1
``Diverged``            a trial's loss became NaN or infinite: the trial ends       (a trial's)
``WorkersNotPlaced``    a DDP trial's workers could not be placed in time           (a trial's)
======================  =========================================================  ====

The built-in classes each derives from too (``ValueError``, ``RuntimeError``)
keep older ``except`` clauses working.
"""

from __future__ import annotations


class HpsearchError(Exception):
    """The base of every error above; ``exit_code`` is what the command line exits with."""

    exit_code = 1


class SpaceError(HpsearchError, ValueError):
    """A search space, or an override of one, is not usable; the message says why."""

    exit_code = 2


class UsageError(HpsearchError, ValueError):
    """A flag, a path or a server the user named cannot work; the message names the fix."""

    exit_code = 2


class SearchBusy(UsageError):
    """Another driver holds the search: the message names it and how to stop it."""


class DataError(HpsearchError, RuntimeError):
    """The dataset is missing, unreadable or malformed; the message names the fix."""

    exit_code = 2


class TaskError(HpsearchError, RuntimeError):
    """The task's data or settings are unusable; the message says what to change."""

    exit_code = 2


class ResultsError(HpsearchError, RuntimeError):
    """A search folder has no readable results; the message says what to do."""


class ReplayRefused(ResultsError):
    """The trial cannot be replayed faithfully here; the message says why and what would make it possible."""


class SyncError(HpsearchError, RuntimeError):
    """The search cannot be pushed; the message says why."""


class Interrupted(HpsearchError, RuntimeError):
    """The search was stopped (Ctrl-C, SIGTERM, or itself) with its state saved; the message says how to resume it.

    ``exit_code`` is 130 after Ctrl-C or SIGTERM, 1 when the search stopped itself for a reason it states.
    """

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Diverged(HpsearchError, RuntimeError):
    """The training loss became NaN or infinite: more epochs cannot help, and the trial ends."""

    def __init__(self, *, epoch: int, loss: float) -> None:
        super().__init__(f"training loss is {loss} at epoch {epoch}")
        self.epoch, self.loss = epoch, loss


class WorkersNotPlaced(HpsearchError, RuntimeError):
    """A DDP trial's workers could not be placed within the start timeout."""
