"""Text rating: a review in, stars (or a continuous rating) out.

Classes (``data.target=class``): cross-entropy; accuracy (primary), macro-F1 and, when the classes are
ratings, the mean absolute error in stars. Regression (``data.target=regression``): mean squared error on
standardised ratings; MSE, RMSE (primary, lower is better), MAE and Pearson r in the data's own units.

On the synthetic reviews, whose generator records which tokens carry the label, the test split also gets
``evidence_mass``: the share of attention weight that lands on those tokens, averaged over test reviews
(see ``token_weights``). A variant that computes no weights over tokens (mean, max, kmax...) gets null for
it, and summary.json says why under ``notes``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from ..attention import Attention, capture_weights
from ..data import LOADERS
from ..data.batches import TokenBatch, TokenBatches
from ..data.text import TextData, TextSplit
from ..data.vocab import PAD_INDEX, Vocab, encode_texts
from ..errors import UserError
from ..values import COUNT, setting
from .base import DiagnosticMeans, Task
from .figures import token_weights_figures

EVIDENCE_BATCH = 128  # test batches are smaller while weights are captured: a mixer keeps (B, H, N, N) of them
# every batch is at least this wide (padding): pools with k maxima or k chunks fit batches of short texts
MIN_WIDTH = 16


class Rater(nn.Module):
    """A text backbone's review vector, dropout, then one linear layer to the classes (or to one rating)."""

    def __init__(self, backbone: nn.Module, outputs: int, dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.out_dim, outputs)

    def forward(self, tokens: Tensor) -> Tensor:
        out = self.head(self.dropout(self.backbone(tokens, tokens != PAD_INDEX)))
        return out.squeeze(-1) if out.shape[-1] == 1 else out


class EncodedSplit:
    """One split as tensors: padded token indices, lengths (kept on the CPU), labels, evidence marks."""

    def __init__(self, split: TextSplit, vocab: Vocab, max_len: int, labels: Tensor) -> None:
        tokens, lengths = encode_texts(split.texts, vocab, max_len, MIN_WIDTH)
        self.tokens = torch.from_numpy(tokens)
        self.lengths = torch.from_numpy(lengths)
        self.labels = labels
        self.evidence: Tensor | None = None
        if split.evidence is not None:
            self.evidence = torch.zeros(self.tokens.shape, dtype=torch.bool)
            for row, positions in enumerate(split.evidence):
                kept = [p for p in positions if p < self.tokens.shape[1]]  # truncation may cut some off
                self.evidence[row, kept] = True

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> None:
        self.tokens, self.labels = self.tokens.to(device), self.labels.to(device)
        if self.evidence is not None:
            self.evidence = self.evidence.to(device)


def token_weights(module: Attention, mask: Tensor) -> Tensor | None:
    """How a module's captured weights spread over the tokens of each review: (B, N), each row summing to
    one over real tokens, or None when its weights are not over this review's tokens.

    Every row of the weights (a head and query position of a mixer, a query of multi-query pooling, a region
    and channel of stochastic pooling) is made a distribution over tokens (magnitudes, so signed weights count
    by size; sigmoid gates are renormalised), and the rows are averaged. Rows with no weight at all (padded
    query positions, empty regions) are left out.
    """
    w = module.weights
    b, n = mask.shape
    if w is None or module.weights_over != "positions" or w.shape[0] != b or w.shape[-1] != n:
        return None
    w = w.float().abs().reshape(b, -1, n) * mask[:, None, :]
    total = w.sum(-1, keepdim=True)
    rows = (total > 0).float()
    w = w / total.clamp_min(1e-12)
    return (w * rows).sum(1) / rows.sum(1).clamp_min(1)


def captured_token_weights(modules: dict[str, Attention], mask: Tensor) -> Tensor | None:
    """The mean over every module with weights over the tokens (D-Attn has two), or None if none has any."""
    found = [w for m in modules.values() if (w := token_weights(m, mask)) is not None]
    return torch.stack(found).mean(0) if found else None


@dataclass
class Tokenisation:
    """The data.* keys the rate task reads: how texts become token indices."""

    max_len: int = setting(bound=COUNT, default=256)  # tokens kept per text
    min_freq: int = setting(bound=COUNT, default=1)  # rarer words map to <unk>
    max_vocab: int | None = setting(bound=COUNT, default=None)  # null = every word that is frequent enough
    lowercase: bool = True


