"""The command line of ``run_tune.py``: flags in, a search out."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from search_spaces import SpaceError, format_spaces, get_space, is_path, space_names
from trainables.data import DataError
from trainables.task import TaskError, check_config_keys, load_task, resolve_objective
from tuner.errors import UsageError
from tuner.resources import DEFAULT_START_TIMEOUT_S
from tuner.settings import (
    SCHEDULERS,
    SEARCH_ALGORITHMS,
    Resources,
    RunSettings,
    SearchSettings,
    budget_from,
    check_name,
    default_name,
    parse_gpus_per_trial,
    resolve_storage,
    resolve_tracking_uri,
    resume_settings,
)
from tuner.warm import load_warm_start

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
        full, smoke = getattr(default.budget, key), getattr(default.smoke.budget, key)
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
    p.add_argument("--search", choices=SEARCH_ALGORITHMS, default="random", help="random search, or Optuna's TPE")
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
        "--search optuna, all its trials are Optuna's prior observations; configs outside this space are skipped",
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


def check_batch_split(settings: SearchSettings) -> None:
    """Every batch size the search can draw must split evenly over the DDP workers."""
    workers = settings.resources.workers_per_trial
    space = settings.space()
    if workers == 1 or not any(p.name == "batch_size" for p in space.params):  # a task may have no batches
        return
    p = space.param("batch_size")
    sizes = p.choices if p.kind == "choice" else (p.value,) if p.kind == "fixed" else ()
    uneven = [b for b in sizes if int(b) % workers]
    if workers > 1 and uneven:
        raise UsageError(
            f"batch_size {', '.join(map(str, uneven))} cannot be split evenly over --workers-per-trial {workers}: "
            f"use batch sizes that are multiples of {workers} (--param batch_size=...)"
        )


def check_scheduler(scheduler: str, *, space, budget, search: str, max_concurrent: int | None) -> None:
    """Refuse a scheduler the space or the other flags leave nothing to do for, or that cannot run with them."""
    if scheduler != "pbt":
        return
    if search != "random":
        raise UsageError(
            "--scheduler pbt makes its own configs (by perturbing its best trials'), so it cannot follow "
            f"--search {search}: drop --search, or pick another --scheduler"
        )
    if not any(p.mutable for p in space.params):
        raise UsageError(
            f"--scheduler pbt perturbs the space's mutable parameters, and space '{space.name}' marks none: add "
            "`mutable: true` to the parameters that may change in the middle of a trial (such as lr), or pick "
            "another --scheduler"
        )
    if max_concurrent is not None:
        raise UsageError(
            "--scheduler pbt runs its whole population (--num-samples) together, taking turns where the cluster "
            "cannot run them all at once: drop --max-concurrent, or lower --num-samples"
        )
    if budget.grace_period >= budget.max_epochs:
        raise UsageError(
            f"--scheduler pbt exploits every --grace-period epochs ({budget.grace_period}), which must be below "
            f"--max-epochs ({budget.max_epochs}) for any exploit to happen: lower --grace-period"
        )


def settings_from_args(args: argparse.Namespace, *, cwd: Path) -> SearchSettings:
    """Validate every flag and resolve paths; touches nothing on disk."""
    storage = resolve_storage(args.storage_path, cwd=cwd)
    if args.resume:
        if not args.name:
            raise UsageError("--resume needs --name: the name of the search to continue")
        return resume_settings(name=check_name(args.name), storage_path=storage)
    space = get_space(str((cwd / args.space).resolve()) if is_path(args.space) else args.space)
    name = check_name(args.name or default_name(space.name))
    budget = budget_from(
        space,
        smoke_test=args.smoke_test,
        given={
            "num_samples": args.num_samples,
            "max_epochs": args.max_epochs,
            "grace_period": args.grace_period,
            "reduction_factor": args.reduction_factor,
        },
    )
    if args.max_failures < 0:
        raise UsageError(f"--max-failures is {args.max_failures}, but must be >= 0 (0: never retry)")
    if args.checkpoint_period < 0:
        raise UsageError(f"--checkpoint-period is {args.checkpoint_period:g}, but must be >= 0 (0: every epoch)")
    if not 0 <= args.confirm <= budget.num_samples:
        raise UsageError(
            f"--confirm is {args.confirm}, but must be between 0 and --num-samples ({budget.num_samples}): it "
            f"retrains that many of the search's best configs"
        )
    if args.worker_start_timeout <= 0:
        raise UsageError(f"--worker-start-timeout is {args.worker_start_timeout:g}, but must be > 0 (seconds)")
    if args.cpus_per_trial <= 0:
        raise UsageError(f"--cpus-per-trial is {args.cpus_per_trial:g}, but must be > 0")
    # A task of the user's that does not import, a metric it never reports or a mode against the metric's
    # direction fails here, before Ray starts; a space that names no metric goes by its task's.
    task, constants = load_task(space.task), dict(space.constants)
    try:
        metric, mode = resolve_objective(task, space.metric, space.mode, constants)
    except TaskError as e:  # a space file's mistake: say which file
        raise TaskError(f"{space.source or space.name}: {e}") from None
    settings = SearchSettings(
        space_name=space.name,
        space_file=space.source,
        metric=metric,
        mode=mode,
        data_dir=str((cwd / args.data_dir).resolve()),
        budget=budget,
        resources=Resources(
            gpus_per_trial=parse_gpus_per_trial(args.gpus_per_trial),
            cpus_per_trial=args.cpus_per_trial,
            workers_per_trial=args.workers_per_trial,
            max_concurrent=args.max_concurrent,
            worker_start_timeout_s=args.worker_start_timeout,
        ),
        run=RunSettings(
            name=name,
            storage_path=storage,
            mlflow_uri=resolve_tracking_uri(args.mlflow_uri, cwd=cwd),
            keep_checkpoints=args.keep_checkpoints,
            keep_trials=args.keep_trials,
            max_failures=args.max_failures,
            checkpoint_period_s=args.checkpoint_period,
        ),
        search=args.search,
        scheduler=args.scheduler,
        seed=args.seed,
        smoke_test=args.smoke_test,
        compile=args.compile,
        params=list(args.param),
        target=args.target,
        confirm=args.confirm,
        warm_start=resolve_warm_start(args.warm_start, cwd=cwd),
    )
    # The overrides must make a valid space, one the scheduler can work with.
    check_scheduler(
        args.scheduler, space=settings.space(), budget=budget, search=args.search, max_concurrent=args.max_concurrent
    )
    check_config_keys(task, {p.name for p in space.params} | set(constants) | {"epochs", "seed"}, constants)
    check_batch_split(settings)
    if settings.warm_start:  # a folder that cannot seed the search is refused here, before Ray starts
        load_warm_start(settings.warm_start, settings.space(), metric=settings.metric, mode=settings.mode)
    if not settings.resources.pending:  # DDP workers need whole GPUs: refuse before starting Ray
        settings.resources.shape()
    from results import _fs

    if _fs.exists(settings.folder):
        raise UsageError(
            f"a search named '{name}' already exists in {storage}: continue it with --resume, or pick another --name"
        )
    return settings


def resolve_warm_start(folder: str | None, *, cwd: Path) -> str:
    if folder is None:
        return ""
    from results import _fs

    return folder if _fs.is_uri(folder) else str((cwd / folder).resolve())


def sync_main(args: argparse.Namespace) -> int:
    """``--sync FOLDER [--mlflow-uri URI]``: any other flag is a mistake (it would be ignored)."""
    defaults = vars(build_parser().parse_args([]))
    extra = sorted(k for k, v in vars(args).items() if k not in ("sync", "mlflow_uri") and v != defaults[k])
    if extra:
        flags = ", ".join("--" + k.replace("_", "-") for k in extra)
        print(f"error: --sync takes only --mlflow-uri; drop {flags}", file=sys.stderr)
        return EXIT_USAGE
    from results import ResultsError
    from tuner.sync import SyncError, sync  # MLflow and the model code: only for this command

    try:
        sync(args.sync, uri=args.mlflow_uri)
    except (SyncError, ResultsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
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
        from tuner.search import Interrupted, run_search  # imports Ray: after the cheap checks

        try:
            best = run_search(settings)
        except Interrupted as e:
            print(f"\n{e}", file=sys.stderr)
            return e.exit_code
    except SpaceError as e:
        print(f"error: {e}", file=sys.stderr)
        if str(e).startswith("unknown search space"):
            print(f"known spaces: {', '.join(space_names())} (see --list-spaces)", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, DataError, TaskError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not best:
        print(
            "error: no trial produced a usable checkpoint; the diverged and failed trials are listed above",
            file=sys.stderr,
        )
        return 1
    return 0
