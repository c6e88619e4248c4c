"""The ``imagefolder`` task: a user's own images in the ImageFolder layout. Never imports Ray.

``--data-dir`` holds ``train/<class>/*.png|jpg|...``, and optionally ``val/``
and ``test/`` with the same class folders. Without ``val/`` (or ``test/``) a
seeded, stratified tenth of ``train/`` is held out for it. Images are decoded
once per search with torchvision, converted to the space's ``channels`` (1 for
grayscale, 3 for RGB) and resized to its ``image_size``, and every trial holds
them as uint8 tensors on its device, as the cifar task does, when they fit its
share of the device (``trainables.device``; else on the host, each batch
copied over): shuffling is a device ``randperm`` and augmentation (shifts,
flips) runs on whole batches; on CUDA, in channels-last under bf16 autocast.
A dataset too large to hold in memory is refused with the size that would fit.

Models: ``small_cnn`` (three conv blocks, ``width`` scales the channels) and
torchvision's ``resnet18``, ``mobilenet_v3_small`` and ``efficientnet_b0``,
optionally ``pretrained`` from torchvision's weights when they are in the
local cache. Every model starts with the
dataset's normalisation, so the registered model takes raw 0-255 pixels.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2.functional import resize, rgb_to_grayscale

from trainables import augment
from trainables import device as placement
from trainables.footprint import footprint
from trainables.task import Diverged, TaskData, TaskError, TrialContext, class_frame, on_device

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MAX_BYTES = 4 * 1024**3  # uint8 pixels a search holds in memory (on a device: trainables.device decides)
HOLD_OUT = 0.1  # share of each class held out of train/ for a missing val/ or test/
SPLIT_SEED = 0
EVAL_BATCH = 500


def _files(folder: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Image files under ``folder/<class>/`` with their class indices, and the class names."""
    if classes is None:
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    for i, name in enumerate(classes):
        found = [p for p in (folder / name).glob("*") if p.suffix.lower() in EXTENSIONS]
        files += sorted(found)
        labels += [i] * len(found)
    return files, labels, classes


