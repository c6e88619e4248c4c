"""The task contract's lighter side: only ``train`` is required, a function is a task, the context saves and restores.

No Ray here: the task objects and the context are exercised directly.
"""

import types

import pytest
import torch
from torch import nn

from search_spaces import SpaceError, parse_space, searched_space
from tests.conftest import ROOT
from trainables.loading import LoadedTask, load_task
from trainables.task import TaskError, TrialContext

MINIMAL_SPACE = ROOT / "examples" / "minimal" / "space.yaml"


def _module(name: str, **attributes) -> str:
    """A module ``name`` importable as a task (``name:...``), holding ``attributes``."""
    import sys

    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return name


def test_a_function_is_a_task_that_leaves_out_the_rest():
    seen = []
    task = load_task(f"{_module('fn_task', train=lambda config, context: seen.append(config))}:train")
    assert isinstance(task, LoadedTask) and task.function
    data = task.load(data_dir=".", smoke=None, constants={})
    assert data.trial is None and data.example is None and "itself" in data.description
    task.train({"lr": 0.1}, data.trial, None)
    assert seen == [{"lr": 0.1}]
    assert task.skipped() == ["no test score: the task has no evaluate(state, held_out, device=...)",
                              "no registered model: the task has no build_model(state)"]  # fmt: skip
    assert getattr(task, "predict", None) is None and getattr(task, "metrics", None) is None
    with pytest.raises(TaskError, match="has no evaluate"):
        task.evaluate({}, None, device=torch.device("cpu"))


def test_an_object_needs_only_train_and_keeps_its_own_methods():
    class OnlyTrain:
        def train(self, config, data, context):
            return ("trained", data)

        def metrics(self, constants):
            return {"val_loss": "min"}

    _module("only_train", TASK=OnlyTrain())
    task = load_task("only_train:TASK")
    assert not task.function and task.provides("train") and not task.provides("evaluate")
    assert task.train({}, "data", None) == ("trained", "data") and task.metrics({}) == {"val_loss": "min"}
    _module("no_train", TASK=types.SimpleNamespace(load=lambda **kw: None))
    with pytest.raises(TaskError, match="has no train: a task is a function train\\(config, context\\)"):
        load_task("no_train:TASK")


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_report_with_a_model_saves_what_restore_puts_back():
    torch.manual_seed(0)
    model, saved = _net(), []
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    context = TrialContext(device=torch.device("cpu"), reporter=lambda metrics, state: saved.append((metrics, state)))
    assert context.restore(model, optimizer) == 1  # a fresh start
    context.report({"epoch": 3, "val_acc": 0.5}, model=types.SimpleNamespace(module=model), optimizer=optimizer)
    metrics, state = saved[0]
    assert metrics == {"epoch": 3, "val_acc": 0.5}
    state = {**state(), "epoch": 3}  # the service adds the epoch (and the config) to what it saves
    assert set(state) == {"model", "optimizer", "epoch"}

    other, other_optimizer = _net(), None
    other_optimizer = torch.optim.Adam(other.parameters(), lr=0.01)
    resumed = TrialContext(device=torch.device("cpu"), reporter=lambda m, s: None, start=state)
    assert resumed.restore(other, other_optimizer) == 4  # the epoch after the last one saved
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
    assert other_optimizer.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    # Without a model or a state, nothing is saved: the reporter gets None.
    context.report({"epoch": 4, "val_acc": 0.6})
    assert saved[-1][1] is None
    with pytest.raises(TaskError, match="holds no 'model'"):
        TrialContext(device=torch.device("cpu"), reporter=print, start={"epoch": 2}).restore(other)


def test_a_space_needs_only_task_metric_mode_params_and_budget():
    space = searched_space(str(MINIMAL_SPACE), smoke_test=False, params=[])
    assert space.smoke is None and [p.description for p in space.params] == ["", ""]
    with pytest.raises(SpaceError, match="space 'minimal' has none: add one to .*space.yaml.*or run without"):
        searched_space(str(MINIMAL_SPACE), smoke_test=True, params=[])
    with pytest.raises(SpaceError, match="needs a kind"):
        parse_space({"name": "x", "params": {"lr": {"low": 1}}, "budget": {"num_samples": 1, "max_epochs": 1,
                     "grace_period": 1, "reduction_factor": 2}})  # fmt: skip


def test_the_readme_shows_the_smallest_task_as_it_is_and_it_is_short():
    code = (ROOT / "examples" / "minimal" / "task.py").read_text()
    assert len(code.splitlines()) <= 30
    readme = (ROOT / "README.md").read_text()
    assert f"```python\n{code}```" in readme
    assert f"```yaml\n{MINIMAL_SPACE.read_text()}```" in readme


def test_a_task_that_does_not_say_it_trains_data_parallel_is_refused_at_two_workers(tmp_path, monkeypatch):
    from search_spaces.exceptions import UsageError
    from tuner.config.checks import make_settings

    monkeypatch.chdir(ROOT)
    common = dict(cwd=ROOT, storage_path=str(tmp_path / "runs"), mlflow_uri=f"sqlite:///{tmp_path}/m.db")
    with pytest.raises(UsageError, match="task 'examples.minimal.task:train' does not say it trains data-parallel"):
        make_settings(str(MINIMAL_SPACE), workers_per_trial=2, gpus_per_trial=0, **common)
    assert make_settings(str(MINIMAL_SPACE), workers_per_trial=1, **common).space_name == "minimal"
    # The built-in tasks and the tabular example say so (and use the context's helpers).
    for ref in ("cifar", "imagefolder", "examples.tabular.task:TASK"):
        assert load_task(ref).supports_ddp, ref
    assert not load_task("examples.minimal.task:train").supports_ddp
