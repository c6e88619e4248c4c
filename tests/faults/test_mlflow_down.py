"""MLflow down: the search runs and keeps everything locally; `python run_tune.py --sync` pushes it later."""

import subprocess
import sys

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT
from tests.test_end_to_end import search_args
from tuner.cli import main

pytestmark = pytest.mark.slow
DOWN = "http://127.0.0.1:9"  # nothing listens on the discard port


def _sync(folder, *extra):
    return subprocess.run([sys.executable, "run_tune.py", "--sync", str(folder), *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _state(client):
    experiment = client.get_experiment_by_name("cifar")
    runs = client.search_runs([experiment.experiment_id])
    history = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "val_acc")) for r in runs}
    versions = client.search_model_versions("name = 'cifar-best'")
    return len(runs), history, len(versions)


def test_search_without_mlflow_then_sync(tmp_path, cifar_dir, ray_local, capsys):
    argv = search_args(tmp_path, cifar_dir, "offline", "--num-samples", "4", "--max-epochs", "3",
                       "--grace-period", "1", "--reduction-factor", "2")  # fmt: skip
    argv[argv.index("--mlflow-uri") + 1] = DOWN
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("warning: MLflow at") == 1 and "python run_tune.py --sync" in err
    folder = tmp_path / "runs" / "offline"
    frame = pd.read_csv(folder / "results.csv")
    assert len(frame) == 4 and (folder / "best_config.json").exists()
    assert not list(tmp_path.rglob("mlflow.db"))

    still_down = _sync(folder)
    assert still_down.returncode == 1 and "still unavailable" in still_down.stderr

    uri = f"sqlite:///{tmp_path}/back.db"
    done = _sync(folder, "--mlflow-uri", uri)
    assert done.returncode == 0, done.stderr
    client = MlflowClient(tracking_uri=uri)
    runs, history, versions = _state(client)
    assert runs == 1 + 4 and versions == 1
    epochs = frame.set_index("trial_id")["epochs"]
    for run in client.search_runs([client.get_experiment_by_name("cifar").experiment_id]):
        trial = run.data.tags.get("hpsearch.trial_id")
        if trial:
            assert history[run.info.run_id] == epochs[trial]
        else:
            assert "test_acc" in run.data.metrics and run.data.params["num_samples"] == "4"

    again = _sync(folder, "--mlflow-uri", uri)
    assert again.returncode == 0 and "0 epochs added" in again.stdout
    assert _state(client) == (runs, history, versions)
