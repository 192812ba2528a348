"""A bounded local disk cache of a remote store's committed arrays, so that the second epoch of a
stream reads from local disk instead of the object store.

What is cached: whole objects (an array's ``zarr.json`` and its shards), each fetched with one
GET, under ``<folder>/<store>/<domain>/<sequence>/<commit>/<level>/<field>/``, where
``<commit>`` is a digest of the sequence's commit time and the array's recorded checksum.
Committed sequences are immutable and a rewritten one gets a new commit, so a cached object is
never stale and is never checked against the store again; TensorStore reads the local copy with
its ``file`` kvstore (crc32c still checked on every inner chunk, so a damaged cache file is
caught, dropped and fetched again).

Bounded: when the folder holds more than ``max_bytes``, the least recently used files (by
modification time, refreshed on use) are deleted down to 90 %, never the ones the current read
needs. Shared safely between threads and processes: every file is written to a temporary name
in its folder and renamed into place (readers see a whole file or none), eviction tolerates
files other processes removed, and a read whose file another process evicted meanwhile fetches
it again.

Settings: ``ATLAS_CACHE_DIR`` (the cache folder, default ``~/.cache/atlasstore``; the chunks
go into its ``chunks/``) and ``ATLAS_CACHE_BYTES`` (e.g. ``20GiB``; ``0`` turns the cache off;
default :data:`DEFAULT_MAX_BYTES`); ``atlas --cache-dir/--cache-bytes`` set them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from atlasstore.errors import CorruptArray, RemoteStoreError, StoreError
from atlasstore.io import object_storage
from atlasstore.io.cache_settings import CacheSettings
from atlasstore.store.atlas_store import AtlasStore
from atlasstore.store.tensorstore_reader import TensorStoreReader

#: a file used again is marked recently used at most this often (one utime per file and minute)
TOUCH_EVERY = 60.0
#: temporary files older than this are leftovers of a killed writer
STALE_TEMP = 3600.0
#: GETs in flight per fetch. Cold epochs of bench_remote's stream against SeaweedFS on the 2-core
#: box (2026-12-08, load 7-12), medians of 5 interleaved: 1.56 s at 2, 1.57 s at 4, 1.39 s at 8,
#: 1.28 s at 32, each with a spread of +-0.4 s (an earlier 4-round try had 4 ahead of 32): no
#: measurable effect, so it stays at 32
FETCH_CONCURRENCY = 32


class DiskCache:
    """Whole files in a folder, bounded by bytes, least recently used evicted first."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._used: int | None = None  # bytes in the folder as last seen (None: not scanned)
        self._added = 0  # bytes this process added since that scan
        self._touched: dict[Path, float] = {}
        self.fetched = 0  # files fetched by this process (for tests and benchmarks)

    def put(self, path: Path, data: bytes) -> None:
        """Place ``data`` at ``path`` atomically (a temporary file renamed into place)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        with self._lock:
            self._added += len(data)
            self._touched[path] = time.monotonic()
            self.fetched += 1

    def touch(self, paths: Iterable[Path]) -> None:
        """Mark files as recently used (their mtime), at most once a minute each."""
        now = time.monotonic()
        for p in paths:
            if now - self._touched.get(p, -TOUCH_EVERY) >= TOUCH_EVERY:
                self._touched[p] = now
                try:
                    os.utime(p)
                except FileNotFoundError:
                    pass

    def _scan(self) -> list[tuple[float, int, Path]]:
        files = []
        now = time.time()
        for dirpath, _, names in os.walk(self.folder):
            for n in names:
                p = Path(dirpath) / n
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                if n.endswith(".tmp"):
                    if now - st.st_mtime > STALE_TEMP:
                        p.unlink(missing_ok=True)
                    continue
                files.append((st.st_mtime, st.st_size, p))
        return files

    def bound(self, keep: Iterable[Path] = ()) -> None:
        """Evict least recently used files (never those in ``keep``) while the folder holds more
        than ``max_bytes``; rescans the folder (other processes add files too) whenever this
        process has added a tenth of the bound since the last scan."""
        with self._lock:
            if self._used is not None and self._used + self._added <= self.max_bytes \
                    and self._added < self.max_bytes / 10:
                return
            files = self._scan()
            used = sum(size for _, size, _ in files)
            if used > self.max_bytes:
                protect = set(keep)
                target = 0.9 * self.max_bytes
                for _, size, p in sorted(files):
                    if used <= target:
                        break
                    if p in protect:
                        continue
                    p.unlink(missing_ok=True)
                    self._touched.pop(p, None)
                    used -= size
            self._used, self._added = used, 0


class DiskCachedReader(TensorStoreReader):
    """TensorStore over local copies of a remote store's arrays, fetched whole on first use into
    a :class:`DiskCache` (see the module docstring)."""

    def __init__(self, store: AtlasStore, settings: CacheSettings, cache_bytes: int = 0) -> None:
        loc = str(store.location)
        if not object_storage.is_s3(loc):
            raise StoreError(f"the disk cache reads s3:// stores; {loc} is not one")
        self.store = store
        self.s3 = object_storage.S3Location.parse(loc)
        self.client = object_storage.s3_client(self.s3)
        digest = hashlib.sha256(self.s3.url.encode()).hexdigest()[:12]
        self.cache = DiskCache(settings.folder, settings.max_bytes)
        self.base = settings.folder / f"{self.s3.bucket}-{digest}"
        self._meta: dict[str, tuple[Path, int, int, str]] = {}
        self._inflight: dict[Path, threading.Event] = {}  # local path -> set when its GET ends
        self._inflight_lock = threading.Lock()
        super().__init__(lambda name: {"driver": "file", "path": str(self.local_dir(name))},
                         cache_bytes, where=f"{self.s3.url} (cached in {self.base})")

    def local_dir(self, name: str) -> Path:
        """The local folder of array ``name``, named by its sequence's commit."""
        domain, seq, level, field = name.split("/")
        rec = self.store.sequence_record(domain, seq)
        sums = rec.checksum(int(level), field)
        commit = hashlib.sha256(f"{rec.completed}|{sums}".encode()).hexdigest()[:16]
        return self.base / domain / seq / commit / level / field

    def _fetch(self, pairs: Sequence[tuple[str, Path]]) -> None:
        """GET each (key relative to the store, local path) concurrently and place it. An object
        another thread of this reader is already fetching is not fetched twice: this call waits
        for that fetch (and fetches the object itself only if that one failed)."""
        while pairs:
            mine: list[tuple[str, Path]] = []
            theirs: list[tuple[str, Path, threading.Event]] = []
            with self._inflight_lock:
                for k, p in pairs:
                    done = self._inflight.get(p)
                    if done is not None:
                        theirs.append((k, p, done))
                    elif not p.exists():  # (placed meanwhile by a fetch that just ended)
                        self._inflight[p] = threading.Event()
                        mine.append((k, p))
            try:
                self._get_all(mine)
            finally:
                with self._inflight_lock:
                    for _, p in mine:
                        self._inflight.pop(p).set()
            for _, _, done in theirs:
                done.wait()
            pairs = [(k, p) for k, p, _ in theirs if not p.exists()]

    def _get_all(self, pairs: Sequence[tuple[str, Path]]) -> None:
        import obstore
        from zarr.core.sync import sync

        async def one(sem: asyncio.Semaphore, key: str, path: Path) -> None:
            async with sem:
                try:
                    resp = await obstore.get_async(self.client, key)
                    data = bytes(await resp.bytes_async())
                except FileNotFoundError:
                    raise CorruptArray(f"{self.s3.url}/{key}: object missing") from None
                except Exception as exc:
                    if object_storage.is_storage_error(exc):
                        raise RemoteStoreError(
                            f"{self.s3.url}: {object_storage.explain(exc)}") from None
                    raise
            await asyncio.to_thread(self.cache.put, path, data)

        async def all_() -> None:
            sem = asyncio.Semaphore(FETCH_CONCURRENCY)
            await asyncio.gather(*(one(sem, k, p) for k, p in pairs))

        if pairs:
            sync(all_())

    def _array_meta(self, name: str) -> tuple[Path, int, int, str]:
        """(local folder, length, steps per shard, chunk key separator), fetching zarr.json."""
        m = self._meta.get(name)
        if m is not None:
            return m
        d = self.local_dir(name)
        meta_path = d / "zarr.json"
        for attempt in range(2):
            if not meta_path.exists():
                self._fetch([(f"{name}/zarr.json", meta_path)])
            try:
                doc = json.loads(meta_path.read_bytes())
                break
            except (ValueError, FileNotFoundError):  # damaged or evicted meanwhile: fetch again
                meta_path.unlink(missing_ok=True)
                if attempt:
                    raise CorruptArray(f"{self.s3.url}/{name}/zarr.json is not readable") from None
        enc = doc.get("chunk_key_encoding", {})
        sep = (enc.get("configuration") or {}).get("separator", "/")
        if enc.get("name") != "default":
            raise StoreError(f"{name}: chunk key encoding {enc.get('name')!r} is not cached")
        m = (d, int(doc["shape"][0]), int(doc["chunk_grid"]["configuration"]["chunk_shape"][0]), sep)
        self._meta[name] = m
        return m

    def _needed(self, name: str, t: Any) -> list[tuple[str, Path]]:
        d, n, per_shard, sep = self._array_meta(name)
        if isinstance(t, slice):
            lo, hi, _ = t.indices(n)
        else:
            lo = int(t) % n if n else 0
            hi = lo + 1
        out = [(f"{name}/zarr.json", d / "zarr.json")]
        for i in range(lo // per_shard, (max(hi, lo + 1) - 1) // per_shard + 1):
            key = sep.join(["c", str(i), "0", "0"])
            out.append((f"{name}/{key}", d / key))
        return out

    def ensure(self, selections: Iterable[tuple[str, Any]]) -> None:
        """Make the objects behind these (array, time selection) pairs local."""
        need: dict[Path, str] = {}
        for name, t in selections:
            for key, path in self._needed(name, t):
                need[path] = key
        missing = [(k, p) for p, k in need.items() if not p.exists()]
        self._fetch(missing)
        fetched = {p for _, p in missing}
        self.cache.touch(p for p in need if p not in fetched)
        self.cache.bound(keep=need)

    def _drop(self, names: Iterable[str]) -> None:
        """Forget cached arrays (a damaged or evicted file): fetched again on the next read."""
        for name in set(names):
            m = self._meta.pop(name, None)
            self.forget(name)
            if m is not None:
                for f in m[0].glob("c*"):
                    f.unlink(missing_ok=True)

    def read(self, name: str, selection: tuple[Any, ...]) -> NDArray:
        for attempt in range(3):
            self.ensure([(name, selection[0])])
            try:
                return super().read(name, selection)
            except CorruptArray:
                if attempt == 2:
                    raise
                self._drop([name])
        raise AssertionError("unreachable")

    def copy_into(self, jobs: Sequence[tuple[str, tuple[Any, ...], NDArray]]) -> None:
        for attempt in range(3):
            self.ensure((name, sel[0]) for name, sel, _ in jobs)
            try:
                return super().copy_into(jobs)
            except CorruptArray as exc:
                if attempt == 2:
                    raise
                bad = [n for n, _, _ in jobs if n in str(exc)] or [n for n, _, _ in jobs]
                self._drop(bad)
