import io
from types import SimpleNamespace

from tuner.progress import ProgressTable


def _trial(tid, status, lr):
    return SimpleNamespace(trial_id=tid, status=status, config={"lr": lr, "seed": 0})


def test_table_shows_params_metrics_and_best():
    out = io.StringIO()
    table = ProgressTable(params=["lr"], metric="val_acc", total=5, interval=0, out=out)
    trials = [_trial("a", "RUNNING", 0.1), _trial("b", "TERMINATED", 0.2)]
    table.on_trial_result(0, trials, trials[1], {"epoch": 2, "val_acc": 0.75, "val_loss": 0.5})
    table.on_step_end(0, trials)
    text = out.getvalue()
    lines = text.splitlines()
    assert "2 of 5 trials started: 1 running, 1 terminated" in lines[0] and "best val_acc 0.7500 (b)" in lines[0]
    assert lines[1].split() == ["trial", "status", "lr", "epoch", "val_acc", "val_loss", "img/s"]
    assert lines[3].split() == ["b", "terminated", "0.2", "2", "0.75", "0.5", "-"]


def test_table_is_printed_only_when_something_changed():
    out = io.StringIO()
    table = ProgressTable(params=["lr"], metric="val_acc", total=1, interval=0, out=out)
    trials = [_trial("a", "RUNNING", 0.1)]
    table.on_step_end(0, trials)
    table.on_step_end(1, trials)
    assert out.getvalue().count("trials started") == 1
    table.on_trial_result(2, trials, trials[0], {"epoch": 1, "val_acc": 0.5})
    table.on_step_end(2, trials)
    assert out.getvalue().count("trials started") == 2


def test_a_metric_to_minimise_is_shown_first_and_its_lowest_is_best():
    out = io.StringIO()
    table = ProgressTable(params=["lr"], metric="rmse", mode="min", total=2, interval=0, out=out)
    trials = [_trial("a", "RUNNING", 0.1), _trial("b", "RUNNING", 0.2)]
    table.on_trial_result(0, trials, trials[0], {"epoch": 1, "rmse": 0.9})
    table.on_trial_result(0, trials, trials[1], {"epoch": 1, "rmse": 0.4, "val_loss": 0.2})
    table.on_step_end(0, trials)
    lines = out.getvalue().splitlines()
    assert "best rmse 0.4000 (b)" in lines[0]
    assert lines[1].split() == ["trial", "status", "lr", "epoch", "rmse", "val_acc", "val_loss", "img/s"]
