import pytest

from search_spaces.exceptions import UsageError
from tuner.config.resources import COORDINATOR_CPUS, check_fit, trial_shape

ONE_GPU_NODE = [{"CPU": 16.0, "GPU": 1.0}]
EIGHT_GPU_NODES = [{"CPU": 64.0, "GPU": 8.0}, {"CPU": 64.0, "GPU": 8.0}]
CPU_ONLY = [{"CPU": 2.0}]


def fit(nodes, *, gpus=0.0, cpus=1.0, workers=1, max_concurrent=None, num_samples=100):
    shape = trial_shape(gpus_per_trial=gpus, cpus_per_trial=cpus, workers=workers)
    return check_fit(shape, nodes=nodes, max_concurrent=max_concurrent, num_samples=num_samples)


def test_shapes_split_resources_over_workers():
    shape = trial_shape(gpus_per_trial=4, cpus_per_trial=8, workers=4)
    assert (shape.gpus_per_worker, shape.cpus_per_worker, shape.gpus) == (1, 2, 4)
    assert shape.cpus == 8 + COORDINATOR_CPUS
    assert trial_shape(gpus_per_trial=0.25, cpus_per_trial=1, workers=1).coordinator_cpus == 0


@pytest.mark.parametrize(("gpus", "workers"), [(0.5, 2), (1, 2), (3, 2)])
def test_ddp_workers_need_whole_gpus(gpus, workers):
    with pytest.raises(UsageError, match=f"use --gpus-per-trial {workers} .one GPU per worker."):
        trial_shape(gpus_per_trial=gpus, cpus_per_trial=1, workers=workers)


@pytest.mark.parametrize("gpus", [2, 4])
def test_a_single_process_trial_takes_one_gpu_at_most(gpus):
    # It would train on cuda:0 alone, holding the others idle: DDP, one GPU per worker, uses them.
    with pytest.raises(UsageError, match=f"use --workers-per-trial {gpus} --gpus-per-trial {gpus} .DDP, one GPU"):
        trial_shape(gpus_per_trial=gpus, cpus_per_trial=1, workers=1)
    assert trial_shape(gpus_per_trial=1, cpus_per_trial=1, workers=1).gpus_per_worker == 1


def test_concurrency_follows_resources():
    assert fit(ONE_GPU_NODE, gpus=0.25) == 4
    assert fit(ONE_GPU_NODE, gpus=0.25, max_concurrent=2) == 2
    assert fit(ONE_GPU_NODE, gpus=0.25, num_samples=3) == 3
    assert fit(EIGHT_GPU_NODES, gpus=4, cpus=8, workers=4) == 4
    assert fit(CPU_ONLY, cpus=1) == 2
    assert fit(CPU_ONLY, cpus=1, workers=2) == 1  # 2 x 0.5 CPU + the coordinator's share
    assert fit([{"CPU": 8.0}], cpus=2, workers=2) == 3


@pytest.mark.parametrize(
    ("nodes", "kwargs", "message"),
    [
        (CPU_ONLY, {"gpus": 1}, r"asks for more than this cluster has \(no GPU\): use --gpus-per-trial 0"),
        ([{"CPU": 16.0, "GPU": 0.5}], {"gpus": 1}, "0.5 GPUs per node.*use --gpus-per-trial 0.5 or a fraction"),
        (
            ONE_GPU_NODE,
            {"gpus": 2, "workers": 2},
            "a trial needs 2 GPUs .2 workers x 1. but the cluster has 1: use --workers-per-trial 1",
        ),
        (EIGHT_GPU_NODES, {"gpus": 32, "workers": 2}, "each of the 2 workers would need 16 GPUs"),
        (CPU_ONLY, {"cpus": 4, "workers": 1}, "a worker would need 4 CPUs but no node has more than 2"),
        (CPU_ONLY, {"cpus": 4, "workers": 2}, "a trial needs 4.01 CPUs but the cluster has 2"),
    ],
)
def test_requests_that_cannot_fit_are_refused(nodes, kwargs, message):
    with pytest.raises(UsageError, match=message):
        fit(nodes, **kwargs)
