"""A real tiny search on CPU: ASHA, checkpoints, MLflow runs, the registered model, results."""

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

import results
from tests.conftest import ROOT
from tests.registered import invoke, predict_elsewhere, served
from trainables import data
from trainables.checkpoint import load, load_model
from trainables.loop import evaluate
from tuner.cli import main

pytestmark = pytest.mark.slow
NUM_SAMPLES, MAX_EPOCHS = 8, 4


def search_kwargs(tmp: Path, cifar_dir: Path, name: str, **settings: Any) -> dict[str, Any]:
    """``tuner.search``'s keywords for a small cifar search in ``tmp`` (``settings`` add to them or replace them)."""
    return {"space": "cifar", "data_dir": str(cifar_dir), "storage_path": str(tmp / "runs"), "name": name,
            "mlflow_uri": f"sqlite:///{tmp}/mlflow.db", "params": {"width": 0.125, "batch_size": 64}, **settings}


def search_args(tmp: Path, cifar_dir: Path, name: str, *extra: str) -> list[str]:
    return [
        "--data-dir", str(cifar_dir), "--storage-path", str(tmp / "runs"), "--name", name,
        "--mlflow-uri", f"sqlite:///{tmp}/mlflow.db",
        "--param", "width=0.125", "--param", "batch_size=64", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def search(tmp_path_factory, cifar_dir, ray_local):
    tmp = tmp_path_factory.mktemp("e2e")
    argv = search_args(
        tmp,
        cifar_dir,
        "e2e",
        "--num-samples",
        str(NUM_SAMPLES),
        "--max-epochs",
        str(MAX_EPOCHS),
        "--grace-period",
        "1",
        "--reduction-factor",
        "2",
    )
    assert main(argv) == 0
    return tmp


def test_results_csv_and_asha_stopping(search):
    frame = pd.read_csv(search / "runs" / "e2e" / "results.csv")
    assert len(frame) == NUM_SAMPLES and frame["trial_id"].is_unique
    assert set(frame["status"]) <= {"completed", "stopped"}
    stopped = frame[frame["status"] == "stopped"]
    assert len(stopped) >= 1 and (stopped["epochs"] < MAX_EPOCHS).all()
    assert (frame[frame["status"] == "completed"]["epochs"] == MAX_EPOCHS).all()
    assert frame["val_acc"].max() > 0.3  # chance is 0.1
    assert {"config/lr", "config/momentum", "seconds", "val_loss", "train_loss"} <= set(frame.columns)


def test_the_search_accounts_for_what_it_cost(search):
    folder = search / "runs" / "e2e"
    frame = pd.read_csv(folder / "results.csv")
    assert (frame["cpu_seconds"] == frame["seconds"]).all()  # 1 CPU per trial
    assert (frame["gpu_seconds"] == 0).all()  # on CPU
    cost = json.loads((folder / "best_config.json").read_text())["cost"]
    assert cost["epochs_trained"] == frame["epochs"].sum() and cost["epochs_budget"] == NUM_SAMPLES * MAX_EPOCHS
    assert cost["stopped_trials"] == (frame["status"] == "stopped").sum() and 0 < cost["epochs_saved_share"] < 1
    assert cost["trial_seconds"] == pytest.approx(frame["seconds"].sum(), abs=0.05)
    levels = {t["goal"]: t for t in cost["time_to_target"]}
    assert set(levels) == {"90% of best", "95% of best", "99% of best"} and all(t["reached"] for t in levels.values())
    assert levels["90% of best"]["wall_s"] <= levels["99% of best"]["wall_s"] <= cost["wall_seconds"]
    client = MlflowClient(tracking_uri=f"sqlite:///{search}/mlflow.db")
    (parent,) = client.search_runs([client.get_experiment_by_name("cifar").experiment_id],
                                   filter_string="attributes.run_name = 'e2e'")  # fmt: skip
    assert parent.data.metrics["cost_epochs_trained"] == cost["epochs_trained"]
    assert parent.data.metrics["time_to_99pct_wall_s"] == levels["99% of best"]["wall_s"]
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")  # fmt: skip
    by_trial = frame.set_index("trial_id")
    for child in children:
        trial = child.data.tags["hpsearch.trial_id"]
        assert child.data.metrics["wall_seconds"] == pytest.approx(by_trial.loc[trial, "seconds"])
        assert child.data.tags["hpsearch.outcome"] == by_trial.loc[trial, "status"]


def test_the_search_draws_its_report_and_logs_it(search):
    folder = search / "runs" / "e2e"
    for name in ("report.html", "learning_curves.png", "best_so_far.png", "parallel_coordinates.png",
                 "param_importance.png", "confusion_matrix.png"):  # fmt: skip
        assert (folder / "report" / name).stat().st_size > 1000, name
    best = json.loads((folder / "best_config.json").read_text())
    matrix = best["confusion_matrix"]
    assert len(matrix) == 10 and best["classes"][0] == "airplane"
    assert sum(map(sum, matrix)) == 400  # the test images
    assert sum(matrix[i][i] for i in range(10)) / 400 == pytest.approx(best["test_acc"])
    client = MlflowClient(tracking_uri=f"sqlite:///{search}/mlflow.db")
    (parent,) = client.search_runs([client.get_experiment_by_name("cifar").experiment_id],
                                   filter_string="attributes.run_name = 'e2e'")  # fmt: skip
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/learning_curves.png", "report/confusion_matrix.png"} <= logged
    assert "report/report.html" in parent.data.tags["mlflow.note.content"]


def test_trials_save_checkpoints_at_the_rungs_their_last_epoch_and_each_new_best(search):
    # grace period 1, reduction factor 2, 4 epochs: rungs at 1 and 2; epoch 3 is saved when it beats the
    # trial's earlier epochs (its best epoch always has a checkpoint), otherwise only once --checkpoint-period
    # (30 s) has passed since the last save, which these epochs never take.
    for result in (search / "runs" / "e2e").glob("train_cifar_*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        saved = [r["epoch"] for r in rows if r.get("checkpoint_dir_name")]
        best_so_far = [r["epoch"] for i, r in enumerate(rows) if all(r["val_acc"] > p["val_acc"] for p in rows[:i])]
        expected = sorted({e for e in (1, 2, 4) if e <= rows[-1]["epoch"]} | set(best_so_far))
        assert saved == expected, (saved, expected)


def test_best_checkpoint_reproduces_its_val_acc(search, cifar_dir):
    best = json.loads((search / "runs" / "e2e" / "best_config.json").read_text())
    assert best["val_acc"] == pd.read_csv(search / "runs" / "e2e" / "results.csv")["val_acc"].max()
    assert 0.0 <= best["test_acc"] <= 1.0 and best["config"]["epochs"] == MAX_EPOCHS
    model, config = load_model(best["checkpoint"]), load(best["checkpoint"])["config"]
    assert config == best["config"]
    splits = data.split(*data.load(cifar_dir, download_if_missing=False))
    assert config["tta"] == 2  # the space's default: evaluation averages flips and shifts
    _, val_acc = evaluate(model, torch.from_numpy(splits.val_x), torch.from_numpy(splits.val_y), tta=2)
    assert val_acc == pytest.approx(best["val_acc"], abs=1e-9)
    _, test_acc = evaluate(model, torch.from_numpy(splits.test_x), torch.from_numpy(splits.test_y), tta=2)
    assert test_acc == pytest.approx(best["test_acc"], abs=1e-9)


def test_mlflow_parent_child_runs_and_registered_model(search):
    client = MlflowClient(tracking_uri=f"sqlite:///{search}/mlflow.db")
    experiment = client.get_experiment_by_name("cifar")
    parents = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`hpsearch.search` = 'e2e' and attributes.run_name = 'e2e'"
    )
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    # The UI opens the experiment on its runs, and the search's run says what it was.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    note = parent.data.tags["mlflow.note.content"]
    assert "**e2e**" in note and "ASHA" in note and "`val_acc` (max)" in note
    assert parent.data.params["num_samples"] == str(NUM_SAMPLES) and parent.data.params["seed"] == "0"
    assert parent.data.tags["version.torch"] == torch.__version__.split("+")[0] or parent.data.tags["version.torch"]
    assert "git_commit" in parent.data.tags
    assert "test_acc" in parent.data.metrics and "best_val_acc" in parent.data.metrics
    assert "best_checkpoint/checkpoint.pt" in [
        a.path for a in client.list_artifacts(parent.info.run_id, "best_checkpoint")
    ]

    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert len(children) == NUM_SAMPLES
    frame = pd.read_csv(search / "runs" / "e2e" / "results.csv").set_index("trial_id")
    for child in children:
        trial = child.data.tags["hpsearch.trial_id"]
        assert child.info.status == "FINISHED"
        assert float(child.data.params["lr"]) == pytest.approx(frame.loc[trial, "config/lr"])
        history = client.get_metric_history(child.info.run_id, "val_acc")
        assert [m.step for m in history] == list(range(1, frame.loc[trial, "epochs"] + 1))
        assert max(m.value for m in history) == pytest.approx(frame.loc[trial, "val_acc"])

    versions = client.search_model_versions("name = 'cifar-best'")
    mine = [v for v in versions if v.tags.get("search") == "e2e"]
    assert len(mine) == 1 and float(mine[0].tags["val_acc"]) == pytest.approx(frame["val_acc"].max(), abs=1e-4)

    assert str(client.get_model_version_by_alias("cifar-best", "champion").version) == str(mine[0].version)
    tags = mine[0].tags
    assert (tags["metric"], tags["mode"], tags["task"], tags["smoke"]) == ("val_acc", "max", "cifar", "false")
    assert tags["data_key"] == json.loads((search / "runs" / "e2e" / "provenance.json").read_text())["data_key"]
    # It carries the network's code and its requirements, so it loads without this project's folder.
    mlflow.set_tracking_uri(f"sqlite:///{search}/mlflow.db")
    files = Path(mlflow.artifacts.download_artifacts(f"models:/cifar-best/{mine[0].version}"))
    assert (files / "code" / "trainables" / "models.py").is_file()
    assert f"torch=={torch.__version__.split('+')[0]}" in (files / "requirements.txt").read_text()


def _raw_test_images(cifar_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The test batch as a user reads it: uint8 (N, 32, 32, 3), as torchvision's CIFAR10.data holds it."""
    with open(cifar_dir / data.FOLDER / data.TEST_FILE, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(
        batch["labels"]
    )


def test_the_champion_predicts_raw_images_from_another_folder_at_the_searchs_test_accuracy(search, cifar_dir):
    best = json.loads((search / "runs" / "e2e" / "best_config.json").read_text())
    images, labels = _raw_test_images(cifar_dir)
    predicted = predict_elsewhere(f"sqlite:///{search}/mlflow.db", "models:/cifar-best@champion", images,
                                  folder=search / "elsewhere")  # fmt: skip
    assert list(predicted.columns) == ["label", *(f"prob_{c}" for c in data.CLASSES)]
    accuracy = float((predicted["label"].to_numpy() == np.asarray(data.CLASSES)[labels]).mean())
    assert accuracy == pytest.approx(best["test_acc"], abs=0.005)

    # The loaded model: a pyfunc on raw pixels; its bare network is there too, in eval mode.
    mlflow.set_tracking_uri(f"sqlite:///{search}/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/cifar-best@champion")
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, 32, 32, 3)
    assert model.unwrap_python_model().network.training is False
    with pytest.raises(Exception, match=r"does not match expected shape \(-1, 32, 32, 3\)"):
        model.predict(np.zeros((2, 3, 32, 32), dtype=np.uint8))  # channels first: refused, saying the layout


def test_mlflow_models_serve_answers_raw_images(search, cifar_dir):
    images, _ = _raw_test_images(cifar_dir)
    uri = f"sqlite:///{search}/mlflow.db"
    expected = predict_elsewhere(uri, "models:/cifar-best@champion", images[:5], folder=search / "served")
    with served(uri, "models:/cifar-best@champion", log=search / "serve.log") as url:
        answer = invoke(url, {"inputs": images[:5].tolist()})
    assert [row["label"] for row in answer] == expected["label"].tolist()


def test_results_module_reloads_the_search(search):
    frame = results.load_results(search / "runs" / "e2e")
    assert len(frame) == NUM_SAMPLES
    done = subprocess.run(
        [sys.executable, "-m", "results", str(search / "runs" / "e2e")], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0 and "best trial" in done.stdout


def test_trial_logs_in_their_own_files(search):
    folders = [p for p in (search / "runs" / "e2e").iterdir() if p.is_dir() and p.name.startswith("train_")]
    assert len(folders) == NUM_SAMPLES
    for folder in folders:
        assert (folder / "progress.csv").exists()
        assert "val_acc=" in (folder / "stdout").read_text()


def test_optuna_search_with_automatic_gpu_packing(tmp_path, cifar_dir, ray_local, capsys):
    # fmt: off
    argv = search_args(tmp_path, cifar_dir, "tpe", "--search", "optuna", "--num-samples", "4", "--max-epochs", "2",
                       "--grace-period", "1", "--reduction-factor", "2", "--max-concurrent", "2",
                       "--gpus-per-trial", "auto")
    # fmt: on
    assert main(argv) == 0
    frame = results.load_results(tmp_path / "runs" / "tpe")
    assert len(frame) == 4 and frame["config/lr"].nunique() == 4
    assert frame["config/lr"].tolist().count(11.5) == 1  # the reference point was tried first
    saved = json.loads((tmp_path / "runs" / "tpe" / "search.json").read_text())
    if not torch.cuda.is_available():
        assert "no GPU in this cluster, trials run on CPU" in capsys.readouterr().out
        assert saved["resources"]["gpus_per_trial"] == 0.0
    else:
        assert 0 < saved["resources"]["gpus_per_trial"] <= 1


def test_a_space_file_that_minimises_its_metric(tmp_path, cifar_dir, ray_local, capsys):
    import yaml

    from search_spaces import BUILTIN_DIR

    raw = yaml.safe_load((BUILTIN_DIR / "cifar.yaml").read_text())
    raw.update(name="cifar-loss", metric="val_loss", mode="min")
    space_file = tmp_path / "loss.yaml"
    space_file.write_text(yaml.safe_dump(raw))
    # fmt: off
    argv = search_args(tmp_path, cifar_dir, "loss", "--space", str(space_file), "--search", "optuna",
                       "--num-samples", "4", "--max-epochs", "2", "--grace-period", "1", "--reduction-factor", "2")
    # fmt: on
    assert main(argv) == 0
    folder = tmp_path / "runs" / "loss"
    frame = results.load_results(folder)
    assert frame["val_loss"].is_monotonic_increasing  # lowest first
    best = json.loads((folder / "best_config.json").read_text())
    assert (best["metric"], best["mode"]) == ("val_loss", "min")
    assert best["val_loss"] == pytest.approx(frame["val_loss"].min())
    assert f"best trial {best['trial_id']}: val_loss" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    parent = client.search_runs([client.get_experiment_by_name("cifar-loss").experiment_id],
                                filter_string="attributes.run_name = 'loss'")[0]  # fmt: skip
    assert parent.data.metrics["best_val_loss"] == pytest.approx(best["val_loss"])
    version = client.search_model_versions("name = 'cifar-loss-best'")[0]
    assert float(version.tags["val_loss"]) == pytest.approx(best["val_loss"], abs=1e-4)
    # --resume finds the space again through its file.
    assert main(["--name", "loss", "--storage-path", str(tmp_path / "runs"), "--resume"]) == 0
    assert "already finished" in capsys.readouterr().out


def test_diverging_trials_end_quietly_as_diverged(tmp_path, cifar_dir, ray_local, capsys):
    # fmt: off
    argv = search_args(tmp_path, cifar_dir, "diverge", "--num-samples", "2", "--max-epochs", "3",
                       "--grace-period", "3", "--param", "lr=1e12")
    # fmt: on
    assert main(argv) == 1
    out = capsys.readouterr()
    assert "2 trial(s) diverged (training loss not finite)" in out.out
    assert "failed" not in out.out and "no trial produced a usable checkpoint" in out.err
    if not torch.cuda.is_available():  # no --gpus-per-trial, no GPU: the trials ran on CPU, and said so
        assert "--gpus-per-trial not given: no GPU in this cluster, trials run on CPU" in out.out
    frame = results.load_results(tmp_path / "runs" / "diverge")
    assert list(frame["status"]) == ["diverged", "diverged"]
    assert (frame["epochs"] == 1).all()  # stopped at the first non-finite epoch, not retried
    assert not list((tmp_path / "runs" / "diverge").glob("*/error.txt"))


def test_failed_trials_are_listed_with_their_error_logs(tmp_path):
    from types import SimpleNamespace

    from tuner.driver.summary import failed_trials

    grid = [
        SimpleNamespace(error=RuntimeError("Traceback...\nValueError: boom"), metrics={"trial_id": "t1"},
                        path=str(tmp_path / "t1")),
        SimpleNamespace(error=None, metrics={"trial_id": "t2"}, path=str(tmp_path / "t2")),
    ]  # fmt: skip
    assert failed_trials(grid) == [("t1", "ValueError: boom", str(tmp_path / "t1" / "error.txt"))]


def test_sync_of_a_search_that_was_tracked_changes_nothing(search):
    client = MlflowClient(tracking_uri=f"sqlite:///{search}/mlflow.db")
    before = len(client.search_runs([client.get_experiment_by_name("cifar").experiment_id]))
    done = subprocess.run([sys.executable, "run_tune.py", "--sync", str(search / "runs" / "e2e")], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "0 epochs added" in done.stdout
    assert len(client.search_runs([client.get_experiment_by_name("cifar").experiment_id])) == before
    assert len(client.search_model_versions("name = 'cifar-best'")) == 1
