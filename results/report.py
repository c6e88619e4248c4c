"""A finished search in pictures: PNGs for MLflow, and one self-contained HTML report that opens from disk.

python -m results report ray_results/<name>

Everything is read from the search's folder (``search.json``, ``results.csv``,
``best_config.json`` and each trial's ``progress.csv``), so a resumed or synced
search gets the same report. No Ray, no MLflow: matplotlib draws the PNGs,
plotly the HTML (its script inlined once), Optuna's fANOVA the importances.
"""

from __future__ import annotations

import functools
import html
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from results import cost, storage
from results.record import SearchRecord
from results.record import read as read_record
from results.table import (
    BEST_CONFIG,
    RESULTS_CSV,
    ResultsError,
    leaderboard,
    load,
    load_histories,
    ranked,
    scored_epochs,
    seconds_spent,
)

REPORT_DIR = "report"
HTML = "report.html"
INACTIVE = "inactive"
STOPPED_STYLE = {"color": "#9e9e9e", "linestyle": "--", "alpha": 0.7}


@dataclass
class SearchView:
    """What the report draws, read back from a search's folder."""

    name: str
    metric: str
    mode: str
    frame: pd.DataFrame  # results.csv
    histories: dict[str, pd.DataFrame]  # each trial's progress.csv
    record: SearchRecord  # search.json
    best: dict[str, Any] | None  # best_config.json

    @property
    def settings(self) -> dict[str, Any]:
        """``search.json`` as written."""
        return dict(self.record.saved)

    @property
    def gpus_per_trial(self) -> float:
        return self.record.gpus_per_trial

    @property
    def spend(self) -> tuple[float, str]:
        """What the x axes count: GPU-seconds where trials had GPUs, else trial-seconds."""
        return (self.gpus_per_trial, "GPU-seconds") if self.gpus_per_trial else (1.0, "trial-seconds")

    @property
    def scheduler(self) -> str:
        return self.record.scheduler

    @property
    def rungs(self) -> list[int]:
        """The epochs at which the scheduler judged the trials (PBT: where it could exploit them)."""
        b = self.record.budget
        if b is None:
            return []
        return cost.scheduler_rungs(self.scheduler, max_epochs=b.max_epochs, grace_period=b.grace_period,
                                    reduction_factor=b.reduction_factor)  # fmt: skip

    @property
    def rungs_label(self) -> str:
        return {"pbt": "PBT's exploits", "median": "the median rule's grace period"}.get(
            self.scheduler, f"{'HyperBand' if self.scheduler == 'hyperband' else 'ASHA'}'s rungs"
        )

    @functools.cached_property
    def curve(self) -> pd.DataFrame:
        """The search's best score so far after every report, with what it had spent (``results.cost``)."""
        return cost.progress_curve(self.histories, metric=self.metric, mode=self.mode, gpus_per_trial=self.spend[0])

    def searched(self) -> list[str]:
        """The parameters that varied over the trials."""
        cols = [c for c in self.frame.columns if c.startswith("config/")]
        return [c.removeprefix("config/") for c in cols if self.frame[c].nunique(dropna=False) > 1]


def load_view(folder: str, *, histories: dict[str, pd.DataFrame] | None = None) -> SearchView:
    """The search in ``folder``; ``histories`` (trial id -> per-epoch reports) when the caller holds them already."""
    folder = str(folder)
    frame = load(folder)
    record = read_record(folder, missing_ok=True)
    best_path = storage.join(folder, BEST_CONFIG)
    best = json.loads(storage.read_text(best_path)) if storage.exists(best_path) else None
    if histories is None:
        histories = load_histories(frame)
    return SearchView(record.name or Path(folder).name, record.metric, record.mode, frame, histories, record,
                      best)  # fmt: skip


def _curves(view: SearchView) -> list[dict[str, Any]]:
    """Each trial's learning curve: epochs, scores, what it had spent, and whether its scheduler stopped it."""
    status = dict(zip(view.frame["trial_id"].astype(str), view.frame["status"], strict=True))
    rate, _ = view.spend
    curves = []
    for trial_id, history in view.histories.items():
        h = scored_epochs(history, view.metric)
        if not len(h):
            continue
        curves.append({"trial_id": trial_id, "status": status.get(trial_id, ""), "epoch": h["epoch"].tolist(),
                       "value": h[view.metric].astype(float).tolist(),
                       "spent": (rate * seconds_spent(history).loc[h.index]).tolist()})  # fmt: skip
    return curves


