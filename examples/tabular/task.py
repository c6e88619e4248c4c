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

from trainables.footprint import footprint
from trainables.task import Diverged, TaskData, TaskError, TrialContext, class_frame

PROBLEMS = ("regression", "classification")
SPLIT_SEED = 0


def fit_encoding(frame: pd.DataFrame, target: str, train_rows: np.ndarray) -> list[dict[str, Any]]:
    """How each feature column becomes numbers, from the training rows only: numeric columns are
    standardised (``mean``, ``std``), text columns one-hot encoded (``categories``)."""
    encoding: list[dict[str, Any]] = []
    for col in frame.columns.drop(target):
        values = frame[col].iloc[train_rows]
        if pd.api.types.is_numeric_dtype(values):
            train = values.astype(float)
            mean = float(train.mean()) if train.notna().any() else 0.0
            std = float(train.std()) if train.notna().sum() > 1 else 1.0
            encoding.append({"column": str(col), "mean": mean, "std": std if std > 0 else 1.0})
        else:
            categories = sorted(values.dropna().astype(str).unique())
            if categories:  # empty in the training rows: nothing to learn from
                encoding.append({"column": str(col), "categories": categories})
    if not encoding:
        raise TaskError(f"the table has no column besides the target '{target}': add feature columns")
    return encoding


def encode(frame: pd.DataFrame, encoding: list[dict[str, Any]]) -> np.ndarray:
    """The features of ``frame``'s rows as float32, by ``encoding``: what the network reads.

    A missing number counts as the column's training mean; a category unseen in
    training, or missing, sets none of its one-hot columns.
    """
    missing = [e["column"] for e in encoding if e["column"] not in frame.columns]
    if missing:
        raise ValueError(f"the rows lack the column(s) {', '.join(missing)}: pass the table's own columns")
    parts = []
    for e in encoding:
        values = frame[e["column"]]
        if "categories" in e:
            text = np.array([str(v) if pd.notna(v) else None for v in values], dtype=object)
            parts.append(np.stack([text == c for c in e["categories"]], axis=1))
        else:
            numbers = pd.to_numeric(values, errors="coerce").astype(float).fillna(e["mean"])
            parts.append(((numbers - e["mean"]) / e["std"]).to_numpy()[:, None])
    return np.concatenate(parts, axis=1).astype(np.float32)


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
    supports_ddp = True  # each rank trains on its part of every global batch (context.shard)

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
        encoding = fit_encoding(frame, target, train)
        x = encode(frame, encoding)
        classes: list[str] = []
        if problem == "classification":
            classes = sorted(frame[target].astype(str).unique())  # the output index is the class's place here
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
        # What the registered model needs to read raw rows and answer in the table's terms.
        serving = {"encoding": encoding, "classes": classes, "target": str(target)}
        trial = {"x_train": x[train], "y_train": y[train], "x_val": x[val], "y_val": y[val],
                 "problem": problem, "outputs": outputs, "scale": scale, "serving": serving}  # fmt: skip
        description = f"{len(train)} train / {len(val)} val / {len(test)} test rows, {x.shape[1]} features"
        example = frame.iloc[test[:2]].drop(columns=[target]).reset_index(drop=True)  # raw rows, as in the CSV
        return TaskData(trial, {"x": x[test], "y": y[test], "problem": problem}, description, example)

    def metrics(self, constants: dict[str, Any]) -> dict[str, str]:
        size = {"params": "min", "latency_ms": "min"}  # trainables.footprint: what the model costs to keep and run
        if constants.get("problem") == "classification":
            return {"val_acc": "max", "val_loss": "min", "train_loss": "min", **size}
        return {"val_rmse": "min", "val_loss": "min", "train_loss": "min", **size}

    def objective(self, constants: dict[str, Any]) -> tuple[str, str]:
        """The problem decides what the search goes by, unless the space names a metric and mode itself."""
        return ("val_acc", "max") if constants.get("problem") == "classification" else ("val_rmse", "min")

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
        batch = min(int(config["batch_size"]), len(y))
        steps = max(1, len(y) // batch)  # whole batches only: each rank's part of one is the same size
        generator = torch.Generator().manual_seed(int(config["seed"]))
        mlp = context.distributed(model[0])  # the MLP alone (regression trains on the standardised target)
        size = footprint(model, lambda: model(x_val[:1]), device=device)  # one row answered: reported every epoch
        for epoch in range(first, int(config["epochs"]) + 1):
            generator.manual_seed(int(config["seed"]) * 1000 + epoch)  # the same order again after a resume
            model.train()
            total = 0.0
            order = torch.randperm(len(y), generator=generator)  # the same on every rank
            for step in range(steps):
                idx = context.shard(order[step * batch : (step + 1) * batch]).to(device)
                out = mlp(x[idx])
                if problem == "classification":
                    loss = loss_fn(out, y[idx])
                else:
                    loss = loss_fn(out.squeeze(1), (y[idx] - mean) / std)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item()
            train_loss = context.mean(total / steps)
            if not math.isfinite(train_loss):
                raise Diverged(epoch=epoch, loss=train_loss)
            scores = self._scores(model, x_val, y_val, problem)
            metrics = {"epoch": epoch, "train_loss": train_loss, **{f"val_{k}": v for k, v in scores.items()}, **size}
            context.report(metrics, lambda: {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                             "dims": [int(x.shape[1]), int(data["outputs"])],
                                             "scale": list(data["scale"]), **data["serving"]})  # fmt: skip

    def evaluate(self, state: dict[str, Any], held_out: dict[str, Any], *, device: torch.device) -> dict[str, float]:
        model = self.build_model(state).to(device)
        x, y = (torch.as_tensor(held_out[k]).to(device) for k in ("x", "y"))
        return {f"test_{k}": v for k, v in self._scores(model, x, y, held_out["problem"]).items()}

    def predict(self, model: nn.Module, state: dict[str, Any], inputs: pd.DataFrame) -> pd.DataFrame:
        """Rows of the table's own columns (the target may be there: it is ignored) -> the target's class names
        and their probabilities, or its values in the table's units."""
        frame = inputs if isinstance(inputs, pd.DataFrame) else pd.DataFrame(inputs)
        x = torch.from_numpy(encode(frame, state["encoding"]))
        model.eval()
        out = model(x.to(next(model.parameters()).device)).float()
        if state["classes"]:
            return class_frame(out, state["classes"])
        return pd.DataFrame({state["target"]: out.detach().squeeze(1).cpu().numpy().astype(float)})

    def build_model(self, state: dict[str, Any]) -> nn.Module:
        inputs, outputs = state["dims"]
        model = self._model(state["config"], inputs=inputs, outputs=outputs, scale=state["scale"])
        model.load_state_dict(state["model"])
        return model.eval()


TASK = TabularTask()
