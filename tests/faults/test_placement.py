"""A DDP trial whose workers cannot be placed: the search says what holds the resources, and nothing hangs.

A real one-node Ray cluster with 2 CPUs (the machine's count, not an inflated
one); another job holds 1.5 of them in a placement group, as another user's
search on a shared cluster would. A DDP trial asking for 2 workers of 0.9 CPU
each then cannot start: the driver reports the holder while it waits, the trial
fails after ``--worker-start-timeout`` with the reason, and the search stops with
its state saved. Once the holder is gone, ``--resume`` runs the trial to the end.
"""

import json
import subprocess
import sys
import textwrap
import time
import uuid

import pandas as pd
import pytest

from tests.cluster.harness import RayNode, ray_env
from tests.conftest import ROOT
from tests.servers import stop_group
from tests.test_end_to_end import search_args

pytestmark = pytest.mark.slow
TIMEOUT_S = 20  # --worker-start-timeout

HOLDER = textwrap.dedent("""
    import sys, time
    import ray
    from ray.util.placement_group import placement_group
    ray.init(address=sys.argv[1])
    pg = placement_group([{"CPU": 1.5}])
    assert pg.wait(60)
    print(ray.get_runtime_context().get_job_id(), flush=True)
    time.sleep(3600)
""")


@pytest.fixture
def head(tmp_path):
    node = RayNode(name="head", cpus=2, token=uuid.uuid4().hex * 2, log_dir=tmp_path).start()
    try:
        yield node
    finally:
        node.stop()


def _table(node: RayNode) -> dict:
    script = "import sys, json, ray; ray.init(address=sys.argv[1]); print(json.dumps(ray.util.placement_group_table()))"
    done = subprocess.run([sys.executable, "-c", script, node.address], env=ray_env(node.token), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_unplaceable_workers_are_reported_and_the_trial_fails_with_the_reason(tmp_path, head, cifar_dir):
    env = ray_env(head.token)
    holder = None
    for _ in range(60):  # the head takes a few seconds to accept drivers
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, head.address], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, start_new_session=True)  # fmt: skip
        job = holder.stdout.readline().strip()
        if job:
            break
        stop_group(holder)
        time.sleep(2)
    assert job, "the holder could not take its placement group"
    try:
        argv = search_args(tmp_path, cifar_dir, "starved", "--workers-per-trial", "2", "--cpus-per-trial", "1.8",
                           "--gpus-per-trial", "0", "--smoke-test", "--num-samples", "1", "--max-failures", "0",
                           "--worker-start-timeout", str(TIMEOUT_S))  # fmt: skip
        started = time.monotonic()
        done = subprocess.run([sys.executable, str(ROOT / "run_tune.py"), *argv], cwd=tmp_path,
                              env={**env, "RAY_ADDRESS": head.address}, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        took = time.monotonic() - started
        said = done.stdout + done.stderr
        # Reported while waiting (at half the timeout), naming the other job and what it holds.
        assert "waiting for resources" in said, said[-4000:]
        assert f"job {job}: 1 placement group(s) holding CPU 1.5" in said, said[-4000:]
        assert "free now: CPU 0.49 of 2" in said, said[-4000:]  # 0.01: the trial's coordinator
        # The trial failed with the reason and the search stopped, resumable, instead of finishing.
        assert "search 'starved' stopped: trial " in said, said[-4000:]
        assert f"could not be placed within --worker-start-timeout {TIMEOUT_S} s" in said, said[-4000:]
        assert "--name starved" in said and "--resume" in said
        assert done.returncode == 1, said[-4000:]
        assert took < 240, f"the search took {took:.0f} s"
        assert not (tmp_path / "runs" / "starved" / "results.csv").exists()
        # Nothing of the search is left holding resources: only the holder's group is still there.
        left = [pg for pg in _table(head).values() if pg["state"] != "REMOVED"]
        assert [pg["placement_group_id"][-8:] for pg in left] == [job], left
    finally:
        stop_group(holder)
    # The holder is gone: the same search resumed runs the failed trial to its end.
    resumed = subprocess.run([sys.executable, str(ROOT / "run_tune.py"), "--name", "starved", "--storage-path",
                              str(tmp_path / "runs"), "--resume"], cwd=tmp_path,
                             env={**env, "RAY_ADDRESS": head.address}, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    rows = pd.read_csv(tmp_path / "runs" / "starved" / "results.csv")
    assert len(rows) == 1 and rows["status"].iloc[0] in ("completed", "stopped"), rows
