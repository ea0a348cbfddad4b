"""Data sets per task family: embedded sets that need no network, hub loaders, and the user's own files."""

from collections.abc import Callable

from .fewshot import load_cub, load_fewshot_folder, load_miniimagenet, load_omniglot
from .glyphs import load_glyphs
from .images import load_cifar, load_digits, load_image_folder

# data config ``name`` -> loader; the loader's keyword arguments are the other keys of the data config
LOADERS: dict[str, Callable] = {
    "digits": load_digits,
    "cifar": load_cifar,
    "image_folder": load_image_folder,
    "glyphs": load_glyphs,
    "omniglot": load_omniglot,
    "miniimagenet": load_miniimagenet,
    "cub": load_cub,
    "fewshot_folder": load_fewshot_folder,
}

__all__ = ["LOADERS"]
