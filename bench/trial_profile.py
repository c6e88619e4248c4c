"""Where one trial's time goes on a GPU: start-up, training steps, evaluation, checkpoints, and the kernels.

Trains the default recipe (the ``cifar`` space's reference config) on a
trial's 45,000-image split, as one trial does, and times each phase with the
device synchronised at its end: CUDA initialisation, the upload of the data,
building the network, the first step (cuDNN autotuning), each epoch's training,
its evaluation (with the space's test-time augmentation, and without it, as at the
epochs no scheduler judges) and its checkpoint
(state dict to a file). The second epoch's steps run under the torch profiler:
the share of the wall-clock the GPU spent in kernels, and the kernels that
took longest. The baseline in the same run is the training step alone.

    python bench/trial_profile.py --data-dir data             # real images
    python bench/trial_profile.py --smoke                     # synthetic data (CPU or GPU)
    python bench/trial_profile.py --data-dir data --json profile.json   # the figures as JSON too
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import default_recipe, load_splits, machine, table, write_json

from trainables import augment, checkpoint
from trainables.device import prepare_cuda
from trainables.loop import DeviceData, _setup, evaluate


def _timed(device: torch.device, fn):
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def kernel_share(device: torch.device, run, generator, *, epoch: int) -> tuple[float, float, str]:
    """One epoch under the profiler: (wall s, GPU kernel s, top kernels)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        _, wall = _timed(device, lambda: run.epoch(epoch, generator))
    events = prof.key_averages()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    busy = sum(getattr(e, attr) for e in events if e.device_type.name == device.type.upper()) / 1e6
    top = events.table(sort_by=attr, row_limit=12)
    return wall, busy, top


def build_parser() -> argparse.ArgumentParser:
    """The command line (bench/gpu_check.py parses its planned arguments with it in a dry run)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py (default: synthetic)")
    p.add_argument("--smoke", action="store_true", help="synthetic data, narrow network, 2 epochs")
    p.add_argument("--epochs", type=int, default=3, help="epochs timed (the profiler watches the second)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures there")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    t_start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    prepare_cuda(device)  # cuDNN autotuning, as a trial has it: the first step pays for it
    _, cuda_init = _timed(device, lambda: torch.zeros(1, device=device))
    splits = load_splits(None if args.smoke else args.data_dir)
    config = default_recipe(epochs=args.epochs)
    if args.smoke:
        config.update(width=0.25, batch_size=256)
    arrays = {k: getattr(splits, k) for k in ("train_x", "train_y", "val_x", "val_y")}
    data, upload = _timed(device, lambda: DeviceData.from_arrays(arrays, device=device))
    run, build = _timed(device, lambda: _setup(config, data, device=device, rank=0, world_size=1, compile=False))
    generator = torch.Generator(device=device)
    idx = torch.arange(run.batch_size, device=device)
    d = augment.draw(run.batch_size, translate=2, generator=generator, device=device)
    _, first_step = _timed(device, lambda: run.step(idx, d))
    print(f"machine: {machine()}; {len(splits.train_y)} training images; config {config}")
    startup = [
        {"phase": "CUDA initialisation", "seconds": cuda_init},
        {"phase": "data upload to the device", "seconds": upload},
        {"phase": "network, optimizer, whitening", "seconds": build},
        {"phase": "first step (autotuning, allocation)", "seconds": first_step},
    ]
    print(table(startup))
    rows, top = [], ""
    tta = int(config["tta"])
    for epoch in range(1, args.epochs + 1):
        if epoch == 2:
            train_s, kernels_s, top = kernel_share(device, run, generator, epoch=epoch)
        else:
            _, train_s = _timed(device, lambda e=epoch: run.epoch(e, generator))
            kernels_s = float("nan")
        _, eval_s = _timed(device, lambda: evaluate(run.raw_model, data.val_x, data.val_y, tta=tta))
        # What an epoch no scheduler judges costs instead: the evaluation without TTA (trainables.loop).
        _, eval0_s = _timed(device, lambda: evaluate(run.raw_model, data.val_x, data.val_y, tta=0))
        with tempfile.TemporaryDirectory() as folder:
            _, ckpt_s = _timed(device, lambda e=epoch, f=folder: checkpoint.save(run.state(e), Path(f)))
            size = (Path(folder) / checkpoint.FILENAME).stat().st_size
        total = train_s + eval_s + ckpt_s
        rows.append({"epoch": epoch, "train_s": train_s, "eval_s": eval_s, "eval_tta0_s": eval0_s,
                     "checkpoint_s": ckpt_s,
                     "checkpoint_MB": size / 1e6, "eval_share": eval_s / total, "checkpoint_share": ckpt_s / total,
                     "images_per_s": run.steps_per_epoch * run.batch_size / train_s,
                     "gpu_kernel_share_of_train": kernels_s / train_s})  # fmt: skip
    print(table(rows))
    eval_s, eval0_s = (sum(r[k] for r in rows[1:] or rows) for k in ("eval_s", "eval_tta0_s"))
    print(f"evaluation with TTA {tta} / without: {eval_s / eval0_s:.1f}x (the epochs after the first); an epoch "
          f"no scheduler judges skips TTA")  # fmt: skip
    write_json(args.json, {"machine": machine(), "device": device.type, "startup": startup, "epochs": rows,
                           "wall_s": time.perf_counter() - t_start})  # fmt: skip
    print(f"wall-clock of this script after imports: {time.perf_counter() - t_start:.1f} s")
    print(f"kernels of epoch 2, by {'GPU' if device.type == 'cuda' else 'CPU'} time:\n{top}")


if __name__ == "__main__":
    main()
