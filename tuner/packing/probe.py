"""``--gpus-per-trial auto``: measure how many trials one GPU runs best at once.

Probes train the space's most memory-hungry configuration through its task,
as trials do (epochs of training and evaluation, and a checkpoint each). First
1, then 2, 4 and 8 of them run at once on one GPU, each in its own process as
trials are; their combined epochs per second over the window when all of them
ran is the GPU's throughput at that packing. Packing
stops growing once doubling it gains less than ``MIN_GAIN`` or the memory
would not fit, and the smallest packing within ``TOLERANCE`` of the best
throughput wins (fewer trials at once finish each trial sooner).

Throughput, not a utilisation reading, decides: a GPU that runs a small
network's short kernels one after another is "100% utilised" by nvidia-smi
while most of its multiprocessors idle.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from search_spaces import SearchSpace

PACKINGS = (1, 2, 4, 8)  # trials per GPU tried, in this order
MEMORY_HEADROOM = 0.85  # of the GPU's memory: leave room for CUDA contexts and fragmentation
MIN_GAIN = 1.10  # doubling the trials must add this much throughput to try the next packing
TOLERANCE = 0.95  # the smallest packing with this share of the best throughput is chosen


@dataclass(frozen=True)
class ProbeRun:
    """One probe process: its GPU, its memory peak, and the epochs it trained over time."""

    device_name: str
    peak_bytes: int
    total_bytes: int
    times: tuple[float, ...]  # time.time() at the end of each epoch; times[0] (the warm-up's end) starts the window
    epochs: tuple[int, ...]  # epochs trained since the window started (0 at times[0])


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


def _epochs_at(run: ProbeRun, t: float) -> float:
    """Epochs ``run`` had trained at time ``t`` (linear between its epoch ends)."""
    times, done = run.times, run.epochs
    for i in range(1, len(times)):
        if t <= times[i]:
            span = times[i] - times[i - 1]
            return done[i - 1] + (done[i] - done[i - 1]) * (t - times[i - 1]) / span if span > 0 else done[i]
    return float(done[-1])


def throughput(runs: list[ProbeRun]) -> float | None:
    """Trial epochs per second of ``runs`` together, over the window when all of them were training; None if none."""
    start, end = max(r.times[0] for r in runs), min(r.times[-1] for r in runs)
    if end <= start:
        return None
    return sum(_epochs_at(r, end) - _epochs_at(r, start) for r in runs) / (end - start)


def fits(trials: int, runs: list[ProbeRun]) -> bool:
    """Whether ``trials`` such probes fit in the GPU's memory, with headroom."""
    peak, total = max(r.peak_bytes for r in runs), runs[0].total_bytes
    return trials * peak <= MEMORY_HEADROOM * total


def choose(measured: dict[int, float]) -> int:
    """The smallest packing whose throughput is within ``TOLERANCE`` of the best measured."""
    best = max(measured.values())
    return min(k for k, v in measured.items() if v >= TOLERANCE * best)


def fraction_for(trials: int) -> float:
    """GPUs per trial for ``trials`` per GPU, rounded down so that they do fit (Ray keeps 4 decimals)."""
    return math.floor(10_000 / trials) / 10_000


def describe(measured: dict[int, float], runs: list[ProbeRun], trials: int) -> str:
    gib = 1024**3
    rates = ", ".join(f"{k}: {v:.2f}" for k, v in sorted(measured.items()))
    peak = max(r.peak_bytes for r in runs)
    return (
        f"--gpus-per-trial auto: epochs/s on {runs[0].device_name} by trials at once: {rates}; one trial peaks "
        f"at {peak / gib:.2f} of {runs[0].total_bytes / gib:.1f} GiB: {trials} trial(s) per GPU "
        f"(--gpus-per-trial {fraction_for(trials):g})"
    )


class UtilisationSampler:
    """Samples ``nvidia-smi``'s utilisation of one GPU in a thread; the mean is the busy fraction."""

    def __init__(self, *, gpu: str | None = None, period: float = 0.1) -> None:
        # nvidia-smi numbers GPUs as the machine does, not as CUDA_VISIBLE_DEVICES renumbers them.
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        self.gpu, self.period = gpu or visible or "0", period
        self.samples: list[float] = []
        self.times: list[float] = []  # time.monotonic() of each sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        cmd = ["nvidia-smi", f"--id={self.gpu}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=True).stdout
            except (OSError, subprocess.SubprocessError):
                return  # no nvidia-smi, or not this GPU: no samples, and mean() says so
            try:
                self.samples.append(float(out.strip().splitlines()[0]) / 100)
                self.times.append(time.monotonic())
            except (ValueError, IndexError):
                pass  # "[N/A]" or nothing: a missing reading, not a busy GPU
            time.sleep(self.period)

    def __enter__(self) -> UtilisationSampler:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def mean(self, *, since: float | None = None, until: float | None = None) -> float | None:
        """Mean utilisation over the samples taken from ``since`` to ``until`` (``time.monotonic()``), where given."""
        kept = [u for t, u in zip(self.times, self.samples, strict=True)
                if (since is None or t >= since) and (until is None or t <= until)]  # fmt: skip
        return sum(kept) / len(kept) if kept else None


def run_probe(task_ref: str, config: dict[str, Any], data: Any, *, seconds: float = 6.0) -> ProbeRun:
    """Train ``config`` with the task ``task_ref`` on the current GPU for ``seconds`` after a warm-up epoch.

    Each epoch is a trial's (training, evaluation) plus a checkpoint written as a
    trial's would be; the end of each is recorded.
    """
    import torch

    from trainables import checkpoint
    from trainables.device import prepare_cuda
    from trainables.loading import load_task
    from trainables.task import TrialContext

    device = torch.device("cuda", 0)
    # cuDNN autotuning as a trial has it; no memory cap: the probe measures what the config takes.
    prepare_cuda(device)
    times: list[float] = []

    def report(metrics: dict[str, Any], state) -> None:
        with tempfile.TemporaryDirectory() as folder:
            checkpoint.save(state(), folder)
        times.append(time.time())
        if times[-1] - times[0] >= seconds:
            raise _Done

    # The first epoch pays for cuDNN autotuning and allocation; the window starts at its end.
    try:
        load_task(task_ref).train({**config, "epochs": 1000}, data, TrialContext(device=device, reporter=report))
    except _Done:
        pass
    return ProbeRun(
        device_name=torch.cuda.get_device_name(device),
        peak_bytes=int(torch.cuda.max_memory_reserved(device)),
        total_bytes=int(torch.cuda.get_device_properties(device).total_memory),
        times=tuple(times),
        epochs=tuple(range(len(times))),
    )


class _Done(Exception):
    """Ends a probe's training loop once its window is measured."""
