"""The Ray-free training path: model, augmentation, optimizer, loop, checkpoints."""

import copy
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables import augment, checkpoint
from trainables.data import synthetic_images
from trainables.loop import DeviceData, evaluate, prepare_model, train
from trainables.models import build_model, count_parameters, widths_for
from trainables.optim import Lookahead, build_optimizer, build_schedule
from trainables.task import Diverged

CONFIG = dict(
    lr=10.0,
    momentum=0.85,
    weight_decay=0.015,
    batch_size=64,
    label_smoothing=0.2,
    width=0.125,
    arch="airbench",
    epochs=3,
    seed=0,
    warmup=0.23,
    translate=2,
    flip="alternate",
    lookahead=True,
    whiten_bias_epochs=1,  # frozen from the second epoch: resuming crosses the freeze
    tta=0,
)


@pytest.fixture(scope="module")
def tiny_data():
    x, y = synthetic_images(640, seed=3)
    return DeviceData.from_arrays(
        {"train_x": x[:512], "train_y": y[:512], "val_x": x[512:], "val_y": y[512:]}, device=torch.device("cpu")
    )


def test_model_shapes_and_widths():
    assert widths_for(1.0) == (64, 256, 256)
    assert widths_for(0.125) == (8, 32, 32)
    small, big = build_model({"arch": "airbench", "width": 0.5}), build_model({"arch": "airbench", "width": 1.0})
    assert count_parameters(small) < count_parameters(big)
    out = small(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10)
    with pytest.raises(ValueError, match="unknown arch"):
        build_model({"arch": "vgg", "width": 1.0})


def test_whitening_decorrelates_patches():
    model = build_model({"arch": "airbench", "width": 0.125})
    x, _ = synthetic_images(256, seed=0)
    images = augment.normalize(torch.from_numpy(x))
    model.init_whitening(images)
    with torch.no_grad():
        out = model.whiten(images) - model.whiten.bias.view(1, -1, 1, 1)
    feats = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    second_moment = feats.T @ feats / len(feats)  # whitened 2x2 patches: about the identity
    assert torch.allclose(second_moment, torch.eye(12), atol=0.02)
    assert torch.equal(model.whiten.weight[12:], -model.whiten.weight[:12])


def _smooth_images(n: int, *, seed: int) -> torch.Tensor:
    """Normalised (n, 3, 32, 32) images whose neighbouring pixels and channels are as correlated as photographs'."""
    generator = torch.Generator().manual_seed(seed)
    shapes = torch.randn(n, 1, 6, 6, generator=generator)
    tints = torch.randn(n, 3, 3, 3, generator=generator)
    x = F.interpolate(shapes, size=32, mode="bicubic") + 0.2 * F.interpolate(tints, size=32, mode="bilinear")
    x = x + 0.01 * torch.randn(n, 3, 32, 32, generator=generator)
    return (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)


