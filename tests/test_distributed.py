"""The training loop at world size 2 (gloo, no Ray) against world size 1: the same numbers."""

import gc
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainables.data import synthetic_images
from trainables.loop import DeviceData, train

# The two runs see the same images in the same global batches with the same
# augmentation, and DDP averages gradients; what differs is that BatchNorm
# normalises each half-batch with its own statistics, and float sums run in
# another order. Over 3 epochs that moved the losses by at most 0.22% here.
TOLERANCE = 0.01
CONFIG = dict(
    lr=10.0, momentum=0.85, weight_decay=0.015, batch_size=128, label_smoothing=0.2, width=0.125,
    arch="airbench", epochs=3, seed=0, warmup=0.23, translate=2, flip="alternate", lookahead=True,
    whiten_bias_epochs=1, tta=0,
)  # fmt: skip


def _arrays():
    x, y = synthetic_images(1152, seed=5)
    return {"train_x": x[:1024], "train_y": y[:1024], "val_x": x[1024:], "val_y": y[1024:]}


def _run(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    if world_size > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    data = DeviceData.from_arrays(_arrays(), device=torch.device("cpu"))
    history = []
    train(CONFIG, data=data, device=torch.device("cpu"), rank=rank, world_size=world_size,
          report=lambda m, s: history.append({k: m[k] for k in ("train_loss", "val_loss", "val_acc")}))  # fmt: skip
    if rank == 0:
        with open(out, "w") as f:
            json.dump(history, f)
    if world_size > 1:
        gc.collect()  # DDP's reducer must go before its process group does
        dist.barrier()
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same_curves(single: list[dict], ddp: list[dict]) -> None:
    """Three epochs each, the losses within TOLERANCE of each other, and the DDP run learning."""
    assert len(single) == len(ddp) == 3
    for a, b in zip(single, ddp, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=TOLERANCE)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=TOLERANCE)
    assert ddp[-1]["train_loss"] < ddp[0]["train_loss"]


@pytest.mark.slow
def test_two_gloo_workers_match_one_process(tmp_path):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    _run(0, 1, 0, str(one))
    mp.spawn(_run, args=(2, _free_port(), str(two)), nprocs=2, join=True)
    _same_curves(json.loads(one.read_text()), json.loads(two.read_text()))


# The other tasks at 2 gloo workers against 1 process, through their own train and the context's DDP helpers.
TASKS = {
    "imagefolder": dict(ref="imagefolder", constants={"image_size": 32, "channels": 3, "translate": 2},
                        config=dict(lr=0.003, weight_decay=0.0005, batch_size=64, label_smoothing=0.1,
                                    model="small_cnn", width=0.5, pretrained=False, flip=True, epochs=3, seed=0)),
    # One hidden layer: no dropout, whose masks the ranks would draw apart from one process's.
    "tabular": dict(ref="examples.tabular.task:TASK", constants={"target": "price", "problem": "regression"},
                    config=dict(lr=0.003, weight_decay=0.0001, hidden=32, layers=1, batch_size=64, epochs=3,
                                seed=0)),
}  # fmt: skip


def _run_task(rank: int, world_size: int, port: int, name: str, data_path: str, out: str) -> None:
    import pickle

    from trainables.loading import load_task
    from trainables.task import TrialContext

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    if world_size > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    spec = TASKS[name]
    with open(data_path, "rb") as f:
        data = pickle.load(f)
    history = []
    context = TrialContext(device=torch.device("cpu"), rank=rank, world_size=world_size,
                           reporter=lambda m, s: history.append({k: m[k] for k in ("train_loss", "val_loss")}))
    torch.manual_seed(0)
    load_task(spec["ref"]).train({**spec["config"], **spec["constants"]}, data, context)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(history, f)
    if world_size > 1:
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


@pytest.fixture
def task_data(tmp_path):
    """Each task's trial data, as its load gives it, pickled for the spawned ranks."""
    import pickle
    import sys

    from tests.conftest import ROOT
    from tests.test_imagefolder import write_tree
    from trainables.loading import load_task

    sys.path.insert(0, str(ROOT / "examples" / "tabular"))
    from make_data import houses

    csv = tmp_path / "houses.csv"
    houses(640, seed=0).to_csv(csv, index=False)
    sources = {"imagefolder": str(write_tree(tmp_path / "images", per_class=(96, 96, 96))), "tabular": str(csv)}
    paths = {}
    for name, spec in TASKS.items():
        data = load_task(spec["ref"]).load(data_dir=sources[name], smoke=None, constants=spec["constants"])
        paths[name] = tmp_path / f"{name}.pkl"
        paths[name].write_bytes(pickle.dumps(data.trial))
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TASKS))
def test_each_ddp_task_at_two_gloo_workers_matches_one_process(tmp_path, task_data, name, monkeypatch):
    from tests.conftest import ROOT

    monkeypatch.chdir(ROOT)  # examples.tabular.task is imported from here, in the spawned ranks too
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    _run_task(0, 1, 0, name, str(task_data[name]), str(one))
    mp.spawn(_run_task, args=(2, _free_port(), name, str(task_data[name]), str(two)), nprocs=2, join=True)
    _same_curves(json.loads(one.read_text()), json.loads(two.read_text()))
