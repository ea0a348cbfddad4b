"""Where results go: the run directory (always), the terminal (rich) and Weights & Biases."""

from .run import RunDirectory, atomic_write
from .wandb_logger import Logger, create_logger

__all__ = ["Logger", "RunDirectory", "atomic_write", "create_logger"]
