"""CIFAR-10 networks. Plain PyTorch: never imports Ray.

``resnet18`` is the usual CIFAR ResNet-18 (He et al. 2016, with a 3x3 stem and
no max-pool), for comparison and for searches that want a bigger network.

``airbench`` follows the airbench94 network (Keller Jordan, cifar10-airbench):
a frozen 2x2 patch-whitening convolution (always in float32, also under
autocast), then three groups of conv -> maxpool -> BatchNorm -> GELU -> conv ->
BatchNorm -> GELU, a global max-pool and a linear head scaled by 1/9.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

BASE_WIDTHS = (64, 256, 256)
WHITEN_KERNEL = 2


class ConvGroup(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, *, bn_momentum: float) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(c_out, momentum=bn_momentum),
            nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out, momentum=bn_momentum),
            nn.GELU(),
        )
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.requires_grad_(False)  # scale fixed at 1, only the shift is learned (airbench)


class AirbenchNet(nn.Module):
    """(B, 3, 32, 32) normalised images -> (B, 10) logits."""

    def __init__(self, *, widths: tuple[int, int, int], num_classes: int = 10, bn_momentum: float = 0.4) -> None:
        super().__init__()
        whiten_width = 2 * 3 * WHITEN_KERNEL**2
        self.whiten = nn.Conv2d(3, whiten_width, WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # set once from the data, see init_whitening
        self.body = nn.Sequential(
            nn.GELU(),
            ConvGroup(whiten_width, widths[0], bn_momentum=bn_momentum),
            ConvGroup(widths[0], widths[1], bn_momentum=bn_momentum),
            ConvGroup(widths[1], widths[2], bn_momentum=bn_momentum),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.whiten:
                # Dirac init keeps each group close to identity at the start (airbench).
                w = m.weight.data
                torch.nn.init.dirac_(w[: w.size(1)])
        self.head.weight.data.mul_(0.0)  # zero head: every class starts equally likely

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, *, eps: float = 5e-4) -> None:
        """Set the first conv to whiten 2x2 patches of ``images`` (B, 3, 32, 32), normalised."""
        c = images.size(1)
        patches = images.unfold(2, WHITEN_KERNEL, 1).unfold(3, WHITEN_KERNEL, 1)  # (B, C, H', W', k, k)
        patches = patches.transpose(1, 3).reshape(-1, c, WHITEN_KERNEL, WHITEN_KERNEL).float()
        flat = patches.reshape(len(patches), -1)
        cov = (flat.T @ flat) / len(flat)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)
        filters = eigenvectors.reshape(-1, c, WHITEN_KERNEL, WHITEN_KERNEL) / torch.sqrt(eigenvalues + eps).view(
            -1, 1, 1, 1
        )
        n = len(filters)
        self.whiten.weight.data[:n] = filters.to(self.whiten.weight.dtype)
        self.whiten.weight.data[n:] = -filters.to(self.whiten.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The whitening runs in float32 even under autocast: its filters have entries of about 5-25, and
        # bf16's 8 significant bits would leak the high-variance directions into the low-variance
        # channels (about 10% of their signal; fp32 keeps it well under 1%).
        with torch.autocast(x.device.type, enabled=False):
            x = self.whiten(x.float())  # (B, 24, 31, 31)
        x = self.body(x)  # (B, widths[2]), under the caller's autocast
        return self.head(x) / 9.0


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, *, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """The CIFAR variant of ResNet-18: a 3x3 stem, no max-pool, four stages of two basic blocks."""

    def __init__(self, *, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()
        widths = [max(8, round(c * width / 8) * 8) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        layers, c_in = [], widths[0]
        for i, c in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(c_in, c, stride=stride), BasicBlock(c, c, stride=1)]
            c_in = c
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))  # (B, C, 4, 4)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


ARCHS = ("airbench", "resnet18")


def widths_for(width: float) -> tuple[int, int, int]:
    """Channel widths for a multiplier of airbench94's (64, 256, 256), at least 8 each."""
    return tuple(max(8, round(w * width / 8) * 8) for w in BASE_WIDTHS)  # type: ignore[return-value]


def build_model(config: dict[str, Any], *, num_classes: int = 10) -> nn.Module:
    """The network a trial's config names (``arch``, ``width``)."""
    arch, width = config["arch"], float(config["width"])
    if arch == "airbench":
        return AirbenchNet(widths=widths_for(width), num_classes=num_classes)
    if arch == "resnet18":
        return ResNet18(width=width, num_classes=num_classes)
    raise ValueError(f"unknown arch '{arch}'; known: {', '.join(ARCHS)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
