"""Wall-clock, best test accuracy and GPU utilisation of the ``cifar`` search with its defaults (``run_tune.py``'s).

The baseline, measured in the same run, is one trial of the default recipe
trained alone for the same number of epochs: the search's wall-clock is
printed as a multiple of it. GPU utilisation is sampled with nvidia-smi while
the search runs, and averaged from the first reported epoch to the last (not
the start-up, nor the finish: test evaluation, model export, report). On a
machine with several GPUs the search is pinned to the first, as the goals are
for one (``--all-gpus`` to use every one).

    python bench/search.py --data-dir data                   # the default search (a GPU)
    python bench/search.py --smoke                           # the smoke search on synthetic data, CPU (CI)
    python bench/search.py --data-dir data -- --num-samples 32   # extra flags for run_tune.py
    python bench/search.py --data-dir data --no-baseline --json wide.json -- --param width=1.0,1.5 --max-epochs 16
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from common import default_recipe, load_splits, machine, table, write_json

from search_spaces import get_space
from trainables.data import write_cifar_layout
from trainables.device import prepare_cuda
from trainables.loop import DeviceData, train
from tuner.packing.probe import UtilisationSampler


def search_settings(work: Path, data_dir: str, extra: list[str]):
    """The settings ``run_tune.py --space cifar [extra]`` would run with: its parser and checks (``tuner.cli``)."""
    from tuner.cli import build_parser, settings_from_args

    argv = ["--space", "cifar", "--data-dir", data_dir, "--storage-path", str(work / "runs"),
            "--mlflow-uri", f"sqlite:///{work}/mlflow.db", "--name", "bench", *extra]  # fmt: skip
    return settings_from_args(build_parser().parse_args(argv), cwd=work)


def run_search(work: Path, data_dir: str, extra: list[str]) -> dict:
    """The search ``run_tune.py --space cifar [extra]`` would run, through the Python API, timed in this process.

    The flags go through the command line's parser and checks (``tuner.cli``), so ``extra`` means what it means
    to run_tune.py; the first epoch any trial reports is seen by ``on_result``.
    """
    from tuner.api import run

    settings = search_settings(work, data_dir, extra)
    epochs: list[float] = []  # when each epoch of any trial was reported
    start = time.monotonic()
    with UtilisationSampler(period=0.5) as sampler, open(work / "search.log", "w") as log:
        result = run(settings, out=log, on_result=lambda update: epochs.append(time.monotonic()))
    wall = time.monotonic() - start
    if result.best is None:
        raise SystemExit(f"the search produced no usable trial; see {work / 'search.log'}")
    # Busy while the trials train: from the first reported epoch to the last, not the start-up before (Ray, data)
    # nor the finish after (the test evaluation, the model's export, the report), which no packing can fill.
    busy = sampler.mean(since=epochs[0], until=epochs[-1]) if epochs else None
    return {
        "run": "search (tuner.search)",
        "wall_s": wall,
        "startup_s": epochs[0] - start if epochs else float("nan"),
        "finish_s": start + wall - epochs[-1] if epochs else float("nan"),
        "gpu_busy_after_startup": busy if busy is not None else float("nan"),
        "best_val_acc": result.best.score,
        "test_acc": result.best.test_scores.get("test_acc", float("nan")),
    }


def run_single_trial(data_dir: str, *, epochs: int, smoke: bool) -> dict:
    """One trial of the default recipe, alone, in this process."""
    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    prepare_cuda(device)  # cuDNN autotuning, as a trial has it
    config = default_recipe(epochs=epochs)
    if smoke:
        space = get_space("cifar")
        config.update(width=space.smoke.params["width"][0], batch_size=space.smoke.params["batch_size"][0], tta=0)
    splits = load_splits(data_dir, train_size=get_space("cifar").smoke.train_size if smoke else None)
    data = DeviceData.from_arrays(vars(splits), device=device)
    metrics: list[dict] = []
    t0 = time.monotonic()
    train(config, data=data, device=device, report=lambda m, s: metrics.append(m))
    return {"run": "one reference trial alone", "wall_s": time.monotonic() - t0, "startup_s": 0.0,
            "gpu_busy_after_startup": float("nan"), "best_val_acc": max(m["val_acc"] for m in metrics),
            "test_acc": float("nan")}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The command line (bench/gpu_check.py parses its planned arguments with it in a dry run)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py (--smoke: synthetic data)")
    p.add_argument("--smoke", action="store_true", help="the smoke search on CPU")
    p.add_argument(
        "--no-baseline", action="store_true", help="skip the reference trial trained alone (saves its minute)"
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures there")
    p.add_argument("--all-gpus", action="store_true", help="search on every GPU (default: the first, as the goals)")
    p.add_argument("extra", nargs="*", help="flags passed on to run_tune.py (after --)")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Refuse what the search would refuse (``--data-dir`` missing, run_tune.py flags that do not parse or check)."""
    if args.data_dir is None and not args.smoke:
        raise SystemExit("--data-dir is needed without --smoke")
    extra = (["--smoke-test"] if args.smoke else []) + args.extra
    try:
        search_settings(Path(tempfile.gettempdir()), args.data_dir or "data", extra)
    except SystemExit as e:  # argparse's error, already printed
        raise SystemExit(f"the run_tune.py flags {extra} do not parse (exit {e.code})") from None
    except Exception as e:  # HpsearchError and the like: the message names the fix
        raise SystemExit(f"the run_tune.py flags {extra}: {e}") from None


