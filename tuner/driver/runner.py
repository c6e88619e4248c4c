"""Run a search end to end: data, Ray, Tune with its scheduler (ASHA by default), MLflow, results.

Validation comes first and writes nothing; the search folder and the MLflow
runs are created only once the data has loaded and the cluster can run the
trials.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO

import ray
from ray import tune
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

import results
from results import storage
from results.report import load_plotting
from search_spaces import SearchSpace, conditions
from search_spaces.exceptions import Interrupted, UsageError
from trainables.loading import load_data
from trainables.task import TaskData
from tuner import schedulers
from tuner.config import resources
from tuner.config.settings import SearchSettings, tracking_unreachable
from tuner.driver import progress as progress_module
from tuner.driver import provenance
from tuner.driver.bohb import BohbSearch
from tuner.driver.finish import finish
from tuner.driver.lease import Lease
from tuner.driver.progress import ProgressTable, result_files
from tuner.driver.space import optuna_searcher, param_space, reference_point
from tuner.driver.stopping import EXIT_INTERRUPTED, fit
from tuner.driver.warm import WarmStart, load_warm_start
from tuner.packing.shares import resolve_gpus
from tuner.tracking.client import open_store
from tuner.tracking.runs import NOTE_TAG, MlflowTracker, describe_search, save_example
from tuner.trial.placement import PlacementWatch
from tuner.trial.trainable import make_trainable

log = logging.getLogger(__name__)


def interrupted(settings: SearchSettings, *, reason: str | None = None) -> Interrupted:
    """The search stopped with its state saved: the message is the command that resumes it.

    ``reason``: why the search stopped itself (its exit status is then 1, not Ctrl-C's 130).
    """
    command = (f"{resume_command(settings)}\n  (from Python: tuner.search(name={settings.name!r}, "
               f"storage_path={settings.run.storage_path!r}, resume=True))")  # fmt: skip
    if reason:
        return Interrupted(f"search '{settings.name}' stopped: {reason}\nIts state is saved; once that is "
                           f"resolved, resume it with:\n  {command}", exit_code=1)  # fmt: skip
    return Interrupted(f"search '{settings.name}' interrupted; its state is saved. Resume it with:\n  {command}",
                       exit_code=EXIT_INTERRUPTED)  # fmt: skip


def resume_command(settings: SearchSettings) -> str:
    return f"python run_tune.py --name {settings.name} --storage-path {settings.run.storage_path} --resume"


def load_dataset(settings: SearchSettings, space: SearchSpace) -> TaskData:
    """The space's task reads and validates its data, once per search (a slice of it for the smoke test)."""
    return load_data(space, data_dir=settings.data_dir, smoke_test=settings.smoke_test)


def init_ray(*, handle_signals: bool = True, dashboard: bool = True) -> bool:
    """Start (or join, under ``ray job submit``) a Ray instance; True when this call started it.

    ``dashboard``: a local instance gets a dashboard of its own (``_own_dashboard``);
    a search whose trials are single processes needs none, and starts 2-3 s sooner.
    """
    # Ray's console output is replaced by ProgressTable and the summary: the legacy
    # engine at verbose=0 prints nothing, and per-epoch checkpoints are intended here.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's result files (progress.csv, result.json) are given to each Tuner (progress.result_files); not
    # its TensorBoard files, which cost over a millisecond per report while the trial waits (MLflow holds the curves).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if ray.is_initialized():
        return False
    # No address: a local instance here, the job's cluster under `ray job submit`.
    ray.init(log_to_driver=False, logging_level=logging.ERROR, configure_logging=True, **_own_dashboard(dashboard))
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    logging.getLogger("torch._export").setLevel(logging.ERROR)
    if handle_signals:
        _stop_on_sigterm()  # after ray.init, whose own handler would exit at once
    return True


def _own_dashboard(wanted: bool) -> dict[str, Any]:
    """For a local instance: its dashboard on a port of its own, which every Ray process it starts queries.

    Ray's processes find "their" cluster's state API by looking for Ray instances
    on the machine; with two searches on one machine they find two and fail (Ray
    Train's cleaner of a stopped DDP trial then never frees its workers' CPUs and
    GPUs, and the next trial waits for them). ``RAY_API_SERVER_ADDRESS``, which
    the raylet and so every worker inherit, names this instance's dashboard.
    Under ``ray job submit`` (``RAY_ADDRESS`` set) the cluster is the job's: nothing changes.
    """
    if os.environ.get("RAY_ADDRESS"):
        return {}
    if not wanted:  # only Ray Train (DDP trials) asks the state API
        return {"include_dashboard": False}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    return {"dashboard_port": port}


def _stop_on_sigterm() -> None:
    """SIGTERM (``ray job stop``, a container runtime) stops the search as Ctrl-C does: state saved, runs KILLED."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))


def check_resources(settings: SearchSettings) -> int:
    """Refuse requests the cluster cannot meet; return how many trials can run at once."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return resources.check_fit(
        settings.resources.shape(),
        nodes=nodes,
        max_concurrent=settings.resources.max_concurrent,
        num_samples=settings.budget.num_samples,
    )


