"""--resume: a search whose driver was killed finishes without losing or duplicating trials."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT
from tests.test_end_to_end import search_args
from tuner.cli import main

pytestmark = pytest.mark.slow
NUM_SAMPLES = 4


def _wait_for_checkpoints(folder, *, count, timeout, pattern="*/checkpoint_*", trials=1):
    """Wait for ``count`` checkpoints, in the folders of ``trials`` trials or more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(folder.glob(pattern))
        if (
            len(found) >= count
            and len({p.parent for p in found}) >= trials
            and list(folder.glob("experiment_state-*.json"))
        ):
            return
        time.sleep(0.5)
    raise AssertionError(f"no {count} checkpoints of {trials} trial(s) in {folder} after {timeout} s")


def kill_after_checkpoints(tmp_path, argv, *, count):
    """Start a search in its own driver process, SIGKILL it once ``count`` checkpoints exist, and resume it here."""
    driver = subprocess.Popen([sys.executable, str(ROOT / "run_tune.py"), *argv], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    folder = tmp_path / "runs" / "killed"
    try:
        _wait_for_checkpoints(folder, count=count, timeout=240)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert not (folder / "results.csv").exists()
    assert main(["--name", "killed", "--storage-path", str(tmp_path / "runs"), "--resume"]) == 0
    return folder


def test_resume_after_the_driver_is_killed(tmp_path, cifar_dir, ray_local):
    argv = search_args(
        tmp_path,
        cifar_dir,
        "killed",
        "--num-samples",
        str(NUM_SAMPLES),
        "--max-epochs",
        "6",
        "--grace-period",
        "6",
        "--max-concurrent",
        "1",
        "--checkpoint-period",
        "0",  # every epoch: the kill comes after the second checkpoint
    )
    folder = kill_after_checkpoints(tmp_path, argv, count=2)

    frame = pd.read_csv(folder / "results.csv")
    assert len(frame) == NUM_SAMPLES and frame["trial_id"].is_unique
    assert (frame["epochs"] == 6).all()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("cifar")
    parents = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'killed'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'"
    )
    assert sorted(c.data.tags["hpsearch.trial_id"] for c in children) == sorted(frame["trial_id"])
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert sorted(set(steps)) == list(range(1, 7))

    # The resumed driver took the dead one's lease over, finished once and registered one version.
    assert not (folder / "driver.lease").exists()
    versions = [v for v in client.search_model_versions("name = 'cifar-best'") if v.tags["search"] == "killed"]
    best = json.loads((folder / "best_config.json").read_text())
    assert len(versions) == 1 and best["model_uri"] == f"models:/cifar-best/{versions[0].version}"
    assert versions[0].tags["trial_id"] == best["trial_id"] == str(frame["trial_id"].iloc[0])

    # Resuming a finished search changes nothing, and registers nothing again.
    assert main(["--name", "killed", "--storage-path", str(tmp_path / "runs"), "--resume"]) == 0
    assert len(client.search_model_versions("name = 'cifar-best'")) == 1
    assert (
        len(
            client.search_runs(
                [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'"
            )
        )
        == 4
    )


def test_a_second_driver_of_a_running_search_is_refused_within_seconds(tmp_path, cifar_dir):
    """A user resubmits a search they think died: the running driver keeps it, the second one says who has it."""
    argv = search_args(tmp_path, cifar_dir, "busy", "--num-samples", "2", "--max-epochs", "30", "--grace-period",
                       "30", "--max-concurrent", "1")  # fmt: skip
    first = subprocess.Popen([sys.executable, str(ROOT / "run_tune.py"), *argv], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    folder = tmp_path / "runs" / "busy"
    try:
        _wait_for_checkpoints(folder, count=1, timeout=240)
        start = time.monotonic()
        second = subprocess.run([sys.executable, str(ROOT / "run_tune.py"), "--name", "busy", "--storage-path",
                                 str(tmp_path / "runs"), "--resume"], cwd=tmp_path, capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        seconds = time.monotonic() - start
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"search 'busy' is running: driver PID {first.pid}" in second.stderr
        assert f"kill -INT {first.pid}" in second.stderr
        assert seconds < 60
        assert first.poll() is None  # the running driver goes on
    finally:
        os.killpg(first.pid, signal.SIGINT)
        try:
            first.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert not (folder / "driver.lease").exists()  # Ctrl-C: stopped, the lease given back, resumable by anyone


def test_ctrl_c_saves_the_search_and_prints_the_resume_command(tmp_path, cifar_dir, ray_local):
    """Ctrl-C: state saved, MLflow runs KILLED, the resume command, and the resume finishes it.

    SIGTERM (``ray job stop``, a container runtime) is turned into the same stop:
    tests/faults/test_stop.py sends it, to a search whose trials are stuck, and resumes that search too.
    """
    stop = signal.SIGINT
    argv = search_args(tmp_path, cifar_dir, "interrupted", "--num-samples", "3", "--max-epochs", "6",
                       "--grace-period", "6", "--max-concurrent", "1", "--checkpoint-period", "0")  # fmt: skip
    driver = subprocess.Popen([sys.executable, str(ROOT / "run_tune.py"), *argv], cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    folder = tmp_path / "runs" / "interrupted"
    try:
        _wait_for_checkpoints(folder, count=2, timeout=240)
        driver.send_signal(stop)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, err
    command = f"python run_tune.py --name interrupted --storage-path {tmp_path / 'runs'} --resume"
    assert command in err
    assert not (folder / "results.csv").exists()
    # The MLflow runs say the search was stopped: the parent and the trial that was running, KILLED.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("cifar").experiment_id])
    statuses = {r.data.tags.get("hpsearch.trial_id", "parent"): r.info.status for r in runs}
    assert statuses["parent"] == "KILLED" and "RUNNING" not in statuses.values(), statuses
    assert "KILLED" in {s for k, s in statuses.items() if k != "parent"}

    assert main(command.split()[2:]) == 0
    frame = pd.read_csv(folder / "results.csv")
    assert len(frame) == 3 and (frame["epochs"] == 6).all()
    runs = client.search_runs([client.get_experiment_by_name("cifar").experiment_id])
    assert len(runs) == 1 + 3 and {r.info.status for r in runs} == {"FINISHED"}  # the resume took them over


def test_a_search_that_crashes_ends_its_mlflow_run_as_failed(tmp_path, cifar_dir, ray_local, monkeypatch):
    import tuner.driver.runner

    def crash(*args, **kwargs):
        raise RuntimeError("the driver crashed after the trials")

    monkeypatch.setattr(tuner.driver.runner, "finish", crash)
    argv = search_args(tmp_path, cifar_dir, "crashed", "--num-samples", "2", "--max-epochs", "1",
                       "--grace-period", "1")  # fmt: skip
    with pytest.raises(RuntimeError, match="the driver crashed"):
        main(argv)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("cifar").experiment_id])
    parent = [r for r in runs if "hpsearch.trial_id" not in r.data.tags]
    assert [r.info.status for r in parent] == ["FAILED"]


def _progress_tables(text):
    """The progress tables in a driver's output: (head line, rows as {column: value}) each."""
    lines, tables = text.splitlines(), []
    for i, line in enumerate(lines):
        if " trials started: " not in line:
            continue
        columns = [(m.group(), m.start()) for m in re.finditer(r"\S+", lines[i + 1])]
        ends = [start for _, start in columns[1:]] + [None]
        rows = []
        for row in lines[i + 2 :]:
            if not row.strip():
                break
            rows.append({name: row[start:end].strip() for (name, start), end in zip(columns, ends, strict=True)})
        tables.append((line, rows))
    return tables


def test_the_table_after_resume_keeps_the_best_and_the_finished_trials(tmp_path, cifar_dir, ray_local, capsys):
    """The resumed driver's table counts the trials and reports that came before the interruption."""
    argv = search_args(tmp_path, cifar_dir, "table", "--num-samples", "3", "--max-epochs", "4",
                       "--grace-period", "4", "--max-concurrent", "1", "--checkpoint-period", "0")  # fmt: skip
    driver = subprocess.Popen([sys.executable, str(ROOT / "run_tune.py"), *argv], cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        # One trial at a time: a second trial's checkpoint means the first one finished.
        _wait_for_checkpoints(tmp_path / "runs" / "table", count=2, trials=2, timeout=240)
        driver.send_signal(signal.SIGINT)
        before, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, err
    best_before = max(float(b) for b in re.findall(r"best val_acc ([\d.]+)", before))

    capsys.readouterr()
    assert main(["--name", "table", "--storage-path", str(tmp_path / "runs"), "--resume"]) == 0
    head, rows = _progress_tables(capsys.readouterr().out)[-1]
    assert float(re.search(r"best val_acc ([\d.]+)", head).group(1)) >= best_before, (head, before)
    assert "ETA" not in head, head
    assert len(rows) == 3 and {r["status"] for r in rows} == {"terminated"}, rows
    assert all(r["epoch"] == "4" and r["val_acc"] != "-" for r in rows), rows
