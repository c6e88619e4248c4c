"""Images/s and seconds to a target accuracy: the default recipe, against the same network fed by a DataLoader.

Both runs train the same network with the same optimizer, schedule, lookahead
and loss, and evaluate the same way; only the input pipeline differs. Ours
keeps the uint8 dataset on the device and augments whole batches there,
alternating each image's flip between epochs; the baseline is the usual
torchvision pipeline (per-sample transforms in DataLoader workers, random flips).

    python bench/trainable.py --data-dir data                # the default recipe on real CIFAR-10 (a GPU)
    python bench/trainable.py --smoke                        # tiny, synthetic data, CPU (what CI runs)
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from common import default_recipe, load_splits, machine, table
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from trainables.data import MEAN, STD, Splits
from trainables.device import prepare_cuda
from trainables.loop import DeviceData, autocast, evaluate, prepare_model, train
from trainables.optim import Lookahead, build_optimizer, build_schedule


class ArrayDataset(Dataset):
    """uint8 (N, 3, 32, 32) images with per-sample torchvision transforms."""

    def __init__(self, x, y, *, translate: int) -> None:
        self.x, self.y = x, y
        self.transform = v2.Compose([
            v2.RandomCrop(32, padding=translate, padding_mode="reflect"),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ])  # fmt: skip

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.transform(torch.from_numpy(self.x[i])), int(self.y[i])


def _summary(name: str, epochs: list[dict[str, Any]], target: float, test_acc: float) -> dict[str, Any]:
    elapsed, reached = 0.0, None
    for m in epochs:
        elapsed += m["epoch_time_s"]
        if reached is None and m["val_acc"] >= target:
            reached = elapsed
    rates = [m["images_per_s"] for m in epochs[1:]] or [epochs[0]["images_per_s"]]
    return {
        "pipeline": name,
        "images_per_s": statistics.median(rates),
        "s_to_target": reached if reached is not None else float("nan"),
        "total_s": elapsed,
        "val_acc": epochs[-1]["val_acc"],
        "test_acc": test_acc,
    }


def _test_acc(model: torch.nn.Module, splits: Splits, device: torch.device, tta: int) -> float:
    x, y = torch.from_numpy(splits.test_x).to(device), torch.from_numpy(splits.test_y).to(device)
    return evaluate(model, x, y, tta=tta)[1]


def run_device_pipeline(config: dict[str, Any], splits: Splits, device: torch.device, target: float) -> dict:
    data = DeviceData.from_arrays(vars(splits), device=device)
    epochs: list[dict[str, Any]] = []
    final: dict[str, Any] = {}

    def report(metrics: dict[str, Any], state) -> None:
        epochs.append(metrics)
        if metrics["epoch"] == config["epochs"]:
            final.update(state())

    train(config, data=data, device=device, report=report)
    model = prepare_model(config, data, device=device)
    model.load_state_dict(final["model"])
    return _summary("device-resident (ours)", epochs, target, _test_acc(model, splits, device, config["tta"]))


def run_dataloader(config: dict[str, Any], splits: Splits, device: torch.device, target: float, workers: int) -> dict:
    data = DeviceData.from_arrays(vars(splits), device=device)  # for whitening and evaluation only
    model = prepare_model(config, data, device=device)
    optimizer = build_optimizer(model, config)
    batch = int(config["batch_size"])
    loader = DataLoader(
        ArrayDataset(splits.train_x, splits.train_y, translate=int(config["translate"])),
        batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )  # fmt: skip
    total_steps = config["epochs"] * len(loader)
    schedule = build_schedule(optimizer, total_steps=total_steps, warmup=config["warmup"],
                              freeze_whiten_after=config["whiten_bias_epochs"] * len(loader))  # fmt: skip
    lookahead = Lookahead(model, total_steps=total_steps) if config["lookahead"] else None
    epochs = []
    for epoch in range(1, config["epochs"] + 1):
        t0 = time.perf_counter()
        model.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=config["label_smoothing"], reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if lookahead is not None:
                lookahead.step(schedule.last_epoch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        _, val_acc = evaluate(model, data.val_x, data.val_y, tta=config["tta"])
        epochs.append({"epoch": epoch, "val_acc": val_acc, "epoch_time_s": time.perf_counter() - t0,
                       "images_per_s": len(loader) * batch / train_s})  # fmt: skip
    return _summary(
        f"torchvision DataLoader ({workers} workers)", epochs, target, _test_acc(model, splits, device, config["tta"])
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py (default: synthetic data)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--target", type=float, default=0.90, help="validation accuracy to time")
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers of the baseline")
    p.add_argument("--width", type=float, default=None, help="override the recipe's width")
    p.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    p.add_argument("--train-size", type=int, default=None, help="train on a slice of the training images")
    p.add_argument("--smoke", action="store_true", help="tiny: synthetic data, narrow net, 2 epochs, CPU")
    args = p.parse_args()
    if args.smoke:
        args.epochs, args.target, args.workers = 2, 0.3, 1
        args.width, args.batch_size, args.train_size = args.width or 0.125, args.batch_size or 256, 2000
        torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    prepare_cuda(device)  # cuDNN autotuning, as a trial has it (both pipelines)
    config = default_recipe(epochs=args.epochs)
    config.update({k: v for k, v in (("width", args.width), ("batch_size", args.batch_size)) if v is not None})
    splits = load_splits(args.data_dir, train_size=args.train_size)
    print(f"machine: {machine()}; device {device}; data: {splits.sizes()}")
    print(f"recipe: {config}")
    ours = run_device_pipeline(config, splits, device, args.target)
    baseline = run_dataloader(config, splits, device, args.target, args.workers)
    print(table([ours, baseline]))
    print(f"speed-up, images/s: {ours['images_per_s'] / baseline['images_per_s']:.2f}x")
    if ours["s_to_target"] == ours["s_to_target"] and baseline["s_to_target"] == baseline["s_to_target"]:
        print(f"speed-up, seconds to val_acc {args.target}: {baseline['s_to_target'] / ours['s_to_target']:.2f}x")
    else:
        print(f"seconds to val_acc {args.target}: not reached by both pipelines")


if __name__ == "__main__":
    main()
