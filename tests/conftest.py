"""Shared fixtures: synthetic data in the CIFAR-10 layout, and a small Ray instance."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainables.data import synthetic_images, write_cifar_layout  # noqa: E402


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory) -> Path:
    """A data folder holding cifar-10-batches-py with 2,000 train and 400 test synthetic images."""
    root = tmp_path_factory.mktemp("data")
    write_cifar_layout(root, train=synthetic_images(2000, seed=1), test=synthetic_images(400, seed=2))
    return root


@pytest.fixture(scope="module")
def ray_local():
    """A Ray instance with logical CPUs to spare, so trials and tasks start on 2 cores."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def houses_csv(tmp_path_factory) -> Path:
    """The tabular example's synthetic house prices: 1,200 rows of a CSV table."""
    sys.path.insert(0, str(ROOT / "examples" / "tabular"))
    from make_data import houses

    path = tmp_path_factory.mktemp("table") / "houses.csv"
    houses(1200, seed=0).to_csv(path, index=False)
    return path