def warm_start(settings: SearchSettings, space: SearchSpace) -> WarmStart | None:
    """What ``--warm-start`` brings (None without it)."""
    if not settings.warm_start:
        return None
    return load_warm_start(settings.warm_start, space, metric=settings.metric, mode=settings.mode)


def build_tuner(
    settings: SearchSettings,
    space: SearchSpace,
    dataset: TaskData,
    callbacks: list,
    *,
    concurrency: int,
    warm: WarmStart | None = None,
) -> tune.Tuner:
    """A new Tuner (tried first: ``warm``'s configs), or the interrupted one restored; ``concurrency`` caps trials
    running at once."""
    shape = settings.resources.shape()
    spec = schedulers.get(settings.scheduler)
    scheduler = spec.build(budget=settings.budget, space=space, folder=settings.folder, seed=settings.seed)
    # Under PBT other trials restore from a trial's checkpoints: keep them a little longer.
    keep = max(settings.run.keep_checkpoints, spec.min_checkpoints)
    trainable = make_trainable(settings, space, dataset, keep=keep, scheduler=spec)
    if settings.run.resume:
        if not tune.Tuner.can_restore(settings.folder):
            raise UsageError(
                f"search '{settings.name}' stopped before Tune saved its state, so it cannot be resumed: "
                f"start it again under a new --name"
            )
        restored = tune.Tuner.restore(settings.folder, trainable, resume_errored=True)
        # Tune brings back the callbacks pickled when the search started, streams and functions left out:
        # this driver's own take their place (same order, so Tune hands each its saved state).
        restored._local_tuner.get_run_config().callbacks = list(callbacks)
        return restored
    # The known-good config first, then a finished search's best (--warm-start); the rest as sampled.
    point = reference_point(space)
    points = [point] if point else []
    points += [p for p in warm.points if p not in points] if warm else []
    if settings.search == "optuna":
        # Define-by-run: Optuna suggests a conditional parameter only where it is active.
        optuna = optuna_searcher(space, metric=settings.metric, mode=settings.mode, seed=settings.seed,
                                 max_epochs=settings.budget.max_epochs, points=points,
                                 priors=warm.priors if warm else [],
                                 objectives=settings.all_objectives()[1:])  # fmt: skip
        searcher = ConcurrencyLimiter(optuna, max_concurrent=concurrency)
    elif settings.search == "bohb":
        # The rungs ASHA (or HyperBand) judges at, and the last epoch: the budgets BOHB's model is fitted at.
        bohb = BohbSearch(space, metric=settings.metric, mode=settings.mode, seed=settings.seed,
                          rungs=spec.checkpoint_epochs(settings.budget),
                          points=points, priors=warm.priors if warm else [])  # fmt: skip
        searcher = ConcurrencyLimiter(bohb, max_concurrent=concurrency)
    else:
        # PBT's population is every trial at once: it takes turns (pausing trials at their
        # checkpoints) where the cluster cannot run them all, so the searcher makes them all.
        limit = 0 if spec.whole_population else concurrency
        searcher = BasicVariantGenerator(random_state=settings.seed, max_concurrent=limit,
                                         points_to_evaluate=points or None)  # fmt: skip
    sampled = settings.search == "random"  # Optuna's (and BOHB's) define-by-run space holds what it searches
    return tune.Tuner(
        trainable,
        param_space=param_space(space, max_epochs=settings.budget.max_epochs, seed=settings.seed, sampled=sampled),
        tune_config=tune.TuneConfig(
            metric=settings.metric,
            mode=settings.mode,
            scheduler=scheduler,
            search_alg=searcher,
            num_samples=settings.budget.num_samples,
            max_concurrent_trials=None,  # the searcher caps it; setting both raises
            # Reused actors start trials in milliseconds; a DDP trial's coordinator cannot be
            # reset for another trial (Ray refuses, then waits), and its workers start anew anyway.
            reuse_actors=shape.workers == 1,
        ),
        run_config=tune.RunConfig(
            name=settings.name,
            storage_path=settings.run.storage_path,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=keep,
                checkpoint_score_attribute=settings.metric,
                checkpoint_score_order=settings.mode,
            ),
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=settings.run.max_failures),
            # Each trial's stdout and stderr go to files in its working folder, and
            # sync_artifacts copies them into the trial's folder under the storage path
            # when the trial ends, not at every checkpoint (a blocking copy in the trial).
            log_to_file=True,
            sync_config=tune.SyncConfig(sync_artifacts=True, sync_artifacts_on_checkpoint=False),
            verbose=0,  # the ProgressTable callback prints instead
        ),
    )


