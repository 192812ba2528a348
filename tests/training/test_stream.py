"""Tests of atlasstore.training.stream: the JAX streaming iterator over a Query.

Tiny stores only: 2 domains x 2 sequences x 6 steps at 128 (levels 128, 64), one at 256 (all
three levels), and hand-written sequences for the mismatched-scale and recompute cases.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding

from atlasstore.errors import CorruptArray, NotFound, StreamError
from atlasstore.query import Query
from atlasstore.runs.generate import Plan, generate
from atlasstore.store import AtlasStore
from atlasstore.training.normalization import load_or_compute_stats, stats_location
from atlasstore.training.order import epoch_batches, epoch_permutation, process_share
from atlasstore.training.stream import StreamIterator, stream
from atlasstore.training.windows import WindowSource

DOMAINS = ("plasma_physics", "fluid_dynamics")


def _energy(steps: int, ny: int, nx: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.gamma(2.0, 1.0, size=(steps, ny, nx)) + 1e-3).astype(np.float32)


@pytest.fixture(scope="module")
def store128(tmp_path_factory: pytest.TempPathFactory) -> AtlasStore:
    path = tmp_path_factory.mktemp("s128") / "atlas.zarr"
    generate(path, Plan(domains=DOMAINS, sequences=2, steps=6, shape=(128, 128)),
             scheduler="serial")
    return AtlasStore.open(path)


@pytest.fixture(scope="module")
def store256(tmp_path_factory: pytest.TempPathFactory) -> AtlasStore:
    path = tmp_path_factory.mktemp("s256") / "atlas.zarr"
    generate(path, Plan(domains=("astrophysics",), sequences=1, steps=6, shape=(256, 256)),
             scheduler="serial")
    return AtlasStore.open(path)


def q128(store: AtlasStore, window: int = 3, **kw) -> Query:
    """The query of a stream with n_in + n_out = ``window`` at scale 128."""
    return Query(store, scale=128, window=window, **kw)


def _host(batch: dict) -> dict:
    """A batch as NumPy (for comparisons)."""
    out = {"inputs": {k: np.asarray(v) for k, v in batch["inputs"].items()},
           "target": np.asarray(batch["target"]), "ids": list(batch["ids"])}
    return out


def _window(wid: str) -> tuple[str, str, int]:
    dom_seq, t0 = wid.split("@")
    dom, seq = dom_seq.split("/")
    return dom, seq, int(t0)


def _our_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("atlasstore-stream")]


# --------------------------------------------------------------------------- shapes & values


def test_multilevel_shapes_and_device_placement(store256: AtlasStore) -> None:
    q = Query(store256, scale=256, window=3)
    with stream(q, n_in=2, n_out=1, batch_size=2, prefetch=1) as it:
        assert it.levels == (256, 128, 64)
        batch = next(it)
    assert set(batch["inputs"]) == {256, 128, 64}
    for lvl in (256, 128, 64):
        assert batch["inputs"][lvl].shape == (2, 2, lvl, lvl)
        assert batch["inputs"][lvl].dtype == np.float32
    assert batch["target"].shape == (2, 1, 256, 256)
    assert len(batch["ids"]) == 2 and all(isinstance(i, str) for i in batch["ids"])
    cpu = jax.devices("cpu")[0]
    for arr in [*batch["inputs"].values(), batch["target"]]:
        assert isinstance(arr, jax.Array)
        assert arr.devices() == {cpu}
        assert isinstance(arr.sharding, NamedSharding)
        assert arr.sharding.mesh.axis_names == ("data",)
        assert arr.sharding.spec[0] == "data"
        assert arr.is_fully_addressable


def test_target_is_next_steps_at_full_resolution(store128: AtlasStore) -> None:
    n_in, n_out = 3, 2
    it = stream(q128(store128, window=n_in + n_out), n_in=n_in, n_out=n_out, batch_size=2,
                normalise=False,
                prefetch=0, num_epochs=1)
    seen = 0
    for batch in it:
        b = _host(batch)
        for i, wid in enumerate(b["ids"]):
            dom, seq, t0 = _window(wid)
            want_t = store128.read(dom, seq, 128, "energy", t=slice(t0 + n_in, t0 + n_in + n_out))
            np.testing.assert_array_equal(b["target"][i], want_t)
            for lvl in (128, 64):
                want_in = store128.read(dom, seq, lvl, "energy", t=slice(t0, t0 + n_in))
                np.testing.assert_array_equal(b["inputs"][lvl][i], want_in)
            seen += 1
    # 4 sequences x (6 - 5 + 1) windows = 8 windows; batches of 2
    assert seen == 8 == len(it.source)


@pytest.mark.parametrize("scale,levels", [(256, (256, 128, 64)), (128, (128, 64)), (64, (64,))])
def test_stream_honours_the_query_scale(store256: AtlasStore, scale: int,
                                        levels: tuple[int, ...]) -> None:
    """The target is at the query's scale, the inputs at every stored level up to it."""
    it = stream(Query(store256, scale=scale, window=3), n_in=2, n_out=1, batch_size=2,
                normalise=False, prefetch=0, shuffle=False)
    assert it.levels == levels and it.source.base_level == scale
    b = _host(next(it))
    assert set(b["inputs"]) == set(levels)
    assert b["target"].shape == (2, 1, scale, scale)
    for i, wid in enumerate(b["ids"]):
        dom, seq, t0 = _window(wid)
        np.testing.assert_array_equal(b["target"][i],
                                      store256.read(dom, seq, scale, "energy", t=slice(t0 + 2, t0 + 3)))
        for lvl in levels:
            np.testing.assert_array_equal(b["inputs"][lvl][i],
                                          store256.read(dom, seq, lvl, "energy", t=slice(t0, t0 + 2)))
    # normalisation statistics cover exactly the streamed levels; denormalise defaults to scale
    nrm = stream(Query(store256, scale=scale, window=3), n_in=2, n_out=1, batch_size=2,
                 prefetch=0, shuffle=False)
    assert set(nrm.norm_stats.values["astrophysics"]["energy"]) == {str(lv) for lv in levels}
    bn = _host(next(nrm))
    np.testing.assert_allclose(nrm.denormalise(bn["target"], bn["ids"]), b["target"],
                               rtol=1e-5, atol=1e-5)


