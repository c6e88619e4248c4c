"""tuner.trial.

process: one training process of a trial (single-process, or one DDP rank): reports, checkpoints, early ends.
settings: what every trial receives beside its hyperparameters (TrialSettings, DataRef).
"""
