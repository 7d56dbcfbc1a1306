"""Data: datasets (folder layouts, readers, the generated sets), checks, augmentation, the sample
cache and the tf.data pipeline. May import segexp.config and segexp.errors."""
