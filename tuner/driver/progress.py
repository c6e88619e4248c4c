"""One compact progress table instead of Ray's own output."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from ray import tune

from search_spaces import mark_inactive

# The statuses of the trials when the last search in this process ended.
LAST_STATUSES: list[str] = []
FINAL_STATUSES = ("TERMINATED", "ERROR")

SHOWN_METRICS = (("val_acc", "val_acc"), ("val_loss", "val_loss"), ("images_per_s", "img/s"))  # when reported


def result_files() -> list[tune.Callback]:
    """Tune's per-trial result files (progress.csv, result.json), which results/ reads.

    Given to every Tuner of a search: ``tuner.driver.runner.init_ray`` turns Tune's
    automatic loggers off, whose TensorBoard one costs over a millisecond per report.
    """
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [CSVLoggerCallback(), JsonLoggerCallback()]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _is_score(value: Any) -> bool:
    """A number that ranks a trial: not missing, not the NaN of a trial that ended early."""
    return isinstance(value, (int, float)) and not math.isnan(value)


def _new_session() -> dict[str, Any]:
    """What a driver has seen itself: Tune unpickles its callbacks on --resume, so this starts afresh
    there and what came before is read from the trials Tune restored."""
    return {"_started": None, "_session_epochs": 0, "_latest": {}, "_drawn": 0, "_last": 0.0, "_shown": ()}


def _restored(trial: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trial's last result and per-metric max/min/last as Tune keeps them (restored on --resume).

    Read from ``run_metadata``: ``Trial.last_result`` may block on a ``ray.get`` for a trial that never reported.
    """
    meta = getattr(trial, "run_metadata", None)
    return getattr(meta, "last_result", None) or {}, getattr(meta, "metric_analysis", None) or {}


