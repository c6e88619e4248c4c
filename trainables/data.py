"""CIFAR-10 on disk: download, validate, load and split. Never imports Ray.

The standard "python version" layout is ``<data_dir>/cifar-10-batches-py`` with
``data_batch_1..5`` and ``test_batch`` (pickles holding ``data``: N x 3072
uint8, R, G, B planes row-major, and ``labels``). When the folder is absent the
official archive is downloaded and its md5 checked. When it is present it is
read even if its checksums differ from the official ones (a re-encoded copy),
after its shapes, dtype and labels are validated.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search_spaces.exceptions import DataError

log = logging.getLogger(__name__)

FOLDER = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
NUM_CLASSES = 10
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel mean and std of the CIFAR-10 training images, in [0, 1] units.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
SPLIT_SEED = 0  # the validation split is the same for every search



@dataclass(frozen=True)
class Splits:
    """uint8 images (N, 3, 32, 32) and int64 labels (N,) for each split."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    def sizes(self) -> str:
        return f"{len(self.train_y)} train / {len(self.val_y)} val / {len(self.test_y)} test"


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    fix = f"delete {path.parent} to download a fresh copy, or point --data-dir at a good one"
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise DataError(f"{path} is missing: {fix}") from None
    except Exception as e:  # truncated or not a pickle at all
        raise DataError(f"{path} is not a readable CIFAR-10 batch ({type(e).__name__}: {e}): {fix}") from None
    if not isinstance(d, dict) or "data" not in d or "labels" not in d:
        raise DataError(f"{path} lacks the 'data' and 'labels' entries of a CIFAR-10 batch: {fix}")
    x, y = d["data"], np.asarray(d["labels"])
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        shape = getattr(x, "shape", None)
        dtype = getattr(x, "dtype", type(x).__name__)
        raise DataError(f"{path}: 'data' is {dtype} with shape {shape}, expected uint8 (N, 3072): {fix}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: {len(y)} labels for {len(x)} images: {fix}")
    if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels must be integers in [0, {NUM_CLASSES - 1}]: {fix}")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(data_dir: Path, *, url: str = URL, md5: str = ARCHIVE_MD5, timeout: float = 30.0) -> Path:
    """Fetch and unpack the official archive into ``data_dir``; check its md5.

    On failure nothing is left behind, not even the folders this call created.
    """
    created = [p for p in (data_dir, *data_dir.parents) if not p.exists()]
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=data_dir, suffix=".tar.gz.part")
    except OSError as e:
        raise DataError(
            f"cannot write to data folder {data_dir} ({e.strerror}): pass --data-dir with a writable folder"
        ) from None
    tmp = Path(tmp_name)
    try:
        log.warning("downloading CIFAR-10 from %s to %s", url, data_dir)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                shutil.copyfileobj(resp, out, length=1 << 20)
        except (urllib.error.URLError, OSError) as e:
            raise DataError(
                f"could not download CIFAR-10 from {url} ({getattr(e, 'reason', e)}); "
                f"on a machine without internet, put a copy in {data_dir / FOLDER} or pass --data-dir"
            ) from None
        got = _md5(tmp)
        if got != md5:
            raise DataError(f"download from {url} has md5 {got}, expected {md5}; retry, or fetch it by hand")
        with tarfile.open(tmp) as tar:
            tar.extractall(data_dir, filter="data")
    except BaseException:
        tmp.unlink(missing_ok=True)
        for folder in created:  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    tmp.unlink(missing_ok=True)
    return data_dir / FOLDER


def locate(data_dir: Path, *, download_if_missing: bool = True) -> Path:
    """The ``cifar-10-batches-py`` folder under ``data_dir``, downloaded when absent."""
    root = data_dir / FOLDER
    if root.is_dir():
        return root
    if data_dir.name == FOLDER and data_dir.is_dir():
        return data_dir
    if not download_if_missing:
        raise DataError(f"no CIFAR-10 under {data_dir}: expected {root}")
    return download(data_dir)


def load(data_dir: Path, *, download_if_missing: bool = True) -> tuple[np.ndarray, ...]:
    """Read and validate the train and test batches: ``train_x, train_y, test_x, test_y``."""
    root = locate(Path(data_dir), download_if_missing=download_if_missing)
    parts = [_read_batch(root / name) for name in TRAIN_FILES]
    train_x = np.concatenate([x for x, _ in parts])
    train_y = np.concatenate([y for _, y in parts])
    test_x, test_y = _read_batch(root / TEST_FILE)
    for name, y in (("training", train_y), ("test", test_y)):
        if len(y) == 0:
            raise DataError(f"the {name} batches under {root} hold no images: replace them with a good copy")
    return train_x, train_y, test_x, test_y


def split(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    val_size: int | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
) -> Splits:
    """Carve a fixed, seeded validation split from the training set.

    ``val_size`` defaults to a tenth of the training images (5,000 of 50,000).
    ``train_size`` and ``test_size`` take a slice (the smoke test's data).
    """
    n = len(train_y)
    val_size = n // 10 if val_size is None else min(val_size, n // 2)
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    val_idx, train_idx = order[:val_size], order[val_size:]
    if train_size is not None:
        train_idx = train_idx[:train_size]
    if test_size is not None and test_size < len(test_y):
        # A seeded random subset: some copies store the test set sorted by class.
        keep = np.sort(np.random.default_rng(SPLIT_SEED).permutation(len(test_y))[:test_size])
        test_x, test_y = test_x[keep], test_y[keep]
    # Sorted indices keep the copies cache friendly; the order is shuffled per epoch anyway.
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    return Splits(
        train_x=np.ascontiguousarray(train_x[train_idx]),
        train_y=train_y[train_idx],
        val_x=np.ascontiguousarray(train_x[val_idx]),
        val_y=train_y[val_idx],
        test_x=np.ascontiguousarray(test_x),
        test_y=test_y,
    )


def write_cifar_layout(
    root: Path, *, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> Path:
    """Write images (N, 3, 32, 32) uint8 and labels in the ``cifar-10-batches-py`` layout."""
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    x, y = train
    for i, (xs, ys) in enumerate(zip(np.array_split(x, 5), np.array_split(y, 5), strict=True), start=1):
        batch = {"data": xs.reshape(len(xs), 3072), "labels": [int(v) for v in ys], "batch_label": f"batch {i}"}
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch, f, protocol=4)
    x, y = test
    with open(folder / TEST_FILE, "wb") as f:
        pickle.dump({"data": x.reshape(len(x), 3072), "labels": [int(v) for v in y]}, f, protocol=4)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CLASSES), "num_cases_per_batch": len(x), "num_vis": 3072}, f, protocol=4)
    return folder


def synthetic_images(n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable stand-ins for CIFAR-10 (N, 3, 32, 32) uint8: a colour and a stripe angle per class, plus noise.

    For tests and benchmark smoke runs on machines without the real data.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    colours = np.random.default_rng(123).integers(40, 215, (NUM_CLASSES, 3))
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((n, 3, 32, 32), dtype=np.float32)
    for c in range(NUM_CLASSES):
        stripes = np.sin((xx * np.cos(c * 0.3) + yy * np.sin(c * 0.3)) * 0.8) * 30
        images[labels == c] = colours[c][:, None, None] + stripes[None]
    images += rng.normal(0, 25, images.shape)
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)
