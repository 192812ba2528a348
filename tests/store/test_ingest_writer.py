"""The store's write path for any data: the streaming SequenceWriter, any grid, fields that are not
energy (extensive or intensive), physical coordinates, xarray.DataArray input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from atlasstore.audit import audit
from atlasstore.errors import EnergyMapError, GridError, NotFound, QueryError
from atlasstore.physics import fields as physics
from atlasstore.query import Query
from atlasstore.records import Axis, Coordinates, FieldSpec
from atlasstore.store import AtlasStore, Layout, checksum
from atlasstore.store.writer import SequenceWriter
from helpers.store_fixtures import energy_sequence, listing


@pytest.fixture()
def store(tmp_path: Path) -> AtlasStore:
    s = AtlasStore.create(tmp_path / "w.zarr", layout=Layout(time_shard=8))
    s.create_domain("lab")
    return s


def _checksums(info: dict) -> dict[str, str]:
    return {k: v["checksum"] for k, v in info["arrays"].items()}


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("blocks", [[21], [1] * 21, [3, 5, 13], [8, 8, 5], [20, 1]])
def test_streaming_equals_all_at_once(tmp_path: Path, store: AtlasStore, blocks: list[int]) -> None:
    """Any split into appended blocks gives the checksums, values, stats and step records of
    one write_sequence call (21 steps = three 8-step shards, the last partial)."""
    e = energy_sequence(21, 128, 192, seed=4)
    ref = AtlasStore.create(tmp_path / "ref.zarr", layout=Layout(time_shard=8))
    ref.create_domain("lab")
    want = ref.write_sequence("lab", "s", e)
    with store.sequence_writer("lab", "s", e.shape) as w:
        t = 0
        for n in blocks:
            w.append(e[t:t + n])
            t += n
    got = store.sequence_info("lab", "s")
    assert _checksums(got) == _checksums(want)
    assert got["steps"] == want["steps"]
    assert {k: v["stats"] for k, v in got["arrays"].items()} == \
        {k: v["stats"] for k, v in want["arrays"].items()}
    for lvl in (128, 64):
        np.testing.assert_array_equal(store.read("lab", "s", lvl), ref.read("lab", "s", lvl))


def test_checksums_are_those_of_the_whole_arrays(store: AtlasStore) -> None:
    e = energy_sequence(21, 128, 128, seed=5)
    info = store.write_sequence("lab", "s", e)
    derived = physics.derive_levels(e)
    for lvl, f in derived.items():
        for name in ("energy", "grad_x", "grad_y"):
            assert info["arrays"][f"{lvl}/{name}"]["checksum"] == checksum(getattr(f, name))
            stats = info["arrays"][f"{lvl}/{name}"]["stats"]
            v = getattr(f, name).astype(np.float64)
            assert stats["mean"] == pytest.approx(v.mean(), rel=1e-9, abs=1e-12)
            assert stats["variance"] == pytest.approx(v.var(), rel=1e-9, abs=1e-12)
            assert (stats["min"], stats["max"]) == (v.min(), v.max())


def test_writer_holds_one_shard(store: AtlasStore) -> None:
    """The writer buffers one shard of steps, whatever the sequence's length: the bound on
    an import's memory."""
    w = store.sequence_writer("lab", "s", (1000, 64, 64))
    assert w._buf.shape == (8, 64, 64)  # Layout(time_shard=8)
    w.abort()
    big = AtlasStore.create(Path(store.location).parent / "b.zarr")
    big.create_domain("lab")
    w = big.sequence_writer("lab", "s", (1000, 64, 64))
    assert w._buf.shape == (128, 64, 64)  # the default shard: 128 steps
    w.abort()


def test_nothing_visible_before_commit_and_nothing_left_after_abort(store: AtlasStore) -> None:
    e = energy_sequence(20, 64, 64, seed=6)
    before = listing(store.location)
    w = store.sequence_writer("lab", "s", e.shape)
    w.append(e[:12])  # one shard written
    assert store.sequence_status("lab", "s") == "writing"
    assert store.sequences("lab") == []
    assert Query(store, domains=("lab",), scale=64).count() == 0
    w.abort()
    assert store.sequence_status("lab", "s") is None
    assert listing(store.location) == before


