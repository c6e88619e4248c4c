"""Searches over a trade-off: a space with several objectives, its Pareto front, and the rule that picks the model."""

import itertools
import json
import math

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

import results
from search_spaces import Objective, SpaceError, get_space, pareto_mask, parse_space
from search_spaces.objectives import parse_select
from tests.conftest import ROOT
from tuner.cli import main
from tuner.driver.space import optuna_searcher

TABULAR = ROOT / "examples" / "tabular" / "space.yaml"


def _raw(**change):
    raw = yaml.safe_load(TABULAR.read_text())
    raw["params"]["hidden"]["choices"] = [8, 16, 32, 64, 128]
    return {**raw, **change}


def _dominates(a, b, modes):
    """a beats b: no worse on every objective, better on one (the definition, written out)."""
    better = [x > y if m == "max" else x < y for x, y, m in zip(a, b, modes, strict=True)]
    no_worse = [x >= y if m == "max" else x <= y for x, y, m in zip(a, b, modes, strict=True)]
    return all(no_worse) and any(better)


def _front(frame, objectives):
    names, modes = [o.metric for o in objectives], [o.mode for o in objectives]
    points = frame[names].to_numpy(dtype=float)
    valid = np.isfinite(points).all(axis=1)
    return [bool(valid[i]) and not any(valid[j] and _dominates(points[j], points[i], modes)
                                       for j in range(len(points)) if j != i)  # fmt: skip
            for i in range(len(points))]


@pytest.mark.parametrize("seed", range(5))
def test_the_front_is_every_trial_no_other_beats(seed):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"val_acc": rng.choice([0.5, 0.6, 0.7, 0.8, 0.9], 40),  # ties on purpose
                          "latency_ms": rng.choice([1.0, 2.0, 3.0], 40), "params": rng.integers(100, 200, 40)})
    frame.loc[rng.choice(40, 4, replace=False), "latency_ms"] = math.nan  # never reported: never on the front
    for objectives in ([Objective("val_acc", "max"), Objective("latency_ms", "min")],
                       [Objective("val_acc", "max"), Objective("latency_ms", "min"), Objective("params", "min")],
                       [Objective("val_acc", "min"), Objective("params", "max")]):  # fmt: skip
        mask = pareto_mask(frame, objectives)
        assert mask.tolist() == _front(frame, objectives) and mask.any()
        if any(o.metric == "latency_ms" for o in objectives):
            assert not mask[frame["latency_ms"].isna()].any()


def test_a_space_states_its_objectives_and_rule():
    rule = {"best": "latency_ms", "where": {"val_rmse": {"max": 30}, "params": {"max": 5000}}}
    space = parse_space(_raw(metric="val_rmse", mode="min", objectives={"latency_ms": "min", "params": "min"},
                             select=rule))  # fmt: skip
    assert [(o.metric, o.mode) for o in space.objectives] == [("latency_ms", "min"), ("params", "min")]
    described = space.select.describe(mode="min")
    assert described == "best latency_ms (min) among trials with val_rmse <= 30 and params <= 5000"
    rule = parse_select({"where": {"params": {"min": 10, "max": 20}}}, space="s")
    assert [b.holds(v) for b in rule.where for v in (5, 15, math.nan)] == [False, True, False, True, True, False]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"objectives": {"latency_ms": "fast"}}, "objective latency_ms has mode 'fast', but must be max"),
        ({"objectives": ["latency_ms"]}, "objectives must map each further metric to max or min"),
        ({"metric": "val_rmse", "mode": "min", "objectives": {"val_rmse": "min"}}, "val_rmse is named twice"),
        ({"metric": "val_rmse", "mode": "min", "objectives": {"params": "min"},
          "select": {"where": {"latency_ms": {"max": 2}}}}, "select names latency_ms, which is not one of"),
        ({"objectives": {"params": "min"}, "select": {"where": {"params": {"below": 2}}}}, "write {max: VALUE}"),
        ({"objectives": {"params": "min"}, "select": {"where": {"params": {"max": "2k"}}}}, "must be a finite number"),
        ({"objectives": {"params": "min"}, "select": {"pick": "params"}}, "select takes `best`"),
    ],
)
def test_a_malformed_trade_off_is_refused_with_the_fix(change, message):
    with pytest.raises(SpaceError, match=message.replace("(", r"\(").replace("{", r"\{")):
        parse_space(_raw(**change))


