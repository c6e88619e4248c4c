"""What a person sees: a finished smoke search in the MLflow UI and its HTML report, rendered by headless Chromium.

The search is real (a smoke search on synthetic CIFAR-shaped data), the MLflow
UI is the project's own ``mlflow server`` on 127.0.0.1 over the search's store,
and Chromium renders each page (running its scripts) before the test reads the
page's text. Screenshots are saved in the test's temp folder.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import tuner
from tests.servers import MlflowServer
from tests.test_end_to_end import search_kwargs

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _chromium() -> str | None:
    return next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
                None)  # fmt: skip


def render(url: str, *, screenshot: Path, wait_ms: int = 20_000, height: int = 1000, expect: str = "") -> str:
    """The page at ``url`` as Chromium renders it (scripts run, data fetched): its DOM; and a screenshot.

    On a loaded machine the app may not have drawn ``expect`` within the virtual
    time budget: the page is rendered again, twice at most, with twice the budget.
    """
    browser = _chromium()
    for attempt in range(3):
        flags = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--hide-scrollbars", f"--window-size=1440,{height}", f"--virtual-time-budget={wait_ms << attempt}",
                 f"--user-data-dir={screenshot.with_suffix(f'.profile{attempt}')}"]  # fmt: skip  (a fresh browser)
        shot = subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-2000:]
        dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=300)
        assert dom.returncode == 0, dom.stderr[-2000:]
        (screenshot.with_suffix(".html")).write_text(dom.stdout)
        if expect in dom.stdout:
            break
    return dom.stdout


def text(page: str) -> str:
    """What a person reads on the rendered page: its text, without markup, scripts or styles."""
    page = re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", page)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cifar_dir, ray_local):
    if _chromium() is None:
        pytest.skip("Chromium is not installed: apt-get install chromium (.ci/run does)")
    tmp = tmp_path_factory.mktemp("browser")
    # Not a smoke test: a smoke test's version is never the champion, and the model page shows the alias.
    settings = search_kwargs(tmp, cifar_dir, "seen", num_samples=3, max_epochs=2, grace_period=1, reduction_factor=2)
    assert tuner.search(**settings).best is not None
    return tmp


@pytest.fixture(scope="module")
def ui(finished):
    server = MlflowServer(backend=f"sqlite:///{finished}/mlflow.db", artifacts=finished / "mlartifacts",
                          log=finished / "mlflow-ui.log")  # fmt: skip
    with server:
        yield server


def test_the_mlflow_ui_shows_the_search(finished, ui, tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{finished}/mlflow.db")
    experiment = client.get_experiment_by_name("cifar")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    trials = sorted(r.info.run_name for r in runs if "mlflow.parentRunId" in r.data.tags)
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    base = f"{ui.uri}/#/experiments/{experiment.experiment_id}"
    training = "?workflowType=machine_learning"  # as the search's summary links it

    page = text(render(f"{base}{training}", screenshot=tmp_path / "experiment.png", expect="matching runs"))
    assert "Runs" in page and "seen" in page and f"{1 + len(trials)} matching runs" in page
    assert "Detect Issues" not in page  # the training runs, not the GenAI overview
    page = text(render(f"{base}/runs/{parent.info.run_id}{training}", screenshot=tmp_path / "search.png",
                       expect="best_val_acc"))  # fmt: skip
    assert all(t in page for t in trials) and "best_val_acc" in page  # the trials, as child runs
    assert "a random search of the" in page and "cifar-best" in page  # its description, its registered model
    # Tall: the charts below the fold are not drawn at all.
    page = text(render(f"{base}/runs/{child.info.run_id}/model-metrics{training}", screenshot=tmp_path / "trial.png",
                       height=2400, expect="val_acc"))  # fmt: skip
    assert "val_acc" in page and child.info.run_name in page
    page = text(render(f"{base}/runs/{parent.info.run_id}/artifacts{training}", screenshot=tmp_path / "artifacts.png",
                       expect="best_checkpoint"))  # fmt: skip
    assert "report" in page and "best_checkpoint" in page
    page = text(render(f"{ui.uri}/#/models/cifar-best", screenshot=tmp_path / "model.png", expect="champion"))
    assert "champion" in page
    for name in ("experiment.png", "search.png", "trial.png", "artifacts.png", "model.png"):
        assert (tmp_path / name).stat().st_size > 20_000, name  # a rendered page, not a blank one


def test_the_report_opens_from_disk(finished, tmp_path):
    report = finished / "runs" / "seen" / "report" / "report.html"
    page = render(report.as_uri(), screenshot=tmp_path / "report.png", wait_ms=10_000)
    assert page.count('class="main-svg"') >= 4  # plotly drew the figures, offline
    for heading in ("Learning curves", "Best so far", "Parallel coordinates", "What it cost", "Leaderboard"):
        assert heading in page, heading
    assert (tmp_path / "report.png").stat().st_size > 20_000


def test_a_trade_offs_report_draws_its_front(tmp_path, houses_csv, monkeypatch):
    """A search over a trade-off (the tabular example, val_rmse against params): its front and bound, drawn."""
    import yaml

    from tests.conftest import ROOT

    if _chromium() is None:
        pytest.skip("Chromium is not installed: apt-get install chromium (.ci/run does)")
    monkeypatch.chdir(ROOT)  # the space names its task as examples.tabular.task:TASK
    raw = yaml.safe_load((ROOT / "examples" / "tabular" / "space.yaml").read_text())
    raw.update(name="tradeoff", objectives={"params": "min"}, select={"where": {"params": {"max": 3000}}})
    (tmp_path / "tradeoff.yaml").write_text(yaml.safe_dump(raw))
    result = tuner.search(str(tmp_path / "tradeoff.yaml"), data_dir=str(houses_csv), name="front", searcher="optuna",
                          storage_path=str(tmp_path / "runs"), mlflow_uri=f"sqlite:///{tmp_path}/mlflow.db",
                          smoke_test=True)  # fmt: skip
    assert len(result.front) >= 1
    page = render(Path(result.report).as_uri(), screenshot=tmp_path / "report.png", wait_ms=10_000,
                  expect="Trade-off with params")  # fmt: skip
    shown = text(page)
    assert "Trade-off: val_rmse against params" in shown and "params <= 3000" in shown
    assert "Pareto front" in shown and "registered" in shown
    assert page.count('class="main-svg"') >= 5  # the trade-off's plot among the others, drawn offline
