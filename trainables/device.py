"""A trial's device: cuDNN autotuning, a shared GPU's memory cap, where its data lives, CUDA's fast formats.

Never imports Ray.

Every trial's process (single-process trials and each DDP rank, through
``tuner.trial.process.prepare_device``) and every benchmark that trains on a
GPU calls ``prepare_cuda`` before it builds its network.

A trial given a share of a GPU (Ray's fractional GPUs are bookkeeping only)
caps its caching allocator at that share less ``CUDA_CONTEXT_BYTES``: the cap
counts only what the allocator reserves, while each process sharing the GPU
also holds a CUDA context and the allocator's own overhead outside it. Four
trials capped at exactly 0.25 would claim the whole GPU and leave nothing for
their four contexts, so that a neighbour near its cap could push a trial into
a real out-of-memory error, recorded as ``infeasible``.

A trial's images stay on its device when they take at most ``DATA_SHARE`` of
the memory the trial may use there (its share of the device: the per-process
memory fraction ``tuner.trial.process.prepare_device`` sets from the trial's
GPU share), so that four trials on one card do not each hold a dataset sized
for the whole card. Otherwise they stay on the host and every batch is copied
over. On CUDA, conv nets train in channels-last memory format under bf16
autocast (where the GPU supports bf16); the CPU trains as before, in float32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["CUDA_CONTEXT_BYTES", "DATA_SHARE", "MIN_CAP_OF_SHARE", "Placement", "autocast", "format_model", "formatted",
           "memory_fraction", "place_data", "prepare_cuda", "trial_memory"]  # fmt: skip

# What one process on a GPU holds outside its caching allocator's count: the CUDA context (driver
# state, loaded kernels, library handles), about 300-500 MiB on recent GPUs and drivers. Each process
# sharing a GPU leaves this much of its share free, so that the shares' contexts fit beside the caps.
CUDA_CONTEXT_BYTES = 512 * 2**20
# On a small GPU the reserve could eat a small share whole: the cap never falls below this part of it.
MIN_CAP_OF_SHARE = 0.5


def memory_fraction(share: float, *, total_bytes: int) -> float | None:
    """The fraction of a GPU of ``total_bytes`` that a process given ``share`` of it may allocate; None: no cap.

    A whole GPU (``share`` >= 1) or none (0) is not capped; a share is capped
    at itself less one ``CUDA_CONTEXT_BYTES``, and never below
    ``MIN_CAP_OF_SHARE`` of itself.
    """
    if not 0 < share < 1:
        return None
    return max(share - CUDA_CONTEXT_BYTES / total_bytes, MIN_CAP_OF_SHARE * share)


def prepare_cuda(device: torch.device, *, share: float = 1.0) -> float | None:
    """Set up ``device`` for training when it is a GPU: cuDNN autotuning, and the memory cap of ``share`` of it.

    Returns the fraction of the GPU's memory this process is capped at (None:
    not capped, or not a GPU). The cap binds the whole process and cannot be
    lifted, so only a trial's own process calls this with a share below 1.
    """
    if device.type != "cuda":
        return None
    # Every step has the same shapes (fixed image size and batch): cuDNN times its algorithms for
    # each convolution once, on the first step, and keeps the fastest.
    torch.backends.cudnn.benchmark = True
    fraction = memory_fraction(share, total_bytes=torch.cuda.get_device_properties(device).total_memory)
    if fraction is not None:
        torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction

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
