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


def _module_imports(path: Path, package: str) -> set[str]:
    """The modules of ``package`` that ``path`` imports, at any depth (a lazy import is an edge too), except under
    ``if TYPE_CHECKING:``, which imports nothing at run time."""
    tree = ast.parse(path.read_text(), filename=str(path))
    guards = [n for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]
    typing_only = {id(n) for guard in guards for n in ast.walk(guard)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == package:
                found |= {f"{package}.{alias.name}" for alias in node.names}
            elif node.module.startswith(package + "."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith(package + ".")}
    return found


def test_no_module_of_tuner_imports_itself_back():
    """An import circle between tuner's modules (a imports b imports a) is a seam in the wrong place."""
    graph = {f"tuner.{p.stem}": _module_imports(p, "tuner") for p in (ROOT / "tuner").glob("*.py")}
    done: set[str] = set()
    circles = []

    def visit(module: str, path: list[str]) -> None:  # depth first; a module on the current path closes a circle
        for nxt in sorted(graph.get(module, ()) & set(graph)):
            if nxt in path:
                circles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert circles == []
