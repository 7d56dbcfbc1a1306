"""segexp: Hydra-configured DeepLabV3+ semantic segmentation experiments tracked in MLflow."""

__version__ = "0.1.0"