def test_whitening_keeps_float32_under_bf16_autocast():
    # The whitening filters' entries reach 5-25: in bf16 (8 significant bits) the high-variance directions
    # leak into the low-variance channels. The network runs the layer in float32 under autocast.
    model = build_model({"arch": "airbench", "width": 0.125}).eval()
    images = _smooth_images(256, seed=0)
    model.init_whitening(images)
    assert model.whiten.weight.abs().max() > 5
    seen = []
    model.whiten.register_forward_hook(lambda module, args, out: seen.append(out))
    with torch.no_grad():
        exact = model.whiten(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(images)
            raw_bf16 = model.whiten(images)  # the layer alone, as autocast would run it
    assert logits.dtype == torch.bfloat16  # the rest of the network stays under autocast

    def error(out: torch.Tensor) -> torch.Tensor:  # (24,) relative RMS error per channel
        return ((out.float() - exact).pow(2).mean((0, 2, 3)) / exact.pow(2).mean((0, 2, 3))).sqrt()

    low_variance = slice(6, 12)  # filters come in descending order of their patches' variance
    assert error(raw_bf16)[low_variance].max() > 0.05  # what the network would see in bf16
    assert error(seen[1])[low_variance].max() < 1e-3 and seen[1].dtype == torch.float32


def test_augmentation_translates_and_flips_whole_batches():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    d = augment.draw(2, translate=2, generator=gen, device=torch.device("cpu"))
    out = augment.apply(x, d, translate=2, flip=True)
    assert out.shape == x.shape
    identity = augment.AugmentDraw(torch.tensor([2, 2]), torch.tensor([2, 2]), torch.tensor([False, True]))
    same = augment.apply(x, identity, translate=2, flip=True)
    assert torch.equal(same[0], x[0]) and torch.equal(same[1], x[1].flip(2))
    shifted = augment.AugmentDraw(torch.tensor([3, 2]), torch.tensor([2, 2]), torch.tensor([False, False]))
    assert torch.equal(augment.apply(x, shifted, translate=2, flip=False)[0, :, :-1], x[0, :, 1:])


def test_alternating_flips_show_every_image_both_ways_every_two_epochs():
    base = torch.rand(100, generator=torch.Generator().manual_seed(0)) < 0.5
    idx = torch.randperm(100)
    odd, even = (augment.alternating_flips(base, idx, epoch=e) for e in (3, 4))
    assert torch.equal(odd, base[idx]) and torch.equal(odd ^ even, torch.ones(100, dtype=torch.bool))
    assert augment.flip_mode(True) == "random" and augment.flip_mode(False) == "none"
    with pytest.raises(ValueError, match="alternate"):
        augment.flip_mode("sideways")


def test_optimizer_groups_and_schedule():
    model = build_model({"arch": "airbench", "width": 0.125})
    opt = build_optimizer(model, CONFIG)
    norm_group, other, whiten = opt.param_groups
    assert norm_group["lr"] == pytest.approx(other["lr"] * 64)
    assert whiten["params"] == [model.whiten.bias] and whiten["lr"] == other["lr"]
    assert all(p is not model.whiten.bias for p in other["params"])
    assert other["nesterov"] and other["momentum"] == 0.85
    schedule = build_schedule(opt, total_steps=100, warmup=0.25, freeze_whiten_after=30)
    factors, whiten_lrs = [], []
    for _ in range(100):
        factors.append(schedule.get_last_lr()[1] / other["initial_lr"])
        whiten_lrs.append(schedule.get_last_lr()[2])
        opt.step()
        schedule.step()
    assert factors[0] == pytest.approx(0.2) and max(factors) == pytest.approx(1.0)
    assert factors[-1] < 0.1
    assert all(lr > 0 for lr in whiten_lrs[:30]) and all(lr == 0 for lr in whiten_lrs[30:])
    assert len(build_optimizer(build_model({"arch": "resnet18", "width": 0.125}), CONFIG).param_groups) == 2


def test_lookahead_averages_then_hands_over_the_average():
    layer = torch.nn.Linear(1, 1, bias=False)
    layer.weight.data.fill_(0.0)
    ahead = Lookahead(layer, total_steps=10, every=5)
    layer.weight.data.fill_(1.0)
    ahead.step(4)  # not a multiple of 5: nothing happens
    assert layer.weight.item() == 1.0
    ahead.step(5)  # decay 0.95**5 * 0.5**3: the average moves most of the way to the live weights
    decay = 0.95**5 * 0.5**3
    assert layer.weight.item() == pytest.approx(1 - decay) and ahead.average[0].item() == pytest.approx(1 - decay)
    layer.weight.data.fill_(5.0)
    ahead.step(10)  # the last step: the network takes the average, whatever it held
    assert layer.weight.item() == pytest.approx(1 - decay)
    restored = Lookahead(layer, total_steps=10, every=5)
    restored.load_state_dict(ahead.state_dict())
    assert restored.average[0].item() == pytest.approx(1 - decay)


def test_whitening_bias_stops_moving_after_its_epochs(tiny_data):
    config = {**CONFIG, "lookahead": False}  # lookahead would go on pulling it towards its average
    initial = prepare_model(config, tiny_data, device=torch.device("cpu")).whiten.bias.detach()
    frozen = [state["model"]["whiten.bias"] for _, state in _run(config, tiny_data)]  # whiten_bias_epochs=1
    assert not torch.equal(initial, frozen[0])  # trained in the first epoch
    assert torch.equal(frozen[0], frozen[1]) and torch.equal(frozen[1], frozen[2])
    free = [state["model"]["whiten.bias"] for _, state in _run({**config, "whiten_bias_epochs": None}, tiny_data)]
    assert not torch.equal(free[1], free[2])


def _run(config, data, start=None, stop_after=None):
    reports = []

    def report(metrics, state):
        reports.append((metrics, copy.deepcopy(state())))  # state() shares the live tensors
        if stop_after and len(reports) == stop_after:
            raise KeyboardInterrupt

    try:
        train(config, data=data, device=torch.device("cpu"), report=report, start=start)
    except KeyboardInterrupt:
        pass
    return reports


def test_training_learns_and_reports_every_epoch(tiny_data):
    reports = _run(CONFIG, tiny_data)
    assert [m["epoch"] for m, _ in reports] == [1, 2, 3]
    metrics = reports[-1][0]
    for key in ("val_acc", "val_loss", "train_loss", "epoch_time_s", "images_per_s"):
        assert np.isfinite(metrics[key]), key
    assert metrics["val_acc"] > 0.3  # chance is 0.1
    assert reports[-1][0]["train_loss"] < reports[0][0]["train_loss"]


def test_resume_continues_exactly(tiny_data):
    full = _run(CONFIG, tiny_data)
    first = _run(CONFIG, tiny_data, stop_after=1)
    resumed = _run(CONFIG, tiny_data, start=first[-1][1])
    assert [m["epoch"] for m, _ in resumed] == [2, 3]
    assert resumed[-1][0]["val_loss"] == pytest.approx(full[-1][0]["val_loss"], rel=1e-5)
    assert resumed[-1][0]["val_acc"] == full[-1][0]["val_acc"]


def test_same_seed_same_result_other_seed_differs(tiny_data):
    one = _run({**CONFIG, "epochs": 1}, tiny_data)[-1][0]
    two = _run({**CONFIG, "epochs": 1}, tiny_data)[-1][0]
    other = _run({**CONFIG, "epochs": 1, "seed": 1}, tiny_data)[-1][0]
    assert one["val_loss"] == two["val_loss"]
    assert one["val_loss"] != other["val_loss"]


def test_divergence_is_reported(tiny_data):
    with pytest.raises(Diverged, match="not finite|nan|inf"):
        _run({**CONFIG, "lr": 1e12, "epochs": 2}, tiny_data)


def test_checkpoint_roundtrip_reproduces_val_acc(tmp_path, tiny_data):
    metrics, state = _run(CONFIG, tiny_data)[-1]
    checkpoint.save(state, tmp_path)
    model, config = checkpoint.load_model(tmp_path), checkpoint.load(tmp_path)["config"]
    assert config == CONFIG
    assert evaluate(model, tiny_data.val_x, tiny_data.val_y)[1] == metrics["val_acc"]
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        checkpoint.load(tmp_path / "nothing")


def test_the_recipe_comes_from_the_config_alone(tiny_data):
    from search_spaces import get_space
    from trainables.loop import RECIPE_KEYS
    from tuner.driver.space import param_space

    lacking = {k: v for k, v in CONFIG.items() if k not in ("translate", "tta")}
    with pytest.raises(ValueError, match="the config lacks tta, translate: .*search_spaces/cifar.yaml"):
        train(lacking, data=tiny_data, device=torch.device("cpu"), report=lambda m, s: None)
    # Every trial of the cifar space gets every value the recipe reads.
    assert set(RECIPE_KEYS) <= set(param_space(get_space("cifar"), max_epochs=2, seed=0))


def test_resnet18_trains(tiny_data):
    reports = _run({**CONFIG, "arch": "resnet18", "width": 0.125, "epochs": 1}, tiny_data)
    assert np.isfinite(reports[-1][0]["train_loss"])
    assert (
        count_parameters(build_model({"arch": "resnet18", "width": 1.0})) == 11_173_962
    )  # the standard CIFAR ResNet-18


def test_test_time_augmentation_levels():
    from trainables.loop import _tta_logits

    torch.manual_seed(0)
    model = build_model({"arch": "airbench", "width": 0.125}).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        plain, flips = model(x), 0.5 * (model(x) + model(x.flip(3)))
        assert torch.equal(_tta_logits(model, x, 0), plain)
        assert torch.allclose(_tta_logits(model, x, 1), flips)
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        up, down = padded[:, :, :32, :32], padded[:, :, 2:, 2:]
        expected = 0.5 * flips + 0.125 * (model(up) + model(up.flip(3)) + model(down) + model(down.flip(3)))
        assert torch.allclose(_tta_logits(model, x, 2), expected, atol=1e-6)


def test_evaluation_with_tta_is_reported(tiny_data):
    with_tta = _run({**CONFIG, "epochs": 1, "tta": 2}, tiny_data)[-1][0]
    without = _run({**CONFIG, "epochs": 1, "tta": 0}, tiny_data)[-1][0]
    assert with_tta["train_loss"] == without["train_loss"]  # TTA changes evaluation only
    assert with_tta["val_loss"] != without["val_loss"]


@pytest.mark.slow
def test_compile_is_timed_apart_and_changes_nothing(tiny_data):
    eager = _run({**CONFIG, "epochs": 1}, tiny_data)[-1][0]
    reports = []
    t0 = time.perf_counter()
    train(
        {**CONFIG, "epochs": 1},
        data=tiny_data,
        device=torch.device("cpu"),
        compile=True,
        report=lambda m, s: reports.append(m),
    )
    wall = time.perf_counter() - t0
    compiled = reports[-1]
    assert compiled["compile_time_s"] > 0 and eager["compile_time_s"] == 0
    # Compilation happens before the epoch's clock starts: the two add up within the wall-clock
    # (a comparison of the two durations would depend on the machine's load and on compile caches).
    assert compiled["epoch_time_s"] + compiled["compile_time_s"] <= wall
    assert compiled["train_time_s"] <= compiled["epoch_time_s"]
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-3)


