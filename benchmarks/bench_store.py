"""Storage benchmark: the atlas store vs the predecessor's loose files, and a layout study.

Run (from the repository root):

    .venv/bin/python benchmarks/bench_store.py            # store vs loose files -> results/store.md
    .venv/bin/python benchmarks/bench_store.py --layout   # chunk/codec study    -> results/layout.md
    add --quick for a small smoke run (numbers are then labelled as smoke numbers)

One data set is synthesised in memory (default 5 domains x 5 sequences x 40 steps at 256x256 =
1000 maps; ``--quick``: 5 x 2 x 16) and written three ways into fresh temporary folders:

(a) the predecessor's layout: one ``.npy`` per 256 map plus a JSON sidecar (mean, variance,
    entropy, perturbations), one folder per domain; pyramids (area downsampling,
    ``physics.downsample``) and gradients are computed on load;
(b) best-case loose files: one ``.npy`` per map per level per field, all precomputed;
(c) the atlas store (``AtlasStore.write_sequence``, default ``Layout``).

For each it records files and bytes on disk and write time, then times

(1) 64 random 4-step windows at scale 128 (the same windows for every path), fields
    ``energy`` and ``energy+grad_x+grad_y``;
(2) a sequential pass over every sequence at scale 64 (same two field sets);

warm (best of repeats after a warm-up; process CPU time too) and cold (median of runs, each after
emptying the page cache). The store
is read with zarr-python (``Query.read_windows``, per-window ``AtlasStore.read``, per-window reads
of cached ``zarr.Array`` objects, and all windows gathered concurrently on the async arrays) and
with tensorstore's ``zarr3`` driver (cached handles, no chunk cache; one read at a time, all reads
issued at once, and all reads written straight into a preallocated batch buffer as
``atlasstore.training.stream``'s tensorstore reader does). The ceiling is memcpy bandwidth (a numpy copy
of a large array); every path's rate is MB/s of decoded float32 delivered, also given as a
fraction of it. ``--layout`` compares inner time chunks (1, 2, 4, 8, whole shard) and codecs
(none, blosc lz4 shuffle, zstd(1) and zstd(3) bitshuffle) on 5 x 3 x 40 maps.

Cold cache: ``sync; echo 3 > /proc/sys/vm/drop_caches`` when permitted (root), otherwise
``posix_fadvise(POSIX_FADV_DONTNEED)`` on every file of the path being measured; after every
eviction a sample of the files is checked with mincore(2) and the resident fraction is reported.
On a VM the hypervisor may still cache the disk, so "cold" means "not in this kernel's page cache".
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import functools
import json
import math
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts
import zarr
from zarr.core.sync import sync as zsync

import machine
from atlasstore.physics import fields as physics
from atlasstore.physics import synth
from atlasstore.query import Query, Window
from atlasstore.store import FIELDS, AtlasStore, Layout, array_stats, checksum

RESULTS = Path(__file__).resolve().parent / "results"
ALL = tuple(FIELDS)
ENERGY = ("energy",)
FIELD_SETS = {"energy": ENERGY, "energy+grads": ALL}
WINDOW_SCALE = 128
SEQ_SCALE = 64
N_WINDOWS = 64
WINDOW_LEN = 4


# --------------------------------------------------------------------------- machine

def fs_of(path: Path) -> str:
    try:
        best = ("", "?", "?")
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, typ = line.split()[:3]
            if str(path.resolve()).startswith(mnt) and len(mnt) >= len(best[0]):
                best = (mnt, typ, dev)
        return f"{best[1]} on {best[2]} (mounted at {best[0]})"
    except OSError:
        return "unknown"


def machine_lines(run: machine.Start, workdir: Path) -> list[str]:
    return [
        *machine.describe(run, ("numpy", "zarr", "numcodecs", "tensorstore", "google-crc32c")),
        f"- work folder: {workdir} ({fs_of(workdir)})",
        f"- zarr config: async.concurrency={zarr.config.get('async.concurrency')}, codec_pipeline "
        f"batch_size={zarr.config.get('codec_pipeline.batch_size')}",
    ]


def memcpy_mbps(nbytes: int, reps: int = 5) -> float:
    """Best-of-``reps`` bandwidth of ``np.copyto`` between two preallocated float32 arrays."""
    src = np.random.default_rng(0).random(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return nbytes / best / 1e6


def disk_read_mbps(path: Path, nbytes: int, ev: Evictor) -> float:
    """Cold sequential read of one large file in 4 MiB blocks: the storage ceiling for cold runs."""
    block = np.random.default_rng(1).bytes(4 * 2**20)
    with open(path, "wb") as f:
        for _ in range(nbytes // len(block)):
            f.write(block)
    ev.evict([path.parent])
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.read(4 * 2**20):
            pass
    dt = time.perf_counter() - t
    path.unlink()
    return nbytes / dt / 1e6


# --------------------------------------------------------------------------- page cache

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_pages(path: str) -> tuple[int, int]:
    """(resident, total) pages of a file in the page cache, by mmap + mincore(2)."""
    size = os.path.getsize(path)
    if size == 0:
        return 0, 0
    n = (size + _PAGE - 1) // _PAGE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        if addr is None or addr == ctypes.c_void_p(-1).value:
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            vec = (ctypes.c_ubyte * n)()
            if _libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            return sum(v & 1 for v in vec), n
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def all_files(root: Path) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]


class Evictor:
    """Empties the page cache before a cold run and checks that it did."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requested = mode
        self.checks: list[float] = []  # resident fraction of sampled files after each eviction
        self.primer: Callable[[], None] | None = None
        if mode == "auto":
            self.mode = "drop" if self._try_drop() else "fadvise"
        elif mode == "drop" and not self._try_drop():
            raise SystemExit("--cold drop: cannot write /proc/sys/vm/drop_caches (not root?)")

    @staticmethod
    def _try_drop() -> bool:
        try:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            return True
        except OSError:
            return False

    def describe(self) -> str:
        if self.mode == "drop":
            how = ("`sync; echo 3 > /proc/sys/vm/drop_caches` (page cache, dentries and inodes) "
                   "before every cold run")
        else:
            why = ("chosen with --cold fadvise" if self.requested == "fadvise"
                   else "drop_caches was not permitted")
            how = ("`posix_fadvise(POSIX_FADV_DONTNEED)` on every file of the measured path before every "
                   f"cold run ({why}; dentries/inodes stay cached)")
        if self.checks:
            how += (f"; verified with mincore(2) on up to 64 sampled files after each of "
                    f"{len(self.checks)} evictions: at most {max(self.checks):.1%} of their pages "
                    f"were still resident")
        if self.mode == "drop":
            how += ("; after each drop a tiny primer store/.npy in another folder is read through "
                    "every reader so that library code paged out by the drop is not billed to the run")
        return how

    def evict(self, roots: Sequence[Path]) -> None:
        files = [f for r in roots for f in all_files(r)]
        if self.mode == "drop":
            if not self._try_drop():
                raise RuntimeError("drop_caches stopped working")
        else:
            os.sync()
            for p in files:
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
        sample = random.Random(len(self.checks)).sample(files, min(64, len(files)))
        res = tot = 0
        for p in sample:
            r, t = resident_pages(p)
            res, tot = res + r, tot + t
        self.checks.append(res / tot if tot else 0.0)
        if self.primer is not None:
            self.primer()


