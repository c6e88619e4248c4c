"""The airbench comparison's plumbing, on CPU: its data files, its patched copy, and reading its output.

airbench94 itself needs CUDA; here a stand-in script with the same data
loading, run loop and output format plays its part.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import airbench  # noqa: E402

from trainables.data import synthetic_images  # noqa: E402

# Reads the data the way airbench94_muon.py does and prints rows in its format.
STAND_IN = textwrap.dedent("""
    import torch
    data = torch.load("cifar10/train.pt")
    test = torch.load("cifar10/test.pt")
    assert data["images"].dtype == torch.uint8 and data["images"].shape[1:] == (32, 32, 3)
    assert data["labels"].dtype == torch.int64 and len(data["classes"]) == 10
    print("|  run     |  epoch  |  train_acc  |  val_acc  |  tta_val_acc  |  time_seconds  |")

    def main(run):
        n = -50 if run == "warmup" else run
        acc, seconds = 0.90 + 0.001 * n, 1.5 + 0.1 * n
        print(f"|  {run}  |      1  |     0.5000  |   0.4000  |               |        0.5000  |")
        print(f"|          |   eval  |     0.5000  |   0.4000  |       {acc:.4f}  |        {seconds:.4f}  |")
        return acc

    main("warmup")
    accs = [main(run) for run in range(200)]
    print(len(test["labels"]))
