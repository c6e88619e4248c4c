"""One compact progress table instead of Ray's own output."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from ray import tune

# The statuses of the trials when the last search in this process ended.
LAST_STATUSES: list[str] = []
FINAL_STATUSES = ("TERMINATED", "ERROR")

SHOWN_METRICS = (("val_acc", "val_acc"), ("val_loss", "val_loss"), ("images_per_s", "img/s"))  # when reported


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _is_score(value: Any) -> bool:
    """A number that ranks a trial: not missing, not the NaN of a trial that ended early."""
    return isinstance(value, (int, float)) and not math.isnan(value)


class ProgressTable(tune.Callback):
    """Prints the trials' status, key params and latest metrics every ``interval`` seconds and at the end."""

    def __init__(
        self,
        *,
        params: list[str],
        metric: str,
        total: int,
        mode: str = "max",
        interval: float = 30.0,
        out: TextIO | None = None,
        max_epochs: int = 0,
        epochs_per_trial: float | None = None,
        gpus_per_trial: float = 0.0,
    ) -> None:
        self.params = params
        # Epochs the scheduler expects per trial (tuner.schedulers.expected_epochs); unsaid, the full budget.
        self.expected_epochs = total * (max_epochs if epochs_per_trial is None else epochs_per_trial)
        self.gpus_per_trial = gpus_per_trial
        self._started: float | None = None
        self._drawn = 0  # lines of the table last drawn on a terminal, redrawn in place
        self.metric, self.mode = metric, mode
        # The epoch, the space's metric, then the usual ones the trials report.
        self.columns = [("epoch", "epoch"), (metric, metric), *(c for c in SHOWN_METRICS if c[0] != metric)]
        self.total = total
        self.interval = interval
        self.out = out
        self._last = 0.0
        self._shown: tuple = ()
        self._latest: dict[str, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "out": None}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        self._latest[trial.trial_id] = result

    def _state(self, trials: list) -> tuple:
        return tuple((t.trial_id, t.status, self._latest.get(t.trial_id, {}).get("epoch")) for t in trials)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._started is None:
            self._started = time.monotonic()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        # At most every `interval` seconds, and only when a trial started, stopped or reported.
        if time.monotonic() - self._last >= self.interval and self._state(trials) != self._shown:
            self.print_table(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.print_table(trials)
        # Tune pickles its callbacks with the search and restores them on --resume, so the
        # instance that runs is not always the driver's own: report through the module.
        LAST_STATUSES[:] = [t.status for t in trials]

    def render(self, trials: list) -> str:
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        scores = [(r[self.metric], tid) for tid, r in self._latest.items() if _is_score(r.get(self.metric))]
        best = (max if self.mode == "max" else min)(scores, default=None)
        head = f"[{time.strftime('%H:%M:%S')}] {len(trials)} of {self.total} trials started: {summary}"
        if best:
            head += f" | best {self.metric} {best[0]:.4f} ({best[1]})"
        head += self._clock()
        headers = ["trial", "status", *self.params, *(label for _, label in self.columns)]
        rows = []
        for t in trials:
            r = self._latest.get(t.trial_id, {})
            rows.append(
                [t.trial_id, t.status.lower()]
                + [_fmt(t.config.get(p)) for p in self.params]
                + [_fmt(r.get(k)) for k, _ in self.columns]
            )
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
        lines = [head, "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
        return "\n".join(lines)

    def _clock(self) -> str:
        """Elapsed wall time, trial- (and GPU-) seconds spent, and the time the scheduler's expected epochs need."""
        if self._started is None:
            return ""
        elapsed = time.monotonic() - self._started
        spent = sum(float(r.get("time_total_s") or 0.0) for r in self._latest.values())
        done = sum(int(r.get("epoch") or 0) for r in self._latest.values())
        text = f" | {_duration(elapsed)} elapsed, {spent:.0f} trial-s"
        if self.gpus_per_trial:
            text += f" ({self.gpus_per_trial * spent:.0f} GPU-s)"
        if done and self.expected_epochs > done and elapsed > 0:
            eta = (self.expected_epochs - done) * elapsed / done
            text += f" | ETA ~{_duration(eta)}"
        return text

    def print_table(self, trials: list) -> None:
        self._last = time.monotonic()
        self._shown = self._state(trials)
        if not trials:
            return
        out = self.out or sys.stdout
        table = self.render(trials)
        if _is_terminal(out):
            # On a terminal the table redraws in place; in a log file it appends.
            if self._drawn:
                out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = table.count("\n") + 2
        print(table + "\n", file=out, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def interrupted(num_samples: int) -> bool:
    """Whether the search that just ended stopped before all ``num_samples`` trials finished (Ctrl-C)."""
    return len(LAST_STATUSES) < num_samples or any(s not in FINAL_STATUSES for s in LAST_STATUSES)
