"""Reprint the leaderboard of a finished search.

python -m results ray_results/<name> [--top N]
"""

from __future__ import annotations

import argparse
import sys

from results import ResultsError, leaderboard, load_best, load_results, objective


def sync_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m results sync", description="Push a finished search to MLflow (safe to repeat)."
    )
    parser.add_argument("folder", help="the search's folder, e.g. ray_results/cifar-20261123-101500")
    parser.add_argument("--mlflow-uri", default=None, help="tracking URI (default: the one the search ran with)")
    args = parser.parse_args(argv)
    from tuner.sync import SyncError, sync  # MLflow and the model code: only for this command

    try:
        sync(args.folder, uri=args.mlflow_uri)
    except (SyncError, ResultsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sync"]:
        return sync_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m results", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="the search's folder, e.g. ray_results/cifar-20261123-101500")
    parser.add_argument("--top", type=int, default=10, help="how many trials to show (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        frame = load_results(args.folder)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(frame)} trials in {args.folder}")
    metric, mode = objective(args.folder)
    print(leaderboard(frame, metric=metric, mode=mode, top=args.top))
    try:
        best = load_best(args.folder)
    except (OSError, ValueError):
        return 0
    test = best.get("test_acc")
    print(
        f"\nbest trial {best.get('trial_id')}: {metric} {best.get(metric):.4f}"
        + (f", test_acc {test:.4f}" if test is not None else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
