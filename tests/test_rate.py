"""The rate task's parts in-process: the synthetic reviews generator, tokenisation, batching, the text
backbones and D-Attn with padding, and the evidence-mass metric on hand-built weights."""

from __future__ import annotations

import torch

from attnbench.attention import Attention
from attnbench.attention.network import DAttn
from attnbench.attention.pool import MeanPool
from attnbench.backbones.text import BiGRU, TextCNN, TransformerText, reverse_padded
from attnbench.data.batches import TokenBatches
from attnbench.data.reviews import (
    ADJECTIVES,
    DOWNTONERS,
    INTENSIFIERS,
    NEGATIONS,
    VERBS,
    Phrase,
    generate_reviews,
    load_reviews,
    stars_of,
)
from attnbench.data.vocab import PAD, UNK, Vocab, encode_texts, tokenize
from attnbench.tasks.rate import captured_token_weights, token_weights

# ------------------------------------------------------------------------------------------ the generator


def test_generator_is_seeded_and_lengths_in_range():
    a, b = generate_reviews(50, seed=3), generate_reviews(50, seed=3)
    assert [r.tokens for r in a] == [r.tokens for r in b]
    assert [r.tokens for r in a] != [r.tokens for r in generate_reviews(50, seed=4)]
    assert all(20 <= len(r.tokens) <= 200 for r in a)
    assert {r.stars for r in generate_reviews(200, seed=0)} == {1, 2, 3, 4, 5}


def test_phrase_polarity_rules():
    assert Phrase(1, "none", False).polarity == 1  # good
    assert Phrase(1, "intensifier", False).polarity == 2  # really good
    assert Phrase(-2, "downtoner", False).polarity == -1  # somewhat awful
    assert Phrase(2, "none", True).polarity == -1  # not great
    assert Phrase(-2, "none", True).polarity == 1  # not awful
    assert Phrase(1, "intensifier", True).polarity == -1  # not really good
    assert stars_of([2, 2]) == 5 and stars_of([2, 1]) == 5 and stars_of([1, 1]) == 4
    assert stars_of([1, -1]) == 3 and stars_of([-1, -2]) == 1 and stars_of([-1, -1, 1]) == 3  # -1/3 rounds to 0


def _polarity_from_evidence(words: list[str]) -> list[int]:
    """Re-derive each phrase's polarity from the recorded evidence words alone (an independent reading)."""
    polarity = {word: base for base, words in ADJECTIVES.items() for word in words}
    phrases, negated, modifier = [], False, None
    for word in words:
        if word in VERBS:
            continue
        if word in NEGATIONS or word.endswith("n't"):
            negated = True
        elif word in INTENSIFIERS or word in DOWNTONERS:
            modifier = word
        else:
            p = polarity[word]
            if modifier in INTENSIFIERS:
                p = 2 * (1 if p > 0 else -1)
            elif modifier in DOWNTONERS:
                p = 1 if p > 0 else -1
            if negated:
                p = -1 if p > 0 else 1
            phrases.append(p)
            negated, modifier = False, None
    return phrases


def test_labels_follow_the_recorded_evidence():
    for review in generate_reviews(300, seed=11):
        words = [review.tokens[i] for i in review.evidence]
        assert stars_of(_polarity_from_evidence(words)) == review.stars
        # nothing outside the evidence carries sentiment
        others = {t for i, t in enumerate(review.tokens) if i not in set(review.evidence)}
        sentiment = {w for ws in ADJECTIVES.values() for w in ws} | set(NEGATIONS) | set(INTENSIFIERS) | set(DOWNTONERS)
        assert not others & sentiment


def test_load_reviews_splits_and_token_alignment():
    data = load_reviews(train_size=40, val_size=10, test_size=10)
    assert (len(data.train), len(data.val), len(data.test)) == (40, 10, 10)
    assert data.classes[0] == "1 star" and data.class_values == [1.0, 2.0, 3.0, 4.0, 5.0]
    for text, evidence in zip(data.train.texts, data.train.evidence):
        assert tokenize(text) == text.split()  # evidence positions index the task's own tokens
        assert evidence and max(evidence) < len(text.split())
    assert load_reviews(train_size=40, val_size=5, test_size=10).test.texts == data.test.texts  # splits independent


# ------------------------------------------------------------------------------------------ tokenisation


def test_tokenize_and_vocab():
    assert tokenize("Not GREAT, really... wasn't it?") == ["not", "great", ",", "really", ".", ".", ".", "wasn't",
                                                            "it", "?"]
    assert tokenize("Café Straße", lowercase=False) == ["Café", "Straße"]
    vocab = Vocab.build(["b a a", "c a b", "d"], min_freq=2)
    assert vocab.tokens == [PAD, UNK, "a", "b"]  # most frequent first, rare words dropped
    assert vocab.encode("a d b") == [2, 1, 3]
    assert Vocab.build(["b a a", "c a b"], max_size=3).tokens == [PAD, UNK, "a"]
    tokens, lengths = encode_texts(["a b a b a", "", "b"], vocab, max_len=3)
    assert tokens.tolist() == [[2, 3, 2], [1, 0, 0], [3, 0, 0]] and lengths.tolist() == [3, 1, 1]


def test_vocab_round_trip(tmp_path):
    vocab = Vocab.build(["hello world", "hello"])
    assert Vocab.load(vocab.save(tmp_path / "vocab.json")).tokens == vocab.tokens


# ------------------------------------------------------------------------------------------ batches