def importances(view: SearchView) -> dict[str, float] | None:
    """Parameter importances by Optuna's fANOVA on the scored trials; None when there is too little to learn from."""
    import optuna

    searched = [p for p in view.searched() if p not in ("seed",)]
    scored = view.frame.dropna(subset=[view.metric]) if view.metric in view.frame else view.frame.iloc[0:0]
    if len(searched) < 2 or len(scored) < 3:
        return None
    distributions = {}
    for name in searched:
        values = [v for v in scored[f"config/{name}"] if v != INACTIVE and not _missing(v)]
        numeric = [float(v) for v in values if _is_number(v)]
        if values and len(numeric) == len(values):
            low, high = min(numeric), max(numeric)
            log = low > 0 and high / low > 20
            distributions[name] = optuna.distributions.FloatDistribution(low, high if high > low else low + 1e-12,
                                                                         log=log)  # fmt: skip
        elif values:
            distributions[name] = optuna.distributions.CategoricalDistribution(sorted({str(v) for v in values}))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if view.mode == "max" else "minimize")
    for row in scored.to_dict("records"):
        params, dists = {}, {}
        for name, dist in distributions.items():
            v = row[f"config/{name}"]
            if v == INACTIVE or _missing(v):
                continue
            params[name] = float(v) if isinstance(dist, optuna.distributions.FloatDistribution) else str(v)
            dists[name] = dist
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(row[view.metric])))
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except (RuntimeError, ValueError):  # e.g. no parameter that every trial had
        return None


def _number(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return not isinstance(v, bool)


# --- PNGs (matplotlib) ---------------------------------------------------------------


def _figure(width: float = 8, height: float = 4.5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def png_learning_curves(view: SearchView, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (by_epoch, by_spend) = plt.subplots(1, 2, figsize=(12, 4.5))
    _, unit = view.spend
    curves = _curves(view)
    for c in curves:
        style = STOPPED_STYLE if c["status"] != "completed" else {}
        label = c["trial_id"] + ("" if c["status"] == "completed" else f" ({c['status']})")
        by_epoch.plot(c["epoch"], c["value"], marker="o", markersize=3, label=label, **style)
        by_spend.plot(c["spent"], c["value"], marker="o", markersize=3, **style)
    for rung in view.rungs:
        by_epoch.axvline(rung, color="#d62728", alpha=0.3, linewidth=1)
    by_epoch.set(xlabel=f"epoch (red lines: {view.rungs_label})", ylabel=view.metric, title="learning curves")
    by_spend.set(xlabel=f"{unit} the trial had used", ylabel=view.metric, title=f"learning curves against {unit}")
    if 0 < len(curves) <= 12:  # no curve (every trial failed before its first epoch): no legend
        by_epoch.legend(fontsize=7)
    _save(fig, path)


def png_best_so_far(view: SearchView, path: Path) -> None:
    _, unit = view.spend
    curve = view.curve
    fig, ax = _figure()
    ax.scatter(curve["gpu_seconds"], curve["value"], s=10, color="#9e9e9e", label="every report")
    ax.step(curve["gpu_seconds"], curve["best"], where="post", color="#1f77b4", label="best so far")
    ax.set(xlabel=f"{unit} spent by the search", ylabel=view.metric, title="the search's best so far")
    ax.legend()
    _save(fig, path)


def png_parallel_coordinates(view: SearchView, path: Path) -> None:
    import matplotlib.pyplot as plt

    names = view.searched()
    frame = view.frame.dropna(subset=[view.metric]) if view.metric in view.frame else view.frame.iloc[0:0]
    fig, ax = _figure(max(6, 1.6 * (len(names) + 1)), 4.5)
    axes = [*names, view.metric]
    scaled, ticks = {}, {}
    for name in axes:
        col = frame[view.metric] if name == view.metric else frame[f"config/{name}"]
        numeric = pd.to_numeric(col, errors="coerce")
        if numeric.notna().all() and len(col):
            low, high = float(numeric.min()), float(numeric.max())
            log = low > 0 and high / low > 20  # a learning rate, a weight decay: on a log axis
            value, lo, hi = (numeric, low, high)
            if log:
                value, lo, hi = numeric.map(math.log10), math.log10(low), math.log10(high)
            scaled[name] = (value - lo) / (hi - lo) if hi > lo else value * 0 + 0.5
            ticks[name] = [(0.0, f"{low:.3g}"), (1.0, f"{high:.3g}")] if hi > lo else [(0.5, f"{low:.3g}")]
        else:  # categories (and "inactive") in sorted order
            cats = sorted({str(v) for v in col})
            places = {c: (i + 0.5) / len(cats) for i, c in enumerate(cats)}
            scaled[name] = col.astype(str).map(places)
            ticks[name] = [(y, c) for c, y in places.items()]
    colour = plt.get_cmap("viridis" if view.mode == "max" else "viridis_r")
    for i in range(len(frame)):
        ys = [float(scaled[n].iloc[i]) for n in axes]
        ax.plot(range(len(axes)), ys, color=colour(ys[-1]), alpha=0.8)
    for x, name in enumerate(axes):
        ax.axvline(x, color="black", linewidth=0.8)
        for y, text in ticks[name]:
            ax.annotate(text, (x, y), xytext=(3, 0), textcoords="offset points", fontsize=7, va="center")
    ax.set_xticks(range(len(axes)), axes, rotation=20)
    ax.set_yticks([])
    ax.set(title=f"parameters of every trial, coloured by {view.metric} (scaled per axis)")
    _save(fig, path)


def png_importance(scores: dict[str, float] | None, path: Path) -> bool:
    if not scores:
        return False
    fig, ax = _figure(7, 0.5 * len(scores) + 1.5)
    names = list(scores)[::-1]
    ax.barh(names, [scores[n] for n in names], color="#1f77b4")
    ax.set(xlabel="importance (Optuna's fANOVA, sums to 1)", title="what mattered")
    _save(fig, path)
    return True


def png_confusion(best: dict[str, Any] | None, path: Path) -> bool:
    matrix = (best or {}).get("confusion_matrix")
    if not matrix:
        return False
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    classes = (best or {}).get("classes") or [str(i) for i in range(len(m))]
    fig, ax = _figure(0.45 * len(m) + 3, 0.45 * len(m) + 2.5)
    rows = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(m)), classes, rotation=60, fontsize=7)
    ax.set_yticks(range(len(m)), classes, fontsize=7)
    for i in range(len(m)):
        for j in range(len(m)):
            if m[i, j]:
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=6,
                        color="white" if rows[i, j] > 0.5 else "black")  # fmt: skip
    ax.set(xlabel="predicted", ylabel="true", title="the best trial on the test set")
    _save(fig, path)
    return True


