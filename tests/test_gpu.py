"""What only a GPU shows: no host syncs in the hot loop, memory caps, out-of-memory trials, bf16 evaluation.

Every test here is marked ``gpu`` and skipped on a machine without CUDA.
"""

import contextlib
import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

from tests.conftest import ROOT
from tests.test_end_to_end import search_kwargs
from trainables import augment, checkpoint, loop
from trainables.data import synthetic_images

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda", 0)


@contextlib.contextmanager
def without_tf32():
    """Full float32 matmuls and convolutions on the GPU (cuDNN uses TF32, 10 significant bits, by default)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def small_config(**extra) -> dict:
    config = {"lr": 11.5, "momentum": 0.85, "weight_decay": 0.0153, "batch_size": 256, "label_smoothing": 0.2,
              "width": 0.25, "arch": "airbench", "flip": "alternate", "lookahead": True, "tta": 2, "warmup": 0.23,
              "translate": 2, "whiten_bias_epochs": 1, "epochs": 2, "seed": 0}  # fmt: skip
    return {**config, **extra}


def device_data(n: int = 2560, *, device: torch.device = CUDA) -> loop.DeviceData:
    x, y = synthetic_images(n, seed=0)
    cut = n * 4 // 5
    arrays = {"train_x": x[:cut], "train_y": y[:cut], "val_x": x[cut:], "val_y": y[cut:]}
    return loop.DeviceData.from_arrays(arrays, device=device)


def test_training_steps_never_wait_for_the_gpu():
    data = device_data()
    run = loop._setup(small_config(), data, device=CUDA, rank=0, world_size=1, compile=False)
    generator = torch.Generator(device=CUDA).manual_seed(0)
    order = torch.randperm(len(data.train_y), device=CUDA, generator=generator)
    # The first step allocates and autotunes; then a step must queue without any host sync.
    draws = [augment.draw(256, translate=2, generator=generator, device=CUDA) for _ in range(3)]
    run.step(order[:256], draws[0])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i, d in enumerate(draws[1:], start=1):
            idx = order[i * 256 : (i + 1) * 256]
            run.step(idx, d.with_flips(augment.alternating_flips(run.flip_base, idx, epoch=2)))
        augment.normalize(data.val_x[:100])
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_trials_memory_cap_holds(tmp_path):
    # In a process of its own: the cap is per process and would bind the other tests.
    script = textwrap.dedent(
        """
        import torch
        from trainables.device import memory_fraction
        from tuner.trial.process import prepare_device
        from tuner.trial.settings import TrialSettings
        device = torch.device("cuda", 0)
        prepare_device(device, TrialSettings(tracking_uri="", gpus_per_worker=0.25))
        assert torch.backends.cudnn.benchmark
        total = torch.cuda.get_device_properties(device).total_memory
        cap = memory_fraction(0.25, total_bytes=total) * total  # its share less a CUDA context's room
        small = torch.empty(int(0.8 * cap), dtype=torch.uint8, device=device)  # within its cap
        try:
            torch.empty(int(0.3 * cap), dtype=torch.uint8, device=device)  # 1.1 caps in all: over it
        except torch.cuda.OutOfMemoryError:
            print("capped")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "capped"


def test_bf16_evaluation_matches_fp32():
    data = device_data()
    trained = loop.train(small_config(epochs=3), data=data, device=CUDA, report=lambda m, s: None)
    bf16 = loop.evaluate(trained, data.val_x, data.val_y, tta=2)
    cpu = device_data(device=torch.device("cpu"))
    fp32 = loop.evaluate(trained.cpu().float(), cpu.val_x, cpu.val_y, tta=2)
    # bf16 keeps 8 bits of mantissa: the loss moves in its third digit, a handful of close calls flip.
    assert bf16[0] == pytest.approx(fp32[0], rel=0.02)
    assert abs(bf16[1] - fp32[1]) <= 0.01


