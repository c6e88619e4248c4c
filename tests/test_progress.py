import io
import math
from types import SimpleNamespace

from results.cost import asha_epochs
from tuner.driver.progress import ProgressTable, first_epoch_estimate


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
    # No column for a score no trial reports (img/s here).
    assert lines[1].split() == ["trial", "status", "lr", "epoch", "val_acc", "val_loss"]
    assert lines[3].split() == ["b", "terminated", "0.2", "2", "0.75", "0.5"]


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
    assert lines[1].split() == ["trial", "status", "lr", "epoch", "rmse", "val_loss"]


def test_asha_expected_epochs():
    from results.cost import asha_epochs

    assert asha_epochs(4, 1, 2) == 1 + 0.5 * 1 + 0.25 * 2  # rungs at 1 and 2, then the top quarter to 4
    assert asha_epochs(10, 3, 3) == 3 + (9 - 3) / 3 + (10 - 9) / 9
    assert asha_epochs(5, 5, 2) == 5


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_elapsed_gpu_seconds_and_eta_and_redrawing_on_a_terminal(monkeypatch):
    import tuner.driver.progress as progress

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
    redrawn = out.getvalue()[len(first) :]
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


def _restored_trial(tid, status, lr, *reports):
    """A Tune Trial as --resume brings it back: its reports live on in its last_result and metric_analysis."""
    from ray.tune.experiment import Trial

    trial = Trial("__fake", config={"lr": lr, "seed": 0}, trial_id=tid, stub=True)
    for i, report in enumerate(reports, start=1):
        trial.update_last_result({"training_iteration": i, **report})
    trial.set_status(status)
    return trial


def _resumed(table):
    """The table as Tune brings it back on --resume: unpickled, then given the state saved with the search."""
    import pickle

    state = table.get_state()
    restored = pickle.loads(pickle.dumps(table))
    restored.set_state(state)
    return restored


def test_after_resume_the_best_counts_every_report_and_finished_trials_show_their_values():
    out = io.StringIO()
    table = ProgressTable(params=["lr"], metric="val_acc", total=3, interval=0, out=out)
    reports = {
        "a": [{"epoch": 1, "val_acc": 0.8}, {"epoch": 2, "val_acc": 0.6}],  # its best is not its last
        "b": [{"epoch": 1, "val_acc": 0.9}, {"epoch": 2, "val_acc": math.nan, "diverged": 1}],
        "c": [{"epoch": 1, "val_acc": 0.7}],
    }
    trials = [_restored_trial(tid, "TERMINATED", 0.1) for tid in ("a", "b")] + [_restored_trial("c", "RUNNING", 0.3)]
    for trial in trials:
        for i, report in enumerate(reports[trial.trial_id], start=1):
            table.on_trial_result(0, trials, trial, report)
            trial.update_last_result({"training_iteration": i, **report})  # what Tune does after the callbacks
    table.on_step_end(0, trials)
    assert "best val_acc 0.9000 (b)" in out.getvalue().splitlines()[0]

    out = io.StringIO()
    resumed = _resumed(table)
    resumed.out = out
    resumed.on_step_end(1, trials)
    lines = out.getvalue().splitlines()
    assert "best val_acc 0.9000 (b)" in lines[0]  # b's NaN made Tune's own max NaN: the saved state keeps 0.9
    assert lines[2].split() == ["a", "terminated", "0.1", "2", "0.6"]
    assert lines[3].split() == ["b", "terminated", "0.1", "2", "nan"]


def test_after_resume_a_finished_trials_best_report_counts_for_either_mode():
    for mode, scores, best in (("max", (0.8, 0.6), "0.8000"), ("min", (0.3, 0.5), "0.3000")):
        out = io.StringIO()
        table = ProgressTable(params=["lr"], metric="val_loss", mode=mode, total=1, interval=0, out=out)
        trial = _restored_trial("a", "TERMINATED", 0.1, *({"epoch": i, "val_loss": s} for i, s in enumerate(scores)))
        table.on_step_end(0, [trial])  # the state saved with the search was lost: Tune's max and min remain
        assert f"best val_loss {best} (a)" in out.getvalue().splitlines()[0], mode


def test_a_table_unpickled_with_stale_results_shows_the_trials_own():
    import pickle

    table = ProgressTable(params=["lr"], metric="val_acc", total=1, interval=0, out=io.StringIO())
    trial = _restored_trial("a", "RUNNING", 0.1, {"epoch": 1, "val_acc": 0.5})
    table.on_trial_result(0, [trial], trial, {"epoch": 1, "val_acc": 0.5})
    stale = pickle.loads(pickle.dumps(table))
    trial.update_last_result({"training_iteration": 2, "epoch": 2, "val_acc": 0.6})
    stale.out = out = io.StringIO()
    stale.on_step_end(0, [trial])
    assert out.getvalue().splitlines()[2].split() == ["a", "running", "0.1", "2", "0.6"]


