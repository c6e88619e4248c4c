"""One rule ranks trials everywhere: best score first, ties to the smaller trial id, no score last."""

import math
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest

import results
from results.table import ranked
from tests.conftest import ROOT
from tuner.driver.summary import best_trial, prune_checkpoints


def _row(trial_id: str, score: float, **extra) -> dict:
    return {"trial_id": trial_id, "status": "completed", "epochs": 4, "seconds": 1.0, "val_acc": score,
            "config/lr": float(len(trial_id)), **extra}  # fmt: skip


TIED = [_row("t2", 0.5), _row("t3", math.nan), _row("t1", 0.5), _row("t0", 0.4)]


def test_ties_rank_the_smaller_trial_id_first():
    frame = pd.DataFrame(TIED)
    assert list(ranked(frame, metric="val_acc", mode="max")["trial_id"]) == ["t1", "t2", "t0", "t3"]
    assert list(ranked(frame, metric="val_acc", mode="min")["trial_id"]) == ["t0", "t1", "t2", "t3"]
    board = results.leaderboard(frame, metric="val_acc", mode="max").splitlines()
    assert [line.split()[0] for line in board[2:]] == ["t1", "t2", "t0", "t3"]  # every one: no line of how many


def test_trial_ids_are_read_back_and_ranked_as_text(tmp_path):
    # Tune's ids are 8 hex digits: some look like numbers, and read as numbers they lose zeros or overflow
    ids = ["10", "9", "00012345", "98e71646", "00035e61"]
    results.write(str(tmp_path), [_row(t, 0.5) for t in ids], None, metric="val_acc", mode="max")
    frame = results.load_results(tmp_path)
    assert list(ranked(frame, metric="val_acc", mode="max")["trial_id"]) == sorted(ids)  # "10" < "9": as text
    board = results.leaderboard(frame, metric="val_acc", mode="max").splitlines()
    assert [line.split()[0] for line in board[2:]] == sorted(ids)


def test_the_leaderboard_shows_trials_stuck_at_chance_and_says_what_it_leaves_out():
    frame = pd.DataFrame([_row(f"t{i:02d}", 0.9 - i / 100) for i in range(10)] + [_row("t10", 0.1), _row("t11", 0.1)])
    board = results.leaderboard(frame, metric="val_acc", mode="max").splitlines()
    assert len(board) == 2 + 12 and board[-1].startswith("t11 ")  # all 12 under the default cap of 20
    many = pd.DataFrame([_row(f"t{i:02d}", 0.5) for i in range(25)])
    board = results.leaderboard(many, metric="val_acc", mode="max").splitlines()
    assert len(board) == 2 + 20 + 1 and board[-1] == "20 of 25 trials shown (results.csv has every one)"
    board = results.leaderboard(many, metric="val_acc", mode="max", top=3, folder="ray_results/x").splitlines()
    assert board[-1] == "3 of 25 trials shown; every one: python -m results ray_results/x --all"
    assert len(results.leaderboard(many, metric="val_acc", mode="max", top=None).splitlines()) == 2 + 25
    with pytest.raises(ValueError, match="top is 0, but must be >= 1"):
        results.leaderboard(many, metric="val_acc", mode="max", top=0)


def _command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "results", *args], cwd=ROOT, capture_output=True, text=True)


def test_the_command_says_how_many_it_shows_and_all_shows_every_one(tmp_path):
    rows = [_row(f"t{i:02d}", 0.5 if i in (7, 3) else i / 100) for i in range(25)]  # t03 and t07 tie for best
    results.write(str(tmp_path), rows, {"trial_id": "t03", "val_acc": 0.5}, metric="val_acc", mode="max")
    done = _command(str(tmp_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"25 trials in {tmp_path}" and lines[3].startswith("t03 ") and lines[4].startswith("t07 ")
    assert f"20 of 25 trials shown; every one: python -m results {tmp_path} --all" in lines
    assert "best trial t03: val_acc 0.5000" in done.stdout  # the first row
    every = _command(str(tmp_path), "--all")
    assert every.returncode == 0, every.stderr
    assert sum(line.startswith("t") and line[1].isdigit() for line in every.stdout.splitlines()) == 25
    assert "shown" not in every.stdout
    wrong = _command(str(tmp_path), "--top", "0")
    assert wrong.returncode == 2 and "--top is 0, but must be >= 1" in wrong.stderr


def test_pruning_keeps_the_smaller_trial_id_of_a_tie(tmp_path):
    rows = []
    for trial_id in ("t2", "t1"):
        (tmp_path / trial_id / "checkpoint_000001").mkdir(parents=True)
        rows.append(_row(trial_id, 0.5, path=str(tmp_path / trial_id)))
    pruned = prune_checkpoints(rows, folder=str(tmp_path), keep_trials=1, metric="val_acc", mode="max")
    assert pruned == ["t2"]
    assert (tmp_path / "t1" / "checkpoint_000001").is_dir() and not (tmp_path / "t2" / "checkpoint_000001").exists()


def _result(trial_id: str, scores: list[float], kept: dict[int, float]) -> SimpleNamespace:
    """A trial as best_trial reads it from Tune's ResultGrid: its reports and its kept checkpoints by epoch."""
    history = pd.DataFrame({"epoch": range(1, len(scores) + 1), "val_acc": scores})
    checkpoints = [(f"{trial_id}/epoch{e}", {"trial_id": trial_id, "epoch": e, "val_acc": s}) for e, s in kept.items()]
    return SimpleNamespace(metrics={"trial_id": trial_id}, path=f"/x/{trial_id}", metrics_dataframe=history,
                           best_checkpoints=checkpoints, error=None)  # fmt: skip


def test_the_best_trial_is_the_one_ranked_first_with_its_best_kept_checkpoint():
    grid = [
        _result("a", [0.6, 0.7], {2: 0.7}),
        _result("b", [0.6, 0.8, 0.5], {1: 0.6, 3: 0.5}),  # its best epoch (2) was not kept
        _result("c", [0.3, math.nan], {}),
    ]
    checkpoint, metrics, result = best_trial(grid, metric="val_acc", mode="max")
    assert (checkpoint, metrics["val_acc"], result.metrics["trial_id"]) == ("b/epoch1", 0.6, "b")  # not a's 0.7
    assert best_trial(grid, metric="val_acc", mode="max", only="a")[0] == "a/epoch2"
    assert best_trial(grid, metric="val_acc", mode="min")[0] == "b/epoch3"  # c ranks first but kept none
    tied = [_result("t2", [0.9], {1: 0.9}), _result("t1", [0.8, 0.9], {1: 0.8, 2: 0.9})]
    assert best_trial(tied, metric="val_acc", mode="max")[0] == "t1/epoch2"
    assert best_trial([], metric="val_acc", mode="max") is None