def test_a_checkpoint_saved_on_gpu_loads_on_cpu(tmp_path):
    data = device_data()
    states = []
    model = loop.train(small_config(), data=data, device=CUDA, report=lambda m, state: states.append(state()))
    checkpoint.save(states[-1], tmp_path)
    on_cpu, config = checkpoint.load_model(tmp_path, device="cpu"), checkpoint.load(tmp_path)["config"]
    assert config["width"] == 0.25 and all(p.device.type == "cpu" for p in on_cpu.parameters())
    x = augment.normalize(data.val_x[:64])
    with torch.no_grad(), without_tf32():  # in TF32 the GPU's convolutions would differ from the CPU's at 1e-3
        expected = model.eval().float()(x.contiguous(memory_format=torch.channels_last)).cpu()
        got = on_cpu(x.cpu())
    assert torch.allclose(got, expected, atol=1e-3, rtol=1e-3)


def test_tta_logits_are_summed_in_float32():
    model = loop.prepare_model(small_config(), device_data(), device=CUDA).eval()
    x = augment.normalize(device_data().val_x[:8]).contiguous(memory_format=torch.channels_last)
    with loop.autocast(CUDA), torch.no_grad():
        assert loop._tta_logits(model, x, 2).dtype == torch.float32


@pytest.mark.slow
def test_an_out_of_memory_trial_ends_infeasible_while_the_others_finish(tmp_path, cifar_dir):
    import ray

    import tuner

    ray.init(num_cpus=8, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        # width 24 at batch 2048 needs far more than a quarter of any GPU; width 0.125 a sliver.
        tuner.search(**search_kwargs(tmp_path, cifar_dir, "oom", num_samples=6, max_epochs=2, grace_period=2,
                                     gpus_per_trial=0.25, params={"width": [0.125, 24], "batch_size": 2048}))
    finally:
        ray.shutdown()
    frame = pd.read_csv(tmp_path / "runs" / "oom" / "results.csv")
    wide = frame["config/width"] == 24
    assert wide.any() and (~wide).any(), "the seed should draw both widths"
    assert (frame.loc[wide, "status"] == "infeasible").all()
    assert (frame.loc[~wide, "status"] == "completed").all()
    best = json.loads((tmp_path / "runs" / "oom" / "best_config.json").read_text())
    assert best["config"]["width"] == 0.125 and best["test_acc"] > 0


def test_imagefolder_trains_channels_last_under_bf16_autocast():
    from trainables import imagefolder
    from trainables.task import TrialContext

    x, y = synthetic_images(320, seed=0)  # (N, 3, 32, 32) uint8
    data = {"train_x": x[:256], "train_y": y[:256], "val_x": x[256:], "val_y": y[256:], "classes": list("abcdefghij"),
            "channels": 3, "mean": [120.0] * 3, "std": [60.0] * 3, "image_size": 32, "key": "gpu-format-test"}
    config = {"model": "small_cnn", "width": 0.5, "lr": 1e-3, "weight_decay": 0.0, "batch_size": 64,
              "label_smoothing": 0.0, "flip": True, "translate": 2, "epochs": 1, "seed": 0}  # fmt: skip
    seen, reports = [], []
    original = torch.nn.Conv2d.forward

    def watched(self, x):
        out = original(self, x)
        seen.append((x.is_contiguous(memory_format=torch.channels_last),
                     self.weight.is_contiguous(memory_format=torch.channels_last), out.dtype))  # fmt: skip
        return out

    torch.nn.Conv2d.forward = watched
    try:
        imagefolder.TASK.train(config, data, TrialContext(device=CUDA, reporter=lambda m, s: reports.append(m)))
    finally:
        torch.nn.Conv2d.forward = original
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    assert seen and all(s == (True, True, expected) for s in seen), set(seen)
    assert reports[-1]["epoch"] == 1 and 0 <= reports[-1]["val_acc"] <= 1
