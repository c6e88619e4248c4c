"""The model registry as a user meets it: which version is champion, and the champion on raw CSV rows.

Six real searches of the tabular example go into one MLflow store: the champion
moves only between versions of the same metric, mode, task and data, only to a
better score, and never to a smoke test's version. The champions, loaded in a
fresh process in another folder and served by ``mlflow models serve``, answer
raw rows of the CSV at the score the search reported.
"""

import json
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT
from tests.registered import invoke, predict_elsewhere, served
from tuner.cli import main

pytestmark = pytest.mark.slow
SPACE = ROOT / "examples" / "tabular" / "space.yaml"
SPLIT_SEED = 0  # examples/tabular/task.py: rows are split 70/15/15 with this seed, the test rows first


def held_out(table: pd.DataFrame, target: str) -> pd.DataFrame:
    """The rows the tabular task keeps for its test score (its documented split)."""
    table = table[table[target].notna()].reset_index(drop=True)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(table))
    return table.iloc[order[: max(1, len(table) * 15 // 100)]].reset_index(drop=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory, ray_local):
    """The six searches, each with its last lines of output; one MLflow store."""
    sys.path.insert(0, str(ROOT / "examples" / "tabular"))
    from make_data import houses

    tmp = tmp_path_factory.mktemp("registry")
    prices = houses(1200, seed=0)
    prices.to_csv(tmp / "houses.csv", index=False)
    # The same houses as a classification table: the price band, from the other columns.
    bands = prices.assign(band=pd.qcut(prices["price"], 3, labels=["cheap", "mid", "dear"]).astype(str))
    bands.drop(columns=["price"]).to_csv(tmp / "bands.csv", index=False)

    def space_file(file: str, **change) -> str:
        raw = {**yaml.safe_load(SPACE.read_text()), **change}
        path = tmp / f"{file}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return str(path)

    # A copy of the space as the README says: the target and the problem, nothing else.
    classify = {"constants": {"target": "band", "problem": "classification"}}
    runs = {
        "first": (space_file("tabular"), "houses.csv", ["--max-epochs", "2"]),
        # Run by mistake as a classification into the regressor's registry: another metric, other data.
        "mistake": (space_file("mistake", **classify), "bands.csv", ["--max-epochs", "2"]),
        "smoke": (space_file("tabular"), "houses.csv", ["--smoke-test"]),
        "worse": (space_file("tabular"), "houses.csv", ["--num-samples", "1", "--max-epochs", "1",
                                                         "--param", "lr=0.0003"]),  # fmt: skip
        "better": (space_file("tabular"), "houses.csv", ["--max-epochs", "12"]),
        "bands": (space_file("bands", name="bands", **classify), "bands.csv", ["--max-epochs", "8"]),
    }
    out = {}
    for name, (space, csv, extra) in runs.items():
        argv = ["--space", space, "--data-dir", str(tmp / csv), "--storage-path", str(tmp / "runs"), "--name", name,
                "--mlflow-uri", f"sqlite:///{tmp}/mlflow.db", "--num-samples", "2", "--grace-period", "1", *extra]
        code, lines = _run(argv)
        assert code == 0, lines
        out[name] = lines
    return tmp, out


def _run(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io
    import os

    said = io.StringIO()
    here = os.getcwd()
    os.chdir(ROOT)  # the space names its task as examples.tabular.task:TASK, importable from here
    try:
        with contextlib.redirect_stdout(said):
            code = main(argv)
    finally:
        os.chdir(here)
    return code, said.getvalue()


def _version_of(client: MlflowClient, name: str, search: str) -> str:
    return next(str(v.version) for v in client.search_model_versions(f"name = '{name}'")
                if v.tags["search"] == search)  # fmt: skip


def test_the_champion_moves_only_to_a_better_comparable_version(store):
    tmp, out = store
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    versions = {search: _version_of(client, "tabular-best", search)
                for search in ("first", "mistake", "smoke", "worse", "better")}  # fmt: skip
    assert list(versions.values()) == ["1", "2", "3", "4", "5"]
    score = {s: float(client.get_model_version("tabular-best", v).tags["score"]) for s, v in versions.items()}

    assert f"registered as tabular-best v1; champion: v1 (val_rmse {score['first']:.4f})" in out["first"]
    # Another metric on other data: not compared, whatever its number.
    assert f"registered as tabular-best v2; champion: v1 (val_rmse {score['first']:.4f})" in out["mistake"]
    assert "goes by another metric, another mode and was trained on other data" in out["mistake"]
    assert "set_registered_model_alias('tabular-best', 'champion', '2')" in out["mistake"]
    # Its load line names its own version: @champion would load the regressor, which cannot read these rows.
    assert 'mlflow.pyfunc.load_model("models:/tabular-best/2")' in out["mistake"]
    assert "registered as tabular-best v3; champion: v1" in out["smoke"]
    assert "never become the champion" in out["smoke"]
    assert score["worse"] > score["first"]  # one epoch at a tenth of the lr
    assert "registered as tabular-best v4; champion: v1" in out["worse"] and "scored as well or better" in out["worse"]
    assert score["better"] < score["first"]
    assert f"registered as tabular-best v5; champion: v5 (val_rmse {score['better']:.4f})" in out["better"]
    assert str(client.get_model_version_by_alias("tabular-best", "champion").version) == "5"

    tags = client.get_model_version("tabular-best", "2").tags
    assert (tags["metric"], tags["mode"], tags["task"], tags["smoke"]) == (
        "val_acc", "max", "examples.tabular.task:TASK", "false"
    )
    assert client.get_model_version("tabular-best", "3").tags["smoke"] == "true"
    # The summary's last lines: the version, the champion, and how to load it from anywhere.
    last = out["better"].strip().splitlines()[-2:]
    assert last[0].startswith("registered as tabular-best v5")
    assert f'mlflow.set_tracking_uri("sqlite:///{tmp}/mlflow.db")' in last[1]
    assert 'mlflow.pyfunc.load_model("models:/tabular-best@champion")' in last[1]


def test_the_regression_champion_predicts_raw_rows_from_another_folder(store):
    tmp, _ = store
    best = json.loads((tmp / "runs" / "better" / "best_config.json").read_text())
    rows = held_out(pd.read_csv(tmp / "houses.csv"), "price")
    predicted = predict_elsewhere(f"sqlite:///{tmp}/mlflow.db", "models:/tabular-best@champion",
                                  rows.drop(columns=["price"]), folder=tmp / "elsewhere-prices")  # fmt: skip
    assert list(predicted.columns) == ["price"]
    rmse = float(np.sqrt(((predicted["price"] - rows["price"]) ** 2).mean()))
    assert rmse == pytest.approx(best["test_rmse"], rel=0.05)


def test_the_classification_champion_answers_class_names_from_raw_rows(store):
    tmp, out = store
    best = json.loads((tmp / "runs" / "bands" / "best_config.json").read_text())
    assert (best["metric"], best["mode"]) == ("val_acc", "max")  # the problem decided, as the README says
    assert "registered as bands-best v1; champion: v1 (val_acc" in out["bands"]
    rows = held_out(pd.read_csv(tmp / "bands.csv"), "band")
    predicted = predict_elsewhere(f"sqlite:///{tmp}/mlflow.db", "models:/bands-best@champion",
                                  rows.drop(columns=["band"]), folder=tmp / "elsewhere-bands")  # fmt: skip
    assert list(predicted.columns) == ["label", "prob_cheap", "prob_dear", "prob_mid"]
    assert set(predicted["label"]) <= {"cheap", "mid", "dear"}
    assert float((predicted["label"] == rows["band"]).mean()) == pytest.approx(best["test_acc"], abs=0.005)
    assert best["test_acc"] > 0.5  # chance is 1/3


def test_mlflow_models_serve_answers_raw_csv_rows(store):
    tmp, _ = store
    uri = f"sqlite:///{tmp}/mlflow.db"
    rows = pd.read_csv(tmp / "houses.csv").drop(columns=["price"]).head(4)
    expected = predict_elsewhere(uri, "models:/tabular-best@champion", rows, folder=tmp / "elsewhere-served")
    with served(uri, "models:/tabular-best@champion", log=tmp / "serve.log") as url:
        answer = invoke(url, {"dataframe_records": rows.to_dict("records")})
        bands = pd.read_csv(tmp / "bands.csv").drop(columns=["band"]).head(3)
    assert [row["price"] for row in answer] == pytest.approx(expected["price"].tolist(), rel=1e-5)
    with served(uri, "models:/bands-best@champion", log=tmp / "serve-bands.log") as url:
        labels = [row["label"] for row in invoke(url, {"dataframe_split": bands.to_dict("split")})]
    assert labels == predict_elsewhere(uri, "models:/bands-best@champion", bands,
                                       folder=tmp / "elsewhere-bands-served")["label"].tolist()  # fmt: skip


def test_a_mode_against_the_metrics_direction_is_refused_before_ray_starts(tmp_path, capsys):
    raw = yaml.safe_load((ROOT / "search_spaces" / "cifar.yaml").read_text())
    space = tmp_path / "min.yaml"
    space.write_text(yaml.safe_dump({**raw, "mode": "min"}))
    assert main(["--space", str(space), "--data-dir", str(tmp_path), "--storage-path", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "mode: min for val_acc, but its task reports val_acc as higher is better: set mode: max" in err
    assert not (tmp_path / "runs").exists()
