"""A learning-curve table replayed through the project's schedulers and searchers, in simulated time.

A table (``bench/record_curves.py``) holds configs of a real space, each
trained to the full budget: every epoch's score and seconds. A simulated
search asks the project's own searcher for a config (random: Ray's domains
from ``tuner.driver.space.param_space``; TPE: ``optuna_searcher``), trains
the recorded config nearest to it, and hands each recorded epoch to the
project's own scheduler (``tuner.schedulers``: the same Ray Tune objects a
search builds) when that epoch would have ended on one of N workers. The
scheduler's answer (continue, stop, pause, exploit) is carried out as Tune's
controller does, with real ``ray.tune.experiment.Trial`` objects and no Ray
processes: a search of thousands of trial-epochs takes a fraction of a second.

What is approximated, and how:

- A suggested config is mapped to the recorded one nearest to it: each number
  scaled to [0, 1] over its range (log scale for ``loguniform``), a different
  choice counting as a whole range, an inactive conditional parameter as -1.
- A new trial is asked for when a worker is free (the search's
  ``ConcurrencyLimiter``); PBT's population is made at once and takes turns
  (Tune's ``choose_trial_to_run``).
- After a PBT exploit the trial goes on along the donor's recorded curve from
  the donor's epoch: it has the donor's weights, and the table holds no curve
  of the perturbed values trained from them, so the perturbation's own effect
  (better or worse) is not modelled. A replay repeats a curve exactly, which a
  real trial with other values would not: where the donor's curve dips after
  its epoch, the trial exploited from it scores below the donors' earlier
  scores each time, is exploited again, and may go round until the compute
  cap ends the search. PBT's figures are the least certain of all.
- Compute is the sum of the workers' busy seconds (trial-seconds), the
  figure the project's cost and time to target count.
"""

from __future__ import annotations

import dataclasses
import heapq
import io
import itertools
import json
import logging
import math
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from search_spaces import INACTIVE, Budget, SearchSpace, conditions, drop_inactive, searched_space

CURVES = "curves.csv.gz"
PROVENANCE = "provenance.json"


@dataclass(frozen=True)
class Curves:
    """A recorded table: configs, and each one's score and seconds at every epoch (NaN where it ended sooner)."""

    space: SearchSpace
    metric: str
    mode: str
    configs: list[dict[str, Any]]
    scores: np.ndarray  # (configs, max_epochs)
    seconds: np.ndarray  # (configs, max_epochs)
    vectors: np.ndarray = field(repr=False)  # each config as a point, for nearest()

    @property
    def max_epochs(self) -> int:
        return self.scores.shape[1]

    def nearest(self, config: dict[str, Any]) -> int:
        """The index of the recorded config nearest to ``config`` (ties: the first recorded)."""
        point = encode(self.space, drop_inactive(config, conditions(self.space)))
        return int(np.argmin(((self.vectors - point) ** 2).sum(axis=1)))

    def best_scores(self) -> np.ndarray:
        """Each config's best score over its epochs, sign-adjusted so that higher is better."""
        sign = 1.0 if self.mode == "max" else -1.0
        return np.nanmax(sign * self.scores, axis=1) * sign


def encode(space: SearchSpace, config: dict[str, Any]) -> np.ndarray:
    """``config`` as a point: numbers scaled over their ranges, choices one-hot, inactive parameters -1."""
    point: list[float] = []
    for p in space.params:
        if p.kind == "fixed":
            continue
        value = config.get(p.name)
        if p.kind == "choice":
            point += [float(value == c) / math.sqrt(2) for c in p.choices]  # another choice: distance 1
        elif value is None:  # inactive: dropped from a suggestion, None in a loaded table (``_value``)
            point.append(-1.0)
        elif p.kind == "loguniform":
            point.append(math.log(float(value) / p.low) / math.log(p.high / p.low))
        else:
            point.append((float(value) - p.low) / max(float(p.high - p.low), 1e-12))
    return np.asarray(point)


