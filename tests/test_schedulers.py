"""The schedulers' decisions after a resume are the decisions of the uninterrupted search."""

import json
import pickle
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ray import cloudpickle

from search_spaces import Budget, get_space
from search_spaces.exceptions import UsageError
from tuner import schedulers
from tuner.config import settings
from tuner.schedulers.pbt import mutable_params
from tuner.schedulers.persistent import PersistentASHA, PersistentMedian, clip_to_space


class _Trial:
    """What the schedulers read of a trial: its id and status (hashed by identity, as Tune's trials are)."""

    def __init__(self, trial_id, status="RUNNING"):
        self.trial_id, self.status = trial_id, status


def _scheduler(path, kind="asha"):
    common = {"state_path": str(path), "time_attr": "epoch", "metric": "val_acc", "mode": "max"}
    if kind == "median":
        return PersistentMedian(grace_period=2, min_samples_required=3, **common)
    brackets = 3 if kind == "hyperband" else 1
    return PersistentASHA(max_t=9, grace_period=1, reduction_factor=3, brackets=brackets, **common)


def _events(seed=0, trials=12):
    """Trials report epochs 1..9 in an interleaved order, each with its own quality."""
    rng = np.random.default_rng(seed)
    quality = {f"t{i}": rng.uniform(0.2, 0.9) for i in range(trials)}
    events = [(f"t{i}", epoch, quality[f"t{i}"] * epoch / 9) for epoch in range(1, 10) for i in range(trials)]
    return events


def _replay(schedulers, events, *, split):
    """Feed events to schedulers[0] until ``split``, then to schedulers[1]; returns every decision."""
    np.random.seed(0)  # HyperBand draws each new trial's bracket
    trials, stopped, actions = {}, set(), []
    for k, (tid, epoch, acc) in enumerate(events):
        scheduler = schedulers[0] if k < split else schedulers[1]
        if k == split and schedulers[1] is not schedulers[0]:
            for trial in trials.values():  # a restored search adds all its trials again
                scheduler.on_trial_add(None, trial)
        if tid in stopped:
            continue
        if tid not in trials:
            trials[tid] = _Trial(tid)
            scheduler.on_trial_add(None, trials[tid])
        action = scheduler.on_trial_result(None, trials[tid], {"epoch": epoch, "val_acc": acc})
        actions.append((tid, epoch, action))
        if action == "STOP":
            stopped.add(tid)
    return actions


@pytest.mark.parametrize(("kind", "trials"), [("asha", 12), ("hyperband", 24), ("median", 12)])
def test_a_resumed_scheduler_decides_as_the_uninterrupted_one(tmp_path, kind, trials):
    events = _events(trials=trials)
    split = 2 * trials + trials // 2  # in the middle of the epoch-3 reports: half of them come before the resume
    whole = _replay([_scheduler(tmp_path / "a.json", kind)] * 2, events, split=len(events))

    first = _scheduler(tmp_path / "b.json", kind)
    # As Tune unpickles it on resume (cloudpickle: the median rule holds a lambda).
    restored = cloudpickle.loads(cloudpickle.dumps(_scheduler(tmp_path / "b.json", kind)))
    resumed = _replay([first, restored], events, split=split)
    assert resumed == whole
    assert any(action == "STOP" for _, _, action in whole)

    # Without the saved state, the resumed search decides differently: the test can fail.
    forgetful = _replay([_scheduler(tmp_path / "c.json", kind), _scheduler(tmp_path / "missing.json", kind)],
                        events, split=split)  # fmt: skip
    assert forgetful != whole


def test_milestones_are_the_rungs(tmp_path):
    assert _scheduler(tmp_path / "m.json").milestones() == (1, 3, 9)
    cifar = PersistentASHA(state_path=str(tmp_path / "c.json"), time_attr="epoch", metric="val_acc", mode="max",
                           max_t=10, grace_period=3, reduction_factor=3)  # fmt: skip
    assert cifar.milestones() == (3, 9)


