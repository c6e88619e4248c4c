"""Stopping always stops: SIGTERM reaches a search whose trials are stuck, and the driver is gone within a bound.

The task here sleeps in ``train`` (a trial stuck in its first epoch) until
``SLEEPER_WAKE`` is set, when it trains two quick epochs: the stopped search is
then resumed and finishes.
"""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import ROOT
from tuner.processes import descendants, process_table

pytestmark = pytest.mark.slow
BOUND_S = 30  # tuner.driver.stopping.STOP_BOUND_S

SLEEPER = '''
import os, time
import numpy as np
import torch
from trainables.task import TaskData


class Sleeper:
    def load(self, *, data_dir, smoke, constants):
        x = np.zeros((4, 2), np.float32)
        return TaskData({"x": x}, {"x": x}, "4 rows", x[:2])

    def metrics(self, constants):
        return {"val_loss": "min"}

    def train(self, config, data, context):
        if not os.environ.get("SLEEPER_WAKE"):
            with open(os.environ["SLEEPER_MARK"], "a") as mark:  # the test waits for this
                mark.write("asleep\\n")
            time.sleep(3600)
        model = torch.nn.Linear(2, 1)
        for epoch in range(1, int(config["epochs"]) + 1):
            score = float(config["lr"]) / epoch
            context.report({"epoch": epoch, "val_loss": score}, lambda: {"model": model.state_dict()})

    def evaluate(self, state, held_out, *, device):
        return {"test_loss": 0.0}

    def build_model(self, state):
        model = torch.nn.Linear(2, 1)
        model.load_state_dict(state["model"])
        return model.eval()


TASK = Sleeper()
'''

SPACE = """
name: sleeper
description: a task stuck in its first epoch
task: sleeper:TASK
metric: val_loss
params:
  lr: {kind: loguniform, low: 0.001, high: 0.1, description: unused but searched}
budget: {num_samples: 2, max_epochs: 2, grace_period: 1, reduction_factor: 2}
smoke:
  budget: {num_samples: 2, max_epochs: 2, grace_period: 1, reduction_factor: 2}
"""


def _argv(tmp_path, *extra):
    return [sys.executable, str(ROOT / "run_tune.py"), "--space", "space.yaml", "--data-dir", ".", "--storage-path",
            str(tmp_path / "runs"), "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db", "--name", "stuck", *extra]


def _asleep(tmp_path, driver, *, timeout=240) -> set[int]:
    """Wait until a trial sleeps in train; every process the driver started by then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        # Asleep, and Tune has saved its state once (what a driver forced down resumes from).
        if (tmp_path / "asleep").exists() and list((tmp_path / "runs" / "stuck").glob("experiment_state-*.json")):
            return descendants(driver.pid, table=process_table())
        time.sleep(1)
    raise AssertionError(f"no trial asleep after {timeout} s:\n" + (tmp_path / "driver.log").read_text()[-3000:])


def _start(tmp_path, *extra, env=None) -> subprocess.Popen:
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    (tmp_path / "space.yaml").write_text(SPACE)
    env = {**os.environ, "SLEEPER_MARK": str(tmp_path / "asleep"), **(env or {})}
    with open(tmp_path / "driver.log", "w") as log:
        return subprocess.Popen(_argv(tmp_path, *extra), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)  # fmt: skip


def _stop(driver, below, *, within):
    start = time.monotonic()
    driver.send_signal(signal.SIGTERM)
    try:
        driver.wait(timeout=within)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        raise AssertionError(f"the driver did not stop within {within} s of SIGTERM") from None
    seconds = time.monotonic() - start
    table = process_table()
    left = [pid for pid in below if pid in table and table[pid].state not in "ZX"]
    return seconds, left


@pytest.mark.parametrize("bound", [None, "1"], ids=["tune-stops-it", "forced-down"])
def test_sigterm_stops_a_search_with_stuck_trials_within_the_bound_and_it_resumes(tmp_path, bound):
    env = {"HPSEARCH_STOP_BOUND_S": bound} if bound else {}
    driver = _start(tmp_path, env=env)
    below = _asleep(tmp_path, driver)
    time.sleep(2)
    seconds, left = _stop(driver, below, within=BOUND_S + 30)
    said = (tmp_path / "driver.log").read_text()
    assert driver.returncode == 130, said[-3000:]
    assert seconds <= BOUND_S + 15, seconds
    assert "--name stuck" in said and "--resume" in said  # the command that resumes it
    if bound:
        assert "did not stop within 1 s of the stop signal" in said
    assert left == [], f"processes the driver started are still alive: {left}"
    assert not (tmp_path / "runs" / "stuck" / "results.csv").exists(), "a stopped search is not a finished one"
    assert not (tmp_path / "runs" / "stuck" / "driver.lease").exists() or bound  # forced: a dead driver's lease

    # Resumable: the trials wake up and the search finishes.
    resumed = subprocess.run([sys.executable, str(ROOT / "run_tune.py"), "--name", "stuck", "--storage-path",
                              str(tmp_path / "runs"), "--resume"], cwd=tmp_path, capture_output=True, text=True,
                             env={**os.environ, "SLEEPER_WAKE": "1"}, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    frame = pd.read_csv(tmp_path / "runs" / "stuck" / "results.csv")
    assert len(frame) == 2 and set(frame["status"]) <= {"completed", "stopped"}  # ASHA may stop the worse one
    assert (frame["status"] == "completed").any()
