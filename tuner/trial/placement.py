"""DDP worker groups that wait for resources: say what holds them, and give up after a set time.

A DDP trial's workers start once Ray places their placement group (one bundle
per worker). On a machine or cluster shared with other jobs, or where a group
was leaked, it may never be placed. Ray Train would wait, time out and retry
without end; here the wait is bounded (``--worker-start-timeout``), the trial
fails with what held the resources, and the driver says so while it waits.
The search's own trials always fit together (``tuner.config.resources`` caps how many
run at once), so what holds the resources is outside it: a trial that still
cannot be placed after its retries stops the search as Ctrl-C does, its state
saved, rather than failing the trials after it one by one; ``--resume``
continues it (the failed trial too) once the resources are free.
Everything is read from Ray's control store (no dashboard needed).
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO

import ray
from ray import tune

from search_spaces.exceptions import WorkersNotPlaced
from tuner.driver.stopping import stop_fit

__all__ = ["PlacementWatch", "WorkersNotPlaced", "describe_holders", "not_placed"]

REPORT_AFTER_S = 30.0  # a group waiting this long is reported (once) with what holds the resources



def _fmt(resources: dict[str, float]) -> str:
    shown = {k: v for k, v in sorted(resources.items()) if k in ("CPU", "GPU") or not _internal(k)}
    return ", ".join(f"{k} {v:g}" for k, v in shown.items()) or "nothing"


def _internal(name: str) -> bool:
    return name in ("memory", "object_store_memory") or name.startswith(("node:", "bundle_group", "accelerator_type"))


def _total(bundles: dict[Any, dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for bundle in bundles.values():
        for k, v in bundle.items():
            out[k] += v
    return dict(out)


def _job(pg_id: str) -> str:
    """The job that created a placement group: its id ends with the job id (4 bytes, hex)."""
    return pg_id[-8:]


def describe_holders(*, waiting: dict[str, float] | None = None) -> str:
    """One line: the cluster's free and total CPUs/GPUs, and the placement groups that hold them, by job."""
    free = {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
    total = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    this_job = ray.get_runtime_context().get_job_id()
    held: dict[str, list[dict[str, float]]] = defaultdict(list)  # job -> the bundles of its created groups
    for pg in ray.util.placement_group_table().values():
        if pg.get("state") == "CREATED":
            held[_job(pg["placement_group_id"])].append(_total(pg["bundles"]))
    parts = []
    for job, groups in sorted(held.items(), key=lambda kv: kv[0] != this_job):
        who = "this search" if job == this_job else f"job {job}"
        parts.append(f"{who}: {len(groups)} placement group(s) holding {_fmt(_total(dict(enumerate(groups))))}")
    need = f"it needs {_fmt(waiting)}; " if waiting else ""
    free_line = ", ".join(f"{k} {free.get(k, 0):g} of {total[k]:g}" for k in sorted(total))
    holders = "; ".join(parts) if parts else "no placement group holds any (tasks or actors outside groups do)"
    return f"{need}free now: {free_line}; held by {holders}"


def not_placed(*, workers: int, per_worker: dict[str, float], timeout_s: float) -> WorkersNotPlaced:
    """The error a trial fails with when its worker group was not placed in time; one line, with the fix."""
    try:
        holders = describe_holders(waiting={k: v * workers for k, v in per_worker.items()})
    except Exception as e:  # the description is a courtesy: never hide the real failure behind it
        holders = f"(what holds the resources could not be read: {e})"
    return WorkersNotPlaced(
        f"the trial's {workers} DDP workers ({_fmt(per_worker)} each) could not be placed within "
        f"--worker-start-timeout {timeout_s:g} s: {holders}. Free them (`ray list placement-groups` lists them), "
        f"ask for less (--workers-per-trial, --cpus-per-trial, --gpus-per-trial) or wait longer "
        f"(--worker-start-timeout)"
    )


def unplaced_reason(error_file: str | None) -> str | None:
    """The ``WorkersNotPlaced`` message in a trial's error file (Tune's), if that is why it failed."""
    marker = f"{WorkersNotPlaced.__module__}.{WorkersNotPlaced.__name__}: "
    try:
        lines = Path(error_file).read_text().splitlines() if error_file else []
    except OSError:
        return None
    found = [line.split(marker, 1)[1] for line in lines if marker in line]
    return found[-1] if found else None


class PlacementWatch(tune.Callback):
    """Driver side: a placement group pending for ``report_after`` seconds is reported once, with its holders.

    ``timeout_s``: DDP trials' worker start timeout (None: single-process trials, which Tune lets wait).
    """

    def __init__(self, *, out: TextIO, timeout_s: float | None, every: float = 5.0) -> None:
        self.out, self.timeout_s, self.every = out, timeout_s, every
        # Said before the trial fails: at half the timeout when that comes sooner.
        self.report_after = min(REPORT_AFTER_S, timeout_s / 2) if timeout_s else REPORT_AFTER_S
        self._first_seen: dict[str, float] = {}
        self._reported: set[str] = set()
        self._last = 0.0
        self.not_placed: str | None = None  # a trial's reason, once one failed for placement: the search stops

    def __getstate__(self) -> dict[str, Any]:
        # Tune saves its callbacks with the search's state: the stream stays behind (it cannot be pickled).
        return {**self.__dict__, "out": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, out=state.get("out") or sys.stdout)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = unplaced_reason(trial.error_file)
        if reason and self.not_placed is None:
            self.not_placed = f"trial {trial.trial_id}: {reason}"
            stop_fit()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        try:
            self.check(now)
        except Exception:  # a status line must never stop the search
            pass

    def check(self, now: float) -> list[str]:
        """Report groups pending too long; return the lines printed."""
        pending = {pg_id: pg for pg_id, pg in ray.util.placement_group_table().items() if pg.get("state") == "PENDING"}
        for pg_id in list(self._first_seen):
            if pg_id not in pending:
                del self._first_seen[pg_id]
        printed = []
        for pg_id, pg in pending.items():
            since = self._first_seen.setdefault(pg_id, now)
            if pg_id in self._reported or now - since < self.report_after:
                continue
            self._reported.add(pg_id)
            if self.timeout_s is None:
                then = "The trial waits until they are freed (Ctrl-C stops the search, --resume continues it)"
            else:
                then = f"A DDP trial fails after --worker-start-timeout {self.timeout_s:g} s unless they are freed"
            line = (
                f"waiting for resources: a trial's placement group has waited {now - since:.0f} s; "
                f"{describe_holders(waiting=_total(pg['bundles']))}. {then}"
            )
            print(line, file=self.out, flush=True)
            printed.append(line)
        return printed
