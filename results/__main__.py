"""Reprint the leaderboard of a finished search, (re)make its report, or replay one of its trials.

python -m results ray_results/<name> [--top N | --all]
python -m results report ray_results/<name>
python -m results replay ray_results/<name> [--trial ID]
"""

from __future__ import annotations

import argparse
import sys

from results import ResultsError, leaderboard, load_best, load_results, read_record
from results.table import DEFAULT_TOP


def report_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m results report",
        description="Draw a finished search: PNGs and one HTML file in <folder>/report/.",
    )
    parser.add_argument("folder", help="the search's folder, e.g. ray_results/cifar-20261123-101500")
    args = parser.parse_args(argv)
    from results.report import HTML, REPORT_DIR, make_report  # matplotlib, plotly, optuna: only for this command

    try:
        local = make_report(args.folder)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    names = ", ".join(sorted(p.name for p in local.iterdir()))
    print(f"report of {args.folder}: {names}\nopen {args.folder.rstrip('/')}/{REPORT_DIR}/{HTML} in a browser")
    return 0


def replay_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m results replay",
        description="Retrain a trial from its recorded config, seed, data and code, and say whether it reproduces "
        "its recorded metric (bit for bit on CPU). Exit status: 0 reproduced, 1 not reproduced, 2 refused.",
    )
    parser.add_argument("folder", help="the search's folder, e.g. ray_results/cifar-20261123-101500")
    parser.add_argument("--trial", default=None, help="the trial's id (default: the search's best trial)")
    args = parser.parse_args(argv)
    from results.replay import replay  # torch and the task: only for this command

    try:
        found = replay(args.folder, trial_id=args.trial)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(found.describe())
    return 0 if found.reproduced else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    if argv[:1] == ["replay"]:
        return replay_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m results", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="the search's folder, e.g. ray_results/cifar-20261123-101500")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--top", type=int, default=DEFAULT_TOP, help="how many trials to show (default: %(default)s)")
    shown.add_argument("--all", action="store_true", help="show every trial")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top is {args.top}, but must be >= 1; --all shows every trial")
    try:
        frame = load_results(args.folder)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(frame)} trials in {args.folder}")
    record = read_record(args.folder, missing_ok=True)
    print(leaderboard(frame, metric=record.metric, mode=record.mode, top=None if args.all else args.top,
                      folder=args.folder, objectives=tuple(record.objectives)))  # fmt: skip
    try:
        best = load_best(args.folder)
    except (OSError, ValueError):
        return 0
    tests = "".join(f", {k} {best[k]:.4f}" for k in best.get("test_metrics", ()) if best.get(k) is not None)
    metric = record.metric
    print(f"\nbest trial {best.get('trial_id')}: {metric} {best.get(metric):.4f}{tests}, epoch {best.get('epoch')}")
    if best.get("select"):
        print(f"chosen by the space's select rule: {best['select']}")
    if best.get("registered"):
        print(best["registered"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
