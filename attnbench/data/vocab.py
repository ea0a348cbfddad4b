"""Word-level tokenisation and vocabulary for the text tasks: no model or tokenizer download.

Text is lower-cased (by default) and split into words and single punctuation marks; a word keeps its inner
apostrophes ("wasn't" is one token). The vocabulary is built from the training split only, most frequent
first, with ``<pad>`` at index 0 and ``<unk>`` at index 1, and is saved in the run directory as JSON so the
indices a checkpoint was trained with can be read back.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

PAD, UNK = "<pad>", "<unk>"
PAD_INDEX, UNK_INDEX = 0, 1
_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Words (with inner apostrophes) and single punctuation marks: "Not GREAT, really." ->
    ["not", "great", ",", "really", "."]."""
    return _TOKEN.findall(text.lower() if lowercase else text)


class Vocab:
    """Token <-> index. Index 0 is padding, 1 stands for every token the training split did not keep."""

    def __init__(self, tokens: Sequence[str], lowercase: bool = True) -> None:
        if list(tokens[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD} and {UNK}")
        self.tokens = list(tokens)
        self.lowercase = lowercase
        self.index = {token: i for i, token in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None,
              lowercase: bool = True) -> Vocab:
        """Tokens seen at least ``min_freq`` times, most frequent first (ties alphabetical, so the same
        texts always give the same indices), at most ``max_size`` entries including ``<pad>`` and ``<unk>``."""
        if min_freq < 1:
            raise ValueError(f"data.min_freq must be at least 1, got {min_freq}")
        if max_size is not None and max_size < 3:
            raise ValueError(f"data.max_vocab must be at least 3 (<pad>, <unk> and one word), got {max_size}")
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(tokenize(text, lowercase))
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max_size - 2]
        return cls([PAD, UNK, *kept], lowercase)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(token, UNK_INDEX) for token in tokenize(text, self.lowercase)]

    def decode(self, indices: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in indices if i != PAD_INDEX]

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps({"lowercase": self.lowercase, "pad": PAD_INDEX, "unk": UNK_INDEX,
                                    "tokens": self.tokens}, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, path: Path) -> Vocab:
        data = json.loads(Path(path).read_text())
        return cls(data["tokens"], data["lowercase"])


def encode_texts(texts: Sequence[str], vocab: Vocab, max_len: int, min_width: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Token indices padded into an (N, L) int32 array, L the longest text after truncation to ``max_len``
    (at least ``min_width``), and the lengths. A text with no tokens at all becomes a single ``<unk>``, so no
    row is all padding."""
    if max_len < 1:
        raise ValueError(f"data.max_len must be at least 1, got {max_len}")
    rows = np.zeros((len(texts), max(max_len, min_width)), dtype=np.int32)
    lengths = np.zeros(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        ids = vocab.encode(text)[:max_len] or [UNK_INDEX]
        rows[i, :len(ids)] = ids
        lengths[i] = len(ids)
    longest = int(lengths.max()) if len(texts) else 1
    width = max(longest, min_width)
    return (rows if width == rows.shape[1] else rows[:, :width].copy()), lengths  # no second copy of a big set
