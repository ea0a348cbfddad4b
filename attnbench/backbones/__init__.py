"""Networks with slots. They know nothing of data sets or training: inputs in, features out."""

from torch import nn

from .base import SlotFactory
from .resnet import ResNet
from .text import BiGRU, TextCNN, TransformerText

# backbone config ``name`` -> class; a class's ``slots`` says which slot kinds it offers
BACKBONES: dict[str, type[nn.Module]] = {
    "resnet": ResNet,
    "bigru": BiGRU,
    "textcnn": TextCNN,
    "text_transformer": TransformerText,
}

__all__ = ["BACKBONES", "BiGRU", "ResNet", "SlotFactory", "TextCNN", "TransformerText"]