def test_optuna_models_every_objective_and_learns_stopped_trials_as_pruned():
    space = get_space(str(TABULAR))
    searcher = optuna_searcher(space, metric="val_rmse", mode="min", seed=0, max_epochs=4, points=[], priors=[],
                               objectives=[Objective("params", "min")])  # fmt: skip
    for trial_id in ("full", "stopped", "crashed", "unreported"):
        assert searcher.suggest(trial_id)
    for epoch in (1, 2, 3):
        searcher.on_trial_result("full", {"epoch": epoch, "training_iteration": epoch, "val_rmse": 40.0 - epoch,
                                          "params": 900.0})  # fmt: skip
    searcher.on_trial_complete("full", {"epoch": 4, "training_iteration": 4, "val_rmse": 30.0, "params": 900.0})
    searcher.on_trial_complete("stopped", {"epoch": 2, "training_iteration": 2, "val_rmse": 60.0, "params": 100.0})
    searcher.on_trial_complete("crashed", {"epoch": 1, "val_rmse": 80.0, "params": 100.0}, error=True)
    searcher.on_trial_complete("unreported", {"epoch": 4, "training_iteration": 4, "val_rmse": 35.0})
    study = searcher._ot_study
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    full, stopped, crashed, unreported = sorted(study.trials, key=lambda t: t.number)
    assert full.state.name == "COMPLETE" and full.values == [30.0, 900.0]
    assert stopped.state.name == "PRUNED" and stopped.values is None  # no 2-epoch score taken for a full budget's
    assert crashed.state.name == "FAIL" and unreported.state.name == "FAIL"  # an objective it never reported


def _argv(tmp_path, space, csv, name, *extra):
    return ["--space", str(space), "--data-dir", str(csv), "--storage-path", str(tmp_path / "runs"), "--name", name,
            "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db", "--search", "optuna", "--num-samples", "10",
            "--max-epochs", "4", "--grace-period", "2", "--reduction-factor", "2", *extra]  # fmt: skip


