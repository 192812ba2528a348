"""The one read path of a store: :class:`Reader`, taking :class:`ReadJob` s keyed by
:class:`~atlasstore.records.ArrayKey`.

Which engine reads is decided here and nowhere else: TensorStore straight over a local store's
files (5-10x less CPU per read than zarr-python, see the docs' performance page), TensorStore
over the bounded local disk cache of an ``s3://`` store's shards
(:mod:`atlasstore.read.disk_cache`), or zarr-python for every other location (and when
TensorStore is not installed). Queries, the training stream, the audit and the predecessor's
API all read through it; :meth:`AtlasStore.read <atlasstore.store.AtlasStore.read>` stays the
plain zarr-python reference read of the store layer.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from atlasstore.errors import StoreError
from atlasstore.io import object_storage
from atlasstore.io.cache_settings import CacheSettings
from atlasstore.read.disk_cache import DiskCachedReader
from atlasstore.records import ArrayKey
from atlasstore.store.atlas_store import AtlasStore
from atlasstore.store.tensorstore_reader import TensorStoreReader

ReaderKind = Literal["auto", "tensorstore", "zarr"]
_FULL = slice(None)


@dataclass(frozen=True)
class ReadJob:
    """Copy ``t`` (and the ``y``, ``x`` slices) of the array ``key`` into ``out``, a
    caller-owned buffer of exactly that shape."""

    key: ArrayKey
    t: slice
    out: NDArray[np.float32]
    y: slice = field(default_factory=lambda: _FULL)
    x: slice = field(default_factory=lambda: _FULL)


def _engine(store: AtlasStore, cache_bytes: int,
            cache: CacheSettings | None) -> TensorStoreReader | None:
    """TensorStore for the store (through the disk cache for ``s3://`` unless it is off), or
    None where TensorStore cannot read the location."""
    if object_storage.is_s3(store.location):
        settings = cache or store.cache_settings or CacheSettings.from_environment()
        if settings.max_bytes > 0:
            return DiskCachedReader(store, settings, cache_bytes)
    if cache_bytes == 0:  # the store's own: one set of open handles per store
        return store.fast_reader
    return TensorStoreReader.for_store(store, cache_bytes)


class Reader:
    """Reads a store's committed arrays by :class:`ArrayKey`.

    ``kind``: "auto" (TensorStore where it can read, zarr-python elsewhere), "tensorstore"
    (refused where it cannot) or "zarr". ``cache_bytes`` sizes TensorStore's decoded-chunk
    cache (0: none); ``cache`` overrides the store's disk-cache settings for ``s3://``.
    """

    def __init__(self, store: AtlasStore, kind: ReaderKind | str = "auto", cache_bytes: int = 0,
                 cache: CacheSettings | None = None) -> None:
        if kind not in ("auto", "tensorstore", "zarr"):
            raise StoreError(f"reader must be 'auto', 'tensorstore' or 'zarr', got {kind!r}")
        self.store = store
        self.engine: TensorStoreReader | None = None
        if kind != "zarr":
            try:
                self.engine = _engine(store, cache_bytes, cache)
            except ImportError:
                if kind == "tensorstore":
                    raise
            if self.engine is None and kind == "tensorstore":
                raise StoreError(f"reader='tensorstore' needs a local or s3:// store; "
                                 f"{store.location} is neither")
        if self.engine is not None:  # a rewritten sequence must not be read through old handles
            store.on_delete(_forget_in(self.engine))

    @property
    def name(self) -> str:
        return "tensorstore" if self.engine is not None else "zarr"

    def read(self, key: ArrayKey, t: slice | int = _FULL, y: slice = _FULL,
             x: slice = _FULL) -> NDArray:
        """Decoded values of a committed array; corrupt or missing data raises CorruptArray."""
        if self.engine is None:
            return self.store.read(key.domain, key.sequence_id, key.level, key.field, t=t, y=y, x=x)
        self.store.array(key.domain, key.sequence_id, key.level, key.field)  # validates the key
        return self.engine.read(key.path, (t, y, x))

    def read_into(self, jobs: Sequence[ReadJob]) -> None:
        """Copy many slices at once (every copy of a batch in flight together)."""
        if self.engine is None:
            for j in jobs:
                j.out[...] = self.read(j.key, j.t, j.y, j.x)
            return
        seen: set[ArrayKey] = set()
        for j in jobs:
            if j.key not in seen:  # validates the sequence, level and field once per array
                self.store.array(j.key.domain, j.key.sequence_id, j.key.level, j.key.field)
                seen.add(j.key)
        self.engine.copy_into([(j.key.path, (j.t, j.y, j.x), j.out) for j in jobs])

    def read_all(self, key: ArrayKey) -> NDArray[np.float32]:
        """A whole array (through this reader, so its chunks land in this reader's caches)."""
        n = self.store.array(key.domain, key.sequence_id, key.level, key.field).shape
        out = np.empty(n, np.float32)
        self.read_into([ReadJob(key, slice(0, n[0]), out)])
        return out


def _forget_in(engine: TensorStoreReader) -> weakref.WeakMethod:
    return weakref.WeakMethod(engine.forget)


_DEFAULT: weakref.WeakKeyDictionary[AtlasStore, Reader] = weakref.WeakKeyDictionary()
_DEFAULT_LOCK = threading.Lock()


def reader_of(store: AtlasStore) -> Reader:
    """The store's shared default reader (no decoded-chunk cache), made on first use, so that
    every caller of one open store shares TensorStore's open array handles."""
    with _DEFAULT_LOCK:
        r = _DEFAULT.get(store)
        if r is None:
            r = _DEFAULT[store] = Reader(store)
        return r
