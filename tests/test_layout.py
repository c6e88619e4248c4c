"""The package's layers, read from the source: what each top-level package may import.

Tasks and spaces are plain data and plain PyTorch (a user's task is written
against them, and runs without Ray); results are read without Ray or MLflow
(a replay trains through the task, without them); only ``tuner`` knows Ray
Tune, and nothing below it imports it back.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "trainables": {"ray", "mlflow", "optuna", "tuner", "results"},
    "search_spaces": {"ray", "mlflow", "optuna", "tuner", "results", "trainables"},
    "results": {"ray", "mlflow", "tuner"},
    "examples": {"ray", "mlflow", "optuna", "tuner", "results"},
}


def _imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_each_layer_imports_only_what_is_below_it(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    wrong = {str(f.relative_to(ROOT)): sorted(_imports(f) & FORBIDDEN[package]) for f in files}
    assert {f: names for f, names in wrong.items() if names} == {}
