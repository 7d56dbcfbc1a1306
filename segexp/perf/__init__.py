"""Performance: speed and memory measurement, the benchmark report, the keras.io way, time to
accuracy, the model table and FLOPs. May import training and everything below it."""
