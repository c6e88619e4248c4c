"""The MLflow tracker against a real tracking server that goes away and comes back."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from mlflow.tracking import MlflowClient

from tests.servers import MlflowServer
from tuner.tracking import client as resilient
from tuner.tracking import epochs, registry
from tuner.tracking.runs import OUTCOME_TAG, TRIAL_TAG, MlflowTracker, where_to_browse


@dataclass
class FakeTrial:
    """What Tune hands its callbacks: an id, a config and the last result (a real MLflow is behind them)."""

    trial_id: str
    config: dict = field(default_factory=lambda: {"lr": 0.1, "epochs": 5})
    last_result: dict = field(default_factory=dict)
    path: str | None = None  # its folder, holding progress.csv


def _report(tracker: MlflowTracker, trial: FakeTrial, epoch: int) -> None:
    """One result, then the driver's step end, which writes what is kept once FLUSH_S has passed."""
    trial.last_result = {"epoch": epoch, "val_acc": 0.1 * epoch}
    tracker.on_trial_result(0, [], trial, trial.last_result)
    tracker.on_step_end(0, [])


def _child(client: MlflowClient, experiment_id: str, trial_id: str):
    (run,) = client.search_runs([experiment_id], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}'")
    return run


@pytest.fixture
def server(tmp_path):
    server = MlflowServer(backend=f"sqlite:///{tmp_path}/store.db", artifacts=tmp_path / "artifacts",
                          log=tmp_path / "server.log")  # fmt: skip
    with server:
        yield server


def test_epoch_metrics_are_written_in_batches_not_while_the_trial_waits(tmp_path, monkeypatch):
    monkeypatch.setattr(epochs, "FLUSH_S", 3600.0)
    uri = f"sqlite:///{tmp_path}/store.db"
    tracker = MlflowTracker(uri=uri, experiment="e", search_name="s", folder=str(tmp_path), metric="val_acc")
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name("e").experiment_id
    trial, other = FakeTrial("t"), FakeTrial("o")
    for each in (trial, other):
        tracker.on_trial_start(0, [], each)
    for epoch in (1, 2, 3):
        _report(tracker, trial, epoch)
    _report(tracker, other, 1)
    run = _child(client, experiment_id, "t")
    assert client.get_metric_history(run.info.run_id, "val_acc") == []  # kept by the driver, not yet written
    tracker.on_trial_complete(0, [], trial)  # a trial's end writes what it reported, then closes its run
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1, 2, 3]
    monkeypatch.setattr(epochs, "FLUSH_S", 0.0)
    tracker.on_step_end(0, [])  # the other trial's: once FLUSH_S has passed, at the driver's next step
    assert len(client.get_metric_history(_child(client, experiment_id, "o").info.run_id, "val_acc")) == 1
    tracker.end()


def test_a_resumed_search_catches_up_the_epochs_its_killed_driver_had_not_written(tmp_path):
    import pandas as pd

    uri = f"sqlite:///{tmp_path}/store.db"
    folder = tmp_path / "train_t"
    folder.mkdir()
    # Epochs 1-3 reached the trial's files; the driver was killed before it wrote them to MLflow.
    pd.DataFrame({"epoch": [1, 2, 3, 3], "val_acc": [float("nan"), 0.5, 0.6, 0.6], "val_acc_tta0": [0.3, 0.4, 0.5, 0.5],
                  "train_loss": [2.0, 1.5, 1.2, 1.2]}).to_csv(folder / "progress.csv", index=False)  # fmt: skip
    first = MlflowTracker(uri=uri, experiment="e", search_name="s", folder=str(tmp_path), metric="val_acc")
    trial = FakeTrial("t", path=str(folder))
    first.on_trial_start(0, [], trial)
    parent = first.parent_run_id
    resumed = MlflowTracker(uri=uri, experiment="e", search_name="s", folder=str(tmp_path), metric="val_acc",
                            parent_run_id=parent, resume=True)  # fmt: skip
    resumed.on_trial_start(0, [], trial)  # restarted from its checkpoint at epoch 2: it reports epoch 3 again
    _report(resumed, trial, 3)
    resumed.on_trial_complete(0, [], trial)
    client = MlflowClient(tracking_uri=uri)
    run = _child(client, client.get_experiment_by_name("e").experiment_id, "t")
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc")) == [1, 2, 3]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss")) == [1, 2]
    resumed.end()


def test_an_outage_is_waited_out_and_caught_up(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setattr(resilient, "RECONNECT_S", 0.0)  # try again at every call
    monkeypatch.setattr(epochs, "FLUSH_S", 0.0)  # each report written at the step that follows it
    tracker = MlflowTracker(uri=server.uri, experiment="e", search_name="s", folder=str(tmp_path), metric="val_acc")
    tracker.retry_delays = (0.1,)
    done, cut = FakeTrial("done"), FakeTrial("cut")
    for trial in (done, cut):
        tracker.on_trial_start(0, [], trial)
    _report(tracker, done, 1)
    _report(tracker, cut, 1)

    server.stop()
    _report(tracker, done, 2)  # kept, not lost
    assert tracker.offline
    _report(tracker, done, 3)
    err = capsys.readouterr().err
    assert err.count("is unreachable") == 1 and "tries MLflow again every" in err

    server.start()  # same port, same store
    tracker.on_trial_complete(0, [], done)  # the next call finds the server and replays what was kept
    assert not tracker.offline
    assert "answers again: 3 tracking calls caught up" in capsys.readouterr().err

    # A call the server refuses is skipped; tracking stays on.
    tracker.log_metrics({"val_acc": 1.0}, run_id="no-such-run")
    assert not tracker.offline and "MLflow refused log_metrics" in capsys.readouterr().err
    _report(tracker, cut, 2)

    tracker.end(status="KILLED")  # an interrupted search: its open trial goes with it
    client = MlflowClient(tracking_uri=server.uri)
    experiment_id = client.get_experiment_by_name("e").experiment_id
    run = _child(client, experiment_id, "done")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1, 2, 3]
    assert run.info.status == "FINISHED" and run.data.tags[OUTCOME_TAG] == "stopped"  # 3 of its 5 epochs
    run = _child(client, experiment_id, "cut")
    assert run.info.status == "KILLED" and len(client.get_metric_history(run.info.run_id, "val_acc")) == 2
    assert client.get_run(tracker.parent_run_id).info.status == "KILLED"


