"""The caption task end to end through the CLI, and the decoder's search on a hand-built example."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from attnbench.attention.align import MeanAlign
from attnbench.backbones.captioner import AttentionDecoder
from tests.runner import assert_complete_summary, attnbench, run_dirs

TINY = ["data=shapes", "data.train_size=48", "data.val_size=8", "data.test_size=8", "trainer.epochs=1",
        "trainer.batch_size=16", "backbone.widths=[8]", "backbone.hidden_dim=32", "backbone.embed_dim=16",
        "logger=none"]


def test_beam_search_finds_the_caption_greedy_decoding_misses() -> None:
    """Words follow a fixed table: after <bos>, A (0.6) or B (0.4); after A, <eos> is likelier than anything
    else but only 0.4; after B, <eos> is 0.95. Greedy says "A" (log-prob per word (ln .6 + ln .4)/2 = −0.71);
    a beam of two also keeps B and finds "B" (−0.48)."""
    pad, bos, eos, a, b, c, d = range(7)
    table = torch.full((7, 7), 1e-9)
    table[bos, a], table[bos, b] = 0.6, 0.4
    table[a, eos], table[a, c], table[a, d] = 0.4, 0.3, 0.3
    table[b, eos], table[b, c] = 0.95, 0.05
    table[c, eos] = table[d, eos] = 1.0
    decoder = AttentionDecoder(7, 4, 4, 4, 0.0, MeanAlign).eval()

    def step(words, state, memory):
        weights = torch.full((len(words), memory.shape[1]), 1 / memory.shape[1])
        return table[words].log(), weights, state

    decoder.step = step
    memory = torch.randn(2, 6, 4)
    greedy, weights = decoder.generate(memory, (2, 3), bos, eos, pad, max_length=5, beam=1)
    assert greedy[0, :2].tolist() == [a, eos] and torch.all(greedy[0, 2:] == pad)
    assert weights.shape == (2, greedy.shape[1], 6)
    beam, _ = decoder.generate(memory, (2, 3), bos, eos, pad, max_length=5, beam=2)
    assert beam[0, :2].tolist() == [b, eos]
    assert math.log(0.4) + math.log(0.95) > math.log(0.6) + math.log(0.4)


def test_shapes_trains_from_the_cli_and_learns(tmp_path: Path) -> None:
    args = ["train", "data=shapes", "model=soft", "data.train_size=400", "data.val_size=40", "data.test_size=40",
            "trainer.epochs=8", "trainer.lr=5e-3", "logger=none"]
    result = attnbench(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run = run_dirs(tmp_path / "outputs")[0]
    summary = assert_complete_summary(run)
    metrics = summary["metrics"]
    assert summary["primary"]["name"] == "test/cider"
    assert {"test/bleu1", "test/bleu4", "test/rouge_l", "test/cider", "test/grounding", "test/greedy_cider",
            "val/cider", "test/entropy"} <= set(metrics)
    assert "test/meteor" not in metrics  # data=shapes switches METEOR off
    # an untrained decoder scores near 0; this one has learnt the grammar and where the objects are
    assert metrics["test/bleu1"] > 0.4 and metrics["test/cider"] > 0.9, metrics
    assert metrics["test/grounding"] > metrics["test/grounding_chance"], metrics
    vocab = json.loads((run / "vocab.json").read_text())
    assert vocab["tokens"][:4] == ["<pad>", "<unk>", "<bos>", "<eos>"] and "triangle" in vocab["tokens"]
    assert sorted(p.name for p in (run / "figures").iterdir()) == [f"caption_{i}.png" for i in range(4)]


def test_every_align_variant_runs_in_a_sweep(tmp_path: Path) -> None:
    result = attnbench("train", "-m", *TINY, "model=none,soft,hard,global,local", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = run_dirs(tmp_path / "outputs")
    assert len(runs) == 5
    for run in runs:
        summary = assert_complete_summary(run)
        assert len(summary["figures"]) == 4
        if summary["model"] == "hard":  # REINFORCE reached the loss through the slot protocol, and reports
            assert {"val/reinforce_baseline", "val/reinforce_signal", "val/reinforce_signal_std"} <= \
                set(summary["metrics"])
            train = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
            assert {"train/aux/reinforce", "train/aux/entropy_bonus"} <= set(train)
    with Image.open(runs[0] / "figures" / "caption_0.png") as image:
        assert image.size[0] > 300


def test_caption_file_bad_input_ends_with_one_line(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 20), (i * 50, 0, 0)).save(photos / f"im{i}.jpg")
    images = [{"filename": f"im{i}.jpg", "split": s, "sentences": [{"raw": "a red photo"}]}
              for i, s in enumerate(["train", "val", "test"])]
    listed = tmp_path / "captions.json"
    listed.write_text(json.dumps({"images": [*images, {"filename": "lost.jpg", "split": "train",
                                                       "sentences": [{"raw": "a lost photo"}]}]}))
    result = attnbench("train", "data=caption_file", f"data.path={listed}", f"data.image_root={photos}",
                       "logger=none", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "1 of 4 images" in lines[0] and "lost.jpg" in lines[0], result.stderr
    (photos / "im2.jpg").write_bytes(b"\x00garbage")  # the test image: decoded by the build-time probe
    listed.write_text(json.dumps({"images": images}))
    result = attnbench("train", "data=caption_file", f"data.path={listed}", f"data.image_root={photos}",
                       "logger=none", "data.image_size=32", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot decode" in lines[0] and "im2.jpg" in lines[0], result.stderr


@pytest.mark.parametrize("override", ["task.beam=0"])
def test_impossible_caption_settings_are_refused(tmp_path: Path, override: str) -> None:
    result = attnbench("train", *TINY, override, cwd=tmp_path)
    assert result.returncode == 2
    assert "must be at least 1" in result.stderr


def test_model_none_keeps_the_mean_context(tmp_path: Path) -> None:
    """model=none on captions: the decoder reads the mean of the regions at every step, no attention."""
    decoder = AttentionDecoder(10, 4, 4, 8, 0.0, MeanAlign)
    memory = torch.randn(2, 6, 4)
    logits, weights = decoder(memory, (2, 3), torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool))
    assert logits.shape == (2, 3, 10)
    torch.testing.assert_close(weights, torch.full((2, 3, 6), 1 / 6))


def test_resnet_encoder_loads_local_weights_freezes_and_keeps_feature_slots(tmp_path: Path) -> None:
    import torchvision

    from attnbench.attention.feature import SqueezeExcite
    from attnbench.backbones.captioner import ResNetCaptioner

    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    model = ResNetCaptioner(12, weights=str(tmp_path / "resnet18.pth"), freeze=True, stages=3, embed_dim=8,
                            hidden_dim=16, slots={"feature": SqueezeExcite})
    torch.testing.assert_close(model.encoder[0].weight, reference.conv1.weight)
    assert model.input_stats is not None  # pretrained: ImageNet normalisation
    free = [n for n, p in model.encoder.named_parameters() if p.requires_grad]
    assert free and all(".bn2.1." in n for n in free)  # in the encoder only the feature slots (bn2 -> bn2, SE) train
    assert all(p.requires_grad for p in model.decoder.parameters())
    se = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert len(se) == 6 and all(p.requires_grad for m in se for p in m.parameters())  # 3 stages × 2 blocks
    model.train()
    assert all(not m.training for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    memory, grid = model.encode(torch.randn(2, 3, 64, 64))
    assert grid == (4, 4) and memory.shape == (2, 16, 256)  # stride 16 after three stages
    model.eval()
    tokens, weights, _ = model.generate(torch.randn(2, 3, 64, 64), 1, 2, 0, max_length=4, beam=2)
    assert tokens.shape[0] == 2 and weights.shape[-1] == 16
    with pytest.raises(ValueError, match="not there"):
        ResNetCaptioner(12, weights="imagenet")  # torch's cache is empty in tests: never downloaded
