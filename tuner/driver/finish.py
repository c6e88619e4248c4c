"""The end of a search: confirm the top trials, test the best once, register it, write the results and the report.

``finish`` runs after Tune's fit has returned (or, for a search whose driver died
after its trials, on ``--resume``); the summary it prints ends with the deliverable:
which model version was registered, who is champion, and how to load it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO

import pandas as pd
import ray
from ray import tune

import results
from results import cost as cost_module
from results import storage
from results.report import HTML, REPORT_DIR, make_report
from search_spaces import SearchSpace, SelectRule, conditions, mark_inactive
from trainables.loading import load_task
from trainables.task import TaskData
from tuner.config.settings import SearchSettings
from tuner.driver import provenance
from tuner.driver.confirm import confirm
from tuner.driver.summary import (
    best_trial,
    end_reasons,
    ended_early,
    failed_trials,
    prune_checkpoints,
    trial_histories,
    trial_rows,
)
from tuner.tracking.runs import MlflowTracker, describe_search, how_to_load, where_to_browse

CONFUSION_KEYS = ("confusion_matrix", "classes")  # what a classifier's evaluate may add to its test metrics


@ray.remote(max_calls=1)  # its process exits afterwards: no CUDA context left holding GPU memory
def _evaluate(task: str, checkpoint: tune.Checkpoint, held_out: Any) -> dict[str, Any]:
    from trainables.checkpoint import load
    from tuner.trial.process import trial_device

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
        grid, max_epochs=settings.budget.max_epochs, metric=metric, mode=mode, conditions=conditions(space),
        objectives=tuple(settings.objectives),
    )  # fmt: skip
    front = results.mark_front(rows, settings.all_objectives())  # a trade-off's Pareto front ([] for one objective)
    choice = Choice.of(settings, rows)
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
    if choice is None:
        best = best_trial(grid, metric=metric, mode=mode, only=confirmed[0].trial_id if confirmed else None)
    else:  # the space's select rule: the first allowed trial (in its order) with a kept checkpoint
        best = next(filter(None, (best_trial(grid, metric=metric, mode=mode, only=t) for t in choice.order)), None)
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
        if choice is not None:  # what the registered model was chosen by, and what it trades
            row = next(r for r in rows if r["trial_id"] == record["trial_id"])
            record.update({o: row[o] for o in settings.objectives}, objectives=dict(settings.objectives),
                          select=choice.describe(), pareto=front,
                          chosen_by={"metric": choice.rule.best, "mode": choice.mode})  # fmt: skip
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
    if front:
        tracker.log_front(rows, rule=choice.describe() if choice else "")
    frame = results.write(settings.folder, rows, record, metric=metric, mode=mode)
    try:
        report = make_report(settings.folder, histories=histories)
    except Exception as e:  # a picture that cannot be drawn must not cost the search its results
        print(f"warning: the report could not be drawn ({type(e).__name__}: {e}); try again with: "
              f"python -m results report {settings.folder}", file=sys.stderr)  # fmt: skip
    else:
        tracker.log_report(str(report), note=describe_search(settings, space))
    pruned = prune_checkpoints(
        rows, folder=settings.folder, keep_trials=settings.run.keep_trials, metric=metric, mode=mode,
        keep={*front, *([record["trial_id"]] if record else [])},  # the front and the chosen: a user picks among them
    )  # fmt: skip
    if pruned:
        print(f"removed the checkpoints of {len(pruned)} trial(s) outside the top {settings.run.keep_trials}", file=out)
    tracker.end(status="FINISHED" if record or (choice and choice.unmet) else "FAILED")  # none met the rule: done
    print_summary(settings, rows, frame, record, grid, out=out)
    if choice is not None:
        print(choice.summary(record, front=front, folder=settings.folder, space=space), file=out)
    if confirmed:
        w = confirmed[0]
        held = ", ".join(f"{c.trial_id} #{c.rank} -> #{c.confirmed_rank}{' (held)' if c.held else ''}"
                         for c in confirmed)  # fmt: skip
        print(f"confirmed over {len(w.scores)} seeds: {w.trial_id} (#{w.rank} in the search) has the best mean "
              f"{metric} {w.mean:.4f} ± {w.std:.4f} and is the registered model; {held}", file=out)  # fmt: skip
    print(cost_module.describe(cost, metric=metric), file=out)
    print(f"report: {storage.join(settings.folder, REPORT_DIR, HTML)} (opens from disk)", file=out)
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


@dataclass(frozen=True)
class Choice:
    """How a search with a select rule (or over a trade-off) picks its registered model."""

    rule: SelectRule
    mode: str  # the direction of ``rule.best``
    order: list[str]  # the trial ids the rule allows, best first
    trials: int  # how many trials there were
    unmet: bool  # trials scored, but none within the rule's bounds

    @classmethod
    def of(cls, settings: SearchSettings, rows: list[dict[str, Any]]) -> Choice | None:
        """None for a search of one objective without a rule: the best by the metric, as always."""
        if not settings.objectives and not settings.select:
            return None
        rule = settings.rule()
        mode = settings.mode_of(rule.best)
        order = results.select_order(rows, rule, settings.all_objectives())
        return cls(rule=rule, mode=mode, order=order, trials=len(rows),
                   unmet=results.unmet(rows, rule, settings.all_objectives()))  # fmt: skip

    def describe(self) -> str:
        return self.rule.describe(mode=self.mode)

    def summary(self, record: dict[str, Any] | None, *, front: list[str], folder: str, space: SearchSpace) -> str:
        """What chose the registered model (or why none), and where the front is."""
        lines = []
        if front:
            lines.append(f"Pareto front: {len(front)} of {self.trials} trials ({', '.join(front)}); results.csv marks "
                         f"them (column pareto), the report draws them")  # fmt: skip
        met = f"{len(self.order)} of {self.trials} trials met it"
        if record:
            lines.append(f"chosen by the space's select rule: {self.describe()} ({met}): trial {record['trial_id']}")
        elif self.unmet:
            where = space.source or f"space '{space.name}'"
            lines.append(f"no trial met the space's select rule ({self.describe()}; {met}), so no model is tested or "
                         f"registered: loosen select's bounds in {where} and search again, or pick a trial of the "
                         f"front in {storage.join(folder, results.RESULTS_CSV)}")  # fmt: skip
        return "\n".join(lines)


def print_summary(
    settings: SearchSettings,
    rows: list[dict],
    frame: pd.DataFrame,
    record: dict | None,
    grid: tune.ResultGrid,
    *,
    out: TextIO,
) -> None:
    board = results.leaderboard(frame, metric=settings.metric, mode=settings.mode, folder=settings.folder,
                                objectives=tuple(settings.objectives))  # fmt: skip
    reasons = end_reasons(grid)
    print(f"\nleaderboard ({len(rows)} trials, best first):\n{board}", file=out)
    for status, why in (("diverged", "diverged (training loss not finite)"),
                        ("infeasible", "ran out of GPU memory (configuration infeasible)")):  # fmt: skip
        ended = ended_early(rows, status)
        if ended:
            listed = ", ".join(f"{tid} (epoch {epoch})" for tid, epoch in ended)
            print(f"\n{len(ended)} trial(s) {why}, stopped: {listed}", file=out)
            for tid, _ in ended:
                if tid in reasons:
                    print(f"  {tid}: {reasons[tid]}", file=out)
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
        f"results: {storage.join(settings.folder, results.RESULTS_CSV)}, "
        f"{storage.join(settings.folder, results.BEST_CONFIG)}",
        file=out,
    )