class RateTask(Task):
    family = "rate"
    slots = ("mixer", "pool", "network")
    primary = "acc"  # "rmse" for regression, set per instance
    convolutional = False
    backbones = ("bigru", "textcnn", "text_transformer")
    backbone_inputs = ("vocab_size",)
    data_type = TextData
    DataKeys = Tokenisation

    def __init__(self, cfg: DictConfig, choices: dict[str, str], family_slots: dict[str, tuple[str, ...]]) -> None:
        super().__init__(cfg, choices, family_slots)
        text = self.data_keys
        try:
            self.data: TextData = LOADERS[cfg.data.name](**self.loader_kwargs)
            self.vocab = Vocab.build(self.data.train.texts, text.min_freq, text.max_vocab, text.lowercase)
            self.regression = self.data.target == "regression"
            # regression trains on standardised ratings; metrics are reported on the data's own scale
            self.rating_mean, self.rating_std = 0.0, 1.0
            if self.regression and len(self.data.train) > 1:
                ratings = torch.from_numpy(self.data.train.labels).double()
                self.rating_mean, self.rating_std = ratings.mean().item(), max(ratings.std().item(), 1e-6)
            self.splits = {}
            for name in ("train", "val", "test"):
                split = getattr(self.data, name)
                self.splits[name] = EncodedSplit(split, self.vocab, text.max_len, self._labels(split))
        except ValueError as e:
            raise UserError(f"data={choices['data']}: {e}") from e
        if self.regression:
            self.primary, self.higher_is_better = "rmse", False
        outputs = 1 if self.regression else len(self.data.classes)
        # the head drops out as the backbone does; a plug-in text backbone without a dropout key: none
        self.model = Rater(self.build_backbone(vocab_size=len(self.vocab)), outputs, cfg.backbone.get("dropout", 0.0))
        self.has_evidence = self.data.test.evidence is not None
        self._notes: dict[str, str] = {}

    def _labels(self, split: TextSplit) -> Tensor:
        if self.regression:
            return (torch.from_numpy(split.labels).float() - self.rating_mean) / self.rating_std
        return torch.from_numpy(split.labels).long()

    # ------------------------------------------------------------------ the protocol

    def to(self, device: torch.device) -> None:
        for split in self.splits.values():
            split.to(device)
        self.model.to(device)

    def _batches(self, split: str, train: bool = False, batch_size: int | None = None) -> TokenBatches:
        data = self.splits[split]
        size = self.batch_size if train else batch_size or self.eval_batch_size
        return TokenBatches(data.tokens, data.lengths, data.labels, size, shuffle=train, seed=self.seed,
                            evidence=data.evidence, drop_last=train and len(data) > size, min_width=MIN_WIDTH,
                            rank=self.rank if train else 0, world=self.world if train else 1)

    def steps_per_epoch(self) -> int:
        return len(self._batches("train", train=True))

    def eval_share(self, split: str) -> float | None:
        return len(self.splits[split]) / max(len(self.splits["train"]), 1)

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[TokenBatch]:
        return self._batches("train", train=True).epoch(epoch, start)

    def training_loss(self, model: nn.Module, batch: TokenBatch) -> tuple[Tensor, int]:
        out = model(batch.tokens).float()
        if self.regression:
            return F.mse_loss(out, batch.labels), len(batch.labels)
        return F.cross_entropy(out, batch.labels, label_smoothing=self.label_smoothing), len(batch.labels)

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Metrics of one split, accumulated on the device and read once at the end."""
        evidence = split == "test" and self.has_evidence
        batches = self._batches(split, batch_size=min(self.eval_batch_size, EVIDENCE_BATCH) if evidence else None)
        outputs, labels = [], []
        extra = DiagnosticMeans()
        mass_sum, mass_count = None, 0
        with capture_weights(self.model) if evidence else nullcontext({}) as modules:
            for batch in batches:
                outputs.append(model(batch.tokens).float())
                labels.append(batch.labels)
                extra.add(self.model)
                if evidence:
                    weights = captured_token_weights(modules, batch.tokens != PAD_INDEX)
                    if weights is not None:
                        mass = (weights * batch.evidence).sum()
                        mass_sum = mass if mass_sum is None else mass_sum + mass
                        mass_count += len(batch.labels)
        out, y = torch.cat(outputs), torch.cat(labels)
        names, values = (self._regression_metrics if self.regression else self._class_metrics)(out, y)
        means = extra.means()
        names, values = [*names, *means], [*values, *means.values()]
        if mass_sum is not None:
            names, values = [*names, "evidence_mass"], [*values, mass_sum / mass_count]
        metrics = dict(zip(names, torch.stack([torch.as_tensor(v, dtype=torch.float32, device=out.device)
                                               for v in values]).tolist()))
        if evidence and mass_sum is None:
            metrics["evidence_mass"] = float("nan")
            self._notes["test/evidence_mass"] = (f"not applicable: model={self.model_name} computes no attention "
                                                 f"weights over individual tokens")
        return metrics

    def _class_metrics(self, logits: Tensor, y: Tensor) -> tuple[list[str], list[Tensor]]:
        k = logits.shape[1]
        pred = logits.argmax(1)
        confusion = torch.bincount(y * k + pred, minlength=k * k).view(k, k).float()
        tp = confusion.diag()
        support, predicted = confusion.sum(1), confusion.sum(0)
        present = (support + predicted) > 0  # as scikit-learn: classes seen in the truth or the predictions
        f1 = 2 * tp / (support + predicted).clamp_min(1)
        names = ["acc", "macro_f1", "loss"]
        values = [(pred == y).float().mean(), f1[present].mean(), F.cross_entropy(logits, y)]
        if self.data.class_values is not None:
            stars = torch.tensor(self.data.class_values, device=logits.device)
            names.append("mae")
            values.append((stars[pred] - stars[y]).abs().mean())
        return names, values

    def _regression_metrics(self, out: Tensor, y: Tensor) -> tuple[list[str], list[Tensor]]:
        pred, true = out * self.rating_std + self.rating_mean, y * self.rating_std + self.rating_mean
        error = pred - true
        mse = error.pow(2).mean()
        pc, tc = pred - pred.mean(), true - true.mean()
        pearson = (pc * tc).sum() / (pc.pow(2).sum().sqrt() * tc.pow(2).sum().sqrt()).clamp_min(1e-12)
        return ["mse", "rmse", "mae", "pearson"], [mse, mse.sqrt(), error.abs().mean(), pearson]

    def example_batch(self, limit: int | None = None) -> tuple[Any, int]:
        """With ``limit`` (the build-time probe): the shortest test reviews, as narrow as any batch gets, so a
        pool that cannot fit a short batch is refused before training. Without: the first test reviews in
        their own order, a typical mix of lengths (FLOPs and inference speed)."""
        test = self.splits["test"]
        n = min(len(test), limit or self.eval_batch_size)
        index = torch.arange(n) if limit is None else torch.argsort(test.lengths, stable=True)[:n]
        width = max(int(test.lengths[index].max()), min(MIN_WIDTH, test.tokens.shape[1]))
        return test.tokens[index.to(test.tokens.device), :width], n

    def predict(self, model: nn.Module, batch: Tensor) -> Tensor:
        return model(batch)

    def figures(self, model: nn.Module, out_dir: Path) -> dict[str, Path]:
        """A few test reviews with every token shaded by the attention it receives (HTML and PNG); evidence
        tokens of the synthetic reviews are underlined. Nothing for variants without weights over tokens."""
        test = self.splits["test"]
        index = torch.arange(min(6, len(test)), device=test.tokens.device)
        length = max(int(test.lengths[:len(index)].max()), min(MIN_WIDTH, test.tokens.shape[1]))
        tokens = test.tokens[index, :length]
        model.eval()
        with torch.no_grad(), capture_weights(self.model) as modules:
            out = self.model(tokens)
            weights = captured_token_weights(modules, tokens != PAD_INDEX)
        if weights is None:
            return {}
        reviews = []
        for row in range(len(index)):
            n = int(test.lengths[row])
            marks = test.evidence[row, :n].tolist() if test.evidence is not None else [False] * n
            reviews.append((self.vocab.decode(tokens[row, :n].tolist()), weights[row, :n].cpu().tolist(), marks,
                            self._describe(out[row], test.labels[row])))
        return token_weights_figures(reviews, f"data={self.data_name} · model={self.model_name}", out_dir)

    def _describe(self, out: Tensor, label: Tensor) -> str:
        if self.regression:
            true, predicted = (v.item() * self.rating_std + self.rating_mean for v in (label, out))
            return f"rating {true:.2f} · predicted {predicted:.2f}"
        return f"true {self.data.classes[int(label)]} · predicted {self.data.classes[int(out.argmax())]}"

    def save_artifacts(self, run_dir: Path) -> None:
        """vocab.json (token indices the checkpoints use) and labels.json (classes, or the rating scale)."""
        self.vocab.save(run_dir / "vocab.json")
        labels = {"target": self.data.target, "classes": self.data.classes, "class_values": self.data.class_values,
                  "rating_mean": self.rating_mean, "rating_std": self.rating_std}
        (run_dir / "labels.json").write_text(json.dumps(labels, indent=2))

    def notes(self) -> dict[str, str]:
        """Remarks for summary.json on metrics that do not apply to this run."""
        return dict(self._notes)