def _decode(files: list[Path], *, channels: int, size: int) -> np.ndarray:
    """uint8 (N, channels, size, size); unreadable files are named in the error."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import resize

    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    out = np.empty((len(files), channels, size, size), dtype=np.uint8)
    bad = []
    for i, path in enumerate(files):
        try:
            image = decode_image(str(path), mode=mode)  # (C, H, W) uint8
        except (RuntimeError, ValueError, OSError):
            bad.append(path)
            continue
        out[i] = resize(image, [size, size], antialias=True).numpy()
    if bad:
        listed = ", ".join(str(p) for p in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise TaskError(f"{len(bad)} image(s) cannot be read: {listed}; remove or replace them")
    return out


def _stratified(labels: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): ``share`` of each class held out, at least one image of a class with two."""
    rng = np.random.default_rng(SPLIT_SEED)
    kept, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = min(len(idx) - 1, max(1, round(share * len(idx))))
        held.append(idx[:n])
        kept.append(idx[n:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


class Normalize(nn.Module):
    """Raw 0-255 pixels -> zero mean, unit variance per channel (the training images' statistics)."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def small_cnn(*, channels: int, classes: int, width: float) -> nn.Sequential:
    c = [max(8, round(w * width)) for w in (32, 64, 128)]
    layers: list[nn.Module] = []
    for c_in, c_out in zip((channels, *c[:-1]), c, strict=True):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                   nn.MaxPool2d(2)]  # fmt: skip
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c[-1], classes))


# torchvision's classifiers offered by name, with their weights' enum for ``pretrained``.
TORCHVISION = {
    "resnet18": "ResNet18_Weights",
    "mobilenet_v3_small": "MobileNet_V3_Small_Weights",
    "efficientnet_b0": "EfficientNet_B0_Weights",
}


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent), attribute, new)


def torchvision_net(name: str, *, channels: int, classes: int, pretrained: bool) -> nn.Module:
    """torchvision's ``name`` for ``channels``-channel images and ``classes`` classes.

    ``pretrained`` starts from torchvision's ImageNet weights, read from the local
    torch hub cache only (never downloaded): the classifier's last layer is new,
    and for grayscale the first convolution's filters are summed over RGB, so a
    gray image excites them as its RGB copy would.
    """
    import torchvision

    cached = None
    if pretrained:
        weights = getattr(torchvision.models, TORCHVISION[name]).DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cached.is_file():
            raise TaskError(
                f"pretrained {name} weights are not in the local cache ({cached}): on a machine with internet run "
                f"python -c \"import torchvision; torchvision.models.{name}(weights='DEFAULT')\" and copy the file "
                f"there, or set pretrained to false"
            )
    model = getattr(torchvision.models, name)(num_classes=1000 if pretrained else classes)
    if cached is not None:
        model.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
        head, linear = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
        _replace(model, head, nn.Linear(linear.in_features, classes))
    if channels != 3:
        first, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
        new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                        bias=conv.bias is not None)  # fmt: skip
        if cached is not None and channels == 1:
            with torch.no_grad():
                new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        _replace(model, first, new)
    return model


def build_network(config: dict[str, Any], *, channels: int, classes: int, mean: list[float], std: list[float],
                  pretrained: bool | None = None) -> nn.Module:  # fmt: skip
    """The space's ``model`` after the dataset's normalisation."""
    name = config["model"]
    if name == "small_cnn":
        body = small_cnn(channels=channels, classes=classes, width=float(config["width"]))
    elif name in TORCHVISION:
        body = torchvision_net(name, channels=channels, classes=classes,
                               pretrained=bool(config["pretrained"]) if pretrained is None else pretrained)  # fmt: skip
    else:
        raise TaskError(f"model is {name!r}, but must be one of {', '.join(MODELS)}")
    return nn.Sequential(Normalize(mean, std), body)


MODELS = ("small_cnn", *TORCHVISION)


class ImageFolderTask:
    """Classification of a folder of images per class; reports ``val_acc``, ``val_loss`` and ``train_loss``."""

    supports_ddp = True  # each rank trains on its part of every global batch (context.shard)

    def load(self, *, data_dir: str, smoke: dict[str, int] | None, constants: dict[str, Any]) -> TaskData:
        root = Path(data_dir)
        channels, size = int(constants["channels"]), int(constants["image_size"])
        if channels not in (1, 3):
            raise TaskError(f"the space's channels is {channels}, but must be 1 (grayscale) or 3 (RGB)")
        if not (root / "train").is_dir():
            raise TaskError(f"no {root / 'train'} folder: --data-dir must hold train/<class>/<images> (ImageFolder)")
        files, labels, classes = _files(root / "train")
        if not files:
            raise TaskError(f"no images ({', '.join(EXTENSIONS)}) under {root / 'train'}/<class>/: add some")
        if len(classes) < 2 or len(set(labels)) < 2:
            raise TaskError(f"{root / 'train'} has images of one class only: a classifier needs at least two")
        need = len(files) * channels * size * size
        if need > MAX_BYTES:
            fits = int(math.sqrt(MAX_BYTES / (len(files) * channels)))
            raise TaskError(
                f"{len(files)} images at {size}x{size} take {need / 1024**3:.1f} GiB, more than a search holds in "
                f"memory ({MAX_BYTES / 1024**3:.0f} GiB): set image_size to {fits} or less"
            )
        x, y = _decode(files, channels=channels, size=size), np.asarray(labels, dtype=np.int64)
        splits = {}
        for name in ("val", "test"):
            if (root / name).is_dir():
                f, lab, _ = _files(root / name, classes)
                if not f:
                    raise TaskError(f"{root / name} holds no images in class folders named as in train/: add some, "
                                    f"or remove it to hold out a tenth of train/ instead")  # fmt: skip
                splits[name] = (_decode(f, channels=channels, size=size), np.asarray(lab, dtype=np.int64))
            else:
                kept, held = _stratified(y, HOLD_OUT)
                splits[name] = (x[held], y[held])
                x, y = x[kept], y[kept]
        if smoke:  # seeded subsets: the images are stored class after class

            def subset(images: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
                keep = np.sort(np.random.default_rng(SPLIT_SEED).permutation(len(labels))[:n])
                return images[keep], labels[keep]

            x, y = subset(x, y, smoke["train_size"])
            splits = {k: subset(*splits[k], smoke[f"{k}_size"]) for k in ("val", "test")}
        counts = np.bincount(y, minlength=len(classes))
        mean = (x.reshape(len(x), channels, -1).mean(axis=(0, 2))).tolist()
        std = [max(s, 1.0) for s in x.reshape(len(x), channels, -1).std(axis=(0, 2)).tolist()]
        digest = hashlib.sha1(y.tobytes() + x[:16].tobytes()).hexdigest()
        trial = {"train_x": x, "train_y": y, "val_x": splits["val"][0], "val_y": splits["val"][1],
                 "classes": classes, "channels": channels, "mean": mean, "std": std, "image_size": size,
                 "key": f"{digest}-{len(y)}"}  # fmt: skip
        imbalance = counts.max() / max(counts.min(), 1)
        description = (f"{len(y)} train / {len(splits['val'][1])} val / {len(splits['test'][1])} test images, "
                       f"{len(classes)} classes, {channels}x{size}x{size}; "
                       f"images per class {counts.min()}..{counts.max()}"
                       + (f" (imbalanced {imbalance:.1f}:1)" if imbalance >= 2 else ""))  # fmt: skip
        example = np.ascontiguousarray(splits["test"][0][:2].transpose(0, 2, 3, 1))  # (N, H, W, C), as decoded
        # Any height, width and channels (1 or 3): the registered model converts and resizes as the search did.
        return TaskData(trial, {"x": splits["test"][0], "y": splits["test"][1]}, description, example,
                        example_shape=(-1, -1, -1, -1))  # fmt: skip

    def metrics(self, constants: dict[str, Any]) -> dict[str, str]:
        return {"val_acc": "max", "val_loss": "min", "train_loss": "min", "params": "min", "latency_ms": "min"}

    def config_keys(self, constants: dict[str, Any]) -> tuple[str, ...]:
        # Besides these, small_cnn reads width and the torchvision models read pretrained.
        return ("lr", "weight_decay", "batch_size", "label_smoothing", "model", "flip", "translate", "epochs", "seed")

    def _scores(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, confusion: torch.Tensor | None = None
    ) -> tuple[float, float]:
        """Mean cross-entropy and accuracy over images ``x`` (on the device or the host) and labels ``y`` (on the
        device); the sums stay on the device until one read at the end: no wait for the GPU per batch."""
        model.eval()
        device = y.device
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, correct
        with torch.no_grad(), placement.autocast(device):
            for i in range(0, len(y), EVAL_BATCH):
                images = placement.formatted(x[i : i + EVAL_BATCH].to(device, non_blocking=True))
                logits = model(images).float()
                truth, predicted = y[i : i + EVAL_BATCH], logits.argmax(1)
                sums[0] += F.cross_entropy(logits, truth, reduction="sum")
                sums[1] += (predicted == truth).sum()
                if confusion is not None:
                    confusion.index_put_((truth, predicted), torch.ones_like(truth), accumulate=True)
        loss, correct = sums.tolist()
        return loss / max(len(y), 1), correct / max(len(y), 1)

    def train(self, config: dict[str, Any], data: dict[str, Any], context: TrialContext) -> None:
        device = context.device
        d, where = _trial_data(data, device)
        if context.rank == 0:
            print(where.reason, flush=True)
        torch.manual_seed(int(config["seed"]))
        model = build_network(config, channels=data["channels"], classes=len(data["classes"]), mean=data["mean"],
                              std=data["std"]).to(device)  # fmt: skip
        model = placement.format_model(model, device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(config["lr"]),
                                      weight_decay=float(config["weight_decay"]))  # fmt: skip
        n, batch = len(d["train_y"]), min(int(config["batch_size"]), len(d["train_y"]))
        steps = max(1, n // batch)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=float(config["lr"]),
                                                       total_steps=int(config["epochs"]) * steps)  # fmt: skip
        first = 1
        if context.start is not None:
            model.load_state_dict(context.start["model"])
            optimizer.load_state_dict(context.start["optimizer"])
            schedule.load_state_dict(context.start["schedule"])
            first = int(context.start["epoch"]) + 1
        generator = torch.Generator(device=device)
        translate = int(config["translate"])
        net = context.distributed(model)  # DDP at world size > 1: gradients averaged over the ranks
        one = d["val_x"][:1].to(device)  # what the model costs to keep and to answer one image with

        def answer() -> torch.Tensor:
            with placement.autocast(device):
                return model(placement.formatted(one))

        size = footprint(model, answer, device=device)
        for epoch in range(first, int(config["epochs"]) + 1):
            generator.manual_seed(int(config["seed"]) * 100_003 + epoch)  # the same order again after a resume
            order = torch.randperm(n, device=device, generator=generator)
            rows = order if where.on_device else order.cpu()  # the order where the images are: one copy an epoch
            model.train()
            total = torch.zeros((), device=device)
            for step in range(steps):
                # The global batch and its augmentation, drawn alike on every rank; each trains on its part.
                part = slice(step * batch, (step + 1) * batch)
                idx = order[part]
                draw = augment.draw(len(idx), translate=translate, generator=generator, device=device)
                idx, draw = context.shard(idx), context.shard(draw)
                images = d["train_x"][context.shard(rows[part])].to(device, non_blocking=True)
                x = augment.apply(images.float(), draw, translate=translate, flip=bool(config["flip"]))
                with placement.autocast(device):
                    logits = net(placement.formatted(x)).float()
                loss = F.cross_entropy(logits, d["train_y"][idx], label_smoothing=float(config["label_smoothing"]))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.detach()
            train_loss = context.mean(total.item() / steps)
            if not math.isfinite(train_loss):
                raise Diverged(epoch=epoch, loss=train_loss)
            val_loss, val_acc = self._scores(model, d["val_x"], d["val_y"])
            metrics = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_acc": val_acc, **size}
            context.report(metrics, lambda: {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                             "schedule": schedule.state_dict(), "channels": data["channels"],
                                             "classes": list(data["classes"]), "mean": data["mean"],
                                             "std": data["std"], "image_size": data["image_size"]})  # fmt: skip

    def evaluate(self, state: dict[str, Any], held_out: dict[str, Any], *, device: torch.device) -> dict[str, Any]:
        """Test accuracy, loss and confusion matrix of the checkpoint on the test images."""
        model = placement.format_model(self.build_model(state).to(device), device)
        x, y = (torch.from_numpy(np.asarray(held_out[k])).to(device) for k in ("x", "y"))
        classes = list(state["classes"])
        counts = torch.zeros(len(classes), len(classes), dtype=torch.int64, device=device)
        loss, acc = self._scores(model, x, y, counts)
        return {"test_acc": acc, "test_loss": loss, "confusion_matrix": counts.tolist(), "classes": classes}

    def predict(self, model: nn.Module, state: dict[str, Any], inputs: Any) -> pd.DataFrame:
        """Class names and probabilities for uint8 images (N, H, W, C), C 1 or 3, of any size (one size a call).

        They are converted to the search's channels and resized to its image size
        as the search's images were; the network normalises them itself.
        """
        images = np.asarray(inputs)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"inputs are {images.shape}, but must be images (N, H, W, C) with C 1 or 3, or "
                             f"grayscale (N, H, W), 0-255 pixels")  # fmt: skip
        x = torch.from_numpy(np.ascontiguousarray(images.astype(np.uint8).transpose(0, 3, 1, 2)))
        channels, size = int(state["channels"]), int(state["image_size"])
        if x.shape[1] != channels:
            x = rgb_to_grayscale(x) if channels == 1 else x.expand(-1, 3, -1, -1)
        if tuple(x.shape[2:]) != (size, size):
            x = resize(x, [size, size], antialias=True)
        model.eval()
        device = next(model.parameters()).device
        out = [model(x[i : i + EVAL_BATCH].to(device)).float() for i in range(0, len(x), EVAL_BATCH)]
        return class_frame(torch.cat(out), state["classes"])

    def build_model(self, state: dict[str, Any]) -> nn.Module:
        # The trained weights replace any pretrained ones: nothing is read from the weights cache here.
        model = build_network(state["config"], channels=state["channels"], classes=len(state["classes"]),
                              mean=state["mean"], std=state["std"], pretrained=False)  # fmt: skip
        model.load_state_dict(state["model"])
        return model.eval()


def _trial_data(data: dict[str, Any], device: torch.device) -> tuple[dict[str, torch.Tensor], placement.Placement]:
    """The splits as tensors, kept in this process across its trials: labels on ``device``, images where they fit."""
    where = placement.place_data(sum(np.asarray(data[k]).nbytes for k in ("train_x", "val_x")), device)

    def upload() -> dict[str, torch.Tensor]:
        images = device if where.on_device else torch.device("cpu")
        pin = not where.on_device and device.type == "cuda"  # page-locked: evaluation's slices copy asynchronously
        tensors = {k: torch.from_numpy(np.asarray(data[k])).to(images) for k in ("train_x", "val_x")}
        tensors = {k: v.pin_memory() if pin else v for k, v in tensors.items()}
        return tensors | {k: torch.from_numpy(np.asarray(data[k])).to(device) for k in ("train_y", "val_y")}

    return on_device(f"{data['key']}-{'device' if where.on_device else 'host'}", device, upload), where


TASK = ImageFolderTask()
