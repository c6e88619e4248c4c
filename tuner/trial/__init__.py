"""tuner.trial."""
