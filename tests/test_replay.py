"""A finished search's record put to use: a replayed trial reproduces it bit for bit on CPU (a changed record
is caught), and a warm start tries its best configs first."""

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from results.replay import replay
from search_spaces.exceptions import ReplayRefused
from tests.conftest import ROOT
from tests.test_end_to_end import search_args
from tuner.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searched(tmp_path_factory, cifar_dir, ray_local):
    tmp = tmp_path_factory.mktemp("replay")
    argv = search_args(tmp, cifar_dir, "replayed", "--smoke-test", "--num-samples", "3", "--max-epochs", "3",
                       "--grace-period", "1", "--reduction-factor", "2", "--cpus-per-trial", "1")  # fmt: skip
    assert main(argv) == 0
    return tmp / "runs" / "replayed"


def _copy(folder, tmp_path):
    """The search's folder copied, its results.csv pointing at the copied trial folders (to change them safely)."""
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    frame = pd.read_csv(copy / "results.csv")
    frame["path"] = [str(copy / p.split("/")[-1]) for p in frame["path"]]
    frame.to_csv(copy / "results.csv", index=False)
    return copy


def test_every_trial_replays_bit_for_bit(searched):
    frame = pd.read_csv(searched / "results.csv")
    assert (searched / "provenance.json").exists()
    for trial_id, epochs in zip(frame["trial_id"], frame["epochs"], strict=True):
        found = replay(str(searched), trial_id=trial_id)
        assert found.reproduced and found.tolerance == 0.0, found.describe()
        assert found.epochs == list(range(1, epochs + 1))  # ASHA's stopped trials too, as far as they went
        assert found.recorded["val_acc"] == found.replayed["val_acc"]
        assert found.recorded["train_loss"] == found.replayed["train_loss"]


def test_the_command_replays_the_best_trial(searched):
    done = subprocess.run([sys.executable, "-m", "results", "replay", str(searched)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    best = json.loads((searched / "best_config.json").read_text())["trial_id"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"trial {best}" in done.stdout and "reproduced (bit for bit" in done.stdout


def test_a_record_that_the_training_does_not_give_is_not_reproduced(searched, tmp_path):
    copy = _copy(searched, tmp_path)
    trial = pd.read_csv(copy / "results.csv").iloc[0]
    progress = copy / trial["path"].split("/")[-1] / "progress.csv"
    history = pd.read_csv(progress)
    history.loc[0, "val_acc"] += 0.001  # one epoch's recorded score, off by a tenth of a percent
    history.to_csv(progress, index=False)
    found = replay(str(copy), trial_id=trial["trial_id"])
    assert not found.reproduced and found.max_difference == pytest.approx(0.001, abs=1e-9)
    done = subprocess.run([sys.executable, "-m", "results", "replay", str(copy), "--trial", trial["trial_id"]],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 1 and "NOT reproduced" in done.stdout


def test_other_data_is_refused(searched, tmp_path, cifar_dir):
    copy = _copy(searched, tmp_path)
    other = tmp_path / "other-data"
    shutil.copytree(cifar_dir, other)
    batch = other / "cifar-10-batches-py" / "data_batch_1"
    import pickle

    import numpy as np

    content = pickle.loads(batch.read_bytes(), encoding="bytes")
    key = b"data" if b"data" in content else "data"
    content[key] = np.array(content[key], copy=True)
    content[key][0, 0] ^= 1  # one pixel of one image
    batch.write_bytes(pickle.dumps(content))
    settings = json.loads((copy / "search.json").read_text())
    settings["data_dir"] = str(other)
    (copy / "search.json").write_text(json.dumps(settings))
    with pytest.raises(ReplayRefused, match="data in .* differs from what the search trained on"):
        replay(str(copy))


def test_other_code_and_exploited_trials_are_refused(searched, tmp_path):
    copy = _copy(searched, tmp_path)
    provenance = json.loads((copy / "provenance.json").read_text())
    (copy / "provenance.json").write_text(json.dumps({**provenance, "code_key": "0" * 64}))
    with pytest.raises(ReplayRefused, match="training code differs .* check that commit out"):
        replay(str(copy))
    (copy / "provenance.json").write_text(json.dumps(provenance))
    trial = str(pd.read_csv(copy / "results.csv").iloc[0]["trial_id"])
    (copy / "pbt.state").write_text(json.dumps({"exploits": [{"trial_id": trial, "from": "x", "epoch": 2}]}))
    with pytest.raises(ReplayRefused, match="continued trial x's checkpoint at epoch 2"):
        replay(str(copy), trial_id=trial)
    done = subprocess.run([sys.executable, "-m", "results", "replay", str(copy), "--trial", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 2 and "no trial nope" in done.stderr


def test_a_warm_started_search_tries_the_old_best_config_first(searched, tmp_path, cifar_dir, capsys):
    old = pd.read_csv(searched / "results.csv").iloc[0]  # the best
    argv = search_args(tmp_path, cifar_dir, "warm", "--smoke-test", "--num-samples", "3", "--max-epochs", "1",
                       "--search", "optuna", "--warm-start", str(searched))  # fmt: skip
    assert main(argv) == 0
    assert f"warm start from {searched}: its best 3 config(s) first, 3 of its trials told to the searcher's model" in \
        capsys.readouterr().out
    new = pd.read_csv(tmp_path / "runs" / "warm" / "results.csv")
    tried = {(row["config/lr"], row["config/momentum"]) for _, row in new.iterrows()}
    assert (old["config/lr"], old["config/momentum"]) in tried
