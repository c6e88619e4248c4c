import json

import pytest
import torch

import tuner
from search_spaces import apply_overrides, get_space
from tests.test_end_to_end import search_kwargs
from tuner.packing import probe as packing
from tuner.packing.probe import ProbeRun
from tuner.trial.process import device_for

GIB = 1024**3


def test_probe_config_is_the_hungriest():
    config = packing.probe_config(get_space("cifar"), max_epochs=10, seed=0)
    assert config["batch_size"] == 2048 and config["width"] == 1.0
    assert config["lr"] == 11.5 and config["arch"] == "airbench" and config["epochs"] == 10
    narrowed = apply_overrides(get_space("cifar"), ["lr=20:30"])
    assert packing.probe_config(narrowed, max_epochs=1, seed=0)["lr"] == pytest.approx((20 * 30) ** 0.5)


def run(start: float, rate: float, *, seconds: float = 4.0, peak: float = 2 * GIB) -> ProbeRun:
    """A probe that trained ``rate`` epochs/s from ``start`` for ``seconds``."""
    times = tuple(start + i / rate for i in range(int(seconds * rate) + 1))
    return ProbeRun("H100", int(peak), 80 * GIB, times, tuple(range(len(times))))


def test_throughput_counts_the_window_when_all_probes_ran():
    assert packing.throughput([run(0.0, 2.0)]) == pytest.approx(2.0)
    # Two probes started a second apart: only the 3 s when both ran count.
    assert packing.throughput([run(0.0, 2.0), run(1.0, 1.0)]) == pytest.approx(3.0)
    assert packing.throughput([run(0.0, 2.0, seconds=2), run(5.0, 2.0)]) is None  # never at once


def test_choose_the_smallest_packing_near_the_best():
    assert packing.choose({1: 100.0, 2: 180.0, 4: 200.0, 8: 204.0}) == 4  # 8 gains under 5%
    assert packing.choose({1: 100.0, 2: 101.0}) == 1
    assert packing.choose({1: 100.0, 2: 180.0, 4: 150.0}) == 2  # past the best, contexts fight


def test_memory_bounds_the_packing():
    assert packing.fits(8, [run(0.0, 1, peak=2 * GIB)])
    assert not packing.fits(4, [run(0.0, 1, peak=20 * GIB)])  # 4 x 20 > 0.85 x 80


def test_fractions_fit_on_one_gpu():
    for n in range(1, 9):
        share = packing.fraction_for(n)
        assert n * share <= 1.0 and (n + 1) * share > 1.0
    assert packing.fraction_for(3) == 0.3333


def test_decision_is_explained():
    text = packing.describe({1: 1.5, 2: 2.25}, [run(0.0, 1)], 2)
    assert "epochs/s" in text and "1: 1.50, 2: 2.25" in text
    assert "2.00 of 80.0 GiB" in text and "--gpus-per-trial 0.5" in text


def test_sampler_without_nvidia_smi(monkeypatch):
    monkeypatch.setattr(packing.shutil, "which", lambda name: None)
    with packing.UtilisationSampler() as sampler:
        pass
    assert sampler.mean() is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_probe_on_a_gpu():
    from trainables.data import synthetic_images

    x, y = synthetic_images(4096, seed=0)
    data = {"train_x": x[:3584], "train_y": y[:3584], "val_x": x[3584:], "val_y": y[3584:], "key": "probe"}
    config = packing.probe_config(apply_overrides(get_space("cifar"), ["width=0.5"]), max_epochs=2, seed=0)
    probe = packing.run_probe("cifar", config, data, seconds=1.0)
    assert 0 < probe.peak_bytes < probe.total_bytes
    assert probe.times[-1] - probe.times[0] >= 1.0 and probe.epochs[-1] > 0
    assert packing.throughput([probe]) > 0


def test_a_trial_trains_on_the_gpu_ray_gave_it(monkeypatch):
    # Ray leaves CUDA_VISIBLE_DEVICES alone for a process given no GPU: it sees them all.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_for([]) == torch.device("cpu")
    assert device_for(["3"]) == torch.device("cuda", 0)  # Ray narrowed the visible GPUs to its own
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_for(["0"]) == torch.device("cpu")  # a logical GPU on a machine without CUDA


@pytest.fixture(scope="module")
def ray_with_a_gpu():
    """Ray with one logical GPU: Tune schedules GPU shares (trials train on CPU where CUDA is absent)."""
    import ray

    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_trials_share_a_gpu_by_the_spaces_default(tmp_path, cifar_dir, ray_with_a_gpu, capsys):
    result = tuner.search(**search_kwargs(tmp_path, cifar_dir, "shared", num_samples=2, max_epochs=1, grace_period=1))
    assert result.best is not None
    out = capsys.readouterr().out
    assert "--gpus-per-trial not given: 4 trial(s) per GPU, the cifar space's default (--gpus-per-trial 0.25)" in out
    saved = json.loads((tmp_path / "runs" / "shared" / "search.json").read_text())
    assert saved["resources"]["gpus_per_trial"] == 0.25  # what --resume continues with