def test_token_batches_deterministic_cut_and_sharded():
    lengths = torch.tensor([3, 7, 2, 9, 5, 4, 8, 1, 6, 2])
    tokens = torch.zeros(10, 9, dtype=torch.int32)
    for i, n in enumerate(lengths):
        tokens[i, :n] = i + 2
    labels = torch.arange(10)
    make = lambda **kw: TokenBatches(tokens, lengths, labels, 4, shuffle=True, seed=1, bucket=2, **kw)  # noqa: E731
    one = [b.labels.tolist() for b in make().epoch(3)]
    assert one == [b.labels.tolist() for b in make().epoch(3)]
    assert one != [b.labels.tolist() for b in make().epoch(4)]
    assert sorted(sum(one, [])) == list(range(10))
    for batch in make().epoch(3):
        assert batch.tokens.shape[1] == int(lengths[batch.labels].max())  # cut to its longest review
    ranks = [[b.labels.tolist() for b in make(rank=r, world=2).epoch(3)] for r in (0, 1)]
    for whole, a, b in zip(one, *ranks):
        assert sorted(a + b) == sorted(whole)
    assert len(list(make(drop_last=True).epoch(0))) == 2
    narrow = TokenBatches(tokens, lengths, labels, 2, shuffle=False, min_width=5)
    assert [b.tokens.shape[1] for b in narrow] == [9, 7, 5, 5, 5]  # longest first, never under min_width


# ------------------------------------------------------------------------------------------ backbones


def test_reverse_padded_is_an_involution():
    x = torch.arange(2 * 4).float().view(2, 4, 1)
    lengths = torch.tensor([3, 4])
    assert reverse_padded(x, lengths)[:, :, 0].tolist() == [[2, 1, 0, 3], [7, 6, 5, 4]]
    assert torch.equal(reverse_padded(reverse_padded(x, lengths), lengths), x)


def test_backbones_ignore_padding():
    torch.manual_seed(0)
    tokens = torch.randint(2, 50, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 1:] = False
    tokens = tokens * mask
    padded = torch.cat([tokens, torch.zeros(3, 5, dtype=tokens.dtype)], 1)
    padded_mask = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], 1)
    other = padded.clone()
    other[:, 7:] = 9  # whatever the padding holds, it is masked
    backbones = [BiGRU(50, 8, 6), TextCNN(50, 8, (2, 3), 4), TransformerText(50, 8, 2, 1, 16),
                 BiGRU(50, 8, 6, slots={"network": lambda d: DAttn(d, local_filters=4, global_filters=3, hidden=8)})]
    for backbone in backbones:
        backbone.eval()
        out = backbone(tokens, mask)
        assert torch.allclose(out, backbone(padded, padded_mask), atol=1e-5), type(backbone).__name__
        assert torch.allclose(out, backbone(other, padded_mask), atol=1e-5), type(backbone).__name__


def test_dattn_records_sigmoid_weights_zero_on_padding_and_gets_gradients():
    torch.manual_seed(0)
    model = DAttn(6, local_filters=5, global_filters=4, hidden=7, out_dim=3)
    x = torch.randn(2, 9, 6, requires_grad=True)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 2:] = False  # shorter than the widest global convolution
    model.eval()
    for part in (model.local, model.global_):
        part.capture = True
    out = model(x, mask)
    assert out.shape == (2, 3)
    for part in (model.local, model.global_):
        assert part.weights.shape == (2, 9) and (part.weights[~mask] == 0).all() and (part.weights[mask] > 0).all()
    model.train()
    model(x, mask).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# ------------------------------------------------------------------------------------------ evidence mass


class _Recorded(Attention):
    """A stand-in module holding hand-built weights."""

    def __init__(self, slot: str, weights: torch.Tensor) -> None:
        super().__init__()
        self.slot, self.weights = slot, weights


def test_evidence_mass_on_hand_built_weights():
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    evidence = torch.tensor([[False, True, False, False], [True, False, False, False]])
    # a pool: one distribution per review
    pool = _Recorded("pool", torch.tensor([[0.1, 0.6, 0.2, 0.1], [0.25, 0.75, 0.0, 0.0]]))
    weights = token_weights(pool, mask)
    assert torch.allclose((weights * evidence).sum(1), torch.tensor([0.6, 0.25]))
    # a mixer: (B, heads, queries, keys), padded query rows zero; rows averaged over real queries and heads
    mixer_weights = torch.zeros(2, 2, 4, 4)
    mixer_weights[0, :, :, 1] = 1.0  # every query of review 0 looks at token 1 (evidence)
    mixer_weights[1, 0, :2, :2] = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    mixer_weights[1, 1, :2, :2] = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    mixer = _Recorded("mixer", mixer_weights)
    assert torch.allclose((token_weights(mixer, mask) * evidence).sum(1), torch.tensor([1.0, 1.5 / 4]))
    # sigmoid gates are renormalised; signed weights count by magnitude
    gates = _Recorded("model", torch.tensor([[0.5, 0.5, 0.0, 1.0], [-0.2, 0.6, 0.0, 0.0]]))
    assert torch.allclose((token_weights(gates, mask) * evidence).sum(1), torch.tensor([0.25, 0.25]))
    # several modules: their token weights are averaged
    both = captured_token_weights({"a": pool, "b": gates}, mask)
    assert torch.allclose((both * evidence).sum(1), torch.tensor([(0.6 + 0.25) / 2, (0.25 + 0.25) / 2]))
    # no weights over these tokens: nothing to report
    assert captured_token_weights({"mean": MeanPool(4)}, mask) is None
    channels = _Recorded("feature", torch.ones(2, 4))
    channels.weights_over = "channels"
    assert token_weights(channels, mask) is None