def test_trials_ended_without_a_score_stay_out_of_the_rungs(tmp_path):
    scheduler = _scheduler(tmp_path / "e.json")
    trials = [SimpleNamespace(trial_id=f"t{i}") for i in range(3)]
    for t in trials:
        scheduler.on_trial_add(None, t)
    scheduler.on_trial_result(None, trials[0], {"epoch": 1, "val_acc": 0.5})
    # An out-of-memory and a diverged trial report 0.0 at the first rung's epoch: not recorded.
    for t, flag in zip(trials[1:], ("infeasible", "diverged"), strict=True):
        assert scheduler.on_trial_result(None, t, {"epoch": 1, "val_acc": 0.0, flag: 1}) == "CONTINUE"
    recorded = scheduler.state()["brackets"][0]
    first_rung = next(r for milestone, r in recorded if milestone == 1)
    assert first_rung == {"t0": 0.5}


def test_hyperband_keeps_each_trial_in_its_bracket(tmp_path):
    scheduler = _scheduler(tmp_path / "h.json", "hyperband")
    assert len(scheduler._brackets) == 3
    np.random.seed(1)
    trials = [_Trial(f"t{i}") for i in range(20)]
    for t in trials:
        scheduler.on_trial_add(None, t)
    scheduler.on_trial_result(None, trials[0], {"epoch": 1, "val_acc": 0.5})
    placed = json.loads((tmp_path / "h.json").read_text())["trial_brackets"]
    assert len(set(placed.values())) > 1  # the trials went into several brackets
    restored = pickle.loads(pickle.dumps(scheduler))
    np.random.seed(2)  # other draws: the saved brackets win
    for t in trials:
        restored.on_trial_add(None, t)
    assert {t.trial_id: restored._brackets.index(restored._trial_info[t.trial_id]) for t in trials} == placed


def test_median_rule_never_pauses_and_ignores_scoreless_reports(tmp_path):
    scheduler = _scheduler(tmp_path / "m.json", "median")
    trials = [_Trial(f"t{i}") for i in range(2)]
    pending = SimpleNamespace(get_live_trials=lambda: [SimpleNamespace(status="PENDING")])
    for t in trials:
        scheduler.on_trial_add(pending, t)
    # Too few other trials to judge t0 at epoch 3, while one waits: Ray's rule would pause it.
    assert scheduler.on_trial_result(pending, trials[0], {"epoch": 3, "val_acc": 0.5}) == "CONTINUE"
    assert scheduler.on_trial_result(pending, trials[1], {"epoch": 3, "val_acc": 0.0, "diverged": 1}) == "CONTINUE"
    assert list(json.loads((tmp_path / "m.json").read_text())["scores"]) == ["t0"]


def test_pbt_perturbations_stay_inside_the_space():
    space = get_space("cifar")
    mutable = mutable_params(space)
    assert [p.name for p in mutable] == ["lr", "momentum", "weight_decay", "label_smoothing"]
    config = {"lr": 36.0, "momentum": 0.96, "weight_decay": 0.004, "label_smoothing": 0.1, "width": 1.0}
    clipped = clip_to_space(dict(config), mutable)
    assert clipped == {"lr": 30.0, "momentum": 0.92, "weight_decay": 0.005, "label_smoothing": 0.1, "width": 1.0}


