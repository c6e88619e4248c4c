"""A user's own task: an MLP on a CSV table, written against ``trainables.task`` and nothing else of the service.

The space (``space.yaml`` beside this file) names it as
``task: examples.tabular.task:TASK`` and sets, in its ``constants``, the
``target`` column and the ``problem`` (``regression``: the metric is
``val_rmse``; ``classification``: ``val_acc``). ``--data-dir`` is the CSV file.
Numeric columns are standardised and text columns one-hot encoded, both with
statistics of the training rows only; rows are split 70/15/15 into train,
validation and test with a fixed seed.

    python examples/tabular/make_data.py --out data/houses.csv
    python run_tune.py --space examples/tabular/space.yaml --data-dir data/houses.csv
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from trainables.task import Diverged, TaskData, TaskError, TrialContext

PROBLEMS = ("regression", "classification")
SPLIT_SEED = 0


def _encode(frame: pd.DataFrame, target: str, train_rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Features as float32: numeric columns standardised, text columns one-hot (train rows' statistics)."""
    columns, names = [], []
    for col in frame.columns.drop(target):
        values = frame[col]
        if pd.api.types.is_numeric_dtype(values):
            train = values.iloc[train_rows].astype(float)
            mean, std = train.mean(), train.std() or 1.0
            columns.append(((values.astype(float).fillna(mean) - mean) / std).to_numpy()[:, None])
            names.append(col)
        else:
            categories = sorted(values.iloc[train_rows].dropna().astype(str).unique())
            if not categories:
                continue  # empty in the training rows: nothing to learn from
            onehot = np.stack([(values.astype(str) == c).to_numpy() for c in categories], axis=1)
            columns.append(onehot)
            names += [f"{col}={c}" for c in categories]
    if not columns:
        raise TaskError(f"the table has no column besides the target '{target}': add feature columns")
    return np.concatenate(columns, axis=1).astype(np.float32), names


class MLP(nn.Sequential):
    """``layers`` hidden layers of ``hidden`` units, with dropout between them."""

    def __init__(self, *, inputs: int, outputs: int, hidden: int, layers: int, dropout: float) -> None:
        parts: list[nn.Module] = []
        width = inputs
        for i in range(layers):
            parts += [nn.Linear(width, hidden), nn.ReLU()] + ([nn.Dropout(dropout)] if i < layers - 1 else [])
            width = hidden
        super().__init__(*parts, nn.Linear(width, outputs))


