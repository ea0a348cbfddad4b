"""Networks with slots. They know nothing of data sets or training: inputs in, features out."""

from torch import nn

from .base import SlotFactory
from .fewshot import Conv4, ResNet12
from .resnet import ResNet

# backbone config ``name`` -> class; a class's ``slots`` says which slot kinds it offers
BACKBONES: dict[str, type[nn.Module]] = {
    "resnet": ResNet,
    "conv4": Conv4,
    "resnet12": ResNet12,
}

__all__ = ["BACKBONES", "Conv4", "ResNet", "ResNet12", "SlotFactory"]
