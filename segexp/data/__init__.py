"""Datasets (file lists, class names, colormaps) and the tf.data input pipeline."""
