"""A trial whose process is killed is retried from its last checkpoint and finishes."""

import json
import os
import signal
import threading
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import tuner
from tests.test_end_to_end import search_kwargs

pytestmark = pytest.mark.slow
EPOCHS = 6


def _kill_once_after(folder, *, epochs: int, killed: dict, stop: threading.Event) -> None:
    """SIGKILL the process of the first trial that has reported ``epochs`` epochs."""
    while not stop.is_set():
        for result in folder.glob("train_cifar_*/result.json"):
            rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
            if len(rows) >= epochs:
                killed["pid"], killed["trial"] = rows[-1]["pid"], rows[-1]["trial_id"]
                os.kill(killed["pid"], signal.SIGKILL)
                return
        time.sleep(0.1)


def test_killed_trial_is_retried_from_its_checkpoint(tmp_path, cifar_dir, ray_local):
    folder = tmp_path / "runs" / "retry"
    killed, stop = {}, threading.Event()
    killer = threading.Thread(target=_kill_once_after, args=(folder,), kwargs=dict(epochs=2, killed=killed, stop=stop))
    killer.start()
    settings = search_kwargs(tmp_path, cifar_dir, "retry", num_samples=1, max_epochs=EPOCHS, max_failures=1,
                             checkpoint_period=0)  # fmt: skip
    try:
        assert tuner.search(**settings).best is not None
    finally:
        stop.set()
        killer.join()
    assert "pid" in killed, "the trial was never killed"

    frame = pd.read_csv(folder / "results.csv")
    assert frame["status"].tolist() == ["completed"] and frame["epochs"].tolist() == [EPOCHS]
    progress = pd.read_csv(next(folder.glob("train_cifar_*/progress.csv")))
    assert progress["epoch"].tolist() == list(range(1, EPOCHS + 1))  # no epoch trained twice
    restarted = progress[(progress["iterations_since_restore"] == 1) & (progress["training_iteration"] > 1)]
    assert len(restarted) == 1 and progress["pid"].nunique() == 2  # a new process, from the checkpoint

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("cifar").experiment_id],
                              filter_string=f"tags.`hpsearch.trial_id` = '{killed['trial']}'")  # fmt: skip
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
