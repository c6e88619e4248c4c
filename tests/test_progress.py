import io
from types import SimpleNamespace

from results.cost import asha_epochs
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


def test_asha_expected_epochs():
    from results.cost import asha_epochs

    assert asha_epochs(4, 1, 2) == 1 + 0.5 * 1 + 0.25 * 2  # rungs at 1 and 2, then the top quarter to 4
    assert asha_epochs(10, 3, 3) == 3 + (9 - 3) / 3 + (10 - 9) / 9
    assert asha_epochs(5, 5, 2) == 5


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_elapsed_gpu_seconds_and_eta_and_redrawing_on_a_terminal(monkeypatch):
    import tuner.progress as progress

    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    out = _Terminal()
    # 2 trials, 4 epochs, grace 1, rf 2: ASHA expects 2 epochs each (1 + 1/2 x 1 + 1/4 x 2), 4 in all.
    table = ProgressTable(params=["lr"], metric="val_acc", total=2, interval=0, out=out, max_epochs=4,
                          epochs_per_trial=asha_epochs(4, 1, 2), gpus_per_trial=0.5)  # fmt: skip
    trials = [_trial("a", "RUNNING", 0.1), _trial("b", "RUNNING", 0.2)]
    table.on_step_begin(0, trials)
    table.on_trial_result(0, trials, trials[0], {"epoch": 1, "val_acc": 0.5, "time_total_s": 30.0})
    now[0] = 160.0
    table.on_step_end(0, trials)  # 60 s in: 1 of 4 epochs done -> 180 s to go
    first = out.getvalue()
    assert "1m00s elapsed, 30 trial-s (15 GPU-s) | ETA ~3m00s" in first and "\x1b[" not in first
    table.on_trial_result(1, trials, trials[1], {"epoch": 1, "val_acc": 0.6, "time_total_s": 40.0})
    table.on_step_end(1, trials)
    redrawn = out.getvalue()[len(first):]
    assert redrawn.startswith(f"\x1b[{first.count(chr(10))}F\x1b[J")  # up over the last table, then clear
    assert "70 trial-s (35 GPU-s)" in redrawn


def test_a_log_file_gets_tables_appended():
    out = io.StringIO()  # not a terminal
    table = ProgressTable(params=["lr"], metric="val_acc", total=1, interval=0, out=out, max_epochs=2)
    trials = [_trial("a", "RUNNING", 0.1)]
    table.on_step_begin(0, trials)
    table.on_step_end(0, trials)
    table.on_trial_result(1, trials, trials[0], {"epoch": 1, "val_acc": 0.5, "time_total_s": 1.0})
    table.on_step_end(1, trials)
    assert "\x1b[" not in out.getvalue() and out.getvalue().count("trials started") == 2