def test_the_eta_after_resume_uses_this_drivers_pace_and_all_epochs_done(monkeypatch):
    import tuner.driver.progress as progress

    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    table = ProgressTable(params=["lr"], metric="val_acc", total=2, interval=0, out=out, max_epochs=4)
    done = _restored_trial("a", "TERMINATED", 0.1, *({"epoch": i, "val_acc": 0.5} for i in range(1, 5)))
    running = _restored_trial("b", "RUNNING", 0.2, {"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.5})
    trials = [done, running]
    table.on_step_begin(0, trials)
    now[0] = 160.0
    table.on_step_end(0, trials)
    assert "ETA" not in out.getvalue()  # nothing reported since this driver started
    table.on_trial_result(1, trials, running, {"epoch": 3, "val_acc": 0.6})
    table.on_step_end(1, trials)  # 1 epoch in 60 s; 8 expected, 7 done -> 60 s to go
    assert out.getvalue().splitlines()[-5].endswith("| ETA ~1m00s")


def test_a_finished_search_shows_no_eta():
    out = io.StringIO()
    # ASHA expected 4 epochs of each trial but stopped both early: the search is over all the same.
    table = ProgressTable(params=["lr"], metric="val_acc", total=2, interval=0, out=out, max_epochs=4)
    trials = [_trial("a", "TERMINATED", 0.1), _trial("b", "ERROR", 0.2)]
    table.on_step_begin(0, trials)
    table.on_trial_result(0, trials, trials[0], {"epoch": 1, "val_acc": 0.5, "time_total_s": 1.0})
    table.on_experiment_end(trials)
    assert "elapsed" in out.getvalue() and "ETA" not in out.getvalue()


def test_a_tie_names_the_smaller_trial_id():
    for mode in ("max", "min"):
        out = io.StringIO()
        table = ProgressTable(params=["lr"], metric="val_acc", mode=mode, total=2, interval=0, out=out)
        trials = [_trial("b", "RUNNING", 0.1), _trial("a", "RUNNING", 0.2)]
        for trial in trials:
            table.on_trial_result(0, trials, trial, {"epoch": 1, "val_acc": 0.7})
        table.on_step_end(0, trials)
        assert "best val_acc 0.7000 (a)" in out.getvalue().splitlines()[0], mode


def test_inactive_parameters_show_as_inactive_not_their_sampled_value():
    out = io.StringIO()
    conditions = {"momentum": {"optimizer": ("sgd",)}}
    table = ProgressTable(params=["optimizer", "momentum"], metric="val_acc", total=2, interval=0, out=out,
                          conditions=conditions)  # fmt: skip
    trials = [
        SimpleNamespace(trial_id="a", status="RUNNING", config={"optimizer": "adamw", "momentum": 0.95}),
        SimpleNamespace(trial_id="b", status="RUNNING", config={"optimizer": "sgd", "momentum": 0.9}),
    ]
    table.on_step_end(0, trials)
    lines = out.getvalue().splitlines()
    assert lines[2].split()[:4] == ["a", "running", "adamw", "inactive"] and "0.95" not in out.getvalue()
    assert lines[3].split()[:4] == ["b", "running", "sgd", "0.9"]


def test_the_first_epoch_estimate_text():
    assert first_epoch_estimate(epoch_s=130.0, trial_epochs=48, concurrency=3) == (
        "first epoch: 2m10s on CPU; with 3 trial(s) at once the search's ~48 trial-epochs take about 34m40s here. "
        "A quick try: --smoke-test (the space's smoke budget); the real search: a GPU."
    )
    # A search of minutes needs no advice.
    assert first_epoch_estimate(epoch_s=3.0, trial_epochs=4, concurrency=2) == (
        "first epoch: 3s on CPU; with 2 trial(s) at once the search's ~4 trial-epochs take about 6s here."
    )


def test_the_first_epoch_on_a_cpu_is_said_once():
    for cpu_estimate in (True, False):
        out = io.StringIO()
        table = ProgressTable(params=["lr"], metric="val_acc", total=8, interval=0, out=out, max_epochs=6,
                              cpu_estimate=cpu_estimate, concurrency=2)  # fmt: skip
        trials = [_trial("a", "RUNNING", 0.1), _trial("b", "RUNNING", 0.2)]
        for trial in trials:
            table.on_trial_result(0, trials, trial, {"epoch": 1, "val_acc": 0.5, "time_this_iter_s": 60.0})
        table.on_trial_result(1, trials, trials[0], {"epoch": 2, "val_acc": 0.5, "time_this_iter_s": 60.0})
        expected = "first epoch: 1m00s on CPU; with 2 trial(s) at once the search's ~48 trial-epochs take about 24m00s"
        assert out.getvalue().count(expected) == (1 if cpu_estimate else 0)


def test_rows_keep_the_trial_id_order_whatever_order_tune_lists_them_in():
    out = io.StringIO()
    table = ProgressTable(params=["lr"], metric="val_acc", total=3, interval=0, out=out)
    trials = [_trial("c", "RUNNING", 0.3), _trial("a", "TERMINATED", 0.1), _trial("b", "PENDING", 0.2)]
    table.print_table(trials)  # a resumed Tune lists restored trials last-first
    assert [line.split()[0] for line in out.getvalue().splitlines()[2:5]] == ["a", "b", "c"]
