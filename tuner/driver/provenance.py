"""What a search ran with: package versions, the git commit, and the keys of its data and training code.

``provenance.json`` in a search's folder holds them, written once when the
search starts (a resume keeps the first): ``python -m results replay`` reads
it to refuse a replay whose data or code differ.
"""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "ray", "optuna", "mlflow", "pandas", "numpy")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """HEAD's hash, with ``-dirty`` when the tree has uncommitted changes; ``unknown`` outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def record(folder: str, *, data: Any, task: str) -> dict[str, Any]:
    """Write ``provenance.json`` into the search's ``folder`` unless it is there (a resumed search); return it."""
    from results import storage
    from results.table import PROVENANCE_JSON
    from trainables.fingerprints import code_key, data_key

    path = storage.join(folder, PROVENANCE_JSON)
    if storage.exists(path):
        return json.loads(storage.read_text(path))
    saved = {"data_key": data_key(data), "code_key": code_key(task), "git_commit": git_commit(),
             "versions": versions()}  # fmt: skip
    storage.write_text(path, json.dumps(saved, indent=2) + "\n")
    return saved


def data_key(folder: str) -> str:
    """The key of the data the search in ``folder`` trained on, as ``provenance.json`` holds it ("" without one)."""
    from results import storage
    from results.table import PROVENANCE_JSON

    path = storage.join(folder, PROVENANCE_JSON)
    return str(json.loads(storage.read_text(path)).get("data_key", "")) if storage.exists(path) else ""
