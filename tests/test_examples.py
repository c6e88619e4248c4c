"""The examples run through the service like a built-in task: a user's own tabular task on a CSV."""

import json

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import results
from tests.conftest import ROOT
from tuner.cli import main

pytestmark = pytest.mark.slow
SPACE = str(ROOT / "examples" / "tabular" / "space.yaml")


def argv(tmp_path, csv, name, *extra):
    return ["--space", SPACE, "--data-dir", str(csv), "--storage-path", str(tmp_path / "runs"), "--name", name,
            "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db", "--smoke-test", *extra]  # fmt: skip


def test_a_users_tabular_task_end_to_end(tmp_path, houses_csv, ray_local, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the space names its task as examples.tabular.task:TASK, importable from here
    assert main(argv(tmp_path, houses_csv, "houses", "--checkpoint-period", "0")) == 0
    folder = tmp_path / "runs" / "houses"
    frame = results.load_results(folder)
    assert len(frame) == 4 and set(frame["status"]) <= {"completed", "stopped"}
    assert frame["val_rmse"].is_monotonic_increasing  # a metric to minimise: lowest first
    best = json.loads((folder / "best_config.json").read_text())
    assert (best["metric"], best["mode"]) == ("val_rmse", "min") and best["val_rmse"] == frame["val_rmse"].min()
    assert best["test_metrics"] == ["test_loss", "test_rmse"] and best["test_rmse"] > 0
    assert list(folder.glob("train_tabular_*")), "trial folders are named after the space"

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("tabular")
    parent = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'houses'")[0]
    assert parent.data.metrics["best_val_rmse"] == pytest.approx(best["val_rmse"])
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")  # fmt: skip
    assert len(children) == 4 and all(client.get_metric_history(c.info.run_id, "val_rmse") for c in children)

    # The registered model (a smoke test's: never the champion) predicts prices from the CSV's own columns.
    assert "registered as tabular-best v1; champion: none" in capsys.readouterr().out
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/tabular-best/1")
    table = pd.read_csv(houses_csv)
    predicted = model.predict(table.drop(columns=["price"]).head(50))
    assert list(predicted.columns) == ["price"]
    prices = table["price"]
    assert prices.min() - 100 < predicted["price"].min() and predicted["price"].max() < prices.max() + 100

    # Resume finds the space file and the task again.
    assert main(["--name", "houses", "--storage-path", str(tmp_path / "runs"), "--resume"]) == 0
    assert "already finished" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task": "examples.tabular.nowhere:TASK"}, "importing examples.tabular.nowhere failed"),
        ({"task": "examples.tabular.task:NOPE"}, "has no attribute 'NOPE'"),
        ({"constants": {"target": "cost", "problem": "regression"}}, "has no column 'cost'"),
        ({"constants": {"target": "town", "problem": "regression"}}, "set problem: classification"),
        # The problem decides the metric; a space that names one must name one the problem reports.
        ({"constants": {"target": "town", "problem": "classification"}, "metric": "val_rmse", "mode": "min"},
         "the space's metric 'val_rmse' is not one its task reports (val_acc (max), val_loss (min), train_loss (min), "
         "params (min), latency_ms (min)): set metric to one of them; or leave metric and mode out of the space: "
         "its task then goes by val_acc (max)"),
        ({"metric": "val_rmse", "mode": "max"}, "reports val_rmse as lower is better: set mode: min"),
    ],
)
def test_a_broken_user_task_is_refused_before_any_trial(tmp_path, houses_csv, monkeypatch, capsys, change, message):
    import yaml

    monkeypatch.chdir(ROOT)
    raw = {**yaml.safe_load((ROOT / "examples" / "tabular" / "space.yaml").read_text()), **change}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(raw))
    args = argv(tmp_path, houses_csv, "broken")
    args[1] = str(space)
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("search", ["random", "optuna"])
def test_a_conditional_parameter_never_reaches_a_trial_where_it_is_inactive(tmp_path, houses_csv, ray_local,
                                                                            monkeypatch, capsys, search):  # fmt: skip
    from trainables.checkpoint import load

    monkeypatch.chdir(ROOT)
    # dropout is a parameter only where layers is 2 or 3 (the space's `when`).
    assert main(argv(tmp_path, houses_csv, "cond", "--search", search, "--num-samples", "6")) == 0
    folder = tmp_path / "runs" / "cond"
    frame = results.load_results(folder)
    one_layer = frame["config/layers"] == 1
    assert one_layer.any() and (~one_layer).any(), "the seed should draw both"
    assert (frame.loc[one_layer, "config/dropout"] == "inactive").all()
    assert pd.to_numeric(frame.loc[~one_layer, "config/dropout"]).between(0.0, 0.3).all()
    # Every table a user sees says inactive where results.csv does: the progress tables, the leaderboard,
    # best_config.json; never a value sampled for it.
    said = capsys.readouterr().out.splitlines()
    for trial_id, layers in zip(frame["trial_id"], frame["config/layers"], strict=True):
        rows = [line for line in said if line.startswith(str(trial_id))]
        assert rows and all(("inactive" in line) == (layers == 1) for line in rows), rows
    best = json.loads((folder / "best_config.json").read_text())
    assert (best["config"]["dropout"] == "inactive") == (best["config"]["layers"] == 1), best["config"]
    for saved in folder.glob("train_tabular_*/checkpoint_*"):
        config = load(saved)["config"]  # what the trial trained with
        assert ("dropout" in config) == (config["layers"] > 1), config

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    for run in client.search_runs([client.get_experiment_by_name("tabular").experiment_id],
                                  filter_string="tags.`hpsearch.trial_id` != ''"):  # fmt: skip
        params = run.data.params
        assert (params["dropout"] == "inactive") == (params["layers"] == "1"), params


def test_the_smallest_task_runs_through_the_same_machinery(tmp_path, monkeypatch):
    """examples/minimal: a function task and a space of five keys, through the Python API (its own Ray)."""
    import io

    import tuner

    monkeypatch.chdir(ROOT)  # the space names its task as examples.minimal.task:train
    out = io.StringIO()
    result = tuner.search(str(ROOT / "examples" / "minimal" / "space.yaml"), data_dir=".", name="minimal",
                          storage_path=str(tmp_path / "runs"), mlflow_uri=f"sqlite:///{tmp_path}/mlflow.db",
                          num_samples=3, max_epochs=4, grace_period=1, out=out)  # fmt: skip
    said = out.getvalue()
    assert len(result.table) == 3 and result.best is not None and result.best.score > 0.5
    assert set(result.table["status"]) <= {"completed", "stopped"}
    assert result.best.test_scores == {} and result.model_uri is None  # no evaluate, no build_model
    assert "no test score: the task has no evaluate" in said and "no registered model: the task has no" in said
    # Its checkpoints hold what report(model=, optimizer=) saved: a resumed trial restores from them.
    from trainables.checkpoint import load

    state = load(result.best.checkpoint)
    assert {"model", "optimizer", "epoch", "config"} <= set(state)
