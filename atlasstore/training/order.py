"""The order of a stream's windows: a pure function of (seed, epoch), shared out between processes,
so that a stream resumed from its state continues exactly where it stopped."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> NDArray[np.int64]:
    """Order of the ``n`` windows in ``epoch``: a pure function of (seed, epoch)."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch)])))
    return rng.permutation(n).astype(np.int64)


def process_share(order: NDArray[np.int64], process_index: int, process_count: int
                  ) -> NDArray[np.int64]:
    """Process ``process_index``'s share of an epoch's order: disjoint, equal, remainder dropped."""
    usable = len(order) - len(order) % process_count
    return order[:usable][process_index::process_count]


def epoch_batches(n: int, seed: int, epoch: int, batch_size: int, process_index: int = 0,
                  process_count: int = 1, shuffle: bool = True) -> NDArray[np.int64]:
    """Window indices of every batch this process takes in ``epoch``: (steps, batch_size)."""
    share = process_share(epoch_permutation(n, seed, epoch, shuffle), process_index, process_count)
    steps = len(share) // batch_size
    return share[:steps * batch_size].reshape(steps, batch_size)


def _positions(epoch: int, step: int, steps_per_epoch: int, num_epochs: int | None
               ) -> Iterator[tuple[int, int]]:
    """(epoch, step) of every batch from the given one to the end of the stream."""
    while num_epochs is None or epoch < num_epochs:
        yield epoch, step
        step += 1
        if step == steps_per_epoch:
            epoch, step = epoch + 1, 0
