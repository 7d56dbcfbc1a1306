"""Reporting: matplotlib figures (learning curves, predictions, confusion matrix, class
histogram). Imports nothing of segexp."""
