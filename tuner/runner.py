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

import pandas as pd
import ray
from ray import tune
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

import results
from results import _fs
from results import cost as cost_module
from results.report import HTML, REPORT_DIR, make_report
from search_spaces import SearchSpace, conditions, mark_inactive
from trainables.task import TaskData, load_data, load_task
from tuner import packing, provenance, resources, schedulers
from tuner import progress as progress_module
from tuner.confirm import confirm
from tuner.errors import UsageError
from tuner.lease import Lease
from tuner.placement import PlacementWatch
from tuner.progress import ProgressTable
from tuner.settings import GPUS_AUTO, SearchSettings, tracking_unreachable
from tuner.space import optuna_searcher, param_space, reference_point
from tuner.stopping import EXIT_INTERRUPTED, fit
from tuner.summary import best_trial, ended_early, failed_trials, prune_checkpoints, trial_histories, trial_rows
from tuner.tracking import NOTE_TAG, MlflowTracker, describe_search, how_to_load, save_example, where_to_browse
from tuner.trainable import trainable_for
from tuner.trial import DataRef, TrialSettings
from tuner.warm import WarmStart, load_warm_start

log = logging.getLogger(__name__)
CONFUSION_KEYS = ("confusion_matrix", "classes")  # what a classifier's evaluate may add to its test metrics


class Interrupted(RuntimeError):
    """The search was stopped (Ctrl-C) with its state saved; the message is the command that resumes it.

    ``reason``: why the search stopped itself (its exit status is then 1, not Ctrl-C's 130).
    """

    def __init__(self, settings: SearchSettings, *, reason: str | None = None) -> None:
        command = (f"{resume_command(settings)}\n  (from Python: tuner.search(name={settings.name!r}, "
                   f"storage_path={settings.run.storage_path!r}, resume=True))")  # fmt: skip
        self.exit_code = 1 if reason else EXIT_INTERRUPTED
        if reason:
            super().__init__(f"search '{settings.name}' stopped: {reason}\nIts state is saved; once that is "
                             f"resolved, resume it with:\n  {command}")  # fmt: skip
        else:
            super().__init__(f"search '{settings.name}' interrupted; its state is saved. Resume it with:\n  {command}")


def resume_command(settings: SearchSettings) -> str:
    return f"python run_tune.py --name {settings.name} --storage-path {settings.run.storage_path} --resume"


def load_dataset(settings: SearchSettings, space: SearchSpace) -> TaskData:
    """The space's task reads and validates its data, once per search (a slice of it for the smoke test)."""
    return load_data(space, data_dir=settings.data_dir, smoke_test=settings.smoke_test)


def init_ray(*, handle_signals: bool = True) -> bool:
    """Start (or join, under ``ray job submit``) a Ray instance; True when this call started it."""
    # Ray's console output is replaced by ProgressTable and the summary: the legacy
    # engine at verbose=0 prints nothing, and per-epoch checkpoints are intended here.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return False
    # No address: a local instance here, the job's cluster under `ray job submit`.
    ray.init(log_to_driver=False, logging_level=logging.ERROR, configure_logging=True, **_own_dashboard())
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    logging.getLogger("torch._export").setLevel(logging.ERROR)
    if handle_signals:
        _stop_on_sigterm()  # after ray.init, whose own handler would exit at once
    return True


def _own_dashboard() -> dict[str, Any]:
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


@ray.remote(max_calls=1)  # its process exits afterwards: no CUDA context left holding GPU memory
def _probe(task: str, config: dict[str, Any], data: Any) -> packing.ProbeRun:
    return packing.run_probe(task, config, data)


