"""raypose: a better human pose estimator than stock KeypointRCNN, and the recipe that gets there."""

__version__ = "0.1.0"
