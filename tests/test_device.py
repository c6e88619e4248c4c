"""A trial's GPU, shown on CPU: the memory caps of shared GPUs, cuDNN autotuning, the memory an ended trial frees.

No CUDA allocation happens here: ``torch.cuda``'s device properties and memory
cap are replaced by fakes that record what a trial asked of them.
"""

import sys
import types
import weakref

import pytest
import torch

from trainables.device import CUDA_CONTEXT_BYTES, memory_fraction, prepare_cuda
from tuner.trial.process import Channel, TrialEnded, prepare_device, run_process
from tuner.trial.settings import TrialSettings

CUDA = torch.device("cuda", 0)
GiB = 2**30


@pytest.fixture
def fake_gpu(monkeypatch):
    """A GPU of ``total`` bytes (24 GiB unless changed) whose memory caps are recorded, not set."""
    gpu = types.SimpleNamespace(total=24 * GiB, caps=[])
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(
        total_memory=gpu.total, name="fake"))  # fmt: skip
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, device=None: gpu.caps.append(f))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # restored after the test
    return gpu


def test_trials_sharing_a_gpu_leave_room_for_their_cuda_contexts(fake_gpu):
    caps = [prepare_cuda(CUDA, share=0.25) for _ in range(4)]
    assert fake_gpu.caps == caps and all(0.2 < c < 0.25 for c in caps)
    headroom = (1 - sum(caps)) * fake_gpu.total
    assert headroom >= 4 * CUDA_CONTEXT_BYTES  # four contexts fit beside four full caps
    assert CUDA_CONTEXT_BYTES >= 300 * 2**20  # what a CUDA context takes on recent GPUs


def test_a_whole_gpu_is_not_capped_and_a_small_share_keeps_a_floor(fake_gpu):
    assert prepare_cuda(CUDA, share=1.0) is None and prepare_cuda(CUDA, share=2.0) is None
    assert fake_gpu.caps == []
    # An eighth of a 4 GiB card is 512 MiB: the context's reserve would leave nothing, the floor keeps half.
    assert memory_fraction(0.125, total_bytes=4 * GiB) == pytest.approx(0.0625)
    assert memory_fraction(0.5, total_bytes=80 * GiB) == pytest.approx(0.5 - 0.5 / 80)
    assert memory_fraction(0.0, total_bytes=80 * GiB) is None


def test_a_trials_device_preparation_turns_on_cudnn_autotuning(fake_gpu, monkeypatch):
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)  # the test process keeps its own threads
    prepare_device(CUDA, TrialSettings(tracking_uri="", cpus_per_worker=4, gpus_per_worker=0.25))
    assert torch.backends.cudnn.benchmark is True
    assert threads == [4] and fake_gpu.caps == [memory_fraction(0.25, total_bytes=fake_gpu.total)]
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    prepare_device(torch.device("cpu"), TrialSettings(tracking_uri="", cpus_per_worker=2))
    assert torch.backends.cudnn.benchmark is False and len(fake_gpu.caps) == 1  # a CPU trial touches no GPU setting


STEP = []  # weak references to the tensors of the step that ran out of memory


class OutOfMemoryTask:
    """Runs out of memory in its first step, its activations held by its frame and by a reference cycle."""

    def train(self, config, data, context):
        activations = torch.ones(1024)
        STEP.append(weakref.ref(activations))
        cycle = [activations]
        cycle.append(cycle)  # freed only by the garbage collector
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


TASK = OutOfMemoryTask()


@pytest.mark.parametrize("world_size", [1, 2])
def test_an_ended_trials_memory_is_released_after_its_error(fake_gpu, monkeypatch, world_size):
    # At empty_cache, no error is being handled (its traceback would hold the step's frames) and the
    # step's tensors are gone: what the allocator caches for them can go back to the GPU.
    seen = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: seen.append((sys.exc_info(), STEP[-1]())))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    reports = []
    channel = Channel(report=lambda metrics, folder: reports.append(metrics), restored=None, trial_id="t1",
                      device=CUDA, rank=world_size - 1, world_size=world_size)  # fmt: skip
    # The task is this module as pytest imported it: its STEP is the one read here.
    settings = TrialSettings(tracking_uri="", gpus_per_worker=0.25, task=f"{__name__}:TASK", workers=world_size)
    if world_size == 1:
        run_process({"seed": 0}, None, settings=settings, channel=channel)
        assert [r["infeasible"] for r in reports] == [1]
    else:  # a rank out of memory alone raises for Train to stop the group, without the error it handled
        with pytest.raises(TrialEnded) as ended:
            run_process({"seed": 0}, None, settings=settings, channel=channel)
        assert ended.value.__context__ is None and ended.value.report["infeasible"] == 1
    assert seen == [((None, None, None), None)]
