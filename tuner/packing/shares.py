"""How much of a GPU each trial gets: the space's default share, or ``--gpus-per-trial auto``, measured.

``auto`` runs 1, 2, 4, ... probes of the space's reference config at once on
one GPU (``tuner.packing.probe``) and keeps the count with the best throughput.
"""

from __future__ import annotations

from typing import Any, TextIO

import ray

from search_spaces import SearchSpace
from trainables.task import TaskData
from tuner.config.settings import GPUS_AUTO, SearchSettings
from tuner.packing import probe as packing


@ray.remote(max_calls=1)  # its process exits afterwards: no CUDA context left holding GPU memory
def _probe(task: str, config: dict[str, Any], data: Any) -> packing.ProbeRun:
    return packing.run_probe(task, config, data)


def measure_packing(space: SearchSpace, settings: SearchSettings, dataset: TaskData, *, out: TextIO) -> int:
    """Run 1, 2, 4, ... probes at once on one GPU (``packing``); return the trials per GPU to use."""
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    config = packing.probe_config(space, max_epochs=settings.budget.max_epochs, seed=settings.seed)
    arrays = ray.put(dataset.trial)
    node_cpus = max(n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive"))
    measured: dict[int, float] = {}
    runs: list[packing.ProbeRun] = []
    for k in packing.PACKINGS:
        if k * settings.resources.cpus_per_trial > node_cpus or (runs and not packing.fits(k, runs)):
            break
        # One bundle holds one GPU: the k probes share it, as k trials would.
        group = placement_group([{"GPU": 1, "CPU": k * settings.resources.cpus_per_trial}])
        ray.get(group.ready())
        try:
            strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
            task = _probe.options(
                num_gpus=packing.fraction_for(k),
                num_cpus=settings.resources.cpus_per_trial,
                scheduling_strategy=strategy,
            )
            runs = ray.get([task.remote(space.task, config, arrays) for _ in range(k)])
        finally:
            remove_placement_group(group)
        rate = packing.throughput(runs)
        print(f"  {k} probe(s) at once: {rate or 0:.2f} epochs/s", file=out, flush=True)
        if rate is None:
            break
        measured[k] = rate
        if k > 1 and rate < packing.MIN_GAIN * measured[k // 2]:
            break
    if not measured:
        print("  the probes never trained at the same time: 1 trial per GPU", file=out, flush=True)
        return 1
    trials = packing.choose(measured)
    print(packing.describe(measured, runs, trials), file=out, flush=True)
    return trials


def resolve_gpus(settings: SearchSettings, space: SearchSpace, dataset: TaskData, *, out: TextIO) -> SearchSettings:
    """Turn ``--gpus-per-trial auto`` (a probe's measure) or its absence (the space's default) into a number.

    The decision is printed, and saved in search.json with the other settings,
    so that ``--resume`` keeps it.
    """
    flag = "--gpus-per-trial auto" if settings.resources.gpus_per_trial == GPUS_AUTO else "--gpus-per-trial not given"
    if not ray.cluster_resources().get("GPU", 0):
        print(f"{flag}: no GPU in this cluster, trials run on CPU", file=out)
        return settings.with_gpus(0.0)
    if settings.resources.workers_per_trial > 1:
        print(f"{flag}: one GPU for each of the {settings.resources.workers_per_trial} DDP workers", file=out)
        return settings.with_gpus(float(settings.resources.workers_per_trial))
    if settings.resources.gpus_per_trial == GPUS_AUTO:
        print(f"{flag}: measuring how many trials one GPU runs best at once", file=out, flush=True)
        trials = measure_packing(space, settings, dataset, out=out)
    else:
        trials = space.trials_per_gpu
        print(
            f"{flag}: {trials} trial(s) per GPU, the {space.name} space's default (--gpus-per-trial "
            f"{packing.fraction_for(trials):g}); --gpus-per-trial auto measures one trial to decide, 0 runs on CPU",
            file=out,
            flush=True,
        )
    return settings.with_gpus(packing.fraction_for(trials))