@pytest.mark.parametrize("bad,match", [
    (lambda e: e.__setitem__((13, 1, 1), np.nan), r"steps 12\.\.19: contains non-finite"),
    (lambda e: e.__setitem__((13, 1, 1), -1.0), r"steps 12\.\.19: contains 1 negative"),
])
def test_bad_block_mid_stream_aborts_the_sequence(store: AtlasStore, bad, match: str) -> None:
    e = energy_sequence(20, 64, 64, seed=7)
    bad(e)
    before = listing(store.location)
    w = store.sequence_writer("lab", "s", e.shape)
    w.append(e[:12])
    with pytest.raises(EnergyMapError, match=match):
        w.append(e[12:])
    assert store.sequence_status("lab", "s") is None
    assert listing(store.location) == before


def test_commit_needs_every_step_and_refuses_extra_ones(store: AtlasStore) -> None:
    e = energy_sequence(5, 64, 64)
    w = store.sequence_writer("lab", "s", e.shape)
    w.append(e[:3])
    with pytest.raises(EnergyMapError, match="3 of 5 steps were appended"):
        w.commit()
    assert store.sequence_status("lab", "s") is None
    w = store.sequence_writer("lab", "s", e.shape)
    with pytest.raises(EnergyMapError, match="more than the 5 steps"):
        w.append(np.concatenate([e, e[:1]]))
    with pytest.raises(EnergyMapError, match="expected maps of 64x64"):
        store.sequence_writer("lab", "s", e.shape).append(e[:, :32])


def test_exception_in_with_block_aborts(store: AtlasStore) -> None:
    e = energy_sequence(10, 64, 64)
    with pytest.raises(RuntimeError, match="source went away"):
        with store.sequence_writer("lab", "s", e.shape) as w:
            w.append(e[:9])
            raise RuntimeError("source went away")
    assert store.sequence_status("lab", "s") is None


def test_step_extras_merge_and_t_is_the_writers(store: AtlasStore) -> None:
    e = energy_sequence(3, 64, 64)
    info = store.write_sequence("lab", "s", e, steps=[
        {"t": 99, "metadata": {"a": 1}}, {"perturbations": [{"kind": "rotation"}]}, {}])
    assert [s["t"] for s in info["steps"]] == [0, 1, 2]
    assert info["steps"][0]["metadata"] == {"a": 1}
    assert info["steps"][1]["perturbations"] == [{"kind": "rotation"}]
    assert info["steps"][2]["entropy"] == pytest.approx(float(physics.entropy(e[2])))


# --------------------------------------------------------------------------- any grid


@pytest.mark.parametrize("shape,levels", [
    ((512, 512), (512, 256, 128, 64)), ((384, 128), (128, 64)), ((128, 384), (128, 64)),
    ((100, 100), (100,)), ((32, 32), (32,)), ((130, 200), (130, 65)), ((96, 160), (96,)),
    ((256, 384), (256, 128, 64)), ((64, 100), (64,)), ((1024, 96), (96,)),
])
def test_pyramid_levels_of_any_grid(shape: tuple[int, int], levels: tuple[int, ...]) -> None:
    assert physics.pyramid_levels(shape) == levels


@pytest.mark.parametrize("shape,smallest,levels,hint", [
    ((129, 129), 64, (129,), "--crop 128x128.*--pad 130x130"),
    ((258, 386), 64, (258, 129), "--crop 256x384.*--pad 260x388"),
    ((300, 300), 32, (300, 150, 75), "--crop 296x296.*--pad 304x304"),
    ((330, 360), 64, (330, 165), "--crop 328x360.*--pad 332x360"),
    ((37, 49), 64, (37,), None),  # nothing to halve: the base is the pyramid
    ((18, 30), 64, (18,), None),
])
def test_a_grid_that_stops_halving_stops_its_pyramid_and_names_crop_and_pad(
        shape: tuple[int, int], smallest: int, levels: tuple[int, ...], hint: str | None) -> None:
    """Grids that do not halve import without a flag: the levels stop where exact halving
    stops, and the hint names the --crop/--pad sizes that would halve further."""
    assert physics.pyramid_levels(shape, smallest) == levels
    got = physics.halving_hint(shape, smallest)
    if hint is None:
        assert got is None
    else:
        assert got is not None and re.search(hint, got), got


