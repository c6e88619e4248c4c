"""Whole-batch augmentation and normalisation on the device. Never imports Ray.

Random draws are made for the *global* batch and sliced per rank, so one
process and N processes see the same augmented images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainables.data import MEAN, STD

# device -> (mean, 1 / std) in uint8 units, (1, 3, 1, 1): made once per device, because
# building them per call is a blocking host-to-device copy in every training step.
_STATS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if device not in _STATS:
        mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
        std = torch.tensor(STD).view(1, 3, 1, 1) * 255
        _STATS[device] = mean.to(device), (1 / std).to(device)
    return _STATS[device]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float (B, 3, H, W), zero mean and unit variance per channel."""
    mean, inv_std = _stats(x.device)
    return (x.float() - mean) * inv_std


@dataclass(frozen=True)
class AugmentDraw:
    """Per-image random choices: shifts (B,) in [0, 2t] and flips (B,) bool."""

    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor

    def take(self, index: slice) -> AugmentDraw:
        return AugmentDraw(self.dy[index], self.dx[index], self.flip[index])

    __getitem__ = take  # so that a rank's part is ``context.shard(draw)``, as for the batch's indices

    def with_flips(self, flip: torch.Tensor) -> AugmentDraw:
        return AugmentDraw(self.dy, self.dx, flip)


FLIPS = ("none", "random", "alternate")


def flip_mode(value: bool | str) -> str:
    """The ``flip`` setting as one of ``FLIPS`` (``True`` means random flips, ``False`` none).

    ``alternate`` is airbench's scheme: each image gets one random flip for
    the odd epochs and the opposite one for the even epochs, so every image is
    seen both ways every two epochs.
    """
    if isinstance(value, bool):
        return "random" if value else "none"
    if value not in FLIPS:
        raise ValueError(f"flip must be one of {', '.join(FLIPS)} (or true/false), not {value!r}")
    return value


def draw(batch: int, *, translate: int, generator: torch.Generator, device: torch.device) -> AugmentDraw:
    """Random translations and flips for ``batch`` images."""
    dy = torch.randint(0, 2 * translate + 1, (batch,), device=device, generator=generator)
    dx = torch.randint(0, 2 * translate + 1, (batch,), device=device, generator=generator)
    flip = torch.rand(batch, device=device, generator=generator) < 0.5
    return AugmentDraw(dy, dx, flip)


def alternating_flips(base: torch.Tensor, idx: torch.Tensor, *, epoch: int) -> torch.Tensor:
    """Flips of images ``idx`` in ``epoch`` (1-based) under the alternating scheme: ``base`` in odd epochs."""
    return base[idx] ^ (epoch % 2 == 0)


def apply(x: torch.Tensor, d: AugmentDraw, *, translate: int, flip: bool) -> torch.Tensor:
    """Translate (reflect padded) and flip float images (B, C, H, W) with one gather, no per-sample Python."""
    b, _, h, w = x.shape
    if translate > 0:
        padded = torch.nn.functional.pad(x, (translate,) * 4, mode="reflect")  # (B, C, H+2t, W+2t)
        rows = torch.arange(h, device=x.device).view(1, h, 1) + d.dy.view(b, 1, 1)  # (B, H, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w) + d.dx.view(b, 1, 1)  # (B, 1, W)
        batch = torch.arange(b, device=x.device).view(b, 1, 1)
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)
    if flip:
        x = torch.where(d.flip.view(b, 1, 1, 1), x.flip(3), x)
    return x
