"""--warm-start: a finished search's best configs first, its trials as Optuna's priors, the misfits reported."""

import json

import pytest

import results
from search_spaces import apply_overrides, get_space
from search_spaces.exceptions import UsageError
from tuner.driver.space import optuna_searcher
from tuner.driver.warm import load_warm_start


def _finished(folder, *, metric="val_acc", mode="max"):
    """A finished search's folder: results.csv of five trials (one with an lr the narrowed space refuses)."""
    folder.mkdir()
    rows = []
    for i, (lr, momentum, batch, acc) in enumerate([(11.5, 0.85, 1024, 0.91), (20.0, 0.9, 512, 0.93),
                                                    (6.0, 0.82, 2048, 0.88), (9.0, 0.88, 1024, 0.90),
                                                    (14.0, 0.86, 512, float("nan"))]):  # fmt: skip
        rows.append({"trial_id": f"t{i}", "status": "completed", "epochs": 10, metric: acc, "config/lr": lr,
                     "config/momentum": momentum, "config/batch_size": batch, "config/arch": "airbench"})  # fmt: skip
    results.write(str(folder), rows, None, metric=metric, mode=mode)
    (folder / "search.json").write_text(json.dumps({"metric": metric, "mode": mode}))
    return str(folder)


def test_the_best_configs_that_fit_come_first_and_the_others_are_reported(tmp_path):
    space = apply_overrides(get_space("cifar"), ["lr=5:15"])
    warm = load_warm_start(_finished(tmp_path / "old"), space, metric="val_acc", mode="max", top=2)
    assert warm.points == [{"lr": 11.5, "momentum": 0.85, "batch_size": 1024},
                           {"lr": 9.0, "momentum": 0.88, "batch_size": 1024}]  # fmt: skip
    assert [p.score for p in warm.priors] == [0.91, 0.9, 0.88]  # scored and inside the space, best first
    assert {p.epochs for p in warm.priors} == {10}
    assert warm.skipped == ["trial t1: lr 20.0 is outside log[5, 15]"]
    text = warm.describe(model=True)
    assert "its best 2 config(s) first, 3 of its trials told to the searcher's model" in text
    assert "trial t1: lr 20.0" in text


def test_optuna_knows_the_old_trials_before_it_suggests(tmp_path):
    space = get_space("cifar")
    warm = load_warm_start(_finished(tmp_path / "old"), space, metric="val_acc", mode="max")
    searcher = optuna_searcher(space, metric="val_acc", mode="max", seed=0, max_epochs=10, points=warm.points[:1],
                               priors=warm.priors)  # fmt: skip
    study = searcher._ot_study
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4 and study.best_value == 0.93 and study.best_params["lr"] == 20.0
    # A trial the old search stopped early is no full budget's score: Optuna has it as pruned at its epoch.
    stopped = [p._replace(epochs=3) for p in warm.priors]
    study = optuna_searcher(space, metric="val_acc", mode="max", seed=0, max_epochs=10, points=[],
                            priors=stopped)._ot_study  # fmt: skip
    assert [t.state.name for t in study.trials] == ["PRUNED"] * 4
    assert [t.intermediate_values for t in study.trials][0] == {3: 0.93}
    first = searcher.suggest("a")
    assert {k: first[k] for k in warm.points[0]} == warm.points[0]  # the best old config runs first


def test_a_search_that_cannot_seed_this_one_is_refused(tmp_path):
    space = get_space("cifar")
    with pytest.raises(UsageError, match="no results.csv there; pass the folder of a finished search"):
        load_warm_start(str(tmp_path), space, metric="val_acc", mode="max")
    folder = _finished(tmp_path / "loss", metric="val_loss", mode="min")
    with pytest.raises(UsageError, match="ranked trials by val_loss \\(min\\), this one by val_acc"):
        load_warm_start(folder, space, metric="val_acc", mode="max")


def test_optuna_learns_what_trials_really_reached():
    import math

    space = get_space("cifar")
    searcher = optuna_searcher(space, metric="val_acc", mode="max", seed=0, max_epochs=4, points=[], priors=[])
    for trial_id in ("stopped", "full", "crashed", "diverged"):
        assert searcher.suggest(trial_id)

    def run(trial_id: str, scores: list[float], **last: object) -> dict:
        """Its reports as Tune passes them: the last one (where a scheduler stops it) to on_trial_complete only."""
        result = {}
        for epoch, score in enumerate(scores, start=1):
            if result:
                searcher.on_trial_result(trial_id, result)
            result = {"epoch": epoch, "training_iteration": epoch, "val_acc": score}
        return {**result, **last}

    # ASHA stopped it at its rung 2 (epoch 1 scored without TTA: NaN, no value to learn from).
    searcher.on_trial_complete("stopped", run("stopped", [math.nan, 0.41]))
    searcher.on_trial_complete("full", run("full", [math.nan, 0.45, math.nan, 0.62]))
    searcher.on_trial_complete("crashed", run("crashed", [0.3]), error=True)
    searcher.on_trial_complete("diverged", run("diverged", [0.2], diverged=True, val_acc=math.nan))
    trials = {t.number: t for t in searcher._ot_study.trials}
    stopped, full, crashed, diverged = (trials[i] for i in range(4))
    assert stopped.state.name == "PRUNED" and stopped.intermediate_values == {2: 0.41} and stopped.value == 0.41
    assert full.state.name == "COMPLETE" and full.value == 0.62 and full.intermediate_values == {2: 0.45}
    assert crashed.state.name == "FAIL" and diverged.state.name == "FAIL"
