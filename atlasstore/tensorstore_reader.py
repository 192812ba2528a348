"""The fast read path of local stores: TensorStore's ``zarr3`` driver over committed arrays.

Measured 5-10x less CPU per read than zarr-python 3.1 on Python 3.11
(``benchmarks/results/store.md``). Its errors are mapped to the store's: a missing or empty
shard and damaged bytes are :class:`~atlasstore.store_errors.CorruptArray`, never zeros; a bad
selection is an ``IndexError``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .locations import local_path
from .store_errors import CorruptArray, looks_corrupt

if TYPE_CHECKING:
    from .store import AtlasStore


class TensorStoreReader:
    """TensorStore's zarr3 driver over a local store's committed arrays.

    All copies of a call are issued at once and run in TensorStore's thread pool (decode, crc32c
    check and copy into the caller's buffer, without the GIL). With ``cache_bytes > 0`` decoded
    chunks are kept in an LRU cache pool, so a step shared by overlapping windows is decoded once;
    committed arrays are immutable, so cached data is not rechecked after open.
    """

    def __init__(self, root: Path, cache_bytes: int = 0) -> None:
        import tensorstore as ts

        self._ts = ts
        self.root = root
        self.cache_bytes = int(cache_bytes)
        self._ctx = ts.Context({"cache_pool": {"total_bytes_limit": self.cache_bytes}})
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_store(cls, store: AtlasStore, cache_bytes: int = 0) -> TensorStoreReader | None:
        """A reader for a local store; None for remote (fsspec) stores."""
        path = local_path(store.location)
        return None if path is None else cls(path.resolve(), cache_bytes)

    def handle(self, name: str) -> Any:
        h = self._handles.get(name)
        if h is None:
            # fill_missing_data_reads=False: a missing or empty shard is an error, never zeros
            spec: dict[str, Any] = {"driver": "zarr3", "fill_missing_data_reads": False,
                                    "kvstore": {"driver": "file", "path": str(self.root / name)}}
            if self.cache_bytes:
                spec["recheck_cached_data"] = "open"
            h = self._ts.open(spec, read=True, context=self._ctx).result()
            with self._lock:
                h = self._handles.setdefault(name, h)
        return h

    def forget(self, prefix: str) -> None:
        with self._lock:
            for k in [k for k in self._handles if k.startswith(prefix)]:
                del self._handles[k]

    @staticmethod
    def _result(fut: Any, name: str) -> Any:
        try:
            return fut.result()
        except Exception as exc:
            text = str(exc)
            if text.startswith(("OUT_OF_RANGE", "INVALID_ARGUMENT")):  # the caller's selection
                raise IndexError(f"{name}: {text.splitlines()[0][:300]}") from None
            if text.startswith(("NOT_FOUND", "FAILED_PRECONDITION")):
                raise CorruptArray(f"{name}: shard missing or empty ({text.splitlines()[0][:300]})") from exc
            if looks_corrupt(exc):
                raise CorruptArray(f"{name}: stored data is corrupt ({exc})") from exc
            raise

    def read(self, name: str, selection: tuple[Any, ...]) -> NDArray:
        try:
            view = self.handle(name)[selection]
        except (ValueError, IndexError) as exc:  # tensorstore's bad index
            raise IndexError(f"{name}: {str(exc).splitlines()[0][:300]}") from None
        return np.asarray(self._result(view.read(), name))

    def copy_into(self, jobs: Sequence[tuple[str, tuple[Any, ...], NDArray]]) -> None:
        futs = [self._ts.array(dst, copy=False, write=True).write(self.handle(name)[sel])
                for name, sel, dst in jobs]
        for fut, (name, _, _) in zip(futs, jobs, strict=True):
            self._result(fut, name)