def start_tracking(settings: SearchSettings, space: SearchSpace) -> tuple[SearchSettings, MlflowTracker]:
    """Open (or re-open, on resume) the parent run and save search.json with its id."""
    tracker = MlflowTracker(
        uri=settings.run.mlflow_uri,
        experiment=space.name,
        metric=settings.metric,
        objectives=tuple(settings.objectives),
        conditions=conditions(space),
        search_name=settings.name,
        parent_run_id=settings.run.mlflow_run_id,
        resume=settings.run.resume,
        offline_reason=tracking_unreachable(settings.run.mlflow_uri),
        folder=settings.folder,
    )
    settings = settings.with_run(mlflow_run_id=tracker.parent_run_id)
    storage.write_text(storage.join(settings.folder, results.SEARCH_JSON), settings.to_json())
    params = settings.mlflow_params()
    params.update({f"space.{p.name}": p.describe() for p in space.params})
    tags = {f"version.{k}": v for k, v in provenance.versions().items()}
    tags.update(
        {"git_commit": provenance.git_commit(), "seed": str(settings.seed), NOTE_TAG: describe_search(settings, space)}
    )
    tracker.log_search(params=params, tags=tags)
    return settings, tracker


def run_search(settings: SearchSettings, *, out: TextIO | None = None, hooks: Sequence[tune.Callback] = (),
               handle_signals: bool = True) -> dict[str, Any]:  # fmt: skip
    """Run (or resume) the search ``settings`` describes; return the best trial's record.

    One driver at a time: the search's lease (``tuner.driver.lease``) refuses a second
    one within seconds while the first is alive, and lets ``--resume`` take
    over from a driver that is gone. ``hooks``: more Tune callbacks (``tuner.api``'s
    ``on_result``). ``handle_signals``: SIGTERM stops the search as Ctrl-C does.
    """
    out = out or sys.stdout
    lease = Lease(settings.folder, name=settings.name)
    if settings.run.resume:  # the folder exists: hold it before anything else, so a second driver learns at once
        lease.acquire()
    try:
        if settings.run.resume and storage.exists(storage.join(settings.folder, results.RESULTS_CSV)):
            return _already_finished(settings, out=out)
        return _run(settings, lease, out=out, hooks=hooks, handle_signals=handle_signals)
    finally:
        lease.release()


def _already_finished(settings: SearchSettings, *, out: TextIO) -> dict[str, Any]:
    board = results.leaderboard(results.load_results(settings.folder), metric=settings.metric, mode=settings.mode,
                                folder=settings.folder, objectives=tuple(settings.objectives))  # fmt: skip
    print(f"search '{settings.name}' already finished (nothing to run, nothing registered again):\n{board}", file=out)
    best = storage.join(settings.folder, results.BEST_CONFIG)
    return results.load_best(settings.folder) if storage.exists(best) else {}