def first_epoch_estimate(*, epoch_s: float, trial_epochs: float, concurrency: int) -> str:
    """What a first search on a CPU will cost, said after its first epoch so a user can stop early."""
    total = epoch_s * trial_epochs / concurrency
    said = (f"first epoch: {_duration(epoch_s)} on CPU; with {concurrency} trial(s) at once the search's "
            f"~{trial_epochs:.0f} trial-epochs take about {_duration(total)} here.")  # fmt: skip
    if total < 600:  # minutes at most: no advice needed
        return said
    return f"{said} A quick try: --smoke-test (the space's smoke budget); the real search: a GPU."


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
        conditions: dict[str, dict[str, tuple[Any, ...]]] | None = None,
        cpu_estimate: bool = False,
        concurrency: int = 1,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency is {concurrency}, but must be >= 1")
        self.params = params
        # Epochs the scheduler expects per trial (SchedulerSpec.expected_epochs); unsaid, the full budget.
        self.expected_epochs = total * (max_epochs if epochs_per_trial is None else epochs_per_trial)
        self.gpus_per_trial = gpus_per_trial
        self.metric, self.mode = metric, mode
        # The epoch, the space's metric, then the usual ones the trials report.
        self.columns = [("epoch", "epoch"), (metric, metric), *(c for c in SHOWN_METRICS if c[0] != metric)]
        self.total = total
        self.interval = interval
        self.out = out
        self.conditions = conditions  # search_spaces.conditions(space): inactive parameters show as such
        self.cpu_estimate, self.concurrency = cpu_estimate, concurrency
        self._best: dict[str, float] = {}  # each trial's best score over all its reports, kept by get_state
        self._estimated = False
        self.__dict__.update(_new_session())

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _new_session()} | {"out": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A table pickled by an older version of this module lacks the newer attributes.
        added = {"conditions": None, "cpu_estimate": False, "concurrency": 1, "_best": {}, "_estimated": False}
        self.__dict__.update({**added, **state, **_new_session()})

    def get_state(self) -> dict[str, Any]:
        # Saved with each snapshot of Tune's state: a trial that diverged has NaN as its
        # metric_analysis max and min, so its earlier best survives a --resume only here.
        return {"best": dict(self._best), "estimated": self._estimated}

    def set_state(self, state: dict[str, Any]) -> None:
        for trial_id, score in state.get("best", {}).items():
            self._best[trial_id] = self._better(score, self._best.get(trial_id))
        self._estimated = self._estimated or state.get("estimated", False)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        self._latest[trial.trial_id] = result
        if result.get("epoch") is not None:
            self._session_epochs += 1
        score = result.get(self.metric)
        if _is_score(score):
            self._best[trial.trial_id] = self._better(score, self._best.get(trial.trial_id))
        if self.cpu_estimate and not self._estimated and result.get("epoch") == 1:
            self._say_estimate(result)

    def _say_estimate(self, result: dict[str, Any]) -> None:
        epoch_s = result.get("time_this_iter_s")
        if not _is_score(epoch_s):
            return
        self._estimated = True
        line = first_epoch_estimate(epoch_s=epoch_s, trial_epochs=self.expected_epochs, concurrency=self.concurrency)
        print(line, file=self.out or sys.stdout, flush=True)
        self._drawn = 0  # the next table goes below the line instead of redrawing over it

    def _better(self, score: float, other: float | None) -> float:
        if other is None:
            return score
        return max(score, other) if self.mode == "max" else min(score, other)

    def _result(self, trial: Any) -> dict[str, Any]:
        """This driver's latest result of the trial, else the one Tune restored (a trial done before --resume)."""
        return self._latest.get(trial.trial_id) or _restored(trial)[0]

    def _trial_best(self, trial: Any) -> float | None:
        """The trial's best score over every report, the ones before an interruption included."""
        last, analysis = _restored(trial)
        seen = analysis.get(self.metric, {})
        best = self._best.get(trial.trial_id)
        for score in (seen.get(self.mode), last.get(self.metric)):
            if _is_score(score):
                best = self._better(score, best)
        return best

    def best(self, trials: list) -> tuple[float, str] | None:
        """(score, trial id) of the best trial: the best score, then the smaller trial id."""
        scores = [(s, t.trial_id) for t in trials if (s := self._trial_best(t)) is not None]
        sign = -1 if self.mode == "max" else 1
        return min(scores, key=lambda st: (sign * st[0], st[1]), default=None)

    def _state(self, trials: list) -> tuple:
        return tuple((t.trial_id, t.status, self._result(t).get("epoch")) for t in trials)

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
        head = f"[{time.strftime('%H:%M:%S')}] {len(trials)} of {self.total} trials started: {summary}"
        if best := self.best(trials):
            head += f" | best {self.metric} {best[0]:.4f} ({best[1]})"
        head += self._clock(trials)
        ordered = sorted(trials, key=lambda t: str(t.trial_id))  # one order, before and after a --resume
        results = {t.trial_id: self._result(t) for t in ordered}
        # The epoch and the metric always; another score only once some trial reports it (no column of dashes).
        columns = [c for i, c in enumerate(self.columns) if i < 2 or any(c[0] in r for r in results.values())]
        headers = ["trial", "status", *self.params, *(label for _, label in columns)]
        rows = []
        for t in ordered:
            r = results[t.trial_id]
            # Random search still samples an inactive parameter: never show that value.
            config = mark_inactive(t.config, self.conditions) if self.conditions else t.config
            rows.append(
                [t.trial_id, t.status.lower()]
                + [_fmt(config.get(p)) for p in self.params]
                + [_fmt(r.get(k)) for k, _ in columns]
            )
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
        lines = [head, "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
        return "\n".join(lines)

    def _clock(self, trials: list) -> str:
        """Elapsed wall time, trial- (and GPU-) seconds spent, and the time the scheduler's expected epochs need.

        The pace is this driver's own (epochs reported since it started): before a --resume the
        search ran on another clock, and its epochs only shorten the work left.
        """
        if self._started is None:
            return ""
        elapsed = time.monotonic() - self._started
        results = [self._result(t) for t in trials]
        spent = sum(float(r.get("time_total_s") or 0.0) for r in results)
        done = sum(int(r.get("epoch") or 0) for r in results)
        text = f" | {_duration(elapsed)} elapsed, {spent:.0f} trial-s"
        if self.gpus_per_trial:
            text += f" ({self.gpus_per_trial * spent:.0f} GPU-s)"
        finished = len(trials) >= self.total and all(t.status in FINAL_STATUSES for t in trials)
        if self._session_epochs and self.expected_epochs > done and elapsed > 0 and not finished:
            eta = (self.expected_epochs - done) * elapsed / self._session_epochs
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
