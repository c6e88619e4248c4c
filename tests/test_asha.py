"""ASHA's decisions after a resume are the decisions of the uninterrupted search."""

import pickle
from types import SimpleNamespace

import numpy as np

from tuner.asha import PersistentASHA


def _scheduler(path):
    return PersistentASHA(state_path=str(path), time_attr="epoch", metric="val_acc", mode="max", max_t=9,
                          grace_period=1, reduction_factor=3)  # fmt: skip


def _events(seed=0, trials=12):
    """Trials report epochs 1..9 in an interleaved order, each with its own quality."""
    rng = np.random.default_rng(seed)
    quality = {f"t{i}": rng.uniform(0.2, 0.9) for i in range(trials)}
    events = [(f"t{i}", epoch, quality[f"t{i}"] * epoch / 9) for epoch in range(1, 10) for i in range(trials)]
    return events


def _replay(schedulers, events, *, split):
    """Feed events to schedulers[0] until ``split``, then to schedulers[1]; returns every decision."""
    trials, stopped, actions = {}, set(), []
    for k, (tid, epoch, acc) in enumerate(events):
        scheduler = schedulers[0] if k < split else schedulers[1]
        if tid in stopped:
            continue
        if tid not in trials:
            trials[tid] = SimpleNamespace(trial_id=tid)
        if k == split or tid not in scheduler._trial_info:
            scheduler.on_trial_add(None, trials[tid])
        action = scheduler.on_trial_result(None, trials[tid], {"epoch": epoch, "val_acc": acc})
        actions.append((tid, epoch, action))
        if action == "STOP":
            stopped.add(tid)
    return actions


def test_a_resumed_scheduler_decides_as_the_uninterrupted_one(tmp_path):
    events = _events()
    split = 2 * 12 + 6  # in the middle of the rung at epoch 3: half its records are made before the resume
    whole = _replay([_scheduler(tmp_path / "a.json")] * 2, events, split=len(events))

    first = _scheduler(tmp_path / "b.json")
    restored = pickle.loads(pickle.dumps(_scheduler(tmp_path / "b.json")))  # as Tune unpickles it on resume
    resumed = _replay([first, restored], events, split=split)
    assert resumed == whole
    assert any(action == "STOP" for _, _, action in whole)

    # Without the saved rungs, the resumed search decides differently: the test can fail.
    forgetful = _replay([_scheduler(tmp_path / "c.json"), _scheduler(tmp_path / "missing.json")], events, split=split)
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