def test_levels_choose_among_exact_halvings() -> None:
    assert physics.pyramid_levels((512, 768), levels=[512, 128]) == (512, 128)
    assert physics.pyramid_levels((129, 129), levels=[129]) == (129,)
    assert physics.pyramid_levels((512, 512), smallest=128) == (512, 256, 128)
    for bad, match in (([256], "full resolution 512"), ([512, 200], "not an exact halving"),
                       ([512, 0], "not an exact halving"), ("512", "integers")):
        with pytest.raises(GridError, match=match):
            physics.pyramid_levels((512, 512), levels=bad)


def test_a_512_square_and_a_384x128_map_are_stored_and_queried(store: AtlasStore) -> None:
    e = energy_sequence(3, 512, 512, seed=8)
    info = store.write_sequence("lab", "big", e)
    assert info["levels"] == [512, 256, 128, 64]
    assert sorted(store.zarr_group["lab/big"].group_keys()) == ["128", "256", "512", "64"]
    assert store.read("lab", "big", 64).shape == (3, 64, 64)
    tall = energy_sequence(5, 384, 128, seed=9)
    info = store.write_sequence("lab", "tall", tall)
    assert info["levels"] == [128, 64] and store.read("lab", "tall", 64).shape == (5, 192, 64)
    q = Query(store, sequences=("tall",), scale=128, window=4)
    assert q.count() == 2
    np.testing.assert_array_equal(q.to_numpy()["energy"][1], tall[1:5])
    assert Query(store, sequences=("tall",), scale=None, window=4).scale == 128
    with pytest.raises(QueryError, match="differ in full resolution: 128 .*512"):
        Query(store, domains=("lab",), scale=None)
    with pytest.raises(NotFound, match="no scale 256"):
        Query(store, sequences=("tall",), scale=256).windows()


def test_pyramid_of_an_extensive_field_conserves_the_sum(store: AtlasStore) -> None:
    e = energy_sequence(2, 384, 128, seed=10)
    store.write_sequence("lab", "s", e)
    coarse = store.read("lab", "s", 64).astype(np.float64)
    np.testing.assert_allclose(coarse.sum(axis=(1, 2)), e.astype(np.float64).sum(axis=(1, 2)),
                               rtol=1e-6)


# --------------------------------------------------------------------------- field kinds


def _temperature(steps: int = 4, ny: int = 128, nx: int = 192, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 10.0, (steps, ny, nx)).astype(np.float32)  # negatives included


