"""``python -m attnbench`` (what torchrun starts): the same command line as ``attnbench``."""

from .cli import entry

entry()
