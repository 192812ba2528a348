"""The check that makes a missing shard an error: zarr-python reads an absent shard as fill
values, but a committed array has every shard, so absent or empty means corrupt, never zeros."""

from __future__ import annotations

from typing import Any

import zarr
from zarr.core.sync import sync

from atlasstore.errors import CorruptArray


def check_shards_present(store: Any, arr: zarr.Array, name: str, t: slice | int) -> None:
    """Zarr reads a missing shard as fill values; a committed array has every shard, so a
    missing or empty one is corruption, not zeros."""
    n = arr.shape[0]
    if isinstance(t, slice):
        lo, hi, _ = t.indices(n)
    else:
        lo = int(t) % n if n else 0
        hi = lo + 1
    if hi <= lo:
        return
    ts = (arr.shards or arr.chunks)[0]
    for i in range(lo // ts, (hi - 1) // ts + 1):
        key = f"{name}/{arr.metadata.encode_chunk_key((i, 0, 0))}"
        try:
            size = sync(store.getsize(key))
        except FileNotFoundError:
            size = 0
        if not size:
            raise CorruptArray(f"{name}: shard {i} (time steps {i * ts}..{min(n, (i + 1) * ts) - 1}) "
                               f"is missing or empty")
