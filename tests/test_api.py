"""The Python API: ``tuner.search`` twice in one process, its typed result, ``tuner.load``, and no side effects.

The searches start and stop their own Ray instance (as in a notebook), on the
tabular example's smoke budget.
"""

import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import ray

import tuner
from search_spaces import SpaceError
from search_spaces.exceptions import UsageError
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
SPACE = str(ROOT / "examples" / "tabular" / "space.yaml")


def _state() -> dict:
    """What a search must leave as it found it."""
    path = [p for p in sys.path if "site-packages" not in p]  # what an imported package adds for itself stays
    return {"env": dict(os.environ), "sigterm": signal.getsignal(signal.SIGTERM),
            "sigint": signal.getsignal(signal.SIGINT), "path": path, "ray": ray.is_initialized()}  # fmt: skip


def test_two_searches_in_one_process_with_a_callback_and_a_typed_result(tmp_path, houses_csv, monkeypatch):
    monkeypatch.chdir(ROOT)  # the space names its task as examples.tabular.task:TASK, importable from here
    before = _state()
    common = dict(data_dir=str(houses_csv), storage_path=str(tmp_path / "runs"), smoke_test=True,
                  mlflow_uri=f"sqlite:///{tmp_path}/mlflow.db", max_epochs=2, num_samples=2)  # fmt: skip
    seen = []
    out = io.StringIO()
    first = tuner.search(SPACE, name="first", out=out, on_result=seen.append, **common)
    assert _state() == before  # environment, signal handlers, sys.path, Ray: as they were

    # The result: typed, and what the folder holds.
    assert isinstance(first, tuner.SearchResult) and first.name == "first" and first.space == "tabular"
    assert (first.metric, first.mode) == ("val_rmse", "min")
    assert isinstance(first.table, pd.DataFrame) and len(first.table) == 2
    assert first.best is not None and first.best.trial_id == str(first.table["trial_id"].iloc[0])
    assert first.best.score == pytest.approx(first.table["val_rmse"].min())
    assert set(first.best.test_scores) == {"test_loss", "test_rmse"} and first.best.config["lr"] > 0
    assert first.model_uri == "models:/tabular-best/1" and first.report and os.path.exists(first.report)
    assert first.cost["trial_seconds"] > 0
    assert "leaderboard" in out.getvalue() and "registered as tabular-best v1" in out.getvalue()
    # on_result saw every epoch of every trial, with its config.
    assert {u.trial_id for u in seen} == set(first.table["trial_id"].astype(str))
    assert all(isinstance(u, tuner.TrialUpdate) and "val_rmse" in u.metrics and "lr" in u.config for u in seen)
    assert len(seen) == int(first.table["epochs"].sum())

    # A second search in the same process, quiet; and load() gives the first one back as it was.
    quiet = io.StringIO()
    sys_stdout, sys.stdout = sys.stdout, quiet
    try:
        second = tuner.search(SPACE, name="second", quiet=True, seed=1, **common)
    finally:
        sys.stdout = sys_stdout
    assert quiet.getvalue() == "" and second.model_uri == "models:/tabular-best/2"
    assert _state() == before
    loaded = tuner.load(tmp_path / "runs" / "first")
    assert loaded.best == first.best and loaded.model_uri == first.model_uri
    pd.testing.assert_frame_equal(loaded.table, first.table)
    # The registered model predicts from the CSV's own columns.
    model = loaded.load_model()
    rows = pd.read_csv(houses_csv).drop(columns=["price"]).head(5)
    assert list(model.predict(rows).columns) == ["price"]
    assert "2 of 2" not in loaded.leaderboard() and loaded.best.trial_id in loaded.leaderboard(all=True)
    # Each trial's reports, epoch by epoch, as on_result saw them.
    histories = loaded.histories()
    assert set(histories) == set(first.table["trial_id"].astype(str))
    assert sum(len(h) for h in histories.values()) == len(seen) and all("val_rmse" in h for h in histories.values())


@pytest.mark.parametrize(
    "change, said",
    [
        ({"workers_per_trial": 0}, "--workers-per-trial is 0, but must be a whole number >= 1"),
        ({"searcher": "grid"}, "--search is 'grid': pick one of random, optuna"),
        ({"params": {"lr": "0.1:0.01"}}, "lr"),
        ({"max_epochs": 2.5}, "--max-epochs is 2.5"),
        ({"cpus_per_trial": "two"}, "--cpus-per-trial is 'two', but must be a number"),
    ],
)
def test_bad_values_are_refused_before_anything_starts(tmp_path, houses_csv, monkeypatch, change, said):
    monkeypatch.chdir(ROOT)
    started = time.monotonic()
    with pytest.raises((UsageError, SpaceError)) as raised:
        tuner.search(SPACE, data_dir=str(houses_csv), storage_path=str(tmp_path / "runs"), smoke_test=True,
                     mlflow_uri=f"sqlite:///{tmp_path}/mlflow.db", **change)  # fmt: skip
    assert said in str(raised.value)
    assert time.monotonic() - started < 20 and not ray.is_initialized() and not (tmp_path / "runs").exists()


def test_load_of_a_folder_that_is_not_a_finished_search_says_what_to_do(tmp_path):
    with pytest.raises(Exception, match="holds no search"):
        tuner.load(tmp_path)


def test_usage_errors_share_the_cli_message(tmp_path):
    with pytest.raises(UsageError, match="--resume needs --name"):
        tuner.search("cifar", resume=True)


def test_a_script_elsewhere_imports_the_task_from_the_working_directory(tmp_path):
    """``python /elsewhere/script.py`` run from the folder that holds the task: the task is found there, as the
    command line finds it (a script's own folder, not the working directory, is first on its sys.path)."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import sys, tuner
        try:
            tuner.search("examples/minimal/space.yaml", data_dir=".", storage_path={str(tmp_path / "runs")!r},
                         workers_per_trial=2)
        except tuner.HpsearchError as e:
            print(type(e).__name__, e)
        print("cwd on sys.path after:", any(p == {str(ROOT)!r} for p in sys.path))
    """))
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # The task imported (its refusal is about DDP, not an import), and sys.path is as it was.
    assert "UsageError --workers-per-trial 2: task 'examples.minimal.task:train' does not say" in done.stdout
    assert "cwd on sys.path after: False" in done.stdout
