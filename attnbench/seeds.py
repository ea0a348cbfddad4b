"""One way to derive a seed from several integers (a run's seed, a stream, an epoch, a rank, an index)."""

from __future__ import annotations

import numpy as np


def mixed_seed(*parts: int) -> int:
    """A 63-bit seed, well mixed from ``parts`` by numpy's SeedSequence: nearby inputs (seed 0 epoch 1, seed 1
    epoch 0) give unrelated streams, which sums and products of magic primes do not promise."""
    state = np.random.SeedSequence(list(parts)).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1
