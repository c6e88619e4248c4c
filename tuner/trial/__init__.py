"""The Ray side of a trial: what runs in Tune's trial process and in Ray Train's workers.

- ``trainable``: ``make_trainable``, the Tune function of a search with its resources,
  one per task, for single-process and DDP trials alike.
- ``run``: a trial in one process: settings, device, the task's ``train`` with its
  context, checkpoints, early ends (diverged, infeasible).
- ``ddp``: a trial on N Ray Train workers (gloo on CPU, NCCL on GPUs).
- ``placement``: DDP worker groups that wait for resources: what holds them, and
  ``WorkersNotPlaced`` after the start timeout.
"""
