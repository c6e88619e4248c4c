"""The package's layers, read from the source: what each top-level package may import.

Tasks and spaces are plain data and plain PyTorch (a user's task is written
against them, and runs without Ray); results are read without Ray or MLflow
(a replay trains through the task, without them); only ``tuner`` knows Ray
Tune, and nothing below it imports it back.
"""

import ast
import re
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


def _name(path: Path) -> str:
    """``tuner/config/checks.py`` -> ``tuner.config.checks``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted((ROOT / "tuner").rglob("*.py"))}


def _module_imports(path: Path, modules: set[str]) -> set[str]:
    """The modules among ``modules`` that ``path`` imports, at any depth (a lazy import is an edge too), except under
    ``if TYPE_CHECKING:``, which imports nothing at run time. ``from a.b import c`` is an edge to ``a.b.c`` when that
    is a module, else to ``a.b``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    guards = [n for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]
    typing_only = {id(n) for guard in guards for n in ast.walk(guard)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
    return found


def test_no_module_of_tuner_imports_itself_back():
    """An import circle between tuner's modules (a imports b imports a) is a seam in the wrong place."""
    graph = {name: _module_imports(path, set(MODULES)) - {name} for name, path in MODULES.items()}
    done: set[str] = set()
    circles = []

    def visit(module: str, path: list[str]) -> None:  # depth first; a module on the current path closes a circle
        for nxt in sorted(graph.get(module, ())):
            if nxt in path:
                circles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert circles == []


MAX_LINES = 400
PACKAGES = ("tuner", "trainables", "search_spaces", "results")


def test_no_module_is_over_400_lines():
    """A module past 400 lines holds more than one concern: split it by concern, not by line count."""
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_each_package_says_what_it_offers():
    """Every package's ``__init__`` opens with a docstring that names each of its modules."""
    for init in sorted(ROOT.glob("*/**/__init__.py")):
        package = init.parent
        if package.parts[len(ROOT.parts)] not in PACKAGES:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        missing = [p.stem for p in sorted(package.glob("*.py")) if p.stem != "__init__" and p.stem not in doc]
        missing += [p.name for p in sorted(package.iterdir()) if (p / "__init__.py").exists() and p.name not in doc]
        assert doc and not missing, f"{init.relative_to(ROOT)}: the docstring does not name {missing}"


def test_the_readme_names_every_module():
    """The README's code table has a row for every module: a path, or a bare name after a path in the same row."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The code"):]
    named = set()
    for row in (line for line in section.splitlines() if line.startswith("| `")):
        folder = None
        for token in re.findall(r"`([^`]+)`", row.split(" | ")[0]):
            if "/" in token:
                named.add(token)
                folder = token.rsplit("/", 1)[0]
            elif folder:
                named.add(f"{folder}/{token}")
    modules = {str(p.relative_to(ROOT)) for package in PACKAGES for p in (ROOT / package).rglob("*.py")
               if p.name != "__init__.py"}  # fmt: skip
    assert sorted(modules - named) == []
