"""Two searches on one machine: each finds its own Ray instance, and both finish.

Each driver starts its own local Ray with Ray's default CPU count for this
machine (no inflated logical CPUs: a placement group that is never freed
would starve the next trial here, and the search would hang). ASHA stops DDP
trials in both, so Ray Train's cleaner of each stopped trial must find its own
cluster's state API among the two.
"""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import ROOT
from tests.test_end_to_end import search_args

pytestmark = pytest.mark.slow
DDP = ["--workers-per-trial", "2", "--gpus-per-trial", "0", "--cpus-per-trial", "1"]
TIMEOUT_S = 1200  # alone, one such search takes about 2 minutes on 2 cores; two share them


def _start(tmp_path, cifar_dir, name: str) -> subprocess.Popen:
    argv = search_args(tmp_path, cifar_dir, name, *DDP, "--smoke-test", "--num-samples", "4", "--max-epochs", "2")
    with open(tmp_path / f"{name}.log", "w") as log:
        return subprocess.Popen([sys.executable, str(ROOT / "run_tune.py"), *argv], cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def test_two_ddp_searches_at_once_both_finish(tmp_path, cifar_dir):
    drivers = {}
    for name in ("left", "right"):
        drivers[name] = _start(tmp_path, cifar_dir, name)
        time.sleep(5)  # the second starts while the first runs
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for name, driver in drivers.items():
            driver.wait(timeout=max(1.0, deadline - time.monotonic()))
            said = (tmp_path / f"{name}.log").read_text()
            assert driver.returncode == 0, said[-4000:]
            assert "Found multiple active Ray instances" not in said
    finally:
        for driver in drivers.values():
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait()
    frames = [pd.read_csv(tmp_path / "runs" / name / "results.csv") for name in drivers]
    assert all(len(frame) == 4 for frame in frames)
    assert any((frame["status"] == "stopped").any() for frame in frames)  # ASHA stopped DDP trials: their cleanup ran

