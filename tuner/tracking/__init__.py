"""tuner.tracking.

client: the connection to MLflow that never fails a search (retries, calls kept through an outage, fail fast).
"""