def measure_packing(space: SearchSpace, settings: SearchSettings, dataset: TaskData, *, out: TextIO) -> int:
    """Run 1, 2, 4, ... probes at once on one GPU (``packing``); return the trials per GPU to use."""
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    config = packing.probe_config(space, max_epochs=settings.budget.max_epochs, seed=settings.seed)
    arrays = ray.put(dataset.trial)
    node_cpus = max(n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive"))
    measured: dict[int, float] = {}
    runs: list[packing.ProbeRun] = []
    for k in packing.PACKINGS:
        if k * settings.resources.cpus_per_trial > node_cpus or (runs and not packing.fits(k, runs)):
            break
        # One bundle holds one GPU: the k probes share it, as k trials would.
        group = placement_group([{"GPU": 1, "CPU": k * settings.resources.cpus_per_trial}])
        ray.get(group.ready())
        try:
            strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
            task = _probe.options(
                num_gpus=packing.fraction_for(k),
                num_cpus=settings.resources.cpus_per_trial,
                scheduling_strategy=strategy,
            )
            runs = ray.get([task.remote(space.task, config, arrays) for _ in range(k)])
        finally:
            remove_placement_group(group)
        rate = packing.throughput(runs)
        print(f"  {k} probe(s) at once: {rate or 0:.2f} epochs/s", file=out, flush=True)
        if rate is None:
            break
        measured[k] = rate
        if k > 1 and rate < packing.MIN_GAIN * measured[k // 2]:
            break
    if not measured:
        print("  the probes never trained at the same time: 1 trial per GPU", file=out, flush=True)
        return 1
    trials = packing.choose(measured)
    print(packing.describe(measured, runs, trials), file=out, flush=True)
    return trials


def resolve_gpus(settings: SearchSettings, space: SearchSpace, dataset: TaskData, *, out: TextIO) -> SearchSettings:
    """Turn ``--gpus-per-trial auto`` (a probe's measure) or its absence (the space's default) into a number.

    The decision is printed, and saved in search.json with the other settings,
    so that ``--resume`` keeps it.
    """
    flag = "--gpus-per-trial auto" if settings.resources.gpus_per_trial == GPUS_AUTO else "--gpus-per-trial not given"
    if not ray.cluster_resources().get("GPU", 0):
        print(f"{flag}: no GPU in this cluster, trials run on CPU", file=out)
        return settings.with_gpus(0.0)
    if settings.resources.workers_per_trial > 1:
        print(f"{flag}: one GPU for each of the {settings.resources.workers_per_trial} DDP workers", file=out)
        return settings.with_gpus(float(settings.resources.workers_per_trial))
    if settings.resources.gpus_per_trial == GPUS_AUTO:
        print(f"{flag}: measuring how many trials one GPU runs best at once", file=out, flush=True)
        trials = measure_packing(space, settings, dataset, out=out)
    else:
        trials = space.trials_per_gpu
        print(
            f"{flag}: {trials} trial(s) per GPU, the {space.name} space's default (--gpus-per-trial "
            f"{packing.fraction_for(trials):g}); --gpus-per-trial auto measures one trial to decide, 0 runs on CPU",
            file=out,
            flush=True,
        )
    return settings.with_gpus(packing.fraction_for(trials))


def warm_start(settings: SearchSettings, space: SearchSpace) -> WarmStart | None:
    """What ``--warm-start`` brings (None without it)."""
    if not settings.warm_start:
        return None
    return load_warm_start(settings.warm_start, space, metric=settings.metric, mode=settings.mode)


def make_trainable(
    settings: SearchSettings, space: SearchSpace, dataset: TaskData, *, keep: int, checkpoint_epochs: tuple[int, ...]
) -> Any:
    """The search's Tune function with its data, trial settings and resources (a search's, or a confirmation's)."""
    shape = settings.resources.shape()
    trial_settings = TrialSettings(
        tracking_uri=settings.run.mlflow_uri,
        workers=shape.workers,
        cpus_per_worker=shape.cpus_per_worker,
        gpus_per_worker=shape.gpus_per_worker,
        compile=settings.compile,
        keep_checkpoints=keep,
        max_failures=settings.run.max_failures,
        worker_start_timeout_s=settings.resources.worker_start_timeout_s,
        train_storage=_fs.join(settings.folder, "train"),
        checkpoint_epochs=checkpoint_epochs,
        metric=settings.metric,
        mode=settings.mode,
        task=space.task,
        conditions=conditions(space),
        checkpoint_period_s=settings.run.checkpoint_period_s,
    )
    data: Any = dataset.trial
    if shape.workers > 1:
        # The trial's own process only coordinates; Ray Train schedules the workers,
        # which read the dataset from the one copy put here.
        trial_resources = {"cpu": shape.coordinator_cpus}
        data = DataRef(ray.put(dataset.trial))
    else:
        trial_resources = {"cpu": shape.cpus, "gpu": shape.gpus}
    return tune.with_resources(
        tune.with_parameters(trainable_for(space.name), data=data, settings=trial_settings), trial_resources
    )


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
    scheduler = schedulers.build_scheduler(
        settings.scheduler, budget=settings.budget, space=space, folder=settings.folder, seed=settings.seed
    )
    keep = settings.run.keep_checkpoints
    if settings.scheduler == "pbt":  # other trials restore from a trial's checkpoints: keep them a little longer
        keep = max(keep, schedulers.PBT_MIN_CHECKPOINTS)
    trainable = make_trainable(settings, space, dataset, keep=keep,
                               checkpoint_epochs=schedulers.checkpoint_epochs(settings.scheduler, settings.budget))
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
                                 points=points, priors=warm.priors if warm else [])  # fmt: skip
        searcher = ConcurrencyLimiter(optuna, max_concurrent=concurrency)
    else:
        # PBT's population is every trial at once: it takes turns (pausing trials at their
        # checkpoints) where the cluster cannot run them all, so the searcher makes them all.
        limit = 0 if settings.scheduler == "pbt" else concurrency
        searcher = BasicVariantGenerator(random_state=settings.seed, max_concurrent=limit,
                                         points_to_evaluate=points or None)  # fmt: skip
    sampled = settings.search != "optuna"  # Optuna's define-by-run space holds what it searches
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


@ray.remote(max_calls=1)  # its process exits afterwards: no CUDA context left holding GPU memory
def _evaluate(task: str, checkpoint: tune.Checkpoint, held_out: Any) -> dict[str, Any]:
    from trainables.checkpoint import load
    from tuner.trial import trial_device

    device = trial_device()
    with checkpoint.as_directory() as folder:
        state = load(folder, map_location=device)
    scores = load_task(task).evaluate(state, held_out, device=device)
    # Metrics as floats; a classifier's confusion matrix and class names (for the report) as they are.
    return {k: v if k in CONFUSION_KEYS else float(v) for k, v in scores.items()}


def test_scores(settings: SearchSettings, space: SearchSpace, checkpoint: tune.Checkpoint, dataset: TaskData) -> dict:
    """The held-out data, used once: the best checkpoint evaluated in one worker's slot of the cluster.

    One worker's, not the trial's: a DDP trial's CPUs and GPUs may span nodes, and
    one process asking for all of them would wait forever for a node that big.
    """
    if not load_task(space.task).provides("evaluate"):
        return {}  # the summary says the search has no test score
    shape = settings.resources.shape()
    task = _evaluate.options(num_cpus=shape.cpus_per_worker, num_gpus=shape.gpus_per_worker)
    return ray.get(task.remote(space.task, checkpoint, dataset.held_out))


def start_tracking(settings: SearchSettings, space: SearchSpace) -> tuple[SearchSettings, MlflowTracker]:
    """Open (or re-open, on resume) the parent run and save search.json with its id."""
    tracker = MlflowTracker(
        uri=settings.run.mlflow_uri,
        experiment=space.name,
        metric=settings.metric,
        conditions=conditions(space),
        search_name=settings.name,
        parent_run_id=settings.run.mlflow_run_id,
        resume=settings.run.resume,
        offline_reason=tracking_unreachable(settings.run.mlflow_uri),
        folder=settings.folder,
    )
    settings = settings.with_run(mlflow_run_id=tracker.parent_run_id)
    _fs.write_text(_fs.join(settings.folder, results.SEARCH_JSON), settings.to_json())
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

    One driver at a time: the search's lease (``tuner.lease``) refuses a second
    one within seconds while the first is alive, and lets ``--resume`` take
    over from a driver that is gone. ``hooks``: more Tune callbacks (``tuner.api``'s
    ``on_result``). ``handle_signals``: SIGTERM stops the search as Ctrl-C does.
    """
    out = out or sys.stdout
    lease = Lease(settings.folder, name=settings.name)
    if settings.run.resume:  # the folder exists: hold it before anything else, so a second driver learns at once
        lease.acquire()
    try:
        if settings.run.resume and _fs.exists(_fs.join(settings.folder, results.RESULTS_CSV)):
            return _already_finished(settings, out=out)
        return _run(settings, lease, out=out, hooks=hooks, handle_signals=handle_signals)
    finally:
        lease.release()


def _already_finished(settings: SearchSettings, *, out: TextIO) -> dict[str, Any]:
    board = results.leaderboard(results.load_results(settings.folder), metric=settings.metric, mode=settings.mode,
                                folder=settings.folder)  # fmt: skip
    print(f"search '{settings.name}' already finished (nothing to run, nothing registered again):\n{board}", file=out)
    return results.load_best(settings.folder) if _fs.exists(_fs.join(settings.folder, results.BEST_CONFIG)) else {}


def _run(settings: SearchSettings, lease: Lease, *, out: TextIO, hooks: Sequence[tune.Callback],
         handle_signals: bool) -> dict[str, Any]:  # fmt: skip
    space = settings.space()
    dataset = load_dataset(settings, space)
    print(f"data: {dataset.description} from {settings.data_dir}", file=out)
    started = init_ray(handle_signals=handle_signals)
    try:
        if settings.resources.pending:
            settings = resolve_gpus(settings, space, dataset, out=out)
        concurrency = check_resources(settings)
        if not settings.run.resume:  # a new search's folder starts here, once the checks have passed
            lease.acquire()
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
        epochs_per_trial=schedulers.expected_epochs(settings.scheduler, settings.budget),
        gpus_per_trial=float(settings.resources.gpus_per_trial),
        conditions=conditions(space),
        cpu_estimate=on_cpu,
        concurrency=concurrency,
        out=out,
    )
    warm = None if settings.run.resume else warm_start(settings, space)
    if warm:
        print(warm.describe(optuna=settings.search == "optuna"), file=out)
    ddp = settings.resources.workers_per_trial > 1
    watch = PlacementWatch(out=out, timeout_s=settings.resources.worker_start_timeout_s if ddp else None)
    callbacks = [tracker, progress, watch, *hooks]
    tuner = build_tuner(settings, space, dataset, callbacks, concurrency=concurrency, warm=warm)
    print(
        f"search '{settings.name}': {settings.budget.num_samples} trials, "
        f"{schedulers.LABELS[settings.scheduler]} over {settings.budget.max_epochs} epochs, "
        f"writing to {settings.folder}",
        file=out,
        flush=True,
    )
    progress_module.LAST_STATUSES.clear()
    grid, stopped = fit(tuner, resume_command=resume_command(settings))  # a stop ends the driver within a bound
    if stopped or progress_module.interrupted(settings.budget.num_samples):
        tracker.end(status="KILLED")
        raise Interrupted(settings, reason=watch.not_placed)
    return finish(settings, space, grid, dataset, tracker, concurrency=concurrency, out=out)


def finish(
    settings: SearchSettings,
    space: SearchSpace,
    grid: tune.ResultGrid,
    dataset: TaskData,
    tracker: MlflowTracker,
    *,
    concurrency: int = 1,
    out: TextIO,
) -> dict[str, Any]:
    """Confirm the top trials (``--confirm``), evaluate the best on the test set, log to MLflow, write the results."""
    metric, mode = settings.metric, settings.mode
    task = load_task(space.task)
    rows = trial_rows(
        grid, max_epochs=settings.budget.max_epochs, metric=metric, mode=mode, conditions=conditions(space)
    )
    gpus, cpus = float(settings.resources.gpus_per_trial), settings.resources.cpus_per_trial
    cost_module.add_trial_costs(rows, gpus_per_trial=gpus, cpus_per_trial=cpus)
    histories = trial_histories(grid)
    cost = cost_module.search_cost(
        rows, histories, metric=metric, mode=mode, gpus_per_trial=gpus, cpus_per_trial=cpus,
        num_samples=settings.budget.num_samples, max_epochs=settings.budget.max_epochs, target=settings.target,
    )  # fmt: skip
    tracker.log_trial_costs(rows)
    tracker.log_metrics(cost_module.mlflow_metrics(cost))
    confirmed = []
    if settings.confirm:  # the top configs over more seeds: the registered model is the best by mean
        confirmed = confirm(settings, space, grid, rows, dataset, concurrency=concurrency, out=out)
    if confirmed:
        by_id = {c.trial_id: c for c in confirmed}
        for row in rows:
            c = by_id.get(row["trial_id"])
            if c is not None:
                row.update(confirmed=c.describe(), confirmed_mean=round(c.mean, 6), confirmed_std=round(c.std, 6),
                           confirmed_runs=len(c.scores), held=c.held)  # fmt: skip
        tracker.log_confirmation({c.trial_id: c.describe() for c in confirmed})
        winner = confirmed[0]
        tracker.log_metrics({f"confirmed_{metric}_mean": winner.mean, f"confirmed_{metric}_std": winner.std})
    best = best_trial(grid, metric=metric, mode=mode, only=confirmed[0].trial_id if confirmed else None)
    record: dict[str, Any] | None = None
    registered = None
    if best is not None:
        checkpoint, metrics, result = best
        scores = test_scores(settings, space, checkpoint, dataset)
        confusion = {k: scores.pop(k) for k in CONFUSION_KEYS if k in scores}
        record = {
            "search": settings.name,
            "trial_id": metrics.get("trial_id"),
            "metric": metric,
            "mode": mode,
            metric: metrics[metric],
            **scores,
            "test_metrics": list(scores),
            "epoch": metrics.get("epoch"),
            # As results.csv shows it: a conditional parameter that did not hold is "inactive", never a value.
            "config": mark_inactive(result.config or {}, conditions(space)),
            "checkpoint": checkpoint.path,
            "cost": cost,
            **confusion,
        }
        if confirmed:
            record["confirm"] = [{"trial_id": c.trial_id, "search_rank": c.rank, "confirmed_rank": c.confirmed_rank,
                                  "mean": c.mean, "std": c.std, "scores": c.scores, "held": c.held}
                                 for c in confirmed]  # fmt: skip
        if task.provides("build_model"):  # else nothing could rebuild the network: no model is registered
            with checkpoint.as_directory() as folder:
                registered = tracker.log_best(
                    checkpoint_dir=folder, task=space.task, example=dataset.example, record=record,
                    registered_name=f"{space.name}-best", data_key=provenance.data_key(settings.folder),
                    smoke=settings.smoke_test, example_shape=dataset.example_shape,
                )  # fmt: skip
        if registered is not None:
            record["model_uri"] = registered.uri
            record["registered"] = registered.describe()
        tracker.log_metrics({f"best_{metric}": record[metric], **scores})
    frame = results.write(settings.folder, rows, record, metric=metric, mode=mode)
    try:
        report = make_report(settings.folder, histories=histories)
    except Exception as e:  # a picture that cannot be drawn must not cost the search its results
        print(f"warning: the report could not be drawn ({type(e).__name__}: {e}); try again with: "
              f"python -m results report {settings.folder}", file=sys.stderr)  # fmt: skip
    else:
        tracker.log_report(str(report), note=describe_search(settings, space))
    pruned = prune_checkpoints(
        rows, folder=settings.folder, keep_trials=settings.run.keep_trials, metric=metric, mode=mode
    )
    if pruned:
        print(f"removed the checkpoints of {len(pruned)} trial(s) outside the top {settings.run.keep_trials}", file=out)
    tracker.end(status="FINISHED" if record else "FAILED")
    print_summary(settings, rows, frame, record, grid, out=out)
    if confirmed:
        w = confirmed[0]
        held = ", ".join(f"{c.trial_id} #{c.rank} -> #{c.confirmed_rank}{' (held)' if c.held else ''}"
                         for c in confirmed)  # fmt: skip
        print(f"confirmed over {len(w.scores)} seeds: {w.trial_id} (#{w.rank} in the search) has the best mean "
              f"{metric} {w.mean:.4f} ± {w.std:.4f} and is the registered model; {held}", file=out)  # fmt: skip
    print(cost_module.describe(cost, metric=metric), file=out)
    print(f"report: {_fs.join(settings.folder, REPORT_DIR, HTML)} (opens from disk)", file=out)
    print(
        where_to_browse(settings.run.mlflow_uri, experiment_id=tracker.experiment_id, run_id=tracker.parent_run_id),
        file=out,
    )
    if record and registered is not None:  # the deliverable, last: which version, who is champion, how to load it
        print(record["registered"], file=out)
        print(how_to_load(settings.run.mlflow_uri, registered), file=out)
    elif record and task.provides("build_model"):
        print(f"not registered: MLflow did not answer or refused it (the warnings above say which); register it "
              f"with: python run_tune.py --sync {settings.folder}", file=out)  # fmt: skip
    for line in task.skipped():  # what a lighter task leaves out
        print(line, file=out)
    return record or {}


def cpu_notice(settings: SearchSettings, *, concurrency: int) -> str:
    """What a search on CPU says before its first trial: the budget, that it is slow here, and the quick ways."""
    b = settings.budget
    epochs = b.num_samples * schedulers.expected_epochs(settings.scheduler, b)
    return (
        f"no GPU: the trials run on CPU, {concurrency} at a time, ~{epochs:.0f} trial-epochs in all ({b.num_samples} "
        f"trials of up to {b.max_epochs} epochs under {schedulers.LABELS[settings.scheduler]}); the first epoch's "
        f"time gives an estimate of the whole search. A real budget can take hours on CPU (the cifar space's does): "
        f"--smoke-test tries the whole search on a slice of the data in minutes, and a GPU runs the real one much "
        f"faster. Ctrl-C stops it, resumable."
    )


def print_summary(
    settings: SearchSettings,
    rows: list[dict],
    frame: pd.DataFrame,
    record: dict | None,
    grid: tune.ResultGrid,
    *,
    out: TextIO,
) -> None:
    board = results.leaderboard(frame, metric=settings.metric, mode=settings.mode, folder=settings.folder)
    print(f"\nleaderboard ({len(rows)} trials, best first):\n{board}", file=out)
    for status, why in (("diverged", "diverged (training loss not finite)"),
                        ("infeasible", "ran out of GPU memory (configuration infeasible)")):  # fmt: skip
        ended = ended_early(rows, status)
        if ended:
            listed = ", ".join(f"{tid} (epoch {epoch})" for tid, epoch in ended)
            print(f"\n{len(ended)} trial(s) {why}, stopped: {listed}", file=out)
    failed = failed_trials(grid)
    if failed:
        print(f"\n{len(failed)} trial(s) failed:", file=out)
        for trial_id, error, log_path in failed:
            print(f"  {trial_id}: {error}\n    error log: {log_path}", file=out)
    if record:
        print(
            f"\nbest trial {record['trial_id']}: {settings.metric} {record[settings.metric]:.4f}, "
            + "".join(f"{k} {record[k]:.4f}, " for k in record["test_metrics"])
            + f"epoch {record['epoch']}",
            file=out,
        )
    print(
        f"results: {_fs.join(settings.folder, results.RESULTS_CSV)}, {_fs.join(settings.folder, results.BEST_CONFIG)}",
        file=out,
    )