def _cifar_config(**changes):
    from bench.common import default_recipe

    config = default_recipe(epochs=4)
    config.update(width=0.125, batch_size=128, tta=0, **changes)
    return config


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)`")
def test_an_exploit_continues_the_schedule_with_the_new_lr():
    from trainables.data import synthetic_images
    from trainables.loop import DeviceData, _setup
    from trainables.optim import OTHER

    x, y = synthetic_images(512, seed=0)
    data = DeviceData.from_arrays({"train_x": x, "train_y": y, "val_x": x[:64], "val_y": y[:64]},
                                  device=torch.device("cpu"))  # fmt: skip
    donor = _setup(_cifar_config(), data, device=torch.device("cpu"), rank=0, world_size=1, compile=False)
    for _ in range(5):
        donor.schedule.step()
    state = donor.state(2)
    # The same config again (a resume): exactly the saved values.
    same = _setup(_cifar_config(), data, device=torch.device("cpu"), rank=0, world_size=1, compile=False)
    same.load(state)
    assert same.optimizer.param_groups[OTHER]["lr"] == donor.optimizer.param_groups[OTHER]["lr"]
    # Twice the peak lr, another momentum (an exploit): twice the lr at the same step, new momentum and decay.
    config = _cifar_config(lr=23.0, momentum=0.9)
    exploiting = _setup(config, data, device=torch.device("cpu"), rank=0, world_size=1, compile=False)
    exploiting.load(state)
    assert exploiting.schedule.last_epoch == 5
    fresh = _setup(config, data, device=torch.device("cpu"), rank=0, world_size=1, compile=False)
    for _ in range(5):
        fresh.schedule.step()
    for got, want in zip(exploiting.optimizer.param_groups, fresh.optimizer.param_groups, strict=True):
        assert got["lr"] == pytest.approx(want["lr"]) and got["momentum"] == 0.9
        assert got["weight_decay"] == pytest.approx(want["weight_decay"])
    exploiting.schedule.step()
    fresh.schedule.step()
    assert exploiting.optimizer.param_groups[OTHER]["lr"] == pytest.approx(fresh.optimizer.param_groups[OTHER]["lr"])


def test_an_exploit_is_noted_once_with_what_changed():
    from tuner.trial.process import exploit_note

    start = {"trial_id": "a", "epoch": 4, "config": {"lr": 11.5, "momentum": 0.85, "width": 1.0}}
    note = exploit_note(start, config={"lr": 13.8, "momentum": 0.85, "width": 1.0}, trial_id="b")
    assert note["exploited_from"] == "a" and note["exploit_epoch"] == 4
    assert json.loads(note["exploit"]) == {"lr": [11.5, 13.8]}
    assert exploit_note(start, config=start["config"], trial_id="a") == {}  # its own checkpoint: a resume
    assert exploit_note(None, config={}, trial_id="b") == {}


def test_every_registered_scheduler_builds_and_names_its_state_file(tmp_path):
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    space, budget = get_space("cifar"), Budget(num_samples=4, max_epochs=6, grace_period=2, reduction_factor=2)
    assert settings.SCHEDULERS == tuple(schedulers.SCHEDULERS) == ("asha", "hyperband", "median", "pbt", "fifo")
    for name, spec in schedulers.SCHEDULERS.items():
        assert spec.name == name and spec.label
        spec.check(space=space, budget=budget, search="random", max_concurrent=None)
        built = spec.build(budget=budget, space=space, folder=str(tmp_path), seed=0)
        assert isinstance(built, TrialScheduler)
        assert (type(built) is FIFOScheduler) == (not spec.state_file)  # Ray's others subclass it
        if spec.state_file:  # where it saves: the names searches have always used (a resume reads them)
            assert built.state_path == str(tmp_path / spec.state_file)
            assert cloudpickle.loads(cloudpickle.dumps(built)).state_path == built.state_path  # Tune pickles it
        assert spec.checkpoint_epochs(budget)[-1] == budget.max_epochs
        assert 0 < spec.expected_epochs(budget) <= budget.max_epochs
        assert bool(spec.rungs(budget)) == (name != "fifo")  # results.cost knows every early stopper's rungs
    assert {n: s.state_file for n, s in schedulers.SCHEDULERS.items()} == {
        "asha": "asha.state", "hyperband": "asha.state", "median": "median.state", "pbt": "pbt.state", "fifo": ""
    }  # fmt: skip
    assert [n for n, s in schedulers.SCHEDULERS.items() if not s.early_stops] == ["pbt", "fifo"]
    hyperband = schedulers.get("hyperband").build(budget=budget, space=space, folder=str(tmp_path), seed=0)
    assert len(hyperband._brackets) == schedulers.get("hyperband").brackets(budget) == 2  # first rungs at 2 and 4


def test_an_unknown_scheduler_is_refused_with_the_known_names():
    with pytest.raises(UsageError, match="unknown scheduler 'bohb': pick one of asha, hyperband, median, pbt, fifo"):
        schedulers.get("bohb")


def test_pbt_refuses_a_space_with_nothing_to_perturb():
    space, budget = get_space("imagefolder"), Budget(num_samples=4, max_epochs=6, grace_period=2, reduction_factor=2)
    with pytest.raises(UsageError, match="marks none"):
        schedulers.get("pbt").check(space=space, budget=budget, search="random", max_concurrent=None)
    for name in ("asha", "hyperband", "median", "fifo"):  # the others ask nothing of the space
        schedulers.get(name).check(space=space, budget=budget, search="optuna", max_concurrent=2)


def test_the_registry_and_the_settings_import_no_ray():
    """The settings check --scheduler before Ray starts (a bad flag fails in a second): only ``build`` imports Ray."""
    code = "import sys, tuner.schedulers, tuner.config.checks; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
