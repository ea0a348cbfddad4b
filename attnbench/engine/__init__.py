"""The training loop, driving any task through the protocol in ``protocol.py``."""

from .protocol import Task
from .trainer import (
    Interrupted,
    NonFiniteLoss,
    Trainer,
    TrainState,
    check_fingerprint,
    check_resumable,
    forward_flops,
    resolve_device,
)

__all__ = ["Interrupted", "NonFiniteLoss", "Task", "TrainState", "Trainer", "check_fingerprint", "check_resumable",
           "forward_flops", "resolve_device"]
