"""MLflow: the search's runs, the model registry, pushing a search later, and the UI.

- ``client``: ``ResilientClient``, the connection that never fails a search: retries, calls
  kept through an outage and replayed, fail fast where the server is known down.
- ``runs``: ``MlflowTracker``, a Tune callback on that client: one parent run per search,
  one child run per trial, tags, the example inputs.
- ``epochs``: its per-epoch half: metrics written in batches, not while a trial waits,
  and what a killed driver lost caught up from the trial's files.
- ``registry``: the best checkpoint registered as a pyfunc on raw inputs, and which
  version is champion.
- ``served_model``: the registered model's code (MLflow models from code).
- ``sync``: ``run_tune.py --sync FOLDER``, a finished search pushed to a server, idempotently.
- ``mlflow_ui``: ``python -m tuner.tracking.mlflow_ui``, the UI on the local store, stopped
  with everything it started.
"""
