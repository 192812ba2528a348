"""The local disk cache of an s3:// store's arrays (atlasstore.read.disk_cache), against the real
S3 server: a second read goes to no server at all; the folder stays within its bound; a damaged
or evicted file is fetched again; processes sharing the folder never see a torn file; a
rewritten sequence is never served from the old cache.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atlasstore import cli
from atlasstore.cli import options as cli_options
from atlasstore.io.cache_settings import CacheSettings, parse_bytes
from atlasstore.read.disk_cache import DiskCachedReader
from atlasstore.read.reader import Reader
from atlasstore.store import AtlasStore, Layout, checksum
from atlasstore.store.tensorstore_reader import TensorStoreReader
from helpers.s3_fixtures import S3Bucket

#: two shards per array (8 steps, 4 per shard), one level (64x64), three fields
LAYOUT = Layout(time_chunk=2, time_shard=4)
SEQS = 4


def _fill(url: str, seed: int = 0) -> AtlasStore:
    s = AtlasStore.create(url, layout=LAYOUT)
    s.create_domain("plasma_physics")
    rng = np.random.default_rng(seed)
    for i in range(SEQS):
        s.write_sequence("plasma_physics", f"seq-{i:05d}", rng.random((8, 64, 64), np.float32) + 0.1)
    return AtlasStore.open(url)


def _jobs(s: AtlasStore) -> list[tuple[str, tuple[Any, ...], np.ndarray]]:
    full = (slice(0, 8), slice(None), slice(None))
    return [(f"plasma_physics/{q}/64/{f}", full, np.empty((8, 64, 64), np.float32))
            for q in s.sequences("plasma_physics") for f in ("energy", "grad_x", "grad_y")]


def _settings(b: S3Bucket, max_bytes: int = 2**30) -> CacheSettings:
    return CacheSettings(b.cache / "chunks", max_bytes)


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_the_second_read_goes_to_no_server(s3: S3Bucket) -> None:
    s = _fill(s3.url)
    direct = TensorStoreReader.for_store(s)
    assert direct is not None
    want = _jobs(s)
    direct.copy_into(want)
    first = _jobs(s)
    s3.server.reset_counts()
    DiskCachedReader(s, _settings(s3)).copy_into(first)
    n = s3.server.counts()
    # zarr.json and two shards per array, one GET each
    assert n["GET"] == len(first) * 3, s3.server.requests()
    again = _jobs(s)
    s3.server.reset_counts()
    DiskCachedReader(s, _settings(s3)).copy_into(again)  # a new reader: a new epoch, a new process
    assert s3.server.counts() == {}
    for (_, _, a), (_, _, b), (_, _, c) in zip(want, first, again, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    # a window reads only the shards it covers
    fresh = CacheSettings(s3.cache / "other", 2**30)
    s3.server.reset_counts()
    r = DiskCachedReader(s, fresh)
    out = r.read("plasma_physics/seq-00001/64/energy", (slice(5, 7), slice(None), slice(None)))
    assert s3.server.counts() == {"GET": 2}  # zarr.json + the second shard
    np.testing.assert_array_equal(out, want[3][2][5:7])


def test_the_cache_stays_within_its_bound(s3: S3Bucket) -> None:
    s = _fill(s3.url)
    probe = DiskCachedReader(s, _settings(s3))
    probe.copy_into(_jobs(s)[:1])
    per_array = sum(p.stat().st_size for p in _files(s3.cache / "chunks"))
    bound = 3 * per_array  # three of the twelve arrays
    r = DiskCachedReader(s, CacheSettings(s3.cache / "bounded", bound))
    for job in _jobs(s) * 2:
        r.copy_into([job])
        used = sum(p.stat().st_size for p in _files(s3.cache / "bounded"))
        assert used <= bound + per_array, (used, bound)
    got = _jobs(s)
    r.copy_into(got)  # everything again, fetched back as needed
    for name, _, a in got:
        d, q, lvl, f = name.split("/")
        assert checksum(a) == s.sequence_info(d, q)["arrays"][f"{lvl}/{f}"]["checksum"]
    assert r.cache.fetched > len(got) * 3  # evicted files were fetched again


def test_a_damaged_cache_file_is_fetched_again(s3: S3Bucket) -> None:
    s = _fill(s3.url)
    r = DiskCachedReader(s, _settings(s3))
    jobs = _jobs(s)[:1]
    r.copy_into(jobs)
    shard = next(p for p in _files(s3.cache / "chunks") if p.name == "c.0.0.0")
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    again = DiskCachedReader(s, _settings(s3))
    got = _jobs(s)[:1]
    again.copy_into(got)
    np.testing.assert_array_equal(got[0][2], jobs[0][2])
    assert shard.read_bytes() != bytes(raw)


def test_a_rewritten_sequence_is_not_served_from_the_old_cache(s3: S3Bucket) -> None:
    s = _fill(s3.url)
    DiskCachedReader(s, _settings(s3)).copy_into(_jobs(s))
    w = AtlasStore.open(s3.url, mode="r+")
    w.layout = LAYOUT
    new = np.full((8, 64, 64), 2.5, np.float32)
    w.write_sequence("plasma_physics", "seq-00000", new, overwrite=True)
    fresh = AtlasStore.open(s3.url)
    out = DiskCachedReader(fresh, _settings(s3)).read("plasma_physics/seq-00000/64/energy",
                                                     (slice(None), slice(None), slice(None)))
    np.testing.assert_array_equal(out, new)


def _reader_process(url: str, folder: str, bound: int, rounds: int, out: Any) -> None:
    s = AtlasStore.open(url)
    r = DiskCachedReader(s, CacheSettings(Path(folder), bound))
    bad = 0
    for _ in range(rounds):
        for job in _jobs(s):
            r.copy_into([job])
            d, q, lvl, f = job[0].split("/")
            bad += checksum(job[2]) != s.sequence_info(d, q)["arrays"][f"{lvl}/{f}"]["checksum"]
    out.put(bad)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_processes_sharing_the_cache_never_see_a_torn_file(s3: S3Bucket) -> None:
    """Three processes read everything through one folder whose bound holds a third of it, so
    files are fetched, evicted and fetched again under each other's feet."""
    s = _fill(s3.url)
    probe = CacheSettings(s3.cache / "probe", 2**30)
    DiskCachedReader(s, probe).copy_into(_jobs(s))
    total = sum(p.stat().st_size for p in _files(probe.folder))
    folder = s3.cache / "shared"
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    ps = [ctx.Process(target=_reader_process, args=(s3.url, str(folder), total // 3, 3, out))
          for _ in range(3)]
    for p in ps:
        p.start()
    bad = [out.get(timeout=500) for _ in ps]
    for p in ps:
        p.join(60)
        assert p.exitcode == 0
    assert bad == [0, 0, 0]
    assert not list(folder.rglob("*.tmp"))
    objects = s3.objects()
    chunks = CacheSettings(folder, total // 3).folder
    for p in _files(chunks):  # every cached file is a whole copy of its object
        rel = p.relative_to(chunks).parts  # <bucket-digest>/<domain>/<seq>/<commit>/<lvl>/<f>/<key>
        key = "atlas.zarr/" + "/".join(rel[1:3] + rel[4:])
        assert p.read_bytes() == objects[key], key


def test_cache_settings(s3: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_bytes("20GiB") == 20 * 2**30 and parse_bytes("500MB") == 500 * 10**6
    assert parse_bytes("1.5k") == 1536 and parse_bytes(7) == 7 and parse_bytes("0") == 0
    for bad in ("-1", "ten", "5 parsecs", "1e9"):
        with pytest.raises(ValueError):
            parse_bytes(bad)
    s = _fill(s3.url)
    assert isinstance(Reader(s).engine, DiskCachedReader)
    monkeypatch.setenv("ATLAS_CACHE_BYTES", "0")
    r = Reader(s).engine
    assert isinstance(r, TensorStoreReader) and not isinstance(r, DiskCachedReader)
    # settings passed as an object win over the environment's
    on = CacheSettings(s3.cache / "obj", 2**20)
    assert isinstance(Reader(AtlasStore.open(s3.url, cache=on)).engine, DiskCachedReader)
    # the CLI's options reach the store it opens as an object, never through the environment
    before = dict(os.environ)
    args = cli.build_parser().parse_args(["--cache-dir", str(s3.cache / "cli"), "--cache-bytes",
                                          "3MiB", "ls", "--store", s3.url])
    settings = cli_options.cache_settings(args)
    assert settings == CacheSettings((s3.cache / "cli").resolve(), 3 * 2**20)
    args.cache = settings
    assert cli_options._open_store(args).cache_settings == settings
    assert cli.main(["--cache-dir", str(s3.cache / "cli"), "--cache-bytes", "3MiB", "ls",
                     "--store", s3.url]) == 0
    assert dict(os.environ) == before


def test_threads_reading_the_same_arrays_fetch_each_object_once(s3: S3Bucket) -> None:
    """A stream reads two batches at once; objects both need are fetched by one of them while
    the other waits, not twice."""
    s = _fill(s3.url)
    want = _jobs(s)
    TensorStoreReader.for_store(s).copy_into(want)  # type: ignore[union-attr]
    r = DiskCachedReader(s, _settings(s3))
    barrier = threading.Barrier(4)
    outs = [_jobs(s) for _ in range(4)]

    def one(jobs: list[tuple[str, tuple[Any, ...], np.ndarray]]) -> None:
        barrier.wait()
        r.copy_into(jobs)

    s3.server.reset_counts()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, outs))
    assert s3.server.counts() == {"GET": len(want) * 3}, s3.server.requests()
    assert r.cache.fetched == len(want) * 3
    for got in outs:
        for (_, _, a), (_, _, b) in zip(want, got, strict=True):
            np.testing.assert_array_equal(a, b)