class Rescale(nn.Module):
    """Turns standardised predictions back into the target's units: ``x * std + mean``."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


class TabularTask:
    """Regression or classification on a CSV table with an MLP."""

    def load(self, *, data_dir: str, smoke: dict[str, int] | None, constants: dict[str, Any]) -> TaskData:
        target, problem = constants.get("target"), constants.get("problem")
        if problem not in PROBLEMS:
            raise TaskError(f"the space's constants must set problem to one of {', '.join(PROBLEMS)}, not {problem!r}")
        path = Path(data_dir)
        if not path.is_file():
            raise TaskError(f"--data-dir {path} is not a CSV file: pass the table to tune on")
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise TaskError(f"{path} is not a readable CSV table ({e}): fix or replace the file") from None
        if target not in frame.columns:
            columns = ", ".join(map(str, frame.columns))
            raise TaskError(f"{path} has no column '{target}' (the space's target); its columns: {columns}")
        frame = frame[frame[target].notna()].reset_index(drop=True)
        if len(frame) < 20:
            raise TaskError(f"{path} has {len(frame)} rows with a target: a search needs at least 20")
        order = np.random.default_rng(SPLIT_SEED).permutation(len(frame))
        n_val = n_test = max(1, len(frame) * 15 // 100)
        test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
        if smoke:
            train, val, test = train[: smoke["train_size"]], val[: smoke["val_size"]], test[: smoke["test_size"]]
        x, _ = _encode(frame, target, train)
        if problem == "classification":
            classes = sorted(frame[target].astype(str).unique())
            if len(classes) < 2:
                raise TaskError(f"the target '{target}' has one class ({classes[0]}): nothing to classify")
            y = frame[target].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
            outputs = len(classes)
        else:
            if not pd.api.types.is_numeric_dtype(frame[target]):
                raise TaskError(f"the target '{target}' is not numeric: set problem: classification in the space")
            y = frame[target].to_numpy(np.float32)
            outputs = 1
        # Regression trains on the target standardised with the training rows' statistics.
        scale = [float(y[train].mean()), float(y[train].std() or 1.0)] if problem == "regression" else [0.0, 1.0]
        trial = {"x_train": x[train], "y_train": y[train], "x_val": x[val], "y_val": y[val],
                 "problem": problem, "outputs": outputs, "scale": scale}  # fmt: skip
        description = f"{len(train)} train / {len(val)} val / {len(test)} test rows, {x.shape[1]} features"
        return TaskData(trial, {"x": x[test], "y": y[test], "problem": problem}, description, x[test][:2])

    def metrics(self, constants: dict[str, Any]) -> tuple[str, ...]:
        scores = ("acc", "loss") if constants.get("problem") == "classification" else ("rmse", "loss")
        return (*(f"val_{s}" for s in scores), "train_loss")

    def config_keys(self, constants: dict[str, Any]) -> tuple[str, ...]:
        # dropout is conditional (two or more layers): read only where the trial has it.
        return ("hidden", "layers", "lr", "weight_decay", "batch_size", "epochs", "seed")

    def _model(self, config: dict[str, Any], *, inputs: int, outputs: int, scale: list[float]) -> nn.Module:
        """The MLP, then ``Rescale``: the network predicts in the target's own units."""
        # dropout is a conditional parameter of the space: only nets with 2+ layers have it.
        dropout = float(config["dropout"]) if "dropout" in config else 0.0
        mlp = MLP(inputs=inputs, outputs=outputs, hidden=int(config["hidden"]), layers=int(config["layers"]),
                  dropout=dropout)  # fmt: skip
        return nn.Sequential(mlp, Rescale(*scale))

    def _scores(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, problem: str) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            out = model(x)
        if problem == "classification":
            loss = nn.functional.cross_entropy(out, y).item()
            return {"loss": loss, "acc": (out.argmax(1) == y).float().mean().item()}
        mse = nn.functional.mse_loss(out.squeeze(1), y).item()  # in the target's units
        return {"loss": mse, "rmse": math.sqrt(mse)}

    def train(self, config: dict[str, Any], data: dict[str, Any], context: TrialContext) -> None:
        device, problem = context.device, data["problem"]
        torch.manual_seed(int(config["seed"]))
        x, y = (torch.as_tensor(data[k]).to(device) for k in ("x_train", "y_train"))
        x_val, y_val = (torch.as_tensor(data[k]).to(device) for k in ("x_val", "y_val"))
        model = self._model(config, inputs=x.shape[1], outputs=data["outputs"], scale=data["scale"]).to(device)
        mean, std = data["scale"]
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(config["lr"]),
                                      weight_decay=float(config["weight_decay"]))  # fmt: skip
        first = 1
        if context.start is not None:
            model.load_state_dict(context.start["model"])
            optimizer.load_state_dict(context.start["optimizer"])
            for group in optimizer.param_groups:  # this trial's values (PBT may have changed them), not the saved ones
                group.update(lr=float(config["lr"]), weight_decay=float(config["weight_decay"]))
            first = int(context.start["epoch"]) + 1
        loss_fn = nn.functional.cross_entropy if problem == "classification" else nn.functional.mse_loss
        batch = int(config["batch_size"])
        generator = torch.Generator().manual_seed(int(config["seed"]))
        for epoch in range(first, int(config["epochs"]) + 1):
            generator.manual_seed(int(config["seed"]) * 1000 + epoch)  # the same order again after a resume
            model.train()
            total = 0.0
            for idx in torch.randperm(len(y), generator=generator).split(batch):
                idx = idx.to(device)
                out = model[0](x[idx])  # the MLP alone: regression trains on the standardised target
                if problem == "classification":
                    loss = loss_fn(out, y[idx])
                else:
                    loss = loss_fn(out.squeeze(1), (y[idx] - mean) / std)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
            train_loss = total / len(y)
            if not math.isfinite(train_loss):
                raise Diverged(epoch=epoch, loss=train_loss)
            scores = self._scores(model, x_val, y_val, problem)
            metrics = {"epoch": epoch, "train_loss": train_loss, **{f"val_{k}": v for k, v in scores.items()}}
            context.report(metrics, lambda: {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                             "dims": [int(x.shape[1]), int(data["outputs"])],
                                             "scale": list(data["scale"])})  # fmt: skip

    def evaluate(self, state: dict[str, Any], held_out: dict[str, Any], *, device: torch.device) -> dict[str, float]:
        model = self.build_model(state).to(device)
        x, y = (torch.as_tensor(held_out[k]).to(device) for k in ("x", "y"))
        return {f"test_{k}": v for k, v in self._scores(model, x, y, held_out["problem"]).items()}

    def build_model(self, state: dict[str, Any]) -> nn.Module:
        inputs, outputs = state["dims"]
        model = self._model(state["config"], inputs=inputs, outputs=outputs, scale=state["scale"])
        model.load_state_dict(state["model"])
        return model.eval()


TASK = TabularTask()