@pytest.mark.slow
def test_a_trade_off_search_end_to_end(tmp_path, houses_csv, ray_local, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the space names its task as examples.tabular.task:TASK
    space = tmp_path / "tradeoff.yaml"
    space.write_text(yaml.safe_dump(_raw(name="tradeoff", objectives={"params": "min"},
                                         select={"where": {"params": {"max": 3000}}})))  # fmt: skip
    assert main(_argv(tmp_path, space, houses_csv, "front")) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "runs" / "front"
    frame = results.load_results(folder)
    objectives = [Objective("val_rmse", "min"), Objective("params", "min")]
    assert frame["pareto"].tolist() == _front(frame, objectives) and frame["pareto"].any()
    # params as the task measured it: 7 inputs (area, rooms, age, 4 towns), hidden units, layers, 1 output.
    for row in frame.to_dict("records"):
        h, n = int(row["config/hidden"]), int(row["config/layers"])
        assert row["params"] == (7 + 1) * h + (n - 1) * (h + 1) * h + (h + 1), row

    # The registered model is the rule's: the lowest val_rmse among trials of at most 3000 parameters.
    allowed = frame[frame["params"] <= 3000]
    best = json.loads((folder / "best_config.json").read_text())
    assert best["trial_id"] == allowed.sort_values(["val_rmse", "params", "trial_id"])["trial_id"].iloc[0]
    assert best["select"] == "best val_rmse (min) among trials with params <= 3000" and best["params"] <= 3000
    assert sorted(best["pareto"]) == sorted(frame.loc[frame["pareto"], "trial_id"].astype(str))
    assert f"chosen by the space's select rule: {best['select']} ({len(allowed)} of 10 trials met it)" in out
    assert "Pareto front:" in out and " pareto " in out  # the leaderboard's column
    if not frame.loc[frame["trial_id"] == best["trial_id"], "pareto"].item():
        pytest.fail("the rule's choice is on the front: nothing allowed beats it on both objectives")

    report = (folder / "report" / "report.html").read_text()
    assert "Trade-off with params" in report and "params &lt;= 3000" in report
    assert (folder / "report" / "trade_offs.png").stat().st_size > 10_000

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("tradeoff")
    parent = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'front'")[0]
    assert parent.data.tags["hpsearch.select"] == best["select"]
    assert parent.data.metrics["pareto_trials"] == frame["pareto"].sum()
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")  # fmt: skip
    tagged = {c.data.tags["hpsearch.trial_id"]: c.data.tags["hpsearch.pareto"] for c in children}
    assert tagged == {str(t): str(p).lower() for t, p in zip(frame["trial_id"], frame["pareto"], strict=True)}
    assert all(client.get_metric_history(c.info.run_id, "params") for c in children)
    version = client.get_model_version("tradeoff-best", "1")
    assert version.tags["select"] == best["select"] and float(version.tags["params"]) == best["params"]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    table = pd.read_csv(houses_csv)
    predicted = mlflow.pyfunc.load_model("models:/tradeoff-best/1").predict(table.drop(columns=["price"]).head(20))
    assert list(predicted.columns) == ["price"] and predicted["price"].notna().all()

    # From Python, the front is the table's pareto rows; --sync to another store tags the front there too.
    import tuner

    assert sorted(tuner.load(str(folder)).front["trial_id"].astype(str)) == sorted(best["pareto"])
    assert main(["--sync", str(folder), "--mlflow-uri", f"sqlite:///{tmp_path}/copy.db"]) == 0
    capsys.readouterr()
    copy = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/copy.db")
    synced = copy.search_runs([copy.get_experiment_by_name("tradeoff").experiment_id],
                              filter_string="tags.`hpsearch.pareto` = 'true'")  # fmt: skip
    assert sorted(r.data.tags["hpsearch.trial_id"] for r in synced) == sorted(best["pareto"])

    # The front's checkpoints are kept beside the top trials', whatever --keep-trials: a user picks among them.
    for trial_id in frame.loc[frame["pareto"], "trial_id"]:
        assert list(folder.glob(f"train_tradeoff_{trial_id}_*/checkpoint_*")), trial_id

    # A bound no trial can meet: the front is still written, and nothing is registered (nor tested).
    space.write_text(yaml.safe_dump(_raw(name="tradeoff", objectives={"params": "min"},
                                         select={"where": {"params": {"max": 10}}})))  # fmt: skip
    assert main(_argv(tmp_path, space, houses_csv, "strict", "--num-samples", "3")) == 1
    out, err = capsys.readouterr()
    assert "error: no trial met the space's select rule, so nothing was registered" in err
    assert "no trial met the space's select rule (best val_rmse (min) among trials with params <= 10; 0 of 3 " in out
    assert "loosen select's bounds in" in out and "registered as" not in out
    strict = tmp_path / "runs" / "strict"
    assert "pareto" in results.load_results(strict) and not (strict / "best_config.json").exists()
    assert [str(v.version) for v in client.search_model_versions("name = 'tradeoff-best'")] == ["1"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--search", "bohb"), "--search bohb models one metric, and space 'tradeoff' trades it against params"),
        (("--confirm", "2"), "--confirm retrains the best configs by one metric"),
        (("--confirm", "2", "--select-only"), "--confirm registers the config with the best mean by one metric, and "
                                              "space 'tradeoff' picks its model by its select rule"),
    ],
)
def test_what_cannot_search_a_trade_off_is_refused(tmp_path, houses_csv, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(ROOT)
    space = tmp_path / "tradeoff.yaml"
    trade = {"select": {"where": {"val_rmse": {"max": 50}}}} if "--select-only" in extra else {
        "objectives": {"params": "min"}}  # fmt: skip
    extra = tuple(a for a in extra if a != "--select-only")
    space.write_text(yaml.safe_dump(_raw(name="tradeoff", **trade)))
    argv = [a for a in _argv(tmp_path, space, houses_csv, "no") if a not in ("--search", "optuna")]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("objectives", "message"),
    [
        ({"flops": "min"}, "objectives: its task does not report flops (it reports val_rmse (min), val_loss (min), "
                           "train_loss (min), params (min), latency_ms (min)): name one of those under objectives"),
        ({"params": "max"}, "objectives: its task reports params as min, not max: write `params: min` under "
                            "objectives"),
    ],
)
def test_an_objective_the_task_does_not_report_is_refused(tmp_path, houses_csv, monkeypatch, capsys, objectives,
                                                          message):  # fmt: skip
    monkeypatch.chdir(ROOT)
    space = tmp_path / "tradeoff.yaml"
    space.write_text(yaml.safe_dump(_raw(name="tradeoff", objectives=objectives)))
    assert main(_argv(tmp_path, space, houses_csv, "no")) == 2
    assert message in capsys.readouterr().err


