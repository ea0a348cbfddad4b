"""Attention variants as plain torch modules, one file per slot kind. Imports nothing but torch."""

from .base import (
                   Attention,
                   attention_entropy,
                   attention_modules,
                   attention_parameters,
                   aux_losses,
                   capture_weights,
                   diagnostics,
                   send_reward,
                   survey,
)
from .registry import SLOT_KINDS, VARIANTS, Variant

__all__ = [
    "Attention", "SLOT_KINDS", "VARIANTS", "Variant", "attention_entropy", "attention_modules",
    "attention_parameters", "aux_losses", "capture_weights", "diagnostics", "send_reward",
    "survey",
]