# --------------------------------------------------------------------------- data

@dataclass
class Data:
    seqs: dict[tuple[str, str], np.ndarray]           # (domain, seq) -> (T, 256, 256) float32
    meta: dict[tuple[str, str], list[dict[str, Any]]]  # step records from synth
    presets: dict[str, dict[str, Any]]
    n_steps: int
    seconds: float

    @property
    def keys(self) -> list[tuple[str, str]]:
        return list(self.seqs)

    @property
    def n_maps(self) -> int:
        return sum(v.shape[0] for v in self.seqs.values())


def make_data(n_domains: int, n_seqs: int, n_steps: int, seed: int) -> Data:
    t = time.perf_counter()
    seqs, meta, presets = {}, {}, {}
    for d in synth.DEFAULT_DOMAINS[:n_domains]:
        preset = synth.load_preset(d)
        presets[d] = preset.to_dict()
        for i in range(n_seqs):
            e, m = synth.synthesize(preset, np.random.SeedSequence([seed, zlib.crc32(d.encode()), i]),
                                    n_steps=n_steps, shape=(256, 256))
            seqs[(d, f"seq{i:04d}")] = e
            meta[(d, f"seq{i:04d}")] = m
    return Data(seqs, meta, presets, n_steps, time.perf_counter() - t)


def disk_usage(root: Path) -> dict[str, int]:
    files = all_files(root)
    ndirs = sum(len(ds) for _, ds, _ in os.walk(root))
    st = [os.stat(f) for f in files]
    return {"files": len(files), "dirs": ndirs, "bytes": sum(s.st_size for s in st),
            "allocated": sum(s.st_blocks * 512 for s in st)}


# --------------------------------------------------------------------------- (a) predecessor

class Predecessor:
    """One .npy per 256 map + JSON sidecar, one folder per domain; levels/gradients on load."""

    name = "(a) predecessor .npy+json"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, d: str, s: str, t: int) -> Path:
        return self.root / d / f"{s}_t{t:04d}.npy"

    def write(self, data: Data) -> float:
        t0 = time.perf_counter()
        for (d, s), e in data.seqs.items():
            (self.root / d).mkdir(parents=True, exist_ok=True)
            for t in range(e.shape[0]):
                p = self.path(d, s, t)
                np.save(p, e[t])
                m = data.meta[(d, s)][t]
                side = {"mean": m["mean"], "variance": m["variance"], "entropy": m["entropy"],
                        "perturbations": m["perturbations"], "domain": d, "sequence": s, "t": t,
                        "shape": list(e.shape[1:])}
                p.with_suffix(".json").write_text(json.dumps(side))
        return time.perf_counter() - t0

    def load(self, d: str, s: str, ts_: range, scale: int, fields: Sequence[str]) -> dict[str, np.ndarray]:
        maps = np.stack([np.load(self.path(d, s, t)) for t in ts_])
        e = physics.downsample(maps, scale)
        out = {"energy": e}
        if len(fields) > 1:
            out["grad_x"], out["grad_y"] = physics.gradients(e)
        return {f: out[f] for f in fields}

    def windows(self, wins: Sequence[Window], fields: Sequence[str]) -> int:
        n = 0
        for w in wins:
            for a in self.load(w.domain, w.sequence_id, range(w.t0, w.t0 + w.length),
                               WINDOW_SCALE, fields).values():
                n += a.nbytes
        return n

    def sequential(self, keys: Sequence[tuple[str, str]], n_steps: int, fields: Sequence[str]) -> int:
        n = 0
        for d, s in keys:
            for a in self.load(d, s, range(n_steps), SEQ_SCALE, fields).values():
                n += a.nbytes
        return n


# --------------------------------------------------------------------------- (b) loose files

class LooseFiles:
    """One .npy per map per level per field, precomputed."""

    name = "(b) loose .npy per level+field"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, d: str, s: str, level: int, f: str, t: int) -> Path:
        return self.root / d / s / str(level) / f"{f}_t{t:04d}.npy"

    def write(self, data: Data) -> tuple[float, float]:
        t0 = time.perf_counter()
        derive = 0.0
        for (d, s), e in data.seqs.items():
            td = time.perf_counter()
            levels = physics.derive_levels(e)
            derive += time.perf_counter() - td
            for lvl, lf in levels.items():
                (self.root / d / s / str(lvl)).mkdir(parents=True, exist_ok=True)
                for f, arr in lf.as_dict().items():
                    for t in range(arr.shape[0]):
                        np.save(self.path(d, s, lvl, f, t), arr[t])
        return time.perf_counter() - t0, derive

    def windows(self, wins: Sequence[Window], fields: Sequence[str]) -> int:
        n = 0
        for w in wins:
            for f in fields:
                a = np.stack([np.load(self.path(w.domain, w.sequence_id, WINDOW_SCALE, f, t))
                              for t in range(w.t0, w.t0 + w.length)])
                n += a.nbytes
        return n

    def sequential(self, keys: Sequence[tuple[str, str]], n_steps: int, fields: Sequence[str]) -> int:
        n = 0
        for d, s in keys:
            for f in fields:
                a = np.stack([np.load(self.path(d, s, SEQ_SCALE, f, t)) for t in range(n_steps)])
                n += a.nbytes
        return n


# --------------------------------------------------------------------------- (c) the store

def write_store(root: Path, data: Data, layout: Layout) -> float:
    t0 = time.perf_counter()
    store = AtlasStore.create(root, layout=layout)
    for d in dict.fromkeys(k[0] for k in data.keys):
        store.create_domain(d, data.presets[d])
    for (d, s), e in data.seqs.items():
        store.write_sequence(d, s, e, steps=data.meta[(d, s)],
                             generation={"seed": 0, "pattern": data.presets[d]["pattern"]})
    return time.perf_counter() - t0


