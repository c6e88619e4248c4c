"""DDP trials end to end on CPU: 2 gloo workers per trial, ASHA in charge, nothing left behind."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT
from tests.faults.test_resume import _wait_for_checkpoints
from tests.test_end_to_end import search_args
from trainables import data
from trainables.checkpoint import load, load_model
from trainables.loop import evaluate
from tuner.cli import main

pytestmark = pytest.mark.slow
DDP = ["--workers-per-trial", "2", "--gpus-per-trial", "0", "--cpus-per-trial", "2"]


@pytest.fixture(scope="module")
def ray_with_state_api():
    """Ray with its dashboard: Train frees a stopped trial's workers through the state API."""
    import ray

    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")  # as init_ray sets it
    ray.init(num_cpus=6, include_dashboard=True, log_to_driver=False)
    yield ray
    ray.shutdown()


def _leftovers(ray) -> tuple[list, list]:
    from ray.util.state import list_actors, list_placement_groups

    groups = [g for g in list_placement_groups(limit=1000) if g.state != "REMOVED"]
    actors = [a for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
              if a.class_name in ("RayTrainWorker", "TrainController", "ImplicitFunc")]  # fmt: skip
    return groups, actors


def test_ddp_search(tmp_path, cifar_dir, ray_with_state_api):
    argv = search_args(tmp_path, cifar_dir, "ddp", *DDP, "--num-samples", "4", "--max-epochs", "3",
                       "--grace-period", "1", "--reduction-factor", "2")  # fmt: skip
    assert main(argv) == 0
    folder = tmp_path / "runs" / "ddp"
    frame = pd.read_csv(folder / "results.csv")
    assert len(frame) == 4 and (frame["status"] == "stopped").any()
    assert (frame[frame["status"] == "stopped"]["epochs"] < 3).all()

    # Train's checkpoints, under the search's folder: the --keep-checkpoints (2) best, and
    # the latest when it is not among them (Ray Train keeps it to resume from).
    runs = sorted((folder / "train").iterdir())
    assert len(runs) == 4
    for run in runs:
        assert 1 <= len(list(run.glob("checkpoint_*/checkpoint.pt"))) <= 2 + 1

    # The best checkpoint is a Train checkpoint and reproduces its reported val_acc.
    best = json.loads((folder / "best_config.json").read_text())
    assert str(folder / "train") in best["checkpoint"]
    model, config = load_model(best["checkpoint"]), load(best["checkpoint"])["config"]
    splits = data.split(*data.load(cifar_dir, download_if_missing=False))
    x, y = torch.from_numpy(splits.val_x), torch.from_numpy(splits.val_y)
    assert evaluate(model, x, y, tta=config["tta"])[1] == pytest.approx(best["val_acc"], abs=1e-9)

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("cifar")
    parent = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'ddp'")[0]
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")  # fmt: skip
    assert len(children) == 4
    epochs = frame.set_index("trial_id")["epochs"]
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert steps == list(range(1, epochs[child.data.tags["hpsearch.trial_id"]] + 1))

    # Stopped and finished trials leave no placement groups or Train actors behind.
    deadline = time.monotonic() + 60
    while (left := _leftovers(ray_with_state_api)) != ([], []) and time.monotonic() < deadline:
        time.sleep(1)
    assert left == ([], []), left


def test_ddp_trial_resumes_from_its_checkpoint(tmp_path, cifar_dir, ray_with_state_api):
    # The killed driver starts its own Ray on this machine's 2 cores: 2 workers x 0.5 CPU.
    ddp = ["--workers-per-trial", "2", "--gpus-per-trial", "0", "--cpus-per-trial", "1"]
    argv = search_args(tmp_path, cifar_dir, "ddp-killed", *ddp, "--num-samples", "2", "--max-epochs", "5",
                       "--grace-period", "5", "--max-concurrent", "1", "--checkpoint-period", "0")  # fmt: skip
    driver = subprocess.Popen([sys.executable, str(ROOT / "run_tune.py"), *argv], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    folder = tmp_path / "runs" / "ddp-killed"
    try:
        _wait_for_checkpoints(folder, count=2, timeout=240, pattern="train/*/checkpoint_*/checkpoint.pt")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()

    assert main(["--name", "ddp-killed", "--storage-path", str(tmp_path / "runs"), "--resume"]) == 0
    frame = pd.read_csv(folder / "results.csv")
    assert len(frame) == 2 and (frame["epochs"] == 5).all()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("cifar")
    parent = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'ddp-killed'")[0]
    for child in client.search_runs([experiment.experiment_id],
                                    filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"):  # fmt: skip
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "val_acc"))
        # Resumed from its checkpoint on all ranks, not restarted: no epoch is trained (and logged) twice.
        assert len(set(steps)) == len(steps) and steps[-1] == 5, steps
        # Epochs that Train checkpointed but the killed driver never received are not in MLflow:
        # at most one run of them, right before the epochs of the resumed run.
        missing = sorted(set(range(1, 6)) - set(steps))
        assert not missing or missing == list(range(missing[0], missing[-1] + 1)), steps
