"""A finished search in pictures: PNGs for MLflow, and one self-contained HTML report that opens from disk.

python -m results report ray_results/<name>

What is drawn is read back by ``results.view``, so a resumed or synced search
gets the same report. No Ray, no MLflow: matplotlib draws the PNGs, plotly the
HTML (its script inlined once).
"""

from __future__ import annotations

import html
import json
import math
import tempfile
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from results import cost, storage
from results.table import RESULTS_CSV, ResultsError, leaderboard, ranked
from results.view import SearchView, importances, load_view, trial_curves
from search_spaces import PARETO

REPORT_DIR = "report"
HTML = "report.html"
STOPPED_STYLE = {"color": "#9e9e9e", "linestyle": "--", "alpha": 0.7}


def _number(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


# --- PNGs (matplotlib) ---------------------------------------------------------------


def load_plotting() -> threading.Thread:
    """Import matplotlib (about 1 s) in a thread of its own: a search calls it as its trials start, so the
    report is drawn at once when they end."""

    def load() -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401

    thread = threading.Thread(target=load, name="load-matplotlib", daemon=True)
    thread.start()
    return thread


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
    curves = trial_curves(view)
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


def trade_offs(view: SearchView) -> list[tuple[str, str, pd.DataFrame]]:
    """For a search over a trade-off: (the metric, a further objective, the trials that have both, with ``front``
    True for those on the Pareto front), one per further objective; [] for a search of one objective."""
    out = []
    if PARETO not in view.frame:
        return out
    front = view.frame[PARETO].astype(str).str.lower() == "true"
    for o in view.record.all_objectives()[1:]:
        if o.metric not in view.frame or view.metric not in view.frame:
            continue
        pairs = view.frame[["trial_id", view.metric, o.metric]].apply(pd.to_numeric, errors="coerce")
        pairs = pairs.assign(trial_id=view.frame["trial_id"].astype(str), front=front)
        out.append((view.metric, o.metric, pairs.dropna(subset=[view.metric, o.metric]).sort_values(o.metric)))
    return out


def png_trade_offs(view: SearchView, path: Path) -> bool:
    """Each further objective against the metric: every trial, the front joined up, the chosen trial ringed."""
    pairs = trade_offs(view)
    if not pairs:
        return False
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 4.5), squeeze=False)
    chosen = str((view.best or {}).get("trial_id"))
    for ax, (metric, other, frame) in zip(axes[0], pairs, strict=True):
        ax.scatter(frame[other], frame[metric], color="#9e9e9e", s=18, label="trial")
        on = frame[frame["front"]]
        if len(pairs) == 1:  # two objectives: the front is a staircase in this plane
            ax.plot(on[other], on[metric], color="#d62728", marker="o", drawstyle="steps-post", label="Pareto front")
        else:  # more: this plane shows the front's trials, not a front of its own
            label = f"on the Pareto front ({len(pairs) + 1} objectives)"
            ax.scatter(on[other], on[metric], color="#d62728", label=label)
        picked = frame[frame["trial_id"] == chosen]
        ax.scatter(picked[other], picked[metric], s=160, facecolors="none", edgecolors="black", label="registered")
        for b in view.record.rule().where:
            if b.metric == other:
                ax.axvline(b.value, color="black", linestyle=":", label=b.describe())
        ax.set_xlabel(other)
        ax.set_ylabel(metric)
        ax.legend()
    fig.suptitle(f"Trade-offs ({(view.best or {}).get('select') or 'no trial registered'})")
    _save(fig, path)
    return True


# --- the HTML report (plotly) ---------------------------------------------------------


def _plotly_figures(view: SearchView, scores: dict[str, float] | None) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go

    figures = []
    rate, unit = view.spend
    curves = trial_curves(view)
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
    chosen = str((view.best or {}).get("trial_id"))
    pairs = trade_offs(view)
    for metric, other, frame in pairs:
        on = frame[frame["front"]]
        picked = frame[frame["trial_id"] == chosen]
        fig = go.Figure([
            go.Scatter(x=frame[other], y=frame[metric], mode="markers", name="trial", text=frame["trial_id"],
                       marker={"color": "#9e9e9e"}),
            go.Scatter(x=on[other], y=on[metric], mode="lines+markers" if len(pairs) == 1 else "markers",
                       line_shape="hv", name="Pareto front" if len(pairs) == 1 else "on the Pareto front",
                       text=on["trial_id"], marker={"color": "#d62728"}),
            go.Scatter(x=picked[other], y=picked[metric], mode="markers", name="registered", text=picked["trial_id"],
                       marker={"size": 16, "symbol": "circle-open", "color": "black"}),
        ])  # fmt: skip
        for b in view.record.rule().where:
            if b.metric == other:
                fig.add_vline(x=b.value, line_dash="dot", annotation_text=b.describe())
        rule = (view.best or {}).get("select") or "no trial met the select rule"
        fig.update_layout(title=f"Trade-off: {metric} against {other} (registered: {rule})", xaxis_title=other,
                          yaxis_title=metric)  # fmt: skip
        figures.append((f"Trade-off with {other}", fig))
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
                        mode=view.mode, top=len(view.frame), objectives=tuple(view.record.objectives))  # fmt: skip
    best = view.best or {}
    headline = (f"best trial {best.get('trial_id')}: {view.metric} {_number(best.get(view.metric))}"
                + "".join(f", {k} {_number(best.get(k))}" for k in best.get("test_metrics", ()))
                + (f"; chosen by the space's select rule: {best['select']}" if best.get("select") else ""))  # fmt: skip
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
    png_trade_offs(view, local / "trade_offs.png")
    (local / HTML).write_text(html_report(view, scores))
    if remote:
        for path in sorted(local.iterdir()):
            storage.write_bytes(storage.join(str(folder), REPORT_DIR, path.name), path.read_bytes())
    return local


__all__ = ["HTML", "REPORT_DIR", "RESULTS_CSV", "ResultsError", "make_report"]
