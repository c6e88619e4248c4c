"""Every scheduler runs a real search end to end, and a search whose driver was killed resumes with its state."""

import json
import pickle

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.faults.test_resume import kill_after_checkpoints
from tests.test_end_to_end import search_args
from tuner import schedulers
from tuner.config.settings import SCHEDULERS

pytestmark = pytest.mark.slow
NUM_SAMPLES = 4


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_a_search_with_each_scheduler_survives_a_killed_driver(tmp_path, cifar_dir, ray_local, scheduler):
    # PBT: exploits at epochs 2, 4 and 6; FIFO trains every trial its whole budget, so a short one
    max_epochs = {"pbt": 8, "fifo": 4}.get(scheduler, 6)
    argv = search_args(tmp_path, cifar_dir, "killed", "--scheduler", scheduler, "--num-samples", str(NUM_SAMPLES),
                       "--max-epochs", str(max_epochs), "--grace-period", "2", "--reduction-factor", "2",
                       "--checkpoint-period", "0", "--cpus-per-trial", "0.5")  # fmt: skip
    folder = kill_after_checkpoints(tmp_path, argv, count=4)

    frame = pd.read_csv(folder / "results.csv")
    assert len(frame) == NUM_SAMPLES and frame["trial_id"].is_unique
    ids = set(frame["trial_id"])
    assert json.loads((folder / "search.json").read_text())["scheduler"] == scheduler
    spec = schedulers.get(scheduler)
    if not spec.early_stops:
        assert (frame["epochs"] == max_epochs).all() and set(frame["status"]) == {"completed"}
    if not spec.state_file:
        assert not list(folder.glob("*.state"))
        return
    state = json.loads((folder / spec.state_file).read_text())
    if scheduler in ("asha", "hyperband"):
        assert set(state["trial_brackets"]) == ids  # each trial's bracket, from before and after the kill
        first_rung = {m: r for m, r in state["brackets"][0]}[2.0]
        assert set(first_rung) <= ids and first_rung
    elif scheduler == "median":
        assert set(state["scores"]) == ids
        assert all(epochs >= 1 for epochs in frame["epochs"])
    else:  # pbt
        assert set(state["trials"]) == ids
        assert state["exploits"], "PBT exploited no trial in 3 rounds of 4 trials"
        _check_exploits_in_mlflow(tmp_path, state["exploits"])


def _check_exploits_in_mlflow(tmp_path, exploits):
    """Each exploit is a tag of the exploiting trial's run: from which trial, at which epoch, the new values."""
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("cifar")
    runs = {r.data.tags["hpsearch.trial_id"]: r for r in client.search_runs([experiment.experiment_id])
            if "hpsearch.trial_id" in r.data.tags}  # fmt: skip
    for exploit in exploits:
        tags = runs[exploit["trial_id"]].data.tags
        said = [v for k, v in tags.items() if k.startswith("hpsearch.exploit.")]
        lr = exploit["donor"]["lr"], exploit["after"]["lr"]
        change = f"lr {lr[0]:.4g} -> {lr[1]:.4g}" if lr[0] != lr[1] else ""
        assert any(s.startswith(f"from trial {exploit['from']} at epoch {exploit['epoch']}:") and change in s
                   for s in said), (exploit, said)  # fmt: skip


def test_a_bohb_search_survives_a_killed_driver(tmp_path, cifar_dir, ray_local):
    """--search bohb: ASHA's state and the searcher's observations (Tune's searcher checkpoint) both survive."""
    samples = 8  # the model fits once 5 configs (4 searched parameters, plus one) have a score at a rung
    argv = search_args(tmp_path, cifar_dir, "killed", "--search", "bohb", "--num-samples", str(samples),
                       "--max-epochs", "4", "--grace-period", "1", "--reduction-factor", "2",
                       "--checkpoint-period", "0", "--cpus-per-trial", "0.5")  # fmt: skip
    folder = kill_after_checkpoints(tmp_path, argv, count=4)

    frame = pd.read_csv(folder / "results.csv")
    assert len(frame) == samples and frame["trial_id"].is_unique
    assert json.loads((folder / "search.json").read_text())["search"] == "bohb"
    ids = set(frame["trial_id"])
    # The newest session's file by its name (a timestamp), as Tune's restore_from_dir picks it. Not by mtime: each
    # sync copies the whole staging folder, the killed session's file too, in no set order.
    saved = max(folder.glob("searcher-state-*.pkl"))
    observations = pickle.loads(saved.read_bytes())["observations"]
    assert ids <= set(observations)  # trials from before the kill and after it
    assert all(observations[t]["scores"].get(1) is not None for t in ids)  # every trial was judged at epoch 1
    # A trial the killed driver had begun after Tune's last experiment checkpoint is not restored, but its
    # bracket may be in the state file: the resumed search starts another in its place.
    assert ids <= set(json.loads((folder / "asha.state").read_text())["trial_brackets"])
