"""Tasks: a user's data and model trained for one config. Plain PyTorch: never imports Ray.

- ``task``: the task contract (``train(config, context)``, optional ``load``, ``evaluate``,
  ``build_model``, ``predict``), ``TrialContext``, loading a task by name.
- ``loop``: the training loop written once for one process or many (DDP).
- ``cifar``: the flagship ``cifar`` task; ``data``: CIFAR-10 on disk (download, checks, splits).
- ``imagefolder``: a user's own images in the ImageFolder layout.
- ``models``: the CIFAR networks; ``optim``: optimizer, schedule, lookahead;
  ``augment``: whole-batch augmentation on the device.
- ``checkpoint``: checkpoint files, loaded without running code; ``load_model``.
"""
