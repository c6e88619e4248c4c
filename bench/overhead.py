"""What the service costs over a plain Ray Tune script: the same tiny trials run both ways, in one job.

The trials are a toy task (a small matrix product per epoch, a few ms), so
that what is measured is the machinery around them: Ray's start, the trials'
start, each report's round trip to the driver and back (Tune's function API
holds a trial inside ``report`` until the driver has taken the result: the
callbacks, MLflow, the scheduler, the progress table all run while it
waits), and the search's end. Both ways run the same trials under the same
ASHA settings, ``--concurrent`` at a time, on the machine's real CPU count:

- the service: ``tuner.search`` on a space naming the toy task, with its
  MLflow store (SQLite), progress table, results, report and registry;
- the baseline: a plain ``ray.tune.Tuner`` script with ``ASHAScheduler`` and
  no callbacks, over the configs the service drew, in the same order, with
  Tune's defaults (a new actor per trial: ``reuse_actors`` is off unless asked);
- the same plain script tuned: ``reuse_actors=True``, as the service runs its
  trials. The stricter reference: what the service's own work costs.

Each side's imports happen before its clock starts; each run waits for the run
before's Ray processes to exit; the rounds take turns to go first.

It prints the whole-search wall-clock of each and the service's over the
plain script's (goal <= 1.0; over the tuned one too), and the time a trial
waits inside ``report``, median and 90th percentile over every report (goal:
a median under 5 ms with 4 trials reporting at once).

    python bench/overhead.py                      # 8 trials x 20 epochs, 4 at a time, 3 rounds
    python bench/overhead.py --trials 16 --epochs 30 --json overhead.json
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import machine, table, write_json

HERE = Path(__file__).resolve().parent
WORK = 64  # the toy epoch: a WORK x WORK matrix product, repeated


def _epoch(config: dict) -> float:
    """One toy epoch: a few ms of arithmetic whose result depends on the config (so ASHA has a ranking)."""
    g = torch.Generator().manual_seed(int(config["seed"]))
    x = torch.randn(WORK, WORK, generator=g)
    for _ in range(int(config["steps"])):
        x = torch.tanh(x @ x.T / WORK)
    return float(config["quality"]) + 1e-3 * float(x.mean())


def _keep(folder: str, wait: float) -> None:
    """One report's wait, appended at once (a trial the scheduler stops never returns from its last report)."""
    with open(Path(folder, f"{os.getpid()}.txt"), "a") as f:
        f.write(f"{wait}\n")


def _trials_loop(config: dict, report) -> None:
    """The toy trial: each epoch's score handed to ``report``, whose wait is what is timed."""
    torch.set_num_threads(1)
    for epoch in range(1, int(config["epochs"]) + 1):
        score = _epoch(config) * epoch / int(config["epochs"])
        t0 = time.perf_counter()
        report({"epoch": epoch, "score": score})
        _keep(config["waits"], time.perf_counter() - t0)


def train(config: dict, context) -> None:
    """The toy task, through the service: ``context.report`` is timed."""
    _trials_loop(config, context.report)


def plain_trainable(config: dict) -> None:
    """The same toy task as a plain Tune function: ``tune.report`` is timed."""
    from ray import tune

    _trials_loop(config, tune.report)


SPACE = """
name: overhead
task: overhead:train
metric: score
mode: max
params:
  quality: {{kind: uniform, low: 0.0, high: 1.0}}
constants: {{steps: {steps}, waits: "{waits}"}}
budget: {{num_samples: {trials}, max_epochs: {epochs}, grace_period: 2, reduction_factor: 2}}
"""


def run_service(work: Path, args: argparse.Namespace) -> tuple[dict, list[float]]:
    """The service's search, and the configs it drew (``quality``, in trial order) for the plain script."""
    from tuner.api import search  # imported before the clock starts, as the plain script imports Ray

    waits = work / "service-waits"
    waits.mkdir()
    space = work / "overhead.yaml"
    space.write_text(SPACE.format(steps=args.steps, waits=waits, trials=args.trials, epochs=args.epochs))
    log = io.StringIO()  # the progress table and summary: kept, and shown only if the search fails
    t0 = time.monotonic()
    result = search(str(space), data_dir=str(work), storage_path=str(work / "runs"), name="service",
                          mlflow_uri=f"sqlite:///{work}/mlflow.db", gpus_per_trial=0,
                          cpus_per_trial=args.cpus / args.concurrent, max_concurrent=args.concurrent,
                          seed=args.seed, out=log)  # fmt: skip
    wall = time.monotonic() - t0
    if result.table.empty or "score" not in result.table or result.table["score"].isna().all():
        raise SystemExit(f"the service's search produced no scored trial:\n{log.getvalue()[-3000:]}")
    drawn = [float(q) for q in result.table.sort_values("trial_id")["config/quality"]]
    return {"run": "service (tuner.search)", "wall_s": wall, **_waits(waits)}, drawn


