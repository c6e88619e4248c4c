"""The search on a real two-node Ray cluster, submitted with `ray job submit`, tracked by MLflow on PostgreSQL.

One cluster for the module (`harness.Cluster`): a head and a worker node on this
machine, each with its own temp dir and 3 logical CPUs, token auth on; an MLflow
server backed by PostgreSQL; a folder both nodes see as shared storage. The
submissions are the README's command, with this cluster's addresses.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from mlflow.tracking import MlflowClient

from tests.cluster import harness

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, cifar_dir):
    if harness.postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed: apt-get install postgresql (.ci/run does)")
    pytest.importorskip("psycopg", reason="psycopg is missing: pip install -e '.[dev]'")
    cluster = harness.Cluster(tmp_path_factory.mktemp("cluster"), data=cifar_dir)
    try:
        try:
            cluster.start()
        except RuntimeError as e:
            pytest.skip(f"the cluster could not start here: {e}")
        yield cluster
    finally:
        cluster.stop()
    for node in (cluster.head, cluster.worker):
        assert node.pids() == [], f"{node.name} left processes behind"


def _search(cluster, name: str, *extra: str) -> list[str]:
    return ["--space", "cifar", "--data-dir", str(cluster.data), "--smoke-test", "--name", name,
            "--storage-path", str(cluster.shared / "runs"), "--mlflow-uri", cluster.mlflow.uri,
            "--checkpoint-period", "0", *extra]  # fmt: skip


def _histories(folder: Path) -> dict[str, pd.DataFrame]:
    """Each trial's progress.csv (every epoch it reported), by trial id."""
    found = {}
    for path in folder.glob("*/progress.csv"):
        frame = pd.read_csv(path)
        if len(frame):
            found[str(frame["trial_id"].iloc[0])] = frame
    return found


def _runs(cluster, search: str):
    client = MlflowClient(tracking_uri=cluster.mlflow.uri)
    experiment = client.get_experiment_by_name("cifar")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`hpsearch.search` = '{search}'")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def _wait_for(condition, *, process: subprocess.Popen, timeout: float = 300, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the job ended before {what}:\n{process.output()[-5000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(1)


def _is_driver(argv: list[str], name: str) -> bool:
    """``python run_tune.py ... --name NAME``, not the job submission that names it, nor a shell running it."""
    return len(argv) > 1 and Path(argv[0]).name.startswith("python") and argv[1] == "run_tune.py" and name in argv


@pytest.fixture(scope="module")
def nodes(cluster):
    return {node["node_id"] for node in cluster.alive_nodes()}


def test_a_submitted_search_runs_on_both_nodes_and_tracks_to_postgres(cluster, nodes):
    # 2 CPUs per trial, 3 per node: one trial per node at a time, so both nodes train.
    argv = _search(cluster, "smoke", "--num-samples", "4", "--max-epochs", "2", "--grace-period", "1",
                   "--reduction-factor", "2", "--cpus-per-trial", "2")  # fmt: skip
    done = cluster.submit(*argv, name="smoke")
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "Job 'smoke' succeeded" in out, out[-5000:]
    folder = cluster.shared / "runs" / "smoke"
    frame = pd.read_csv(folder / "results.csv")
    assert len(frame) == 4 and set(frame["status"]) <= {"completed", "stopped"}
    histories = _histories(folder)
    assert {n for h in histories.values() for n in h["node_id"]} == nodes  # trials trained on both nodes
    kept = [p for p in folder.glob("*/checkpoint_*") if (p / "checkpoint.pt").exists()]
    assert kept, "checkpoints are on the shared storage"

    client, parents, children = _runs(cluster, "smoke")
    assert [p.info.status for p in parents] == ["FINISHED"] and len(children) == 4
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["hpsearch.outcome"] for c in children} <= {"completed", "stopped"}
    assert client.search_model_versions("name = 'cifar-best'")
    # The runs are PostgreSQL's rows, not a file's.
    assert cluster.postgres.query("SELECT count(*) FROM runs")[0][0] >= 5
    # The output is the search's own: MLflow's lines stay in the search's tracking.log.
    assert "View run" not in out and "Successfully registered" not in out
    assert "Successfully registered" in (folder / "tracking.log").read_text()
    assert f"MLflow: {cluster.mlflow.uri}/#/experiments/" in out and "make mlflow-ui" not in out


def test_a_ddp_trial_places_its_workers_on_both_nodes(cluster, nodes):
    # 2 workers of 2 CPUs each, 3 CPUs per node: the workers cannot share a node.
    argv = _search(cluster, "ddp", "--num-samples", "1", "--max-epochs", "1", "--grace-period", "1",
                   "--workers-per-trial", "2", "--cpus-per-trial", "4")  # fmt: skip
    done = cluster.submit(*argv, name="ddp")
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    (history,) = _histories(cluster.shared / "runs" / "ddp").values()
    assert history["nodes"].tolist() == [2]
    _, parents, children = _runs(cluster, "ddp")
    assert len(parents) == 1 and len(children) == 1


def test_a_node_that_dies_mid_search_loses_no_trial(cluster, nodes):
    worker_node = next(n["node_id"] for n in cluster.alive_nodes() if not n["is_head_node"])
    argv = _search(cluster, "node-death", "--num-samples", "3", "--max-epochs", "4", "--grace-period", "4",
                   "--cpus-per-trial", "2")  # fmt: skip
    job = cluster.submit_async(*argv, name="node-death")
    folder = cluster.shared / "runs" / "node-death"

    def worker_trained() -> bool:
        return any((h["node_id"] == worker_node).any() for h in _histories(folder).values())

    _wait_for(worker_trained, process=job, what="epoch on the worker node")
    psutil.Process(cluster.worker.raylet_pid()).kill()  # the node dies: its raylet first, then the rest goes
    job.wait(timeout=900)
    out = job.output()
    assert job.returncode == 0 and "Job 'node-death' succeeded" in out, out[-5000:]

    frame = pd.read_csv(folder / "results.csv")
    assert len(frame) == 3 and set(frame["status"]) == {"completed"} and set(frame["epochs"]) == {4}
    moved = [h for h in _histories(folder).values() if (h["node_id"] == worker_node).any()]
    assert moved, "a trial had trained on the dead node"
    for h in moved:
        # Retried on the head from its last checkpoint: no epoch trained twice, every epoch there.
        assert sorted(h["epoch"]) == [1, 2, 3, 4] and h["node_id"].iloc[-1] != worker_node
    _, parents, children = _runs(cluster, "node-death")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert len(children) == 3 and {c.info.status for c in children} == {"FINISHED"}


def test_a_killed_driver_is_resumed_by_a_new_submission(cluster):
    argv = _search(cluster, "resumed", "--num-samples", "2", "--max-epochs", "4", "--grace-period", "4",
                   "--cpus-per-trial", "1")  # fmt: skip
    job = cluster.submit_async(*argv, name="resumed-1")
    folder = cluster.shared / "runs" / "resumed"
    _wait_for(lambda: sum(len(h) for h in _histories(folder).values()) >= 2, process=job, what="two epochs")
    (driver,) = [p for p in psutil.process_iter(["cmdline"]) if _is_driver(p.info["cmdline"] or [], "resumed")]
    driver.kill()
    job.wait(timeout=300)
    assert job.returncode != 0

    done = cluster.submit("--name", "resumed", "--storage-path", str(cluster.shared / "runs"), "--resume",
                          name="resumed-2")  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    frame = pd.read_csv(folder / "results.csv")
    assert len(frame) == 2 and set(frame["epochs"]) == {4}
    _, parents, children = _runs(cluster, "resumed")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
