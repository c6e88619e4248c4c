"""The cluster commands users copy: the KubeRay manifest, docs/cluster.md and the README say the same thing."""

import shlex

import yaml

from tests.conftest import ROOT
from tuner.cli import build_parser


def _submitted(markdown: str) -> list[list[str]]:
    """The ``python run_tune.py ...`` argv of every ``ray job submit`` block of ``markdown``."""
    blocks, block, inside = [], [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            if inside:
                blocks.append("\n".join(block))
            block, inside = [], not inside
        elif inside:
            block.append(line)
    found = []
    for text in blocks:
        for line in text.replace("\\\n", " ").splitlines():
            if "ray job submit" in line:
                found.append(shlex.split(line.partition(" -- ")[2]))
    return found


def test_the_kuberay_job_runs_the_documented_search():
    manifest = yaml.safe_load((ROOT / "examples" / "kuberay" / "rayjob.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    entrypoint = shlex.split(manifest["spec"]["entrypoint"])
    assert entrypoint[:2] == ["python", "run_tune.py"]
    build_parser().parse_args(entrypoint[2:])  # every flag exists and parses
    docs = _submitted((ROOT / "docs" / "cluster.md").read_text())
    readme = _submitted((ROOT / "README.md").read_text())
    assert entrypoint in docs and entrypoint in readme
    for argv in docs + readme:
        assert argv[:2] == ["python", "run_tune.py"]
        build_parser().parse_args(argv[2:])
    spec = manifest["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == "2.60.0"  # the version pyproject.toml pins
    assert '"ray[tune,default]==2.60.0"' in (ROOT / "pyproject.toml").read_text()
