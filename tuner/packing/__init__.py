"""GPU shares: how many trials one GPU runs at once.

- ``probe``: ``--gpus-per-trial auto`` measured: 1, 2, 4, 8 probe trials on one GPU,
  their throughput and utilisation (``UtilisationSampler`` reads nvidia-smi).
- ``shares``: the share a search uses, the space's default or the probe's answer, printed
  and saved with the settings.
"""
