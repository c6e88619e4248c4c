"""How a process prepares the GPU it trains on: cuDNN autotuning, and a memory cap on a shared GPU. Never imports Ray.

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
"""

from __future__ import annotations

import torch

__all__ = ["CUDA_CONTEXT_BYTES", "MIN_CAP_OF_SHARE", "memory_fraction", "prepare_cuda"]

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