def test_errors_that_end_a_trial_for_good():
    import math

    from tuner.trial.process import early_end

    diverged = early_end(Diverged(epoch=3, loss=float("nan")), epoch=3, metric="val_acc")
    assert diverged["diverged"] == 1 and math.isnan(diverged["val_acc"])  # no score
    oom = early_end(torch.cuda.OutOfMemoryError("CUDA out of memory"), epoch=4, metric="rmse")
    assert oom["infeasible"] == 1 and oom["epoch"] == 4 and math.isnan(oom["rmse"])
    cublas = RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
    assert early_end(cublas, epoch=1, metric="val_acc")["infeasible"] == 1  # a library's out-of-memory too
    assert early_end(ValueError("a bug"), epoch=1, metric="val_acc") is None  # real errors stay errors (retried)


def test_an_out_of_memory_trial_is_recorded_as_infeasible():
    import pandas as pd

    from tuner.driver.summary import _best_score, _ended

    history = pd.DataFrame({"epoch": [1, 2, 3], "val_acc": [0.5, 0.6, 0.0], "infeasible": [None, None, 1]})
    assert _ended(history) == "infeasible"
    assert _ended(history.drop(columns="infeasible")) is None
    assert _best_score(history, metric="val_acc", mode="max") == 0.6


def test_checkpoint_policy_saves_rungs_last_epoch_and_after_its_period(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(checkpoint.time, "monotonic", lambda: clock[0])
    policy = checkpoint.CheckpointPolicy(epochs=(3, 9, 10), period_s=30.0)
    saved = []
    for epoch in range(1, 11):
        clock[0] += 4.0  # a 4-second epoch
        if policy.due(epoch, score=0.5, mode="max"):  # the first score is the trial's best: never beaten
            saved.append(epoch)
    assert saved == [1, 3, 9, 10]  # the period never ran out between them
    clock[0] += 31.0
    assert policy.due(11)  # 31 s since the last save
    every = checkpoint.CheckpointPolicy(epochs=(), period_s=0.0)
    assert all(every.due(e) for e in range(1, 5))


def test_checkpoint_policy_saves_every_new_best(monkeypatch):
    monkeypatch.setattr(checkpoint.time, "monotonic", lambda: 100.0)  # the period never runs out
    policy = checkpoint.CheckpointPolicy(epochs=(6,), period_s=30.0)
    scores = [0.5, 0.4, 0.6, 0.6, math.nan, None, 0.7]  # a tie, NaN and None are no new best
    saved = [e for e, s in enumerate(scores, start=1) if policy.due(e, score=s, mode="max")]
    assert saved == [1, 3, 6, 7]  # 6 is a rung
    lowest = checkpoint.CheckpointPolicy(period_s=30.0)
    losses = [math.nan, 0.9, 1.2, 0.8, 0.8]  # NaN first: the first score is still a new best
    assert [e for e, s in enumerate(losses, start=1) if lowest.due(e, score=s, mode="min")] == [2, 4]
    with pytest.raises(ValueError, match="mode is 'maximum', but must be 'max' or 'min'"):
        lowest.due(6, score=0.1, mode="maximum")


def test_tta_only_at_the_judged_epochs_and_the_best_epoch_is_one_of_them(tiny_data, monkeypatch):
    from trainables import loop

    levels = []

    def counted(*args, **kwargs):
        levels.append(kwargs["tta"])
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", counted)
    reports = []
    policy = checkpoint.CheckpointPolicy(epochs=(1, 3, 4), period_s=1e9)  # as a trial under ASHA with rungs 1, 3
    saved = []

    def report(metrics, state):
        reports.append(metrics)
        if policy.due(metrics["epoch"], score=metrics["val_acc"], mode="max"):
            saved.append(metrics["epoch"])

    train({**CONFIG, "epochs": 4, "tta": 2}, data=tiny_data, device=torch.device("cpu"), report=report,
          judged_epochs=frozenset({1, 3}))  # fmt: skip
    assert levels == [2, 0, 2, 2]  # TTA at the rungs and the last epoch only
    tta_epochs = [m["epoch"] for m in reports if not math.isnan(m["val_acc"])]
    assert tta_epochs == [1, 3, 4]
    cheap = reports[1]
    assert math.isnan(cheap["val_loss"]) and 0 <= cheap["val_acc_tta0"] <= 1 and cheap["val_loss_tta0"] > 0
    best = max((m for m in reports if not math.isnan(m["val_acc"])), key=lambda m: m["val_acc"])["epoch"]
    assert best in (1, 3, 4) and best in saved and set(saved) <= {1, 3, 4}
    # Without judged epochs (a task run by hand, the median rule, PBT): TTA at every epoch, as before.
    levels.clear()
    train({**CONFIG, "epochs": 2, "tta": 1}, data=tiny_data, device=torch.device("cpu"), report=lambda m, s: None)
    assert levels == [1, 1]


def test_the_schedulers_judged_epochs():
    from search_spaces import Budget
    from tuner import schedulers

    budget = Budget(num_samples=4, max_epochs=9, grace_period=1, reduction_factor=3)
    assert schedulers.get("asha").judged_epochs(budget) == (1, 3, 9)
    assert schedulers.get("fifo").judged_epochs(budget) is None  # the baseline: its curve scored every epoch
    assert schedulers.get("median").judged_epochs(budget) is None  # it averages every epoch's score
    assert schedulers.get("pbt").judged_epochs(budget) is None  # it compares the trials' latest scores


def test_a_ddp_checkpoint_of_an_epoch_scored_without_tta_ranks_below_every_scored_one():
    import sys

    from tuner.trial.ddp import checkpoint_score

    assert checkpoint_score(0.91, mode="max") == 0.91
    assert checkpoint_score(math.nan, mode="max") == -sys.float_info.max  # Train keeps it as a number, not None
    assert checkpoint_score(None, mode="min") == sys.float_info.max
    assert math.isfinite(checkpoint_score(math.inf, mode="max"))
