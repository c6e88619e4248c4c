"""The report of a finished search, from the files a search leaves (written here as a search writes them)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from results.cost import asha_rungs as rungs
from results.cost import search_cost
from results.report import make_report
from results.view import importances, load_view
from tests.conftest import ROOT

PNG = b"\x89PNG\r\n\x1a\n"


def _write_search(folder, *, n=8, max_epochs=4, seed=0):
    """n trials of a search over lr (which matters) and batch_size (which does not), ASHA stopping some."""
    rng = np.random.default_rng(seed)
    rows, histories = [], {}
    for i in range(n):
        trial_id, lr, batch = f"t{i}", float(10 ** rng.uniform(-3, -1)), int(rng.choice([32, 64]))
        quality = 1 - abs(np.log10(lr) + 2) / 2  # best at lr 0.01
        epochs = max_epochs if i % 2 == 0 else 1
        scores = [quality * (1 - 0.5 ** (e + 1)) for e in range(epochs)]
        path = folder / f"train_{trial_id}"
        path.mkdir(parents=True)
        history = pd.DataFrame({"epoch": range(1, epochs + 1), "val_acc": scores, "trial_id": trial_id,
                                "time_total_s": [5.0 * (e + 1) for e in range(epochs)],
                                "reported_at": [1000 + 3 * i + 5.0 * (e + 1) for e in range(epochs)]})  # fmt: skip
        history.to_csv(path / "progress.csv", index=False)
        histories[trial_id] = history
        rows.append({"trial_id": trial_id, "status": "completed" if epochs == max_epochs else "stopped",
                     "epochs": epochs, "seconds": 5.0 * epochs, "val_acc": max(scores), "gpu_seconds": 0.0,
                     "cpu_seconds": 5.0 * epochs, "config/lr": lr, "config/batch_size": batch,
                     "config/model": "cnn" if i % 3 else "resnet", "path": str(path)})  # fmt: skip
    pd.DataFrame(rows).sort_values("val_acc", ascending=False).to_csv(folder / "results.csv", index=False)
    settings = {"space_name": "toy", "metric": "val_acc", "mode": "max",
                "budget": {"num_samples": n, "max_epochs": max_epochs, "grace_period": 1, "reduction_factor": 2},
                "resources": {"gpus_per_trial": 0.0, "cpus_per_trial": 1.0}, "run": {"name": "toy"}}  # fmt: skip
    (folder / "search.json").write_text(json.dumps(settings))
    best = max(rows, key=lambda r: r["val_acc"])
    spent = search_cost(rows, histories, metric="val_acc", mode="max", gpus_per_trial=0.0, cpus_per_trial=1.0,
                        num_samples=n, max_epochs=max_epochs)  # fmt: skip
    record = {"trial_id": best["trial_id"], "val_acc": best["val_acc"], "test_acc": 0.5,
              "test_metrics": ["test_acc"], "cost": spent, "confusion_matrix": [[5, 1, 0], [2, 6, 0], [0, 1, 7]],
              "classes": ["a", "b", "c"]}  # fmt: skip
    (folder / "best_config.json").write_text(json.dumps(record))
    return folder


def test_asha_rungs():
    assert rungs(10, 3, 3) == [3, 9] and rungs(4, 1, 2) == [1, 2] and rungs(4, 4, 2) == []


def test_importance_finds_the_parameter_that_matters(tmp_path):
    view = load_view(str(_write_search(tmp_path, n=24)))
    scores = importances(view)
    assert set(scores) == {"lr", "batch_size", "model"} and max(scores, key=scores.get) == "lr"
    assert sum(scores.values()) == pytest.approx(1.0)


def test_the_report_holds_every_picture_and_opens_from_disk(tmp_path):
    folder = _write_search(tmp_path / "toy")
    make_report(str(folder))
    report = folder / "report"
    pngs = ["learning_curves.png", "best_so_far.png", "parallel_coordinates.png", "param_importance.png",
            "confusion_matrix.png"]  # fmt: skip
    import matplotlib.image

    for name in pngs:
        assert (report / name).read_bytes().startswith(PNG), name
        pixels = matplotlib.image.imread(report / name)
        assert pixels.shape[0] > 200 and (pixels[..., :3] < 0.5).mean() > 0.01, name  # drawn, not a blank canvas
    page = (report / "report.html").read_text()
    assert page.count("<script type=\"text/javascript\">/**") <= 1  # plotly.js inlined once
    assert "<script src=" not in page and "<link " not in page  # nothing to fetch: it opens from disk, offline
    for needed in ("Learning curves", "Best so far", "Parallel coordinates", "Parameter importance",
                   "Confusion matrix", "What it cost", "Leaderboard", "t0", "val_acc", "epochs trained"):  # fmt: skip
        assert needed in page, needed


def test_the_report_command(tmp_path):
    folder = _write_search(tmp_path / "toy")
    done = subprocess.run([sys.executable, "-m", "results", "report", str(folder)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "report.html" in done.stdout and (folder / "report" / "report.html").exists()
    missing = subprocess.run([sys.executable, "-m", "results", "report", str(tmp_path / "none")], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 2 and "no search folder" in missing.stderr
