"""Reporting: matplotlib figures (learning curves, per-class IoU, predictions, confusion matrix,
class histogram). Imports nothing of segexp outside this package."""
