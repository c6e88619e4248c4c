"""A search space (plain data) as Ray Tune's ``param_space``."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

from ray import tune

from results.table import EARLY_END_FLAGS
from search_spaces import Objective, Param, SearchSpace, condition_holds

logger = logging.getLogger(__name__)


def domain(p: Param) -> Any:
    """The parameter's distribution as a Tune domain (a fixed value as itself)."""
    if p.kind == "loguniform":
        return tune.loguniform(p.low, p.high)
    if p.kind == "uniform":
        return tune.uniform(p.low, p.high)
    if p.kind == "int":
        return tune.randint(int(p.low), int(p.high) + 1)  # Tune's upper bound is exclusive
    if p.kind == "choice":
        return tune.choice(list(p.choices))
    return p.value


def param_space(space: SearchSpace, *, max_epochs: int, seed: int, sampled: bool = True) -> dict[str, Any]:
    """Every trial's config: sampled params, the space's constants, the epoch budget and the seed.

    ``epochs`` is the trial's full budget (ASHA's ``max_t``): the lr schedule is
    laid over it, whether or not ASHA lets the trial get there. With ``sampled``
    False only the fixed values are given (Optuna suggests the rest, see
    ``optuna_space``). A conditional parameter is sampled like the others by
    random search; the trial drops it where its condition does not hold.
    """
    params = space.params if sampled else [p for p in space.params if p.kind == "fixed"]
    config: dict[str, Any] = {p.name: domain(p) for p in params}
    config.update(space.constants)
    config.update(epochs=max_epochs, seed=seed)
    return config


class OptunaSpace:
    """Optuna's define-by-run search space: a conditional parameter is suggested only where it is active.

    Optuna then learns from the values a trial really used; fixed values and the
    space's constants come from ``param_space(..., sampled=False)``. A class, not
    a closure, so that Tune can pickle the searcher with the search's state.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.searched = [p for p in space.params if p.kind != "fixed"]  # parents before children
        self.fixed = {p.name: p.value for p in space.params if p.kind == "fixed"}

    def __call__(self, trial: Any) -> None:
        chosen: dict[str, Any] = dict(self.fixed)
        for p in self.searched:
            if not condition_holds(p.when, chosen):
                continue  # inactive: never suggested, never reaches the trial
            if p.kind in ("loguniform", "uniform"):
                chosen[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.kind == "loguniform")
            elif p.kind == "int":
                chosen[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high))
            else:
                chosen[p.name] = trial.suggest_categorical(p.name, list(p.choices))


def optuna_distributions(space: SearchSpace) -> dict[str, Any]:
    """Each searched parameter as the Optuna distribution ``OptunaSpace`` suggests it from."""
    import optuna

    out: dict[str, Any] = {}
    for p in space.params:
        if p.kind in ("loguniform", "uniform"):
            out[p.name] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.kind == "loguniform")
        elif p.kind == "int":
            out[p.name] = optuna.distributions.IntDistribution(int(p.low), int(p.high))
        elif p.kind == "choice":
            out[p.name] = optuna.distributions.CategoricalDistribution(list(p.choices))
    return out


def optuna_searcher(
    space: SearchSpace,
    *,
    metric: str,
    mode: str,
    seed: int,
    max_epochs: int,
    points: list[dict],
    priors: list[Any],
    objectives: Sequence[Objective] = (),
) -> Any:
    """Ray's ``OptunaSearch`` over ``space`` (define-by-run), trying ``points`` first, knowing ``priors`` already.

    ``priors`` are (parameters, score, epochs) of trials run before
    (``--warm-start``): they enter Optuna's study as finished trials (pruned at
    their last epoch where they trained less than ``max_epochs``), so TPE's
    first suggestions already follow them. Optuna learns what trials really reached: each epoch's
    score is an intermediate value (not an epoch scored more cheaply, whose
    score is NaN), a trial the scheduler stopped before ``max_epochs`` is
    PRUNED (Ray's own searcher says COMPLETE, so TPE would compare a 2-epoch
    score with full-budget ones), and one that failed, diverged or ran out of
    memory is FAIL.

    With further ``objectives`` (a trade-off), the study is multi-objective
    (Optuna's TPE over every objective's score at a trial's last epoch). Optuna
    takes no intermediate values there: a trial stopped early is PRUNED without
    them, which its TPE counts among the worse configs; the warm start's
    ``priors`` are not told (their configs are still tried first, as ``points``).
    """
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    pruned, failed = optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL

    class Search(OptunaSearch):  # _ot_study, _ot_trials, _completed_trials: Ray 2.60's OptunaSearch
        def _setup_study(self, mode: Any) -> None:
            super()._setup_study(mode)
            for params, value, epochs in [] if several else priors:
                distributions_of = {k: distributions[k] for k in params}
                if epochs < max_epochs:  # stopped early: pruned, as a trial of this search would be
                    trial = optuna.trial.create_trial(state=pruned, params=params, distributions=distributions_of,
                                                      intermediate_values={epochs: value})  # fmt: skip
                else:
                    trial = optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=value,
                                                      params=params, distributions=distributions_of)  # fmt: skip
                self._ot_study.add_trial(trial)

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if _scored(result.get(metric)):
                super().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            state = optuna_outcome(result, error=error, metrics=metrics, max_epochs=max_epochs)
            if state is None or trial_id in self._completed_trials or trial_id not in self._ot_trials:
                super().on_trial_complete(trial_id, result, error)
                return
            ot_trial = self._ot_trials[trial_id]
            if state == "pruned" and not several:  # a multi-objective study takes no intermediate values
                # Tune hands the report the scheduler stopped it at to on_trial_complete alone: it is the
                # trial's last intermediate value, which Optuna gives a PRUNED trial (as its own pruners do).
                step = int(result.get("training_iteration", result.get("epoch", 0)))
                with warnings.catch_warnings():  # a step told already (a resumed driver) is ignored, with a warning
                    warnings.simplefilter("ignore")
                    ot_trial.report(float(result[metric]), step)
            try:
                self._ot_study.tell(ot_trial, state=pruned if state == "pruned" else failed)
            except Exception as e:  # as Ray's own searcher: a study that refuses it loses one trial, not the search
                logger.warning("Optuna refused trial %s: %s", trial_id, e)
            self._completed_trials.add(trial_id)

    distributions = optuna_distributions(space)
    several = bool(objectives)
    metrics = [metric, *(o.metric for o in objectives)]
    modes = [mode, *(o.mode for o in objectives)]
    return Search(space=OptunaSpace(space), metric=metrics if several else metric, mode=modes if several else mode,
                  seed=seed, points_to_evaluate=points or None)  # fmt: skip


def _scored(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def optuna_outcome(result: dict | None, *, error: bool, metrics: Sequence[str], max_epochs: int) -> str | None:
    """How a finished trial ends in Optuna's study: "failed", "pruned", or None (COMPLETE, with its last scores).

    ``metrics``: the search's objectives, the metric first; a trial missing one of them has failed."""
    result = result or {}
    if error or any(result.get(flag) for flag in EARLY_END_FLAGS) or not all(_scored(result.get(m)) for m in metrics):
        return "failed"
    if int(result.get("epoch", max_epochs)) < max_epochs:
        return "pruned"
    return None


def reference_point(space: SearchSpace) -> dict[str, Any]:
    """The space's known-good values that still lie inside its (possibly overridden) bounds.

    Searchers try this point first; parameters left out of it are sampled as usual.
    """
    return {k: v for k, v in space.reference.items() if space.param(k).contains(v)}