def run_plain(work: Path, args: argparse.Namespace, *, qualities: list[float], reuse_actors: bool) -> dict:
    """A plain Tune script over the same configs, in the same order (a grid of the service's draws)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    name = "plain-reused" if reuse_actors else "plain"
    waits = work / f"{name}-waits"
    waits.mkdir()
    t0 = time.monotonic()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(plain_trainable, {"cpu": args.cpus / args.concurrent}),
            param_space={"quality": tune.grid_search(qualities), "steps": args.steps, "epochs": args.epochs,
                         "seed": args.seed, "waits": str(waits)},  # fmt: skip
            tune_config=tune.TuneConfig(
                metric="score", mode="max", num_samples=1, max_concurrent_trials=args.concurrent,
                scheduler=ASHAScheduler(max_t=args.epochs, grace_period=2, reduction_factor=2, time_attr="epoch"),
                reuse_actors=reuse_actors,
            ),
            run_config=tune.RunConfig(storage_path=str(work / name), name=name, verbose=0),
        )
        tuner.fit()
    finally:
        ray.shutdown()
    return {"run": name, "wall_s": time.monotonic() - t0, **_waits(waits)}


def settle(timeout_s: float = 30.0) -> None:
    """Wait for the Ray instance of the run before to be gone: its exiting processes would slow the next run."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        names = {p.info["name"] for p in psutil.process_iter(["name"])}
        if not names & {"raylet", "gcs_server"}:
            return
        time.sleep(0.2)


def _waits(folder: Path) -> dict:
    return {"reports": len(_read_waits(folder)), "waits": _read_waits(folder)}


def _read_waits(folder: Path) -> list[float]:
    return [float(w) for f in folder.glob("*.txt") for w in f.read_text().split()]


def summary(run: str, rounds: list[dict]) -> dict:
    """One side's figures over every round: the median wall-clock, and every report's wait pooled."""
    waits = sorted(w for r in rounds for w in r["waits"])
    nan = float("nan")
    return {"run": run, "wall_s": statistics.median(r["wall_s"] for r in rounds),
            "reports": len(waits) / len(rounds),
            "report_wait_median_ms": 1000 * statistics.median(waits) if waits else nan,
            "report_wait_p90_ms": 1000 * waits[int(0.9 * (len(waits) - 1))] if waits else nan}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8, help="trials per search")
    p.add_argument("--epochs", type=int, default=20, help="epochs (reports) per trial at most")
    p.add_argument("--concurrent", type=int, default=4, help="trials at once")
    p.add_argument("--steps", type=int, default=20, help="matrix products per toy epoch")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="Ray's CPUs: the machine's real count")
    p.add_argument("--rounds", type=int, default=3,
                   help="each way this many times, taking turns to go first (the machine's noise is large)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures there")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if str(HERE) not in sys.path:  # the toy task is this module, imported by the trials as ``overhead``
        sys.path.insert(0, str(HERE))
    print(f"machine: {machine()}; {args.trials} trials x up to {args.epochs} epochs, {args.concurrent} at a time")
    runs: dict[str, list[dict]] = {"service": [], "plain": [], "plain-reused": []}
    drawn = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            work = Path(tmp) / f"round{n}"
            work.mkdir()
            order = ["service", "plain", "plain-reused"]
            if n % 2 and drawn is not None:  # the plain scripts need the service's draws: the same each round
                order.reverse()
            for side in order:
                settle()
                if side == "service":
                    result, drawn = run_service(work, args)
                else:
                    result = run_plain(work, args, qualities=drawn, reuse_actors=side == "plain-reused")
                runs[side].append(result)
            print(f"round {n + 1}: " + ", ".join(f"{side} {runs[side][-1]['wall_s']:.1f} s" for side in order),
                  flush=True)  # fmt: skip
    rows = {side: summary(label, runs[side]) for side, label in (
        ("service", "service (tuner.search)"), ("plain", "plain ray.tune.Tuner, Tune's defaults"),
        ("plain-reused", "plain ray.tune.Tuner, reuse_actors=True"))}  # fmt: skip
    print(table(list(rows.values())))
    ratios = {side: [s["wall_s"] / p["wall_s"] for s, p in zip(runs["service"], runs[side], strict=True)]
              for side in ("plain", "plain-reused")}  # fmt: skip
    ratio, tuned = (statistics.median(ratios[side]) for side in ("plain", "plain-reused"))
    median = rows["service"]["report_wait_median_ms"]
    print(f"wall-clock, service / plain Tune script, median of {args.rounds} rounds: {ratio:.2f}x "
          f"(goal <= 1.0: {'met' if ratio <= 1.0 else 'missed'}); over the script with reuse_actors=True: "
          f"{tuned:.2f}x")  # fmt: skip
    print(f"report round trip in the service: median {median:.2f} ms, p90 {rows['service']['report_wait_p90_ms']:.1f} "
          f"ms (plain Tune: {rows['plain']['report_wait_median_ms']:.1f} ms; goal median < 5 ms: "
          f"{'met' if median < 5 else 'missed'})")  # fmt: skip
    write_json(args.json, {"machine": machine(), "settings": vars(args), **rows, "ratios": ratios,
                           "ratio": ratio, "ratio_reused": tuned})  # fmt: skip


if __name__ == "__main__":
    main()
