"""Data: datasets (folder layouts, readers, the generated sets), checks, augmentation, the sample
cache and the input pipelines (samples.py shared by tf.data's pipeline.py and the TensorFlow-free
loader.py). May import segexp.config and segexp.errors."""