# --- the HTML report (plotly) ---------------------------------------------------------


def _plotly_figures(view: SearchView, scores: dict[str, float] | None) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go

    figures = []
    rate, unit = view.spend
    curves = _curves(view)
    fig = go.Figure()
    for c in curves:
        dash = None if c["status"] == "completed" else "dash"
        fig.add_trace(go.Scatter(x=c["epoch"], y=c["value"], mode="lines+markers", line={"dash": dash},
                                 name=f"{c['trial_id']} ({c['status']})"))  # fmt: skip
    for rung in view.rungs:
        fig.add_vline(x=rung, line_color="red", opacity=0.3)
    fig.update_layout(title=f"Learning curves (dashed: stopped early; red: {view.rungs_label})", xaxis_title="epoch",
                      yaxis_title=view.metric)  # fmt: skip
    figures.append(("Learning curves", fig))
    fig = go.Figure()
    for c in curves:
        dash = None if c["status"] == "completed" else "dash"
        fig.add_trace(go.Scatter(x=c["spent"], y=c["value"], mode="lines+markers", line={"dash": dash},
                                 name=c["trial_id"]))  # fmt: skip
    fig.update_layout(title=f"Learning curves against each trial's {unit}", xaxis_title=unit, yaxis_title=view.metric)
    figures.append((f"Learning curves against {unit}", fig))
    curve = view.curve
    fig = go.Figure([go.Scatter(x=curve["gpu_seconds"], y=curve["value"], mode="markers", name="every report",
                                marker={"color": "#9e9e9e"}),
                     go.Scatter(x=curve["gpu_seconds"], y=curve["best"], mode="lines", line_shape="hv",
                                name="best so far")])  # fmt: skip
    fig.update_layout(title="The search's best so far", xaxis_title=f"{unit} spent", yaxis_title=view.metric)
    figures.append(("Best so far", fig))
    names = view.searched()
    frame = view.frame.dropna(subset=[view.metric]) if view.metric in view.frame else view.frame.iloc[0:0]
    if names and len(frame):
        dims = []
        for name in names:
            col = frame[f"config/{name}"]
            numeric = pd.to_numeric(col, errors="coerce")
            if numeric.notna().all():
                dims.append({"label": name, "values": numeric.tolist()})
            else:
                cats = sorted({str(v) for v in col})
                dims.append({"label": name, "values": [cats.index(str(v)) for v in col],
                             "tickvals": list(range(len(cats))), "ticktext": cats})  # fmt: skip
        dims.append({"label": view.metric, "values": frame[view.metric].tolist()})
        scale = "Viridis" if view.mode == "max" else "Viridis_r"
        fig = go.Figure(go.Parcoords(line={"color": frame[view.metric].tolist(), "colorscale": scale,
                                           "showscale": True}, dimensions=dims))  # fmt: skip
        fig.update_layout(title=f"Parameters of every trial, coloured by {view.metric}")
        figures.append(("Parallel coordinates", fig))
    if scores:
        names = list(scores)[::-1]
        fig = go.Figure(go.Bar(x=[scores[n] for n in names], y=names, orientation="h"))
        fig.update_layout(title="Parameter importance (Optuna's fANOVA)", xaxis_title="importance")
        figures.append(("Parameter importance", fig))
    matrix = (view.best or {}).get("confusion_matrix")
    if matrix:
        classes = (view.best or {}).get("classes") or [str(i) for i in range(len(matrix))]
        fig = go.Figure(go.Heatmap(z=matrix, x=classes, y=classes, colorscale="Blues", text=matrix,
                                   texttemplate="%{text}"))  # fmt: skip
        fig.update_layout(title="The best trial on the test set", xaxis_title="predicted", yaxis_title="true",
                          yaxis_autorange="reversed")  # fmt: skip
        figures.append(("Confusion matrix", fig))
    return figures


