"""Networks with slots. They know nothing of data sets or training: inputs in, features out."""

from torch import nn

from .base import SlotFactory
from .resnet import ResNet
from .speednet import SpeedNet

# backbone config ``name`` -> class; a class's ``slots`` says which slot kinds it offers
BACKBONES: dict[str, type[nn.Module]] = {
    "resnet": ResNet,
    "speednet": SpeedNet,
}

__all__ = ["BACKBONES", "ResNet", "SlotFactory", "SpeedNet"]
