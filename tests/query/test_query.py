"""Query: window arithmetic, selection filters, batches, reads, xarray, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from atlasstore.errors import CorruptArray, InvalidName, NotFound, QueryError
from atlasstore.physics import fields as physics
from atlasstore.query import Query
from atlasstore.store import AtlasStore
from helpers import store_fixtures
from helpers.store_fixtures import (
    A0_MEANS,
    A1_LIT,
    B0_STEPS,
    N128,
    chunk_files,
    copy_store,
    energy_sequence,
    expected_windows,
    flip_bytes,
    lit_map,
)

# the shared fixtures, bound as names (an import of them would read as a redefinition to ruff)
stats_store = store_fixtures.stats_store
stats_store_path = store_fixtures.stats_store_path

N_STEPS = {("alpha", "a0"): len(A0_MEANS), ("alpha", "a1"): len(A1_LIT), ("beta", "b0"): B0_STEPS}
ORDER = [("alpha", "a0"), ("alpha", "a1"), ("beta", "b0")]


def ids(q: Query) -> list[str]:
    return [w.id for w in q.windows()]


def expected_ids(window: int, stride: int = 1, time_range: tuple[int, int] | None = None,
                 seqs: list[tuple[str, str]] = ORDER,
                 ok: dict[tuple[str, str], list[bool]] | None = None) -> list[str]:
    out = []
    for d, s in seqs:
        for t0 in expected_windows(N_STEPS[(d, s)], window, stride, time_range,
                                   (ok or {}).get((d, s))):
            out.append(f"{d}/{s}@{t0}")
    return out


def _step_stats() -> dict[tuple[str, str], list[dict[str, float]]]:
    """Per-step stats computed here from the same arrays the fixture stores."""
    a0 = [physics.map_stats(np.full((128, 128), m, np.float32)) for m in A0_MEANS]
    a1 = [physics.map_stats(lit_map(128, 128, 1.0, k)) for k in A1_LIT]
    b0 = [physics.map_stats(m) for m in energy_sequence(B0_STEPS, 128, 128, seed=7)]
    return {("alpha", "a0"): a0, ("alpha", "a1"): a1, ("beta", "b0"): b0}


STATS = _step_stats()


def test_known_stats_are_what_the_fixture_claims() -> None:
    a1 = STATS[("alpha", "a1")]
    for t, s in enumerate(a1):
        assert s["entropy"] == pytest.approx(math.log(N128) - t * math.log(2))
        assert s["variance"] == pytest.approx(2**t - 1)
        assert s["mean"] == pytest.approx(1.0)
    assert [s["mean"] for s in STATS[("alpha", "a0")]] == A0_MEANS


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize("window,stride,time_range", [
    (1, 1, None), (2, 1, None), (3, 2, None), (4, 3, None), (5, 1, None), (6, 1, None),
    (1, 1, (1, 4)), (2, 2, (1, 6)), (2, 1, (4, 100)), (3, 1, (0, 3)), (1, 5, None),
    (2, 1, (10, 20)),
])
def test_window_arithmetic(stats_store: AtlasStore, window: int, stride: int,
                           time_range: tuple[int, int] | None) -> None:
    q = Query(stats_store, scale=128, window=window, stride=stride, time_range=time_range)
    exp = expected_ids(window, stride, time_range)
    assert ids(q) == exp
    assert q.count() == len(exp)
    for w in q.windows():
        assert w.length == window
        if time_range:
            assert time_range[0] <= w.t0 and w.t0 + window <= time_range[1]


def test_count_formula(stats_store: AtlasStore) -> None:
    # n - w + 1 windows per sequence at stride 1, ceil((n - w + 1) / s) at stride s
    for w in range(1, 7):
        for s in range(1, 4):
            n = sum(math.ceil(max(0, k - w + 1) / s) for k in N_STEPS.values())
            assert Query(stats_store, scale=64, window=w, stride=s).count() == n


def test_window_longer_than_every_sequence(stats_store: AtlasStore) -> None:
    with pytest.raises(QueryError, match="longer than every selected sequence.*6 steps"):
        Query(stats_store, scale=128, window=7).windows()
    # longer than some: those are skipped
    assert ids(Query(stats_store, scale=128, window=5)) == ["alpha/a0@0", "alpha/a0@1", "alpha/a1@0"]


# --------------------------------------------------------------------------- selection


@pytest.mark.parametrize("sequences,expect", [
    (("a1",), [("alpha", "a1")]),
    (("alpha/a0",), [("alpha", "a0")]),
    ("b0", [("beta", "b0")]),
    (("beta/b0", "a1"), [("alpha", "a1"), ("beta", "b0")]),
])
def test_sequence_filter(stats_store: AtlasStore, sequences: object,
                         expect: list[tuple[str, str]]) -> None:
    q = Query(stats_store, scale=128, window=2, sequences=sequences)  # type: ignore[arg-type]
    assert ids(q) == expected_ids(2, seqs=expect)


def test_unknown_sequence(stats_store: AtlasStore) -> None:
    with pytest.raises(NotFound, match="'zzz'"):
        Query(stats_store, scale=128, sequences=("zzz",)).windows()
    with pytest.raises(NotFound, match="beta/a0"):
        Query(stats_store, scale=128, sequences=("beta/a0",)).windows()
    with pytest.raises(NotFound):
        Query(stats_store, scale=128, domains=("beta",), sequences=("a0",)).windows()


def test_domains(stats_store: AtlasStore) -> None:
    assert ids(Query(stats_store, scale=128, domains=("beta",))) == expected_ids(1, seqs=[("beta", "b0")])
    assert ids(Query(stats_store, scale=128, domains="alpha")) == \
        expected_ids(1, seqs=[("alpha", "a0"), ("alpha", "a1")])
    both = Query(stats_store, scale=128, domains=("alpha", "beta"), window=3)
    assert ids(both) == expected_ids(3)
    batch = both.to_numpy()
    assert {i.split("/")[0] for i in batch["ids"]} == {"alpha", "beta"}


def test_missing_domain(stats_store: AtlasStore) -> None:
    with pytest.raises(NotFound, match="unknown domain.*'gamma'"):
        Query(stats_store, scale=128, domains=("alpha", "gamma")).windows()
    with pytest.raises(InvalidName):
        Query(stats_store, domains=("a/b",))


def test_empty_domains_tuple(stats_store: AtlasStore) -> None:
    with pytest.raises(QueryError, match="domains is empty"):
        Query(stats_store, domains=())


@pytest.mark.parametrize("scale,shape", [(128, (128, 128)), (64, (64, 64))])
def test_scale_selection(stats_store: AtlasStore, scale: int, shape: tuple[int, int]) -> None:
    data = Query(stats_store, scale=scale, window=2, sequences=("a0",)).to_numpy()
    assert data["energy"].shape == (5, 2, *shape)
    assert data["energy"].dtype == np.float32
    np.testing.assert_array_equal(data["energy"][1], stats_store.read("alpha", "a0", scale, t=slice(1, 3)))


def test_missing_scale_and_bad_scale(stats_store: AtlasStore) -> None:
    with pytest.raises(NotFound, match="no scale 256"):
        Query(stats_store, scale=256).windows()  # the store's maps are 128
    assert Query(stats_store).scale == 128  # the default: the selection's full resolution
    with pytest.raises(NotFound, match="no scale 100"):  # any stored level; 100 is not one
        Query(stats_store, scale=100).windows()
    for bad in (0, -64, True, "64", 1.5):
        with pytest.raises(QueryError, match="scale .* must be a positive integer"):
            Query(stats_store, scale=bad)
    assert Query(stats_store, scale=None, domains=("beta",)).scale == 128  # the full resolution


def test_fields_selection(stats_store: AtlasStore) -> None:
    q = Query(stats_store, scale=64, fields=("grad_y", "energy"), window=2, sequences=("b0",))
    data = q.to_numpy()
    assert set(data) == {"grad_y", "energy", "ids"}
    for i, wid in enumerate(data["ids"]):
        t0 = int(wid.split("@")[1])
        for f in ("grad_y", "energy"):
            np.testing.assert_array_equal(data[f][i],
                                          stats_store.read("beta", "b0", 64, f, t=slice(t0, t0 + 2)))
    assert "grad_x" not in data
    with pytest.raises(QueryError, match="unknown field 'pressure'; beta/b0 holds: energy, grad_x"):
        Query(stats_store, fields=("pressure",), sequences=("b0",), scale=64).to_numpy()
    with pytest.raises(QueryError, match="fields is empty"):
        Query(stats_store, fields=())


def test_region(stats_store: AtlasStore) -> None:
    q = Query(stats_store, scale=128, region=(8, 40, 16, 80), window=2, domains=("beta",),
              fields=("energy", "grad_x"))
    data = q.to_numpy()
    assert data["energy"].shape == (3, 2, 32, 64)
    for i, t0 in enumerate(range(3)):
        np.testing.assert_array_equal(
            data["grad_x"][i],
            stats_store.read("beta", "b0", 128, "grad_x", t=slice(t0, t0 + 2))[:, 8:40, 16:80])
    full = Query(stats_store, scale=64, region=(0, 64, 0, 64), domains=("beta",)).to_numpy()
    assert full["energy"].shape == (4, 1, 64, 64)


@pytest.mark.parametrize("region", [(0, 129, 0, 10), (0, 10, 120, 129), (100, 200, 0, 1)])
def test_region_out_of_bounds(stats_store: AtlasStore, region: tuple[int, int, int, int]) -> None:
    q = Query(stats_store, scale=128, region=region)
    with pytest.raises(QueryError, match="exceeds the 128x128"):
        q.to_numpy()
    with pytest.raises(QueryError, match="exceeds"):
        q.to_xarray()


@pytest.mark.parametrize("region", [(-1, 4, 0, 4), (4, 4, 0, 4), (0, 4, 5, 3)])
def test_bad_region(stats_store: AtlasStore, region: tuple[int, int, int, int]) -> None:
    with pytest.raises(QueryError, match="region"):
        Query(stats_store, region=region)


# --------------------------------------------------------------------------- stat filters


def _ok(name: str, rng: tuple[float, float]) -> dict[tuple[str, str], list[bool]]:
    return {k: [rng[0] <= s[name] <= rng[1] for s in v] for k, v in STATS.items()}


def _and(*oks: dict[tuple[str, str], list[bool]]) -> dict[tuple[str, str], list[bool]]:
    return {k: [all(o[k][t] for o in oks) for t in range(N_STEPS[k])] for k in N_STEPS}


@pytest.mark.parametrize("window", [1, 2, 3])
@pytest.mark.parametrize("name,rng", [
    ("mean", (2.5, 4.5)),          # a0 steps 2, 3
    ("mean", (3.0, 3.0)),          # inclusive bounds: exactly a0 step 2
    ("mean", (0.0, 100.0)),        # everything
    ("entropy", (8.0, 9.1)),       # a1 steps 1, 2
    ("entropy", (0.0, 8.5)),       # a1 steps 2, 3, 4
    ("variance", (0.5, 8.0)),      # a1 steps 1, 2, 3
    ("variance", (0.0, 0.0)),      # a0 all, a1 step 0
])
def test_stat_filters_apply_to_every_step_of_a_window(stats_store: AtlasStore, window: int, name: str,
                                                      rng: tuple[float, float]) -> None:
    q = Query(stats_store, scale=128, window=window, **{name: rng})
    exp = expected_ids(window, ok=_ok(name, rng))
    assert ids(q) == exp


def test_stat_filters_specific_results(stats_store: AtlasStore) -> None:
    assert ids(Query(stats_store, scale=128, mean=(2.5, 4.5), window=2)) == ["alpha/a0@2"]
    assert ids(Query(stats_store, scale=128, mean=(2.5, 4.5), window=3)) == []
    assert ids(Query(stats_store, scale=128, entropy=(8.0, 9.1))) == ["alpha/a1@1", "alpha/a1@2"]
    assert ids(Query(stats_store, scale=128, variance=(0.5, 8.0), window=3, domains="alpha")) == \
        ["alpha/a1@1"]


def test_combined_stat_filters_intersect(stats_store: AtlasStore) -> None:
    q = Query(stats_store, scale=128, entropy=(0.0, 9.5), variance=(2.0, 100.0), mean=(0.9, 1.1))
    exp = expected_ids(1, ok=_and(_ok("entropy", (0.0, 9.5)), _ok("variance", (2.0, 100.0)),
                                  _ok("mean", (0.9, 1.1))))
    assert ids(q) == exp == ["alpha/a1@2", "alpha/a1@3", "alpha/a1@4"]


def test_stat_filter_with_time_range_and_stride(stats_store: AtlasStore) -> None:
    q = Query(stats_store, scale=128, mean=(0.0, 5.5), window=2, stride=2, time_range=(1, 6),
              domains=("alpha",))
    exp = expected_ids(2, 2, (1, 6), seqs=[("alpha", "a0"), ("alpha", "a1")], ok=_ok("mean", (0.0, 5.5)))
    assert ids(q) == exp == ["alpha/a0@1", "alpha/a0@3", "alpha/a1@1", "alpha/a1@3"]


def test_stat_filter_with_unmatched_sequence_filter_is_empty_not_error(stats_store: AtlasStore) -> None:
    assert ids(Query(stats_store, scale=128, sequences=("a0",), entropy=(0.0, 1.0))) == []


@pytest.mark.parametrize("kind,expect", [
    ("rotation", [("alpha", "a0")]),
    ("thermal_blur", [("alpha", "a1")]),
    ("gaussian_noise", []),
])
def test_perturbation_filter(stats_store: AtlasStore, kind: str, expect: list[tuple[str, str]]) -> None:
    assert ids(Query(stats_store, scale=128, perturbation=kind)) == expected_ids(1, seqs=expect)


@pytest.mark.parametrize("run_id,expect", [
    ("run-A", [("alpha", "a0")]),
    ("run-B", [("alpha", "a1")]),
    ("run-C", []),
])
def test_run_id_filter(stats_store: AtlasStore, run_id: str, expect: list[tuple[str, str]]) -> None:
    assert ids(Query(stats_store, scale=128, window=2, run_id=run_id)) == expected_ids(2, seqs=expect)


@pytest.mark.parametrize("kw,match", [
    ({"window": 0}, "window must be a positive integer"),
    ({"window": -2}, "window must be a positive integer"),
    ({"window": True}, "window must be a positive integer"),
    ({"window": 1.5}, "window must be a positive integer"),
    ({"stride": 0}, "stride must be a positive integer"),
    ({"time_range": (3, 3)}, "time_range"),
    ({"time_range": (5, 2)}, "time_range"),
    ({"time_range": (-1, 2)}, "time_range"),
    ({"entropy": (2.0, 1.0)}, "entropy range"),
    ({"entropy": (float("nan"), 1.0)}, "entropy range"),
    ({"mean": (0.0, float("inf"))}, "mean range"),
    ({"variance": (1.0, 0.0)}, "variance range"),
])
def test_bad_parameters(stats_store: AtlasStore, kw: dict, match: str) -> None:
    with pytest.raises(QueryError, match=match):
        Query(stats_store, **kw)


def test_query_error_is_value_error() -> None:
    assert issubclass(QueryError, ValueError)


# --------------------------------------------------------------------------- batches


def test_batches_sizes_order_and_values(stats_store: AtlasStore) -> None:
    q = Query(stats_store, scale=64, window=2, fields=("energy", "grad_x"))
    all_ids = expected_ids(2)
    assert len(all_ids) == 12
    batches = list(q.batches(batch_size=5))
    assert [len(b["ids"]) for b in batches] == [5, 5, 2]
    assert [b["energy"].shape[0] for b in batches] == [5, 5, 2]
    assert [i for b in batches for i in b["ids"]] == all_ids
    for b in batches:
        assert set(b) == {"energy", "grad_x", "ids"}
        for i, wid in enumerate(b["ids"]):
            key, t0 = wid.split("@")
            d, s = key.split("/")
            for f in ("energy", "grad_x"):
                assert b[f].dtype == np.float32
                np.testing.assert_array_equal(
                    b[f][i], stats_store.read(d, s, 64, f, t=slice(int(t0), int(t0) + 2)))
    dropped = list(q.batches(batch_size=5, drop_remainder=True))
    assert [len(b["ids"]) for b in dropped] == [5, 5]
    assert [i for b in dropped for i in b["ids"]] == all_ids[:10]
    exact = list(q.batches(batch_size=4, drop_remainder=True))
    assert [len(b["ids"]) for b in exact] == [4, 4, 4]
    one = list(q.batches(batch_size=100))
    assert len(one) == 1 and one[0]["ids"] == all_ids
    np.testing.assert_array_equal(one[0]["energy"], q.to_numpy()["energy"])
    assert [b["ids"] for b in q] == [b["ids"] for b in q.batches()]  # __iter__


def test_batches_with_stride_and_region_equal_direct_reads(stats_store: AtlasStore) -> None:
    q = Query(stats_store, scale=128, window=3, stride=2, region=(5, 20, 100, 128), domains=("alpha",))
    for b in q.batches(batch_size=2):
        for i, wid in enumerate(b["ids"]):
            key, t0 = wid.split("@")
            d, s = key.split("/")
            t0 = int(t0)
            np.testing.assert_array_equal(
                b["energy"][i],
                stats_store.read(d, s, 128, t=slice(t0, t0 + 3), y=slice(5, 20), x=slice(100, 128)))


@pytest.mark.parametrize("bs", [0, -1, True, 2.0])
def test_bad_batch_size(stats_store: AtlasStore, bs: object) -> None:
    with pytest.raises(QueryError, match="batch_size"):
        next(Query(stats_store, scale=128).batches(batch_size=bs))  # type: ignore[arg-type]


def test_empty_query_batches_and_to_numpy(stats_store: AtlasStore) -> None:
    q = Query(stats_store, scale=128, run_id="nobody")
    assert q.count() == 0
    assert list(q.batches(4)) == []
    with pytest.raises(QueryError, match="no windows"):
        q.to_numpy()
    with pytest.raises(QueryError, match="no windows"):
        q.to_xarray()


def test_mixed_shapes_need_a_region(tmp_path: Path) -> None:
    s = AtlasStore.create(tmp_path / "mix.zarr")
    s.create_domain("d")
    s.write_sequence("d", "sq", energy_sequence(2, 128, 128))
    s.write_sequence("d", "wide", energy_sequence(2, 128, 192, seed=1))
    with pytest.raises(QueryError, match="mix map shapes"):
        Query(s, scale=128).to_numpy()
    data = Query(s, scale=128, region=(0, 64, 0, 64)).to_numpy()
    assert data["energy"].shape == (4, 1, 64, 64)


def test_where_returns_modified_copy(stats_store: AtlasStore) -> None:
    q = Query(stats_store, scale=128)
    q2 = q.where(window=3, domains=("beta",))
    assert q.window == 1 and q2.window == 3 and q2.domains == ("beta",)
    assert ids(q2) == expected_ids(3, seqs=[("beta", "b0")])
    with pytest.raises(QueryError):
        q.where(window=0)


@pytest.mark.parametrize("name,rng", [("entropy", (9.0, None)), ("mean", (None, 2.5)),
                                      ("variance", (None, None))])
def test_where_keeps_open_statistic_bounds(stats_store: AtlasStore, name: str,
                                           rng: tuple[float | None, float | None]) -> None:
    """An open bound (None) survives where(): it used to become inf, which the re-check of
    where() then refused as a non-finite bound."""
    q = Query(stats_store, scale=128, **{name: rng})
    q2 = q.where(window=2)
    assert getattr(q2, name) == rng
    assert ids(q2) == ids(Query(stats_store, scale=128, window=2, **{name: rng}))
    lo, hi = (-math.inf if rng[0] is None else rng[0]), (math.inf if rng[1] is None else rng[1])
    assert ids(q2) == expected_ids(2, ok=_ok(name, (lo, hi)))


# --------------------------------------------------------------------------- xarray


def test_to_xarray_is_lazy_and_equals_numpy(stats_store: AtlasStore) -> None:
    import dask.array as da

    q = Query(stats_store, scale=64, window=2, stride=2, fields=("energy", "grad_y"),
              region=(4, 36, 10, 50))
    ds = q.to_xarray()
    ref = q.to_numpy()
    for f in ("energy", "grad_y"):
        assert isinstance(ds[f].data, da.Array), "dask-backed"
        assert ds[f].dims == ("sample", "step", "y", "x")
        np.testing.assert_array_equal(ds[f].values, ref[f])
        assert ds[f].attrs["units"]
    assert list(ds.sizes.values()) == [len(ref["ids"]), 2, 32, 40]
    got_ids = [f"{d}/{s}@{t}" for d, s, t in zip(ds["domain"].values, ds["sequence_id"].values,
                                                 ds["t0"].values, strict=True)]
    assert got_ids == ref["ids"]
    # y/x are pixel centres in base-level (128) pixels: factor 2 at scale 64
    np.testing.assert_allclose(ds["y"].values, (np.arange(4, 36) + 0.5) * 2)
    np.testing.assert_allclose(ds["x"].values, (np.arange(10, 50) + 0.5) * 2)
    assert ds.attrs["scale"] == 64


def test_to_xarray_reads_nothing_until_computed(tmp_path: Path, stats_store_path: Path) -> None:
    p = copy_store(stats_store_path, tmp_path / "copy.zarr")
    store = AtlasStore.open(p, mode="r+")
    ds = Query(store, scale=128, sequences=("b0",), window=2).to_xarray()
    # change the stored values behind the dataset's back: a lazy dataset sees the new values
    arr = store.zarr_group["beta/b0/128/energy"]
    arr[...] = np.float32(42.0)
    assert float(ds["energy"].max().compute()) == 42.0
    assert float(ds["energy"].min().compute()) == 42.0


def test_non_integer_region_is_a_query_error(stats_store: AtlasStore) -> None:
    with pytest.raises(QueryError, match="region"):
        Query(stats_store, scale=128, region=(0.5, 3, 0, 4)).to_numpy()  # type: ignore[arg-type]


def test_non_integer_time_range_is_a_query_error(stats_store: AtlasStore) -> None:
    with pytest.raises(QueryError, match="time_range"):
        Query(stats_store, scale=128, time_range=(0.5, 3)).windows()  # type: ignore[arg-type]


@pytest.mark.parametrize("damage", ["missing", "empty", "flipped"])
def test_to_xarray_raises_on_a_damaged_shard_never_zeros(tmp_path: Path, stats_store_path: Path,
                                                         damage: str) -> None:
    """The README's promise holds for the lazy view too: a missing, empty or corrupt shard is
    CorruptArray on compute (dask's from_zarr read a missing shard as zeros)."""
    p = copy_store(stats_store_path, tmp_path / "copy.zarr")
    ds = Query(AtlasStore.open(p), scale=128, sequences=("b0",), window=2).to_xarray()
    (shard,) = chunk_files(p, "beta/b0/128/energy")
    if damage == "missing":
        shard.unlink()
    elif damage == "empty":
        shard.write_bytes(b"")
    else:
        flip_bytes(shard, 40)
    with pytest.raises(CorruptArray, match="beta/b0/128/energy"):
        ds["energy"].compute()
    # the same dataset built after the damage fails the same way
    with pytest.raises(CorruptArray, match="beta/b0/128/energy"):
        Query(AtlasStore.open(p), scale=128, sequences=("b0",), window=2).to_xarray()["energy"].compute()


def test_to_xarray_reads_through_zarr_for_remote_stores_and_still_refuses_missing_shards() -> None:
    """memory:// stores take the zarr-python path, whose missing-shard check must apply too."""
    import uuid

    from atlasstore.store import AtlasStore as Store

    loc = f"memory://xr-{uuid.uuid4().hex}/atlas.zarr"
    st = Store.create(loc)
    st.create_domain("alpha")
    st.write_sequence("alpha", "s0", energy_sequence(3, 64, 64, seed=1))
    ds = Query(st, scale=64, window=3).to_xarray()
    np.testing.assert_array_equal(ds["energy"].values[0], st.read("alpha", "s0", 64, "energy"))
    key = f"alpha/s0/64/energy/{st.array('alpha', 's0', 64, 'energy').metadata.encode_chunk_key((0, 0, 0))}"
    from zarr.core.sync import sync

    sync(st.zarr_group.store.delete(key))
    with pytest.raises(CorruptArray, match="missing or empty"):
        ds["energy"].compute()


def test_a_step_without_entropy_passes_no_entropy_filter(stats_store: AtlasStore) -> None:
    """Fields without entropy (intensive fields: their steps record none) never match an entropy
    range, as in the catalog (NULL); other filters still apply to them."""
    step = {"t": 0, "mean": 1.0, "variance": 0.5, "sum": None}
    assert Query(stats_store, scale=64).step_passes(step)
    assert Query(stats_store, scale=64, mean=(0.5, 1.5), variance=(0.0, 1.0)).step_passes(step)
    assert Query(stats_store, scale=64, entropy=(None, None)).step_passes(step)  # no bound
    assert not Query(stats_store, scale=64, entropy=(0.0, 100.0)).step_passes(step)
    assert not Query(stats_store, scale=64, entropy=(None, 100.0)).step_passes(step)
    assert not Query(stats_store, scale=64, mean=(2.0, 3.0)).step_passes(step)


def test_store_selector_only_reads_the_named_sequences(stats_store: AtlasStore) -> None:
    """``StoreSelector(only=...)``: what a catalog cannot answer for, read without a listing;
    names that are not (complete) sequences select nothing."""
    from atlasstore.query import StoreSelector

    q = Query(stats_store, scale=64, window=2)
    every = StoreSelector().select(q)
    keys = [f"{s.domain}/{s.sequence_id}" for s in every]
    some = StoreSelector(only=[keys[-1], keys[0], f"{every[0].domain}/missing"]).select(q)
    assert some == [every[0], every[-1]]
    assert StoreSelector(only=[]).select(q) == []


def test_the_default_scale_is_the_full_resolution_of_the_selection(tmp_path: Path) -> None:
    """As the CLI's --scale: a store of 64x96 maps is queried at 64 without naming it (the
    default was 256, and such a store answered NotFound: no scale 256)."""
    store = AtlasStore.create(tmp_path / "s.zarr")
    store.create_domain("lab")
    store.write_sequence("lab", "run0", np.ones((4, 64, 96), np.float32), field="temperature")
    q = Query(store, window=2)
    assert q.scale == 64 and q.count() == 3
    assert q.to_numpy()["temperature"].shape == (3, 2, 64, 96)


def test_count_refuses_fields_the_read_would_refuse(tmp_path: Path) -> None:
    """--count --fields counts only what --out can read: a field a selected sequence does not
    hold is the same QueryError for both (it used to count windows --out then refused)."""
    store = AtlasStore.create(tmp_path / "s.zarr")
    store.create_domain("lab")
    store.write_sequence("lab", "run0", np.ones((4, 64, 64), np.float32), field="temperature")
    assert Query(store, fields=("temperature", "grad_x")).count() == 4
    for call in ("count", "to_numpy"):
        with pytest.raises(QueryError, match="unknown field 'energy'; lab/run0 holds: temperature"):
            getattr(Query(store, fields=("energy",)), call)()