def test_the_rule_picks_the_best_allowed_and_breaks_ties_by_the_other_objectives():
    rows = [{"trial_id": "a", "val_acc": 1.0, "latency_ms": 0.9, "params": 900.0},
            {"trial_id": "b", "val_acc": 1.0, "latency_ms": 0.5, "params": 500.0},  # beats a: as accurate, smaller
            {"trial_id": "c", "val_acc": 0.9, "latency_ms": 0.1, "params": 100.0},
            {"trial_id": "d", "val_acc": 1.0, "latency_ms": 3.0, "params": 50.0},  # too slow for the bound
            {"trial_id": "e", "val_acc": math.nan, "latency_ms": 0.1, "params": 10.0}]  # fmt: skip
    objectives = [Objective("val_acc", "max"), Objective("latency_ms", "min"), Objective("params", "min")]
    rule = parse_select({"where": {"latency_ms": {"max": 2}}}, space="s")
    rule = type(rule)(best="val_acc", where=rule.where)
    assert results.select_order(rows, rule, objectives) == ["b", "a", "c"]
    assert results.mark_front(rows, objectives) == ["b", "d", "c"] and [r["pareto"] for r in rows] == [
        False, True, True, True, False]  # fmt: skip
    smallest = type(rule)(best="params", where=())
    assert results.select_order(rows, smallest, objectives) == ["d", "c", "b", "a"]  # e has no val_acc: no choice


def test_a_rule_keeps_both_sides_of_a_bound_through_search_json():
    from search_spaces import rule_from_data

    rule = parse_select({"best": "val_acc", "where": {"params": {"min": 10, "max": 20}, "latency_ms": {"max": 2}}},
                        space="s")  # fmt: skip
    again = rule_from_data(rule.as_data(), metric="val_acc")
    assert again == rule and again.describe(mode="max") == (
        "best val_acc (max) among trials with params >= 10 and params <= 20 and latency_ms <= 2")  # fmt: skip
    assert rule_from_data({}, metric="val_acc").plain(metric="val_acc") and not again.plain(metric="val_acc")


def test_the_report_that_ends_a_trial_early_carries_every_objective():
    """Tune requires each metric its searcher models in every report: a diverged trial's too (NaN)."""
    from trainables.task import Diverged
    from tuner.trial.process import early_end
    from tuner.trial.settings import TrialSettings

    settings = TrialSettings(tracking_uri="", metric="val_acc", objectives=("latency_ms", "params"))
    ended = early_end(Diverged(epoch=3, loss=math.inf), epoch=3, metric="val_acc", settings=settings)
    assert ended["diverged"] == 1 and all(math.isnan(ended[k]) for k in ("val_acc", "latency_ms", "params"))


def test_a_version_carries_the_rule_that_chose_it_and_what_it_scored():
    from tuner.tracking.registry import version_tags

    record = {"search": "s", "trial_id": "t", "metric": "val_acc", "mode": "max", "val_acc": 0.9, "latency_ms": 0.4,
              "objectives": {"latency_ms": "min"}, "test_metrics": ["test_acc"], "test_acc": 0.88}  # fmt: skip
    plain = version_tags({**record, "select": "best val_acc (max)"}, task="cifar", data_key="k", smoke=False)
    assert "select" not in plain and plain["metric"] == "val_acc"  # compared with versions of plain searches
    by_speed = {**record, "select": "best latency_ms (min) among trials with val_acc >= 0.85",
                "chosen_by": {"metric": "latency_ms", "mode": "min"}}  # fmt: skip
    tags = version_tags(by_speed, task="cifar", data_key="k", smoke=False)
    assert (tags["metric"], tags["mode"], tags["score"], tags["select"]) == ("latency_ms", "min", "0.4",
                                                                            by_speed["select"])  # fmt: skip
    assert tags["val_acc"] == "0.9000" and tags["test_acc"] == "0.8800"


