"""Shared fixtures: synthetic data in the CIFAR-10 layout, and a small Ray instance."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainables.data import write_cifar_layout  # noqa: E402


def synthetic_images(n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 32x32 images: each class has its own colour and stripe orientation, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    colours = np.random.default_rng(123).integers(40, 215, (10, 3))
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((n, 3, 32, 32), dtype=np.float32)
    for c in range(10):
        idx = labels == c
        stripes = np.sin((xx * np.cos(c * 0.3) + yy * np.sin(c * 0.3)) * 0.8) * 30
        images[idx] = colours[c][:, None, None] + stripes[None]
    images += rng.normal(0, 25, images.shape)
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


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
