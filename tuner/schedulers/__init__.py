"""tuner.schedulers."""
