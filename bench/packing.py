"""Trials finished per minute on one GPU, by how many trials share it: 1, 2, 4, 8 and ``auto``.

Each packing runs the same search through ``tuner.search`` (same seed, so the
same configs; ASHA's grace period set to the last epoch, so no trial is
stopped and every packing trains the same epochs). The clock runs from the
first epoch any trial reports to the last one (``on_result``), so Ray's start and the final test evaluation,
which do not depend on the packing, are left out. The baseline in the same
run is one trial per GPU; ``auto`` is the packing ``--gpus-per-trial auto``
chooses, whose probe time is reported apart. With ``--mps`` every packing
runs a second time under NVIDIA's Multi-Process Service
(``nvidia-cuda-mps-control -d``, started and stopped here).

    python bench/packing.py --data-dir data                    # 1, 2, 4, 8, auto
    python bench/packing.py --data-dir data --mps --packings 1 4 8
    python bench/packing.py --data-dir data --packings 1 4 --samples 8 --epochs 4 --json packing.json
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from common import machine, table, write_json


def run_search(work: Path, data_dir: str, *, name: str, gpus: str, samples: int, epochs: int) -> dict:
    """One search at ``gpus`` per trial through the Python API; the clock runs from the first epoch to the last."""
    import tuner

    seen: list[float] = []
    t0 = time.monotonic()
    result = tuner.search("cifar", data_dir=data_dir, storage_path=str(work / "runs"), name=name,
                          mlflow_uri=f"sqlite:///{work}/mlflow.db", num_samples=samples, max_epochs=epochs,
                          grace_period=epochs, gpus_per_trial=gpus if gpus == "auto" else float(gpus),
                          cpus_per_trial=1, quiet=True, on_result=lambda update: seen.append(time.monotonic()))
    wall = time.monotonic() - t0
    if result.best is None or not seen:
        raise SystemExit(f"the search at --gpus-per-trial {gpus} produced no usable trial: see {result.folder}")
    share = float(result.settings.resources.gpus_per_trial)
    span = seen[-1] - seen[0]
    return {"gpus_per_trial": gpus, "trials_per_gpu": round(1 / share) if share else None,
            "trial_span_s": span, "trials_per_min": samples / span * 60,
            "before_first_epoch_s": seen[0] - t0, "wall_s": wall}  # fmt: skip


def mps(on: bool) -> None:
    if on:
        subprocess.run(["nvidia-cuda-mps-control", "-d"], check=True)
    else:
        subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, check=False)
        time.sleep(1)


def build_parser() -> argparse.ArgumentParser:
    """The command line (bench/gpu_check.py parses its planned arguments with it in a dry run)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder holding cifar-10-batches-py")
    p.add_argument("--packings", type=int, nargs="+", default=[1, 2, 4, 8], help="trials per GPU to time")
    p.add_argument("--samples", type=int, default=16, help="trials per search")
    p.add_argument("--epochs", type=int, default=5, help="epochs per trial (none is stopped early)")
    p.add_argument("--no-auto", action="store_true", help="skip --gpus-per-trial auto")
    p.add_argument("--mps", action="store_true", help="also run every packing under NVIDIA MPS")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures there, after each packing")
    return p


def main(argv: list[str] | None = None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
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
                    write_json(args.json, {"machine": machine(), "samples": args.samples, "epochs": args.epochs,
                                           "rows": rows})  # fmt: skip
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
