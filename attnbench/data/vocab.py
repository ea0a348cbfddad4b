"""Word-level tokenisation and vocabulary for the text tasks (rating and captioning): no model or tokenizer
download.

Text is lower-cased (by default) and split into words and single punctuation marks; a word keeps its inner
apostrophes ("wasn't" is one token). Captioning drops the punctuation marks: its metrics compare words. The
vocabulary is built from the training split only, most frequent first, with ``<pad>`` at index 0 and ``<unk>``
at index 1 (captioning adds ``<bos>`` and ``<eos>``), and is saved in the run directory as JSON so the indices a
checkpoint was trained with can be read back.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
PAD_INDEX, UNK_INDEX = 0, 1
_WORD = r"\w+(?:'\w+)*"
_WORDS_AND_MARKS, _WORDS = re.compile(rf"{_WORD}|[^\w\s]"), re.compile(_WORD)


def tokenize(text: str, lowercase: bool = True, punctuation: bool = True) -> list[str]:
    """Words (with inner apostrophes) and single punctuation marks: "Not GREAT, really." ->
    ["not", "great", ",", "really", "."]; without ``punctuation``, the words alone."""
    return (_WORDS_AND_MARKS if punctuation else _WORDS).findall(text.lower() if lowercase else text)


class Vocab:
    """Token <-> index. Index 0 is padding, 1 stands for every token the training split did not keep; a
    vocabulary of sentences to generate also has ``<bos>`` and ``<eos>`` (``bos``, ``eos``; else None)."""

    def __init__(self, tokens: Sequence[str], lowercase: bool = True, punctuation: bool = True) -> None:
        if list(tokens[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD} and {UNK}")
        self.tokens = list(tokens)
        self.lowercase, self.punctuation = lowercase, punctuation
        self.index = {token: i for i, token in enumerate(self.tokens)}
        self.pad, self.unk = PAD_INDEX, UNK_INDEX
        self.bos, self.eos = self.index.get(BOS), self.index.get(EOS)

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None, lowercase: bool = True,
              punctuation: bool = True, sentence_marks: bool = False) -> Vocab:
        """Tokens seen at least ``min_freq`` times, most frequent first (ties alphabetical, so the same
        texts always give the same indices), at most ``max_size`` entries including the special tokens
        (``sentence_marks``: ``<bos>`` and ``<eos>`` after ``<pad>`` and ``<unk>``)."""
        specials = [PAD, UNK, *([BOS, EOS] if sentence_marks else [])]
        if max_size is not None and max_size <= len(specials):
            raise ValueError(f"data.max_vocab must be at least {len(specials) + 1} "
                             f"({', '.join(specials)} and one word), got {max_size}")
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(tokenize(text, lowercase, punctuation))
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max_size - len(specials)]
        return cls([*specials, *kept], lowercase, punctuation)

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """The indices of the text's first ``max_length`` tokens (all of them by default)."""
        tokens = tokenize(text, self.lowercase, self.punctuation)[:max_length]
        return [self.index.get(token, UNK_INDEX) for token in tokens]

    def decode(self, indices: Iterable[int]) -> list[str]:
        """Tokens up to the first ``<eos>``, without padding and ``<bos>``."""
        out = []
        for i in indices:
            if i == self.eos:
                break
            if i not in (PAD_INDEX, self.bos):
                out.append(self.tokens[i])
        return out

    def to_json(self) -> dict[str, Any]:
        return {"lowercase": self.lowercase, "punctuation": self.punctuation, "tokens": self.tokens}

    def save(self, path: Path, **extra: Any) -> Path:
        """vocab.json: the tokens in index order, how text was split, and ``extra`` (the caption length)."""
        path.write_text(json.dumps({**self.to_json(), **extra}, ensure_ascii=False, indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> Vocab:
        data = json.loads(Path(path).read_text())
        return cls(data["tokens"], data["lowercase"], data["punctuation"])


def encode_texts(texts: Sequence[str], vocab: Vocab, max_len: int, min_width: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Token indices padded into an (N, L) int32 array, L the longest text after truncation to ``max_len``
    (at least ``min_width``), and the lengths. A text with no tokens at all becomes a single ``<unk>``, so no
    row is all padding."""
    rows = np.zeros((len(texts), max(max_len, min_width)), dtype=np.int32)
    lengths = np.zeros(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        ids = vocab.encode(text)[:max_len] or [UNK_INDEX]
        rows[i, :len(ids)] = ids
        lengths[i] = len(ids)
    longest = int(lengths.max()) if len(texts) else 1
    width = max(longest, min_width)
    return (rows if width == rows.shape[1] else rows[:, :width].copy()), lengths  # no second copy of a big set
