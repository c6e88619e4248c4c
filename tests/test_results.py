import json
import math
import subprocess
import sys

import pytest

import results
from tests.conftest import ROOT

ROWS = [
    {
        "trial_id": "a",
        "status": "completed",
        "epochs": 4,
        "seconds": 9.5,
        "val_acc": 0.61,
        "config/lr": 3.0,
        "config/seed": 0,
    },
    {
        "trial_id": "b",
        "status": "stopped",
        "epochs": 1,
        "seconds": 2.0,
        "val_acc": 0.32,
        "config/lr": 20.0,
        "config/seed": 0,
    },
    {
        "trial_id": "c",
        "status": "error",
        "epochs": 0,
        "seconds": 0.0,
        "val_acc": math.nan,
        "config/lr": 7.0,
        "config/seed": 0,
    },
    {
        "trial_id": "d",
        "status": "completed",
        "epochs": 4,
        "seconds": 9.0,
        "val_acc": 0.72,
        "config/lr": 9.0,
        "config/seed": 0,
    },
]


def test_write_load_and_leaderboard(tmp_path):
    best = {"trial_id": "d", "val_acc": 0.72, "test_acc": 0.7, "config": {"lr": 9.0}}
    results.write(str(tmp_path), ROWS, best, metric="val_acc", mode="max")
    frame = results.load_results(tmp_path)
    assert list(frame["trial_id"]) == ["d", "a", "b", "c"]  # best first, failed last
    assert json.loads((tmp_path / "best_config.json").read_text())["config"] == {"lr": 9.0}
    board = results.leaderboard(frame, metric="val_acc", mode="max", top=2).splitlines()
    assert board[0].split()[:4] == ["trial_id", "val_acc", "epochs", "seconds"]
    assert "lr" in board[0] and "seed" not in board[0]  # only the config that varies
    assert board[2].startswith("d ") and board[3].startswith("a ") and len(board) == 5
    assert board[4] == "2 of 4 trials shown (results.csv has every one)"


def test_load_explains_missing_and_unfinished(tmp_path):
    with pytest.raises(results.ResultsError, match="no search folder"):
        results.load_results(tmp_path / "absent")
    with pytest.raises(results.ResultsError, match="did not finish.*--resume"):
        results.load_results(tmp_path)


def test_module_command_reprints(tmp_path):
    best = {"trial_id": "d", "val_acc": 0.72, "test_acc": 0.7, "test_metrics": ["test_acc"]}  # as finish() writes it
    results.write(str(tmp_path), ROWS, best, metric="val_acc", mode="max")
    done = subprocess.run([sys.executable, "-m", "results", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "4 trials" in done.stdout and "test_acc 0.7000" in done.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "results", str(tmp_path / "x")], cwd=ROOT, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "no search folder" in missing.stderr


def test_a_metric_to_minimise_ranks_lowest_first(tmp_path):
    rows = [{**r, "rmse": r["val_acc"]} for r in ROWS]
    for r in rows:
        del r["val_acc"]
    results.write(str(tmp_path), rows, {"trial_id": "b", "rmse": 0.32, "test_acc": None}, metric="rmse", mode="min")
    frame = results.load_results(tmp_path)
    assert list(frame["trial_id"]) == ["b", "a", "d", "c"]  # lowest first, no score last
    (tmp_path / "search.json").write_text(json.dumps({"metric": "rmse", "mode": "min"}))
    assert results.objective(str(tmp_path)) == ("rmse", "min")
    done = subprocess.run([sys.executable, "-m", "results", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].split()[:2] == ["trial_id", "rmse"]
    assert "best trial b: rmse 0.3200" in done.stdout
