"""Cost accounting and time to target, on histories written out by hand."""

import pandas as pd
import pytest

from results.cost import add_trial_costs, describe, mlflow_metrics, progress_curve, search_cost


def _history(start: float, scores: list[float], *, epoch_s: float = 10.0) -> pd.DataFrame:
    n = len(scores)
    return pd.DataFrame({"epoch": range(1, n + 1), "val_acc": scores,
                         "time_total_s": [epoch_s * (i + 1) for i in range(n)],
                         "reported_at": [start + epoch_s * (i + 1) for i in range(n)]})  # fmt: skip


# Trial a: 4 epochs from t=1000 (10 s each); trial b starts at t=1005 and is stopped after 1 epoch.
HISTORIES = {"a": _history(1000.0, [0.5, 0.7, 0.8, 0.9]), "b": _history(1005.0, [0.6])}
ROWS = [
    {"trial_id": "a", "status": "completed", "epochs": 4, "seconds": 40.0, "val_acc": 0.9},
    {"trial_id": "b", "status": "stopped", "epochs": 1, "seconds": 10.0, "val_acc": 0.6},
]


def test_trial_costs_are_shares_times_wall_seconds():
    rows = [dict(r) for r in ROWS]
    add_trial_costs(rows, gpus_per_trial=0.25, cpus_per_trial=2.0)
    assert [(r["gpu_seconds"], r["cpu_seconds"]) for r in rows] == [(10.0, 80.0), (2.5, 20.0)]


def test_the_best_so_far_curve_counts_what_every_trial_spent():
    curve = progress_curve(HISTORIES, metric="val_acc", mode="max", gpus_per_trial=0.5)
    # Reports at t=1010 (a: 0.5), 1015 (b: 0.6), 1020 (a: 0.7), 1030 (a: 0.8), 1040 (a: 0.9).
    assert curve["wall_s"].tolist() == [10.0, 15.0, 20.0, 30.0, 40.0]
    assert curve["trial_seconds"].tolist() == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert curve["gpu_seconds"].tolist() == [5.0, 10.0, 15.0, 20.0, 25.0]
    assert curve["best"].tolist() == [0.5, 0.6, 0.7, 0.8, 0.9]


def test_search_cost_and_time_to_target():
    cost = search_cost(ROWS, HISTORIES, metric="val_acc", mode="max", gpus_per_trial=0.5, cpus_per_trial=1.0,
                       num_samples=2, max_epochs=4, target=0.75)  # fmt: skip
    assert cost["trial_seconds"] == 50.0 and cost["gpu_seconds"] == 25.0 and cost["cpu_seconds"] == 50.0
    assert cost["wall_seconds"] == 40.0 and cost["stopped_trials"] == 1 and cost["stopped_share"] == 0.2
    assert (cost["epochs_trained"], cost["epochs_budget"], cost["epochs_saved_share"]) == (5, 8, 0.375)
    reached = {t["goal"]: t for t in cost["time_to_target"]}
    assert reached["90% of best"]["val_acc"] == pytest.approx(0.81)  # first reached by 0.9, at t=40
    assert reached["90% of best"]["wall_s"] == 40.0 and reached["90% of best"]["gpu_seconds"] == 25.0
    assert reached["target"]["wall_s"] == 30.0 and reached["target"]["trial_seconds"] == 40.0  # 0.8 >= 0.75
    text = describe(cost, metric="val_acc")
    assert "1 trial(s) stopped early used 20% of it; 5 of 8 epochs trained (38% saved)" in text
    assert "target (val_acc 0.75): after 30 s, 20 GPU-s" in text
    metrics = mlflow_metrics(cost)
    assert metrics["cost_gpu_seconds"] == 25.0 and metrics["time_to_90pct_wall_s"] == 40.0
    assert metrics["time_to_target_gpu_seconds"] == 20.0


def test_a_loss_is_reached_from_above_and_diverged_reports_do_not_count():
    histories = {"a": _history(0.0, [2.0, 1.0, 0.5]).rename(columns={"val_acc": "val_loss"})}
    histories["a"]["diverged"] = [0, 0, 0]
    broken = _history(0.0, [float("nan")]).rename(columns={"val_acc": "val_loss"})
    broken["diverged"] = [1]
    histories["b"] = broken
    rows = [{"trial_id": "a", "status": "completed", "epochs": 3, "seconds": 30.0},
            {"trial_id": "b", "status": "diverged", "epochs": 1, "seconds": 10.0}]  # fmt: skip
    cost = search_cost(rows, histories, metric="val_loss", mode="min", gpus_per_trial=0.0, cpus_per_trial=1.0,
                       num_samples=2, max_epochs=3, target=0.1)  # fmt: skip
    reached = {t["goal"]: t for t in cost["time_to_target"]}
    assert reached["90% of best"]["val_loss"] == pytest.approx(0.5 / 0.9) and reached["90% of best"]["wall_s"] == 30
    assert reached["target"]["reached"] is False and "target (val_loss 0.1): not reached" in describe(
        cost, metric="val_loss"
    )
    assert "GPU-s" not in describe(cost, metric="val_loss")  # a CPU search talks of trial-seconds