def test_an_intensive_field_has_a_mean_pyramid_and_no_entropy(store: AtlasStore) -> None:
    temp = _temperature()
    spec = FieldSpec("temperature", "intensive", "K", "air temperature")
    info = store.write_sequence("lab", "t", temp, field=spec)
    assert info["fields"] == ["temperature", "grad_x", "grad_y"]
    assert info["field"]["kind"] == "intensive"
    coarse = store.read("lab", "t", 64, "temperature")
    want = temp.astype(np.float64).reshape(4, 64, 2, 96, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(coarse, want, rtol=1e-6, atol=1e-5)
    assert all("entropy" not in s and "sum" not in s for s in info["steps"])
    assert info["steps"][0]["mean"] == pytest.approx(float(temp[0].astype(np.float64).mean()))
    assert "entropy" not in info["arrays"]["128/temperature"]["stats"]
    assert info["arrays"]["64/temperature"]["operation"] == "mean_downsample(factor=2)"
    attrs = dict(store.zarr_group["lab/t/64/temperature"].attrs)
    assert attrs["field_kind"] == "intensive" and attrs["units"] == "K"
    assert dict(store.zarr_group["lab/t/64/grad_x"].attrs)["units"] == "(K) / pixel"
    rep = audit(store)
    assert rep.ok, rep.problems


def test_an_extensive_field_refuses_negatives_naming_the_kind(store: AtlasStore) -> None:
    with pytest.raises(EnergyMapError, match="extensive field 'mass' must be non-negative"):
        store.write_sequence("lab", "m", _temperature(), field=FieldSpec("mass", "extensive"))
    with pytest.raises(EnergyMapError, match="field kind must be one of"):
        store.write_sequence("lab", "m", energy_sequence(2), field="mass", kind="sideways")
    for reserved in ("grad_x", "x", "time"):
        with pytest.raises(EnergyMapError, match="reserved"):
            FieldSpec(reserved)


def test_audit_checks_each_kind_its_own_way(store: AtlasStore) -> None:
    """A coarse level that breaks its kind's invariant is reported: the sum for energy, the
    mean for an intensive field (negative values are fine there, not in energy)."""
    store.write_sequence("lab", "t", _temperature(), field=FieldSpec("temperature", "intensive"))
    store.write_sequence("lab", "e", energy_sequence(4, 128, 192, seed=2))
    assert audit(store).ok
    for seq, name, factor in (("t", "temperature", 1.5), ("e", "energy", 1.5)):
        arr = store.zarr_group[f"lab/{seq}/64/{name}"]
        assert isinstance(arr, zarr.Array)
        vals = np.asarray(arr[...]) * factor + 0.5
        arr[...] = vals
    rep = audit(AtlasStore.open(store.location), verify=True)
    kinds = {(p.path, p.kind) for p in rep.problems}
    assert ("lab/t/64/temperature", "checksum") in kinds and ("lab/e/64/energy", "checksum") in kinds


def test_invariants_by_kind() -> None:
    from atlasstore.audit import _invariants

    base = np.zeros((2, 8, 8))  # the base level: step means 1 and -2
    base[0] += 1.0
    base[1] -= 2.0
    t = np.full((2, 4, 4), 0.0)
    t[0] += 1.0
    t[1] -= 2.0
    assert _invariants("p", True, "intensive", 2, t, base, 0.05) == []
    moved = _invariants("p", True, "intensive", 2, t + 1.0, base, 0.05)
    assert moved and "does not conserve the mean" in moved[0].message
    neg = _invariants("p", True, "extensive", 2, t, None, 0.05)
    assert neg and "negative values in an extensive field" in neg[0].message


def test_query_and_stream_follow_the_primary_field(store: AtlasStore) -> None:
    temp = _temperature(6, 128, 192)
    store.write_sequence("lab", "t", temp, field=FieldSpec("temperature", "intensive"))
    q = Query(store, domains=("lab",), scale=64, window=3)
    data = q.to_numpy()
    assert set(data) == {"temperature", "ids"}
    assert q.primary_field() == "temperature"
    with pytest.raises(QueryError, match="unknown field 'energy'; lab/t holds: temperature"):
        Query(store, domains=("lab",), scale=64, window=3, fields=("energy",)).to_numpy()
    store.write_sequence("lab", "e", energy_sequence(6, 128, 192))
    with pytest.raises(QueryError, match="hold different fields: energy .*temperature"):
        Query(store, domains=("lab",), scale=64, window=3).to_numpy()
    # an entropy range never passes a field without entropy
    assert Query(store, sequences=("t",), scale=64, entropy=(0, 100)).count() == 0
    assert Query(store, sequences=("e",), scale=64, entropy=(0, 100)).count() == 6


def test_stream_on_an_intensive_non_square_field(store: AtlasStore) -> None:
    pytest.importorskip("jax")
    from atlasstore.training.stream import stream

    temp = _temperature(6, 384, 128, seed=3)
    store.write_sequence("lab", "t", temp, field=FieldSpec("temperature", "intensive"))
    q = Query(store, domains=("lab",), scale=128, window=3)
    with stream(q, n_in=2, n_out=1, batch_size=2, shuffle=False, normalise=False) as it:
        b = next(iter(it))
    assert b["inputs"][128].shape == (2, 2, 384, 128) and b["inputs"][64].shape == (2, 2, 192, 64)
    np.testing.assert_array_equal(np.asarray(b["target"][0]), temp[2:3])
    with stream(q, n_in=2, n_out=1, batch_size=2, shuffle=False) as it:
        b = next(iter(it))
        raw = it.denormalise(np.asarray(b["target"]), b["ids"])
    np.testing.assert_allclose(raw[0], temp[2:3], rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------------------- coordinates


def _coords(ny: int, nx: int, steps: int) -> Coordinates:
    return Coordinates(Axis(tuple(np.linspace(-1.0, 2.0, ny)), "m", "y"),
                       Axis(tuple(np.linspace(-0.5, 0.5, nx)), "m", "x"),
                       tuple(1.6 * np.arange(steps)), "s", "time")


def test_coordinates_are_recorded_and_open_with_plain_xarray(store: AtlasStore) -> None:
    e = energy_sequence(5, 384, 128, seed=11)
    c = _coords(384, 128, 5)
    info = store.write_sequence("lab", "s", e, coords=c)
    assert info["coordinates"]["x"]["spacing"] == pytest.approx(1.0 / 127)
    assert info["coordinates"]["y"]["origin"] == -1.0 and info["coordinates"]["y"]["uniform"]
    assert [s["time"] for s in info["steps"]] == pytest.approx(list(c.time))
    ds = xr.open_zarr(f"{store.location}/lab/s", group="64")
    assert ds.energy.dims == ("time", "y", "x")
    np.testing.assert_allclose(ds.x.values, np.asarray(c.x.values).reshape(-1, 2).mean(axis=1))
    np.testing.assert_allclose(ds.y.values, np.asarray(c.y.values).reshape(-1, 2).mean(axis=1))
    np.testing.assert_allclose(ds.time.values, c.time)
    assert ds.x.attrs["units"] == "m"
    q = Query(store, sequences=("s",), scale=128, window=2).to_xarray()
    np.testing.assert_allclose(q.x.values, c.x.values)
    np.testing.assert_allclose(q.time.values[1], c.time[1:3])


def test_sequences_without_coordinates_carry_no_coordinate_arrays(store: AtlasStore) -> None:
    """Only sequences with physical coordinates pay for coordinate arrays (6 objects a level)."""
    e = energy_sequence(5, 128, 128, seed=12)
    store.write_sequence("lab", "plain", e)
    store.write_sequence("lab", "phys", e, coords=_coords(128, 128, 5))
    plain = store.count_objects("lab/plain/")
    phys = store.count_objects("lab/phys/")
    assert plain == 2 * 3 * 2 + 2 + 1  # 2 levels x 3 arrays x (zarr.json + shard), 2 levels, seq
    assert phys == plain + 2 * 3 * 2  # + 2 levels x (time, y, x) x (zarr.json + chunk)
    assert "x" not in xr.open_zarr(f"{store.location}/lab/plain", group="128").coords


def test_coordinates_must_fit(store: AtlasStore) -> None:
    e = energy_sequence(5, 128, 128)
    with pytest.raises(EnergyMapError, match="100 x coordinates for 128 x pixels"):
        store.write_sequence("lab", "s", e, coords=Coordinates(x=Axis(tuple(range(100)))))
    with pytest.raises(EnergyMapError, match="3 time values for 5 steps"):
        store.write_sequence("lab", "s", e, coords=Coordinates(time=(0.0, 1.0, 2.0)))
    with pytest.raises(EnergyMapError, match="finite"):
        Axis((0.0, float("nan")))


# --------------------------------------------------------------------------- DataArray


def test_write_sequence_takes_a_dataarray_with_coordinates_and_attrs(store: AtlasStore) -> None:
    import pandas as pd

    vals = _temperature(4, 96, 160)
    da = xr.DataArray(vals, dims=("t", "lat", "lon"), name="t2m",
                      coords={"t": pd.date_range("2020-01-01", periods=4, freq="6h"),
                              "lat": np.linspace(-10, 10, 96), "lon": np.linspace(0, 30, 160)},
                      attrs={"units": "K", "long_name": "2 m temperature",
                             "history": np.array([1, 2])})
    info = store.write_sequence("lab", "d", da, dims={"time": "t", "y": "lat", "x": "lon"},
                                kind="intensive")
    assert info["field"]["name"] == "t2m" and info["field"]["units"] == "K"
    assert info["field"]["attrs"]["history"] == [1, 2]
    assert info["steps"][1]["time"] == "2020-01-01T06:00:00.000000000"
    ds = xr.open_zarr(f"{store.location}/lab/d", group="96")
    assert str(ds.time.values[1]) == "2020-01-01T06:00:00.000000000"
    np.testing.assert_allclose(ds.y.values, da.lat.values)
    np.testing.assert_array_equal(ds.t2m.values, vals)
    assert ds.t2m.attrs["long_name"] == "2 m temperature"
    # a transposed array lands the same way
    info2 = store.write_sequence("lab", "d2", da.transpose("lon", "t", "lat"),
                                 dims={"time": "t", "y": "lat", "x": "lon"}, kind="intensive")
    assert _checksums(info2) == _checksums(info)
    with pytest.raises(EnergyMapError, match="expected \\(time, y, x\\)"):
        store.write_sequence("lab", "d3", da, kind="intensive")


def test_old_sequences_read_as_energy(store: AtlasStore) -> None:
    """A sequence written before fields had names (no ``field`` record) is energy, extensive."""
    e = energy_sequence(3, 64, 64)
    store.write_sequence("lab", "old", e)
    key = Path(store.location) / "lab/old/zarr.json"
    doc = json.loads(key.read_text())
    del doc["attributes"]["atlasstore_sequence"]["field"]
    key.write_text(json.dumps(doc))
    fresh = AtlasStore.open(store.location)
    assert Query(fresh, domains=("lab",), scale=64).primary_field() == "energy"
    assert audit(fresh).ok
    np.testing.assert_array_equal(Query(fresh, scale=64).to_numpy()["energy"][:, 0], e)


def test_writer_refuses_what_it_cannot_write(store: AtlasStore) -> None:
    for shape in ((0, 64, 64), (3, 64), (3, 64, 64.0)):
        with pytest.raises(EnergyMapError, match="shape must be"):
            SequenceWriter(store, "lab", "s", shape)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="FieldSpec"):
        SequenceWriter(store, "lab", "s", (3, 64, 64), field="energy")  # type: ignore[arg-type]


def test_every_write_says_who_wrote_it(store: AtlasStore) -> None:
    """generation.kind (notes/contract-provenance.md): the API, save_map, a generation run."""
    from atlasstore.compat import EnergyAtlasLoader

    e = energy_sequence(2)
    assert store.write_sequence("lab", "a", e)["generation"]["kind"] == "api"
    assert store.write_sequence("lab", "g", e, generation={"run_id": "run-0123456789abcdef"}
                                )["generation"]["kind"] == "generate"
    EnergyAtlasLoader(store).save_map(e[0], "lab", "m")
    assert store.sequence_info("lab", "m")["generation"]["kind"] == "save_map"


@pytest.mark.parametrize(("name", "kind", "expected"), [
    ("t2m", None, "intensive"), ("velocity_x", None, "intensive"), ("energy", None, "extensive"),
    ("kinetic_energy", None, "extensive"), ("t2m", "extensive", "extensive"),
])
def test_write_sequence_defaults_the_kind_by_name_like_import(store: AtlasStore, name: str,
                                                              kind: str | None, expected: str) -> None:
    """A DataArray of temperatures gets a mean pyramid (as `atlas import` would give it), not a
    block sum; an energy, or an explicit kind, stays extensive."""
    store.create_domain("lab")
    da = xr.DataArray(energy_sequence(2, 128, 128) + 1.0, dims=("time", "y", "x"), name=name)
    info = store.write_sequence("lab", name, da, kind=kind)
    assert info["field"]["kind"] == expected
    base = store.read("lab", name, 128, name, t=0).astype(np.float64)
    coarse = store.read("lab", name, 64, name, t=0).astype(np.float64)
    factor = 1.0 if expected == "intensive" else 4.0  # mean vs sum of each 2x2 block
    np.testing.assert_allclose(coarse.mean(), factor * base.mean(), rtol=1e-5)
