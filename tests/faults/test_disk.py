"""Checkpoints stay bounded: num_to_keep per trial while running, only the top trials' after the search."""

import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import tuner
from tests.test_end_to_end import search_kwargs

pytestmark = pytest.mark.slow
TRIALS, KEEP_CHECKPOINTS, KEEP_TRIALS = 10, 1, 3
SMALL_FILES = 512 * 1024  # per trial: params, progress, results, logs (a few KB each, with room)


def _checkpoints(folder: Path) -> dict[str, list[Path]]:
    return {t.name: list(t.glob("checkpoint_*/checkpoint.pt")) for t in folder.glob("train_cifar_*")}


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_ten_trials_stay_under_the_bound(tmp_path, cifar_dir, ray_local):
    folder = tmp_path / "runs" / "disk"
    most_seen, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            counts = [len(c) for c in _checkpoints(folder).values()] if folder.exists() else []
            most_seen[0] = max([most_seen[0], *counts])
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    settings = search_kwargs(tmp_path, cifar_dir, "disk", num_samples=TRIALS, max_epochs=3, grace_period=1,
                             reduction_factor=3, keep_checkpoints=KEEP_CHECKPOINTS,
                             keep_trials=KEEP_TRIALS)  # fmt: skip
    try:
        assert tuner.search(**settings).best is not None
    finally:
        stop.set()
        watcher.join()

    # While running: num_to_keep checkpoints per trial, plus, for the moment between the two,
    # the new one that Tune writes before it deletes the one it replaces.
    assert KEEP_CHECKPOINTS <= most_seen[0] <= KEEP_CHECKPOINTS + 1
    # After: only the top trials keep theirs, and the folder fits the bound computed from them.
    kept = {name: files for name, files in _checkpoints(folder).items() if files}
    assert len(kept) == KEEP_TRIALS
    frame = pd.read_csv(folder / "results.csv")
    # The kept trials are the best by val_acc (compared by score: tiny nets tie often).
    score = frame.set_index("trial_id")["val_acc"]
    kept_scores = sorted((score[name.split("_")[2] + "_" + name.split("_")[3]] for name in kept), reverse=True)
    assert kept_scores == sorted(score, reverse=True)[:KEEP_TRIALS]
    checkpoint_size = max(f.stat().st_size for files in kept.values() for f in files)
    bound = KEEP_TRIALS * KEEP_CHECKPOINTS * checkpoint_size + TRIALS * SMALL_FILES
    # The report (its figures and a self-contained HTML page, a few MB whatever the trial count) is not a trial's.
    size = _size(folder) - _size(folder / "report")
    assert size <= bound, (size, bound)
