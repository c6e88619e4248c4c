"""Search efficiency: how soon each scheduler reaches a target score, under the same compute budget.

In one job, on the same task and data, over several seeds, four searches
each get the same budget of trial-epochs:

- full-budget random search (``--scheduler fifo``): budget / max-epochs trials,
  each trained to the end; the baseline;
- ASHA with random search, and ASHA with Optuna's TPE: as many trials as ASHA
  is expected to fit in the budget (``results.cost.scheduler_epochs``);
- PBT: a population of budget / max-epochs trials, exploiting every
  grace-period epochs.

For each it prints the compute (GPU-seconds on a GPU, CPU-seconds otherwise)
until the search's best validation score first reached the target, the best
score at the end, the best score by the time it had spent what the baseline
spent in all (ASHA's trial count is sized by expectation, and with few trials
it overspends: this is the comparison at equal compute), and the ratio of the
baseline's time to target to its own ("4.0x" reaches the target four times
sooner). The target is ``--target`` or,
by default, the median final best of the baseline's runs (the lower middle
one for an even count): a score plain random search reaches in half its seeds. The searches run on a copy of the
cifar space without its reference config, which every search would otherwise
try first: the comparison is of how the methods search, not of one known
good config.

    python bench/efficiency.py --smoke                  # small form, CPU, synthetic CIFAR-shaped data (CI)
    python bench/efficiency.py --smoke --data-dir data  # small form on a slice of real CIFAR-10
    python bench/efficiency.py --data-dir data          # the cifar task's default budget, on a GPU
    python bench/efficiency.py --table                  # replay recorded learning curves: every method, 50 seeds

``--table`` runs no search: it replays a learning-curve table recorded once
(``bench/record_curves.py``) through the same schedulers and searchers in
simulated time, over many seeds, in seconds (``bench/efficiency_table.py``).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

import efficiency_table
import pandas as pd
import yaml
from common import machine, table, write_json

import results
from results.cost import progress_curve, reached, scheduler_epochs
from search_spaces import BUILTIN_DIR, get_space

METHODS = {  # name -> the search's settings that make it (tuner.search keywords)
    "random, full budget": {"scheduler": "fifo"},
    "ASHA (random)": {"scheduler": "asha"},
    "ASHA (Optuna TPE)": {"scheduler": "asha", "searcher": "optuna"},
    "PBT": {"scheduler": "pbt"},
}
BASELINE = "random, full budget"
SPACE_FILE = "cifar-no-reference.yaml"
GOAL = ("ASHA (random)", 4.0)  # ASHA should reach the target at least 4x sooner than the baseline


def trials_for(method: str, *, budget_epochs: int, max_epochs: int, grace_period: int, reduction_factor: int) -> int:
    """How many trials ``method`` gets so that it is expected to train ``budget_epochs`` epochs in all."""
    scheduler = METHODS[method]["scheduler"]
    per_trial = scheduler_epochs(scheduler, max_epochs=max_epochs, grace_period=grace_period,
                                 reduction_factor=reduction_factor)  # fmt: skip
    return max(2, round(budget_epochs / per_trial))


def run_one(work: Path, data_dir: str, *, method: str, seed: int, trials: int, budget: dict, smoke: bool) -> dict:
    """One search, in this process (Ray already started); returns its folder and what it cost."""
    import tuner

    name = f"{''.join(c for c in method.lower() if c.isalnum())}-s{seed}"
    log = io.StringIO()  # the progress table and the summary: one line per search here
    result = tuner.search(str(work / SPACE_FILE), data_dir=data_dir, storage_path=str(work), name=name, seed=seed,
                          mlflow_uri=f"sqlite:///{work / 'mlflow.db'}", num_samples=trials,
                          max_epochs=budget["max_epochs"], grace_period=budget["grace_period"],
                          reduction_factor=budget["reduction_factor"], checkpoint_period=30, smoke_test=smoke,
                          out=log, **METHODS[method])  # fmt: skip
    (work / f"{name}.log").write_text(log.getvalue())
    return {"method": method, "seed": seed, "trials": trials, "folder": result.folder}


def measure(run: dict, *, target: float, metric: str, mode: str) -> tuple[dict, pd.DataFrame]:
    """Compute until the best score first reached ``target``, the final best, the epochs trained; and the curve."""
    folder = run["folder"]
    frame = results.load_results(folder)
    best = json.loads(Path(folder, results.BEST_CONFIG).read_text())
    cost = best["cost"]
    # GPU-seconds where trials had GPUs, else CPU-seconds: per trial-second, what each trial held.
    held = float(cost["gpu_seconds"] or cost["cpu_seconds"]) / max(float(cost["trial_seconds"]), 1e-9)
    curve = progress_curve(results.load_histories(frame), metric=metric, mode=mode, gpus_per_trial=held)
    hit = curve[[reached(v, target, mode=mode) for v in curve["best"]]]
    return {
        "method": run["method"],
        "seed": run["seed"],
        "trials": run["trials"],
        "epochs": int(frame["epochs"].sum()),
        "to_target_s": float(hit.iloc[0]["gpu_seconds"]) if len(hit) else math.inf,
        "total_s": float(curve["gpu_seconds"].iloc[-1]) if len(curve) else math.nan,
        f"best_{metric}": float(best[metric]),
    }, curve


def best_at_baseline_cost(rows: list[dict], curves: list[pd.DataFrame], *, metric: str) -> None:
    """Add each run's best score by the time it had spent what the baseline spent in all (same seed).

    The epoch budget is an expectation for ASHA (its first trials go on while no
    one else has reached their rung), so this is the comparison at equal compute.
    """
    for row, curve in zip(rows, curves, strict=True):
        base = next(r["total_s"] for r in rows if r["method"] == BASELINE and r["seed"] == row["seed"])
        within = curve[curve["gpu_seconds"] <= base + 1e-9]
        row["best_at_same_cost"] = float(within["best"].iloc[-1]) if len(within) else math.nan


def summarise(rows: list[dict], *, metric: str) -> list[dict]:
    """Per method: median compute to target over seeds, mean and spread of the final best, ratio to the baseline."""
    out = []
    base = statistics.median(r["to_target_s"] for r in rows if r["method"] == BASELINE)
    for method in METHODS:
        runs = [r for r in rows if r["method"] == method]
        if not runs:
            continue
        to_target = statistics.median(r["to_target_s"] for r in runs)
        bests = [r[f"best_{metric}"] for r in runs]
        same_cost = [r["best_at_same_cost"] for r in runs if r["best_at_same_cost"] == r["best_at_same_cost"]]
        out.append({
            "method": method,
            "seeds": len(runs),
            "epochs": round(statistics.mean(r["epochs"] for r in runs), 1),
            "to_target_s": to_target,
            "reached": f"{sum(math.isfinite(r['to_target_s']) for r in runs)}/{len(runs)}",
            f"best_{metric}": round(statistics.mean(bests), 4),
            "spread": round(statistics.pstdev(bests), 4),
            "best_at_same_cost": round(statistics.mean(same_cost), 4) if same_cost else math.nan,
            "x_sooner": base / to_target if math.isfinite(to_target) and to_target > 0 else 0.0,
        })  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py (default with --smoke: "
                   "synthetic images)")  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="the small form: --smoke-test searches on CPU")
    p.add_argument("--seeds", type=int, default=None, help="seeds per method (default: 2 smoke, 50 with --table, "
                   "3 otherwise)")  # fmt: skip
    p.add_argument("--budget-epochs", type=int, default=None,
                   help="trial-epochs each search may spend (default: 3 smoke or 8 full trials of max-epochs)")
    p.add_argument("--max-epochs", type=int, default=None, help="epochs per trial (default: the space's)")
    p.add_argument("--target", type=float, default=None, help="the score to reach (default: the lowest final "
                   "best of the baseline's runs)")  # fmt: skip
    p.add_argument("--cpus", type=int, default=None, help="logical CPUs for Ray (default: this machine's)")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    efficiency_table.add_arguments(p)
    args = p.parse_args(argv)
    if args.table:
        write_json(args.out, efficiency_table.run(args))
        return 0
    import ray

    space = get_space("cifar")
    base = space.smoke.budget if args.smoke else space.budget
    max_epochs = args.max_epochs or (6 if args.smoke else base.max_epochs)
    grace = max(1, max_epochs // 4) if args.smoke else base.grace_period
    budget = {"max_epochs": max_epochs, "grace_period": grace, "reduction_factor": base.reduction_factor}
    full_trials = 3 if args.smoke else 8
    budget_epochs = args.budget_epochs or full_trials * max_epochs
    seeds = args.seeds or (2 if args.smoke else 3)
    metric, mode = space.metric, space.mode
    print(f"machine: {machine()}")
    print(f"budget: {budget_epochs} trial-epochs per search, max {max_epochs} epochs, grace period {grace}, "
          f"reduction factor {base.reduction_factor}; {seeds} seed(s) per method", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "runs"
        work.mkdir()
        data_dir = args.data_dir
        if data_dir is None:
            if not args.smoke:
                p.error("--data-dir is needed without --smoke")
            from trainables.data import synthetic_images, write_cifar_layout

            data_dir = str(Path(tmp) / "data")
            write_cifar_layout(Path(data_dir), train=synthetic_images(3000, seed=1),
                               test=synthetic_images(600, seed=2))  # fmt: skip
        data_dir = str(Path(data_dir).resolve())
        raw = yaml.safe_load((BUILTIN_DIR / "cifar.yaml").read_text())
        raw.pop("reference")
        (work / SPACE_FILE).write_text(yaml.safe_dump(raw))
        ray.init(num_cpus=args.cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)  # fmt: skip
        logging.getLogger("ray.tune").setLevel(logging.ERROR)  # PBT logs every exploit at INFO
        try:
            runs = []
            for seed in range(seeds):
                for method in METHODS:
                    trials = trials_for(method, budget_epochs=budget_epochs, **budget)
                    print(f"  {method}, seed {seed}: {trials} trials", flush=True)
                    runs.append(run_one(work, data_dir, method=method, seed=seed, trials=trials, budget=budget,
                                        smoke=args.smoke))  # fmt: skip
        finally:
            ray.shutdown()
        finals = [results.load_best(r["folder"])[metric] for r in runs if r["method"] == BASELINE]
        # A score at least half the baseline's runs reached (the lower middle one when the count is even).
        middle = statistics.median_low(finals) if mode == "max" else statistics.median_high(finals)
        target = args.target if args.target is not None else middle
        measured = [measure(r, target=target, metric=metric, mode=mode) for r in runs]
        rows = [row for row, _ in measured]
        best_at_baseline_cost(rows, [curve for _, curve in measured], metric=metric)
    print(f"\ntarget: {metric} {target:.4f}; to_target_s and total_s: GPU-seconds on a GPU, CPU-seconds on CPU")
    print(table(rows))
    summary = summarise(rows, metric=metric)
    print("\n" + table(summary))
    method, goal = GOAL
    ratio = next((s["x_sooner"] for s in summary if s["method"] == method), 0.0)
    print(f"\n{method} reached the target {ratio:.2f}x sooner than {BASELINE} "
          f"(goal >= {goal:g}x: {'met' if ratio >= goal else 'missed'})")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps({"target": target, "runs": rows, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
