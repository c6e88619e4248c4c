"""tuner.tracking."""