def test_stream_refuses_a_query_window_other_than_n_in_plus_n_out(store128: AtlasStore) -> None:
    for window in (1, 2, 4):  # 1 is the Query default: a stream's query must say its window
        for make in (lambda q: stream(q, n_in=2, n_out=1, batch_size=1),
                     lambda q: WindowSource(q, 2, 1)):
            with pytest.raises(StreamError, match=f"query's window is {window} step.*"
                                                  r"n_in \+ n_out = 2 \+ 1 = 3.*window=3"):
                make(q128(store128, window=window))


def test_stream_honours_stride_time_range_and_filters(store128: AtlasStore) -> None:
    q = q128(store128, window=3, stride=2, time_range=(1, 6), domains=("plasma_physics",))
    it = stream(q, n_in=2, n_out=1, batch_size=1, normalise=False, prefetch=0, shuffle=False)
    want = [f"plasma_physics/seq-{i:05d}@{t0}" for i in range(2) for t0 in (1, 3)]
    assert [w.id for w in it.source.windows] == [w.id for w in q.windows()] == want
    assert [_host(b)["ids"][0] for b in it] == want
    # a statistic filter that every step passes keeps every window; one no step passes, none
    lo = min(s["entropy"] for d, sq in store128.iter_sequences()
             for s in store128.sequence_info(d, sq)["steps"])
    assert len(stream(q.where(entropy=(lo, None)), n_in=2, n_out=1, batch_size=1).source) == 4
    with pytest.raises(StreamError, match="no windows"):
        stream(q.where(entropy=(None, lo - 1)), n_in=2, n_out=1, batch_size=1)


