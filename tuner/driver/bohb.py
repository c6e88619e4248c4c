"""``--search bohb``: BOHB's model over ASHA's rungs, a model-based multi-fidelity searcher.

BOHB (Falkner et al., 2018) suggests each new config from a density model
fitted to the largest budget at which enough configs have been scored, and a
fixed share of configs at random. Here the budgets are the epochs at which
``--scheduler asha`` or ``hyperband`` judges trials (their rungs and the last
epoch), so the scheduler stays the asynchronous one the search already has,
with its state kept across ``--resume``; this searcher keeps its own
observations in Tune's searcher checkpoint. Asynchronous BOHB of this kind
is what Syne Tune names BOHB; Ray's ``TuneBOHB`` instead needs the synchronous
``HyperBandForBOHB``, which pauses trials until a whole bracket is done, and
the unmaintained ``hpbandster``.

The density model is Optuna's multivariate TPE, over the space's define-by-run
form (``OptunaSpace``): a conditional parameter is modelled only where it is
active. Scores a trial reaches at other epochs, and NaN scores, are not used.
"""

from __future__ import annotations

import math
import pickle
import warnings
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from search_spaces import SearchSpace
from tuner.driver.space import OptunaSpace, optuna_distributions

RANDOM_FRACTION = 1 / 3  # BOHB's share of configs drawn at random, whatever the model says


class BohbSearch(Searcher):
    """New configs from TPE fitted at the largest rung with at least ``min_points`` scores; a third at random."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        metric: str,
        mode: str,
        seed: int,
        rungs: tuple[int, ...],
        points: list[dict] = (),  # type: ignore[assignment]
        priors: list[Any] = (),  # type: ignore[assignment]  # tuner.driver.warm.Prior: params, score, epochs
        min_points: int | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.define = OptunaSpace(space)  # suggests the searched parameters, conditional ones where active
        self.distributions = optuna_distributions(space)
        self.rungs = tuple(sorted(set(rungs)))
        searched = [p for p in space.params if p.kind != "fixed"]
        self.min_points = min_points or len(searched) + 1  # BOHB's N_min: the parameters searched, plus one
        self.points = [dict(p) for p in points]
        # trial id -> {"params": ..., "scores": {epoch: score}}; a prior (--warm-start) counts at the largest
        # rung it trained to (a trial stopped at 1 epoch is no full budget's observation)
        self.observations: dict[str, dict[str, Any]] = {}
        for i, (params, score, epochs) in enumerate(priors):
            reached = [r for r in self.rungs if r <= epochs]
            if reached:
                self.observations[f"prior-{i}"] = {"params": dict(params), "scores": {reached[-1]: float(score)}}
        self.rng = np.random.RandomState(seed)

    def suggest(self, trial_id: str) -> dict | None:
        params = self._sample(first=self.points.pop(0) if self.points else None)
        self.observations[trial_id] = {"params": dict(params), "scores": {}}
        return dict(params)

    def model_rung(self) -> int | None:
        """The largest rung at which at least ``min_points`` configs have a score; None while there is none."""
        for rung in reversed(self.rungs):
            if sum(rung in o["scores"] for o in self.observations.values()) >= self.min_points:
                return rung
        return None

    def _sample(self, *, first: dict[str, Any] | None = None) -> dict[str, Any]:
        """A config: ``first`` (a known-good point) with what it leaves out drawn at random, else from the model
        (or at random)."""
        import optuna

        rung = self.model_rung()
        seed = int(self.rng.randint(2**31 - 1))
        if first is not None or rung is None or self.rng.rand() < RANDOM_FRACTION:
            sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=seed)
            known: list[tuple[dict, float]] = []
        else:
            with warnings.catch_warnings():  # multivariate and group are marked experimental
                warnings.simplefilter("ignore")
                sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=0, multivariate=True, group=True,
                                                     consider_endpoints=True)  # fmt: skip
            known = [(o["params"], o["scores"][rung]) for o in self.observations.values() if rung in o["scores"]]
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.create_study(sampler=sampler, direction="maximize" if self.mode == "max" else "minimize")
            if first is not None:  # its values where it has them (a point may lack some: an override narrowed them)
                study.enqueue_trial(first, skip_if_exists=False)
            # Suggested from this space, or a warm start's configs already fitted to it (tuner.driver.warm).
            for params, score in known:
                study.add_trial(optuna.trial.create_trial(
                    params=params, distributions={k: self.distributions[k] for k in params}, value=score))  # fmt: skip
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trial = study.ask()
                self.define(trial)
            return dict(trial.params)
        finally:
            optuna.logging.set_verbosity(verbosity)

    def _record(self, trial_id: str, result: dict | None) -> None:
        if not result or trial_id not in self.observations:
            return
        epoch, score = result.get("epoch"), result.get(self.metric)
        if epoch in self.rungs and isinstance(score, int | float) and math.isfinite(score):
            self.observations[trial_id]["scores"][int(epoch)] = float(score)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._record(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        # Tune hands the report a scheduler stopped a trial at to this call alone.
        if not error:
            self._record(trial_id, result)

    def save(self, checkpoint_path: str) -> None:
        state = {"observations": self.observations, "points": self.points, "rng": self.rng.get_state()}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.observations, self.points = state["observations"], state["points"]
        self.rng.set_state(state["rng"])

