"""The learning-curve simulator (bench/simulate.py): a table replayed through the project's schedulers and
searchers, deterministically, and bench/efficiency.py --table on it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import simulate  # noqa: E402

from search_spaces import Budget  # noqa: E402

EPOCHS = 9
BUDGET = Budget(num_samples=8, max_epochs=EPOCHS, grace_period=1, reduction_factor=3)


def write_table(folder: Path, *, configs: int = 40, seed: int = 0) -> Path:
    """A small table in record_curves.py's format: the tabular example's space, curves that rise and level off."""
    rng = np.random.default_rng(seed)
    raw = yaml.safe_load((ROOT / "examples" / "tabular" / "space.yaml").read_text())
    raw.pop("reference")
    raw["constants"] = {"target": "target", "problem": "classification"}
    raw["budget"] = {"num_samples": configs, "max_epochs": EPOCHS, "grace_period": 1, "reduction_factor": 3}
    rows = []
    for i in range(configs):
        layers = int(rng.choice([1, 2, 3]))
        config = {"lr": float(np.exp(rng.uniform(np.log(3e-4), np.log(3e-2)))),
                  "weight_decay": float(np.exp(rng.uniform(np.log(1e-5), np.log(1e-1)))),
                  "hidden": int(rng.choice([32, 64, 128])), "layers": layers,
                  "batch_size": int(rng.choice([64, 128, 256])),
                  "dropout": float(rng.uniform(0, 0.3)) if layers > 1 else "inactive"}  # fmt: skip
        ceiling, pace = rng.uniform(0.6, 0.97), rng.uniform(0.5, 6)
        for epoch in range(1, EPOCHS + 1):
            score = ceiling * (1 - math.exp(-epoch / pace)) + rng.normal(0, 0.005)
            rows.append({"config": i, **config, "epoch": epoch, "val_acc": score, "val_loss": 1 - score,
                         "seconds": 0.05 * config["batch_size"] / 64 + rng.uniform(0, 0.01)})  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / simulate.CURVES, index=False)
    provenance = {"metric": "val_acc", "mode": "max", "max_epochs": EPOCHS, "space": yaml.safe_dump(raw),
                  "params": ["lr", "weight_decay", "hidden", "layers", "dropout", "batch_size"]}  # fmt: skip
    (folder / simulate.PROVENANCE).write_text(json.dumps(provenance))
    return folder


@pytest.fixture(scope="module")
def curves(tmp_path_factory: pytest.TempPathFactory) -> simulate.Curves:
    return simulate.load(write_table(tmp_path_factory.mktemp("table")))


def targets_of(curves: simulate.Curves) -> dict[str, float]:
    best = curves.best_scores()
    return {"target": float(np.percentile(best, 75)), "near best": float(best.max()) - 0.005}


def replay(curves: simulate.Curves, method: simulate.Method, seed: int) -> dict:
    return simulate.replay(curves, method, seed=seed, workers=3, budget=BUDGET, cap_s=float(np.nansum(curves.seconds)),
                           targets=targets_of(curves))  # fmt: skip


def test_the_table_loads_with_each_config_and_its_curve(curves: simulate.Curves) -> None:
    assert len(curves.configs) == 40 and curves.scores.shape == (40, EPOCHS)
    assert not np.isnan(curves.scores).any() and (curves.seconds > 0).all()
    one_layer = next(c for c in curves.configs if c["layers"] == 1)
    assert one_layer["dropout"] is None  # inactive in the table: never given to a one-layer net
    for i in (0, 17, 39):  # a recorded config is its own nearest
        assert curves.nearest(curves.configs[i]) == i
    near = dict(curves.configs[5], lr=curves.configs[5]["lr"] * 1.01)
    assert curves.nearest(near) == 5


@pytest.mark.parametrize("method", simulate.METHODS, ids=lambda m: m.name)
def test_each_method_replays_the_same_with_the_same_seed(curves: simulate.Curves, method: simulate.Method) -> None:
    first, again, other = replay(curves, method, 0), replay(curves, method, 0), replay(curves, method, 1)
    assert first == again
    assert first["trials"] > 0 and first["epochs"] > 0
    assert any(first[k] != other[k] for k in ("target_s", "near best_s", "trials", "epochs", "stopped"))
    if method.scheduler in ("asha", "hyperband", "median"):
        assert first["stopped"] > 0  # the scheduler's real decisions: some trials end before the budget
    else:
        assert first["stopped"] == 0
    if method.scheduler == "pbt":
        assert first["exploits"] > 0 and first["trials"] == BUDGET.num_samples


def test_early_stopping_reaches_the_target_with_less_compute_than_full_budgets(curves: simulate.Curves) -> None:
    fifo, asha = simulate.METHODS[0], simulate.METHODS[1]
    ratios = []
    for seed in range(6):
        base, fast = replay(curves, fifo, seed), replay(curves, asha, seed)
        assert math.isfinite(base["target_s"])
        ratios.append(base["target_s"] / fast["target_s"])
    assert float(np.median(ratios)) > 1.0
    base, fast = replay(curves, fifo, 0), replay(curves, asha, 0)
    assert fast["epochs"] / fast["trials"] < base["epochs"] / base["trials"]  # its trials stopped at rungs


def test_efficiency_table_prints_every_method_and_is_deterministic(tmp_path: Path, curves: simulate.Curves) -> None:
    table = write_table(tmp_path / "table")
    outs = []
    for run in (1, 2):
        out = tmp_path / f"run{run}.json"
        argv = ["--table", str(table), "--seeds", "4", "--workers", "3", "--population", "8", "--processes", "2",
                "--out", str(out)]  # fmt: skip
        done = subprocess.run([sys.executable, "bench/efficiency.py", *argv], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        for method in simulate.METHODS:
            assert method.name in done.stdout
        assert "x sooner than random, full budget at the median" in done.stdout
        figures = json.loads(out.read_text())
        assert len(figures["runs"]) == 4 * len(simulate.methods())
        outs.append(figures)
    assert outs[0]["runs"] == outs[1]["runs"] and outs[0]["summary"] == outs[1]["summary"]
    assert outs[0]["summary"][0]["target: x sooner"] == 1.0  # the baseline against itself


def test_the_recorder_writes_a_table_the_simulator_replays(tmp_path: Path) -> None:
    """bench/record_curves.py: a real search over the digits (scikit-learn's), every config to the full budget."""
    out = tmp_path / "digits"
    done = subprocess.run([sys.executable, "bench/record_curves.py", "--out", str(out), "--configs", "3",
                           "--max-epochs", "2", "--concurrent", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    provenance = json.loads((out / simulate.PROVENANCE).read_text())
    assert provenance["dataset"]["rows"] == 1797 and len(provenance["dataset"]["sha256"]) == 64
    assert provenance["metric"] == "val_acc" and provenance["configs"] == 3
    curves = simulate.load(out)
    assert curves.scores.shape == (3, 2) and not np.isnan(curves.scores).any()
    assert (0 < curves.scores).all() and (curves.scores <= 1).all() and (curves.seconds > 0).all()
    budget = Budget(num_samples=3, max_epochs=2, grace_period=1, reduction_factor=2)
    row = simulate.replay(curves, simulate.METHODS[0], seed=0, workers=1, budget=budget, cap_s=1e9,
                          targets={"best": float(curves.best_scores().max())})  # fmt: skip
    assert math.isfinite(row["best_s"]) and row["best"] == pytest.approx(curves.best_scores().max())


def test_the_table_in_the_repository_is_whole_and_says_where_it_came_from():
    folder = ROOT / "bench" / "curves" / "digits"
    provenance = json.loads((folder / simulate.PROVENANCE).read_text())
    assert provenance["command"].startswith("python bench/record_curves.py")
    assert provenance["dataset"]["name"] == "sklearn.datasets.load_digits" and provenance["git_commit"] != "unknown"
    curves = simulate.load(folder)
    assert curves.scores.shape == (300, 27) and not np.isnan(curves.scores).any()
    assert curves.metric == "val_acc" and curves.mode == "max"
