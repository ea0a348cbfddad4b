"""Random images of a chosen shape with random labels: nothing to learn, for timing (``attnbench bench``).

The images are uint8 like every real source, so the data path (device-resident tensors, normalisation,
batched augmentation) does exactly the work it does on CIFAR.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from .images import ImageData, Split


def load_synthetic(channels: int = 3, image_size: int = 32, classes: int = 10, train_size: int = 1024,
                   val_size: int = 256, test_size: int = 256, seed: int = 0) -> ImageData:
    """``train_size``/``val_size``/``test_size`` images of ``channels``×``image_size``×``image_size``."""
    for name, value in (("channels", channels), ("image_size", image_size), ("train_size", train_size),
                        ("val_size", val_size), ("test_size", test_size)):
        if value < 1:
            raise UserError(f"data.{name} must be at least 1, got {value}")
    if classes < 2:
        raise UserError(f"data.classes must be at least 2, got {classes}")
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        images = torch.randint(0, 256, (n, channels, image_size, image_size), dtype=torch.uint8, generator=g)
        return Split(images, torch.randint(0, classes, (n,), generator=g))

    return ImageData(split(train_size), split(val_size), split(test_size), [str(c) for c in range(classes)])
