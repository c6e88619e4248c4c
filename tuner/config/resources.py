"""What a trial asks of the cluster, checked before the search starts. No Ray imports: nodes come in as data.

A trial's ``--gpus-per-trial`` and ``--cpus-per-trial`` are split evenly over
its ``--workers-per-trial`` workers. A single-process trial trains on one GPU
at most (a share of one, or one); more GPUs need as many DDP workers. A DDP
trial also runs a coordinator (the Tune function that waits on Ray Train),
which takes a token share of a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from search_spaces.exceptions import UsageError

COORDINATOR_CPUS = 0.01  # Tune cannot schedule a trial on nothing; the coordinator only waits
# How long a DDP trial's workers may wait to be placed (--worker-start-timeout); an autoscaler adding a node may
# need longer. Ray Train's own default waits 60 s and then retries without end.
DEFAULT_START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class TrialShape:
    """Resources of one trial: per worker, and for the coordinator of a DDP trial."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float

    @property
    def coordinator_cpus(self) -> float:
        return COORDINATOR_CPUS if self.workers > 1 else 0.0

    @property
    def cpus(self) -> float:
        return self.workers * self.cpus_per_worker + self.coordinator_cpus

    @property
    def gpus(self) -> float:
        return self.workers * self.gpus_per_worker


def trial_shape(*, gpus_per_trial: float, cpus_per_trial: float, workers: int) -> TrialShape:
    """Split a trial's resources over its workers; one process trains on one GPU, DDP workers on whole GPUs."""
    gpw, cpw = gpus_per_trial / workers, cpus_per_trial / workers
    if workers == 1 and gpus_per_trial > 1:
        # A single process trains on the first GPU Ray gives it (cuda:0): the others would sit idle, held.
        n = math.ceil(gpus_per_trial)
        raise UsageError(
            f"--gpus-per-trial {gpus_per_trial:g} with --workers-per-trial 1: one process trains on one GPU, so "
            f"{n - 1} of them would sit idle. To train each trial on {n} GPUs, use --workers-per-trial {n} "
            f"--gpus-per-trial {n} (DDP, one GPU per worker); otherwise --gpus-per-trial 1 or a fraction"
        )
    if workers > 1 and gpus_per_trial > 0 and (gpw < 1 or gpw != int(gpw)):
        raise UsageError(
            f"--gpus-per-trial {gpus_per_trial:g} over --workers-per-trial {workers} gives each worker {gpw:g} GPU, "
            f"but DDP workers need whole GPUs (NCCL ranks cannot share one): use --gpus-per-trial {workers} "
            f"(one GPU per worker), or --workers-per-trial 1 to share GPUs between trials"
        )
    return TrialShape(workers=workers, cpus_per_worker=cpw, gpus_per_worker=gpw)


def check_fit(
    shape: TrialShape,
    *,
    nodes: list[dict[str, float]],
    max_concurrent: int | None,
    num_samples: int,
) -> int:
    """Refuse a trial the cluster cannot place; return how many trials can run at once.

    ``nodes`` holds each live node's resources (``{"CPU": 16, "GPU": 8, ...}``).
    """
    node_gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    node_cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    total_gpus = sum(n.get("GPU", 0.0) for n in nodes)
    total_cpus = sum(n.get("CPU", 0.0) for n in nodes)
    if shape.workers == 1 and shape.gpus > node_gpus:
        have = f"{node_gpus:g} GPUs per node" if node_gpus else "no GPU"
        fix = f"use --gpus-per-trial {node_gpus:g} or a fraction" if node_gpus else "use --gpus-per-trial 0 (CPU)"
        raise UsageError(f"--gpus-per-trial {shape.gpus:g} asks for more than this cluster has ({have}): {fix}")
    if shape.workers > 1 and shape.gpus_per_worker > node_gpus:
        fix = f"use --gpus-per-trial {shape.workers} (one GPU per worker)" if node_gpus else "use --gpus-per-trial 0"
        raise UsageError(
            f"each of the {shape.workers} workers would need {shape.gpus_per_worker:g} GPUs, but no node has more "
            f"than {node_gpus:g}: {fix}"
        )
    if shape.gpus > total_gpus:
        fits = math.floor(total_gpus / shape.gpus_per_worker) if shape.gpus_per_worker else 0
        raise UsageError(
            f"a trial needs {shape.gpus:g} GPUs ({shape.workers} workers x {shape.gpus_per_worker:g}) but the cluster "
            f"has {total_gpus:g}: use --workers-per-trial {max(fits, 1)} or fewer GPUs per trial"
        )
    if shape.cpus_per_worker > node_cpus:
        raise UsageError(
            f"a worker would need {shape.cpus_per_worker:g} CPUs but no node has more than {node_cpus:g}: "
            f"lower --cpus-per-trial to at most {node_cpus * shape.workers:g}"
        )
    if shape.cpus > total_cpus + 1e-9:
        raise UsageError(
            f"a trial needs {shape.cpus:g} CPUs but the cluster has {total_cpus:g}: lower --cpus-per-trial"
            + (" or --workers-per-trial" if shape.workers > 1 else "")
        )
    if shape.gpus:
        fits = math.floor(total_gpus / shape.gpus + 1e-9)
    else:
        fits = math.floor(total_cpus / shape.cpus + 1e-9)
    return max(1, min(fits, max_concurrent or fits, num_samples))
