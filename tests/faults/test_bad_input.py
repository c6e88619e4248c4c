"""Bad input: every case exits non-zero within seconds, names the fix, and writes nothing.

| # | bad input | what the message points to |
|---|---|---|
| 1 | unknown space | the known spaces |
| 2 | truncated CIFAR file | the file, and --data-dir |
| 3 | malformed CIFAR file (wrong shape) | the file, and --data-dir |
| 4 | missing data, no network | where to put a copy, --data-dir |
| 5 | missing data, unwritable data folder | a writable --data-dir |
| 6 | inverted bounds | swap them |
| 7 | negative bound | the allowed range |
| 8 | zero bound on a log scale | must be > 0 |
| 9 | --num-samples 0 | must be >= 1 |
| 10 | --grace-period above --max-epochs | the allowed range |
| 11 | --reduction-factor 1 | must be >= 2 |
| 12 | more GPUs per trial than the machine has | what the cluster has |
| 13 | fractional GPUs with several workers | one GPU per worker |
| 14 | --gpus-per-trial that is not a number | 0, a fraction, a whole number or auto |
| 15 | batch size not divisible by the workers | multiples of the worker count |
| 16 | unwritable storage path | a writable folder |
| 17 | --resume of a search that does not exist | --name and --storage-path |
| 18 | an existing search name without --resume | --resume, or another --name |
| 19 | a search name with a path in it | the allowed characters |
| 20 | an MLflow URI that is not one | the URI forms |
| 21 | --cpus-per-trial 0 | must be > 0 |
| 22 | a negative --checkpoint-period | 0 saves every epoch |
| 23 | a space file that is not valid YAML | the file, line and column |
| 24 | a space file naming an unknown task | the file, the key, the built-in tasks |
| 25 | a space file that does not exist | the path, and the built-in spaces |
| 26 | an image folder with one class | at least two classes |
| 27 | an image folder without images | where to add them |
| 28 | a space whose metric its task never reports | the metrics the task reports |
| 29 | a space that lacks a value its task reads | add it as a parameter or a constant |
| 30 | --scheduler pbt with --search optuna | drop --search |
| 31 | --scheduler pbt on a space with no mutable parameter | mark them `mutable: true` |
| 32 | --scheduler pbt with --max-concurrent | drop it: the population runs together |
| 33 | --scheduler pbt exploiting no earlier than the last epoch | lower --grace-period |
| 34 | a fixed value marked mutable in a space file | give it a range, or drop mutable |
| 35 | --warm-start from a folder that holds no finished search | the folder of a finished search |
| 36 | a space whose mode is against its metric's direction | the mode to set |
| 37 | a table's problem that does not report the space's metric | the metrics it reports, or leave both out |
| 38 | --worker-start-timeout 0 | must be > 0, in seconds |
| 39 | several GPUs for a single-process trial | DDP workers, one GPU each |
| 40 | --search bohb with a scheduler that has no rungs (fifo, median) | --scheduler asha or hyperband |

An unreachable MLflow server is not bad input: the search runs without it
(tests/faults/test_mlflow_down.py).
"""

import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from trainables import data

SECONDS = 60  # "within seconds": generous for a loaded 2-core CI machine; most take about 1 s


def run_cli(cwd, *argv):
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "run_tune.py"), *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    return done, time.monotonic() - start


