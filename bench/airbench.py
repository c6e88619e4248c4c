"""GPU time to 90.7% test accuracy: the default recipe against airbench94, run in the same job on the same data.

airbench94 is the public CIFAR-10 speed-record script (``airbench94_muon.py``
from github.com/KellerJordan/cifar10-airbench). It is not part of this
project: download it yourself into a git-ignored folder and name it with
``--script``. This benchmark gives it the images of ``--data-dir`` in the
files it expects (``cifar10/train.pt`` and ``test.pt`` in a scratch folder, so
it never downloads anything), runs a copy of it with its run count set to
``--runs``, and reads its per-run test accuracy and timed seconds from its
output. The default recipe (the ``cifar`` space's reference config) then runs
the same number of times in this process on the same 50,000 training images,
timed as airbench times itself: the training steps and the final test
evaluation with test-time augmentation, not the per-epoch logging evaluations
and not compilation (a warm-up run comes first for both). airbench also counts
its whitening set-up, a few milliseconds, which ours does before its clock starts.

    python bench/airbench.py --data-dir data --script .gpu/airbench94_muon.py --runs 10
    python bench/airbench.py --data-dir data --recipe-only --runs 1     # ours alone, any device
    python bench/airbench.py --data-dir data --recipe-only --runs 3 --epochs 10 16 --json figures.json

airbench94 needs a CUDA GPU; ``--recipe-only`` runs on a CPU too (slowly: about
25 minutes for one 10-epoch run on 2 cores).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import default_recipe, machine, table, write_json

from trainables import data as cifar
from trainables.device import prepare_cuda
from trainables.loop import DeviceData, evaluate, train

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
RUN_LOOP = re.compile(r"range\(\s*200\s*\)")  # the script's "for run in range(200)"
TARGET = 0.907


def write_airbench_data(folder: Path, images: tuple[np.ndarray, ...]) -> Path:
    """Save the splits as airbench's ``cifar10/{train,test}.pt``: uint8 (N, 32, 32, 3) images, int64 labels."""
    train_x, train_y, test_x, test_y = images
    root = folder / "cifar10"
    root.mkdir(parents=True, exist_ok=True)
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        nhwc = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        torch.save({"images": nhwc, "labels": torch.from_numpy(y.astype(np.int64)), "classes": CLASSES},
                   root / f"{name}.pt")  # fmt: skip
    return root


def patch_runs(source: str, runs: int) -> str:
    """The script's text with its run count set to ``runs``."""
    patched, found = RUN_LOOP.subn(f"range({runs})", source)
    if found != 1:
        raise SystemExit(
            "the script has no single 'range(200)' run loop: pass airbench94_muon.py from "
            "github.com/KellerJordan/cifar10-airbench (main branch), unmodified"
        )
    return patched


def parse_runs(output: str) -> list[dict[str, float]]:
    """Each timed run's final row: ``|  run  |  eval  |  ...  |  tta_val_acc  |  time_seconds  |``.

    The first run airbench prints is its compile warm-up on random labels; it is dropped.
    """
    runs = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[1] == "eval":
            runs.append({"test_acc": float(cells[4]), "seconds": float(cells[5])})
    if not runs:
        raise SystemExit("no finished runs in airbench's output (see above)")
    return runs[1:]


def run_airbench(script: Path, work: Path, *, runs: int, python: str = sys.executable) -> list[dict[str, float]]:
    """Run a copy of ``script`` in ``work`` (which holds ``cifar10/``); returns its timed runs."""
    copy = work / f"{script.stem}_{runs}runs.py"
    copy.write_text(patch_runs(script.read_text(), runs))
    done = subprocess.run([python, copy.name], cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"{script.name} failed with exit code {done.returncode} (its output is above)")
    return parse_runs(done.stdout)


def run_recipe(
    config: dict[str, Any], images: tuple[np.ndarray, ...], device: torch.device, *, seed: int, compile: bool
) -> dict[str, float]:
    """One run of ``config`` on the training images given; seconds as airbench counts them."""
    train_x, train_y, test_x, test_y = images
    arrays = {"train_x": train_x, "train_y": train_y, "val_x": test_x[:0], "val_y": test_y[:0]}
    device_data = DeviceData.from_arrays(arrays, device=device)
    test = torch.from_numpy(test_x).to(device), torch.from_numpy(test_y).to(device)
    epochs: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    model = train(dict(config, seed=seed), data=device_data, device=device, compile=compile,
                  report=lambda metrics, state: epochs.append(metrics))  # fmt: skip
    t0 = time.perf_counter()
    _, acc = evaluate(model, *test, tta=int(config["tta"]))  # returns host floats: the device is done
    timed = sum(m["train_time_s"] for m in epochs) + time.perf_counter() - t0
    return {"test_acc": acc, "seconds": timed, "wall_s": time.perf_counter() - t_start}


