"""tuner.driver."""