@pytest.fixture
def cwd(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def _damaged(tmp_path, cifar_dir, damage):
    bad = tmp_path / "bad"
    shutil.copytree(cifar_dir, bad)
    damage(bad / data.FOLDER / "data_batch_2")
    return str(bad)


def _truncate(path):
    path.write_bytes(path.read_bytes()[:5000])


def _reshape(path):
    import pickle

    import numpy as np

    path.write_bytes(pickle.dumps({"data": np.zeros((10, 1024), np.uint8), "labels": [0] * 10}))


CASES = {
    "unknown space": (lambda t, c: ["--space", "imagenet9000"], ["unknown search space 'imagenet9000'", "cifar"]),
    "truncated file": (lambda t, c: ["--data-dir", _damaged(t, c, _truncate), "--smoke-test"],
                       ["data_batch_2", "--data-dir"]),
    "malformed file": (lambda t, c: ["--data-dir", _damaged(t, c, _reshape), "--smoke-test"],
                       ["data_batch_2", "shape (10, 1024)"]),
    "no data, no network": (lambda t, c: ["--data-dir", str(t / "work" / "nothing")],
                            ["could not download CIFAR-10", "or pass --data-dir"]),
    "unwritable data folder": (lambda t, c: ["--data-dir", str(_file(t) / "d")], ["writable folder"]),
    "inverted bounds": (lambda t, c: ["--param", "lr=30:3"], ["low (30) must be below high (3)", "swap them"]),
    "negative bound": (lambda t, c: ["--param", "momentum=-0.2:0.9"], ["outside the allowed range [0, 0.999]"]),
    "zero bound": (lambda t, c: ["--param", "lr=0:3"], ["must be > 0"]),
    "zero samples": (lambda t, c: ["--num-samples", "0"], ["--num-samples", "must be >= 1"]),
    "grace period": (lambda t, c: ["--grace-period", "50"], ["--grace-period is 50", "between 1 and --max-epochs"]),
    "reduction factor": (lambda t, c: ["--reduction-factor", "1"], ["--reduction-factor is 1", ">= 2"]),
    # DDP workers of one GPU more than the machine has each: a single process never asks more than one.
    "too many GPUs": (lambda t, c: ["--data-dir", str(c), "--smoke-test", "--workers-per-trial", "2",
                                    "--gpus-per-trial", str(2 * (_gpus() + 1))],
                      ["each of the 2 workers would need", "but no node has more than", "--gpus-per-trial"]),
    "fractional GPUs, several workers": (lambda t, c: ["--workers-per-trial", "2", "--gpus-per-trial", "0.5"],
                                         ["DDP workers need whole GPUs", "--gpus-per-trial 2"]),
    "several GPUs, one process": (lambda t, c: ["--gpus-per-trial", "2"],
                                  ["--gpus-per-trial 2 with --workers-per-trial 1",
                                   "use --workers-per-trial 2 --gpus-per-trial 2 (DDP, one GPU per worker)"]),
    "GPUs not a number": (lambda t, c: ["--gpus-per-trial", "lots"], ["--gpus-per-trial 'lots'", "auto"]),
    "batch not divisible": (lambda t, c: ["--workers-per-trial", "3", "--param", "batch_size=64,128"],
                            ["cannot be split evenly over --workers-per-trial 3", "multiples of 3"]),
    "unwritable storage": (lambda t, c: ["--storage-path", str(_file(t) / "runs")],
                           ["not writable", "writable folder"]),
    "resume a missing search": (lambda t, c: ["--resume", "--name", "ghost"], ["no search 'ghost'", "--storage-path"]),
    "name taken": (lambda t, c: ["--name", "taken", "--storage-path", str(_taken(t))],
                   ["already exists", "--resume, or pick another --name"]),
    "name with a path": (lambda t, c: ["--name", "../evil"], ["--name '../evil'", "letters, digits"]),
    "MLflow URI malformed": (lambda t, c: ["--mlflow-uri", "mlruns"], ["not a tracking URI", "sqlite:///"]),
    "zero CPUs": (lambda t, c: ["--cpus-per-trial", "0"], ["--cpus-per-trial is 0", "> 0"]),
    "negative checkpoint period": (lambda t, c: ["--checkpoint-period", "-1"],
                                   ["--checkpoint-period is -1", "0: every epoch"]),
    "zero worker start timeout": (lambda t, c: ["--worker-start-timeout", "0"],
                                  ["--worker-start-timeout is 0", "> 0 (seconds)"]),
    "space file not YAML": (lambda t, c: ["--space", _space_file(t, "name: x\nparams: {lr: [\n")],
                            ["bad.yaml: not valid YAML at line", "fix the syntax"]),
    "space file, unknown task": (lambda t, c: ["--space", _space_file(t, _cifar_yaml().replace("task: cifar",
                                                                                              "task: mnist"))],
                                 ["bad.yaml: space 'cifar': task is 'mnist'",
                                  "built-in tasks (cifar, imagefolder) or your own"]),
    "space file missing": (lambda t, c: ["--space", "spaces/none.yaml"], ["no space file", "spaces/none.yaml"]),
    "a metric the task never reports": (lambda t, c: ["--space", _space_file(t, _cifar_yaml().replace(
                                            "metric: val_acc", "metric: accuracy"))],
                                        ["metric 'accuracy' is not one its task reports (val_acc (max), val_loss "
                                         "(min)", "set metric to one of them"]),
    "a mode against the metric's direction": (lambda t, c: ["--space", _space_file(t, _cifar_yaml().replace(
                                                  "mode: max", "mode: min"))],
                                              ["mode: min for val_acc, but its task reports val_acc as higher is "
                                               "better", "set mode: max"]),
    "a table's problem against its metric": (lambda t, c: ["--space", _tabular_space(t, "classification",
                                                                                      "metric: val_rmse\nmode: min"),
                                                           "--data-dir", _table(t)],
                                             ["metric 'val_rmse' is not one its task reports (val_acc (max)",
                                              "leave metric and mode out of the space: its task then goes by val_acc "
                                              "(max)"]),
    "a value the task reads is missing": (lambda t, c: ["--space", _space_file(t, _cifar_yaml().replace(
                                              "translate: 2, ", ""))],
                                          ["the space gives no value for translate, which its task reads",
                                           "add each as a parameter (params:) or a constant (constants:)"]),
    "image folder, one class": (lambda t, c: ["--space", "imagefolder", "--data-dir", _image_tree(t, (12, 0, 0))],
                                ["has images of one class only", "at least two"]),
    "image folder, no images": (lambda t, c: ["--space", "imagefolder", "--data-dir", _image_tree(t, (0, 0, 0))],
                                ["no images", "add some"]),
    "warm start, not a search": (lambda t, c: ["--warm-start", str(t)], ["no results.csv there",
                                                                        "the folder of a finished search"]),
    "pbt with optuna": (lambda t, c: ["--scheduler", "pbt", "--search", "optuna"],
                        ["cannot follow --search optuna", "drop --search"]),
    "bohb without rungs": (lambda t, c: ["--scheduler", "median", "--search", "bohb"],
                           ["--search bohb fits its model", "--scheduler asha or hyperband"]),
    "pbt, nothing mutable": (lambda t, c: ["--scheduler", "pbt", "--param", "lr=11.5", "--param", "momentum=0.85",
                                           "--param", "weight_decay=0.0153", "--param", "label_smoothing=0.2"],
                             ["marks none", "mutable: true"]),
    "pbt, capped": (lambda t, c: ["--scheduler", "pbt", "--max-concurrent", "2"], ["drop --max-concurrent"]),
    "pbt, no exploit": (lambda t, c: ["--scheduler", "pbt", "--max-epochs", "4", "--grace-period", "4"],
                        ["lower --grace-period"]),
    "fixed and mutable": (lambda t, c: ["--space", _space_file(t, _cifar_yaml().replace(
                              "    value: airbench\n", "    value: airbench\n    mutable: true\n"))],
                          ["parameter 'arch': a fixed value cannot be mutable"]),
}  # fmt: skip


def _tabular_space(tmp_path, problem: str, extra: str) -> str:
    """The tabular example's space with another problem and more lines; its task importable from the test's cwd."""
    work = tmp_path / "work"  # the cwd fixture's folder: a user runs from the folder that holds their task
    work.mkdir(exist_ok=True)
    (work / "examples").symlink_to(ROOT / "examples")
    text = (ROOT / "examples" / "tabular" / "space.yaml").read_text()
    text = text.replace("problem: regression", f"problem: {problem}")
    return _space_file(tmp_path, f"{text}\n{extra}\n")


def _table(tmp_path) -> str:
    sys.path.insert(0, str(ROOT / "examples" / "tabular"))
    from make_data import houses

    path = tmp_path / "houses.csv"
    houses(100, seed=0).to_csv(path, index=False)
    return str(path)


def _image_tree(tmp_path, per_class) -> str:
    from tests.test_imagefolder import write_tree

    return str(write_tree(tmp_path / "photos", per_class=per_class))


def _cifar_yaml() -> str:
    from search_spaces import BUILTIN_DIR

    return (BUILTIN_DIR / "cifar.yaml").read_text()


def _space_file(tmp_path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return str(path)


def _file(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("not a folder")
    return f


def _taken(tmp_path):
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    return tmp_path / "runs"


def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


def test_the_table_covers_at_least_15_cases():
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused(case, cwd, tmp_path, cifar_dir):
    make_argv, phrases = CASES[case]
    argv = make_argv(tmp_path, cifar_dir)
    before = sorted(p.name for p in tmp_path.iterdir())
    done, seconds = run_cli(cwd, *argv)
    assert done.returncode == 2, done.stdout + done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert seconds < SECONDS
    assert [p for p in cwd.iterdir() if p.name != "examples"] == [], "a refused search writes nothing"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
