"""ECA against timm's EcaModule (the same weights give the same output) and attnbench's slot protocol."""

import pytest
import torch
from my_attention.eca import ECA, adaptive_kernel

from attnbench.check_variant import check_variant


def test_passes_the_slot_protocol_checks():
    assert check_variant(ECA, "feature", compile_backend="off") == []


def test_matches_timm_eca_with_the_same_weights():
    timm = pytest.importorskip("timm")
    ours, theirs = ECA(64), timm.layers.EcaModule(64)
    assert ours.conv.weight.shape == theirs.conv.weight.shape == (1, 1, adaptive_kernel(64))
    theirs.conv.weight.data.copy_(ours.conv.weight.data)
    x = torch.randn(2, 64, 5, 5)
    torch.testing.assert_close(ours(x), theirs(x))
