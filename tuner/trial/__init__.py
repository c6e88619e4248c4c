"""The Ray side of a trial: what runs in Tune's trial process and in Ray Train's workers.

- ``trainable``: ``make_trainable``, the Tune function of a search with its resources,
  one per task, for single-process and DDP trials alike.
- ``settings``: what every trial receives beside its hyperparameters (``TrialSettings``, ``DataRef``).
- ``process``: one training process, written once for a single-process trial and each DDP
  rank: the task's ``train`` with its context, reports, checkpoints, early ends (diverged,
  out of memory: infeasible).
- ``run``: a trial in one process, reporting to Tune.
- ``ddp``: a trial on N Ray Train workers (gloo on CPU, NCCL on GPUs), each rank running
  ``process``; an out-of-memory on any rank ends the trial infeasible, without retries.
- ``placement``: DDP worker groups that wait for resources: what holds them, and
  ``WorkersNotPlaced`` after the start timeout.
"""
