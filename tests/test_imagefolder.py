"""The imagefolder task on PNG trees the tests write: loading, splits, a real search, bad folders."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.imagefolder import TASK
from trainables.task import TaskError

CLASSES = ("circle", "square", "stripes")


def _image(kind: str, rng: np.random.Generator, *, size: int = 40) -> np.ndarray:
    """A noisy picture of its class: a bright disc, a bright square, or vertical stripes."""
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    if kind == "circle":
        shape = (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 4) ** 2
    elif kind == "square":
        shape = (abs(yy - cy) < size // 5) & (abs(xx - cx) < size // 5)
    else:
        shape = (xx // 4) % 2 == 0
    base = np.where(shape, 200, 40) + rng.normal(0, 20, (size, size))
    tint = rng.uniform(0.7, 1.0, 3)
    return np.clip(base[..., None] * tint, 0, 255).astype(np.uint8)


def write_tree(root: Path, *, per_class=(40, 40, 40), mode: str = "RGB", splits=("train",), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split in splits:
        for kind, count in zip(CLASSES, per_class, strict=True):
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count if split == "train" else max(2, count // 5)):
                Image.fromarray(_image(kind, rng)).convert(mode).save(folder / f"{i}.png")
    return root


CONSTANTS = {"image_size": 32, "channels": 3, "translate": 2}


def test_load_decodes_resizes_and_holds_out_a_stratified_tenth(tmp_path):
    root = write_tree(tmp_path / "rgb", per_class=(40, 40, 10))
    data = TASK.load(data_dir=str(root), smoke=None, constants=CONSTANTS)
    trial = data.trial
    assert trial["train_x"].shape[1:] == (3, 32, 32) and trial["train_x"].dtype == np.uint8
    assert trial["classes"] == list(CLASSES)
    assert np.bincount(trial["val_y"]).tolist() == [4, 4, 1]  # a tenth of each class, at least one
    assert np.bincount(data.held_out["y"]).tolist() == [4, 4, 1]
    assert len(trial["train_y"]) == 90 - 18
    assert "3 classes" in data.description and "imbalanced" in data.description  # 32 vs 8 per class
    assert data.example.shape == (2, 32, 32, 3) and data.example.dtype == np.uint8  # raw pixels, as decoded


def test_grayscale_images_and_their_own_val_and_test_folders(tmp_path):
    root = write_tree(tmp_path / "gray", mode="L", splits=("train", "val", "test"))
    as_rgb = TASK.load(data_dir=str(root), smoke=None, constants=CONSTANTS)
    assert as_rgb.trial["train_x"].shape[1] == 3 and len(as_rgb.trial["train_y"]) == 120  # val/ and test/ given
    assert len(as_rgb.trial["val_y"]) == 24 and len(as_rgb.held_out["y"]) == 24
    one = TASK.load(data_dir=str(root), smoke=None, constants={**CONSTANTS, "channels": 1})
    assert one.trial["train_x"].shape[1] == 1 and len(one.trial["mean"]) == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root.mkdir(), "no .*train folder"),
        (lambda root: [(root / "train" / c).mkdir(parents=True) for c in CLASSES], "no images"),
        (lambda root: write_tree(root, per_class=(10, 0, 0)), "one class only"),
        (
            lambda root: (write_tree(root), (root / "train" / "circle" / "0.png").write_bytes(b"not a png")),
            "1 image.s. cannot be read: .*0.png; remove or replace them",
        ),
    ],
)
def test_bad_folders_say_what_to_fix(tmp_path, make, message):
    root = tmp_path / "bad"
    make(root)
    with pytest.raises(TaskError, match=message):
        TASK.load(data_dir=str(root), smoke=None, constants=CONSTANTS)


def test_a_model_too_big_for_the_device_is_refused(tmp_path, monkeypatch):
    import trainables.imagefolder as imagefolder

    monkeypatch.setattr(imagefolder, "MAX_BYTES", 120 * 3 * 10 * 10)  # 120 images of 3 x 10 x 10 fit
    with pytest.raises(TaskError, match="120 images at 32x32 take .* GiB, more than .*: set image_size to 10 or less"):
        TASK.load(data_dir=str(write_tree(tmp_path / "rgb")), smoke=None, constants=CONSTANTS)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0"])
def test_pretrained_weights_missing_from_the_cache_say_how_to_get_them(tmp_path, monkeypatch, name):
    from trainables.imagefolder import torchvision_net

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(TaskError, match=rf"not in the local cache.*models.{name}\(weights='DEFAULT'\).*or set "
                                        rf"pretrained to false"):  # fmt: skip
        torchvision_net(name, channels=3, classes=3, pretrained=True)


@pytest.mark.parametrize("model", ["small_cnn", "resnet18", "mobilenet_v3_small", "efficientnet_b0"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_model_takes_grayscale_and_rgb(model, channels):
    from trainables.imagefolder import build_network

    net = build_network({"model": model, "width": 0.5, "pretrained": False}, channels=channels, classes=5,
                        mean=[120.0] * channels, std=[60.0] * channels).eval()  # fmt: skip
    with torch.no_grad():
        assert net(torch.randint(0, 256, (2, channels, 32, 32), dtype=torch.uint8)).shape == (2, 5)


def test_pretrained_weights_from_the_cache_with_a_new_head_and_gray_filters(tmp_path, monkeypatch):
    import torchvision

    from trainables.imagefolder import torchvision_net

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    (tmp_path / "checkpoints").mkdir()
    torch.manual_seed(0)
    imagenet = torchvision.models.mobilenet_v3_small(num_classes=1000)  # stands in for the downloaded file
    torch.save(imagenet.state_dict(), tmp_path / "checkpoints" / Path(weights.url).name)
    rgb = torchvision_net("mobilenet_v3_small", channels=3, classes=4, pretrained=True)
    gray = torchvision_net("mobilenet_v3_small", channels=1, classes=4, pretrained=True)
    first = imagenet.features[0][0].weight
    assert torch.equal(rgb.features[0][0].weight, first)
    assert torch.allclose(gray.features[0][0].weight, first.sum(dim=1, keepdim=True))
    assert torch.equal(gray.features[3].block[0][0].weight, imagenet.features[3].block[0][0].weight)
    assert (
        rgb.classifier[-1].out_features == 4 and rgb.classifier[0].weight.shape == imagenet.classifier[0].weight.shape
    )
    # A gray image excites the gray filters as its RGB copy excites the RGB ones.
    x = torch.rand(1, 1, 16, 16)
    conv = torch.nn.functional.conv2d
    assert torch.allclose(conv(x, gray.features[0][0].weight), conv(x.expand(1, 3, 16, 16), first), atol=1e-5)


@pytest.mark.slow
def test_an_imagefolder_search_end_to_end(tmp_path, ray_local, capsys):
    import pandas as pd
    from mlflow.tracking import MlflowClient

    import tuner
    from tests.registered import predict_elsewhere

    # Its own test/ folder: the raw images a user holds back, 40x40 files for a 64x64 search.
    root = write_tree(tmp_path / "photos", per_class=(60, 60, 60), splits=("train", "test"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = tuner.search("imagefolder", data_dir=str(root), storage_path=str(tmp_path / "runs"), name="photos",
                          mlflow_uri=uri, num_samples=4, max_epochs=4, grace_period=1, reduction_factor=2,
                          max_concurrent=1, params={"model": "small_cnn", "batch_size": 32})  # fmt: skip
    assert result.best is not None
    out = capsys.readouterr().out
    assert "3 classes, 3x64x64" in out
    folder = tmp_path / "runs" / "photos"
    frame = pd.read_csv(folder / "results.csv")
    assert len(frame) == 4 and set(frame["status"]) <= {"completed", "stopped"}
    assert "stopped" in set(frame["status"])  # ASHA stopped at least one
    best = json.loads((folder / "best_config.json").read_text())
    assert best["val_acc"] > 0.5 and best["test_acc"] > 0.5  # chance is 1/3
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("imagefolder")
    assert len(client.search_runs([experiment.experiment_id])) == 5  # the parent and a child per trial
    assert "registered as imagefolder-best v1; champion: v1 (val_acc" in out

    # The champion, loaded from another folder, classifies the raw test files as the search scored them.
    files = sorted((root / "test").glob("*/*.png"))
    images = np.stack([np.asarray(Image.open(f)) for f in files])  # (N, 40, 40, 3) uint8, as decoded
    truth = [f.parent.name for f in files]
    predicted = predict_elsewhere(uri, "models:/imagefolder-best@champion", images, folder=tmp_path / "elsewhere")
    assert list(predicted.columns) == ["label", *(f"prob_{c}" for c in CLASSES)]
    accuracy = float((predicted["label"] == truth).mean())
    assert accuracy == pytest.approx(best["test_acc"], abs=0.005)


def test_the_registered_models_predict_takes_decoded_images_of_any_size_and_channels(tmp_path):
    from trainables.imagefolder import build_network

    root = write_tree(tmp_path / "gray", mode="L", splits=("train",))
    data = TASK.load(data_dir=str(root), smoke=None, constants={**CONSTANTS, "channels": 1})
    config = {"model": "small_cnn", "width": 0.5}
    stats = {"mean": data.trial["mean"], "std": data.trial["std"]}
    model = build_network(config, channels=1, classes=3, **stats).eval()
    state = {"config": config, "channels": 1, "classes": list(CLASSES), "image_size": 32, **stats}
    files = sorted((root / "train").glob("*/*.png"))[::20]
    images = np.stack([np.asarray(Image.open(f)) for f in files])  # (N, 40, 40): grayscale files decode 2-D
    assert images.shape[1:] == (40, 40)
    gray = TASK.predict(model, state, images[..., None])
    rgb = TASK.predict(model, state, np.repeat(images[..., None], 3, axis=-1))  # converted to the space's one
    assert list(gray.columns) == ["label", *(f"prob_{c}" for c in CLASSES)] and len(gray) == len(files)
    assert (gray["label"] == rgb["label"]).all()
    # What the search scored: the decoded, resized training images through the same network.
    with torch.no_grad():
        expected = model(torch.from_numpy(data.trial["train_x"][:1])).argmax(1).item()
    first = TASK.predict(model, state, data.trial["train_x"][:1].transpose(0, 2, 3, 1))
    assert first["label"][0] == CLASSES[expected]


@pytest.mark.parametrize(("share", "on_device"), [(1.0, True), (0.5, True), (0.25, False)])
def test_images_stay_on_the_device_only_within_the_trials_share_of_it(monkeypatch, share, on_device):
    from trainables import device as placement

    class Card:
        total_memory = 24 * 1024**3

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Card())
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device: share)
    # 2.5 GiB of images: a quarter of a whole 24 GiB card holds them, a quarter of a quarter does not.
    where = placement.place_data(int(2.5 * 1024**3), torch.device("cuda", 0))
    assert where.on_device is on_device
    assert ("kept on the host" in where.reason) is not on_device and "GiB" in where.reason
    assert placement.place_data(10 * 1024**3, torch.device("cpu")).on_device  # the CPU trains where they are


def test_evaluation_reads_the_device_once_and_scores_as_before(tmp_path, monkeypatch):
    import torch.nn.functional as F

    from trainables import imagefolder

    data = TASK.load(data_dir=str(write_tree(tmp_path / "rgb")), smoke=None, constants=CONSTANTS).trial
    torch.manual_seed(0)
    model = imagefolder.build_network({"model": "small_cnn", "width": 0.5}, channels=3, classes=3,
                                      mean=data["mean"], std=data["std"]).eval()  # fmt: skip
    x, y = torch.from_numpy(data["train_x"]), torch.from_numpy(data["train_y"])
    with torch.no_grad():  # as evaluation scored before: one pass, read per batch
        logits = model(x).float()
    expected = (F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item())
    reads = []
    for name in ("item", "cpu", "tolist", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k: (reads.append(_n),
                                                                                             _o(self, *a, **k))[1])
    monkeypatch.setattr(imagefolder, "EVAL_BATCH", 16)  # 108 images: 7 batches
    loss, acc = TASK._scores(model, x, y)
    monkeypatch.undo()
    assert reads == ["tolist"]  # one read of the sums, not two per batch
    assert acc == pytest.approx(expected[1], abs=1e-9) and loss == pytest.approx(expected[0], rel=1e-5)
