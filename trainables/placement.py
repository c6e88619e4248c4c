"""Where a trial's tensors live and in which format: its images on the device or the host; CUDA's fast formats.

A trial's images stay on its device when they take at most ``DATA_SHARE`` of
the memory the trial may use there (its share of the device: the per-process
memory fraction ``tuner.trial.process.prepare_device`` sets from the trial's
GPU share), so that four trials on one card do not each hold a dataset sized
for the whole card. Otherwise they stay on the host and every batch is copied
over. On CUDA, conv nets train in channels-last memory format under bf16
autocast (where the GPU supports bf16); the CPU trains as before, in float32.
Never imports Ray.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

DATA_SHARE = 0.25  # of the memory a trial may use on its device, for its images; the rest: model, activations


@dataclass(frozen=True)
class Placement:
    """Where a trial keeps its images, and why, in words for its output."""

    on_device: bool
    reason: str


def trial_memory(device: torch.device) -> int | None:
    """Bytes of ``device`` this process may use: its total memory times the process's memory fraction; None on CPU."""
    if device.type != "cuda":
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    return int(total * torch.cuda.get_per_process_memory_fraction(device))


def place_data(nbytes: int, device: torch.device) -> Placement:
    """Whether ``nbytes`` of images fit on ``device`` (``DATA_SHARE`` of the trial's memory there)."""
    memory = trial_memory(device)
    if memory is None:
        return Placement(True, f"images ({_gib(nbytes)}) in host memory, where the trial trains ({device})")
    limit = int(DATA_SHARE * memory)
    if nbytes <= limit:
        return Placement(True, f"images ({_gib(nbytes)}) on {device}: within {DATA_SHARE:.0%} of the trial's "
                               f"{_gib(memory)} there")  # fmt: skip
    return Placement(False, f"images ({_gib(nbytes)}) kept on the host, each batch copied to {device}: more than "
                            f"{DATA_SHARE:.0%} of the trial's {_gib(memory)} there ({_gib(limit)}); a smaller "
                            f"image_size or a larger GPU share per trial would keep them on the device")  # fmt: skip


def _gib(nbytes: int) -> str:
    return f"{nbytes / 1024**3:.2f} GiB"


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on a CUDA device that supports bf16 (no loss scaling needed); else full precision."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def formatted(x: torch.Tensor) -> torch.Tensor:
    """A batch (B, C, H, W) in channels-last memory format on CUDA (what its conv kernels are fastest in)."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cuda" else x


def format_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with channels-last weights on CUDA, itself elsewhere."""
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model
