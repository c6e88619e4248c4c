"""``--confirm K``: a winner that is not one seed's luck.

After the search, the configs of its top K trials are trained again with
``CONFIRM_SEEDS`` other seeds each, at the full budget and with no early
stopping (a second Tune run in ``<search>/confirm``, on the same cluster and
data). Each config's score is then the mean of its best scores over its runs
(the search's own and the new ones), with their spread; the config with the
best mean is the winner, registered in place of the search's first, and the
leaderboard says which of the top K held their rank.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any, TextIO

import pandas as pd
from ray import tune
from ray.tune.search import BasicVariantGenerator

from results import storage
from results.table import ranked
from search_spaces import SearchSpace
from trainables.task import TaskData
from tuner import schedulers
from tuner.config.settings import SearchSettings
from tuner.driver.progress import result_files
from tuner.driver.space import param_space
from tuner.driver.summary import _score, _trial_id
from tuner.trial.trainable import make_trainable

CONFIRM_SEEDS = 3  # new seeds per config; with the search's own run, each config is judged over four
CONFIRM_DIR = "confirm"


@dataclass
class Confirmed:
    """One of the top K configs after its confirmation runs."""

    trial_id: str
    rank: int  # in the search, 1 = its best
    scores: list[float]  # the search's run first, then one per new seed (each run's best)
    confirmed_rank: int = 0  # by mean, among the K

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def std(self) -> float:
        return statistics.stdev(self.scores) if len(self.scores) > 1 else 0.0

    @property
    def held(self) -> bool:
        """Whether it ranks at least as high by mean over seeds as it did in the search."""
        return self.confirmed_rank <= self.rank

    def describe(self) -> str:
        return f"{self.mean:.4f} ± {self.std:.4f} ({len(self.scores)} seeds){' held' if self.held else ''}"


def _key(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True, default=str)


def confirm(
    settings: SearchSettings,
    space: SearchSpace,
    grid: tune.ResultGrid,
    rows: list[dict[str, Any]],
    dataset: TaskData,
    *,
    concurrency: int,
    out: TextIO,
) -> list[Confirmed]:
    """Retrain the top ``settings.confirm`` trials' configs over new seeds; return them ranked by mean score."""
    metric, mode, k = settings.metric, settings.mode, settings.confirm
    scored = [r for r in rows if r["status"] != "error" and r[metric] == r[metric]]  # NaN: no score
    # The search's order (results.table.ranked: best score, then the smaller trial id), as results.csv has it.
    top = ranked(pd.DataFrame(scored), metric=metric, mode=mode).head(k).to_dict("records") if scored else []
    configs = {_trial_id(r): r.config for r in grid}
    seeds = [settings.seed + 1 + i for i in range(CONFIRM_SEEDS)]
    points = [{**configs[row["trial_id"]], "seed": seed} for row in top for seed in seeds]
    print(f"\nconfirming the top {len(top)} config(s) over {len(seeds)} more seed(s) each ({len(points)} trials of "
          f"{settings.budget.max_epochs} epochs, no early stopping)", file=out, flush=True)  # fmt: skip
    trainable = make_trainable(settings, space, dataset, keep=1, scheduler=schedulers.get("fifo"))  # no early stop
    path = storage.join(settings.folder, CONFIRM_DIR)
    if tune.Tuner.can_restore(path):  # the search was resumed while it confirmed
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
        tuner._local_tuner.get_run_config().callbacks = result_files()  # as runner.build_tuner does
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(space, max_epochs=settings.budget.max_epochs, seed=settings.seed),
            tune_config=tune.TuneConfig(
                metric=metric, mode=mode, num_samples=len(points),
                reuse_actors=settings.resources.workers_per_trial == 1,
                search_alg=BasicVariantGenerator(points_to_evaluate=points, max_concurrent=concurrency),
            ),
            run_config=tune.RunConfig(
                name=CONFIRM_DIR, storage_path=settings.folder, verbose=0, log_to_file=True,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=metric,
                                                        checkpoint_score_order=mode),
                failure_config=tune.FailureConfig(max_failures=settings.run.max_failures),
                callbacks=result_files(),
            ),
        )  # fmt: skip
    runs: dict[str, list[float]] = {}
    for result in tuner.fit():
        score = _score(result, metric=metric, mode=mode)
        if result.error is None and math.isfinite(score):  # a diverged seed adds no score
            runs.setdefault(_key(result.config), []).append(score)
    found = [Confirmed(trial_id=row["trial_id"], rank=rank,
                       scores=[float(row[metric]), *runs.get(_key(configs[row["trial_id"]]), [])])
             for rank, row in enumerate(top, start=1)]  # fmt: skip
    by_mean = sorted(found, key=lambda c: c.mean, reverse=mode == "max")
    for rank, c in enumerate(by_mean, start=1):
        c.confirmed_rank = rank
    return by_mean
