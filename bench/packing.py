"""Trials finished per minute on one GPU, by how many trials share it: 1, 2, 4, 8 and ``auto``.

Each packing runs the same search through ``run_tune.py`` (same seed, so the
same configs; ASHA's grace period set to the last epoch, so no trial is
stopped and every packing trains the same epochs). The clock runs from the
first epoch any trial reports to the last one (read from the trials'
``progress.csv`` every 0.1 s), so Ray's start and the final test evaluation,
which do not depend on the packing, are left out. The baseline in the same
run is one trial per GPU; ``auto`` is the packing ``--gpus-per-trial auto``
chooses, whose probe time is reported apart. With ``--mps`` every packing
runs a second time under NVIDIA's Multi-Process Service
(``nvidia-cuda-mps-control -d``, started and stopped here).

    python bench/packing.py --data-dir data                    # 1, 2, 4, 8, auto
    python bench/packing.py --data-dir data --mps --packings 1 4 8
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, machine, table


def watch(folder: Path, seen: dict, stop: threading.Event) -> None:
    """Record when the first and the last epoch of any trial were reported."""
    sizes: dict[Path, int] = {}
    while not stop.is_set():
        for progress in folder.glob("*/progress.csv"):
            size = progress.stat().st_size
            if size != sizes.get(progress) and len(progress.read_text().splitlines()) > 1:
                now = time.monotonic()
                seen.setdefault("first", now)
                seen["last"] = now
                sizes[progress] = size
        time.sleep(0.1)


def run_search(work: Path, data_dir: str, *, name: str, gpus: str, samples: int, epochs: int) -> dict:
    cmd = [sys.executable, str(ROOT / "run_tune.py"), "--space", "cifar", "--data-dir", data_dir,
           "--storage-path", str(work / "runs"), "--mlflow-uri", f"sqlite:///{work}/mlflow.db", "--name", name,
           "--num-samples", str(samples), "--max-epochs", str(epochs), "--grace-period", str(epochs),
           "--gpus-per-trial", gpus, "--cpus-per-trial", "1"]  # fmt: skip
    seen: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(work / "runs" / name, seen, stop), daemon=True)
    watcher.start()
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.monotonic() - t0
    stop.set()
    watcher.join()
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"run_tune.py failed for --gpus-per-trial {gpus}")
    chosen = re.search(r"--gpus-per-trial auto: .*?(\d+) trial\(s\) per GPU", done.stdout)
    span = seen["last"] - seen["first"]
    return {"gpus_per_trial": gpus, "trials_per_gpu": int(chosen.group(1)) if chosen else None,
            "trial_span_s": span, "trials_per_min": samples / span * 60,
            "before_first_epoch_s": seen["first"] - t0, "wall_s": wall}  # fmt: skip


def mps(on: bool) -> None:
    if on:
        subprocess.run(["nvidia-cuda-mps-control", "-d"], check=True)
    else:
        subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, check=False)
        time.sleep(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder holding cifar-10-batches-py")
    p.add_argument("--packings", type=int, nargs="+", default=[1, 2, 4, 8], help="trials per GPU to time")
    p.add_argument("--samples", type=int, default=16, help="trials per search")
    p.add_argument("--epochs", type=int, default=5, help="epochs per trial (none is stopped early)")
    p.add_argument("--no-auto", action="store_true", help="skip --gpus-per-trial auto")
    p.add_argument("--mps", action="store_true", help="also run every packing under NVIDIA MPS")
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        p.error("trials share GPUs only where there is one: run this on a machine with a CUDA GPU")
    data_dir = str(Path(args.data_dir).resolve())
    print(f"machine: {machine()}; {args.samples} trials x {args.epochs} epochs per search")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for under_mps in [False, True] if args.mps else [False]:
            if under_mps:
                mps(True)
            try:
                choices = [f"{1 / k:.4f}" for k in args.packings] + ([] if args.no_auto else ["auto"])
                for gpus in choices:
                    name = f"pack-{gpus.replace('.', '_')}-{'mps' if under_mps else 'plain'}"
                    row = run_search(Path(tmp), data_dir, name=name, gpus=gpus, samples=args.samples,
                                     epochs=args.epochs)  # fmt: skip
                    row["mps"] = under_mps
                    rows.append(row)
                    print(table([row]), flush=True)
            finally:
                if under_mps:
                    mps(False)
    print(table(rows))
    for under_mps in sorted({r["mps"] for r in rows}):
        group = [r for r in rows if r["mps"] == under_mps and r["gpus_per_trial"] != "auto"]
        base = next((r for r in group if float(r["gpus_per_trial"]) == 1.0), None)
        best = max(group, key=lambda r: r["trials_per_min"])
        label = "MPS" if under_mps else "no MPS"
        if base:
            for r in group:
                ratio = r["trials_per_min"] / base["trials_per_min"]
                print(f"{label}: --gpus-per-trial {r['gpus_per_trial']}: {ratio:.2f}x the trials/min of 1 per GPU")
        auto = next((r for r in rows if r["mps"] == under_mps and r["gpus_per_trial"] == "auto"), None)
        if auto:
            share = auto["trials_per_min"] / best["trials_per_min"]
            print(f"{label}: auto chose {auto['trials_per_gpu']} per GPU: {share:.2f} of the best fixed packing "
                  f"({best['gpus_per_trial']}) (goal >= 0.90: {'met' if share >= 0.9 else 'missed'})")  # fmt: skip


if __name__ == "__main__":
    main()