def test_normalised_values_and_inverse(store128: AtlasStore) -> None:
    raw = stream(q128(store128), n_in=2, n_out=1, batch_size=4, normalise=False, prefetch=0,
                 shuffle=False)
    nrm = stream(q128(store128), n_in=2, n_out=1, batch_size=4, prefetch=0, shuffle=False)
    a, b = _host(next(raw)), _host(next(nrm))
    assert a["ids"] == b["ids"]
    back = nrm.denormalise(b["target"], b["ids"])
    np.testing.assert_allclose(back, a["target"], rtol=1e-5, atol=1e-5)
    back64 = nrm.inverse(b["inputs"][64], b["ids"], level=64)
    np.testing.assert_allclose(back64, a["inputs"][64], rtol=1e-5, atol=1e-4)
    # jax in, jax out
    back_j = nrm.denormalise(next(iter([jax.numpy.asarray(b["target"])])), b["ids"])
    assert isinstance(back_j, jax.Array)
    np.testing.assert_allclose(np.asarray(back_j), a["target"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nrm.normalise(a["target"], a["ids"]), b["target"], atol=1e-5)
    # host-side normalisation and an uncached reader give the same batch
    alt = stream(q128(store128), n_in=2, n_out=1, batch_size=4, prefetch=0, shuffle=False,
                 normalise_on="host", cache_bytes=0)
    c = _host(next(alt))
    np.testing.assert_allclose(c["target"], b["target"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c["inputs"][64], b["inputs"][64], rtol=1e-6, atol=1e-6)
    assert nrm.source.cache_bytes == nrm.source.data_nbytes > 0 and alt.source.cache_bytes == 0
    # normalised data are roughly standard over the whole epoch
    allt = np.concatenate([_host(x)["target"] for x in stream(
        q128(store128), n_in=2, n_out=1, batch_size=4, prefetch=0, shuffle=False)])
    assert abs(allt.mean()) < 0.5 and 0.3 < allt.std() < 3


def test_extra_fields_and_zarr_reader_agree(store128: AtlasStore) -> None:
    kw = dict(n_in=2, n_out=1, batch_size=2, prefetch=0, shuffle=False, normalise=False)
    a = next(stream(q128(store128, fields=("energy", "grad_x")), reader="tensorstore", **kw))
    b = next(stream(q128(store128), fields=("grad_x",), reader="zarr", **kw))
    assert set(a["fields"]) == {"grad_x"} and set(a["fields"]["grad_x"]) == {128, 64}
    dom, seq, t0 = _window(a["ids"][0])
    np.testing.assert_array_equal(np.asarray(a["fields"]["grad_x"][64][0]),
                                  store128.read(dom, seq, 64, "grad_x", t=slice(t0, t0 + 2)))
    for lvl in (128, 64):
        np.testing.assert_array_equal(np.asarray(a["inputs"][lvl]), np.asarray(b["inputs"][lvl]))
        np.testing.assert_array_equal(np.asarray(a["fields"]["grad_x"][lvl]),
                                      np.asarray(b["fields"]["grad_x"][lvl]))


def test_window_source_is_a_grain_source(store128: AtlasStore) -> None:
    import grain

    src = WindowSource(q128(store128), n_in=2, n_out=1)
    ds = grain.MapDataset.source(src)
    assert len(ds) == len(src) == 16
    s = ds[3]
    assert s["id"] == src.windows[3].id
    assert s["inputs"][128].shape == (2, 128, 128) and s["target"].shape == (1, 128, 128)
    assert [x["id"] for x in src._getitems([0, 5])] == [src.windows[0].id, src.windows[5].id]


# --------------------------------------------------------------------------- order & sharding


def test_shuffle_determinism(store128: AtlasStore) -> None:
    def ids(seed: int, epoch: int) -> list[str]:
        it = stream(q128(store128), n_in=2, n_out=1, batch_size=3, seed=seed, prefetch=0,
                    normalise=False, num_epochs=epoch + 1)
        if epoch:
            it.restore({**it.state(), "epoch": epoch, "step": 0})
        return [i for b in it for i in b["ids"]]

    e0 = ids(7, 0)
    assert e0 == ids(7, 0)                      # same seed, same order
    assert e0 != ids(7, 1)                      # another epoch, another order
    assert e0 != ids(8, 0)                      # another seed, another order
    assert len(set(e0)) == len(e0) == 15        # 16 windows: 5 batches of 3, remainder dropped
    assert np.array_equal(epoch_permutation(50, 3, 2), epoch_permutation(50, 3, 2))
    assert sorted(epoch_permutation(50, 3, 2)) == list(range(50))
    assert list(epoch_permutation(5, 3, 2, shuffle=False)) == [0, 1, 2, 3, 4]
    src_order = [w.id for w in WindowSource(q128(store128), 2, 1).windows]
    plain = stream(q128(store128), n_in=2, n_out=1, batch_size=3, shuffle=False, prefetch=0,
                   normalise=False)
    assert [i for b in plain for i in b["ids"]] == src_order[:15]


@pytest.mark.parametrize("n", [12, 13, 14, 100, 101])
@pytest.mark.parametrize("count", [2, 3])
def test_process_share_arithmetic(n: int, count: int) -> None:
    for epoch in (0, 1):
        perm = epoch_permutation(n, 11, epoch)
        shares = [process_share(perm, p, count) for p in range(count)]
        assert len({len(s) for s in shares}) == 1 and len(shares[0]) == n // count
        union = np.concatenate(shares)
        assert len(set(union.tolist())) == len(union)                       # disjoint
        assert set(union.tolist()) == set(perm[:n - n % count].tolist())   # epoch minus remainder
        for b in (1, 2, 4):
            steps = [epoch_batches(n, 11, epoch, b, p, count) for p in range(count)]
            assert len({s.shape for s in steps}) == 1                        # same step count
            assert steps[0].shape == ((n // count) // b, b)


@pytest.mark.parametrize("count", [2, 3])
def test_process_sharded_streams(store128: AtlasStore, count: int) -> None:
    per = []
    for p in range(count):
        it = stream(q128(store128), n_in=2, n_out=1, batch_size=2, seed=5, prefetch=0,
                    normalise=False, process_index=p, process_count=count)
        per.append([b["ids"] for b in it])
    steps = {len(x) for x in per}
    assert steps == {16 // count // 2}                     # equal number of steps
    flat = [i for x in per for b in x for i in b]
    assert len(set(flat)) == len(flat)                      # disjoint
    perm = epoch_permutation(16, 5, 0)
    src = WindowSource(q128(store128), 2, 1)
    expect = {src.windows[i].id for i in perm[:16 - 16 % count]}
    taken = {i for i in flat}
    assert taken <= expect


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("prefetch,workers", [(0, 1), (3, 1), (3, 2)])
@pytest.mark.parametrize("k", [1, 5, 7])
def test_resume_is_exact(store128: AtlasStore, prefetch: int, workers: int, k: int) -> None:
    kw = dict(n_in=2, n_out=1, batch_size=3, seed=1, num_epochs=3, prefetch=prefetch,
              workers=workers)  # 5 steps per epoch; k=5 and 7 cross an epoch boundary
    with stream(q128(store128), **kw) as full:
        ref = [_host(b) for b in full]
    assert len(ref) == 15
    first = stream(q128(store128), **kw)
    head = [_host(next(first)) for _ in range(k)]
    if prefetch:
        time.sleep(0.2)  # let the producer read ahead: the state must not count those batches
    state = json.loads(json.dumps(first.state()))
    assert (state["epoch"], state["step"]) == divmod(k, 5)
    first.close()
    second = stream(q128(store128), **kw)
    second.restore(state)
    tail = [_host(b) for b in second]
    got = head + tail
    assert [b["ids"] for b in got] == [b["ids"] for b in ref]
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a["target"], b["target"])
        for lvl in (128, 64):
            np.testing.assert_array_equal(a["inputs"][lvl], b["inputs"][lvl])


def test_restore_mid_stream_and_refusals(store128: AtlasStore) -> None:
    kw = dict(n_in=2, n_out=1, batch_size=2, seed=1, prefetch=2, normalise=False)
    it = stream(q128(store128), **kw)
    b0 = next(it)["ids"]
    s1 = it.state()
    b1 = next(it)["ids"]
    it.restore(s1)  # restoring a live iterator rewinds it
    assert next(it)["ids"] == b1
    it.close()
    with pytest.raises(StreamError, match="closed"):
        next(it)
    for other in (dict(kw, batch_size=3), dict(kw, n_in=1), dict(kw, shuffle=False),
                  dict(kw, process_index=0, process_count=2), dict(kw, normalise=True)):
        with pytest.raises(StreamError, match="different stream configuration"):
            stream(q128(store128, window=other["n_in"] + other["n_out"]), **other).restore(s1)
    with pytest.raises(StreamError, match="seed"):
        stream(q128(store128), **dict(kw, seed=2)).restore(s1)
    with pytest.raises(StreamError, match="different stream configuration"):
        stream(q128(store128, domains=("plasma_physics",)), **kw).restore(s1)
    with pytest.raises(StreamError, match="not a stream state"):
        stream(q128(store128), **kw).restore({"epoch": 0})
    assert b0 != b1


# --------------------------------------------------------------------------- statistics


def test_normalisation_stats_computed_once(tmp_path: Path) -> None:
    st = AtlasStore.create(tmp_path / "atlas.zarr")
    data = {}
    for d, seed in (("plasma_physics", 1), ("fluid_dynamics", 2)):
        st.create_domain(d)
        for i in range(2):
            e = _energy(4, 64, 64, seed * 10 + i) * (1 + seed)
            st.write_sequence(d, f"seq-{i:05d}", e)
            data[(d, i)] = e
    q = Query(st, scale=64, window=3)
    path = stats_location(st)
    assert not Path(path).exists()
    a = stream(q, n_in=2, n_out=1, batch_size=2, prefetch=0)
    assert a.stats_computed and Path(path).exists()
    b = stream(q, n_in=2, n_out=1, batch_size=2, prefetch=0)
    assert not b.stats_computed
    assert b.norm_stats == a.norm_stats
    for d in ("plasma_physics", "fluid_dynamics"):
        allv = np.concatenate([data[(d, i)].ravel() for i in range(2)]).astype(np.float64)
        m, s = b.norm_stats.mean_std(d, "energy", 64)
        assert m == pytest.approx(allv.mean(), rel=1e-9)
        assert s == pytest.approx(allv.std(), rel=1e-9)
    # a subset of sequences is another fingerprint: computed once, then loaded
    q1 = Query(st, scale=64, window=3, domains=("plasma_physics",))
    assert stream(q1, n_in=2, n_out=1, batch_size=1, prefetch=0).stats_computed
    assert not stream(q1, n_in=2, n_out=1, batch_size=1, prefetch=0).stats_computed
    # adding a sequence changes the set: recomputed (and the old entries stay usable)
    st.write_sequence("plasma_physics", "seq-00002", _energy(4, 64, 64, 99))
    c = stream(q, n_in=2, n_out=1, batch_size=2, prefetch=0)
    assert c.stats_computed and c.norm_stats.fingerprint != a.norm_stats.fingerprint
    doc = json.loads(Path(path).read_text())
    assert len(doc["entries"]) == 3
    # explicit location
    other = tmp_path / "elsewhere.json"
    s2, computed = load_or_compute_stats(st, [("fluid_dynamics", "seq-00000")], ["energy"], [64],
                                         path=str(other))
    assert computed and other.exists()
    assert load_or_compute_stats(st, [("fluid_dynamics", "seq-00000")], ["energy"], [64],
                                 path=str(other))[1] is False


# --------------------------------------------------------------------------- metrics & lifecycle


@pytest.mark.parametrize("prefetch", [0, 2])
def test_wait_metric(store128: AtlasStore, prefetch: int) -> None:
    with stream(q128(store128), n_in=2, n_out=1, batch_size=2, prefetch=prefetch) as it:
        n = 0
        for _ in it:
            time.sleep(0.01)  # a consumer that takes time
            n += 1
        s = it.wait_summary()
    assert len(it.wait_times) == n == 8
    assert all(w >= 0 for w in it.wait_times)
    assert s["count"] == n and s["total"] == pytest.approx(sum(it.wait_times))
    assert 0 < s["p50"] <= s["p95"] and s["mean"] > 0
    assert 0 < s["fraction"] < 1 and s["wall"] >= 0.01 * (n - 1)


@pytest.mark.parametrize("workers", [1, 2])
def test_producer_errors_reach_the_consumer(store128: AtlasStore, workers: int) -> None:
    it = stream(q128(store128), n_in=2, n_out=1, batch_size=2, prefetch=2, workers=workers,
                normalise=False)
    real = it.source.read_raw
    bad = list(it.epoch_indices(0)[2])

    def flaky(idx):
        if list(idx) == bad:
            raise RuntimeError("disk on fire")
        return real(idx)

    it.source.read_raw = flaky  # type: ignore[method-assign]
    next(it), next(it)
    with pytest.raises(RuntimeError, match="disk on fire"):
        next(it)
    assert it.state()["step"] == 2  # the failed batch was not delivered
    it.close()
    assert not _our_threads()


def test_corrupt_data_is_reported(store128: AtlasStore, tmp_path: Path) -> None:
    import shutil

    dst = tmp_path / "c.zarr"
    shutil.copytree(store128.location, dst)
    shard = next((dst / "plasma_physics" / "seq-00000" / "128" / "energy").glob("c.*"))
    while shard.is_dir():
        shard = next(shard.iterdir())
    raw = bytearray(shard.read_bytes())
    raw[64] ^= 0xFF
    shard.write_bytes(bytes(raw))
    st = AtlasStore.open(dst)
    with pytest.raises(CorruptArray, match="plasma_physics/seq-00000/128/energy"):
        with stream(Query(st, scale=128, window=3, domains=("plasma_physics",)), n_in=2, n_out=1,
                    batch_size=6, prefetch=2, normalise=False, shuffle=False) as it:
            list(it)
    assert not _our_threads()


def test_no_leaked_threads(store128: AtlasStore) -> None:
    with stream(q128(store128), n_in=2, n_out=1, batch_size=2, prefetch=3, workers=2,
                num_epochs=None) as it:
        next(it)
        assert _our_threads()
    assert not _our_threads()
    # an iterator dropped without close() stops its thread when collected
    it2 = stream(q128(store128), n_in=2, n_out=1, batch_size=2, prefetch=3, num_epochs=None)
    next(it2)
    del it2
    gc.collect()
    for _ in range(100):
        if not _our_threads():
            break
        time.sleep(0.05)
    assert not _our_threads()


# --------------------------------------------------------------------------- bad input


def test_bad_inputs(store128: AtlasStore, tmp_path: Path) -> None:
    q = q128(store128)
    with pytest.raises(StreamError, match="no windows"):                    # empty query
        stream(q128(store128, entropy=(1e6, 2e6)), n_in=2, n_out=1, batch_size=1)
    with pytest.raises(StreamError, match="no windows"):
        stream(q128(store128, time_range=(0, 2)), n_in=2, n_out=1, batch_size=1)
    with pytest.raises(StreamError, match=r"n_in \+ n_out = 5 \+ 2 = 7 steps.*longest .* 6"):
        stream(q128(store128, window=7), n_in=5, n_out=2, batch_size=1)
    with pytest.raises(StreamError, match="larger than this process's share"):
        stream(q, n_in=2, n_out=1, batch_size=17)                          # 16 windows
    with pytest.raises(StreamError, match="larger than this process's share"):
        stream(q, n_in=2, n_out=1, batch_size=6, process_index=1, process_count=3)
    for bad in (dict(n_in=0), dict(n_out=0), dict(n_in=-1), dict(n_in=1.5)):
        with pytest.raises(StreamError, match="n_in|n_out"):
            stream(q, **{"n_in": 2, "n_out": 1, **bad}, batch_size=1)
    with pytest.raises(StreamError, match="batch_size"):
        stream(q, n_in=2, n_out=1, batch_size=0)
    with pytest.raises(StreamError, match="process_index"):
        stream(q, n_in=2, n_out=1, batch_size=1, process_index=2, process_count=2)
    with pytest.raises(StreamError, match="region"):
        stream(q128(store128, region=(0, 32, 0, 32)), n_in=2, n_out=1, batch_size=1)
    with pytest.raises(StreamError, match="unknown field"):
        stream(q, n_in=2, n_out=1, batch_size=1, fields=("nope",))
    # 64x64 and 128x128 sequences in one query: at scale 64 both store the same levels (64) at
    # the same shape, so they share batches; scale 128 is refused by the query (small lacks it)
    st = AtlasStore.create(tmp_path / "mixed.zarr")
    st.create_domain("plasma_physics")
    st.write_sequence("plasma_physics", "small", _energy(4, 64, 64, 1))
    st.write_sequence("plasma_physics", "large", _energy(4, 128, 128, 2))
    mixed = stream(Query(st, scale=64, window=3), n_in=2, n_out=1, batch_size=4, prefetch=0)
    assert mixed.levels == (64,) and len(mixed.source) == 4
    assert next(mixed)["target"].shape == (4, 1, 64, 64)
    with pytest.raises(NotFound, match="small has no scale 128"):
        stream(Query(st, scale=128, window=3), n_in=2, n_out=1, batch_size=2)
    # same levels, different shapes (square vs 2:3)
    st.write_sequence("plasma_physics", "small", _energy(4, 64, 96, 3), overwrite=True,
                      levels=(64,))
    st.write_sequence("plasma_physics", "large", _energy(4, 64, 64, 4), overwrite=True)
    with pytest.raises(StreamError, match="mismatched scales.*shape"):
        stream(Query(st, scale=64, window=3), n_in=2, n_out=1, batch_size=2)


def test_batch_divisible_by_local_devices(tmp_path: Path, store128: AtlasStore) -> None:
    """Two CPU devices (in a subprocess): batches are split over both; odd batches refused."""
    code = f"""
import jax, numpy as np
from atlasstore.store import AtlasStore
from atlasstore.query import Query
from atlasstore.training.stream import stream
from atlasstore.errors import StreamError
assert len(jax.local_devices()) == 2
q = Query(AtlasStore.open({str(store128.location)!r}), scale=128, window=3)
try:
    stream(q, n_in=2, n_out=1, batch_size=3)
    raise SystemExit("no error")
except StreamError as e:
    assert "not divisible by the 2 local device(s)" in str(e), e
b = next(stream(q, n_in=2, n_out=1, batch_size=4, prefetch=1))
t = b["target"]
assert t.shape == (4, 1, 128, 128)
assert len(t.devices()) == 2
assert [s.data.shape for s in t.addressable_shards] == [(2, 1, 128, 128)] * 2
print("ok")
"""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


def test_len_and_endless(store128: AtlasStore) -> None:
    it = stream(q128(store128), n_in=2, n_out=1, batch_size=4, num_epochs=2, prefetch=0)
    assert len(it) == 8 and it.steps_per_epoch == 4
    assert len(list(it)) == 8
    endless = stream(q128(store128), n_in=2, n_out=1, batch_size=4, num_epochs=None, prefetch=1)
    with pytest.raises(TypeError):
        len(endless)
    got = [next(endless)["ids"] for _ in range(7)]
    assert endless.state()["epoch"] == 1 and endless.state()["step"] == 3
    endless.close()
    assert isinstance(endless, StreamIterator) and len(got) == 7
