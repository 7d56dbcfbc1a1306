"""Tracking: the MLflow store, a run's folder link and outbox, its lifecycle (open, finish),
what it records, sweeps and their summaries. May import data, models, reporting, config,
errors and atomic; never the model code above it (a model sender is passed in)."""
