"""Caption metrics on examples worked out by hand, and the metric set with and without Java."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attnbench.errors import UserError
from attnbench.tasks import caption_metrics
from attnbench.tasks.caption_metrics import caption_scores, cells_on_box, grounding, named_object, resolve_meteor

REFERENCES = [["The cat sat on the mat."], ["A dog ran in the park"]]
HYPOTHESES = ["the cat sat on the mat", "a dog ran in a park"]


def test_bleu_rouge_cider_on_a_hand_checked_example() -> None:
    scores = caption_scores(REFERENCES, HYPOTHESES)
    assert set(scores) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider"}
    # clipped n-gram matches over the corpus (the second hypothesis has "a" twice and misses "the"):
    # 1-grams 6+5 of 12, 2-grams 5+3 of 10, 3-grams 4+2 of 8, 4-grams 3+1 of 6; both lengths equal: no penalty
    p = [11 / 12, 8 / 10, 6 / 8, 4 / 6]
    for n in range(1, 5):
        expected = math.exp(sum(math.log(x) for x in p[:n]) / n)
        assert scores[f"bleu{n}"] == pytest.approx(expected, rel=1e-6)
    # ROUGE-L: LCS 6 of 6, then 5 of 6 ("a dog ran in park"): F = 1 and 5/6 (P = R), mean 11/12
    assert scores["rouge_l"] == pytest.approx(11 / 12, rel=1e-6)
    perfect = caption_scores(REFERENCES, ["the cat sat on the mat", "a dog ran in the park"])
    assert perfect["cider"] == pytest.approx(10.0)  # CIDEr-D: cosine 1 for every n, no length penalty, ×10
    assert perfect["bleu4"] == pytest.approx(1.0)
    assert 0 < scores["cider"] < perfect["cider"]
    nothing = caption_scores(REFERENCES, ["zebra", ""])
    assert nothing["cider"] == 0 and nothing["bleu1"] < 1e-6


def test_the_project_tokenisation_is_used() -> None:
    """Case and punctuation do not count: the references above are scored as if lower-case and bare."""
    assert caption_scores([["A DOG, running!"]], ["a dog running"])["bleu3"] == pytest.approx(1.0)


def test_meteor_is_reported_only_with_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caption_metrics, "java_available", lambda: False)
    assert resolve_meteor("auto") is False
    assert resolve_meteor(False) is False
    with pytest.raises(UserError, match="java"):
        resolve_meteor(True)
    monkeypatch.setattr(caption_metrics, "java_available", lambda: True)
    assert resolve_meteor("auto") is True


def test_a_meteor_setting_that_is_no_choice_is_refused_before_anything_runs() -> None:
    from attnbench.cli import preflight

    problem = preflight(["data=shapes", "task.meteor=sometimes", "logger=none"], False)
    assert problem == "task.meteor=sometimes is not one of auto, true, false"


@pytest.mark.skipif(not caption_metrics.java_available(), reason="METEOR needs java on the PATH")
def test_meteor_runs_when_java_is_there() -> None:
    scores = caption_scores(REFERENCES, HYPOTHESES, meteor=True)
    assert set(scores) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider", "meteor"}
    assert 0.5 < scores["meteor"] < 1.0
    assert caption_scores(REFERENCES, ["zebra", "zebra"], meteor=True)["meteor"] < 0.05


def test_grounding_on_a_hand_example() -> None:
    grid = (2, 2)  # 40 px image: cells of 20×20 pixels
    assert cells_on_box((0, 0, 10, 10), grid, 40).tolist() == [True, False, False, False]
    assert cells_on_box((15, 15, 25, 25), grid, 40).tolist() == [True, True, True, True]
    assert cells_on_box((20, 0, 40, 20), grid, 40).tolist() == [False, True, False, False]  # end exclusive
    objects = [{"shape": "circle", "colour": "red", "size": "small", "box": (0, 0, 10, 10)},
               {"shape": "circle", "colour": "blue", "size": "large", "box": (20, 20, 40, 40)},
               {"shape": "square", "colour": "red", "size": "large", "box": (20, 0, 40, 20)}]
    words = "a large blue circle left of a small green square".split()
    assert named_object(words, 3, objects) is objects[1]  # size and colour pick the blue circle
    assert named_object(words, 9, objects) is objects[2]  # a wrong colour still finds the only square
    assert named_object("a red triangle".split(), 2, objects) is None
    weights = np.full((len(words), 4), 0.25)
    weights[3] = [0.0, 0.1, 0.1, 0.8]  # "circle": 0.8 on the blue circle's cell
    weights[9] = [0.2, 0.6, 0.2, 0.0]  # "square": 0.6 on the red square's cell
    shares, chance = grounding(words, weights, objects, ("circle", "square"), grid, 40)
    assert shares == pytest.approx([0.8, 0.6])
    assert chance == pytest.approx([0.25, 0.25])
    # weights that do not sum to one (local attention's Gaussian) are read as shares of their total
    weights[3] = [0.0, 0.05, 0.05, 0.4]
    assert grounding(words, weights, objects, ("circle",), grid, 40)[0] == pytest.approx([0.8])
