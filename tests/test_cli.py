"""The command line's own output: --help and --list-spaces. Bad input: tests/faults/test_bad_input.py."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def run_cli(cwd, *argv, timeout=120):
    return subprocess.run(
        [sys.executable, str(ROOT / "run_tune.py"), *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def assert_refused(done, cwd, *phrases):
    assert done.returncode == 2, done.stdout + done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in cwd.iterdir()) == [], "a refused search must write nothing"


@pytest.fixture
def cwd(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def test_help_shows_every_default(cwd):
    done = run_cli(cwd, "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for flag in (
        "--space",
        "--num-samples",
        "--max-epochs",
        "--grace-period",
        "--reduction-factor",
        "--gpus-per-trial",
        "--cpus-per-trial",
        "--max-concurrent",
        "--search",
        "--seed",
        "--data-dir",
        "--storage-path",
        "--name",
        "--mlflow-uri",
        "--resume",
        "--smoke-test",
        "--list-spaces",
    ):
        assert flag in text, flag
    assert "(default: cifar)" in text and "(default: ./data)" in text and "(default: ./ray_results)" in text
    assert "--num-samples NUM_SAMPLES number of trials (default for cifar: 16; smoke test: 6)" in text
    assert "(default: None)" not in text


def test_list_spaces(cwd):
    done = run_cli(cwd, "--list-spaces")
    assert done.returncode == 0 and "cifar" in done.stdout and "log[3, 30]" in done.stdout