def _run(settings: SearchSettings, lease: Lease, *, out: TextIO, hooks: Sequence[tune.Callback],
         handle_signals: bool) -> dict[str, Any]:  # fmt: skip
    space = settings.space()
    dataset = load_dataset(settings, space)
    print(f"data: {dataset.description} from {settings.data_dir}", file=out)
    opening = open_store(settings.run.mlflow_uri, create=False)  # an existing store opens while Ray starts
    started = init_ray(handle_signals=handle_signals, dashboard=settings.resources.workers_per_trial > 1)
    try:
        if settings.resources.pending:
            settings = resolve_gpus(settings, space, dataset, out=out)
        concurrency = check_resources(settings)
        opening = opening or open_store(settings.run.mlflow_uri, create=True)  # a new one once the checks pass
        if not settings.run.resume:  # a new search's folder starts here, once the checks have passed
            lease.acquire()
        if opening:
            opening.join()
        settings, tracker = start_tracking(settings, space)
        provenance.record(settings.folder, data=dataset.trial, task=space.task)  # what a replay checks
        try:
            return _search(settings, space, dataset, tracker, concurrency=concurrency, out=out, hooks=hooks)
        except Interrupted:
            raise
        except BaseException as e:  # a crash, or a second Ctrl-C: the MLflow run must not stay RUNNING
            tracker.end(status="KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise
    finally:
        if started:
            ray.shutdown()


def _search(
    settings: SearchSettings,
    space: SearchSpace,
    dataset: TaskData,
    tracker: MlflowTracker,
    *,
    concurrency: int,
    out: TextIO,
    hooks: Sequence[tune.Callback] = (),
) -> dict[str, Any]:
    save_example(settings.folder, dataset.example, shape=dataset.example_shape)
    # A first run on a machine without a GPU: say now that the real budget is slow here, and how to try it quickly.
    on_cpu = not settings.resources.gpus_per_trial and not settings.smoke_test and not settings.run.resume
    if on_cpu:
        print(cpu_notice(settings, concurrency=concurrency), file=out, flush=True)
    progress = ProgressTable(
        params=[p.name for p in space.params if p.kind != "fixed"],
        metric=settings.metric,
        mode=settings.mode,
        total=settings.budget.num_samples,
        max_epochs=settings.budget.max_epochs,
        epochs_per_trial=schedulers.get(settings.scheduler).expected_epochs(settings.budget),
        gpus_per_trial=float(settings.resources.gpus_per_trial),
        conditions=conditions(space),
        cpu_estimate=on_cpu,
        concurrency=concurrency,
        out=out,
    )
    warm = None if settings.run.resume else warm_start(settings, space)
    if warm:
        # A multi-objective study is told no priors (tuner.driver.space.optuna_searcher): only their configs.
        print(warm.describe(model=settings.search != "random" and not settings.objectives), file=out)
    ddp = settings.resources.workers_per_trial > 1
    watch = PlacementWatch(out=out, timeout_s=settings.resources.worker_start_timeout_s if ddp else None)
    callbacks = [tracker, progress, watch, *result_files(), *hooks]
    tuner = build_tuner(settings, space, dataset, callbacks, concurrency=concurrency, warm=warm)
    print(
        f"search '{settings.name}': {settings.budget.num_samples} trials, "
        f"{schedulers.get(settings.scheduler).label} over {settings.budget.max_epochs} epochs, "
        f"writing to {settings.folder}",
        file=out,
        flush=True,
    )
    progress_module.LAST_STATUSES.clear()
    load_plotting()  # the report's library loads while the trials run
    grid, stopped = fit(tuner, resume_command=resume_command(settings))  # a stop ends the driver within a bound
    if stopped or progress_module.interrupted(settings.budget.num_samples):
        tracker.end(status="KILLED")
        raise interrupted(settings, reason=watch.not_placed)
    return finish(settings, space, grid, dataset, tracker, concurrency=concurrency, out=out)


def cpu_notice(settings: SearchSettings, *, concurrency: int) -> str:
    """What a search on CPU says before its first trial: the budget, that it is slow here, and the quick ways."""
    b, spec = settings.budget, schedulers.get(settings.scheduler)
    epochs = b.num_samples * spec.expected_epochs(b)
    return (
        f"no GPU: the trials run on CPU, {concurrency} at a time, ~{epochs:.0f} trial-epochs in all ({b.num_samples} "
        f"trials of up to {b.max_epochs} epochs under {spec.label}); the first epoch's "
        f"time gives an estimate of the whole search. A real budget can take hours on CPU (the cifar space's does): "
        f"--smoke-test tries the whole search on a slice of the data in minutes, and a GPU runs the real one much "
        f"faster. Ctrl-C stops it, resumable."
    )
