"""The smallest task: a function that trains an MLP on two interleaved spirals and reports each epoch."""

import torch
from torch import nn


def spirals(n: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)  # the same data for every trial
    t = torch.rand(n, generator=g) * 3 * torch.pi
    label = torch.randint(0, 2, (n,), generator=g)
    angle = t + label * torch.pi
    x = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], 1) / 10 + 0.05 * torch.randn(n, 2, generator=g)
    return x, label


def train(config, context):
    x, y = spirals(2000)
    (x_train, y_train), (x_val, y_val) = (x[:1500], y[:1500]), (x[1500:], y[1500:])
    model = nn.Sequential(nn.Linear(2, config["hidden"]), nn.Tanh(), nn.Linear(config["hidden"], 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    for epoch in range(context.restore(model, optimizer), config["epochs"] + 1):
        for batch in torch.randperm(1500).split(100):
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            acc = (model(x_val).argmax(1) == y_val).float().mean().item()
        context.report({"epoch": epoch, "val_acc": acc}, model=model, optimizer=optimizer)
