"""The command line of ``run_tune.py``: flags in, a search out."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from search_spaces import SpaceError, format_spaces, get_space, space_names
from search_spaces.exceptions import HpsearchError, Interrupted
from tuner.config.checks import make_settings
from tuner.config.resources import DEFAULT_START_TIMEOUT_S
from tuner.config.settings import SCHEDULERS, SEARCH_ALGORITHMS, SearchSettings

EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show (the help text says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_tune.py",
        description="Hyperparameter search for PyTorch on Ray Tune, with ASHA (or HyperBand, the median rule, "
        "PBT) and MLflow.",
        formatter_class=_Help,
        epilog="Budget flags left out take the space's defaults (see --list-spaces).",
    )
    p.add_argument(
        "--space",
        default="cifar",
        help="a built-in space's name, or the path of a space file (YAML; see --list-spaces)",
    )
    p.add_argument("--list-spaces", action="store_true", help="print the spaces, their parameters and bounds, and exit")
    p.add_argument(
        "--sync",
        metavar="FOLDER",
        default=None,
        help="push a finished search (its folder, e.g. ray_results/<name>) to MLflow, at --mlflow-uri or the URI it "
        "ran with, and exit; safe to repeat (for a search that ran while the server was down)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="override a parameter: NAME=LOW:HIGH, NAME=A,B,C or NAME=VALUE (repeatable)",
    )
    budget = p.add_argument_group("budget (defaults: the space's)")
    default = get_space("cifar")
    flags = {
        "num_samples": ("--num-samples", "number of trials"),
        "max_epochs": ("--max-epochs", "epochs per trial, ASHA's max_t"),
        "grace_period": ("--grace-period", "epochs before ASHA, HyperBand or the median rule may stop a trial; "
                         "PBT: epochs between its exploits"),
        "reduction_factor": ("--reduction-factor", "ASHA and HyperBand keep 1/reduction-factor of the trials per "
                             "rung"),
    }
    for key, (flag, text) in flags.items():
        full, smoke = getattr(default.budget, key), getattr(default.smoke.budget, key)  # cifar's has one
        budget.add_argument(
            flag, type=_positive_int, default=None, help=f"{text} (default for cifar: {full}; smoke test: {smoke})"
        )
    res = p.add_argument_group("resources")
    res.add_argument(
        "--gpus-per-trial",
        default=None,
        help="0 (CPU), a fraction to share a GPU (0.25: four per GPU), a whole number, or auto (probe and pack); "
        f"default: the space's trials per GPU ({default.trials_per_gpu} for cifar) where the cluster has GPUs, "
        "else 0",
    )
    res.add_argument(
        "--cpus-per-trial", type=_number, default=1.0, help="CPUs per trial (torch threads per worker follow)"
    )
    res.add_argument(
        "--workers-per-trial",
        type=_positive_int,
        default=1,
        help="DDP workers per trial (Ray Train); GPUs and CPUs per trial are split evenly among them",
    )
    res.add_argument(
        "--worker-start-timeout",
        type=_number,
        default=DEFAULT_START_TIMEOUT_S,
        metavar="SECONDS",
        help="DDP trials: how long a trial's workers may wait for the cluster to place them before the trial fails "
        "with what holds the resources (raise it where an autoscaler adds nodes)",
    )
    res.add_argument(
        "--max-concurrent",
        type=_positive_int,
        default=None,
        help="cap on trials running at once (default: what resources allow)",
    )
    p.add_argument("--search", choices=SEARCH_ALGORITHMS, default="random", help="random search, Optuna's TPE, or "
                   "bohb (TPE fitted at ASHA's rungs: model-based multi-fidelity; --scheduler asha or hyperband)")
    p.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default="asha",
        help="what stops or steers trials: ASHA; asynchronous HyperBand (ASHA over several brackets); the median "
        "stopping rule; population based training (bottom trials continue from top ones' checkpoints with the "
        "space's mutable parameters perturbed; random search only); fifo (every trial its full budget)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the searcher and of every trial")
    p.add_argument(
        "--target",
        type=_number,
        default=None,
        metavar="SCORE",
        help="a score of the space's metric to reach: the summary, best_config.json and MLflow say when the "
        "search first reached it (wall and GPU-seconds), beside 90/95/99%% of its final best",
    )
    p.add_argument(
        "--confirm",
        type=int,
        default=0,
        metavar="K",
        help="after the search, train the top K configs again over 3 more seeds each at full budget, register the "
        "best by mean score, and show mean and spread in the leaderboard (0: register the search's best)",
    )
    p.add_argument(
        "--warm-start",
        metavar="FOLDER",
        default=None,
        help="seed this search with a finished one (its folder): its best configs are tried first and, with "
        "--search optuna or bohb, all its trials are the model's prior observations; configs outside this space are "
        "skipped",
    )
    p.add_argument(
        "--data-dir",
        default="./data",
        help="the task's data: cifar, a folder holding (or to receive) cifar-10-batches-py; imagefolder, a folder "
        "holding train/<class>/<images>; a task of your own, what it reads",
    )
    p.add_argument(
        "--storage-path", default="./ray_results", help="where searches are written: a folder or a URI (s3://...)"
    )
    p.add_argument("--name", default=None, help="search name (default: <space>-<date>-<time>)")
    p.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db)")
    p.add_argument(
        "--keep-checkpoints",
        type=_positive_int,
        default=2,
        help="checkpoints kept per trial (best by the space's metric)",
    )
    p.add_argument(
        "--max-failures",
        type=int,
        default=2,
        help="times a failed trial is retried from its last checkpoint (a killed process, a lost node)",
    )
    p.add_argument(
        "--keep-trials",
        type=_positive_int,
        default=5,
        help="after the search, the trials (best by the space's metric) that keep their checkpoints",
    )
    p.add_argument(
        "--checkpoint-period",
        type=_number,
        default=30.0,
        metavar="SECONDS",
        help="a trial saves a checkpoint at ASHA's rungs, at its last epoch, and at the first epoch that ends "
        "this long after its last checkpoint (what a killed trial can lose); 0: every epoch",
    )
    p.add_argument("--resume", action="store_true", help="continue the interrupted search given by --name")
    p.add_argument("--smoke-test", action="store_true", help="tiny budget on a slice of the data (what CI runs)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile each trial's network, forward and backward (the optimizer step stays eager); its "
        "compile time is reported apart and is paid again by every trial, so it pays off only for long trials",
    )
    return p


def settings_from_args(args: argparse.Namespace, *, cwd: Path) -> SearchSettings:
    """Validate every flag and resolve paths (``tuner.config.checks.make_settings``); touches nothing on disk."""
    return make_settings(
        args.space, cwd=cwd, data_dir=args.data_dir, name=args.name, storage_path=args.storage_path,
        mlflow_uri=args.mlflow_uri, resume=args.resume, num_samples=args.num_samples, max_epochs=args.max_epochs,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor, params=list(args.param),
        searcher=args.search, scheduler=args.scheduler, seed=args.seed, gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial, workers_per_trial=args.workers_per_trial,
        max_concurrent=args.max_concurrent, worker_start_timeout=args.worker_start_timeout,
        keep_checkpoints=args.keep_checkpoints, keep_trials=args.keep_trials, max_failures=args.max_failures,
        checkpoint_period=args.checkpoint_period, smoke_test=args.smoke_test, compile=args.compile,
        target=args.target, confirm=args.confirm, warm_start=args.warm_start,
    )  # fmt: skip


def sync_main(args: argparse.Namespace) -> int:
    """``--sync FOLDER [--mlflow-uri URI]``: any other flag is a mistake (it would be ignored)."""
    defaults = vars(build_parser().parse_args([]))
    extra = sorted(k for k, v in vars(args).items() if k not in ("sync", "mlflow_uri") and v != defaults[k])
    if extra:
        flags = ", ".join("--" + k.replace("_", "-") for k in extra)
        print(f"error: --sync takes only --mlflow-uri; drop {flags}", file=sys.stderr)
        return EXIT_USAGE
    from tuner.tracking.sync import sync  # MLflow and the model code: only for this command

    try:
        sync(args.sync, uri=args.mlflow_uri)
    except HpsearchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A user's task (task: package.module:attribute) is imported from the working directory,
    # by this process and by Ray's workers, which start with the driver's sys.path.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if args.list_spaces:
        print(format_spaces())
        return 0
    if args.sync is not None:
        return sync_main(args)
    try:
        settings = settings_from_args(args, cwd=Path(os.getcwd()))
        from tuner.api import run  # imports Ray: after the cheap checks

        result = run(settings, out=sys.stdout, handle_signals=True)
    except Interrupted as e:
        print(f"\n{e}", file=sys.stderr)
        return e.exit_code
    except HpsearchError as e:  # a space, flag, path, server, dataset or task that cannot work: the message says why
        print(f"error: {e}", file=sys.stderr)
        if isinstance(e, SpaceError) and str(e).startswith("unknown search space"):
            print(f"known spaces: {', '.join(space_names())} (see --list-spaces)", file=sys.stderr)
        return e.exit_code
    if result.best is None:
        import results

        rows = result.table.to_dict("records")
        why = "no trial produced a usable checkpoint; the diverged and failed trials are listed above"
        if results.unmet(rows, result.settings.rule(), result.settings.all_objectives()):
            why = "no trial met the space's select rule, so nothing was registered (the summary above says why)"
        print(f"error: {why}", file=sys.stderr)
        return 1
    return 0
