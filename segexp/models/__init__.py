"""DeepLabV3+ model: backbones, ASPP and decoder, built from Keras 3 layers."""
