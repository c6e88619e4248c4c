"""Tasks: a user's data and model trained for one config. Plain PyTorch: never imports Ray.

- ``task``: the task contract (``train(config, context)``, optional ``load``, ``evaluate``,
  ``build_model``, ``predict``); a user's task imports every name it needs from here.
- ``context``: ``TrialContext``, what ``train`` is given (report, restore, DDP helpers).
- ``task_data``: ``TaskData``, ``on_device``, ``class_frame``: the data a task hands the service.
- ``loading``: a task found by name, loaded (``LoadedTask``) and checked against its space.
- ``fingerprints``: ``data_key`` and ``code_key``, what a replay checks it retrains the same.
- ``loop``: the training loop written once for one process or many (DDP).
- ``device``: a trial's device: cuDNN autotuning, a shared GPU's memory cap, its images on the
  device or the host (by that share), channels-last and bf16 autocast on CUDA.
- ``cifar``: the flagship ``cifar`` task; ``data``: CIFAR-10 on disk (download, checks, splits).
- ``imagefolder``: a user's own images in the ImageFolder layout.
- ``models``: the CIFAR networks; ``optim``: optimizer, schedule, lookahead;
  ``augment``: whole-batch augmentation on the device.
- ``checkpoint``: checkpoint files, loaded without running code; ``load_model``.
- ``footprint``: a model's parameter count and measured inference latency (``params``, ``latency_ms``).
"""
