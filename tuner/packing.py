"""``--gpus-per-trial auto``: measure one trial, then decide how many trials share a GPU.

A short probe runs a real trial cycle (training steps, evaluation, a
checkpoint) of the space's most memory-hungry configuration on one GPU, and
records its peak memory and how busy it kept the GPU. Trials are then packed
until either memory (with headroom) or compute runs out.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from search_spaces import SearchSpace

MAX_TRIALS_PER_GPU = 8
MEMORY_HEADROOM = 0.85  # of the GPU's memory: leave room for CUDA contexts and fragmentation


@dataclass(frozen=True)
class Probe:
    """What one trial used on one GPU."""

    device_name: str
    peak_bytes: int
    total_bytes: int
    busy_fraction: float  # share of the probe's wall-clock the GPU was busy, 0..1


def probe_config(space: SearchSpace, *, max_epochs: int, seed: int) -> dict[str, Any]:
    """The space's hungriest config: the largest numeric choices (batch, width), reference values elsewhere."""
    config: dict[str, Any] = {}
    for p in space.params:
        if p.kind == "fixed":
            config[p.name] = p.value
        elif p.kind == "choice":
            numeric = [c for c in p.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
            config[p.name] = max(numeric) if len(numeric) == len(p.choices) else p.choices[0]
        elif p.name in space.reference and p.low <= space.reference[p.name] <= p.high:
            config[p.name] = space.reference[p.name]
        else:
            config[p.name] = math.sqrt(p.low * p.high) if p.kind == "loguniform" else (p.low + p.high) / 2
    config.update(space.constants)
    config.update(epochs=max_epochs, seed=seed)
    return config


def trials_per_gpu(probe: Probe, *, limit: int = MAX_TRIALS_PER_GPU) -> int:
    """How many such trials fit on one GPU: by memory, and by the idle time one trial leaves."""
    by_memory = math.floor(MEMORY_HEADROOM * probe.total_bytes / max(probe.peak_bytes, 1))
    by_compute = math.ceil(1.0 / max(probe.busy_fraction, 0.05) - 1e-9)
    return max(1, min(by_memory, by_compute, limit))


def fraction_for(trials: int) -> float:
    """GPUs per trial for ``trials`` per GPU, rounded down so that they do fit (Ray keeps 4 decimals)."""
    return math.floor(10_000 / trials) / 10_000


def describe(probe: Probe, trials: int) -> str:
    gib = 1024**3
    return (
        f"--gpus-per-trial auto: one trial peaks at {probe.peak_bytes / gib:.2f} of "
        f"{probe.total_bytes / gib:.1f} GiB on {probe.device_name} and keeps it {probe.busy_fraction:.0%} busy: "
        f"{trials} trial(s) per GPU (--gpus-per-trial {fraction_for(trials):g})"
    )


class UtilisationSampler:
    """Samples ``nvidia-smi``'s utilisation of one GPU in a thread; the mean is the busy fraction."""

    def __init__(self, *, index: int = 0, period: float = 0.1) -> None:
        self.index, self.period = index, period
        self.samples: list[float] = []
        self.times: list[float] = []  # time.monotonic() of each sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        cmd = ["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=True).stdout
                self.samples.append(float(out.strip().splitlines()[0]) / 100)
                self.times.append(time.monotonic())
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                return
            time.sleep(self.period)

    def __enter__(self) -> UtilisationSampler:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def mean(self, *, since: float | None = None) -> float | None:
        """Mean utilisation, over the samples taken after ``since`` (a ``time.monotonic()``) if given."""
        kept = [u for t, u in zip(self.times, self.samples, strict=True) if since is None or t >= since]
        return sum(kept) / len(kept) if kept else None


def run_probe(config: dict[str, Any], arrays: dict[str, Any], *, epochs: int = 2, max_images: int = 20_000) -> Probe:
    """Train ``config`` for ``epochs`` short epochs on the current GPU; measure memory and busy time."""
    import torch

    from trainables import checkpoint
    from trainables.loop import DeviceData, train

    device = torch.device("cuda", 0)
    sliced = {k: arrays[k][:max_images] for k in ("train_x", "train_y", "val_x", "val_y")}
    data = DeviceData.from_arrays(sliced, device=device)
    torch.cuda.reset_peak_memory_stats(device)

    def report(metrics: dict[str, Any], state) -> None:
        with tempfile.TemporaryDirectory() as folder:
            checkpoint.save(state(), folder)

    # The first epoch pays for cuDNN autotuning and allocation: measure the second.
    train({**config, "epochs": 1}, data=data, device=device, report=report)
    t0 = time.perf_counter()
    with UtilisationSampler() as sampler:
        train({**config, "epochs": epochs}, data=data, device=device, report=report)
    wall = time.perf_counter() - t0
    busy = sampler.mean()
    return Probe(
        device_name=torch.cuda.get_device_name(device),
        peak_bytes=int(torch.cuda.max_memory_reserved(device)),
        total_bytes=int(torch.cuda.get_device_properties(device).total_memory),
        busy_fraction=1.0 if busy is None or wall <= 0 else busy,
    )
