"""Single-process trials: the Tune function's side of ``tuner.trial.process``.

``run_trial`` (called by ``tuner.trial.trainable``'s Tune function) trains the
space's task in the trial's own process on the device Ray assigned, continuing
from Tune's checkpoint when there is one, each report going out as one
``tune.report``. The data comes from Ray's object store (put there once per
search by ``tune.with_parameters``). DDP trials run through ``tuner.trial.ddp``.
Inside Tune functions only ``ray.tune.*`` is used (``ray.train.report`` raises
there).

Tune's function API holds a trial inside ``tune.report`` until the driver has
handled the result (its callbacks, the scheduler) and asked for the next one.
The answer matters only where the scheduler may decide (``answer_epochs``: its
rungs, PBT's exploits, every epoch under the median rule), where a checkpoint
goes with the report (its folder is only lent for the call), and when the
driver falls behind (a report handed over ``HEAR_S`` ago still unanswered),
so that a stop reaches the trial within about an epoch. A ``Reporter`` waits
there, after the reports before it; at the other epochs it hands the report to
a thread of its own, and the trial trains on.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Any

import ray
from ray import tune

from tuner.trial.process import Channel, run_process, trial_device
from tuner.trial.settings import TrialSettings

__all__ = ["HEAR_S", "Reporter", "run_trial"]

HEAR_S = 1.0  # a report waits when one handed over this long ago still has no answer (a driver falling behind)
_CLOSE = object()


def run_trial(config: dict[str, Any], *, data: Any, settings: TrialSettings) -> None:
    """Train one single-process trial of ``settings.task``, reporting every epoch, checkpointing as the policy says.

    ``data`` is what the task's ``load`` returned for trials.
    """
    reporter = Reporter(answer_epochs=settings.answer_epochs)
    channel = Channel(
        report=reporter.report,
        restored=tune.get_checkpoint(),
        trial_id=tune.get_context().get_trial_id(),
        device=trial_device(),
        where={"node_id": ray.get_runtime_context().get_node_id()},
    )
    try:
        run_process(config, data, settings=settings, channel=channel)
    except BaseException:
        reporter.close()  # the reports before the failure still reach Tune
        raise
    reporter.close()
    reporter.raise_stop()


def _tune_report(metrics: dict[str, Any], folder: str | None) -> None:
    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)


class Reporter:
    """A trial's reports to Tune, in order, waiting for the driver's answer only where it can matter.

    ``report`` waits (for the reports queued before it, then for its own) at
    an epoch of ``answer_epochs``, with a checkpoint, or when a report it handed
    over ``HEAR_S`` ago is still unanswered; otherwise its thread hands the report
    to Tune and the trial goes on. A stop that reaches the thread (Tune ends the
    trial inside ``tune.report`` by raising ``SystemExit``) is raised in the
    trial at its next report, as it would have been in that one.
    """

    def __init__(self, *, answer_epochs: tuple[int, ...] = (), send=_tune_report) -> None:
        self.answer_epochs = frozenset(answer_epochs)
        self._send = send
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stop: BaseException | None = None  # what the thread's report raised: a stop, or an error
        self._handed: collections.deque[float] = collections.deque()  # when each unanswered report was handed over
        self._epoch_ended_at = time.time()

    def report(self, metrics: dict[str, Any], folder: str | None) -> None:
        self.raise_stop()
        # Tune times an epoch from report to report as it receives them: stamped here, when it ended.
        now = time.time()
        metrics = {"time_this_iter_s": now - self._epoch_ended_at, **metrics}
        self._epoch_ended_at = now
        behind = bool(self._handed) and time.monotonic() - self._handed[0] >= HEAR_S
        answer_due = folder is not None or metrics.get("epoch") in self.answer_epochs or behind
        if not answer_due:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tune-report", daemon=True)
                self._thread.start()
            self._handed.append(time.monotonic())
            self._queue.put((metrics, folder))
            return
        self._queue.join()  # the reports before this one first, in order
        self.raise_stop()
        self._send(metrics, folder)

    def raise_stop(self) -> None:
        """Raise here what a queued report met: Tune's stop of the trial, or an error."""
        if self._stop is not None:
            raise self._stop

    def close(self) -> None:
        """Hand every queued report to Tune (those after a stop are dropped) and end the thread."""
        if self._thread is None:
            return
        self._queue.put(_CLOSE)
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _CLOSE:
                    return
                if self._stop is None:
                    self._send(*item)
            except BaseException as e:  # SystemExit: Tune stopped the trial
                self._stop = e
            finally:
                if item is not _CLOSE:
                    self._handed.popleft()
                self._queue.task_done()