""")


def test_airbench_stand_in_runs_on_our_data(tmp_path: Path) -> None:
    train, test = synthetic_images(300, seed=1), synthetic_images(100, seed=2)
    root = airbench.write_airbench_data(tmp_path, (*train, *test))
    saved = torch.load(root / "train.pt")
    assert torch.equal(saved["images"].permute(0, 3, 1, 2), torch.from_numpy(train[0]))  # NHWC of the same pixels
    assert torch.equal(saved["labels"], torch.from_numpy(train[1].astype(np.int64)))
    script = tmp_path / "airbench94_muon.py"
    script.write_text(STAND_IN)
    runs = airbench.run_airbench(script, tmp_path, runs=3)
    # The warm-up run is dropped; the run count was patched from 200 to 3.
    assert runs == [
        {"test_acc": 0.9, "seconds": 1.5},
        {"test_acc": 0.901, "seconds": 1.6},
        {"test_acc": 0.902, "seconds": 1.7},
    ]
    assert "range(200)" in script.read_text()  # the original is left as it was


def test_airbench_script_that_is_not_airbench_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "other.py"
    script.write_text("print('hello')\n")
    with pytest.raises(SystemExit, match="airbench94_muon.py"):
        airbench.run_airbench(script, tmp_path, runs=2)


def test_airbench_failure_names_the_exit_code(tmp_path: Path, capsys) -> None:
    script = tmp_path / "airbench94_muon.py"
    script.write_text("import sys\nfor run in range(200): pass\nprint('no cuda'); sys.exit(3)\n")
    with pytest.raises(SystemExit, match="exit code 3"):
        airbench.run_airbench(script, tmp_path, runs=2)
    assert "no cuda" in capsys.readouterr().err


def test_recipe_run_is_timed_without_its_logging_evaluations() -> None:
    images = (*synthetic_images(512, seed=1), *synthetic_images(200, seed=2))
    config = airbench.default_recipe(epochs=2)
    config.update(width=0.125, batch_size=128, tta=0)
    result = airbench.run_recipe(config, images, torch.device("cpu"), seed=0, compile=False)
    assert 0.0 < result["seconds"] <= result["wall_s"]
    assert 0.0 <= result["test_acc"] <= 1.0
    # The same seed trains the same network: its accuracy is reproduced exactly.
    again = airbench.run_recipe(config, images, torch.device("cpu"), seed=0, compile=False)
    assert again["test_acc"] == result["test_acc"]


def _bench(*args: str) -> subprocess.CompletedProcess:
    script = Path(__file__).resolve().parent.parent / "bench" / "airbench.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)


def test_airbench_bench_needs_the_script_and_a_gpu(cifar_dir: Path, tmp_path: Path) -> None:
    done = _bench("--data-dir", str(cifar_dir))
    assert done.returncode == 2 and "--script is needed" in done.stderr
    done = _bench("--data-dir", str(cifar_dir), "--script", str(tmp_path / "missing.py"))
    assert done.returncode == 2 and "download airbench94_muon.py" in done.stderr
    if not torch.cuda.is_available():
        (tmp_path / "airbench94_muon.py").write_text("for run in range(200): pass\n")
        done = _bench("--data-dir", str(cifar_dir), "--script", str(tmp_path / "airbench94_muon.py"))
        assert done.returncode == 2 and "add --recipe-only" in done.stderr


@pytest.mark.slow
def test_airbench_bench_recipe_only_runs_anywhere(cifar_dir: Path) -> None:
    done = _bench("--data-dir", str(cifar_dir), "--recipe-only", "--holdout", "--runs", "1", "--epochs", "1")
    assert done.returncode == 0, done.stderr
    assert "1800 training images" in done.stdout  # the search's split of the 2,000 images: a tenth held out
    assert "default recipe (ours)" in done.stdout and "mean test accuracy" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_packing_bench_needs_a_gpu(cifar_dir: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "bench" / "packing.py"
    done = subprocess.run([sys.executable, str(script), "--data-dir", str(cifar_dir)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "a machine with a CUDA GPU" in done.stderr


@pytest.mark.slow
def test_the_efficiency_benchmark_prints_its_ratios(tmp_path: Path) -> None:
    """Its small form: four methods, one seed, one epoch budget, on CPU; the ratios printed and saved."""
    out = tmp_path / "efficiency.json"
    argv = ["--smoke", "--seeds", "1", "--max-epochs", "4", "--budget-epochs", "8", "--cpus", "4", "--out", str(out)]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "bench/efficiency.py", *argv], cwd=root, capture_output=True, text=True,
                          timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = json.loads(out.read_text())
    methods = [row["method"] for row in saved["summary"]]
    assert methods == ["random, full budget", "ASHA (random)", "ASHA (Optuna TPE)", "PBT"]
    assert len(saved["runs"]) == 4 and {r["seed"] for r in saved["runs"]} == {0}
    baseline = saved["summary"][0]
    assert baseline["x_sooner"] == 1.0 and baseline["epochs"] == 8  # 2 trials of 4 epochs, per seed
    assert all(row["x_sooner"] >= 0 and 0 <= row["best_at_same_cost"] <= 1 for row in saved["summary"])
    assert "ASHA (random) reached the target" in done.stdout and "sooner than random, full budget" in done.stdout


def _bench_module(name: str):
    """A bench script imported under a name of its own (``search`` alone is too common a module name)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(airbench.__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_airbench_json_has_a_row_per_epochs_count(tmp_path: Path, monkeypatch) -> None:
    """``--epochs 10 16 --json``: one row per count, each over --runs seeds; the training itself stubbed."""
    monkeypatch.setattr(airbench.cifar, "load", lambda *a, **k: (*synthetic_images(20, seed=1),
                                                                 *synthetic_images(10, seed=2)))  # fmt: skip
    seen = []

    def fake_run(config, images, device, *, seed, compile):
        seen.append((config["epochs"], seed))
        return {"test_acc": 0.9 + config["epochs"] / 1000 + seed / 10_000, "seconds": 1.0 + seed, "wall_s": 9.0}

    monkeypatch.setattr(airbench, "run_recipe", fake_run)
    out = tmp_path / "airbench.json"
    airbench.main(["--data-dir", str(tmp_path), "--recipe-only", "--runs", "2", "--epochs", "10", "16",
                   "--json", str(out)])  # fmt: skip
    figures = json.loads(out.read_text())
    assert [(r["epochs"], r["runs"]) for r in figures["recipe"]] == [(10, 2), (16, 2)]
    assert figures["recipe"][1]["test_acc_mean"] == pytest.approx(0.91605) and figures["airbench94"] is None
    assert [s for e, s in seen if e == 16] == [0, 1]  # a warm-up (seed 10,000) only on a GPU, and once


def test_search_bench_json_and_no_baseline(tmp_path: Path, monkeypatch) -> None:
    """The search's figures are written before the baseline trial; --no-baseline skips that trial."""
    search = _bench_module("search")
    row = {"run": "search", "wall_s": 80.0, "startup_s": 5.0, "gpu_busy_after_startup": float("nan"),
           "best_val_acc": 0.91, "test_acc": 0.905}  # fmt: skip
    monkeypatch.setattr(search, "run_search", lambda work, data_dir, extra: row)
    single = {"run": "alone", "wall_s": 10.0, "startup_s": 0.0, "gpu_busy_after_startup": float("nan"),
              "best_val_acc": 0.9, "test_acc": float("nan")}  # fmt: skip
    trained = []
    monkeypatch.setattr(search, "run_single_trial", lambda d, *, epochs, smoke: trained.append(epochs) or single)
    out = tmp_path / "search.json"
    search.main(["--data-dir", str(tmp_path), "--json", str(out), "--", "--max-epochs", "16"])
    figures = json.loads(out.read_text())
    assert figures["run_tune_flags"] == ["--max-epochs", "16"] and figures["max_epochs"] == 16 and trained == [16]
    assert figures["search"]["gpu_busy_after_startup"] is None and figures["single"]["wall_s"] == 10.0  # NaN: null
    search.main(["--data-dir", str(tmp_path), "--json", str(out), "--no-baseline"])
    assert json.loads(out.read_text())["single"] is None and trained == [16]
    with pytest.raises(SystemExit, match="has no parameter 'widht'"):
        search.check_args(search.build_parser().parse_args(["--data-dir", "d", "--", "--param", "widht=1"]))


def test_the_search_bench_pins_one_gpu_of_several(tmp_path, monkeypatch):
    """On a machine with two GPUs (a stand-in nvidia-smi) the search sees the first; a choice made is kept."""
    import search as search_bench

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: a)'\necho 'GPU 1: NVIDIA H100 (UUID: b)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert search_bench.pin_one_gpu(all_gpus=True) is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    assert search_bench.pin_one_gpu(all_gpus=False).startswith("pinned to GPU 0 of 2")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert search_bench.pin_one_gpu(all_gpus=False) is None and os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_gpu_busy_leaves_out_the_start_up_and_the_finish():
    """The sampler's mean over the training span only: the idle start and finish do not lower it."""
    from tuner.packing.probe import UtilisationSampler

    sampler = UtilisationSampler(period=1.0)
    sampler.times, sampler.samples = [0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 0.9, 1.0, 0.8, 0.0]
    assert sampler.mean() == pytest.approx(2.7 / 5)
    assert sampler.mean(since=1.0, until=3.0) == pytest.approx(0.9)