def store_compute_seconds(data: Data) -> float:
    """What write_sequence computes before any I/O: levels, gradients, checksums, stats."""
    t0 = time.perf_counter()
    for e in data.seqs.values():
        for f in physics.derive_levels(e).values():
            for name, v in f.as_dict().items():
                checksum(v)
                array_stats(v, with_entropy=(name == "energy"))
    return time.perf_counter() - t0


class StoreReaders:
    """The store's read paths: zarr-python (as the package does it, and variants) and tensorstore."""

    def __init__(self, root: Path, keys: Sequence[tuple[str, str]]) -> None:
        self.root = root
        self.keys = list(keys)
        self.store = AtlasStore.open(root)
        self.zarrays: dict[tuple[str, str, int, str], zarr.Array] = {}
        self.tarrays: dict[tuple[str, str, int, str], Any] = {}
        self.ctx = ts.Context({"cache_pool": {"total_bytes_limit": 0}})

    def _all(self, levels: Sequence[int]) -> list[tuple[str, str, int, str]]:
        return [(d, s, lvl, f) for d, s in self.keys for lvl in levels for f in FIELDS]

    # -- opening
    def open_zarr(self, levels: Sequence[int]) -> float:
        t = time.perf_counter()
        for k in self._all(levels):
            self.zarrays[k] = self.store.array(*k)
        return time.perf_counter() - t

    def _ts_spec(self, k: tuple[str, str, int, str]) -> dict[str, Any]:
        d, s, lvl, f = k
        return {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{self.root}/{d}/{s}/{lvl}/{f}/"}}

    def open_ts(self, levels: Sequence[int], concurrent: bool) -> float:
        t = time.perf_counter()
        ks = self._all(levels)
        if concurrent:
            futs = [ts.open(self._ts_spec(k), read=True, context=self.ctx) for k in ks]
            for k, fu in zip(ks, futs, strict=True):
                self.tarrays[k] = fu.result()
        else:
            for k in ks:
                self.tarrays[k] = ts.open(self._ts_spec(k), read=True, context=self.ctx).result()
        return time.perf_counter() - t

    # -- (1) windows
    def win_query(self, wins: Sequence[Window], fields: Sequence[str]) -> int:
        q = Query(self.store, scale=WINDOW_SCALE, window=WINDOW_LEN, fields=tuple(fields))
        return sum(a.nbytes for a in q.read_windows(wins, fields=fields, scale=WINDOW_SCALE).values())

    def win_store_read(self, wins: Sequence[Window], fields: Sequence[str]) -> int:
        n = 0
        for w in wins:
            for f in fields:
                n += self.store.read(w.domain, w.sequence_id, WINDOW_SCALE, f,
                                     t=slice(w.t0, w.t0 + w.length)).nbytes
        return n

    def win_zarr_cached(self, wins: Sequence[Window], fields: Sequence[str]) -> int:
        n = 0
        for w in wins:
            for f in fields:
                n += self.zarrays[(w.domain, w.sequence_id, WINDOW_SCALE, f)][w.t0:w.t0 + w.length].nbytes
        return n

    def win_zarr_gather(self, wins: Sequence[Window], fields: Sequence[str]) -> int:
        async def go() -> list[Any]:
            return await asyncio.gather(*(
                self.zarrays[(w.domain, w.sequence_id, WINDOW_SCALE, f)].async_array.getitem(
                    (slice(w.t0, w.t0 + w.length),)) for w in wins for f in fields))
        return sum(a.nbytes for a in zsync(go()))

    def win_ts(self, wins: Sequence[Window], fields: Sequence[str]) -> int:
        n = 0
        for w in wins:
            for f in fields:
                n += self.tarrays[(w.domain, w.sequence_id, WINDOW_SCALE, f)][
                    w.t0:w.t0 + w.length].read().result().nbytes
        return n

    def win_ts_batched(self, wins: Sequence[Window], fields: Sequence[str]) -> int:
        futs = [self.tarrays[(w.domain, w.sequence_id, WINDOW_SCALE, f)][w.t0:w.t0 + w.length].read()
                for w in wins for f in fields]
        return sum(fu.result().nbytes for fu in futs)

    def win_ts_into(self, wins: Sequence[Window], fields: Sequence[str]) -> int:
        """All reads issued at once, each written straight into a preallocated batch buffer."""
        first = self.tarrays[(wins[0].domain, wins[0].sequence_id, WINDOW_SCALE, fields[0])]
        ny, nx = first.shape[1:]
        out = {f: np.empty((len(wins), WINDOW_LEN, ny, nx), np.float32) for f in fields}
        futs = [ts.array(out[f][i], copy=False, write=True).write(
                    self.tarrays[(w.domain, w.sequence_id, WINDOW_SCALE, f)][w.t0:w.t0 + w.length])
                for i, w in enumerate(wins) for f in fields]
        for fu in futs:
            fu.result()
        return sum(a.nbytes for a in out.values())

    # -- (2) sequential pass
    def seq_store_read(self, keys: Sequence[tuple[str, str]], n_steps: int, fields: Sequence[str]) -> int:
        return sum(self.store.read(d, s, SEQ_SCALE, f).nbytes for d, s in keys for f in fields)

    def seq_zarr_cached(self, keys: Sequence[tuple[str, str]], n_steps: int, fields: Sequence[str]) -> int:
        return sum(self.zarrays[(d, s, SEQ_SCALE, f)][...].nbytes for d, s in keys for f in fields)

    def seq_ts(self, keys: Sequence[tuple[str, str]], n_steps: int, fields: Sequence[str]) -> int:
        return sum(self.tarrays[(d, s, SEQ_SCALE, f)].read().result().nbytes
                   for d, s in keys for f in fields)

    def seq_ts_batched(self, keys: Sequence[tuple[str, str]], n_steps: int, fields: Sequence[str]) -> int:
        futs = [self.tarrays[(d, s, SEQ_SCALE, f)].read() for d, s in keys for f in fields]
        return sum(fu.result().nbytes for fu in futs)


# --------------------------------------------------------------------------- timing

@dataclass
class Timing:
    warm: float       # best of the warm repeats
    cold: float       # median of the cold repeats
    nbytes: int
    warm_median: float = 0.0
    warm_cpu: float = 0.0  # process CPU seconds (all threads) of the fastest-CPU warm run

    def mbps(self, which: str) -> float:
        return self.nbytes / getattr(self, which) / 1e6


def timeit(fn: Callable[[], int], evict: Callable[[], None], repeats: int, cold_repeats: int) -> Timing:
    n = fn()  # warm-up (fills caches, imports, plans, opens)
    warm, cpu = [], []
    for _ in range(repeats):
        c = time.process_time()
        t = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    cold = []
    for _ in range(cold_repeats):
        evict()
        t = time.perf_counter()
        fn()
        cold.append(time.perf_counter() - t)
    return Timing(min(warm), statistics.median(cold), n, statistics.median(warm), min(cpu))


class Primer:
    """Re-touches library code after a global cache drop, so cold runs time data, not .so pages.

    drop_caches also evicts the pages of numpy, numcodecs and tensorstore (~100 MB of shared
    objects); the first read after it would page that code in. The primer reads a tiny store and a
    tiny .npy in a folder of its own through every reader before each cold run.
    """

    def __init__(self, root: Path) -> None:
        e = np.random.default_rng(0).random((4, 64, 64), dtype=np.float32)
        store = AtlasStore.create(root / "store")
        store.create_domain("p")
        store.write_sequence("p", "s", e)
        np.save(root / "x.npy", e[0])
        self.root = root
        self.readers = StoreReaders(root / "store", [("p", "s")])
        self.readers.open_zarr((64,))
        self.readers.open_ts((64,), concurrent=True)
        self()

    def __call__(self) -> None:
        m = np.load(self.root / "x.npy")
        physics.gradients(physics.downsample(np.tile(m, (4, 4)), 128))
        json.loads(json.dumps({"x": 1.0}))
        r = self.readers
        r.store.read("p", "s", 64, "energy", t=slice(0, 2))
        for k in r.zarrays:
            r.zarrays[k][0:2]
            r.tarrays[k][0:2].read().result()
            ts.array(np.empty((2, 64, 64), np.float32), copy=False, write=True).write(
                r.tarrays[k][0:2]).result()
            zsync(r.zarrays[k].async_array.getitem((slice(0, 2),)))



def random_windows(store: AtlasStore, n: int, seed: int) -> list[Window]:
    allw = Query(store, scale=WINDOW_SCALE, window=WINDOW_LEN).windows()
    rng = random.Random(seed)
    return rng.sample(allw, min(n, len(allw)))


# --------------------------------------------------------------------------- checks

def check_tensorstore(readers: StoreReaders, levels: Sequence[int]) -> str:
    """tensorstore decodes every array (sharding + blosc + crc32c) to zarr-python's values."""
    bad = []
    for k, ta in readers.tarrays.items():
        if k[2] in levels and not np.array_equal(ta.read().result(), readers.zarrays[k][...]):
            bad.append("/".join(map(str, k)))
    n = sum(1 for k in readers.tarrays if k[2] in levels)
    if bad:
        return f"MISMATCH in {len(bad)} of {n} arrays: {bad[:3]}"
    return f"identical values for all {n} arrays (levels {list(levels)})"


def check_crc(src_array_dir: Path, tmp: Path) -> str:
    """Flip one payload byte of a shard copy; both readers must refuse it (crc32c)."""
    dst = tmp / "corrupt_copy"
    shutil.copytree(src_array_dir, dst)
    shard = next(p for p in dst.rglob("*") if p.is_file() and p.name != "zarr.json")
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 3] ^= 0x40
    shard.write_bytes(bytes(raw))
    out = []
    try:
        ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(dst) + "/"}},
                read=True).result().read().result()
        out.append("tensorstore: NOT detected")
    except Exception as exc:  # noqa: BLE001
        msg = re.sub(r' in local file "[^"]*"', "", str(exc).splitlines()[0])
        out.append(f"tensorstore: refused ({msg[:160]})")
    try:
        zarr.open_array(zarr.storage.LocalStore(dst, read_only=True), mode="r")[...]
        out.append("zarr-python: NOT detected")
    except Exception as exc:  # noqa: BLE001
        out.append(f"zarr-python: refused ({type(exc).__name__}: {str(exc).splitlines()[0][:48]}...)")
    shutil.rmtree(dst)
    return "; ".join(out)


