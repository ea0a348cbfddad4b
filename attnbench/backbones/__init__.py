"""Networks with slots. They know nothing of data sets or training: inputs in, features out."""

from torch import nn

from .base import SlotFactory
from .captioner import CNNCaptioner, ResNetCaptioner
from .fewshot import Conv4, ResNet12
from .resnet import ResNet
from .speednet import SpeedNet
from .text import BiGRU, TextCNN, TransformerText
from .timm import TimmBackbone

# backbone config ``name`` -> class; a class's ``slots`` says which slot kinds it offers
BACKBONES: dict[str, type[nn.Module]] = {
    "resnet": ResNet,
    "speednet": SpeedNet,
    "bigru": BiGRU,
    "textcnn": TextCNN,
    "text_transformer": TransformerText,
    "caption_cnn": CNNCaptioner,
    "caption_resnet": ResNetCaptioner,
    "conv4": Conv4,
    "resnet12": ResNet12,
    "timm": TimmBackbone,  # any timm model (the optional timm extra)
}

__all__ = ["BACKBONES", "BiGRU", "CNNCaptioner", "Conv4", "ResNet", "ResNet12", "ResNetCaptioner", "SlotFactory",
           "SpeedNet", "TextCNN", "TimmBackbone", "TransformerText"]
