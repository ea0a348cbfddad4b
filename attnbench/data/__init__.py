"""Data sets per task family: embedded sets that need no network, hub loaders, and the user's own files."""

from collections.abc import Callable

from .images import load_cifar, load_digits, load_image_folder
from .synthetic import load_synthetic

# data config ``name`` -> loader; the loader's keyword arguments are the other keys of the data config
LOADERS: dict[str, Callable] = {
    "digits": load_digits,
    "cifar": load_cifar,
    "image_folder": load_image_folder,
    "synthetic": load_synthetic,
}

__all__ = ["LOADERS"]
