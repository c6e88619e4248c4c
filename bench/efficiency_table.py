"""``bench/efficiency.py --table``: each method's compute to a target, replayed from recorded learning curves.

Every method of ``simulate.METHODS`` searches the recorded table
(``bench/record_curves.py``) with N workers, over many seeds, until its best
score has reached two targets or it has spent the compute of training every
recorded config to the full budget. Per method it prints, over the seeds, the
median compute (trial-seconds) to reach each target with its interquartile
range, how many seeds reached it, and how many times sooner than full-budget
random search the median came:

- ``target``: the score of the top quarter of the recorded configs (the 75th
  percentile of their best scores), unless ``--target`` gives one;
- ``near best``: the best recorded score less ``--near`` (0.005: half a
  point of accuracy).

A seed that never reached a target counts as infinitely slow, so a median of
``inf`` means half the seeds or more did not get there.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import simulate
from common import ROOT, machine, table

from search_spaces import Budget

DEFAULT_TABLE = ROOT / "bench" / "curves" / "digits"
BASELINE = simulate.METHODS[0].name  # full-budget random search
GOAL = 4.0  # the best method should reach the target at least 4x sooner than the baseline, at the median


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", nargs="?", const=str(DEFAULT_TABLE), default=None, metavar="DIR",
                   help=f"replay a recorded learning-curve table instead of running searches (default: "
                        f"{DEFAULT_TABLE.relative_to(ROOT)})")  # fmt: skip
    p.add_argument("--workers", type=int, default=4, help="with --table: trials at once (default 4)")
    p.add_argument("--near", type=float, default=0.005, help="with --table: how far below the best recorded score "
                   "the second target lies (default 0.005)")  # fmt: skip
    p.add_argument("--population", type=int, default=16, help="with --table: PBT's population (default 16)")
    p.add_argument("--pbt-interval", type=int, default=3, help="with --table: epochs between PBT's exploits "
                   "(its grace period; default 3)")  # fmt: skip
    p.add_argument("--metric", default=None, help="with --table: the recorded metric to search by (default: the "
                   "space's)")  # fmt: skip
    p.add_argument("--mode", choices=("min", "max"), default=None, help="with --table and --metric: its direction")
    p.add_argument("--processes", type=int, default=None, help="with --table: processes replaying seeds at once "
                   "(default: one per CPU)")  # fmt: skip


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """The lower quartile, median and upper quartile, each an observed value (inf where a seed never got there)."""
    ordered = np.sort(np.asarray(values, dtype=float))
    return tuple(float(np.percentile(ordered, q, method="nearest")) for q in (25, 50, 75))  # type: ignore[return-value]


def summarise(rows: list[dict[str, Any]], targets: dict[str, float]) -> list[dict[str, Any]]:
    """Per method: each target's median compute and interquartile range, seeds reaching it, ratio to the baseline."""
    out = []
    base = {name: quartiles([r[f"{name}_s"] for r in rows if r["method"] == BASELINE])[1] for name in targets}
    for method in dict.fromkeys(r["method"] for r in rows):
        runs = [r for r in rows if r["method"] == method]
        row: dict[str, Any] = {"method": method, "seeds": len(runs),
                               "trials": round(statistics.mean(r["trials"] for r in runs), 1),
                               "epochs": round(statistics.mean(r["epochs"] for r in runs), 1)}  # fmt: skip
        for name in targets:
            low, median, high = quartiles([r[f"{name}_s"] for r in runs])
            row[f"{name}: median s"] = median
            row[f"{name}: IQR s"] = f"{low:.4g}-{high:.4g}"
            row[f"{name}: reached"] = f"{sum(math.isfinite(r[f'{name}_s']) for r in runs)}/{len(runs)}"
            row[f"{name}: x sooner"] = base[name] / median if math.isfinite(median) and median > 0 else 0.0
        out.append(row)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Replay the table with every method and print the figures; returns them (for ``--out``)."""
    import os

    curves = simulate.load(args.table, metric=args.metric, mode=args.mode)
    best = curves.best_scores()
    sign = 1.0 if curves.mode == "max" else -1.0
    top = float(np.percentile(sign * best, 75) * sign)
    targets = {"target": args.target if args.target is not None else top,
               "near best": float(np.nanmax(sign * best) * sign) - sign * args.near}  # fmt: skip
    space_budget = curves.space.budget
    budget = Budget(num_samples=args.population, max_epochs=curves.max_epochs,
                    grace_period=space_budget.grace_period, reduction_factor=space_budget.reduction_factor)  # fmt: skip
    cap_s = float(np.nansum(curves.seconds))  # every recorded config trained to the full budget, once
    seeds = args.seeds or 50
    print(f"machine: {machine()}")
    print(f"table: {args.table}: {len(curves.configs)} configs x {curves.max_epochs} epochs of {curves.metric} "
          f"({curves.mode}); {args.workers} workers, {seeds} seeds per method; grace period {budget.grace_period}, "
          f"reduction factor {budget.reduction_factor}, PBT population {budget.num_samples}, exploiting every "
          f"{args.pbt_interval} epochs")  # fmt: skip
    print(f"targets: {curves.metric} {targets['target']:.4f} (the top quarter of the recorded configs) and "
          f"{targets['near best']:.4f} (the best recorded, less {args.near:g}); each search stops at both, or at "
          f"{cap_s:.0f} trial-seconds (every recorded config at the full budget)", flush=True)  # fmt: skip
    started = time.perf_counter()
    processes = args.processes or os.cpu_count() or 1
    methods = [dataclasses.replace(m, grace_period=args.pbt_interval) if m.scheduler == "pbt" else m
               for m in simulate.methods()]  # fmt: skip
    rows = simulate.replay_many(curves, tuple(methods), seeds=seeds, workers=args.workers, budget=budget,
                                cap_s=cap_s, targets=targets, processes=processes)  # fmt: skip
    took = time.perf_counter() - started
    summary = summarise(rows, targets)
    print("\ncompute in trial-seconds, over the seeds:")
    print(table(summary))
    best_method = max(summary, key=lambda s: s["target: x sooner"])
    ratio = best_method["target: x sooner"]
    print(f"\nfastest to the target: {best_method['method']}, {ratio:.2f}x sooner than {BASELINE} at the median "
          f"(goal >= {GOAL:g}x: {'met' if ratio >= GOAL else 'missed'}); replayed in {took:.1f} s")  # fmt: skip
    return {"table": str(Path(args.table)), "targets": targets, "workers": args.workers, "seeds": seeds,
            "budget": dataclasses.asdict(budget), "cap_s": cap_s,
            "runs": rows, "summary": summary, "replay_s": took}  # fmt: skip