def html_report(view: SearchView, scores: dict[str, float] | None) -> str:
    """One HTML file: the plots (plotly's script inlined once), the cost, the leaderboard and the settings."""
    parts = []
    for i, (title, fig) in enumerate(_plotly_figures(view, scores)):
        block = fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False)
        parts.append(f"<section><h2>{html.escape(title)}</h2>{block}</section>")
    spent = (view.best or {}).get("cost")
    cost_text = cost.describe(spent, metric=view.metric) if spent else "(no best trial: no cost recorded)"
    board = leaderboard(ranked(view.frame, metric=view.metric, mode=view.mode), metric=view.metric,
                        mode=view.mode, top=len(view.frame))  # fmt: skip
    best = view.best or {}
    headline = (f"best trial {best.get('trial_id')}: {view.metric} {_number(best.get(view.metric))}"
                + "".join(f", {k} {_number(best.get(k))}" for k in best.get("test_metrics", ())))  # fmt: skip
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Search {html.escape(view.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}
section{{margin-bottom:2em}}</style></head><body>
<h1>Search {html.escape(view.name)}</h1>
<p>{html.escape(headline)}</p>
<h2>What it cost</h2><pre>{html.escape(cost_text)}</pre>
{"".join(parts)}
<h2>Leaderboard</h2><pre>{html.escape(board)}</pre>
<h2>Settings</h2><pre>{html.escape(json.dumps(view.settings, indent=2))}</pre>
</body></html>
"""


def make_report(folder: str, *, histories: dict[str, pd.DataFrame] | None = None) -> Path:
    """Draw the search in ``folder`` into ``<folder>/report/``; returns a local folder holding the files.

    That is ``<folder>/report`` itself for a local search; for a search in object
    storage, a temporary folder whose files are then copied there.
    """
    view = load_view(folder, histories=histories)
    remote = storage.is_uri(str(folder))
    local = Path(tempfile.mkdtemp(prefix="hpsearch-report-")) if remote else Path(folder) / REPORT_DIR
    local.mkdir(parents=True, exist_ok=True)
    scores = importances(view)
    png_learning_curves(view, local / "learning_curves.png")
    png_best_so_far(view, local / "best_so_far.png")
    if view.searched():
        png_parallel_coordinates(view, local / "parallel_coordinates.png")
    png_importance(scores, local / "param_importance.png")
    png_confusion(view.best, local / "confusion_matrix.png")
    (local / HTML).write_text(html_report(view, scores))
    if remote:
        for path in sorted(local.iterdir()):
            storage.write_bytes(storage.join(str(folder), REPORT_DIR, path.name), path.read_bytes())
    return local


__all__ = ["HTML", "REPORT_DIR", "RESULTS_CSV", "ResultsError", "SearchView", "importances", "load_view",
           "make_report"]  # fmt: skip