def summary(name: str, runs: list[dict[str, float]]) -> dict[str, Any]:
    accs, secs = [r["test_acc"] for r in runs], [r["seconds"] for r in runs]
    return {
        "run": name,
        "runs": len(runs),
        "test_acc_mean": statistics.mean(accs),
        "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "seconds_mean": statistics.mean(secs),
        "seconds_min": min(secs),
        "seconds_max": max(secs),
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line (bench/gpu_check.py parses its planned arguments with it in a dry run)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder holding cifar-10-batches-py")
    p.add_argument("--script", type=Path, help="airbench94_muon.py, kept outside git")
    p.add_argument("--runs", type=int, default=10, help="timed runs of each (after one warm-up run)")
    p.add_argument(
        "--epochs",
        type=int,
        nargs="+",
        default=None,
        help="the recipe's epochs, one or more counts, each timed over --runs seeds (default: the space's max_epochs)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the recipe's network (off by default, as in a search: compiling costs more than a trial)",
    )
    p.add_argument(
        "--recipe-only",
        action="store_true",
        help="only the default recipe, on any device (a CPU too): accuracy and seconds, no comparison",
    )
    p.add_argument(
        "--holdout",
        action="store_true",
        help="train the recipe on the 45,000 images a search's trial trains on (not all 50,000)",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures there, after each epochs count")
    return p


def main(argv: list[str] | None = None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if not args.recipe_only:
        if args.script is None:
            p.error("--script is needed (the path of airbench94_muon.py), or --recipe-only")
        if not args.script.is_file():
            p.error(f"--script {args.script}: no such file; download airbench94_muon.py there first")
        if not torch.cuda.is_available():
            p.error("airbench94 runs only on a CUDA GPU; on this machine add --recipe-only")
    from search_spaces import get_space

    epoch_counts = args.epochs or [get_space("cifar").budget.max_epochs]
    images = cifar.load(Path(args.data_dir), download_if_missing=False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    prepare_cuda(device)  # cuDNN autotuning, as a trial has it
    compile = args.compile and device.type == "cuda"
    print(f"machine: {machine()}; data: {len(images[1])} train, {len(images[3])} test images")
    theirs = None
    if not args.recipe_only:
        with tempfile.TemporaryDirectory() as tmp:
            write_airbench_data(Path(tmp), images)
            theirs = summary("airbench94_muon.py", run_airbench(args.script.resolve(), Path(tmp), runs=args.runs))
    if args.holdout:
        s = cifar.split(*images)
        images = (s.train_x, s.train_y, s.test_x, s.test_y)
    figures: dict[str, Any] = {"machine": machine(), "device": device.type, "target": TARGET,
                               "train_images": len(images[1]), "airbench94": theirs, "recipe": []}  # fmt: skip
    for i, epochs in enumerate(epoch_counts):
        config = default_recipe(epochs=epochs)
        print(f"recipe: {config}; {len(images[1])} training images; device {device}, compile {compile}")
        if device.type == "cuda" and i == 0:  # a warm-up run (cuDNN autotuning, compilation), not counted
            run_recipe(config, images, device, seed=10_000, compile=compile)
        ours = [run_recipe(config, images, device, seed=s, compile=compile) for s in range(args.runs)]
        row = {**summary(f"default recipe (ours), {epochs} epochs", ours), "epochs": epochs}
        if theirs is not None:
            row["ratio_to_airbench94"] = row["seconds_mean"] / theirs["seconds_mean"]
        figures["recipe"].append(row)
        write_json(args.json, figures)
        rows = [{k: v for k, v in r.items() if k not in ("epochs", "ratio_to_airbench94")} for r in figures["recipe"]]
        print(table(rows + ([theirs] if theirs else [])), flush=True)
        reached = row["test_acc_mean"] >= TARGET
        print(f"ours at {epochs} epochs reaches {TARGET:.1%} mean test accuracy: {'yes' if reached else 'no'}")
        if theirs is not None:
            ratio = row["ratio_to_airbench94"]
            print(f"GPU time at {epochs} epochs, ours / airbench94: {ratio:.2f}x (goal <= 1.1x)")
            print(f"goal: {'met' if reached and ratio <= 1.1 else 'missed'}")


if __name__ == "__main__":
    main()
