"""A trial out of GPU memory ends ``infeasible``, saying why, whether it runs in one process or on 2 DDP workers.

On CPU no real CUDA allocation fails: the task raises PyTorch's own
``torch.OutOfMemoryError`` at a given epoch, on the last rank alone, while the
other rank waits for it in a collective (the case where a rank that stopped
alone would leave its peers waiting for ever).
"""

import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import tuner
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
OOM_EPOCH = 2
SPACE = """
name: oom
task: tests.test_trial_oom:TASK
metric: val_acc
mode: max
params:
  batch_size: {{kind: choice, choices: [4096]}}
constants: {{oom_epoch: {oom_epoch}, starts: "{starts}"}}
budget: {{num_samples: 1, max_epochs: 3, grace_period: 3, reduction_factor: 2}}
"""


class OutOfMemoryTask:
    """Trains a linear layer on nothing, and runs out of memory at ``oom_epoch`` on the last rank."""

    supports_ddp = True

    def train(self, config, data, context):
        if context.rank == 0:
            with open(config["starts"], "a") as f:  # one line per start of the training: a retry would add one
                f.write("started\n")
        model = context.distributed(nn.Linear(2, 2))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for epoch in range(context.restore(model, optimizer), config["epochs"] + 1):
            if epoch == config["oom_epoch"] and context.rank == context.world_size - 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            acc = context.mean(0.5)  # a collective: at world size 2, rank 0 waits here for the rank out of memory
            context.report({"epoch": epoch, "val_acc": acc}, model=model, optimizer=optimizer)


TASK = OutOfMemoryTask()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_trial_out_of_memory_ends_infeasible_saying_why(tmp_path, ray_local, monkeypatch, workers):
    monkeypatch.chdir(ROOT)  # the space's task, tests.test_trial_oom:TASK, is imported from here by the workers
    space = tmp_path / "oom.yaml"
    starts = tmp_path / "starts.txt"
    space.write_text(SPACE.format(starts=starts, oom_epoch=OOM_EPOCH))
    out = io.StringIO()
    result = tuner.search(str(space), name=f"oom{workers}", data_dir=str(tmp_path), storage_path=str(tmp_path / "runs"),
                          mlflow_uri=f"sqlite:///{tmp_path}/mlflow.db", workers_per_trial=workers, gpus_per_trial=0,
                          cpus_per_trial=2, out=out)  # fmt: skip
    assert result.table["status"].tolist() == ["infeasible"], out.getvalue()
    assert result.table["epochs"].tolist() == [OOM_EPOCH]
    # Every report, as Tune keeps it (progress.csv keeps only the first report's columns).
    lines = (Path(result.table["path"].iloc[0]) / "result.json").read_text().splitlines()
    reports = [json.loads(line) for line in lines if line.strip()]
    assert [r["epoch"] for r in reports] == list(range(1, OOM_EPOCH + 1))  # not retried: epoch 2 once
    assert reports[-1]["infeasible"] == 1
    reason = reports[-1]["end_reason"]
    assert reason.startswith(f"out of GPU memory at epoch {OOM_EPOCH} with config batch_size=4096, ")
    assert f"oom_epoch={OOM_EPOCH}" in reason and "a smaller batch, or fewer trials or workers per GPU" in reason
    assert starts.read_text() == "started\n"  # Train did not restart the group to run out of memory again
    assert "1 trial(s) ran out of GPU memory (configuration infeasible)" in out.getvalue()
    assert f"  {result.table['trial_id'].iloc[0]}: {reason}" in out.getvalue()  # the summary says why, and the fix
