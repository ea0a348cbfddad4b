"""``data=reviews``: a SYNTHETIC review corpus made by attnbench's own seeded generator (no network, no real text).

A review is neutral filler sentences ("we came here on a tuesday with my sister .") around a few
sentiment-bearing phrases ("the service was not great .", "the pasta was really awful ."), placed at random
positions in reviews of 20 to 200 tokens. Each phrase has a polarity, and the mean polarity of a review's
phrases sets its 1–5 stars. The generator records which tokens carry that evidence (each phrase's verb,
negation, intensifier or downtoner and adjective), so the task can score *where* a model attends:
the filler is pure distraction and carries no information about the label.

Polarity of one phrase (an adjective with optional modifiers):

* the adjective: mild (+1 "good", -1 "bland") or strong (+2 "excellent", -2 "awful");
* an intensifier ("really", "very", ...) makes it strong: ±2; a downtoner ("somewhat", ...) makes it mild: ±1;
* a negation ("not", "never", "hardly", "wasn't") flips the sign and weakens it: "not great" -1, "not awful" +1.

Stars = 3 + the mean phrase polarity rounded half away from zero, so 1..5. Labels are balanced: each review
first draws its stars, then phrases until their mean gives those stars.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from .text import TextData, TextSplit

STAR_NAMES = ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]

ADJECTIVES = {
    2: ["excellent", "amazing", "wonderful", "fantastic", "superb", "outstanding", "delightful", "perfect"],
    1: ["good", "nice", "decent", "pleasant", "solid", "reasonable", "tasty", "friendly"],
    -1: ["bland", "mediocre", "dull", "slow", "stale", "sloppy", "lukewarm", "forgettable"],
    -2: ["awful", "terrible", "horrible", "disgusting", "dreadful", "appalling", "atrocious", "inedible"],
}
INTENSIFIERS = ["really", "very", "truly", "extremely", "incredibly", "super"]
DOWNTONERS = ["somewhat", "slightly", "fairly", "rather"]
NEGATIONS = ["not", "never", "hardly"]
CONTRACTED = {"was": "wasn't", "is": "isn't"}  # "the soup wasn't good": the verb itself carries the negation

ASPECTS = ["food", "service", "staff", "pasta", "pizza", "soup", "coffee", "dessert", "decor", "music", "waiter",
           "menu", "burger", "salad", "bread", "wine", "room", "bar", "kitchen", "breakfast", "lunch", "dinner",
           "steak", "fries", "sushi", "tea", "table", "view", "portion", "sauce"]
VERBS = ["was", "is", "felt", "seemed", "looked"]
SENTIMENT_OPENERS = [[], [], ["honestly", ","], ["i", "thought"], ["to", "be", "fair", ","], ["overall", ","],
                     ["i", "have", "to", "say"], ["as", "usual", ","]]

# neutral filler: templates whose {slots} draw from the word lists below; none of them says anything
# about quality, and every word of them appears in reviews of every rating
FILLER = {
    "place": ["place", "restaurant", "cafe", "bistro", "diner", "spot", "bakery", "pub", "grill", "canteen"],
    "day": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "weekday", "holiday"],
    "time": ["morning", "afternoon", "evening", "night", "lunchtime"],
    "person": ["sister", "brother", "friend", "colleague", "parents", "partner", "kids", "neighbour", "team"],
    "dish": ASPECTS[3:8] + ["noodles", "omelette", "risotto", "curry", "tacos", "sandwich", "pancakes",
                            "dumplings", "lasagna", "chowder"],
    "street": ["main", "market", "station", "harbour", "river", "church", "park", "mill", "bridge", "castle"],
    "number": ["two", "three", "four", "five", "six", "ten", "twelve", "twenty"],
    "thing": ["umbrella", "jacket", "phone", "receipt", "coupon", "map", "ticket", "bag"],
    "pay": ["card", "cash", "phone", "voucher"],
    "drink": ["water", "lemonade", "juice", "cola", "beer", "espresso", "smoothie", "cider"],
    "aspect": ASPECTS,
}
FILLER_TEMPLATES = [
    "we came to the {place} on a {day} {time} .",
    "i went there with my {person} after work .",
    "the {place} is on {street} street , next to the {street} car park .",
    "i ordered the {dish} and my {person} had the {dish} .",
    "they have about {number} tables inside and {number} outside .",
    "we paid by {pay} and left around {number} o'clock .",
    "the menu lists {dish} , {dish} and {dish} .",
    "it was visit number {number} for us this year .",
    "my {person} left a {thing} at the table , so we went back for it .",
    "there is a bus stop on {street} street .",
    "we sat near the window and talked about the weekend .",
    "i had a glass of {drink} while we waited for my {person} .",
    "the {dish} came with a side of {dish} .",
    "they open at {number} on a {day} .",
    "we booked a table for {number} people .",
    "the {place} has a second room upstairs .",
    "i read about the {place} in a local paper .",
    "the {aspect} is made in the kitchen at the back .",
    "we shared a {dish} and two glasses of {drink} .",
    "my {person} checked the {thing} before we ordered .",
]


@dataclass(frozen=True)
class Review:
    tokens: list[str]
    stars: int  # 1..5
    evidence: list[int]  # positions of the tokens that carry the sentiment


def round_half_away(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def stars_of(polarities: list[int]) -> int:
    """The rule that labels a review: 3 + its mean phrase polarity, rounded half away from zero."""
    return min(5, max(1, 3 + round_half_away(sum(polarities) / len(polarities))))


@dataclass(frozen=True)
class Phrase:
    base: int  # the adjective's own polarity: ±1 mild, ±2 strong
    modifier: str  # "none", "intensifier" or "downtoner"
    negated: bool

    @property
    def polarity(self) -> int:
        polarity = self.base
        if self.modifier == "intensifier":
            polarity = 2 if self.base > 0 else -2
        elif self.modifier == "downtoner":
            polarity = 1 if self.base > 0 else -1
        if self.negated:  # negation flips and weakens: "not great" -1, "not awful" +1
            polarity = -1 if polarity > 0 else 1
        return polarity


def _draw_phrase(rng: random.Random) -> Phrase:
    return Phrase(rng.choice([2, 1, -1, -2]), rng.choices(["none", "intensifier", "downtoner"], [0.5, 0.3, 0.2])[0],
                  rng.random() < 0.35)


def _sentence(rng: random.Random, phrase: Phrase) -> tuple[list[str], list[bool]]:
    """One sentiment sentence for ``phrase``: its tokens and which of them are evidence.

    The evidence is the predicate that carries the polarity: the verb with its negation, modifier and
    adjective ("was not really great", "wasn't good"), not the opener, the subject or the full stop. The
    verb is part of it because a bidirectional encoder's state at the verb has read the whole predicate
    and attention often settles there (a neutral verb does not say which way the review leans by itself).
    """
    words = {"none": [], "intensifier": [rng.choice(INTENSIFIERS)],
             "downtoner": [rng.choice(DOWNTONERS)]}[phrase.modifier] + [rng.choice(ADJECTIVES[phrase.base])]
    opener = list(rng.choice(SENTIMENT_OPENERS))
    subject = ["it"] if rng.random() < 0.2 else ["the", rng.choice(ASPECTS)]  # "overall , it was not great ."
    verb = "was" if subject == ["it"] else rng.choice(VERBS)
    if phrase.negated and verb in CONTRACTED and rng.random() < 0.4:
        predicate = [CONTRACTED[verb]]
    else:
        predicate = [verb] + ([rng.choice(NEGATIONS)] if phrase.negated else [])
    predicate += words
    tokens = opener + subject + predicate + ["."]
    return tokens, [False] * len(opener + subject) + [True] * len(predicate) + [False]


def _filler(rng: random.Random) -> list[str]:
    template = rng.choice(FILLER_TEMPLATES)
    words = []
    for word in template.split():
        if word.startswith("{"):
            words.append(rng.choice(FILLER[word[1:-1]]))
        else:
            words.append(word)
    return words


def generate_review(rng: random.Random, min_tokens: int = 20, max_tokens: int = 200) -> Review:
    """One review: draw the stars, then 1-3 phrases whose mean polarity gives them, then filler around them."""
    target = rng.randint(1, 5)
    while True:
        phrases = [_draw_phrase(rng) for _ in range(rng.randint(1, 3))]
        if stars_of([p.polarity for p in phrases]) == target:
            break
    sentiment = [_sentence(rng, p) for p in phrases]
    length = rng.randint(min_tokens, max_tokens)
    evidence_tokens = sum(len(tokens) for tokens, _ in sentiment)
    sentences: list[tuple[list[str], list[bool]]] = []
    filled, attempts = evidence_tokens, 0
    while filled < length and attempts < 50:
        filler = _filler(rng)
        attempts += 1
        if filled + len(filler) <= max_tokens:  # the last sentence may overshoot the drawn length, not the cap
            sentences.append((filler, [False] * len(filler)))
            filled += len(filler)
    # sentiment sentences go between filler sentences at random places (several may share one gap)
    for tokens, evidence in sentiment:
        sentences.insert(rng.randint(0, len(sentences)), (tokens, evidence))
    words = [w for tokens, _ in sentences for w in tokens]
    marks = [m for _, evidence in sentences for m in evidence]
    return Review(words, target, [i for i, m in enumerate(marks) if m])


def generate_reviews(n: int, seed: int, min_tokens: int = 20, max_tokens: int = 200) -> list[Review]:
    rng = random.Random(seed)  # Python's Mersenne Twister: the same corpus on every platform and version
    return [generate_review(rng, min_tokens, max_tokens) for _ in range(n)]


def _split(reviews: list[Review]) -> TextSplit:
    return TextSplit(texts=[" ".join(r.tokens) for r in reviews],
                     labels=np.array([r.stars - 1 for r in reviews], dtype=np.int64),
                     evidence=[r.evidence for r in reviews])


def load_reviews(train_size: int = 6000, val_size: int = 1000, test_size: int = 1000, min_tokens: int = 20,
                 max_tokens: int = 200, corpus_seed: int = 2017) -> TextData:
    """The synthetic review corpus (see the module docstring): 1–5 stars, evidence positions recorded.

    SYNTHETIC: generated by attnbench with ``corpus_seed``, identical in every run and on every machine;
    it tests whether a variant finds a few informative words among many, not how it does on real reviews.
    """
    if min(train_size, val_size, test_size) < 1:
        raise ValueError("data.train_size, data.val_size and data.test_size must be at least 1")
    if not 20 <= min_tokens <= max_tokens:
        raise ValueError(f"reviews need 20 <= data.min_tokens <= data.max_tokens, got {min_tokens} and {max_tokens}")
    # one independent stream per split: changing the size of one split leaves the others unchanged
    splits = [generate_reviews(n, seed, min_tokens, max_tokens)
              for n, seed in ((train_size, corpus_seed), (val_size, corpus_seed + 1), (test_size, corpus_seed + 2))]
    return TextData(*map(_split, splits), target="class", classes=STAR_NAMES,
                    class_values=[1.0, 2.0, 3.0, 4.0, 5.0], source="the synthetic reviews generator")
