"""Matched controls: each switch removes exactly what it names and keeps the rest, and refuses to be set where it
has nothing to turn off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from runner import attnbench

from attnbench.attention.align import GlobalAttention, HardAttention, LocalAttention, SoftAttention
from attnbench.attention.pair import CoAttention, CrossAttention
from attnbench.attention.pool import KMaxPool, MeanPool, MultiQueryAttention
from attnbench.backbones.base import ProjectedReadout, pool_readout


def pairs(e: int = 2, q: int = 3, w: int = 4, n: int = 9, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Class maps (E, 1, W, N, D) against query maps (E, Q, 1, N, D), as the few-shot task pairs them."""
    torch.manual_seed(0)
    return torch.randn(e, 1, w, n, d), torch.randn(e, q, 1, n, d)


def test_cross_control_returns_both_maps_for_every_pair_and_has_no_meta_learner() -> None:
    a, b = pairs()
    control = CrossAttention(8, 9, reweight=False)
    out_a, out_b = control(a, b)
    assert out_a.shape == out_b.shape == (2, 3, 4, 9, 8)
    assert torch.equal(out_a, a.expand_as(out_a)) and torch.equal(out_b, b.expand_as(out_b))
    assert sum(p.numel() for p in control.parameters()) == 0
    assert control.classifier == CrossAttention(8, 9).classifier  # the same classifier and loss weights
    changed_a, _ = CrossAttention(8, 9)(a, b)
    assert not torch.allclose(changed_a, a.expand_as(changed_a))  # the attention itself does re-weight


def test_coattn_control_is_the_mean_of_the_other_map_through_the_same_fusion() -> None:
    a, b = pairs()
    full, control = CoAttention(8, 9, fuse_kernel=1), CoAttention(8, 9, fuse_kernel=1, reweight=False)
    assert control.affinity is None
    names = {n for n, _ in full.named_parameters()} - {n for n, _ in control.named_parameters()}
    assert names == {"affinity.weight"}  # gate, fusion convs and norms are kept
    control.load_state_dict(full.state_dict(), strict=False)
    control.eval()
    out_a, out_b = control(a, b)
    # what the control feeds its fusion: the other map's plain mean at every position, gated
    z_a = b.mean(-2, keepdim=True).expand(2, 3, 4, 9, 8)
    z_a = z_a * torch.sigmoid(control.gate(z_a))
    expected = control._fuse(z_a, a, None, control.fuse_a, control.norm_a)
    torch.testing.assert_close(out_a, expected)
    assert out_b.shape == (2, 3, 4, 9, 8)


@pytest.mark.parametrize("cls", [SoftAttention, HardAttention, GlobalAttention, LocalAttention])
def test_every_decoder_attention_takes_the_same_beta_gate(cls: type) -> None:
    with_gate, without = cls(16, 12, gate=True), cls(16, 12, gate=False)
    assert sum(p.numel() for p in with_gate.parameters()) - sum(p.numel() for p in without.parameters()) == 17
    assert SoftAttention(16, 12).gate is not None and HardAttention(16, 12).gate is not None  # the same default


def test_projected_readout_feeds_every_pool_the_same_head_width() -> None:
    x, mask = torch.randn(2, 16, 8), torch.ones(2, 16, dtype=torch.bool)
    for factory in (lambda d: KMaxPool(d, k=4), lambda d: MultiQueryAttention(d, r=3, d_a=5)):
        readout = pool_readout({"pool": factory}, 8, project=True)
        assert isinstance(readout, ProjectedReadout) and readout.out_dim == 8
        assert readout(x, mask).shape == (2, 8)
        assert pool_readout({"pool": factory}, 8, project=False).out_dim > 8
    assert isinstance(pool_readout({"pool": MeanPool}, 8, project=True), MeanPool)  # already the width: as it is


def test_control_key_on_a_variant_with_nothing_to_turn_off_is_one_line(tmp_path: Path) -> None:
    for args in (["model=none", "+model.reweight=false"], ["data=reviews", "model=mean", "+model.reweight=false"]):
        result = attnbench("train", *args, "logger=none", cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0
        assert "has no attention of its own for model.reweight to turn off" in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_study_without_its_data_path_is_one_line(tmp_path: Path) -> None:
    result = attnbench("train", "experiment=vader_movies", "logger=none", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: data=text_file needs data.path=FILE (a .csv, .tsv, .jsonl or .parquet file)"