def test_a_server_down_from_the_start_gets_the_whole_search_when_it_returns(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(resilient, "RECONNECT_S", 0.0)
    monkeypatch.setattr(epochs, "FLUSH_S", 0.0)
    server = MlflowServer(backend=f"sqlite:///{tmp_path}/store.db", artifacts=tmp_path / "artifacts",
                          log=tmp_path / "server.log")  # fmt: skip
    tracker = MlflowTracker(uri=server.uri, experiment="e", search_name="s", folder=str(tmp_path),
                            offline_reason="connection refused")  # fmt: skip
    trial = FakeTrial("t", config={"lr": 0.1, "epochs": 2})
    tracker.on_trial_start(0, [], trial)
    _report(tracker, trial, 1)
    with server:
        _report(tracker, trial, 2)
        tracker.on_trial_complete(0, [], trial)
        tracker.end()
        client = MlflowClient(tracking_uri=server.uri)
        experiment_id = client.get_experiment_by_name("e").experiment_id
        run = _child(client, experiment_id, "t")
        assert run.data.tags[OUTCOME_TAG] == "completed" and run.data.params["lr"] == "0.1"
        assert len(client.get_metric_history(run.info.run_id, "val_acc")) == 2
        assert client.get_run(tracker.parent_run_id).info.status == "FINISHED"
    assert "never answered again" not in capsys.readouterr().err


def test_a_server_that_never_returns_leaves_the_sync_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(resilient, "RECONNECT_S", 0.0)
    tracker = MlflowTracker(uri="http://127.0.0.1:9", experiment="e", search_name="s", folder=str(tmp_path),
                            offline_reason="connection refused")  # fmt: skip
    tracker.on_trial_start(0, [], FakeTrial("t"))
    tracker.end(status="FAILED")
    err = capsys.readouterr().err
    assert f"python run_tune.py --sync {tmp_path}" in err and err.count("is unreachable") == 1


def test_the_summary_says_where_to_browse():
    page = "#/experiments/3/runs/abc?workflowType=machine_learning"
    assert where_to_browse("http://u:secret@mlflow:5000/", experiment_id="3", run_id="abc") == (
        f"MLflow: http://u:***@mlflow:5000/{page}"
    )
    local = where_to_browse("sqlite:////w/mlflow.db", experiment_id="3", run_id="abc")
    assert "make mlflow-ui" in local and f"http://127.0.0.1:5000/{page}" in local
    assert "make mlflow-ui" not in where_to_browse("databricks", experiment_id="3", run_id="abc")


def test_the_champion_alias_moves_only_to_a_better_comparable_version(tmp_path):
    uri = f"sqlite:///{tmp_path}/store.db"
    tracker = MlflowTracker(uri=uri, experiment="e", search_name="s", folder=str(tmp_path), metric="val_loss")
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model("m")

    def register(score, **change):
        record = {"search": "s", "trial_id": "t", "metric": "val_loss", "mode": "min", "val_loss": score}
        record.update(change.pop("record", {}))
        tags = registry.version_tags(record, task=change.get("task", "cifar"), data_key=change.get("data", "d1"),
                                     smoke=change.get("smoke", False))  # fmt: skip
        version = str(client.create_model_version("m", source=str(tmp_path)).version)
        for k, v in tags.items():
            client.set_model_version_tag("m", version, k, v)
        return registry.crown(client, "m", version, tags=tags, mode=tags["mode"])

    assert register(0.5, smoke=True)[0] is None  # a smoke test's version: never, even with no champion yet
    assert register(0.5) == ("2", "")  # lower is better; the first comparable version takes it
    held, why = register(0.7)
    assert held == "2" and "scored as well or better (val_loss 0.5000)" in why
    held, why = register(0.1, data="d2")
    assert held == "2" and "was trained on other data" in why
    assert "set_registered_model_alias('m', 'champion', '4')" in why
    held, why = register(0.9, record={"metric": "val_acc", "mode": "max", "val_acc": 0.9})
    assert held == "2" and "goes by another metric and another mode (" in why
    assert register(0.2, task="mine:TASK")[0] == "2"
    assert register(0.1, smoke=True)[0] == "2"
    assert register(0.3) == ("8", "")  # better, and comparable: it moves
    assert register(0.3)[0] == "8"  # a tie keeps the champion it has
    champion = client.get_model_version_by_alias("m", "champion")
    assert str(champion.version) == "8" and champion.tags["val_loss"] == "0.3000"
    # A champion registered before versions carried what they are compared by gives way to a real search's.
    client.delete_registered_model_alias("m", "champion")
    legacy = str(client.create_model_version("m", source=str(tmp_path)).version)
    client.set_model_version_tag("m", legacy, "val_loss", "0.0100")
    client.set_registered_model_alias("m", "champion", legacy)
    assert register(0.4) == ("11", "")
    assert tracker.metric == "val_loss"
    experiment = client.get_experiment_by_name("e")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
