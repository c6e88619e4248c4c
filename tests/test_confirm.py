"""--confirm K: the top K configs retrained over more seeds; the best by mean is registered; the leaderboard says."""

import json

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import tuner
from tests.test_end_to_end import search_kwargs
from tuner.driver.confirm import CONFIRM_SEEDS

pytestmark = pytest.mark.slow


def test_the_top_configs_are_confirmed_over_seeds_before_one_is_registered(tmp_path, cifar_dir, ray_local, capsys):
    result = tuner.search(**search_kwargs(tmp_path, cifar_dir, "confirmed", smoke_test=True, num_samples=4,
                                          max_epochs=2, grace_period=2, confirm=2))  # fmt: skip
    assert result.best is not None
    out = capsys.readouterr().out
    folder = tmp_path / "runs" / "confirmed"
    best = json.loads((folder / "best_config.json").read_text())
    confirmed = best["confirm"]
    assert len(confirmed) == 2 and all(len(c["scores"]) == 1 + CONFIRM_SEEDS for c in confirmed)
    means = [c["mean"] for c in confirmed]
    assert means == sorted(means, reverse=True)  # ranked by mean
    assert best["trial_id"] == confirmed[0]["trial_id"]  # the registered model is the confirmed winner
    assert sorted(c["search_rank"] for c in confirmed) == [1, 2]
    assert all(c["held"] == (c["confirmed_rank"] <= c["search_rank"]) for c in confirmed)
    assert len(list((folder / "confirm").glob("train_cifar_*"))) == 2 * CONFIRM_SEEDS

    frame = pd.read_csv(folder / "results.csv")
    assert frame["confirmed"].notna().sum() == 2 and frame["confirmed_runs"].dropna().eq(1 + CONFIRM_SEEDS).all()
    assert "confirmed" in out.split("leaderboard")[1].splitlines()[1]  # a column of the leaderboard
    assert f"confirmed over {1 + CONFIRM_SEEDS} seeds: {best['trial_id']}" in out

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("cifar")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`hpsearch.confirmed` != ''")
    assert sorted(r.data.tags["hpsearch.trial_id"] for r in runs) == sorted(c["trial_id"] for c in confirmed)
