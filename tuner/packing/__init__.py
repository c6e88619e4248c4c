"""tuner.packing."""
