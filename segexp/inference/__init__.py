"""Inference: the predictor (resize, test-time augmentation, sliding window), finding a model
from what a user types, and the MLflow pyfunc model and its logging. May import tracking and
everything below it."""
