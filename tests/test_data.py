import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest

from search_spaces.exceptions import DataError
from trainables import data
from trainables.data import synthetic_images


def _copy_layout(tmp_path, n=500):
    root = tmp_path / "data"
    data.write_cifar_layout(root, train=synthetic_images(n, seed=0), test=synthetic_images(100, seed=1))
    return root


def test_load_validates_and_returns_chw_uint8(cifar_dir):
    train_x, train_y, test_x, test_y = data.load(cifar_dir, download_if_missing=False)
    assert train_x.shape == (2000, 3, 32, 32) and train_x.dtype == np.uint8
    assert test_x.shape == (400, 3, 32, 32) and train_y.dtype == np.int64
    assert 0 <= train_y.min() and train_y.max() <= 9


def test_split_is_fixed_disjoint_and_seeded(cifar_dir):
    arrays = data.load(cifar_dir, download_if_missing=False)
    a, b = data.split(*arrays), data.split(*arrays)
    assert (len(a.train_y), len(a.val_y), len(a.test_y)) == (1800, 200, 400)
    assert np.array_equal(a.val_x, b.val_x)
    train_rows = {r.tobytes() for r in a.train_x}
    assert not any(r.tobytes() in train_rows for r in a.val_x)
    small = data.split(*arrays, train_size=300, val_size=100, test_size=50)
    assert (len(small.train_y), len(small.val_y), len(small.test_y)) == (300, 100, 50)
    assert len(set(small.test_y.tolist())) > 3  # a random slice, not the first rows of a sorted file


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:1000]), "data_batch_3 is not a readable CIFAR-10 batch"),
        (lambda p: p.unlink(), "data_batch_3 is missing"),
        (
            lambda p: p.write_bytes(pickle.dumps({"data": np.zeros((4, 3072), np.float32), "labels": [0] * 4})),
            "data_batch_3: 'data' is float32",
        ),
        (
            lambda p: p.write_bytes(pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4})),
            r"shape \(4, 100\)",
        ),
        (
            lambda p: p.write_bytes(pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 12]})),
            r"labels must be integers in \[0, 9\]",
        ),
        (
            lambda p: p.write_bytes(pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "labels": [0]})),
            "1 labels for 4 images",
        ),
        (lambda p: p.write_bytes(pickle.dumps([1, 2, 3])), "lacks the 'data' and 'labels'"),
    ],
)
def test_malformed_files_are_named(tmp_path, damage, message):
    root = _copy_layout(tmp_path)
    damage(root / data.FOLDER / "data_batch_3")
    with pytest.raises(DataError, match=message) as info:
        data.load(root, download_if_missing=False)
    assert "--data-dir" in str(info.value)


def _archive(tmp_path):
    src = _copy_layout(tmp_path / "src")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / data.FOLDER, arcname=data.FOLDER)
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(buf.getvalue())
    return path, hashlib.md5(buf.getvalue()).hexdigest()


def test_download_checks_md5_and_unpacks(tmp_path):
    archive, md5 = _archive(tmp_path)
    target = tmp_path / "fresh"
    folder = data.download(target, url=archive.as_uri(), md5=md5)
    assert folder == target / data.FOLDER
    assert len(data.load(target, download_if_missing=False)[1]) == 500
    assert not list(target.glob("*.part"))


def test_download_with_wrong_md5_keeps_nothing(tmp_path):
    archive, _ = _archive(tmp_path)
    target = tmp_path / "fresh"
    with pytest.raises(DataError, match="md5"):
        data.download(target, url=archive.as_uri(), md5="0" * 32)
    assert not target.exists()


def test_download_without_network_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="put a copy in .*or pass --data-dir"):
        data.download(tmp_path / "d" / "e", url=(tmp_path / "absent.tar.gz").as_uri())
    assert not (tmp_path / "d").exists()  # the folders it made are gone again


def test_unwritable_data_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")  # even root cannot create a folder under a file
    with pytest.raises(DataError, match="pass --data-dir with a writable folder"):
        data.download(blocker / "d", url="file:///nonexistent")
