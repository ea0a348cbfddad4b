"""Where results go: the run directory (always), the terminal (rich) and Weights & Biases."""

from .run import RunDirectory, atomic_write, json_ready
from .wandb_logger import Logger, create_logger, explicit_keys

__all__ = ["Logger", "RunDirectory", "atomic_write", "create_logger", "explicit_keys", "json_ready"]
