"""Models: backbones, DeepLabV3+ layers and head, BatchNorm tools, and the model a config
describes (build). Built from Keras 3 layers and ops. May import segexp.config and segexp.errors."""
