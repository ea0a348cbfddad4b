"""Data sets per task family: embedded sets that need no network, hub loaders, and the user's own files."""

from collections.abc import Callable

from .cache import last_load, timed_load
from .captions import load_caption_file, load_caption_hub, load_coco, load_shapes
from .fewshot import load_cub, load_fewshot_folder, load_miniimagenet, load_omniglot
from .glyphs import load_glyphs
from .images import load_cifar, load_digits, load_image_folder
from .reviews import load_reviews
from .synthetic import load_synthetic
from .text import load_hub_text, load_text_file

# data config ``name`` -> loader; the loader's keyword arguments are the other keys of the data config. Each is
# timed (``last_load``: the run's "data ready" line)
LOADERS: dict[str, Callable] = {name: timed_load(loader) for name, loader in {
    "digits": load_digits,
    "cifar": load_cifar,
    "image_folder": load_image_folder,
    "synthetic": load_synthetic,
    "reviews": load_reviews,
    "hub_text": load_hub_text,
    "text_file": load_text_file,
    "shapes": load_shapes,
    "caption_hub": load_caption_hub,
    "coco": load_coco,
    "caption_file": load_caption_file,
    "glyphs": load_glyphs,
    "omniglot": load_omniglot,
    "miniimagenet": load_miniimagenet,
    "cub": load_cub,
    "fewshot_folder": load_fewshot_folder,
}.items()}

__all__ = ["LOADERS", "last_load"]
