"""What a search cost, what its scheduler saved, and how soon it got good. Plain pandas: no Ray, no MLflow.

A trial's GPU-seconds are its share of a GPU times its wall seconds (a trial at
``--gpus-per-trial 0.25`` for 100 s used 25 GPU-seconds); its CPU-seconds, the
CPUs it was given times its wall seconds. Time to target reads every trial's
per-epoch history: it is the first moment (wall seconds since the search's
first trial started, and GPU- and trial-seconds spent by then) at which the best
score so far reached each level of the final best, or a target given with
``--target``.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from results.table import scored_epochs, seconds_spent

LEVELS = (0.9, 0.95, 0.99)  # of the final best: "99% of the best" is reached at ...


def asha_rungs(max_epochs: int, grace_period: int, reduction_factor: int) -> list[int]:
    """The epochs at which ASHA judges trials: the grace period, times the reduction factor, ... below max."""
    found, rung = [], grace_period
    while rung < max_epochs:
        found.append(rung)
        rung *= reduction_factor
    return found


def asha_epochs(max_epochs: int, grace_period: int, reduction_factor: int) -> float:
    """Epochs ASHA expects to train per trial: all reach the first rung, 1/rf of them the next, and so on."""
    total, reached, share = 0.0, 0, 1.0
    for rung in asha_rungs(max_epochs, grace_period, reduction_factor):
        total += share * (rung - reached)
        reached, share = rung, share / reduction_factor
    return total + share * max(max_epochs - reached, 0)


def hyperband_brackets(max_epochs: int, grace_period: int, reduction_factor: int) -> list[tuple[int, int]]:
    """Asynchronous HyperBand's brackets as (first rung, number of rungs), as Ray's ``AsyncHyperBandScheduler``
    lays them out: bracket s judges first at grace x rf^s epochs, for s = 0 .. floor(log_rf(max / grace))."""
    span = math.log(max_epochs / grace_period) / math.log(reduction_factor)
    return [(grace_period * reduction_factor**s, int(span - s + 1)) for s in range(int(span + 1e-9) + 1)]


def scheduler_rungs(scheduler: str, *, max_epochs: int, grace_period: int, reduction_factor: int) -> list[int]:
    """The epochs at which ``scheduler`` judges trials (or, for PBT, may exploit them), below ``max_epochs``.

    ASHA and HyperBand: their rungs; the median rule: the grace period, from
    which on it judges every epoch; PBT: every grace-period epochs; FIFO: none.
    """
    if scheduler in ("asha", "hyperband"):
        return asha_rungs(max_epochs, grace_period, reduction_factor)
    if scheduler == "median":
        return [grace_period] if grace_period < max_epochs else []
    if scheduler == "pbt":
        return list(range(grace_period, max_epochs, grace_period))
    return []


def scheduler_epochs(scheduler: str, *, max_epochs: int, grace_period: int, reduction_factor: int) -> float:
    """Epochs ``scheduler`` is expected to train per trial (the median rule's: at most the full budget).

    HyperBand puts a trial in bracket s with probability proportional to
    e^(rungs of bracket s), as Ray's ``AsyncHyperBandScheduler`` draws it.
    """
    if scheduler == "asha":
        return asha_epochs(max_epochs, grace_period, reduction_factor)
    if scheduler == "hyperband":
        brackets = hyperband_brackets(max_epochs, grace_period, reduction_factor)
        weights = [math.exp(rungs - max(r for _, r in brackets)) for _, rungs in brackets]
        epochs = [asha_epochs(max_epochs, first, reduction_factor) for first, _ in brackets]
        return sum(w * e for w, e in zip(weights, epochs, strict=True)) / sum(weights)
    return float(max_epochs)


def add_trial_costs(rows: list[dict[str, Any]], *, gpus_per_trial: float, cpus_per_trial: float) -> None:
    """Add each trial's ``gpu_seconds`` and ``cpu_seconds`` (its resources times its wall seconds)."""
    for row in rows:
        seconds = float(row.get("seconds") or 0.0)
        row["gpu_seconds"] = round(gpus_per_trial * seconds, 2)
        row["cpu_seconds"] = round(cpus_per_trial * seconds, 2)


def reached(value: float, goal: float, *, mode: str) -> bool:
    return value >= goal if mode == "max" else value <= goal


def level_goal(best: float, level: float, *, mode: str) -> float:
    """The score that is ``level`` of ``best``: 0.9 x best to maximise; best / 0.9 to minimise (a loss)."""
    return best * level if mode == "max" else best / level


def _events(histories: dict[str, pd.DataFrame], metric: str) -> pd.DataFrame:
    """Every scored epoch report of every trial: when (``t``, seconds since the epoch), trial, its seconds, score."""
    frames = []
    for trial_id, history in histories.items():
        if history is None or not len(history):
            continue
        h = scored_epochs(history, metric)
        when = h["reported_at"] if "reported_at" in h else h["timestamp"]
        frames.append(pd.DataFrame({"t": when.astype(float), "trial_id": trial_id,
                                    "trial_seconds": seconds_spent(history).loc[h.index],
                                    "value": h[metric].astype(float)}))  # fmt: skip
    if not frames:
        return pd.DataFrame(columns=["t", "trial_id", "trial_seconds", "value"])
    return pd.concat(frames).sort_values("t", kind="stable")


def progress_curve(
    histories: dict[str, pd.DataFrame], *, metric: str, mode: str, gpus_per_trial: float
) -> pd.DataFrame:
    """The search's best score so far after every report, with wall seconds, trial-seconds and GPU-seconds spent."""
    events = _events(histories, metric)
    if events.empty:
        return pd.DataFrame(columns=["wall_s", "trial_seconds", "gpu_seconds", "value", "best"])
    # A trial started its first reported epoch's time_total_s before that report.
    first = events.groupby("trial_id").first()
    start = float((first["t"] - first["trial_seconds"]).min())
    spent: dict[str, float] = {}
    rows, best = [], None
    for e in events.itertuples(index=False):
        spent[e.trial_id] = e.trial_seconds
        if best is None or (e.value > best if mode == "max" else e.value < best):
            best = e.value
        total = sum(spent.values())
        rows.append({"wall_s": e.t - start, "trial_seconds": total, "gpu_seconds": gpus_per_trial * total,
                     "value": e.value, "best": best})  # fmt: skip
    return pd.DataFrame(rows)


def search_cost(
    rows: list[dict[str, Any]],
    histories: dict[str, pd.DataFrame],
    *,
    metric: str,
    mode: str,
    gpus_per_trial: float,
    cpus_per_trial: float,
    num_samples: int,
    max_epochs: int,
    target: float | None = None,
) -> dict[str, Any]:
    """The search's totals, the share its stopped trials used, the epochs it saved, and its times to target."""
    frame = pd.DataFrame(rows)
    seconds = frame["seconds"].astype(float) if "seconds" in frame else pd.Series(dtype=float)
    stopped = frame["status"] == "stopped" if "status" in frame else pd.Series(False, index=frame.index)
    epochs = int(frame["epochs"].sum()) if "epochs" in frame else 0
    budget = num_samples * max_epochs
    curve = progress_curve(histories, metric=metric, mode=mode, gpus_per_trial=gpus_per_trial)
    total = float(seconds.sum())
    cost: dict[str, Any] = {
        "trials": len(frame),
        "wall_seconds": round(float(curve["wall_s"].max()), 2) if len(curve) else 0.0,
        "trial_seconds": round(total, 2),
        "gpu_seconds": round(gpus_per_trial * total, 2),
        "cpu_seconds": round(cpus_per_trial * total, 2),
        "stopped_trials": int(stopped.sum()),
        "stopped_share": round(float(seconds[stopped].sum()) / total, 4) if total > 0 else 0.0,
        "epochs_trained": epochs,
        "epochs_budget": budget,
        "epochs_saved_share": round(1 - epochs / budget, 4) if budget else 0.0,
        "time_to_target": [],
    }
    if not len(curve):
        return cost
    final = float(curve["best"].iloc[-1])
    goals = [(f"{round(level * 100)}% of best", level_goal(final, level, mode=mode)) for level in LEVELS]
    if target is not None:
        goals.append(("target", float(target)))
    for name, goal in goals:
        hit = curve[[reached(v, goal, mode=mode) for v in curve["best"]]]
        entry: dict[str, Any] = {"goal": name, metric: round(goal, 6), "reached": bool(len(hit))}
        if len(hit):
            first = hit.iloc[0]
            entry.update(wall_s=round(float(first["wall_s"]), 2), gpu_seconds=round(float(first["gpu_seconds"]), 2),
                         trial_seconds=round(float(first["trial_seconds"]), 2))  # fmt: skip
        cost["time_to_target"].append(entry)
    return cost


def describe(cost: dict[str, Any], *, metric: str) -> str:
    """The summary's lines on cost, the scheduler's savings and time to target."""
    gpu = f", {cost['gpu_seconds']:.0f} GPU-s" if cost["gpu_seconds"] else ""
    lines = [
        f"cost: {cost['trial_seconds']:.0f} trial-s{gpu}, {cost['cpu_seconds']:.0f} CPU-s over "
        f"{cost['wall_seconds']:.0f} s of wall time; {cost['stopped_trials']} trial(s) stopped early used "
        f"{100 * cost['stopped_share']:.0f}% of it; {cost['epochs_trained']} of {cost['epochs_budget']} epochs "
        f"trained ({100 * cost['epochs_saved_share']:.0f}% saved)"
    ]
    for t in cost["time_to_target"]:
        if t["reached"]:
            spent = f"{t['gpu_seconds']:.0f} GPU-s" if cost["gpu_seconds"] else f"{t['trial_seconds']:.0f} trial-s"
            lines.append(f"  {t['goal']} ({metric} {t[metric]:.4g}): after {t['wall_s']:.0f} s, {spent}")
        else:
            lines.append(f"  {t['goal']} ({metric} {t[metric]:.4g}): not reached")
    return "\n".join(lines)


def mlflow_metrics(cost: dict[str, Any]) -> dict[str, float]:
    """The cost as flat metrics of the search's parent run."""
    out = {f"cost_{k}": float(v) for k, v in cost.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for t in cost["time_to_target"]:
        key = "target" if t["goal"] == "target" else t["goal"].split("%")[0] + "pct"
        if t["reached"]:
            out[f"time_to_{key}_wall_s"] = float(t["wall_s"])
            out[f"time_to_{key}_gpu_seconds"] = float(t["gpu_seconds"])
            out[f"time_to_{key}_trial_seconds"] = float(t["trial_seconds"])
    return {k: v for k, v in out.items() if not math.isnan(v)}
