"""Each trial's per-epoch metrics in MLflow: written in batches, and caught up from the trial's files.

``EpochMetrics`` is the per-epoch half of the search's tracker
(``tuner.tracking.runs.MlflowTracker``): a report's metrics wait in the driver
and are written in one batch per trial every ``FLUSH_S`` seconds and when the
trial or the search ends, not while the trial that reported them waits in its
report (a write to the store takes 5-20 ms). What a driver killed before a
write lost is caught up from the trial's progress.csv when the trial, restarted
by ``--resume``, ends (``missing_epochs``; ``--sync`` uses it too).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pandas as pd
from mlflow.entities import Metric, RunTag

from results.table import EARLY_END_FLAGS, load_history
from tuner.tracking.client import tracked

# Each epoch's metrics wait in the driver and are written at most this often, and when their trial ends.
FLUSH_S = 2.0
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch
EXPLOIT_TAG = "hpsearch.exploit"  # .1, .2, ...: each PBT exploit of a trial, from which trial, at which epoch, how


def number(value: Any) -> float | None:
    """A reported value as MLflow takes it; None for what is not a number (left out, as a refused call would be)."""
    try:
        return float(value) if value is not None and not isinstance(value, str) else None
    except (TypeError, ValueError):
        return None


def missing_epochs(client: Any, run_id: str, reports: pd.DataFrame | None, *, keys: tuple[str, ...]) -> list[Metric]:
    """The metrics of the epochs in ``reports`` that the run ``run_id`` has none of (an early end's report aside).

    An epoch counts as logged when any of ``keys`` is: the cifar task leaves its
    metric empty (NaN) at the epochs no scheduler judges.
    """
    if reports is None:
        return []
    present = [k for k in keys if k in reports]
    have = {m.step for k in present for m in client.get_metric_history(run_id, k)}
    now, out = int(time.time() * 1000), []
    for row in reports.to_dict("records"):
        epoch = int(row.get("epoch", 0) or 0)
        if epoch in have or epoch < 1 or any(row.get(flag) == 1 for flag in EARLY_END_FLAGS):
            continue
        have.add(epoch)  # a retried epoch is in the file twice
        out += [Metric(k, v, now, epoch) for k in present if (v := number(row[k])) is not None]
    return out


def describe_exploit(result: dict[str, Any]) -> str:
    """``from trial X at epoch 4: lr 11.5 -> 13.8, ...`` for a result that carries a PBT exploit."""
    changes = json.loads(result["exploit"])
    values = ", ".join(f"{k} {_short(old)} -> {_short(new)}" for k, (old, new) in changes.items()) or "no value changed"
    return f"from trial {result['exploited_from']} at epoch {result['exploit_epoch']}: {values}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class EpochMetrics:
    """The tracker's per-epoch half (mixed into ``MlflowTracker``, which gives ``client``, ``child_run``,
    ``metric_keys`` and ``resume``)."""

    client: Any
    metric_keys: tuple[str, ...]
    resume: bool

    def _setup_epochs(self) -> None:
        self._unsent: dict[str, tuple[dict | None, list[Metric]]] = {}  # per trial: config, metrics not yet written
        self._flushed_at = time.monotonic()
        self._restarted: set[str] = set()  # trials a resumed search started again: caught up when they end

    def child_run(self, trial_id: str, *, config: dict[str, Any] | None = None, reopen: bool = False) -> str:
        raise NotImplementedError

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        """Keep the epoch's metrics for the next write (``flush``): the trial waiting in its report goes on at once."""
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k in self.metric_keys if (v := number(result.get(k))) is not None]
        self._unsent.setdefault(trial.trial_id, (trial.config, []))[1].extend(batch)
        if "exploit" in result:  # PBT continued this trial from another's checkpoint: say from which, and how
            self._flush_trial(trial.trial_id, exploit=describe_exploit(result))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._unsent and time.monotonic() - self._flushed_at >= FLUSH_S:
            self.flush()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush()  # also when the search stops early (Ctrl-C): its last epochs are in MLflow

    def flush(self) -> None:
        """Write every trial's kept metrics now, one batch per trial."""
        for trial_id in list(self._unsent):
            self._flush_trial(trial_id)
        self._flushed_at = time.monotonic()

    def _trial_ends(self, trial: Any) -> None:
        """Its kept metrics written; after a resume, the epochs a killed driver lost caught up from its files."""
        self._flush_trial(trial.trial_id)
        if trial.trial_id in self._restarted and getattr(trial, "path", None):
            self.catch_up(trial.trial_id, trial.path)

    @tracked
    def catch_up(self, trial_id: str, trial_path: str) -> int:
        """Log the epochs of the trial's progress.csv that its run lacks; how many (``--sync`` calls it too)."""
        run_id = self.child_run(trial_id)
        lost = missing_epochs(self.client, run_id, load_history(trial_path), keys=self.metric_keys)
        for start in range(0, len(lost), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=lost[start : start + MAX_METRICS_PER_BATCH])
        return len({m.step for m in lost})

    def _flush_trial(self, trial_id: str, *, exploit: str | None = None) -> None:
        config, batch = self._unsent.pop(trial_id, (None, []))
        if not batch and not exploit:
            return
        for start in range(0, max(len(batch), 1), MAX_METRICS_PER_BATCH):
            self._log_trial(trial_id, config, batch[start : start + MAX_METRICS_PER_BATCH], exploit=exploit)
            exploit = None

    @tracked
    def _log_trial(self, trial_id: str, config: dict | None, batch: list[Metric], *, exploit: str | None) -> None:
        run_id = self.child_run(trial_id, config=config)
        tags = []
        if exploit:
            said = [v for k, v in self.client.get_run(run_id).data.tags.items() if k.startswith(f"{EXPLOIT_TAG}.")]
            if exploit not in said:  # a retried trial says it again
                tags.append(RunTag(f"{EXPLOIT_TAG}.{len(said) + 1}", exploit))
        if batch or tags:
            self.client.log_batch(run_id, metrics=batch, tags=tags)