def pin_one_gpu(*, all_gpus: bool) -> str | None:
    """The goals are for one GPU: on a machine with several, the search sees only the first (unless ``all_gpus``).

    Set before CUDA or Ray starts (both read ``CUDA_VISIBLE_DEVICES`` once); a choice already made is kept.
    Returns what was done, in words, or None.
    """
    if all_gpus or "CUDA_VISIBLE_DEVICES" in os.environ or not shutil.which("nvidia-smi"):
        return None
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    count = sum(1 for line in listed.splitlines() if line.startswith("GPU "))
    if count < 2:
        return None
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"
    return f"pinned to GPU 0 of {count} (the goals are for one GPU; --all-gpus to search on every one)"


def main(argv: list[str] | None = None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    pinned = pin_one_gpu(all_gpus=args.all_gpus)
    if pinned:
        print(pinned)
    if args.data_dir is None and not args.smoke:
        p.error("--data-dir is needed without --smoke")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_dir = args.data_dir
        if data_dir is None:
            from trainables.data import synthetic_images

            data_dir = str(work / "data")
            write_cifar_layout(
                Path(data_dir), train=synthetic_images(5000, seed=1), test=synthetic_images(1000, seed=2)
            )
        data_dir = str(Path(data_dir).resolve())
        extra = (["--smoke-test"] if args.smoke else []) + args.extra
        epochs = search_settings(work, data_dir, extra).budget.max_epochs
        print(f"machine: {machine()}")
        search = run_search(work, data_dir, extra)
        figures = {"machine": machine(), "run_tune_flags": extra, "max_epochs": epochs, "search": search,
                   "single": None}  # fmt: skip
        write_json(args.json, figures)  # the search's figures stand even if the baseline does not finish
        if not args.no_baseline:
            figures["single"] = run_single_trial(data_dir, epochs=epochs, smoke=args.smoke)
            write_json(args.json, figures)
    single = figures["single"]
    print(table([search] + ([single] if single else [])))
    if single:
        print(f"search wall-clock: {search['wall_s']:.1f} s = {search['wall_s'] / single['wall_s']:.2f}x "
              "one trial alone")  # fmt: skip
    if not args.smoke:
        busy = search["gpu_busy_after_startup"]
        print(f"goal wall-clock <= 90 s: {'met' if search['wall_s'] <= 90 else 'missed'}")
        print(f"goal best test_acc >= 0.910: {'met' if search['test_acc'] >= 0.91 else 'missed'}")
        print(f"goal GPU busy >= 85% after start-up: {'met' if busy >= 0.85 else 'missed or not measured'}")


if __name__ == "__main__":
    main()
