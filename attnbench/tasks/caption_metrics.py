"""Caption metrics: BLEU-1…4, ROUGE-L and CIDEr-D through pycocoevalcap's scorers, METEOR when Java is there,
and grounding (where the decoder looked when it named an object) on scenes whose objects have boxes.

Captions are tokenised by attnbench's own ``tokenize`` (lower case, punctuation dropped) before scoring, so
pycocoevalcap's Java PTB tokenizer is never used; METEOR is the one scorer that needs Java.
"""

from __future__ import annotations

import atexit
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data.vocab import tokenize
from ..errors import UserError


class MeteorScorer:
    """pycocoevalcap's METEOR 1.5: one Java process, started on first use and kept for the whole process (it
    takes seconds to load its paraphrase tables), stopped at exit."""

    _shared: MeteorScorer | None = None

    def __init__(self) -> None:
        from pycocoevalcap.meteor.meteor import Meteor

        self.meteor = Meteor()
        atexit.register(self.close)

    @classmethod
    def shared(cls) -> MeteorScorer:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def score(self, gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
        return float(self.meteor.compute_score(gts, res)[0])

    def close(self) -> None:
        process = getattr(self.meteor, "meteor_p", None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


def java_available() -> bool:
    return shutil.which("java") is not None


def resolve_meteor(setting: bool | str) -> bool:
    """``task.meteor`` (checked against its spec): auto (when ``java`` is on the PATH), true (required) or false."""
    if setting == "auto":
        return java_available()
    if setting and not java_available():
        raise UserError("task.meteor=true needs `java` on the PATH (METEOR 1.5 is a Java program); install a "
                        "Java runtime or set task.meteor=auto")
    return bool(setting)


def _joined(text: str) -> str:
    return " ".join(tokenize(text, punctuation=False))


def caption_scores(references: Sequence[Sequence[str]], hypotheses: Sequence[str],
                   meteor: bool = False) -> dict[str, float]:
    """Corpus scores of one hypothesis per image against that image's references: bleu1…bleu4 (corpus BLEU,
    closest reference length), rouge_l (mean ROUGE-L F, β = 1.2), cider (CIDEr-D: clipped counts, Gaussian length
    penalty σ = 6, document frequencies from these references, ×10), and meteor when asked."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: [_joined(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [_joined(h)] for i, h in enumerate(hypotheses)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"bleu{n + 1}": float(b) for n, b in enumerate(bleu)}
    scores["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    scores["cider"] = float(Cider().compute_score(gts, res)[0])
    if meteor:
        scores["meteor"] = MeteorScorer.shared().score(gts, res)
    return scores


def cells_on_box(box: Sequence[int], grid: tuple[int, int], image_size: int) -> np.ndarray:
    """(H·W,) bool in raster order: the grid cells that the box (x0, y0, x1, y1 in pixels, end exclusive)
    overlaps, each cell covering an equal share of the image."""
    h, w = grid
    x0, y0, x1, y1 = box
    rows = np.arange(h)
    cols = np.arange(w)
    row_hit = (rows * image_size / h < y1) & ((rows + 1) * image_size / h > y0)
    col_hit = (cols * image_size / w < x1) & ((cols + 1) * image_size / w > x0)
    return (row_hit[:, None] & col_hit[None, :]).reshape(-1)


def named_object(words: Sequence[str], at: int, objects: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The scene object that the noun ``words[at]`` names, read with the adjectives just before it (size and
    colour); the closest match (shape and colour, then shape) when the caption got an adjective wrong, None when
    the scene holds no such shape."""
    adjectives = set(words[max(0, at - 2):at])
    candidates = [o for o in objects if o["shape"] == words[at]]
    for keys in (("colour", "size"), ("colour",), ()):
        matches = [o for o in candidates if all(o[k] in adjectives for k in keys)]
        if matches:
            return matches[0]
    return None


def grounding(words: Sequence[str], weights: np.ndarray, objects: Sequence[dict[str, Any]], nouns: Sequence[str],
              grid: tuple[int, int], image_size: int) -> tuple[list[float], list[float]]:
    """For every noun of a generated caption that names an object of the scene: the share of that word's
    attention on the grid cells the object's box overlaps, and the share uniform attention would put there.
    ``weights`` (len(words), H·W) are the attention weights of each word."""
    shares, chance = [], []
    for t, word in enumerate(words):
        if word not in nouns:
            continue
        target = named_object(words, t, objects)
        if target is None:  # the caption names a shape the scene lacks: nothing to look at
            continue
        cells = cells_on_box(target["box"], grid, image_size)
        total = float(weights[t].sum())
        shares.append(float(weights[t][cells].sum()) / total if total > 0 else 0.0)
        chance.append(float(cells.mean()))
    return shares, chance
