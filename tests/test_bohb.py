"""--search bohb (tuner.driver.bohb.BohbSearch): TPE fitted at the largest rung with enough scores, a third at
random, conditional parameters, the reports a scheduler stopped trials at, and its state across a resume."""

from __future__ import annotations

import math
import statistics

import pytest

from search_spaces import get_space, load_space_file
from tuner.driver.bohb import BohbSearch
from tuner.driver.warm import Prior

TABULAR = "examples/tabular/space.yaml"
BEST_LR = 0.003


def searcher(seed: int = 0, **kwargs) -> BohbSearch:
    space = load_space_file(TABULAR)
    return BohbSearch(space, metric="val_acc", mode="max", seed=seed, rungs=(1, 3, 9), **kwargs)


def score(params: dict) -> float:
    """Best at lr 0.003, falling off with the distance in log scale."""
    return 1.0 - 0.1 * math.log(params["lr"] / BEST_LR) ** 2


def feed(search: BohbSearch, count: int, *, rung: int, start: int = 0) -> list[dict]:
    """Suggest ``count`` trials and report each one's score at ``rung`` (a trial stopped there: on_trial_complete)."""
    suggested = []
    for i in range(start, start + count):
        params = search.suggest(f"t{i}")
        search.on_trial_complete(f"t{i}", {"epoch": rung, "val_acc": score(params)})
        suggested.append(params)
    return suggested


def test_the_model_waits_for_enough_scores_then_uses_the_largest_rung_that_has_them():
    search = searcher()
    assert search.min_points == 7  # the tabular space searches 6 parameters: BOHB's N_min is one more
    feed(search, 6, rung=1)
    assert search.model_rung() is None
    feed(search, 1, rung=1, start=6)
    assert search.model_rung() == 1
    feed(search, 7, rung=3, start=7)
    assert search.model_rung() == 3
    # A score at an epoch that is no rung, or NaN, or from a failed trial, is not a budget's observation.
    search.suggest("x")
    search.on_trial_result("x", {"epoch": 2, "val_acc": 0.5})
    search.on_trial_result("x", {"epoch": 9, "val_acc": math.nan})
    search.on_trial_complete("x", {"epoch": 9, "val_acc": 0.9}, error=True)
    assert search.observations["x"]["scores"] == {}


def test_the_model_moves_suggestions_toward_the_best_scores():
    search = searcher(seed=1)
    feed(search, 100, rung=3)
    modelled = [search.suggest(f"m{i}") for i in range(60)]
    random = feed(searcher(seed=3, min_points=10**6), 60, rung=3)  # never enough scores: every config at random

    def distance(configs: list[dict]) -> float:
        return statistics.median(abs(math.log(c["lr"] / BEST_LR)) for c in configs)

    assert distance(modelled) < 0.7 * distance(random)  # 0.56 against 1.12 (0.17 without the random third)


def test_a_conditional_parameter_is_suggested_only_where_it_is_active():
    search = searcher(seed=4)
    configs = feed(search, 40, rung=1)
    configs += [search.suggest(f"m{i}") for i in range(40)]
    assert any("dropout" in c for c in configs) and any("dropout" not in c for c in configs)
    for c in configs:
        assert ("dropout" in c) == (c["layers"] in (2, 3)), c


def test_the_first_points_come_first_and_priors_count_at_the_rung_they_reached():
    point = {"lr": 0.01, "weight_decay": 0.001, "hidden": 64, "layers": 1, "batch_size": 128}
    params = [{"lr": 0.003 * (1 + i / 10), "weight_decay": 0.001, "hidden": 64, "layers": 1, "batch_size": 128}
              for i in range(9)]  # fmt: skip
    full = [Prior(p, 0.9 - i / 100, 9) for i, p in enumerate(params[:7])]
    search = searcher(points=[point], priors=full)
    assert search.suggest("t0") == point
    assert search.model_rung() == 9  # the warm start's full-budget scores: enough to fit at once
    # Trials the old search stopped at epochs 1 and 2 count at rung 1 only, not as full-budget scores.
    stopped = [Prior(p, 0.9, 1 + i % 2) for i, p in enumerate(params)] + [Prior(params[0], 0.5, 0)]
    search = searcher(priors=stopped)
    assert search.model_rung() == 1 and len(search.observations) == 9
    assert {rung for o in search.observations.values() for rung in o["scores"]} == {1}


def test_a_first_point_missing_a_parameter_has_it_drawn():
    """A reference value an override pushed out of bounds is left out of the point: the searcher draws it."""
    partial = {"weight_decay": 0.001, "hidden": 64, "layers": 2, "dropout": 0.1, "batch_size": 128}
    search = searcher(points=[partial])
    first = search.suggest("t0")
    assert {k: first[k] for k in partial} == partial and 0.0003 <= first["lr"] <= 0.03


def test_a_restored_searcher_goes_on_as_if_never_stopped(tmp_path):
    path = str(tmp_path / "bohb.pkl")
    first = searcher(seed=5)
    feed(first, 12, rung=3)
    first.save(path)
    ahead = [first.suggest(f"n{i}") for i in range(5)]
    again = searcher(seed=99)  # another seed: every bit of the state must come from the file
    again.restore(path)
    assert [again.suggest(f"n{i}") for i in range(5)] == ahead
    assert set(again.observations) >= {f"t{i}" for i in range(12)}


@pytest.mark.parametrize("space", ["cifar", TABULAR])
def test_each_space_can_be_searched(space):
    loaded = load_space_file(space) if space.endswith(".yaml") else get_space(space)
    search = BohbSearch(loaded, metric="val_acc", mode="max", seed=0, rungs=(1, 3))
    for i in range(12):
        params = search.suggest(f"t{i}")
        assert params and all(loaded.param(k).contains(v) for k, v in params.items())
        search.on_trial_complete(f"t{i}", {"epoch": 3, "val_acc": 0.5 + i / 100})
    assert search.model_rung() == 3
