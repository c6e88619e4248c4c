"""``results.record``: a search's search.json, read back typed, whichever layout wrote it."""

import dataclasses
import json

import pytest

import results
from results.record import BUDGET_KEYS, RESOURCES_KEYS, RUN_KEYS, SearchRecord, parse
from search_spaces import Budget
from search_spaces.exceptions import ResultsError
from tuner.config.settings import Resources, RunSettings, SearchSettings

# What a search writes today (SearchSettings.to_json): its own settings on top, its three parts nested.
CURRENT = {
    "space_name": "cifar",
    "data_dir": "/data/cifar",
    "budget": {"num_samples": 8, "max_epochs": 9, "grace_period": 1, "reduction_factor": 3},
    "resources": {"gpus_per_trial": 0.5, "cpus_per_trial": 2.0, "workers_per_trial": 1, "max_concurrent": None,
                  "worker_start_timeout_s": 120.0},
    "run": {"name": "cifar-1", "storage_path": "/runs", "mlflow_uri": "sqlite:////runs/mlflow.db",
            "keep_checkpoints": 2, "keep_trials": 5, "max_failures": 2, "checkpoint_period_s": 30.0, "resume": False,
            "mlflow_run_id": "abc"},
    "search": "optuna",
    "scheduler": "hyperband",
    "seed": 3,
    "smoke_test": True,
    "compile": False,
    "params": ["lr=0.1", "batch_size=[64,128]"],
    "space_file": "",
    "metric": "val_loss",
    "mode": "min",
    "target": 0.9,
    "confirm": 2,
    "warm_start": "",
    "objectives": {"params": "min"},
    "select": {"best": "val_loss", "where": {"params": {"max": 5000.0}}},
}  # fmt: skip


def _flat(saved: dict) -> dict:
    """``saved`` in the layout written before the split: every setting at the top level."""
    parts = ("budget", "resources", "run")
    return {k: v for k, v in saved.items() if k not in parts} | {k: v for p in parts for k, v in saved[p].items()}


def _write(folder, saved: dict):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "search.json").write_text(json.dumps(saved, indent=2))
    return folder


def test_the_current_and_the_flat_layout_read_into_the_same_record(tmp_path):
    current = results.read_record(_write(tmp_path / "current", CURRENT))
    flat = results.read_record(_write(tmp_path / "flat", _flat(CURRENT)))
    assert current == flat
    assert current.saved == CURRENT and flat.saved == _flat(CURRENT)  # as written, for the report to show
    assert (current.name, current.space_name, current.space_source, current.data_dir) == (
        "cifar-1", "cifar", "cifar", "/data/cifar")  # fmt: skip
    assert current.params == ("lr=0.1", "batch_size=[64,128]") and current.smoke_test and not current.compile
    assert (current.search, current.scheduler, current.seed, current.metric, current.mode) == (
        "optuna", "hyperband", 3, "val_loss", "min")  # fmt: skip
    assert (current.target, current.confirm) == (0.9, 2)
    assert current.budget == Budget(num_samples=8, max_epochs=9, grace_period=1, reduction_factor=3)
    assert (current.gpus_per_trial, current.cpus_per_trial, current.workers_per_trial) == (0.5, 2.0, 1)
    assert (current.storage_path, current.mlflow_uri) == ("/runs", "sqlite:////runs/mlflow.db")


def test_both_layouts_give_the_settings_a_search_resumes_with(tmp_path):
    current = SearchSettings.read(str(_write(tmp_path / "current", CURRENT)))
    assert current == SearchSettings.read(str(_write(tmp_path / "flat", _flat(CURRENT))))
    assert json.loads(current.to_json()) == CURRENT  # the format written stays the same
    assert SearchSettings.from_json(current.to_json()) == current
    assert current.resources == Resources(gpus_per_trial=0.5, cpus_per_trial=2.0, worker_start_timeout_s=120.0)
    assert current.run.mlflow_run_id == "abc" and current.params == ["lr=0.1", "batch_size=[64,128]"]
    assert current.rule().describe(mode="min") == "best val_loss (min) among trials with params <= 5000"
    assert [(o.metric, o.mode) for o in current.all_objectives()] == [("val_loss", "min"), ("params", "min")]


def test_the_part_keys_of_the_flat_layout_are_the_parts_fields():
    assert set(BUDGET_KEYS) == {f.name for f in dataclasses.fields(Budget)}
    assert set(RESOURCES_KEYS) == {f.name for f in dataclasses.fields(Resources)}
    assert set(RUN_KEYS) == {f.name for f in dataclasses.fields(RunSettings)}
    own = {f.name for f in dataclasses.fields(SearchSettings)} - {"budget", "resources", "run"}
    assert own <= {f.name for f in dataclasses.fields(SearchRecord)}


def test_settings_added_since_read_as_what_an_older_search_did():
    old = {k: v for k, v in _flat(CURRENT).items()
           if k not in ("scheduler", "metric", "mode", "target", "confirm", "warm_start", "space_file",
                        "workers_per_trial", "worker_start_timeout_s", "compile", "objectives", "select")}  # fmt: skip
    record = parse(json.dumps(old))
    assert [o.metric for o in record.all_objectives()] == ["val_acc"] and record.rule().describe(mode="max") == (
        "best val_acc (max)")  # fmt: skip
    assert (record.scheduler, record.metric, record.mode, record.target, record.confirm) == (
        "asha", "val_acc", "max", None, 0)  # fmt: skip
    assert record.workers_per_trial == 1 and record.space_source == "cifar"
    settings = SearchSettings.from_record(record)
    assert settings.scheduler == "asha" and settings.resources.workers_per_trial == 1


def test_a_partial_file_reads_as_far_as_it_goes():
    record = parse(json.dumps({"metric": "rmse", "mode": "min", "resources": {"gpus_per_trial": "auto"}}))
    assert (record.metric, record.mode, record.name, record.budget) == ("rmse", "min", "", None)
    assert record.gpus_per_trial == 0.0  # never resolved: no GPU to count
    with pytest.raises(ResultsError, match="lacks settings .*no whole budget.* restore it"):
        SearchSettings.from_record(record)
    no_run = parse(json.dumps({k: v for k, v in CURRENT.items() if k != "run"}))
    with pytest.raises(ResultsError, match="lacks settings .*mlflow_uri"):
        SearchSettings.from_record(no_run)


def test_a_missing_file_says_to_pass_a_search_folder(tmp_path):
    with pytest.raises(ResultsError, match=r"holds no search \(no search.json in .*\): pass the folder a search"):
        results.read_record(tmp_path)
    assert results.read_record(tmp_path, missing_ok=True) == SearchRecord()
    assert results.objective(str(tmp_path)) == ("val_acc", "max")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"space_name": "cifar", "budg', "is not JSON .* cut short or edited"),
        ("[1, 2]", "holds a list, not a search's settings"),
        ('{"seed": "three"}', "a setting of the wrong type"),
        ('{"params": 5}', "a setting of the wrong type"),
    ],
)
def test_an_unreadable_file_says_so(tmp_path, text, message):
    (tmp_path / "search.json").write_text(text)
    with pytest.raises(ResultsError, match=message):
        results.read_record(tmp_path)


def test_a_uri_is_read_through_storage(tmp_path):
    folder = _write(tmp_path / "s", CURRENT)
    assert results.read_record(f"file://{folder}") == results.read_record(folder)