def check_paths_agree(pred: Predecessor, loose: LooseFiles, readers: StoreReaders,
                      wins: Sequence[Window]) -> str:
    worst = 0.0
    exact = True
    sample = wins[:16]
    for w in sample:
        a = pred.load(w.domain, w.sequence_id, range(w.t0, w.t0 + w.length), WINDOW_SCALE, ALL)
        for f in ALL:
            b = np.stack([np.load(loose.path(w.domain, w.sequence_id, WINDOW_SCALE, f, t))
                          for t in range(w.t0, w.t0 + w.length)])
            c = readers.store.read(w.domain, w.sequence_id, WINDOW_SCALE, f, t=slice(w.t0, w.t0 + w.length))
            exact &= np.array_equal(b, c) and np.array_equal(a[f], c)
            worst = max(worst, float(np.max(np.abs(a[f] - c))))
    return (f"identical (bitwise) on {len(sample)} windows x 3 fields" if exact
            else f"not bitwise identical; max |a - c| = {worst:.3g} on {len(sample)} windows x 3 fields")


# --------------------------------------------------------------------------- formatting

def fmt_s(x: float) -> str:
    return f"{x * 1e3:.0f} ms" if x < 10 else f"{x:.1f} s"


def fmt_b(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def objects_per_sequence(n_steps: int, time_shard: int) -> int:
    """Store objects per sequence: 1 sequence group + 3 level groups + 9 x (zarr.json + shards)."""
    return 1 + 3 + 9 * (1 + math.ceil(n_steps / time_shard))


# --------------------------------------------------------------------------- main mode

def run_main(args: argparse.Namespace, work: Path, ev: Evictor) -> str:
    n_dom, n_seq, n_steps = args.domains, args.seqs, args.steps
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", flush=True)

    ev.primer = Primer(work / "primer")
    bw = memcpy_mbps(args.memcpy_mb * 2**20)
    (work / "disk").mkdir()
    disk = disk_read_mbps(work / "disk" / "big.bin", args.memcpy_mb * 2**20, ev)
    log(f"memcpy {bw:.0f} MB/s, cold disk read {disk:.0f} MB/s")
    data = make_data(n_dom, n_seq, n_steps, args.seed)
    log(f"synthesised {data.n_maps} maps in {data.seconds:.1f} s")

    pred, loose = Predecessor(work / "a"), LooseFiles(work / "b")
    w_a = pred.write(data)
    w_b, derive_b = loose.write(data)
    w_c = write_store(work / "c", data, Layout())
    comp_c = store_compute_seconds(data)
    os.sync()
    usage = {k: disk_usage(work / k) for k in "abc"}
    log(f"writes a {w_a:.1f}s b {w_b:.1f}s c {w_c:.1f}s; usage {usage}")

    readers = StoreReaders(work / "c", data.keys)
    levels = physics.SCALES
    ev.evict([work / "c"])
    open_zarr_cold = readers.open_zarr(levels)
    ev.evict([work / "c"])
    open_ts_cold = readers.open_ts(levels, concurrent=False)
    open_zarr_warm = readers.open_zarr(levels)
    open_ts_warm = readers.open_ts(levels, concurrent=False)
    open_ts_conc = readers.open_ts(levels, concurrent=True)
    n_arrays = len(readers.zarrays)
    ts_check = check_tensorstore(readers, levels)
    crc_check = check_crc(work / "c" / data.keys[0][0] / data.keys[0][1] / "64" / "energy", work)
    wins = random_windows(readers.store, N_WINDOWS, args.seed)
    agree = check_paths_agree(pred, loose, readers, wins)
    log(f"checks: {ts_check}; {crc_check}; {agree}")

    dir_a, dir_b, dir_c = [work / "a"], [work / "b"], [work / "c"]
    keys = data.keys
    win_variants: list[tuple[str, str, Callable[[Sequence[str]], int], list[Path]]] = [
        ("a", pred.name, lambda f: pred.windows(wins, f), dir_a),
        ("b", loose.name, lambda f: loose.windows(wins, f), dir_b),
        ("c", "(c) Query.read_windows", lambda f: readers.win_query(wins, f), dir_c),
        ("c", "(c) AtlasStore.read per window", lambda f: readers.win_store_read(wins, f), dir_c),
        ("c", "(c) zarr: cached zarr.Array per window", lambda f: readers.win_zarr_cached(wins, f), dir_c),
        ("c", "(c) zarr: async gather, all windows", lambda f: readers.win_zarr_gather(wins, f), dir_c),
        ("c", "(c) tensorstore per window", lambda f: readers.win_ts(wins, f), dir_c),
        ("c", "(c) tensorstore, all reads issued at once", lambda f: readers.win_ts_batched(wins, f), dir_c),
        ("c", "(c) tensorstore, all at once into a batch buffer",
         lambda f: readers.win_ts_into(wins, f), dir_c),
    ]
    seq_variants: list[tuple[str, str, Callable[[Sequence[str]], int], list[Path]]] = [
        ("a", pred.name, lambda f: pred.sequential(keys, n_steps, f), dir_a),
        ("b", loose.name, lambda f: loose.sequential(keys, n_steps, f), dir_b),
        ("c", "(c) AtlasStore.read per array", lambda f: readers.seq_store_read(keys, n_steps, f), dir_c),
        ("c", "(c) zarr: cached zarr.Array", lambda f: readers.seq_zarr_cached(keys, n_steps, f), dir_c),
        ("c", "(c) tensorstore per array", lambda f: readers.seq_ts(keys, n_steps, f), dir_c),
        ("c", "(c) tensorstore, all reads issued at once",
         lambda f: readers.seq_ts_batched(keys, n_steps, f), dir_c),
    ]
    res: dict[tuple[str, str, str], Timing] = {}
    for task, variants in (("win", win_variants), ("seq", seq_variants)):
        for fs_name, fields in FIELD_SETS.items():
            for _, name, fn, roots in variants:
                res[(task, fs_name, name)] = t = timeit(
                    functools.partial(fn, fields), functools.partial(ev.evict, roots),
                    args.repeats, args.cold_repeats)
                log(f"{task} {fs_name:13s} {name:45s} warm best {t.warm * 1e3:8.1f} ms "
                    f"median {t.warm_median * 1e3:8.1f} ms  cpu {t.warm_cpu * 1e3:8.1f} ms  "
                    f"cold {t.cold * 1e3:8.1f} ms")

    # ---------------------------------------------------------------- report
    L: list[str] = []
    title = "# Store benchmark: atlas store vs the predecessor's loose files"
    if args.quick:
        title += " — SMOKE RUN (--quick)"
    L += [title, ""]
    if args.quick:
        L += ["> **Smoke numbers** from `--quick` (small data, few repeats, possibly on a busy shared "
              "machine). They show the benchmark works and the rough shape of the result; do not "
              "quote them as performance. The full run replaces this file.", ""]
    L += [f"- command: `.venv/bin/python {' '.join(sys.argv)}` (from the repository root)"]
    L += machine_lines(args.started, work)
    T = n_steps
    L += [f"- data: {n_dom} domains x {n_seq} sequences x {T} steps at 256x256 = {data.n_maps} maps "
          f"(`synth.synthesize`, synthesised in memory once in {data.seconds:.1f} s); the same arrays "
          f"are written three ways",
          f"- reads: (1) {len(wins)} random {WINDOW_LEN}-step windows at scale {WINDOW_SCALE} (the same "
          f"windows for every path, seed {args.seed}); (2) one sequential pass over all "
          f"{len(data.keys)} sequences x {T} steps at scale {SEQ_SCALE}",
          f"- warm: best of {args.repeats} runs after one warm-up run (best, not median: the "
          f"machine may be shared; the medians are printed on stdout); cold: median of "
          f"{args.cold_repeats} run(s), each after emptying the page cache",
          f"- cold cache: {ev.describe()}",
          f"- memcpy ceiling: {bw:,.0f} MB/s (`np.copyto` of a {args.memcpy_mb} MiB float32 array, "
          "best of 5, one thread); MB/s below are decoded float32 bytes delivered per second",
          f"- storage: a cold sequential read of one {args.memcpy_mb} MiB file in 4 MiB blocks ran at "
          f"{disk:,.0f} MB/s (compressed or raw bytes on disk, before any decoding)",
          "- warm CPU: process CPU time (all threads) of the warm run that used least; on a shared "
          "machine it is steadier than wall time, and above wall time when threads run in parallel",
          ""]

    L += ["## Files, bytes, write time", "",
          "| path | files | dirs | bytes (apparent) | bytes allocated on disk | write time "
          "| of which compute | of which encode + I/O |",
          "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = [("a", pred.name, w_a, 0.0, "sidecar stats taken from generation"),
            ("b", loose.name, w_b, derive_b, "derive_levels"),
            ("c", "(c) atlas store, default Layout()", w_c, comp_c, "derive_levels + checksums + stats")]
    for k, name, wt, comp, _ in rows:
        u = usage[k]
        L.append(f"| {name} | {u['files']:,} | {u['dirs']:,} | {fmt_b(u['bytes'])} | "
                 f"{fmt_b(u['allocated'])} | {wt:.2f} s | {comp:.2f} s | {wt - comp:.2f} s |")
    raw_c = sum(e.nbytes for e in data.seqs.values()) * (1 + 1 / 4 + 1 / 16) * 3
    L += ["",
          f"Write times are buffered writes (no fsync; `sync` ran afterwards, untimed). (c)'s compute is "
          f"measured separately (`derive_levels`, then the SHA-256 checksums and "
          f"stats of all 9 arrays) and subtracted. (a) stores only the 256 energy map (its pyramids and "
          f"gradients are recomputed on every load); (b) and (c) store 3 levels x 3 fields "
          f"({fmt_b(raw_c)} of float32); (c) compresses them to {fmt_b(usage['c']['bytes'])} "
          f"(ratio {raw_c / usage['c']['bytes']:.2f}, metadata included).", ""]

    a_files, c_files = usage["a"]["files"], usage["c"]["files"]
    per_seq_c = objects_per_sequence(T, Layout().time_shard)
    L += ["### File counts and the 20x goal", "",
          f"- (a) writes 2 files per map (`.npy` + `.json`): 2*T = {2 * T} per {T}-step sequence "
          f"({a_files:,} in all).",
          f"- (c) writes a constant number of objects per sequence while T <= time_shard "
          f"({Layout().time_shard}): 1 sequence group + 3 level groups + 9 arrays x (zarr.json + "
          f"ceil(T/time_shard) shards) = 13 + 9*ceil(T/{Layout().time_shard}) = {per_seq_c}, plus one "
          f"zarr.json per domain and one for the root ({c_files:,} in all; `count_objects()` = "
          f"{readers.store.count_objects():,}).",
          f"- ratio (a)/(c) per sequence = 2T / (13 + 9*ceil(T/{Layout().time_shard})): "
          f"**{2 * T / per_seq_c:.1f}x at T = {T}** (whole store: {a_files / c_files:.1f}x). "
          + ", ".join(f"T={t}: {2 * t / objects_per_sequence(t, Layout().time_shard):.1f}x"
                      for t in (10, 40, 100, 128, 256, 512, 1000))
          + f"; the limit for long sequences is 2*{Layout().time_shard}/9 = "
          f"{2 * Layout().time_shard / 9:.1f}x. Counting only the `.npy` files of (a) halves every ratio.",
          f"- note: (c) holds 9 arrays per sequence (3 levels x 3 fields) in those objects, while each "
          f"of (a)'s files holds one 256 map and nothing derived; (b), which stores what (c) stores as "
          f"loose files, has {usage['b']['files'] / c_files:.0f}x more files than (c).", ""]

    def table(task: str, header: str) -> list[str]:
        out = [header, "",
               "| path | fields | warm | warm CPU | warm MB/s | warm % of memcpy | cold | cold MB/s "
               "| cold % of memcpy |",
               "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for fs_name in FIELD_SETS:
            for (tk, fsn, name), t in res.items():
                if tk == task and fsn == fs_name:
                    out.append(f"| {name} | {fs_name} | {fmt_s(t.warm)} | {fmt_s(t.warm_cpu)} | "
                               f"{t.mbps('warm'):,.0f} | {t.mbps('warm') / bw:.2%} | {fmt_s(t.cold)} | "
                               f"{t.mbps('cold'):,.0f} | {t.mbps('cold') / bw:.2%} |")
        return out + [""]

    nb_w = res[("win", "energy", pred.name)].nbytes
    nb_s = res[("seq", "energy", pred.name)].nbytes
    L += table("win", f"## (1) {len(wins)} random {WINDOW_LEN}-step windows at {WINDOW_SCALE} "
                      f"({fmt_b(nb_w)} delivered per field)")
    L += ["`Query.read_windows` and `AtlasStore.read` are the package's own read paths: on a local "
          "store both go through TensorStore (`AtlasStore.read_into` issues one copy per window and "
          "field at once, straight into the output); the `zarr:` rows labelled cached / async use "
          "zarr-python directly, for comparison.", ""]
    L += table("seq", f"## (2) sequential pass at {SEQ_SCALE} over all {len(data.keys)} sequences "
                      f"({fmt_b(nb_s)} delivered per field)")
    L += ["## Opening arrays (zarr-python vs tensorstore)", "",
          f"{n_arrays} arrays ({len(data.keys)} sequences x 3 levels x 3 fields).", "",
          "| reader | cold total | cold per array | warm total | warm per array |",
          "|---|---:|---:|---:|---:|",
          f"| zarr-python `AtlasStore.array` | {fmt_s(open_zarr_cold)} | "
          f"{open_zarr_cold / n_arrays * 1e3:.2f} ms | "
          f"{fmt_s(open_zarr_warm)} | {open_zarr_warm / n_arrays * 1e3:.2f} ms |",
          f"| tensorstore `ts.open(...).result()` one by one | {fmt_s(open_ts_cold)} | "
          f"{open_ts_cold / n_arrays * 1e3:.2f} ms | {fmt_s(open_ts_warm)} | "
          f"{open_ts_warm / n_arrays * 1e3:.2f} ms |",
          f"| tensorstore, all opens issued at once | | | {fmt_s(open_ts_conc)} | "
          f"{open_ts_conc / n_arrays * 1e3:.2f} ms |",
          "", "The timed reads above use handles opened once (cached), except `AtlasStore.read` and "
          "`Query.read_windows`, which open per call as the package does today.", "",
          "## Checks", "",
          f"- tensorstore `zarr3` driver vs zarr-python, every array decoded: {ts_check}",
          f"- one payload byte flipped in a copied shard: {crc_check}",
          f"- paths (a), (b), (c) deliver the same values: {agree}", ""]

    # ---------------------------------------------------------------- verdicts
    def best_c(task: str, fs_name: str, which: str) -> tuple[str, float]:
        cands = [(name, getattr(t, which)) for (tk, fsn, name), t in res.items()
                 if tk == task and fsn == fs_name and name.startswith("(c)")]
        return min(cands, key=lambda x: x[1])

    def get(task: str, fs_name: str, name: str, which: str) -> float:
        return getattr(res[(task, fs_name, name)], which)

    q_name = "(c) Query.read_windows"
    seq_default = "(c) AtlasStore.read per array"
    L += ["## Goals (from the issue)", "",
          "| goal | measurement | as the package reads today | verdict | best store reader | verdict |",
          "|---|---|---:|---|---:|---|"]
    for fs_name in FIELD_SETS:
        for which in ("warm", "cold"):
            a = get("win", fs_name, pred.name, which)
            c = get("win", fs_name, q_name, which)
            bn, bc = best_c("win", fs_name, which)
            L.append(f"| (c) >= 2x faster than (a) on (1) | {fs_name}, {which} | {a / c:.2f}x "
                     f"(Query.read_windows) | {'met' if a / c >= 2 else 'NOT met'} | {a / bc:.2f}x "
                     f"({bn[4:]}) | {'met' if a / bc >= 2 else 'NOT met'} |")
    for task, cname in (("win", q_name), ("seq", seq_default)):
        for fs_name in FIELD_SETS:
            for which in ("warm", "cold"):
                b = get(task, fs_name, loose.name, which)
                c = get(task, fs_name, cname, which)
                bn, bc = best_c(task, fs_name, which)
                L.append(f"| (c) at least as fast as (b) on {'(1)' if task == 'win' else '(2)'} | "
                         f"{fs_name}, {which} | {b / c:.2f}x ({cname[4:]}) | "
                         f"{'met' if c <= b else 'NOT met'} | "
                         f"{b / bc:.2f}x ({bn[4:]}) | {'met' if bc <= b else 'NOT met'} |")
    L.append(f"| >= 20x fewer files than (a) | {T}-step sequences | {a_files / c_files:.1f}x "
             f"(per sequence {2 * T / per_seq_c:.1f}x) | "
             f"{'met' if a_files / c_files >= 20 else 'NOT met'} | | |")
    L += ["", "Speed-up columns are (other path's time) / (store's time): above 1 means the store is "
          "faster.", ""]
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------- layout mode

def _lay(time_chunk: int, cname: str = "zstd", clevel: int = 1, shuffle: str = "bitshuffle",
         time_shard: int = 128) -> Layout:
    """An explicit layout (independent of Layout()'s defaults, which this study chose)."""
    return Layout(time_chunk=time_chunk, time_shard=time_shard, cname=cname, clevel=clevel,
                  shuffle=shuffle)


_CANDIDATES: list[tuple[str, Layout]] = [
    ("chunk 1 step, zstd(1) bitshuffle", _lay(1)),
    ("chunk 2 steps, zstd(1) bitshuffle", _lay(2)),
    ("chunk 4 steps, zstd(1) bitshuffle", _lay(4)),
    ("chunk 8 steps, zstd(1) bitshuffle", _lay(8)),
    ("chunk = whole shard, zstd(1) bitshuffle", _lay(128)),
    ("chunk 1 step, no compression", _lay(1, clevel=0)),
    ("chunk 1 step, blosc lz4(5) shuffle", _lay(1, "lz4", 5, "shuffle")),
    ("chunk 1 step, zstd(3) bitshuffle", _lay(1, clevel=3)),
    ("chunk 4 steps, no compression", _lay(4, clevel=0)),
    ("chunk 4 steps, blosc lz4(5) shuffle", _lay(4, "lz4", 5, "shuffle")),
]
# The default first (the reference), then the rest, then the default again as a noise check.
_DEFAULT = next((label for label, lay in _CANDIDATES if lay == Layout()), "Layout()")
LAYOUTS: list[tuple[str, Layout]] = (
    [(f"{_DEFAULT} [default]", Layout())]
    + [(label, lay) for label, lay in _CANDIDATES if lay != Layout()]
    + [("default again, measured last (noise check)", Layout())])


def run_layout(args: argparse.Namespace, work: Path, ev: Evictor) -> str:
    t_start = time.perf_counter()
    ev.primer = Primer(work / "primer")
    bw = memcpy_mbps(args.memcpy_mb * 2**20)
    data = make_data(args.domains, args.seqs, args.steps, args.seed)
    print(f"synthesised {data.n_maps} maps in {data.seconds:.1f} s; memcpy {bw:.0f} MB/s")
    raw = sum(e.nbytes for e in data.seqs.values()) * (1 + 1 / 4 + 1 / 16) * 3
    comp = store_compute_seconds(data)
    rows = []
    wins: list[Window] | None = None
    for label, lay in LAYOUTS:
        root = work / "layout"
        wt = write_store(root, data, lay)
        os.sync()
        u = disk_usage(root)
        r = StoreReaders(root, data.keys)
        r.open_zarr(physics.SCALES)
        r.open_ts(physics.SCALES, concurrent=True)
        if wins is None:
            wins = random_windows(r.store, N_WINDOWS, args.seed)
        m: dict[str, Timing] = {}
        for fs_name, fields in FIELD_SETS.items():
            for key, fn in (("win_query", functools.partial(r.win_query, wins, fields)),
                            ("win_zarr", functools.partial(r.win_zarr_cached, wins, fields)),
                            ("win_ts", functools.partial(r.win_ts_batched, wins, fields)),
                            ("seq_zarr", functools.partial(r.seq_zarr_cached, data.keys, args.steps, fields)),
                            ("seq_ts", functools.partial(r.seq_ts_batched, data.keys, args.steps, fields))):
                m[f"{key}/{fs_name}"] = timeit(fn, functools.partial(ev.evict, [root]),
                                               args.repeats, args.cold_repeats)
        rows.append((label, lay, wt, u, m))
        print(f"[{time.perf_counter() - t_start:6.1f} s] {label:45s} write {wt:6.2f}s  "
              f"{fmt_b(u['bytes']):>10s}  " + "  ".join(
            f"{k} {t.warm * 1e3:.0f}/{t.cold * 1e3:.0f}" for k, t in m.items() if k.endswith("grads")))
        del r
        shutil.rmtree(root)

    L = ["# Store layout study: inner time chunk and compression"
         + (" — SMOKE RUN (--quick)" if args.quick else ""), ""]
    if args.quick:
        L += ["> **Smoke numbers** from `--quick` (small data, few repeats, possibly on a busy shared "
              "machine); the full run replaces this file. Do not quote them as performance.", ""]
    L += [f"- command: `.venv/bin/python {' '.join(sys.argv)}` (from the repository root)"]
    L += machine_lines(args.started, work)
    assert wins is not None
    L += [f"- data: {args.domains} domains x {args.seqs} sequences x {args.steps} steps at 256x256 "
          f"= {data.n_maps} maps, 3 levels x 3 fields per sequence ({fmt_b(raw)} of float32); every "
          f"layout stores the same arrays; time_shard 128 (one shard per array for these sequences)",
          f"- (1) {len(wins)} random {WINDOW_LEN}-step windows at {WINDOW_SCALE}, fields "
          f"energy+grad_x+grad_y (energy-only in the second table); (2) sequential pass at {SEQ_SCALE} "
          "over everything",
          f"- warm: best of {args.repeats} after a warm-up; cold: median of {args.cold_repeats}, "
          f"cache emptied before each: {ev.describe()}",
          "- readers: zarr-python on cached `zarr.Array`s (one read per window and field, as the "
          "iterator would), `Query.read_windows` (the package's batch reader, re-opens arrays), "
          "tensorstore (cached handles) with all reads issued at once; (2) reads whole arrays",
          f"- write time includes {comp:.1f} s of compute (levels, gradients, checksums, stats) common "
          f"to every layout; memcpy ceiling {bw:,.0f} MB/s", ""]
    for fs_name in ("energy+grads", "energy"):
        L += [f"## Fields: {fs_name}", "",
              "| layout | stored bytes | ratio | write | (1) zarr per window warm / cold "
              "| (1) Query.read_windows warm / cold | (1) tensorstore warm / cold | (2) zarr warm / cold "
              "| (2) tensorstore warm / cold |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for label, _lay, wt, u, m in rows:
            c = [f"{fmt_s(m[f'{k}/{fs_name}'].warm)} / {fmt_s(m[f'{k}/{fs_name}'].cold)}"
                 for k in ("win_zarr", "win_query", "win_ts", "seq_zarr", "seq_ts")]
            L.append(f"| {label} | {fmt_b(u['bytes'])} | {raw / u['bytes']:.2f} | {wt:.1f} s | "
                     + " | ".join(c) + " |")
        L.append("")

    # a data-driven ranking: geometric mean over reads (both field sets, warm and cold, the
    # per-window zarr reader and tensorstore for (1), both readers for (2)) relative to the default
    keys = [f"{k}/{fs}" for k in ("win_zarr", "win_ts", "seq_zarr", "seq_ts") for fs in FIELD_SETS]
    base = rows[0][4]

    def score(m: dict[str, Timing], whats: Sequence[str] = ("warm", "cold")) -> float:
        vals = [getattr(m[k], w) / getattr(base[k], w) for k in keys for w in whats]
        return math.exp(sum(map(math.log, vals)) / len(vals))

    L += ["## Ranking", "",
          "Geometric mean of read times relative to the default layout (both field sets; warm and cold; "
          "(1) with the per-window zarr reader and tensorstore, (2) with both readers). Lower is faster. "
          "The last layout repeats the default at the end of the run: its distance from 1.00 is the "
          "noise of this run.", "",
          "| layout | relative read time (warm + cold) | relative warm CPU time | stored bytes vs default "
          "| write vs default |", "|---|---:|---:|---:|---:|"]
    for label, _lay, wt, u, m in sorted(rows, key=lambda r: score(r[4])):
        L.append(f"| {label} | {score(m):.2f} | {score(m, ('warm_cpu',)):.2f} | "
                 f"{u['bytes'] / rows[0][3]['bytes']:.2f} | {wt / rows[0][2]:.2f} |")
    L += ["", "## What the readers read", "",
          "The streaming iterator and queries read 4-8 step windows at every level (multi-scale inputs), "
          "and audits/statistics make sequential passes. With inner chunks of c steps a w-step window at "
          "a random start decodes w + c - 1 steps on average (at most c * ceil((w + c - 1) / c)): for "
          "w = 4, c = 1/2/4/8 decode 4/5/7/11 steps, and a whole-shard chunk the whole sequence. c = 1 "
          "decodes exactly the window but costs one byte-range read and one codec call per step "
          "(zarr-python 3.1 issues the reads of one shard one after another). Sequential "
          "passes read whole shards and are insensitive to c except through per-chunk overheads. "
          "A whole-shard chunk decodes the whole sequence for every window.", ""]
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------- entry

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--layout", action="store_true", help="layout study -> results/layout.md")
    ap.add_argument("--cold", choices=("auto", "drop", "fadvise"), default="auto",
                    help="how to empty the page cache (auto: drop_caches if permitted, else fadvise)")
    ap.add_argument("--workdir", type=Path, default=None, help="parent of the temporary folders")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the written data")
    ap.add_argument("--domains", type=int, default=None, help="override: domains (1-5)")
    ap.add_argument("--seqs", type=int, default=None, help="override: sequences per domain")
    ap.add_argument("--steps", type=int, default=None, help="override: steps per sequence")
    ap.add_argument("--repeats", type=int, default=None, help="override: warm repeats")
    ap.add_argument("--cold-repeats", type=int, default=None, help="override: cold repeats")
    args = ap.parse_args(argv)
    args.started = machine.start()
    if args.quick:
        sizes, reps, args.memcpy_mb = (5, 2, 16), (2, 1), 128
    elif args.layout:  # 11 layouts: fewer sequences (the first 3 of each domain of the main run)
        sizes, reps, args.memcpy_mb = (5, 3, 40), (3, 2), 512
    else:
        sizes, reps, args.memcpy_mb = (5, 5, 40), (5, 2), 512
    args.domains = args.domains or sizes[0]
    args.seqs = args.seqs or sizes[1]
    args.steps = args.steps or sizes[2]
    args.repeats = args.repeats or reps[0]
    args.cold_repeats = args.cold_repeats or reps[1]
    if not 1 <= args.domains <= len(synth.DEFAULT_DOMAINS) or args.seqs < 1 or args.steps < WINDOW_LEN:
        ap.error(f"need 1-5 domains, >= 1 sequence, >= {WINDOW_LEN} steps")
    out = args.out or RESULTS / ("layout.md" if args.layout else "store.md")
    work = Path(tempfile.mkdtemp(prefix="bench_store_", dir=args.workdir))
    t0 = time.perf_counter()
    ev = Evictor(args.cold)
    try:
        text = (run_layout if args.layout else run_main)(args, work, ev)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text += f"\nTotal benchmark wall time: {time.perf_counter() - t0:.0f} s.\n"
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
