"""Evaluation: confusion-matrix metrics, the evaluator (each image at its own size), the
per-class table and the trivial baseline. May import inference and everything below it."""