def diverging_train(config, context):
    """A task whose trials with x above 0.6 diverge at epoch 2 (imported by the workers as tests.test_tradeoff)."""
    from trainables.task import Diverged

    for epoch in range(1, config["epochs"] + 1):
        if config["x"] > 0.6 and epoch == 2:
            raise Diverged(epoch=epoch, loss=float("nan"))
        context.report({"epoch": epoch, "score": config["x"] * epoch, "size": 1.0 - config["x"]})


def forgetful_train(config, context):
    """A task that never reports the space's second objective (imported by the workers as tests.test_tradeoff)."""
    for epoch in range(1, config["epochs"] + 1):
        context.report({"epoch": epoch, "score": config["x"] * epoch})


@pytest.mark.slow
def test_a_task_that_does_not_report_an_objective_is_told_which(tmp_path, ray_local, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    space = {"name": "mo", "task": "tests.test_tradeoff:forgetful_train", "metric": "score", "mode": "max",
             "objectives": {"size": "min"}, "params": {"x": {"kind": "uniform", "low": 0.0, "high": 1.0}},
             "budget": {"num_samples": 2, "max_epochs": 2, "grace_period": 2, "reduction_factor": 2}}  # fmt: skip
    (tmp_path / "mo.yaml").write_text(yaml.safe_dump(space))
    argv = ["--space", str(tmp_path / "mo.yaml"), "--data-dir", str(tmp_path), "--search", "optuna", "--max-failures",
            "0", "--storage-path", str(tmp_path / "runs"), "--name", "mo", "--mlflow-uri",
            f"sqlite:///{tmp_path}/mlflow.db"]  # fmt: skip
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "2 trial(s) failed" in out
    assert ("task 'tests.test_tradeoff:forgetful_train' reported epoch 1 without size, which the space names under "
            "objectives: report it every epoch") in out  # fmt: skip


@pytest.mark.slow
def test_a_trade_off_search_goes_on_past_a_diverged_trial(tmp_path, ray_local, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the space's task, tests.test_tradeoff:diverging_train, is imported from here
    space = {"name": "mo", "task": "tests.test_tradeoff:diverging_train", "metric": "score", "mode": "max",
             "objectives": {"size": "min"},
             "params": {"x": {"kind": "uniform", "low": 0.0, "high": 1.0}},
             "reference": {"x": 0.9},  # tried first: it diverges at epoch 2
             "budget": {"num_samples": 6, "max_epochs": 3, "grace_period": 3, "reduction_factor": 2}}  # fmt: skip
    (tmp_path / "mo.yaml").write_text(yaml.safe_dump(space))
    argv = ["--space", str(tmp_path / "mo.yaml"), "--data-dir", str(tmp_path), "--search", "optuna", "--storage-path",
            str(tmp_path / "runs"), "--name", "mo", "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db"]  # fmt: skip
    assert main(argv) == 1  # the task registers no model (no build_model), so there is no best checkpoint either
    frame = results.load_results(tmp_path / "runs" / "mo")
    assert len(frame) == 6 and "diverged" in set(frame["status"]) and "error" not in set(frame["status"])
    diverged = frame[frame["status"] == "diverged"]  # ranked, as in any search, by the epoch before it diverged
    assert diverged["score"].tolist() == pytest.approx(diverged["config/x"].tolist())
    assert frame["pareto"].tolist() == _front(frame, [Objective("score", "max"), Objective("size", "min")])


def test_each_pair_of_trials_on_the_front_trades_one_objective_for_another():
    frame = pd.DataFrame({"val_acc": [0.9, 0.8, 0.95, 0.7, 0.9], "latency_ms": [1.0, 0.5, 3.0, 0.6, 1.0]})
    objectives = [Objective("val_acc", "max"), Objective("latency_ms", "min")]
    front = frame[pareto_mask(frame, objectives)]
    assert front.index.tolist() == [0, 1, 2, 4]  # equal trials share the front; 3 is beaten by 1
    for (_, a), (_, b) in itertools.combinations(front.iterrows(), 2):
        assert not _dominates(a.tolist(), b.tolist(), ["max", "min"])