def load(folder: str | Path, *, metric: str | None = None, mode: str | None = None) -> Curves:
    """The table ``bench/record_curves.py`` wrote in ``folder``, replayed by ``metric`` (default: the space's)."""
    folder = Path(folder)
    provenance = json.loads((folder / PROVENANCE).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        space_path = Path(tmp) / "space.yaml"
        space_path.write_text(provenance["space"])
        space = searched_space(str(space_path), smoke_test=bool(provenance.get("smoke_test")), params=[])
    frame = pd.read_csv(folder / CURVES)
    metric, mode = metric or provenance["metric"], mode or provenance["mode"]
    if metric not in frame.columns or mode not in ("min", "max"):
        raise SystemExit(f"the table has no metric {metric!r} with mode {mode!r}: pick one of "
                         f"{', '.join(c for c in frame.columns if c.startswith('val_'))}, and min or max")
    max_epochs = int(provenance["max_epochs"])
    params = provenance["params"]
    numbers = sorted(frame["config"].unique())
    scores = np.full((len(numbers), max_epochs), np.nan)
    seconds = np.full((len(numbers), max_epochs), np.nan)
    configs = []
    for i, (_, rows) in enumerate(frame.groupby("config", sort=True)):
        first = rows.iloc[0]
        configs.append({p: _value(first[p]) for p in params})
        epochs = rows["epoch"].to_numpy(int) - 1
        scores[i, epochs] = rows[metric].to_numpy(float)
        seconds[i, epochs] = rows["seconds"].to_numpy(float)
    vectors = np.stack([encode(space, c) for c in configs])
    return Curves(space=space, metric=metric, mode=mode, configs=configs, scores=scores,
                  seconds=seconds, vectors=vectors)  # fmt: skip


def _value(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None if v == INACTIVE else v
    return v.item() if hasattr(v, "item") else v


@dataclass(frozen=True)
class Method:
    """One way to search: a scheduler of ``tuner.schedulers`` and a searcher (``random`` or ``optuna``)."""

    name: str
    scheduler: str
    searcher: str = "random"
    grace_period: int | None = None  # its own grace period (PBT: the epochs between exploits), else the budget's


METHODS = (
    Method("random, full budget", "fifo"),
    Method("ASHA (random)", "asha"),
    Method("ASHA (Optuna TPE)", "asha", "optuna"),
    Method("ASHA (BOHB)", "asha", "bohb"),
    Method("HyperBand (random)", "hyperband"),
    Method("median rule (random)", "median"),
    Method("PBT", "pbt"),
)
RAY_BOHB = "ray-bohb"  # Ray's TuneBOHB with HyperBandForBOHB (synchronous): measured where hpbandster is installed
RAY_BOHB_METHOD = Method("Ray's BOHB (HyperBandForBOHB)", RAY_BOHB, RAY_BOHB)


def methods() -> tuple[Method, ...]:
    """``METHODS``, and Ray's own BOHB where its packages (hpbandster, ConfigSpace) are installed."""
    import importlib.util

    ray_bohb = all(importlib.util.find_spec(m) for m in ("hpbandster", "ConfigSpace"))
    return (*METHODS, RAY_BOHB_METHOD) if ray_bohb else METHODS


class _Controller:
    """The part of Tune's controller the schedulers call: the trials, pausing, stopping or saving one."""

    def __init__(self) -> None:
        self.trials: list[Any] = []
        self.search_alg: Any = None
        self.scheduler: Any = None

    def stop_trial(self, trial: Any) -> None:
        """A paused or pending trial the scheduler ends (synchronous HyperBand's losers), as Tune's controller does."""
        from ray.tune.experiment import Trial

        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self, trial)
            if self.search_alg is not None:
                self.search_alg.searcher.on_trial_complete(trial.trial_id)
            trial.set_status(Trial.TERMINATED)

    def get_trials(self) -> list[Any]:
        return self.trials

    def get_live_trials(self) -> list[Any]:
        return [t for t in self.trials if not t.is_finished()]

    def _schedule_trial_save(self, trial: Any, result: dict | None = None) -> Any:
        return _saved(trial, result or trial.last_result)

    def pause_trial(self, trial: Any, should_checkpoint: bool = True) -> None:
        from ray.tune.experiment import Trial

        _saved(trial, trial.last_result)
        trial.set_status(Trial.PAUSED)


def _saved(trial: Any, metrics: dict) -> Any:
    """A checkpoint of ``trial`` as of ``metrics`` (its epoch is where a trial restored from it goes on)."""
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult

    checkpoint = Checkpoint(f"/sim/{trial.trial_id}/{metrics.get('epoch', 0)}")
    trial.run_metadata.checkpoint_manager._latest_checkpoint_result = _TrainingResult(checkpoint, dict(metrics))
    return checkpoint


@dataclass
class _Running:
    trial: Any
    row: int  # the recorded config it follows
    epoch: int  # the epoch it is training (1-based)
    started: float  # when that epoch began


def replay(curves: Curves, method: Method, *, seed: int, workers: int, budget: Budget, cap_s: float,
           targets: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    """One simulated search: the compute (trial-seconds) at which the best score first reached each target."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from tuner.driver.space import param_space

    random.seed(seed)
    np.random.seed(seed)  # Ray's schedulers and domains draw from the global generators
    rng = np.random.RandomState(seed)
    metric, mode, space = curves.metric, curves.mode, curves.space
    sign = 1.0 if mode == "max" else -1.0
    controller = _Controller()
    if method.grace_period is not None:
        budget = dataclasses.replace(budget, grace_period=method.grace_period)
    scheduler, searcher, population = _build(method, curves, budget=budget, seed=seed, controller=controller)
    controller.scheduler = scheduler
    domains = param_space(space, max_epochs=budget.max_epochs, seed=seed)
    searched = [p.name for p in space.params if p.kind != "fixed"]
    conds = conditions(space)

    def new_trial() -> Any:
        trial_id = f"{len(controller.trials):05d}"
        if searcher is not None:
            config = dict(searcher.suggest(trial_id))
        else:
            config = drop_inactive({k: domains[k].sample(random_state=rng) for k in searched}, conds)
        trial = Trial("sim", config=config, trial_id=trial_id, stub=True)
        controller.trials.append(trial)
        scheduler.on_trial_add(controller, trial)
        return trial

    for _ in range(population):
        new_trial()
    running: dict[str, _Running] = {}
    rows: dict[str, int] = {}  # trial id -> the recorded config whose curve it follows
    events: list[tuple[float, int, str]] = []
    order = itertools.count()  # ties in time: first scheduled, first ended
    done_s = 0.0  # seconds of the epochs finished
    best = -math.inf
    reached: dict[str, float] = {}
    trials_run = epochs_run = stopped = 0
    now = 0.0

    def start(trial: Any) -> None:
        nonlocal trials_run
        last = trial.run_metadata.checkpoint_manager._latest_checkpoint_result
        epoch = int(last.metrics.get("epoch", 0)) + 1 if last is not None else 1
        if trial.status == Trial.PENDING:
            trials_run += 1
            rows[trial.trial_id] = curves.nearest(trial.config)
        elif last is not None and last.metrics.get("trial_id") != trial.trial_id:  # a PBT exploit
            rows[trial.trial_id] = rows[last.metrics["trial_id"]]  # the donor's curve, from its epoch on
        row = rows[trial.trial_id]
        trial.set_status(Trial.RUNNING)
        running[trial.trial_id] = _Running(trial, row, epoch, now)
        heapq.heappush(events, (now + _seconds(curves, row, epoch), next(order), trial.trial_id))

    def fill() -> None:
        while len(running) < workers and done_s < cap_s:
            trial = scheduler.choose_trial_to_run(controller)
            if trial is None:
                if population:
                    return
                trial = new_trial()
            start(trial)

    def finish(run: _Running, result: dict) -> None:
        scheduler.on_trial_complete(controller, run.trial, result)
        if searcher is not None:
            searcher.on_trial_complete(run.trial.trial_id, result)
        run.trial.set_status(Trial.TERMINATED)

    fill()
    while events and len(reached) < len(targets):
        now, _, trial_id = heapq.heappop(events)
        run = running.pop(trial_id)
        seconds = _seconds(curves, run.row, run.epoch)
        done_s += seconds
        epochs_run += 1
        score = float(curves.scores[run.row, run.epoch - 1])
        result = {metric: score, "epoch": run.epoch, "training_iteration": run.epoch, "time_this_iter_s": seconds,
                  "trial_id": trial_id, "config": dict(run.trial.config)}  # fmt: skip
        if score == score and sign * score > best:
            best = sign * score
            spent = done_s + sum(now - r.started for r in running.values())
            for name, target in targets.items():
                if name not in reached and best >= sign * target - 1e-12:
                    reached[name] = spent
        ends = score != score or run.epoch >= budget.max_epochs  # the trial's function returns after this report
        if score != score:
            result["diverged"] = True  # as a trial whose loss went NaN reports it: no score, and it ends
        # Tune's order: the scheduler, then the searcher unless the trial is stopped; the last report too.
        decision = scheduler.on_trial_result(controller, run.trial, result)
        if decision != TrialScheduler.STOP and searcher is not None:
            searcher.on_trial_result(trial_id, result)
        run.trial.update_last_result(result)
        if decision == TrialScheduler.STOP or ends:
            stopped += decision == TrialScheduler.STOP and not ends
            finish(run, result)
        elif decision == TrialScheduler.PAUSE:
            controller.pause_trial(run.trial)
        elif run.trial.status == Trial.RUNNING:  # CONTINUE (NOOP: PBT paused it to exploit)
            running[trial_id] = run
            run.epoch, run.started = run.epoch + 1, now
            heapq.heappush(events, (now + _seconds(curves, run.row, run.epoch), next(order), trial_id))
        fill()
    return {"method": method.name, "seed": seed, "trials": trials_run, "epochs": epochs_run, "stopped": stopped,
            "exploits": len(getattr(scheduler, "exploits", ())), "best": sign * best if best > -math.inf else math.nan,
            **{f"{name}_s": reached.get(name, math.inf) for name in targets}}  # fmt: skip


def _build(method: Method, curves: Curves, *, budget: Budget, seed: int, controller: _Controller) -> tuple:
    """The method's scheduler and searcher (None: random search), and its population (0: trials as they go)."""
    from tuner import schedulers

    metric, mode, space = curves.metric, curves.mode, curves.space
    if method.scheduler == RAY_BOHB:  # Ray's own BOHB, for comparison: hpbandster and ConfigSpace must be installed
        from ray.tune.schedulers import HyperBandForBOHB
        from ray.tune.search.bohb import TuneBOHB

        from tuner.driver.space import param_space

        scheduler = HyperBandForBOHB(time_attr="epoch", max_t=budget.max_epochs,
                                     reduction_factor=budget.reduction_factor)  # fmt: skip
        scheduler.set_search_properties(metric, mode)
        domains = param_space(space, max_epochs=budget.max_epochs, seed=seed)
        searched = {p.name: domains[p.name] for p in space.params if p.kind != "fixed"}
        searcher = TuneBOHB(space=TuneBOHB.convert_search_space(searched), metric=metric, mode=mode, seed=seed)
        controller.search_alg = _SearchAlg(searcher)
        return scheduler, searcher, 0
    spec = schedulers.get(method.scheduler)
    with tempfile.TemporaryDirectory() as folder:
        scheduler = spec.build(budget=budget, space=space, folder=folder, seed=seed)
    scheduler._save = lambda: None  # the state file is for --resume: nothing to resume here
    scheduler.set_search_properties(metric, mode)
    searcher = None
    if method.searcher == "optuna":
        import optuna

        from tuner.driver.space import optuna_searcher

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        searcher = optuna_searcher(space, metric=metric, mode=mode, seed=seed, max_epochs=budget.max_epochs,
                                   points=[], priors=[])  # fmt: skip
    elif method.searcher == "bohb":
        from tuner.driver.bohb import BohbSearch

        searcher = BohbSearch(space, metric=metric, mode=mode, seed=seed, rungs=spec.checkpoint_epochs(budget))
    return scheduler, searcher, budget.num_samples if spec.whole_population else 0


class _SearchAlg:
    """What HyperBandForBOHB reaches through Tune's controller: the search algorithm's searcher."""

    def __init__(self, searcher: Any) -> None:
        self.searcher = searcher


def _seconds(curves: Curves, row: int, epoch: int) -> float:
    value = float(curves.seconds[row, epoch - 1])
    return value if value == value else 0.0  # an epoch the record lacks (it diverged before) takes no time


def replay_many(curves: Curves, methods: tuple[Method, ...], *, seeds: int, workers: int, budget: Budget,
                cap_s: float, targets: dict[str, float], processes: int = 1) -> list[dict[str, Any]]:  # fmt: skip
    """Every method over ``seeds`` seeds (0..seeds-1); rows in method, then seed, order whatever ``processes``."""
    jobs = [(curves, m, s, workers, budget, cap_s, targets) for m in methods for s in range(seeds)]
    if processes <= 1:
        return [_job(j) for j in jobs]
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return pool.map(_job, jobs, chunksize=max(1, len(jobs) // (processes * 4)))


def _job(job: tuple) -> dict[str, Any]:
    curves, method, seed, workers, budget, cap_s, targets = job
    logging.getLogger("ray.tune").setLevel(logging.ERROR)  # PBT logs every exploit at INFO
    import contextlib

    with contextlib.redirect_stdout(io.StringIO()):
        return replay(curves, method, seed=seed, workers=workers, budget=budget, cap_s=cap_s, targets=targets)
