"""Bad input at the command line: a non-zero exit, a message naming the fix, nothing written."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT
from trainables import data


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


def test_list_spaces(cwd):
    done = run_cli(cwd, "--list-spaces")
    assert done.returncode == 0 and "cifar" in done.stdout and "log[3, 30]" in done.stdout


def test_unknown_space(cwd):
    assert_refused(run_cli(cwd, "--space", "imagenet9000"), cwd, "unknown search space 'imagenet9000'", "cifar")


@pytest.mark.parametrize(
    ("param", "phrase"),
    [
        ("lr=30:3", "low (30) must be below high (3)"),
        ("momentum=-0.2:0.9", "outside the allowed range"),
        ("lr=-1:3", "must be > 0"),
        ("weight_decay=-0.01", "outside the allowed range"),
    ],
)
def test_inverted_or_negative_bounds(cwd, param, phrase):
    assert_refused(run_cli(cwd, "--param", param), cwd, phrase)


def test_zero_samples(cwd):
    done = run_cli(cwd, "--num-samples", "0")
    assert done.returncode == 2 and "--num-samples" in done.stderr


def test_malformed_data_folder(cwd, tmp_path, cifar_dir):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(cifar_dir, bad)
    batch = bad / data.FOLDER / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:5000])
    done = run_cli(cwd, "--data-dir", str(bad), "--smoke-test")
    assert_refused(done, cwd, "data_batch_2", "--data-dir")


def test_more_gpus_than_the_machine_has(cwd, cifar_dir):
    import torch

    asked = torch.cuda.device_count() + 1
    done = run_cli(cwd, "--data-dir", str(cifar_dir), "--smoke-test", "--gpus-per-trial", str(asked))
    assert_refused(done, cwd, f"--gpus-per-trial {asked}", "asks for more than this cluster has")


def test_malformed_gpu_request(cwd):
    assert_refused(run_cli(cwd, "--gpus-per-trial", "lots"), cwd, "--gpus-per-trial 'lots'", "auto")


def test_fractional_gpus_with_several_workers(cwd):
    done = run_cli(cwd, "--workers-per-trial", "2", "--gpus-per-trial", "0.5")
    assert_refused(done, cwd, "DDP workers need whole GPUs", "--gpus-per-trial 2")


def test_unreachable_mlflow_server(cwd):
    assert_refused(run_cli(cwd, "--mlflow-uri", "http://127.0.0.1:9"), cwd, "unreachable", "--mlflow-uri")
