"""What a trained model costs to keep and to run: its parameter count and a measured inference latency.

The built-in tasks report both every epoch (``params``, ``latency_ms``), so a
space can trade accuracy against either (``objectives:`` in the space, see
``search_spaces.objectives``); a task of your own can too::

    from trainables.footprint import footprint
    size = footprint(model, lambda: model(one_input))  # once, before the first epoch
    context.report({"epoch": epoch, "val_acc": acc, **size}, model=model)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

REPEATS = 15  # timed answers at most; the median is reported
MIN_REPEATS = 3  # timed answers at least
TIME_BUDGET_MS = 200.0  # no more timed answers once they add up to this (a slow model on a CPU: 3 of them)
WARM_UP = 2  # answers first, untimed (allocations, kernels chosen)


def parameter_count(model: nn.Module) -> int:
    """The number of values the model learns (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def latency_ms(answer: Callable[[], Any], *, device: torch.device | None = None, repeats: int = REPEATS) -> float:
    """The median milliseconds ``answer()`` takes (one input through the model, as it is served), after warm-up.

    Up to ``repeats`` timed answers, fewer (but ``MIN_REPEATS``) once they have
    taken ``TIME_BUDGET_MS``: a trial spends a fraction of a second on it.
    """
    with torch.no_grad():
        for _ in range(WARM_UP):
            answer()
        _sync(device)
        times: list[float] = []
        while len(times) < repeats and (len(times) < MIN_REPEATS or sum(times) < TIME_BUDGET_MS):
            t0 = time.perf_counter()
            answer()
            _sync(device)
            times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def footprint(model: nn.Module, answer: Callable[[], Any], *, device: torch.device | None = None) -> dict[str, float]:
    """``params`` and ``latency_ms`` of ``model``, measured in eval mode; the model's mode is put back."""
    training = model.training
    model.eval()
    try:
        return {"params": float(parameter_count(model)), "latency_ms": latency_ms(answer, device=device)}
    finally:
        model.train(training)
